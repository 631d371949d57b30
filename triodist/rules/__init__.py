"""triodist.rules."""
