"""The running server: the root nursery and everything that lives in it.

Nursery layout (outermost first)::

    root        backend receive loops (one per UDP backend), health checks (one per
                backend), packet-cache cleaning, Lua garbage collection, maintenance
    └─ work     query tasks and TCP connections: what must finish on shutdown
       └─ listen  the frontends' receive and accept loops

Shutdown (``request_shutdown``, e.g. on SIGTERM) cancels ``listen`` first, so
no new query is accepted; the queries in flight get ``grace_period`` seconds
to be answered; then everything left is cancelled.

What a configuration is (``ServerConfig``, ``Listen``) is defined here, below the Lua
configuration that fills it in. Imports nothing above triodist.server: what it needs of
the configuration's Lua state (its collector) is a protocol of its own.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from triodist.asyncproc.endpoint import NetworkEndpoint, QueueBound
from triodist.asyncproc.listener import NetworkListener
from triodist.asyncproc.registry import AsyncRegistry
from triodist.backends.health import health_check_loop, initial_health_checks
from triodist.backends.server import Server
from triodist.frontends.common import bind_udp_tcp
from triodist.frontends.tcp import TCPConnections, TCPFrontend
from triodist.frontends.tls import TLSSettings, bind_tls
from triodist.frontends.udp import UDPFrontend
from triodist.ops.console.server import serve as console_serve
from triodist.ops.console.settings import ConsoleSettings
from triodist.ops.rings import Rings
from triodist.query.pipeline import Pipeline
from triodist.query.settings import Chains, Routing, Settings
from triodist.rules.matchers import NetmaskGroup
from triodist.system import fdlimit
from triodist.system.privileges import Target, drop, hand_over

log = logging.getLogger("triodist.server")

#: A removed backend's UDP queries in flight are waited for: their deadline plus this.
RETIRE_SLACK = 0.1
#: Seconds between two looks of the configuration's Lua collector at Lua's memory.
LUA_COLLECTION_INTERVAL = 0.1

DEFAULT_ACL = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "192.168.0.0/16",
    "172.16.0.0/12",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


class LuaCollection(Protocol):
    """A configuration's Lua garbage collector as the server drives it
    (``config/luagc.py``: ``LuaCollector``)."""

    def take_over(self) -> None:
        """Stop Lua's own incremental collector: from now on only the server collects."""

    def tick(self) -> None:
        """One look at Lua's memory: a full collection if it is due; never raises."""


@dataclass
class Listen:
    """One ``setLocal``/``addLocal``: UDP and (unless ``tcp`` is false) TCP on one address."""

    address: str
    reuse_port: bool = False
    udp: bool = True
    tcp: bool = True
    #: dnsdist's ``maxConcurrentTCPConnections`` (0: the global bound only) and
    #: ``maxInFlight`` (0: triodist's default per connection, Settings).
    max_tcp_connections: int = 0
    max_in_flight: int = 0
    #: ``addTLSLocal``: DNS over TLS on ``address``, TCP only (no UDP is bound).
    tls: TLSSettings | None = None


@dataclass
class ServerConfig:
    """What a configuration asks for: the input of ``DNSServer``."""

    listens: list[Listen] = field(default_factory=list)
    acl: NetmaskGroup = field(default_factory=lambda: NetmaskGroup(DEFAULT_ACL))
    routing: Routing = field(default_factory=Routing)
    chains: Chains = field(default_factory=Chains)
    settings: Settings = field(default_factory=Settings)
    #: Suspended queries and responses (``dq:suspend``), their bound and counters.
    async_registry: AsyncRegistry = field(default_factory=AsyncRegistry)
    #: ``newNetworkListener()``: the started ones are bound and run while serving.
    network_listeners: list[NetworkListener] = field(default_factory=list)
    #: ``newNetworkEndpoint()``: each gets a writer task in the root nursery while serving.
    #: Held weakly: an endpoint Lua no longer refers to is collected, and its writer ends.
    network_endpoints: weakref.WeakSet[NetworkEndpoint] = field(default_factory=weakref.WeakSet)
    #: What each endpoint keeps for a component that has not read yet
    #: (``setMaxNetworkEndpointQueue``).
    endpoint_queue: QueueBound = field(default_factory=QueueBound)
    #: Moves every unix socket path the configuration names (``newNetworkEndpoint``,
    #: ``addUnixListeningEndpoint``) before it is checked and used; set before the
    #: configuration runs (the pytest plugin: into the test's directory). None: as written.
    unix_paths: Callable[[bytes], bytes] | None = None
    #: Set while serving: starts the writer of an endpoint made at run time (the console,
    #: ``maintenance()``) in the server's root nursery.
    start_endpoint_writer: Callable[[NetworkEndpoint], None] | None = None
    #: The configuration's Lua collector, run while serving (``config/luagc.py``).
    lua_collector: LuaCollection | None = None
    #: Set while serving (``reload.Reloader``): ``reloadConfig()`` calls it; None when the
    #: new configuration serves, else the error.
    reload: Callable[[], str | None] | None = None
    #: The running server's counters (``dumpStats()``), set while serving.
    stats: Counter[str] | None = None
    #: ``controlSocket``, ``setKey`` and the console's other settings (``ops/console/``).
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    #: Runs a console command in the configuration's Lua state (set by ``LuaConfig``).
    lua_eval: Callable[[str], str] | None = None
    #: The last queries and responses (``setRingBuffersSize``; the running server's, kept
    #: over reloads).
    rings: Rings = field(default_factory=Rings)


