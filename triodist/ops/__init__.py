"""Reading and steering a running server: the console, rings, query logs."""
