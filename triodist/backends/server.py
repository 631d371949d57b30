"""Downstream servers: their settings, their state, and what configurations call on them.

A ``Server`` is created when the configuration runs (``newServer``); its sockets
are opened later, when the server starts (``open``). Queries reach it through its two
sides: ``UDPSide`` (udp.py: sockets, query IDs, the wait for a reply) and ``TCPSide``
(tcp.py: connections to the backend).

Health: ``mode`` is the administrative state (``auto``, or forced ``up`` or
``down``) and ``healthy`` what the health checks (``health.py``) concluded;
``is_up`` combines them.  A server in lazy mode also records the outcome of
each real query (``record_outcome``), where the reply or the timeout is known.

Configuration and life: a ``Server`` object holds what the configuration says
(``newServer``'s options, and what Lua methods such as ``setDown`` change) and, in
``life`` (a ``BackendLife``, life.py), what the running backend is: its sockets, queries in
flight, counters and health. A reload that keeps a server gives the new configuration's
object the running one's ``life`` (``adopt``): from then on both objects are the same
backend, each with its own configuration, so that work started under the old one (a
query waiting for its reply, a reply loop) ends as it began, and everything new goes
through the new one.

Imports nothing above triodist.backends.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

from triodist.backends.healthstate import (
    Availability,
    CheckMode,
    HealthCheckConfig,
    LazyMode,
    LazyStatus,
    new_lazy_results,
)
from triodist.backends.life import BackendLife
from triodist.backends.tcp import TCPSide
from triodist.backends.udp import MAX_UDP_SOCKETS, UDPSide
from triodist.system.fdlimit import DEFAULT_MAX_TCP_CONNECTIONS
from triodist.util.ratelimit import TokenBucket
from triodist.wire.address import ComboAddress

log = logging.getLogger("triodist.backends")


class Server(UDPSide, TCPSide):
    """One backend (dnsdist's ``newServer``), with the methods configurations call on it;
    its UDP and TCP sides (``UDPSide``, ``TCPSide``) send the queries."""

    #: Bumped whenever a server is created, added, removed or changes pools, so that a
    #: pool's list of members is computed again only then (``Pool.servers``).
    membership_generation = 0

    def __init__(
        self,
        address: str,
        *,
        name: str = "",
        pools: Iterable[str] = ("",),
        weight: int = 1,
        order: int = 1,
        udp_timeout: float = 2.0,
        tcp_timeout: float = 30.0,
        tcp_only: bool = False,
        qps: float = 0,
        max_outstanding: int = 65535,
        max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS,
        udp_sockets: int = 1,
        randomize_ids: bool = False,
        randomize_sockets: bool = False,
        mode: str = Availability.AUTO,
        health_check_mode: str = CheckMode.ACTIVE,
        health: HealthCheckConfig | None = None,
    ) -> None:
        self.life = BackendLife()
        self.address = ComboAddress.parse(address, 53)
        # dnsdist shows the address alone for a server without a name.
        self._named = bool(name)
        self.name = name or self.address.toStringWithPort()
        #: dnsdist's server ``id`` (a UUID there); empty unless ``newServer{id=...}``.
        self.id = ""
        self.pools = list(pools)
        Server.membership_generation += 1
        self.weight = max(1, int(weight))
        self.order = int(order)
        self.udp_timeout = float(udp_timeout)
        self.tcp_timeout = float(tcp_timeout)
        self.tcp_only = bool(tcp_only)
        self.qps = float(qps)
        self.max_outstanding = max_outstanding
        #: UDP sockets towards it (``sockets``); fixed for the server's life once open: a
        #: reload that changes it keeps the sockets the server has (see ``adopt``).
        self.udp_sockets = max(1, min(int(udp_sockets), MAX_UDP_SOCKETS))
        #: ``setRandomizedIdsOverUDP`` and ``setRandomizedOutgoingSockets``.
        self.randomize_ids = bool(randomize_ids)
        self.randomize_sockets = bool(randomize_sockets)
        #: A NOERROR or NXDOMAIN reply with no question is taken as the answer
        #: (``setAllowEmptyResponse``); an error reply with no question always is.
        self.allow_empty_response = False
        #: TCP connections to it at once, idle or busy (dnsdist's newServer option
        #: ``maxConcurrentTCPConnections``; 0: no bound): a query that would need one more
        #: is dropped. ``tcp_connections_cap``, when set (``triodist.system.fdlimit.fit``),
        #: lowers it to what the process's open-file limit leaves.
        self.max_tcp_connections = max_tcp_connections
        self.tcp_connections_cap = 0
        # Administrative state as dnsdist has it: "auto" follows health checks,
        # "up" and "down" are forced.  ``health_check_mode`` ("active" or "lazy")
        # is kept while forced, for ``setAuto`` to restore.
        self.mode = Availability(mode)
        self.health_check_mode = CheckMode(health_check_mode)
        self.health = health or HealthCheckConfig()
        self.servfail_is_failure = self.health.lazy_mode == LazyMode.TIMEOUT_OR_SERVFAIL
        #: EDNS Client Subnet: queries to this server carry their client's subnet
        #: (``useClientSubnet``), and a cache that parses ECS first looks for an answer
        #: good for every subnet, unless ``disableZeroScope``.
        self.use_ecs = False
        self.disable_zero_scope = False
        if self.health_check_mode == CheckMode.LAZY:
            self.lazy_results = new_lazy_results(self.health)

    def same_backend(self, other: Server) -> bool:
        """Whether ``other`` (from a reloaded configuration) is this server again: the same
        address and the same name (or both unnamed)."""
        return self.address == other.address and self.name == other.name

    def adopt(self, newer: Server, udp_socks: list[socket.socket] | None = None) -> None:
        """A reload keeps this running server as ``newer`` (``same_backend``): ``newer``
        takes this server's life, with its own configuration, so that the new
        configuration's Lua variables holding it act on the running backend.

        This object keeps its configuration for what was started under it: a query
        waiting for its reply, the reply loops (which use only the life). Its health
        checks are started again for ``newer`` (``BackendTasks.renamed``). ``udp_socks``: the
        UDP sockets the reload opened for a server that had none (``tcpOnly`` turned
        off), which become its own; its reply loops start with them."""
        life = self.life
        if newer.health_check_mode != self.health_check_mode or newer.health != self.health:
            # The new settings start the lazy window and state afresh.
            life.lazy_results = newer.life.lazy_results
            life.lazy_status = newer.life.lazy_status
        if newer.qps != self.qps:
            life.qps_bucket = None
        if newer.udp_sockets != self.udp_sockets and life.socks:
            # Its sockets go on (queries are in flight on them, and a socket that cannot
            # be opened must not fail the reload half-way): the new count waits for the
            # server to start again.
            log.warning(
                "Server %s keeps its %d UDP socket(s): sockets=%d applies when it is "
                "started again (a restart, or under another name)",
                self.getNameWithAddr(),
                len(life.socks),
                newer.udp_sockets,
            )
            newer.udp_sockets = self.udp_sockets
        newer.tcp_connections_cap = self.tcp_connections_cap
        newer.life = life
        if udp_socks:
            newer.open(udp_socks)
        Server.membership_generation += 1

    # --- what configurations call -------------------------------------------------------

    def getName(self) -> str:
        return self.name

    def getNameWithAddr(self) -> str:
        address = self.address.toStringWithPort()
        return f"{self.name} ({address})" if self._named else address

    def isUp(self) -> bool:
        return self.is_up

    def canAcceptQueries(self) -> bool:
        """Up, and with room for another query in flight (dnsdist's test for Lua policies)."""
        return self.is_up and self.outstanding < self.max_outstanding

    def setUp(self) -> None:
        self.mode = Availability.UP

    def setDown(self) -> None:
        self.mode = Availability.DOWN

    def setAuto(self, status: Any = None) -> None:
        """Back to following the health checks, in the check mode it had (active or lazy)."""
        self.mode = Availability.AUTO
        if status is not None:
            self.healthy = bool(status)

    def setActiveAuto(self, status: Any = None) -> None:
        self.health_check_mode = CheckMode.ACTIVE
        self.lazy_results = None
        self.setAuto(status)

    def setLazyAuto(self, status: Any = None) -> None:
        if self.health_check_mode != CheckMode.LAZY:
            self.health_check_mode = CheckMode.LAZY
            self.lazy_status = LazyStatus.HEALTHY
            self.lazy_results = new_lazy_results(self.health)
        self.setAuto(status)

    def getHealthCheckMode(self) -> CheckMode:
        return self.health_check_mode

    def setHealthCheckParams(self, params: Any = None) -> None:
        """Change checkTimeout (ms), checkInterval (s), maxCheckFailures and rise at run
        time; as in dnsdist, unknown keys and values that are not positive are ignored."""
        items = params.items() if params is not None and hasattr(params, "items") else ()
        for key, value in items:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if number <= 0:
                continue
            if key == "checkTimeout":
                self.health.check_timeout = number / 1000
            elif key == "checkInterval":
                self.health.check_interval = number
            elif key == "maxCheckFailures":
                self.health.max_check_failures = int(number)
            elif key == "rise":
                self.health.rise = int(number)

    @property
    def upStatus(self) -> bool:
        """dnsdist's ``server.upStatus``: the last state the health checks gave."""
        return self.healthy

    @upStatus.setter
    def upStatus(self, value: Any) -> None:
        self.healthy = bool(value)

    def getOutstanding(self) -> int:
        return self.outstanding

    def getLatency(self) -> float:
        """Average latency of recent answers in microseconds (dnsdist's unit)."""
        return self.latency_us

    def getDrops(self) -> int:
        return self.drops

    def getQueries(self) -> int:
        return self.queries

    def addPool(self, pool: str) -> None:
        if pool not in self.pools:
            self.pools.append(str(pool))
            Server.membership_generation += 1

    def rmPool(self, pool: str) -> None:
        if pool in self.pools:
            self.pools.remove(str(pool))
            Server.membership_generation += 1

    def __str__(self) -> str:
        return self.getNameWithAddr()

    # --- state ---------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        if self.mode == Availability.UP:
            return True
        if self.mode == Availability.DOWN:
            return False
        return self.healthy

    @property
    def status(self) -> str:
        if self.mode == Availability.AUTO:
            return "up" if self.healthy else "down"
        return self.mode.upper()

    def qps_bucket_take(self) -> bool:
        """Whether one more query fits in this server's ``qps`` limit."""
        life = self.life
        if life.qps_bucket is None:
            life.qps_bucket = TokenBucket(self.qps)
        return life.qps_bucket.take()
