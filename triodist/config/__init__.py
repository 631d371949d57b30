"""triodist.config."""
