"""Frontends: UDP and TCP; bytes in, a query's answer or its task, bytes out.

Imports nothing above triodist.frontends (the query path and below).
"""
