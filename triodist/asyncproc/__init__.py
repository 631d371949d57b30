"""Asynchronous processing: the registry of held objects, network endpoints and listeners."""
