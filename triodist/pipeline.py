"""One query's life: query rules, pool and policy, backend, response rules.

``Pipeline.handle(dq)`` is awaited by the query's own task (started by a
frontend) and returns the bytes to send back, or ``None`` when nothing is to be
sent (a drop).  Rules run synchronously; the only waits are for the backend and
for delays, each bounded by a deadline.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .asyncproc import AsyncRegistry, answer_with_rcode
from .backends.pools import BUILTIN_POLICIES, Pool, ServerPolicy, select_server
from .backends.server import Server
from .dnsmsg import (
    DNSQuestion,
    DNSResponse,
    make_rcode_answer,
    make_truncated_answer,
    rebuild,
    set_response_header,
    spoof_from_string,
)
from .rules.chain import RuleChain
from .rules.verdicts import Action, ResponseAction

if TYPE_CHECKING:
    from .cache import CacheKey, PacketCache

log = logging.getLogger("triodist.pipeline")

SERVFAIL = 2
NXDOMAIN = 3
REFUSED = 5


@dataclass
class Settings:
    """Tunables of the query path (set from the configuration)."""

    servfail_when_no_server: bool = False
    max_udp_in_flight: int = 10_000
    tcp_recv_timeout: float = 2.0
    tcp_send_timeout: float = 2.0
    max_tcp_connections: int = 10_000
    max_tcp_connections_per_client: int = 0
    max_tcp_queries_per_connection: int = 0
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
        self.servers.append(server)
        for name in server.pools:
            self.pool(name)
        if self.on_change is not None:
            self.on_change(server, True)

    def remove_server(self, server: Server) -> None:
        self.servers.remove(server)
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

    def all(self) -> Iterable[RuleChain]:
        return (
            self.queries,
            self.responses,
            self.self_answered,
            self.cache_hit,
            self.cache_miss,
            self.cache_inserted,
        )


class Pipeline:
    """The rules and routing of a running server, and what it counts."""

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

    async def handle(self, dq: DNSQuestion) -> bytes | None:
        """Take one query to its answer; ``None`` means send nothing."""
        self.stats["queries"] += 1
        try:
            outcome = await self.run_query_rules(dq)
        except Exception as exc:  # a failing rule (e.g. a Lua error) must not stop the server
            log.warning("Error while processing query %s: %s", dq.describe(), _first_line(exc))
            log.debug("Rule error", exc_info=True)
            self.stats["rule-errors"] += 1
            self.async_registry.abandon(dq)
            return await self._self_answer_rcode(dq, SERVFAIL)
        if outcome == "drop":
            return None
        if outcome == "answer":
            return await self._self_answered(dq)
        return await self._forward(dq)

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

    async def run_query_rules(self, dq: DNSQuestion, chain: RuleChain | None = None) -> str:
        """Run query rules (``addAction``, or ``addCacheMissAction``'s chain); return
        "drop", "answer" or "forward"."""
        for rule in (chain or self.chains.queries).rules:
            if not rule.selector.matches(dq):
                continue
            rule.matches += 1
            # Only an action may suspend (a selector or a policy cannot: nothing would
            # wait for what it held).
            dq.async_registry = self.async_registry
            try:
                action, extra = rule.action(dq)
            finally:
                dq.async_registry = None
            if dq.suspension is not None:
                # The action suspended the query: wait here, in the query's own task, then
                # go on with the action's verdict (unless it was dropped or answered).
                early = await self._query_resumed(dq)
                if early is not None:
                    return early
            if action == Action.None_ or action == Action.NoOp:
                continue
            dq.rule_fired = str(rule.action)
            stop = self._apply(action, extra, dq)
            if stop is not None:
                return stop
        return "answer" if dq.is_answer() else "forward"

    async def _query_resumed(self, dq: DNSQuestion) -> str | None:
        """Wait for a suspended query; what ends its rules early, or ``None`` to go on."""
        ending = await self.async_registry.settle(dq)
        if ending == "drop":
            return "drop"
        if ending == "servfail":
            answer_with_rcode(dq, SERVFAIL, clear_records=False)
            return "answer"
        # Made into an answer while held (setRCode, setContent): sent, no backend asked.
        return "answer" if dq.is_answer() else None

    async def _response_resumed(self, dr: DNSResponse) -> str | None:
        """Wait for a suspended response; what ends its rules early, or ``None`` to go on."""
        ending = await self.async_registry.settle(dr)
        if ending == "drop":
            return "drop"
        if ending == "servfail":
            dr.rcode = SERVFAIL
            return "send"
        return None

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

    async def _self_answer_rcode(self, dq: DNSQuestion, rcode: int) -> bytes | None:
        make_rcode_answer(dq, rcode)
        return await self._self_answered(dq)

    async def _self_answered(self, dq: DNSQuestion) -> bytes | None:
        """A query answered by a rule: self-answered response rules, then send."""
        self.stats["self-answered"] += 1
        dr = DNSResponse.from_query(dq, dq.data)
        return await self._respond(dr, self.chains.self_answered)

    async def _forward(self, dq: DNSQuestion) -> bytes | None:
        """Cache, then pool and policy, then the backend, then the response rules."""
        pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
        cache: PacketCache | None = None
        key: CacheKey | None = None
        if pool.cache is not None and not dq.skipCache:
            cache = pool.cache
            key = cache.make_key(dq.data, dq.question_end, dq.tcp)
            # Stale entries are served only when the pool has no server to ask.
            allow_expired = self.settings.stale_cache_entries_ttl
            if allow_expired > 0 and any(s.is_up for s in pool.servers):
                allow_expired = 0
            answer = cache.lookup(key, dq.data, trio.current_time(), allow_expired=allow_expired)
            if answer is not None:
                self.stats["cache-hits"] += 1
                return await self._cache_hit(dq, answer)
            self.stats["cache-misses"] += 1
            if self.chains.cache_miss.rules:
                outcome = await self._cache_miss_rules(dq)
                if outcome is not None:
                    return outcome if outcome != b"" else None
                if dq.pool != pool.name:
                    # Another pool chosen on a miss: its cache, no second lookup (as dnsdist).
                    pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
                    cache = pool.cache
                    if cache is None or dq.skipCache:
                        cache, key = None, None
                    else:
                        key = cache.make_key(dq.data, dq.question_end, dq.tcp)
        try:
            server = select_server(pool, self.routing.policy, dq)
        except Exception as exc:
            policy = pool.policy or self.routing.policy
            log.warning("Error in the server policy %s: %s", policy, _first_line(exc))
            server = None
        if server is None:
            self.stats["no-policy"] += 1
            if self.settings.servfail_when_no_server:
                return await self._self_answer_rcode(dq, SERVFAIL)
            return None
        if dq.tcp or server.tcp_only:
            reply = await server.query_tcp(dq.data)
        else:
            reply = await server.query_udp(dq.data, dq.question_end)
        if reply is None:
            self.stats["downstream-timeouts"] += 1
            return None
        self.stats["responses"] += 1
        dr = DNSResponse.from_query(dq, reply)
        dr.restore_question(dq)
        return await self._respond(dr, self.chains.responses, cache, key)

    async def _cache_miss_rules(self, dq: DNSQuestion) -> bytes | None:
        """The cache-miss rules: ``None`` to go on forwarding, else what to send
        (``b""`` for nothing: a drop)."""
        try:
            outcome = await self.run_query_rules(dq, self.chains.cache_miss)
        except Exception as exc:
            log.warning("Error while processing query %s: %s", dq.describe(), _first_line(exc))
            self.stats["rule-errors"] += 1
            self.async_registry.abandon(dq)
            return await self._self_answer_rcode(dq, SERVFAIL) or b""
        if outcome == "drop":
            return b""
        if outcome == "answer":
            return await self._self_answered(dq) or b""
        return None

    async def _cache_hit(self, dq: DNSQuestion, answer: bytes) -> bytes | None:
        """An answer from the packet cache: the client's flags back, cache-hit rules, send."""
        dr = DNSResponse.from_query(dq, answer)
        dr.restore_question(dq)
        return await self._respond(dr, self.chains.cache_hit)

    async def _respond(
        self,
        dr: DNSResponse,
        chain: RuleChain,
        cache: PacketCache | None = None,
        key: CacheKey | None = None,
    ) -> bytes | None:
        try:
            verdict = await self.run_response_rules(dr, chain)
        except Exception as exc:
            self.async_registry.abandon(dr)
            log.warning("Error while processing response %s: %s", dr.describe(), _first_line(exc))
            log.debug("Response rule error", exc_info=True)
            self.stats["rule-errors"] += 1
            dr.rcode = SERVFAIL  # as dnsdist: the rcode only
            verdict = "send"
        if verdict == "drop":
            return None
        # As dnsdist: what the response rules made of the answer is cached, and the
        # cache-inserted rules then see (and may change) only what this client gets.
        if (
            cache is not None
            and key is not None
            and not dr.skipCache
            and cache.insert(key, dr.data, trio.current_time())
            and self.chains.cache_inserted.rules
        ):
            try:
                verdict = await self.run_response_rules(dr, self.chains.cache_inserted)
            except Exception as exc:
                self.async_registry.abandon(dr)
                log.warning(
                    "Error while processing response %s: %s", dr.describe(), _first_line(exc)
                )
                self.stats["rule-errors"] += 1
                dr.rcode = SERVFAIL
                verdict = "send"
            if verdict == "drop":
                return None
        if dr.delay_ms > 0 and not dr.tcp:
            await trio.sleep(dr.delay_ms / 1000)
        if dr.rcode == SERVFAIL:
            self.stats["servfail-responses"] += 1
        return bytes(dr.data)

    async def run_response_rules(self, dr: DNSResponse, chain: RuleChain) -> str:
        for rule in chain.rules:
            if not rule.selector.matches(dr):
                continue
            rule.matches += 1
            dr.async_registry = self.async_registry
            try:
                action, extra = rule.action(dr)
            finally:
                dr.async_registry = None
            if dr.suspension is not None:
                early = await self._response_resumed(dr)
                if early is not None:
                    return early
            if action == ResponseAction.None_:
                continue
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
        return "send"


def _to_int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