class BackendTasks:
    """Starts and stops the running backends' tasks (each one's reply loops and health
    checks) in the nursery it is given.

    The server makes one when its root nursery opens and hands it to what adds and removes
    servers while running: the routing's ``on_change`` (``newServer``/``rmServer`` at the
    console or in ``maintenance()``) and a reload. Lua code thus starts no task through a
    nursery it finds on an object; this is the only way to the nursery, and it exists only
    while the nursery does.

    Resource handling: a backend's reply loops and its health checks run in two cancel
    scopes of their own, so that a reload that keeps a backend starts its health checks
    again under its new configuration while its sockets and queries in flight go on."""

    def __init__(self, nursery: trio.Nursery, servers: Callable[[], list[Server]]) -> None:
        self._nursery = nursery
        #: The running configuration's servers (health checks end when theirs leaves).
        self._servers = servers
        #: Each running backend's (reply loops, health checks) cancel scopes.
        self._scopes: dict[Server, tuple[trio.CancelScope, trio.CancelScope]] = {}

    def start(self, server: Server, *, checked: bool) -> None:
        """Open ``server``'s sockets and start its tasks; an ``OSError`` (a socket the
        kernel refuses) starts nothing. ``checked``: its first health check is done."""
        # Its sockets now, not when its task first runs: a query processed in the
        # meantime may already be sent to it.
        server.open()
        replies, health = trio.CancelScope(), trio.CancelScope()
        self._scopes[server] = (replies, health)
        self._nursery.start_soon(self._run_replies, server, replies)
        self._nursery.start_soon(self._run_health, server, health, checked)

    def changed(self, server: Server, added: bool, *, drain: bool = False) -> None:
        """A server added or removed while running (``Routing.on_change``; a reload).
        Adding raises ``OSError`` when its sockets cannot be opened, before it is routed
        to. ``rmServer`` wakes the queries waiting for the server at once, with no reply;
        a reload (``drain``) lets them have their reply or their timeout first."""
        if added:
            self.start(server, checked=False)
            return
        scopes = self._scopes.pop(server, None)
        if scopes is None:
            return
        replies, health = scopes
        health.cancel()
        if drain:
            self._nursery.start_soon(self._retire, server, replies)
        else:
            replies.cancel()

    def renamed(self, running: Server, newer: Server, *, new_sockets: bool = False) -> None:
        """A reload made ``newer`` the running server ``running`` (``Server.adopt``): its
        tasks are stopped through ``newer`` from now on, and its health checks start
        again under ``newer``'s settings (its state goes on: no first check).
        ``new_sockets``: the reload gave it the UDP sockets it had none of (``tcpOnly``
        turned off), so its reply loops start now (those it had ended at once, with no
        socket to read)."""
        scopes = self._scopes.pop(running, None)
        if scopes is None:
            return
        replies, health = scopes
        health.cancel()
        health = trio.CancelScope()
        if new_sockets:
            replies.cancel()
            replies = trio.CancelScope()
            self._nursery.start_soon(self._run_replies, newer, replies)
        self._scopes[newer] = (replies, health)
        self._nursery.start_soon(self._run_health, newer, health, True)

    @staticmethod
    async def _run_replies(server: Server, scope: trio.CancelScope) -> None:
        with scope:
            await server.receive_loop()

    async def _run_health(self, server: Server, scope: trio.CancelScope, checked: bool) -> None:
        with scope:
            if not checked:
                await initial_health_checks([server])
            await health_check_loop(server, self._servers())

    @staticmethod
    async def _retire(server: Server, scope: trio.CancelScope) -> None:
        """A removed server's UDP queries already sent get their reply, or their timeout,
        before its reply loops stop (which then wake any left with no reply)."""
        deadline = server.last_udp_deadline()
        if deadline is not None:
            await trio.sleep_until(deadline + RETIRE_SLACK)
        scope.cancel()


