"""One query's life: query rules, pool and policy, backend, response rules.

``Pipeline.process(dq)`` runs synchronously as far as the query goes without
waiting and returns its ``Outcome``: the bytes to send back, ``None`` to send
nothing (a drop), or a ``Wait``, the one thing it must wait for (the backend's
reply, the end of a suspension, a delay) and what to do next.  A frontend
sends an answer at once, and gives a query that must wait its own task, which
runs ``finish``: await, go on, until there is an answer.  Every wait is bounded
by a deadline.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from triodist.asyncproc.registry import AsyncRegistry, answer_with_rcode
from triodist.backends.pools import BUILTIN_POLICIES, Pool, ServerPolicy, select_server
from triodist.backends.server import NotSent, Server
from triodist.ops import querylog
from triodist.ops.rings import TIMED_OUT, Rings
from triodist.rules.log_actions import LogFiles, Logger, loggers_of, open_loggers
from triodist.rules.chain import Rule, RuleChain, Rules
from triodist.rules.verdicts import Action, ResponseAction
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.message import (
    CD,
    RD,
    DNSQuestion,
    DNSResponse,
    make_rcode_answer,
    make_truncated_answer,
    rebuild,
    restore_client_view,
    set_response_header,
    spoof_from_string,
)

if TYPE_CHECKING:
    from triodist.cache.packetcache import CacheKey, PacketCache

log = logging.getLogger("triodist.query.pipeline")

SERVFAIL = 2
# Plain ints for the checks every rule makes: reading an IntEnum member goes through
# EnumType.__getattr__ in Python 3.11 (docs/lua-cost.md).
_NONE, _NOOP, _RESPONSE_NONE = int(Action.None_), int(Action.NoOp), int(ResponseAction.None_)
NXDOMAIN = 3
REFUSED = 5


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
    # SO_RCVBUF and SO_SNDBUF of the frontends' UDP sockets, set as they are bound
    # (dnsdist's setUDPSocketBufferSizes); 0 leaves the system's value.
    udp_buffer_sizes: tuple[int, int] = (0, 0)
    tcp_recv_timeout: float = 2.0
    tcp_send_timeout: float = 2.0
    max_tcp_connections: int = 10_000
    # triodist's default; dnsdist's is 0 (no bound): docs/configuration.md says why.
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
    queries: RuleChain = field(default_factory=lambda: RuleChain("query"))
    responses: RuleChain = field(default_factory=lambda: RuleChain("response"))
    self_answered: RuleChain = field(default_factory=lambda: RuleChain("self-answered"))
    cache_hit: RuleChain = field(default_factory=lambda: RuleChain("cache-hit"))
    cache_miss: RuleChain = field(default_factory=lambda: RuleChain("query"))
    cache_inserted: RuleChain = field(default_factory=lambda: RuleChain("cache-inserted"))
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


class Wait:
    """What a query must wait for before it can go on: ``wait()`` is awaited in the
    query's own task (a backend's reply, a suspension's end, a delay), then ``then``
    is called with what it returned, synchronously, and gives the next outcome."""

    __slots__ = ("then", "wait")

    def __init__(self, wait: Callable[[], Awaitable[Any]], then: Callable[[Any], Outcome]) -> None:
        self.wait = wait
        self.then = then


#: Where a query stands after the synchronous part of its processing: the bytes to send,
#: ``None`` to send nothing (a drop), or what it must wait for.
Outcome = bytes | bytearray | None | Wait


async def finish(outcome: Outcome) -> bytes | bytearray | None:
    """Take a query that must wait to its answer (run by the query's own task)."""
    while isinstance(outcome, Wait):
        outcome = outcome.then(await outcome.wait())
    return outcome


class Suspended:
    """A rule chain stopped by an action that suspended the object: which rule, and
    the action's verdict, applied once the object is resumed; and, for the ``Wait``
    made of its two methods, the object, its rules and what comes after them. One
    object rather than two partials: a held query keeps it as long as it is held.

    ``rules`` is the chain's tuple as the object entered it (``RuleChain``): the
    object resumes after rule ``at`` of the chain it started in, whatever edits
    (``clearRules``, ``mvRule``, a reload) put in the chain's place meanwhile."""

    __slots__ = ("action", "at", "extra", "obj", "pipeline", "rules", "then")

    def __init__(self, at: int, action: int, extra: str) -> None:
        self.at = at
        self.action = action
        self.extra = extra
        # Set by the chain that waits on it (``_query_rules``, ``_response_rules``).
        self.obj: DNSQuestion
        self.pipeline: Pipeline
        self.rules: Rules
        self.then: Then

    def wait(self) -> Awaitable[str]:
        """The end of the suspension (``AsyncRegistry.wait_for_ending``)."""
        return self.pipeline.async_registry.wait_for_ending(self.obj)

    def resumed(self, ending: str) -> Outcome:
        """The rule chain goes on, from the suspending action's verdict."""
        if isinstance(self.obj, DNSResponse):
            return self.pipeline._response_resumed(self, ending)
        return self.pipeline._query_resumed(self, ending)


#: What a rule chain comes to after its final rule, given the outcome ("drop",
#: "answer", "forward" for queries; "send", "drop" for responses).
Then = Callable[[Any, str], Outcome]


class Pipeline:
    """The rules and routing of a running server, and what it counts.

    Processing is synchronous code (``process``) that returns an ``Outcome``: the
    answer when it needs nothing else (a cache hit, a spoof, a drop), or a ``Wait``
    naming the one thing it must wait for; the caller then runs ``finish`` in the
    query's own task. Waiting never happens anywhere else, so a query that waits
    always has its task, and a query that does not costs none."""

    def __init__(
        self,
        chains: Chains,
        routing: Routing,
        settings: Settings,
        async_registry: AsyncRegistry | None = None,
    ) -> None:
        self.chains = chains
        self.routing = routing
        self.settings = settings
        self.async_registry = async_registry or AsyncRegistry()
        self.stats: Counter[str] = Counter()
        #: Errors of rules and policies come at the query rate: one line a minute per error.
        self.errors = RateLimitedLog(log)
        #: The last queries and responses, for the console (rings.py).
        self.rings = Rings()
        self._now: float | None = None

    def process(self, dq: DNSQuestion) -> Outcome:
        """Run a query as far as it goes without waiting."""
        self.stats["queries"] += 1
        self.rings.queries.append(
            (dq.query_time, dq.remote[0], dq.qname_wire, dq.qtype, len(dq.data), dq.tcp)
        )
        querylog.query_received(dq)  # serve -v
        # Until it waits, a query's clock is the time it arrived (one reading, not one
        # per use); after a wait, ``_now`` is None and the clock is read again.
        self._now = dq.query_time
        try:
            return self._query_rules(dq, self.chains.queries.rules, 0, self._after_query_rules)
        finally:
            self._now = None

    async def clean_caches(self) -> None:
        """dnsdist's cache cleaning: every ``setCacheCleaningDelay`` seconds, remove the
        expired entries of every pool's cache (down to ``100 - setCacheCleaningPercentage``
        percent of its size), except a ``keepStaleData`` cache whose pool has no server up."""
        while True:
            await trio.sleep(self.settings.cache_cleaning_delay)
            now = trio.current_time()
            done: set[int] = set()
            for pool in list(self.routing.pools.values()):
                cache = pool.cache
                if cache is None or id(cache) in done:
                    continue
                if cache.keep_stale_data and not any(s.is_up for s in pool.servers):
                    continue
                done.add(id(cache))
                percentage = self.settings.cache_cleaning_percentage
                try:
                    cache.purge_expired(now, int(cache.max_entries * (100 - percentage) / 100))
                except Exception:  # a cleaning that fails must not stop the server
                    log.exception("Error while cleaning the packet cache of pool '%s'", pool.name)

    # --- query rules ---------------------------------------------------------------------

    def run_query_rules(
        self, dq: DNSQuestion, rules: Rules | None = None, start: int = 0
    ) -> str | Suspended:
        """Run query rules (``addAction``'s chain unless ``rules`` is given) from
        ``start``: "drop", "answer" or "forward", or where an action suspended the query."""
        if rules is None:
            rules = self.chains.queries.rules
        for index in range(start, len(rules)):
            rule = rules[index]
            if not rule.selector.matches(dq):
                continue
            action, extra = self._act(rule, dq)
            if dq.suspension is not None:
                return Suspended(index, action, extra)
            if action in (_NONE, _NOOP):
                continue
            dq.rule_fired = str(rule.action)
            outcome = self._apply(action, extra, dq)
            if outcome is not None:
                return outcome
        return "answer" if dq.is_answer() else "forward"

    def _act(self, rule: Rule, obj: DNSQuestion) -> tuple[int, str]:
        """Run a matching rule's action. Only an action may suspend (a selector or a
        policy cannot: nothing would wait for what it held), so the registry is handed
        to the object for the action's call only."""
        rule.matches += 1
        obj.async_registry = self.async_registry
        try:
            verdict: tuple[int, str] = rule.action(obj)
        finally:
            obj.async_registry = None
        return verdict

    def _query_rules(self, dq: DNSQuestion, rules: Rules, start: int, then: Then) -> Outcome:
        """Run query rules, then ``then`` with their outcome; a suspension waits first."""
        if not rules:
            return then(dq, "answer" if dq.is_answer() else "forward")
        try:
            step = self.run_query_rules(dq, rules, start)
        except Exception as exc:  # a failing rule (e.g. a Lua error) must not stop the server
            return self._query_rule_failed(dq, exc)
        if isinstance(step, str):
            return then(dq, step)
        # The action suspended the query: its task waits for the end of the suspension,
        # then the chain goes on with the action's verdict (unless dropped or answered).
        if not dq.may_wait:
            return self._overloaded(dq)
        step.obj, step.pipeline, step.rules, step.then = dq, self, rules, then
        return Wait(step.wait, step.resumed)

    def _overloaded(self, obj: DNSQuestion) -> Outcome:
        """A query that would wait while its frontend has as many waiting as it allows:
        dropped and counted, never queued (a suspension it made is let go)."""
        self.stats["frontend-overload-drops"] += 1
        if obj.suspension is not None:
            self.async_registry.abandon(obj)
        return None

    def _query_resumed(self, step: Suspended, ending: str) -> Outcome:
        dq, rules, then = step.obj, step.rules, step.then
        if ending == "drop":
            return then(dq, "drop")
        if ending == "servfail":
            answer_with_rcode(dq, SERVFAIL, clear_records=False)
            return then(dq, "answer")
        if dq.is_answer():  # made into an answer while held (setRCode, setContent)
            return then(dq, "answer")
        if step.action not in (_NONE, _NOOP):
            dq.rule_fired = str(rules[step.at].action)
            try:
                outcome = self._apply(step.action, step.extra, dq)
            except Exception as exc:
                return self._query_rule_failed(dq, exc)
            if outcome is not None:
                return then(dq, outcome)
        return self._query_rules(dq, rules, step.at + 1, then)

    def _query_rule_failed(self, dq: DNSQuestion, exc: Exception) -> Outcome:
        # A broken rule fails on every query it sees: once a minute per distinct error.
        self.errors.warning(
            f"query: {_first_line(exc)}",
            f"Error while processing query {dq.describe()}: {_first_line(exc)}",
            exc=exc,
        )
        self.stats["rule-errors"] += 1
        self.async_registry.abandon(dq)
        make_rcode_answer(dq, SERVFAIL)
        return self._self_answered(dq)

    def _after_query_rules(self, dq: DNSQuestion, outcome: str) -> Outcome:
        if outcome == "drop":
            return None
        if outcome == "answer":
            return self._self_answered(dq)
        return self._forward(dq)

    def _apply(self, action: int, extra: str, dq: DNSQuestion) -> str | None:
        """dnsdist's processRulesResult: ``None`` means go on with the next rule."""
        if action == Action.Allow:
            return "answer" if dq.is_answer() else "forward"
        if action == Action.Drop:
            self.stats["rule-drop"] += 1
            return "drop"
        if action == Action.Nxdomain:
            self.stats["rule-nxdomain"] += 1
            make_rcode_answer(dq, NXDOMAIN)
            return "answer"
        if action == Action.Refused:
            self.stats["rule-refused"] += 1
            make_rcode_answer(dq, REFUSED)
            return "answer"
        if action == Action.ServFail:
            self.stats["rule-servfail"] += 1
            make_rcode_answer(dq, SERVFAIL)
            return "answer"
        if action == Action.Spoof:
            # Nothing of the query's type to spoof with: dnsdist forwards the query.
            return "answer" if spoof_from_string(dq, extra) else "forward"
        if action == Action.SpoofRaw:
            set_response_header(dq.data, rcode=0)
            return "answer"
        if action == Action.SpoofPacket:
            dq.setContent(extra)
            return "answer"
        if action == Action.Truncate:
            if dq.tcp:
                return None
            make_truncated_answer(dq)
            return "answer"
        if action == Action.HeaderModify:
            return "answer" if dq.is_answer() else "forward"
        if action == Action.Pool:
            dq.pool = extra
            return "forward"
        if action == Action.NoRecurse:
            dq.data[2] &= 0xFE
            return "forward"
        if action == Action.Delay:
            dq.delay_ms = _to_int(extra)
            return None
        if action == Action.SetTag:
            return None
        log.warning("Unknown action %d returned by a rule; ignoring it", action)
        return None

    # --- answering ----------------------------------------------------------------------

    def _self_answered(self, dq: DNSQuestion) -> Outcome:
        """A query answered by a rule: self-answered response rules, then send."""
        self.stats["self-answered"] += 1
        dr = DNSResponse.from_query(dq, dq.data)
        return self._respond(dr, self.chains.self_answered)

    def _forward(self, dq: DNSQuestion) -> Outcome:
        """The packet cache, then (on a miss) the cache-miss rules and the backend."""
        pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
        if pool.cache is None or dq.skipCache:
            return self._to_backend(dq, pool, None, None)
        cache: PacketCache = pool.cache
        key = cache.make_key(dq.data, dq.question_end, dq.tcp)
        # Stale entries are served only when the pool has no server to ask.
        allow_expired = self.settings.stale_cache_entries_ttl
        if allow_expired > 0 and any(s.is_up for s in pool.servers):
            allow_expired = 0
        now = self._now if self._now is not None else trio.current_time()
        answer = cache.lookup(key, dq.data, now, allow_expired=allow_expired)
        if answer is not None:
            self.stats["cache-hits"] += 1
            cache_hit = self.chains.cache_hit
            if not cache_hit.rules and (dq.delay_ms <= 0 or dq.tcp):
                # The common case, kept short (no cache-hit rule, no delay): the cache
                # gave the client's ID and name case back already; the client's RD and
                # CD flags, and send.
                flags = (answer[2] << 8 | answer[3]) & ~(RD | CD) | (dq.orig_flags & (RD | CD))
                answer[2], answer[3] = flags >> 8, flags & 0xFF
                if flags & 0x0F == SERVFAIL:
                    self.stats["servfail-responses"] += 1
                return answer
            # The client's ID and flags back, then the cache-hit rules.
            dr = DNSResponse.from_query(dq, answer)
            dr.restore_question(dq)
            return self._respond(dr, cache_hit)
        self.stats["cache-misses"] += 1
        cache_miss = self.chains.cache_miss.rules
        if not cache_miss:
            return self._to_backend(dq, pool, cache, key)
        # The cache looked up and its key go with the query through the cache-miss rules
        # (which may hold it): an answer goes into the cache the key was made for, even
        # if the pool has another one by then (setCache at the console).
        return self._query_rules(
            dq, cache_miss, 0, partial(self._after_cache_miss, pool, cache, key)
        )

    def _after_cache_miss(
        self, pool: Pool, cache: PacketCache, key: CacheKey, dq: DNSQuestion, outcome: str
    ) -> Outcome:
        if outcome == "drop":
            return None
        if outcome == "answer":
            return self._self_answered(dq)
        if dq.pool == pool.name:
            return self._to_backend(dq, pool, cache, key)
        # Another pool chosen on a miss: its cache, no second lookup (as dnsdist).
        pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
        if pool.cache is None or dq.skipCache:
            return self._to_backend(dq, pool, None, None)
        return self._to_backend(
            dq, pool, pool.cache, pool.cache.make_key(dq.data, dq.question_end, dq.tcp)
        )

    def _to_backend(
        self, dq: DNSQuestion, pool: Pool, cache: PacketCache | None, key: CacheKey | None
    ) -> Outcome:
        """Pool and policy choose the server; the query's task waits for its reply."""
        try:
            server = select_server(pool, self.routing.policy, dq)
        except Exception as exc:
            policy = pool.policy or self.routing.policy
            self.errors.warning(
                f"policy {policy}: {_first_line(exc)}",
                f"Error in the server policy {policy}: {_first_line(exc)}",
                exc=exc,
            )
            server = None
        if server is None:
            self.stats["no-policy"] += 1
            if self.settings.servfail_when_no_server:
                make_rcode_answer(dq, SERVFAIL)
                return self._self_answered(dq)
            return None
        if not dq.may_wait:
            return self._overloaded(dq)
        exchange: Callable[[], Awaitable[bytes | NotSent | None]]
        if dq.tcp or server.tcp_only:
            exchange = partial(server.query_tcp, dq.data, dq.question_end)
        else:
            # Sent now, before the query has a task: the backend works while the task
            # starts, and the task only waits for the reply.
            pending = server.send_udp(dq.data, dq.question_end)
            if isinstance(pending, NotSent):
                return self._backend_replied(dq, cache, key, server, pending)
            exchange = partial(server.wait_udp, pending)
        return Wait(exchange, partial(self._backend_replied, dq, cache, key, server))

    def _backend_replied(
        self,
        dq: DNSQuestion,
        cache: PacketCache | None,
        key: CacheKey | None,
        server: Server,
        reply: bytes | NotSent | None,
    ) -> Outcome:
        now = trio.current_time()
        if isinstance(reply, NotSent):
            # Never sent (``NotSent``: a local failure): dropped, and counted as what it
            # is, not as the backend's timeout.
            self.stats[reply.value] += 1
            return None
        if reply is None:
            self.stats["downstream-timeouts"] += 1
            self.rings.responses.append(
                (now, dq.remote[0], dq.qname_wire, dq.qtype, 0, TIMED_OUT, 0, server.name)
            )
            return None
        self.stats["responses"] += 1
        usec = int((now - dq.query_time) * 1_000_000)
        querylog.answer_received(dq, server, len(reply), usec)  # serve -v
        self.rings.responses.append(
            (
                now,
                dq.remote[0],
                dq.qname_wire,
                dq.qtype,
                reply[3] & 0x0F,
                usec,
                len(reply),
                server.name,
            )
        )
        if (
            not self.chains.responses.rules
            and (dq.delay_ms <= 0 or dq.tcp)
            and reply[4:6] != b"\x00\x00"
        ):
            # The common case, kept short: no response rule to see a DNSResponse. The
            # reply carries the query's question (the backend's reply is matched on it;
            # an error reply with no question takes the long way).
            answer = bytearray(reply)
            restore_client_view(answer, dq, same_question=True)
            if (
                cache is not None
                and key is not None
                and not dq.skipCache
                and cache.insert(key, answer, now, max_udp=self.settings.max_udp_answer_size)
                and (inserted := self.chains.cache_inserted.rules)
            ):
                dr = DNSResponse.from_query(dq, answer)
                return self._response_rules(dr, inserted, 0, self._send)
            if (answer[3] & 0x0F) == SERVFAIL:
                self.stats["servfail-responses"] += 1
            return answer
        dr = DNSResponse.from_query(dq, reply)
        dr.restore_question(dq)
        return self._respond(dr, self.chains.responses, cache, key)

    # --- response rules -----------------------------------------------------------------

    def _respond(
        self,
        dr: DNSResponse,
        chain: RuleChain,
        cache: PacketCache | None = None,
        key: CacheKey | None = None,
    ) -> Outcome:
        """Response rules, then into the cache (and the cache-inserted rules), then send."""
        rules = chain.rules  # read once: the response keeps these to the end (RuleChain)
        if not rules:
            return self._after_response_rules(cache, key, dr, "send")
        return self._response_rules(dr, rules, 0, partial(self._after_response_rules, cache, key))

    def run_response_rules(self, dr: DNSResponse, rules: Rules, start: int = 0) -> str | Suspended:
        """Run response rules from ``start``: "send" or "drop", or where an action
        suspended the response."""
        for index in range(start, len(rules)):
            rule = rules[index]
            if not rule.selector.matches(dr):
                continue
            action, extra = self._act(rule, dr)
            if dr.suspension is not None:
                return Suspended(index, action, extra)
            verdict = self._response_verdict(dr, action, extra)
            if verdict is not None:
                return verdict
        return "send"

    def _response_verdict(self, dr: DNSResponse, action: int, extra: str) -> str | None:
        """What a response action's verdict means: ``None`` to go on with the next rule."""
        if action == _RESPONSE_NONE:
            return None
        if action == ResponseAction.Allow or action == ResponseAction.HeaderModify:
            return "send"
        if action == ResponseAction.Drop:
            self.stats["rule-drop"] += 1
            return "drop"
        if action == ResponseAction.ServFail:
            dr.rcode = SERVFAIL  # as dnsdist: the rcode only
            return "send"
        if action == ResponseAction.Truncate:
            if not dr.tcp:
                dr.data[2] |= 0x02
                rebuild(dr, answer=None)
            return "send"
        if action == ResponseAction.Delay:
            dr.delay_ms = _to_int(extra)
        return None

    def _response_rules(self, dr: DNSResponse, rules: Rules, start: int, then: Then) -> Outcome:
        try:
            step = self.run_response_rules(dr, rules, start)
        except Exception as exc:
            return then(dr, self._response_rule_failed(dr, exc))
        if isinstance(step, str):
            return then(dr, step)
        if not dr.may_wait:
            return self._overloaded(dr)
        step.obj, step.pipeline, step.rules, step.then = dr, self, rules, then
        return Wait(step.wait, step.resumed)

    def _response_resumed(self, step: Suspended, ending: str) -> Outcome:
        dr, rules, then = step.obj, step.rules, step.then
        assert isinstance(dr, DNSResponse)
        if ending == "drop":
            return then(dr, "drop")
        if ending == "servfail":
            dr.rcode = SERVFAIL
            return then(dr, "send")
        try:
            verdict = self._response_verdict(dr, step.action, step.extra)
        except Exception as exc:
            return then(dr, self._response_rule_failed(dr, exc))
        if verdict is not None:
            return then(dr, verdict)
        return self._response_rules(dr, rules, step.at + 1, then)

    def _response_rule_failed(self, dr: DNSResponse, exc: Exception) -> str:
        self.async_registry.abandon(dr)
        self.errors.warning(
            f"response: {_first_line(exc)}",
            f"Error while processing response {dr.describe()}: {_first_line(exc)}",
            exc=exc,
        )
        self.stats["rule-errors"] += 1
        dr.rcode = SERVFAIL  # as dnsdist: the rcode only
        return "send"

    def _after_response_rules(
        self, cache: PacketCache | None, key: CacheKey | None, dr: DNSResponse, verdict: str
    ) -> Outcome:
        if verdict == "drop":
            return None
        # As dnsdist: what the response rules made of the answer is cached, and the
        # cache-inserted rules then see (and may change) only what this client gets.
        if (
            cache is not None
            and key is not None
            and not dr.skipCache
            and cache.insert(
                key, dr.data, trio.current_time(), max_udp=self.settings.max_udp_answer_size
            )
            and (inserted := self.chains.cache_inserted.rules)
        ):
            return self._response_rules(dr, inserted, 0, self._send)
        return self._send(dr, verdict)

    def _send(self, dr: DNSResponse, verdict: str) -> Outcome:
        if verdict == "drop":
            return None
        if dr.rcode == SERVFAIL:
            self.stats["servfail-responses"] += 1
        data = bytes(dr.data)
        if dr.delay_ms > 0 and not dr.tcp and dr.may_wait:  # overloaded: sent at once
            return Wait(partial(trio.sleep, dr.delay_ms / 1000), partial(_same, data))
        return data


def _same(data: bytes, _: object) -> bytes:
    return data


def _to_int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
