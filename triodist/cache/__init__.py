"""The packet cache: keys, storage, aging.

Imports nothing above triodist.cache.
"""
