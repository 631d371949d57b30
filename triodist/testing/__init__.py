"""Fakes for tests and the demo: a DNS backend and an asynchronous component.

Nothing in the server's layers imports this package.
"""
