"""triodist.backends."""
