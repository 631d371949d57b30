"""What a running server's query path serves: its tunables (``Settings``), its servers,
pools and default policy (``Routing``), and its rule chains (``Chains``); and the packet
caches' periodic cleaning, which reads the first two.

A configuration builds these; the pipeline (``pipeline.py``) reads them for every query.

Imports nothing above triodist.query (rules, backends, cache and below).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from triodist.backends.pools import BUILTIN_POLICIES, Pool, ServerPolicy
from triodist.backends.server import Server
from triodist.rules.chain import ChainKind, RuleChain
from triodist.rules.log_actions import LogFiles, Logger, loggers_of, open_loggers
from triodist.wire.build import SELF_GENERATED_PAYLOAD

log = logging.getLogger("triodist.pipeline")


@dataclass
class Settings:
    """Tunables of the query path (set from the configuration)."""

    servfail_when_no_server: bool = False
    # Queries waiting (for a backend, a suspension, a delay) per UDP frontend; over it a
    # query that would wait is dropped and counted (setMaxUDPInFlight, triodist's own).
    max_udp_in_flight: int = 10_000
    # Queries outstanding per backend over UDP (dnsdist's setMaxUDPOutstanding).
    max_udp_outstanding: int = 65_535
    # Random query IDs and a random socket of the pool towards a backend, for each
    # query over UDP (dnsdist's setRandomizedIdsOverUDP, setRandomizedOutgoingSockets).
    randomize_udp_ids: bool = False
    randomize_outgoing_sockets: bool = False
    # The largest UDP answer sent to any client, whatever its EDNS payload size says
    # (setMaxUDPAnswerSize, triodist's own); over the client's limit an answer goes out
    # truncated (TC, the question and OPT only).
    max_udp_answer_size: int = 4096
    # A backend's UDP answer with TC set is cut to its header and question (and OPT, with
    # no options) before anything else sees it (dnsdist's truncateTC, off by default).
    truncate_tc: bool = False
    # A query with no question is dropped (over TCP, its connection closed) instead of
    # answered NOTIMP (dnsdist's setDropEmptyQueries, off by default).
    drop_empty_queries: bool = False
    # EDNS Client Subnet, for servers with useClientSubnet: the bits of a client's
    # address sent (setECSSourcePrefixV4/V6), and whether a client's own option is
    # replaced (setECSOverride); a query starts with these (dq.ecsPrefixLength,
    # dq.ecsOverride), which rules may change.
    ecs_source_prefix_v4: int = 24
    ecs_source_prefix_v6: int = 56
    ecs_override: bool = False
    # Answers triodist makes itself (a rule's, SERVFAIL when no server is up) carry an OPT
    # record of their own when the query had one (setAddEDNSToSelfGeneratedResponses),
    # with this payload size (setPayloadSizeOnSelfGeneratedAnswers).
    add_edns_to_self_generated: bool = True
    self_generated_payload: int = SELF_GENERATED_PAYLOAD
    # A backend's NOERROR or NXDOMAIN reply with no question is taken as the answer
    # (setAllowEmptyResponse); error replies with no question always are.
    allow_empty_response: bool = False
    # SO_RCVBUF and SO_SNDBUF of the frontends' UDP sockets, set as they are bound
    # (dnsdist's setUDPSocketBufferSizes); 0 leaves the system's value.
    udp_buffer_sizes: tuple[int, int] = (0, 0)
    tcp_recv_timeout: float = 2.0
    tcp_send_timeout: float = 2.0
    max_tcp_connections: int = 10_000
    # triodist's default; dnsdist's is 0 (no bound): docs/reference/configuration.md says why.
    max_tcp_connections_per_client: int = 20
    # Bytes of answers waiting to be written per TCP connection (setMaxTCPUnsentBytes,
    # triodist's own): two of the largest DNS messages with their length prefix.
    max_tcp_unsent_bytes: int = 2 * (2 + 65_535)
    max_tcp_queries_per_connection: int = 0
    # Queries waiting at once per TCP connection; at the bound the connection is not read
    # until one is answered (TCP's own flow control holds the client back). A listener's
    # maxInFlight overrides it.
    max_tcp_in_flight_per_connection: int = 100
    max_tcp_connection_duration: float = 0
    grace_period: float = 2.0
    # Packet cache: how long an expired entry may still be served when no backend of the
    # pool is up (dnsdist's setStaleCacheEntriesTTL, 0 = never), and the periodic cleaning.
    stale_cache_entries_ttl: float = 0
    cache_cleaning_delay: float = 60
    cache_cleaning_percentage: float = 100


@dataclass
class Routing:
    """Servers, pools and the default policy."""

    servers: list[Server] = field(default_factory=list)
    pools: dict[str, Pool] = field(default_factory=dict)
    policy: ServerPolicy = field(default_factory=lambda: BUILTIN_POLICIES["leastOutstanding"])

    def pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            pool = self.pools[name] = Pool(name, self.servers)
        return pool

    #: Told of servers added (True) or removed (False) once the server is running, so that
    #: their sockets and health checks start and stop with them.
    on_change: Callable[[Server, bool], None] | None = None

    def add_server(self, server: Server) -> None:
        # Started first while running (its sockets opened): a server that cannot start
        # raises here and is not added (all or nothing, as a reload).
        if self.on_change is not None:
            self.on_change(server, True)
        self.servers.append(server)
        Server.membership_generation += 1
        for name in server.pools:
            self.pool(name)

    def remove_server(self, server: Server) -> None:
        self.servers.remove(server)
        Server.membership_generation += 1
        if self.on_change is not None:
            self.on_change(server, False)


@dataclass
class Chains:
    queries: RuleChain = field(default_factory=lambda: RuleChain(ChainKind.QUERY))
    responses: RuleChain = field(default_factory=lambda: RuleChain(ChainKind.RESPONSE))
    self_answered: RuleChain = field(default_factory=lambda: RuleChain(ChainKind.SELF_ANSWERED))
    cache_hit: RuleChain = field(default_factory=lambda: RuleChain(ChainKind.CACHE_HIT))
    cache_miss: RuleChain = field(default_factory=lambda: RuleChain(ChainKind.QUERY))
    cache_inserted: RuleChain = field(default_factory=lambda: RuleChain(ChainKind.CACHE_INSERTED))
    #: The running server's open log files, set once the rules' files are open
    #: (``open_files``): from then on a rule added (the console, ``maintenance()``)
    #: opens its file as it is added, among these. A reload hands them on.
    files: LogFiles | None = None

    @property
    def files_open(self) -> bool:
        return self.files is not None

    def all(self) -> Iterable[RuleChain]:
        return (
            self.queries,
            self.responses,
            self.self_answered,
            self.cache_hit,
            self.cache_miss,
            self.cache_inserted,
        )

    def loggers(self) -> list[Logger]:
        """The loggers the rules have open, once for each rule that opened one: closing
        each of them once lets go of what these rules hold."""
        return [logger for chain in self.all() for rule in chain for logger in rule.opened]

    def open_files(self, running: Chains | None = None) -> None:
        """Open the files the rules write to, when the server starts serving these rules
        (never while the configuration ran: check-config and a failed reload touch no
        file), among the files of the server that serves ``running`` (a reload): a file
        open there is shared, one it opened before is appended to, so a reload that names
        the running log again, or a log only a removed rule had, appends to it. All or
        nothing: ``OSError``."""
        files = running.files if running is not None else None
        files = files if files is not None else LogFiles()
        try:
            for chain in self.all():
                for rule in chain:
                    if not rule.opened:
                        rule.opened = open_loggers(loggers_of([rule.action]), files)
        except BaseException:
            self.release_files()
            raise
        self.files = files

    def release_files(self) -> None:
        """Let go of the rules' files (each closes with the last rule writing to it): a
        reload that is not put in place."""
        self.files = None
        for chain in self.all():
            for rule in chain:
                opened, rule.opened = rule.opened, []
                for logger in opened:
                    logger.close()

    def close_files(self) -> None:
        """The server stops serving: the rules' files close, and every other file it has
        open (rules removed at the console that a query may still hold)."""
        files = self.files
        self.release_files()
        if files is not None:
            files.close_all()


async def clean_caches(routing: Routing, settings: Settings) -> None:
    """dnsdist's cache cleaning: every ``setCacheCleaningDelay`` seconds, remove the
    expired entries of every pool's cache (down to ``100 - setCacheCleaningPercentage``
    percent of its size), except a ``keepStaleData`` cache whose pool has no server up."""
    while True:
        await trio.sleep(settings.cache_cleaning_delay)
        now = trio.current_time()
        done: set[int] = set()
        for pool in list(routing.pools.values()):
            cache = pool.cache
            if cache is None or id(cache) in done:
                continue
            if cache.keep_stale_data and not any(s.is_up for s in pool.servers):
                continue
            done.add(id(cache))
            percentage = settings.cache_cleaning_percentage
            try:
                cache.purge_expired(now, int(cache.max_entries * (100 - percentage) / 100))
            except Exception:  # a cleaning that fails must not stop the server
                log.exception("Error while cleaning the packet cache of pool '%s'", pool.name)
