"""The process's open-file limit (``ulimit -n``) against what the configuration may open.

Every TCP connection, client's or backend's, is a descriptor. With the defaults
(``setMaxTCPConnections`` 10,000; ``maxConcurrentTCPConnections`` 1,000 per backend) a
server may need more descriptors than a shell's usual soft limit of 1,024. Left alone,
the connections would take every descriptor and the next socket anything needs (a
health check, a backend's reply socket, a new backend) would fail with ``EMFILE``.

So at start-up the soft limit is raised to what the bounds need (up to the hard limit,
which an unprivileged process may do). If the hard limit is lower still, the bounds are
lowered to fit, with a warning naming the numbers: half of what is left after a reserve
for the fixed sockets goes to client connections, half to the backends' connections.

Imports nothing above triodist.system: a backend is seen through ``TCPBounded``, and the
backends' default bound is defined here, where the budget counts it.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("triodist.fdlimit")

#: TCP connections to one backend at once, unless ``newServer`` says otherwise
#: (``maxConcurrentTCPConnections``; dnsdist has no bound by default, triodist has this one).
#: The backends take it from here; a backend with no bound (0) is counted at it below.
DEFAULT_MAX_TCP_CONNECTIONS = 1000

#: Descriptors kept for everything but TCP connections: listening sockets, the console,
#: network listeners, health checks, log files, Python's and Lua's own.
RESERVE = 64
#: Per backend: a health check's socket, besides its UDP sockets (``sockets``, 1 by default).
PER_BACKEND = 1


class TCPBounded(Protocol):
    """What the budget reads and sets on a backend (``triodist.backends.server.Server``)."""

    #: Its UDP sockets, each a descriptor.
    udp_sockets: int
    #: Its own bound on TCP connections (0: none).
    max_tcp_connections: int
    #: The bound ``fit`` sets on its TCP connections to fit the limit (0: none).
    tcp_connections_cap: int


@dataclass
class Budget:
    """What ``fit`` decided: the limit in force and the caps it set (0: none)."""

    limit: int
    needed: int
    client_cap: int = 0
    backend_cap: int = 0


def fit(max_client_connections: int, servers: Sequence[TCPBounded], listeners: int = 0) -> Budget:
    """Make the open-file limit hold the bounds; lower them where it cannot (see above)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fixed = RESERVE + sum(PER_BACKEND + s.udp_sockets for s in servers) + 2 * listeners
    # A backend with no bound of its own (0) is counted at the default bound: under a low
    # limit it is capped like the others.
    backend_tcp = sum(s.max_tcp_connections or DEFAULT_MAX_TCP_CONNECTIONS for s in servers)
    needed = fixed + max_client_connections + backend_tcp
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                log.debug("Could not raise the open-file limit to %d: %s", target, exc)
    budget = Budget(limit=soft, needed=needed)
    for server in servers:
        server.tcp_connections_cap = 0
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return budget
    left = max(2, soft - fixed)
    budget.client_cap = max(1, min(max_client_connections, left // 2))
    if servers:
        budget.backend_cap = max(1, (left - budget.client_cap) // len(servers))
    for server in servers:
        server.tcp_connections_cap = budget.backend_cap
    log.warning(
        "The open-file limit (ulimit -n) is %d, and the TCP bounds may need %d: at most %d "
        "client TCP connections (setMaxTCPConnections) and %d per backend "
        "(maxConcurrentTCPConnections) until it is raised",
        soft,
        needed,
        budget.client_cap,
        budget.backend_cap,
    )
    return budget
