"""One query's life: query rules, pool and policy, backend, response rules.

``Pipeline.handle(dq)`` is awaited by the query's own task (started by a
frontend) and returns the bytes to send back, or ``None`` when nothing is to be
sent (a drop).  Rules run synchronously; the only waits are for the backend and
for delays, each bounded by a deadline.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from .backends.pools import BUILTIN_POLICIES, Pool, ServerPolicy
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

    def add_server(self, server: Server) -> None:
        self.servers.append(server)
        for name in server.pools:
            self.pool(name)

    def remove_server(self, server: Server) -> None:
        self.servers.remove(server)


@dataclass
class Chains:
    queries: RuleChain = field(default_factory=lambda: RuleChain("query"))
    responses: RuleChain = field(default_factory=lambda: RuleChain("response"))
    self_answered: RuleChain = field(default_factory=lambda: RuleChain("self-answered"))
    cache_hit: RuleChain = field(default_factory=lambda: RuleChain("cache-hit"))

    def all(self) -> Iterable[RuleChain]:
        return (self.queries, self.responses, self.self_answered, self.cache_hit)


class Pipeline:
    """The rules and routing of a running server, and what it counts."""

    def __init__(self, chains: Chains, routing: Routing, settings: Settings) -> None:
        self.chains = chains
        self.routing = routing
        self.settings = settings
        self.stats: Counter[str] = Counter()

    async def handle(self, dq: DNSQuestion) -> bytes | None:
        """Take one query to its answer; ``None`` means send nothing."""
        self.stats["queries"] += 1
        try:
            outcome = self.run_query_rules(dq)
        except Exception as exc:  # a failing rule (e.g. a Lua error) must not stop the server
            log.warning("Error while processing query %s: %s", dq.describe(), _first_line(exc))
            log.debug("Rule error", exc_info=True)
            self.stats["rule-errors"] += 1
            return await self._self_answer_rcode(dq, SERVFAIL)
        if outcome == "drop":
            return None
        if outcome == "answer":
            return await self._self_answered(dq)
        return await self._forward(dq)

    # --- query rules ---------------------------------------------------------------------

    def run_query_rules(self, dq: DNSQuestion) -> str:
        """Run the query rules; return "drop", "answer" or "forward"."""
        for rule in self.chains.queries.rules:
            if not rule.selector.matches(dq):
                continue
            rule.matches += 1
            action, extra = rule.action(dq)
            if action == Action.None_ or action == Action.NoOp:
                continue
            dq.rule_fired = str(rule.action)
            stop = self._apply(action, extra, dq)
            if stop is not None:
                return stop
        return "answer" if dq.is_answer() else "forward"

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
        pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
        servers = pool.up_servers()
        policy = pool.policy or self.routing.policy
        try:
            server = policy.choose(servers, dq)
        except Exception as exc:
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
        return await self._respond(dr, self.chains.responses)

    async def _respond(self, dr: DNSResponse, chain: RuleChain) -> bytes | None:
        try:
            verdict = self.run_response_rules(dr, chain)
        except Exception as exc:
            log.warning("Error while processing response %s: %s", dr.describe(), _first_line(exc))
            log.debug("Response rule error", exc_info=True)
            self.stats["rule-errors"] += 1
            dr.rcode = SERVFAIL  # as dnsdist: the rcode only
            verdict = "send"
        if verdict == "drop":
            return None
        if dr.delay_ms > 0 and not dr.tcp:
            await trio.sleep(dr.delay_ms / 1000)
        if dr.rcode == SERVFAIL:
            self.stats["servfail-responses"] += 1
        return bytes(dr.data)

    def run_response_rules(self, dr: DNSResponse, chain: RuleChain) -> str:
        for rule in chain.rules:
            if not rule.selector.matches(dr):
                continue
            rule.matches += 1
            action, extra = rule.action(dr)
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
