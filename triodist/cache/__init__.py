"""The packet cache: keys, storage, aging."""