class DNSServer:
    def __init__(self, config: ServerConfig, *, privileges: Target | None = None) -> None:
        self.config = config
        #: Who to become once everything is bound (``serve -u/-g``), and who the server
        #: became (set once dropped: a reload can no longer bind what needs root).
        self.privileges = privileges
        self.dropped: Target | None = None
        self.stats: Counter[str] = Counter()
        config.stats = self.stats
        self.pipeline = Pipeline(
            config.chains, config.routing, config.settings, config.async_registry
        )
        self.pipeline.stats = self.stats
        self.pipeline.recorder = config.rings
        # What the rings count as they record (rdqueries, latency-*) goes with the rest.
        config.rings.counts = self.stats
        config.async_registry.stats = self.stats
        self._shutdown = trio.Event()
        #: The backends' tasks while running (``BackendTasks``; a reload uses it).
        self.backends: BackendTasks | None = None
        self._stopped = trio.Event()
        #: The running frontends (while ``run`` runs): their counts of connections and
        #: queries in flight.
        self.udp_frontends: list[UDPFrontend] = []
        self.tcp_frontends: list[TCPFrontend] = []
        #: TCP connections open over every listener (the global and per-client bounds).
        self.tcp_connections = TCPConnections()
        #: The root nursery while running: a reload starts backends and listeners in it.
        self.root: trio.Nursery | None = None

    def request_shutdown(self) -> None:
        self._shutdown.set()

    def start_endpoint_writer(self, endpoint: NetworkEndpoint) -> None:
        """Start ``endpoint``'s writer in the root nursery (an endpoint made while serving)."""
        if self.root is not None:
            endpoint.start_writer(self.root)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @property
    def servers(self) -> list[Server]:
        return self.config.routing.servers

    async def run(
        self, *, task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every listener, report the bound addresses, serve until shutdown."""
        config = self.config
        udp_frontends: list[UDPFrontend] = []
        tcp_frontends: list[TCPFrontend] = []
        # Network listeners a configuration created but never started do not run (as dnsdist).
        network_listeners = [n for n in config.network_listeners if n.started]
        budget = fdlimit.fit(
            config.settings.max_tcp_connections, self.servers, listeners=len(config.listens)
        )
        self.tcp_connections.cap = budget.client_cap
        try:
            for spec in config.listens:
                if spec.tls is not None:
                    tcp_frontends.append(
                        bind_tls(
                            spec.address,
                            spec.tls,
                            self.pipeline,
                            config.acl,
                            self.stats,
                            config.settings,
                            reuse_port=spec.reuse_port,
                            max_connections=spec.max_tcp_connections,
                            max_in_flight=spec.max_in_flight,
                            shared=self.tcp_connections,
                        )
                    )
                    continue
                udp, sock = bind_udp_tcp(
                    spec.address,
                    reuse_port=spec.reuse_port,
                    tcp=spec.tcp,
                    buffers=config.settings.udp_buffer_sizes,
                )
                frontend = UDPFrontend(udp, self.pipeline, config.acl, self.stats, config.settings)
                udp_frontends.append(frontend)
                if sock is not None:
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    tcp_frontends.append(
                        TCPFrontend(
                            listener,
                            self.pipeline,
                            config.acl,
                            self.stats,
                            config.settings,
                            max_connections=spec.max_tcp_connections,
                            max_in_flight=spec.max_in_flight,
                            shared=self.tcp_connections,
                        )
                    )
            for network_listener in network_listeners:
                network_listener.open()
            for server in self.servers:
                server.open()
            # The files the rules write to (LogAction...): opened now that the server
            # starts serving, never while the configuration ran (check-config is pure).
            config.chains.open_files()
        except BaseException:
            config.chains.close_files()
            for network_listener in network_listeners:
                network_listener.close()
            for frontend in udp_frontends:
                frontend.sock.close()
            for tcp in tcp_frontends:
                await tcp.listener.aclose()
            raise

        bound = [f.local for f in udp_frontends]
        self.udp_frontends, self.tcp_frontends = udp_frontends, tcp_frontends
        try:
            async with trio.open_nursery() as root:
                backends = BackendTasks(root, lambda: self.config.routing.servers)
                # Servers added or removed later (maintenance(), the console, a reload)
                # start and stop through it; set before the console opens, so that one
                # added there during the first health checks starts too.
                config.routing.on_change = backends.changed
                self.backends = backends
                if config.lua_collector is not None:
                    # Taken over before the first query reaches a Lua rule.
                    config.lua_collector.take_over()
                self.root = root
                if config.console.addresses:
                    await root.start(console_serve, self)
                # Everything that may need root is bound (listeners, console, socket
                # files, the backends' sockets) and the open-file limit fitted: from here
                # on, the server runs as the user it was told to, before it handles
                # anything that comes from the network: a backend's answer, a health
                # check's reply and the checkFunction that reads it, a query, a
                # component's message.
                if self.privileges is not None:
                    files = [
                        (e.path, e.file_id, e.dir_fd)
                        for n in network_listeners
                        for e in n.endpoints
                        if e.sock is not None and e.file_id is not None and e.dir_fd is not None
                    ]
                    hand_over(files, self.privileges)
                    drop(self.privileges)
                    self.dropped = self.privileges
                # As dnsdist at start-up: every auto server is checked once (in parallel,
                # each within its checkTimeout) before the listeners open, then one
                # task per server goes on checking it (it idles while forced up/down).
                await initial_health_checks(self.servers)
                running = self.config.routing.servers
                for server in self.servers:
                    if server in running:  # not removed at the console meanwhile
                        backends.start(server, checked=True)
                root.start_soon(self.pipeline.clean_caches)
                root.start_soon(self._collect_lua)
                # Answers from external components (resuming suspended queries) are
                # received until the very end, through the grace period.
                for network_listener in network_listeners:
                    network_listener.start_tasks(root)
                # What endpoints cannot send at once waits for their writers, here too.
                for endpoint in list(config.network_endpoints):
                    endpoint.start_writer(root)
                config.start_endpoint_writer = self.start_endpoint_writer
                # From here on, the configuration is ``self.config``: a reload replaces it,
                # and the start-up one must not be kept alive by this frame.
                del config
                async with trio.open_nursery() as work:
                    async with trio.open_nursery() as listen:
                        for udp_frontend in udp_frontends:
                            log.info("Listening on %s:%d", *udp_frontend.local)
                            listen.start_soon(udp_frontend.serve, work)
                        for tcp_frontend in tcp_frontends:
                            listen.start_soon(tcp_frontend.serve, work)
                        task_status.started(bound)
                        await self._shutdown.wait()
                        log.info("Shutting down: no new queries")
                        listen.cancel_scope.cancel()
                        # Connections already open read no more either (they live in
                        # ``work``, for their queries in flight to be answered).
                        for tcp_frontend in tcp_frontends:
                            tcp_frontend.stop_reading()
                        # Held queries go on now (by the timeout policy), so that they
                        # are answered within the grace period rather than lost.
                        self.config.async_registry.expire_all()
                    # Queries in flight get the grace period, then are cancelled.
                    grace = self.config.settings.grace_period
                    work.cancel_scope.deadline = trio.current_time() + grace
                root.cancel_scope.cancel()
        finally:
            # Stopped or cancelled from outside (a test's nursery), nothing is left
            # open for the garbage collector: sockets, and files that rules write to.
            # (``self.config``: a reload may have replaced the configuration since.)
            self.root = None
            self.config.start_endpoint_writer = None
            self.backends = None
            for frontend in udp_frontends:
                frontend.sock.close()
            for tcp in tcp_frontends:
                tcp.listener.socket.close()
            for network_listener in {*network_listeners, *self.config.network_listeners}:
                network_listener.close()
            for server in self.servers:
                server.close()  # its UDP socket and idle TCP connections
            self.config.chains.close_files()
        self.config.routing.on_change = None
        self._stopped.set()
        log.info("Stopped")

    async def _collect_lua(self) -> None:
        """The configuration's Lua collections (``config/luagc.py``); after a reload, those
        of the new configuration's Lua state."""
        while True:
            await trio.sleep(LUA_COLLECTION_INTERVAL)
            # Looked up each time, and not kept over the sleep: that would keep an old
            # configuration (its whole Lua state) alive after a reload.
            if self.config.lua_collector is not None:
                self.config.lua_collector.tick()
