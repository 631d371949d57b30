"""The DNS wire format: message views over the bytes, the one walker, answer builders.

Imports nothing above triodist.wire.
"""
