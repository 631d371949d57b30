"""triodist.frontends."""
