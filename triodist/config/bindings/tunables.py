"""The settings that bound and tune the frontends and the backends' sockets:
``setMaxTCP*``, ``setMaxUDP*``, ``setRandomized*``, timeouts, socket buffer sizes.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any

from triodist.config.bindings.args import ConfigError, boolean, non_negative, whole
from triodist.config.bindings.base import Binding, lua_function
from triodist.util.luavalues import describe


class TunableBindings(Binding):
    """Settings that apply (``config.settings``, and the servers' own copies)."""

    @lua_function
    def setMaxTCPConnectionsPerClient(self, n: Any) -> None:
        self.config.settings.max_tcp_connections_per_client = whole(
            n, "setMaxTCPConnectionsPerClient", 0
        )

    @lua_function
    def setMaxTCPUnsentBytes(self, n: Any) -> None:
        """Bytes of answers a TCP connection may have waiting to be written (triodist's
        own; dnsdist keeps them all). Over it the connection is closed and counted
        (``tcp-unsent-overflows``); at least one largest DNS message (65,537 bytes)."""
        self.config.settings.max_tcp_unsent_bytes = whole(n, "setMaxTCPUnsentBytes", 65_537)

    @lua_function
    def setMaxTCPQueriesPerConnection(self, n: Any) -> None:
        self.config.settings.max_tcp_queries_per_connection = int(n)

    @lua_function
    def setMaxTCPConnectionDuration(self, n: Any) -> None:
        self.config.settings.max_tcp_connection_duration = float(n)

    @lua_function
    def setMaxUDPOutstanding(self, n: Any) -> None:
        """Queries outstanding over UDP per backend, 1 to 65,535 (its query IDs). Over it,
        a query for that backend is dropped and counted; policies skip a full backend."""
        count = int(non_negative(n, "setMaxUDPOutstanding"))
        if not 1 <= count <= 65_535:
            raise ConfigError(f"setMaxUDPOutstanding: expected 1 to 65535, got {describe(n)}")
        self.config.settings.max_udp_outstanding = count
        for server in self.config.routing.servers:
            server.max_outstanding = count

    @lua_function
    def setRandomizedIdsOverUDP(self, value: Any) -> None:
        """Each query over UDP gets a random ID among those not in flight on its socket,
        instead of the one after the last (dnsdist 1.8's setting; default false)."""
        on = boolean(value, "setRandomizedIdsOverUDP")
        self.config.settings.randomize_udp_ids = on
        for server in self.config.routing.servers:
            server.randomize_ids = on

    @lua_function
    def setRandomizedOutgoingSockets(self, value: Any) -> None:
        """Each query over UDP goes out on a random socket of its server's pool
        (``newServer``'s ``sockets``) instead of the next in turn (dnsdist 1.8's setting)."""
        on = boolean(value, "setRandomizedOutgoingSockets")
        self.config.settings.randomize_outgoing_sockets = on
        for server in self.config.routing.servers:
            server.randomize_sockets = on

    def configuration_ran(self) -> None:
        """Warnings that only the whole configuration file can give (it ran without error):
        a setting that does nothing without another, whichever line comes first."""
        config = self.config
        if config.settings.randomize_outgoing_sockets and not any(
            server.udp_sockets > 1 for server in config.routing.servers
        ):
            self.warn_once(
                "setRandomizedOutgoingSockets.sockets",
                "setRandomizedOutgoingSockets(true): no server has more than one socket, so "
                "each still sends from a single source port; give servers a pool of them "
                "with newServer's sockets=N (N > 1)",
                ignored="setRandomizedOutgoingSockets",
            )

    @lua_function
    def truncateTC(self, value: Any) -> None:
        """A backend's UDP answer with TC set goes to the client cut to its header and
        question (and a bare OPT), as dnsdist's ``truncateTC(true)`` does."""
        self.config.settings.truncate_tc = boolean(value, "truncateTC")

    @lua_function
    def setDropEmptyQueries(self, value: Any) -> None:
        """A query with no question is dropped (over TCP, its connection closed) instead
        of answered NOTIMP, as dnsdist's ``setDropEmptyQueries(true)`` does."""
        self.config.settings.drop_empty_queries = boolean(value, "setDropEmptyQueries")

    @lua_function
    def fixupCase(self, value: Any) -> None:
        """An answer's question name in the case the client wrote it: what triodist does
        with every answer, so true asks for nothing more and false changes nothing
        (docs/reference/configuration.md says why)."""
        boolean(value, "fixupCase")

    @lua_function
    def setMaxUDPInFlight(self, n: Any) -> None:
        """Queries waiting per UDP frontend (triodist's own; dnsdist has no such bound).
        Over it, answers that need no wait still go out; a query that would wait is
        dropped and counted (``frontend-overload-drops``)."""
        count = int(non_negative(n, "setMaxUDPInFlight"))
        if count < 1:
            raise ConfigError(f"setMaxUDPInFlight: expected at least 1, got {describe(n)}")
        self.config.settings.max_udp_in_flight = count

    @lua_function
    def setMaxUDPAnswerSize(self, n: Any) -> None:
        """The largest UDP answer sent whatever a client's EDNS payload size says
        (triodist's own), 512 to 65,535; larger answers go out truncated."""
        size = whole(n, "setMaxUDPAnswerSize", 512)
        if size > 65_535:
            raise ConfigError(f"setMaxUDPAnswerSize: expected 512 to 65535, got {describe(n)}")
        self.config.settings.max_udp_answer_size = size

    @lua_function
    def setUDPSocketBufferSizes(self, recv: Any, send: Any) -> None:
        """SO_RCVBUF and SO_SNDBUF of the frontends' UDP sockets, 0 to 2**32 - 1 bytes as
        dnsdist (0 keeps the system's value), set as they are bound; at run time the
        sockets are bound already, and this says so and changes nothing (as dnsdist)."""
        if self.config.start_endpoint_writer is not None:  # serving: the console
            print("setUDPSocketBufferSizes cannot be used at runtime!", file=self.out)
            return
        sizes = []
        for value in (recv, send):
            size = whole(value, "setUDPSocketBufferSizes", 0)
            if size > 2**32 - 1:
                raise ConfigError(
                    f"setUDPSocketBufferSizes: expected 0 to 4294967295, got {describe(value)}"
                )
            sizes.append(size)
        self.config.settings.udp_buffer_sizes = (sizes[0], sizes[1])

    @lua_function
    def setTCPRecvTimeout(self, n: Any) -> None:
        self.config.settings.tcp_recv_timeout = float(n)

    @lua_function
    def setTCPSendTimeout(self, n: Any) -> None:
        self.config.settings.tcp_send_timeout = float(n)

    @lua_function
    def setMaxTCPConnections(self, n: Any) -> None:
        """TCP connections at once over every listener (triodist's own; default 10,000).
        Over it a new connection is closed at once and counted (``tcp-overload-drops``)."""
        self.config.settings.max_tcp_connections = whole(n, "setMaxTCPConnections", 1)
