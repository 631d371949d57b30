"""Asynchronous processing: the registry of held objects (``registry.py``), network
endpoints (``endpoint.py``) and listeners (``listener.py``).

Imports nothing above triodist.asyncproc: system, wire and util below it.
"""
