"""The process and its operating system: privileges, file descriptors, local-socket trust.

Imports nothing above triodist.system (the wire format and util below it).
"""
