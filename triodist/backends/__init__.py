"""Backends: downstream servers, pools and the policies that choose among them, health checks.

- ``server.py``: ``Server`` (``newServer``), its configuration and what Lua calls on it;
  its UDP side (``udp.py``) and TCP side (``tcp.py``) send the queries; ``life.py`` holds
  what a running backend is (sockets, queries in flight, counters), which a reload keeps;
  ``exchange.py`` what both sides share (``NotSent``, ``reply_matches``); ``tcpconn.py``
  the TCP connections (queries pipelined up to ``maxInFlight``, answers matched by ID),
  ``transfer.py`` zone transfers (several messages for one query, streamed);
- ``health.py``: the health checks; ``healthstate.py``: their settings and states;
- ``pools.py``: pools and server policies; ``randomness.py``: unpredictable IDs.

Imports nothing above this layer (cache, system, wire, util are below it).
"""
