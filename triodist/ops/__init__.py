"""Reading and steering a running server: the console, rings, query logs.

Imports nothing above triodist.ops (frontends, rules, backends, the wire format and util
below it): the server and the configuration use it, not the other way round.
"""
