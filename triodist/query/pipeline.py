"""One query's life: from the frontend's receive loop through the rules, the wait (for a
backend's reply, or for the end of a suspension) and back to the client.

``Pipeline.process`` is where it starts, and its docstring is the map. The life is
synchronous code that runs a query as far as it goes without waiting: most queries (a
cache hit, a spoof, a refusal, a drop) end there, and the frontend sends the answer from
its receive loop (the inline fast path). Where a query must wait, the step returns a
``Wait`` (``outcome.py``): what to await, and the step that follows. The frontend then
gives the query a task of its own, which awaits and takes the next step until there is an
answer (``answer_after_waits``). Waiting happens nowhere else, so a query that waits
always has its task, with a deadline, in a nursery; and a query that does not costs none.

The steps are the methods that follow ``process`` below, in the order a query meets
them; the one that follows a wait is the ``then`` of its ``Wait``. Beside this module:
what a rule's verdict means (``rulerun.py``), outcomes and suspended chains
(``outcome.py``), the configuration the pipeline serves (``settings.py``), and what it
records for the console (``records.py``).

Imports nothing above triodist.query (rules, asyncproc, backends, cache, wire, util).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from triodist.asyncproc.registry import AsyncRegistry, Ending, answer_with_rcode
from triodist.backends.exchange import NotSent
from triodist.backends.pools import Pool, select_server
from triodist.backends.server import Server
from triodist.backends.transfer import Transfer
from triodist.query.ecs import add_client_subnet, ecs_state, restore_answer
from triodist.query.exchange import BackendExchange
from triodist.query.outcome import (
    Outcome,
    QueryDecision,
    ResponseDecision,
    Suspended,
    Then,
    Wait,
)
from triodist.query.records import NoRecords, QueryRecorder
from triodist.query.rulerun import (
    ANSWER,
    DROP,
    DROP_RESPONSE,
    FORWARD,
    NONE,
    NOOP,
    SEND,
    SERVFAIL,
    RuleFailed,
    RuleRunner,
    failure_key,
    first_line,
)
from triodist.query.settings import Chains, Routing, Settings, clean_caches
from triodist.rules.chain import RuleChain, Rules
from triodist.wire.build import (
    finish_self_answer,
    make_rcode_answer,
    restore_client_view,
    strip_truncated,
)
from triodist.wire.header import CD, RD
from triodist.wire.message import DNSQuestion, DNSResponse

if TYPE_CHECKING:
    from triodist.cache.keys import CacheKey
    from triodist.cache.packetcache import PacketCache

#: A server the policy chose before the cache was looked up (for ECS), as a 1-tuple (its
#: choice may be None), or None when the policy has not been asked yet.
Chosen = tuple[Server | None] | None

# Module names for the endings of a suspension (an enum member read through its class
# costs a call of EnumType.__getattr__ in Python 3.11).
_ENDED_IN_DROP, _ENDED_IN_SERVFAIL = Ending.DROP, Ending.SERVFAIL


class Pipeline(RuleRunner):
    """The rules and routing of a running server, and what it counts.

    Processing is synchronous code (``process``) that returns an ``Outcome``: the
    answer when it needs nothing else (a cache hit, a spoof, a drop), or a ``Wait``
    naming the one thing it must wait for; the caller then runs ``answer_after_waits``
    in the query's own task. Waiting never happens anywhere else, so a query that waits
    always has its task, and a query that does not costs none."""

    def __init__(
        self,
        chains: Chains,
        routing: Routing,
        settings: Settings,
        async_registry: AsyncRegistry | None = None,
        recorder: QueryRecorder | None = None,
    ) -> None:
        super().__init__(chains, async_registry)
        self.routing = routing
        self.settings = settings
        #: Told of every query and every backend's reply: in a server, the console's
        #: rings (``triodist.ops.rings``), which the server hands over.
        self.recorder: QueryRecorder = recorder if recorder is not None else NoRecords()
        #: Who answers forwarded queries in place of the servers' sockets: None in a
        #: server; a replay's fake backends (``triodist.replay``).
        self.exchange: BackendExchange | None = None
        self._now: float | None = None

    async def clean_caches(self) -> None:
        """The packet caches' periodic cleaning (``settings.clean_caches``)."""
        await clean_caches(self.routing, self.settings)

    # --- the life of a query -----------------------------------------------------------------

    def process(self, dq: DNSQuestion) -> Outcome:
        """Run a query as far as it goes without waiting.

        1. It arrives: counted, and recorded (the rings, ``serve -v``).
        2. The query rules (``addAction``) run (``_query_chain``). An action may suspend
           it: the query waits for the end of the suspension, then the chain goes on
           from that rule (``query_resumed``).
        3. The rules' decision (``_after_query_rules``): a drop sends nothing; a query a
           rule answered takes the self-answered response rules and is sent
           (``_self_answered``); any other is forwarded.
        4. Forwarded: the pool's packet cache (``_look_up_cache``). A hit takes the
           cache-hit response rules and is sent. A miss takes the cache-miss rules
           (which may suspend it too, or route it to another pool:
           ``_after_cache_miss_rules``).
        5. The pool's policy chooses a server, and the query is sent to it
           (``_ask_backend``): the query waits for its reply, in its own task.
        6. The reply (``_backend_replied``): the response rules (which may suspend the
           response: ``response_resumed``), then into the cache and the cache-inserted
           rules (``_into_cache``), then back to the client (``_send_back``), after a
           ``DelayResponseAction``'s wait if one asked for it.

        Whatever step a wait interrupts, the one that follows is in the ``Wait`` this
        returns, and the query's task takes it (``answer_after_waits``)."""
        self.stats["queries"] += 1
        self.recorder.query_received(dq)
        # Until it waits, a query's clock is the time it arrived (one reading, not one
        # per use); after a wait, ``_now`` is None and the clock is read again.
        self._now = dq.query_time
        # The query's ECS settings start as the configuration's (rules may change them).
        settings = self.settings
        dq.ecsOverride = settings.ecs_override
        dq.ecsPrefixLength = (
            settings.ecs_source_prefix_v6 if ":" in dq.remote[0] else settings.ecs_source_prefix_v4
        )
        try:
            return self._query_chain(dq, self.chains.queries.rules, 0, self._after_query_rules)
        finally:
            self._now = None

    def _query_chain(self, dq: DNSQuestion, rules: Rules, start: int, then: Then) -> Outcome:
        """Run query rules, then ``then`` with their decision; a suspension waits first."""
        if not rules:
            return then(dq, ANSWER if dq.is_answer() else FORWARD)
        try:
            step = self.run_query_rules(dq, rules, start)
        except Exception as exc:  # a failing rule (e.g. a Lua error) must not stop the server
            return self._query_rule_failed(dq, exc)
        if not isinstance(step, Suspended):
            return then(dq, step)
        # The action suspended the query: its task waits for the end of the suspension,
        # then the chain goes on with the action's verdict (unless dropped or answered).
        if not dq.may_wait:
            return self._overloaded(dq)
        step.obj, step.pipeline, step.rules, step.then = dq, self, rules, then
        return Wait(step.wait, step.resumed)

    def query_resumed(self, step: Suspended, ending: Ending) -> Outcome:
        """A suspended query's wait ended: the chain goes on after the rule that
        suspended it, with its action's verdict (``Suspended.resumed``)."""
        dq, rules, then = step.obj, step.rules, step.then
        if ending is _ENDED_IN_DROP:
            return then(dq, DROP)
        if ending is _ENDED_IN_SERVFAIL:
            answer_with_rcode(dq, SERVFAIL, clear_records=False)
            return then(dq, ANSWER)
        if dq.is_answer():  # made into an answer while held (setRCode, setContent)
            return then(dq, ANSWER)
        if step.action not in (NONE, NOOP):
            dq.rule_fired = str(rules[step.at].action)
            try:
                decision = self.apply_query_verdict(step.action, step.extra, dq)
            except Exception as exc:
                return self._query_rule_failed(dq, exc)
            if decision is not None:
                return then(dq, decision)
        return self._query_chain(dq, rules, step.at + 1, then)

    def _after_query_rules(self, dq: DNSQuestion, decision: QueryDecision) -> Outcome:
        if decision is DROP:
            return None
        if decision is ANSWER:
            return self._self_answered(dq)
        return self._look_up_cache(dq)

    def _self_answered(self, dq: DNSQuestion) -> Outcome:
        """A query answered by a rule: self-answered response rules, then send."""
        self.stats["self-answered"] += 1
        # Its OPT record is the one dnsdist gives what it answers itself, not the client's;
        # a whole packet a rule gave (setContent, SpoofPacket) keeps its own, as dnsdist.
        settings = self.settings
        if not dq.whole_packet:
            finish_self_answer(
                dq,
                add_edns=settings.add_edns_to_self_generated,
                payload=settings.self_generated_payload,
                ext_rcode=dq.edns_rcode,
            )
        # The client's own RD and CD, whatever a rule set for the backend
        # (SetDisableValidationAction, SetNoRecurseAction), as dnsdist restores them.
        data = dq.data
        flags = (data[2] << 8 | data[3]) & ~(RD | CD) | (dq.orig_flags & (RD | CD))
        data[2], data[3] = flags >> 8, flags & 0xFF
        dr = DNSResponse.from_query(dq, data)
        return self._respond(dr, self.chains.self_answered)

    def _look_up_cache(self, dq: DNSQuestion) -> Outcome:
        """The packet cache, then (on a miss) the cache-miss rules and the backend."""
        pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
        chosen: Chosen = None
        if dq.useECS and pool.may_use_ecs:
            # EDNS Client Subnet (query/ecs.py): the server is chosen first, since the
            # choice says whether the query gets the option, which is in the cache's key.
            server = self._choose_server(pool, dq)
            chosen = (server,)
            if server.use_ecs if server is not None else pool.use_ecs:
                cache = pool.cache
                if (
                    cache is not None
                    and not dq.skipCache
                    and cache.parse_ecs
                    and (server is None or not server.disable_zero_scope)
                ):
                    # An answer a backend said is good for every subnet (scope zero).
                    key = cache.make_key(dq.data, dq.question_end, dq.tcp)
                    answer = self._cache_lookup(cache, key, dq, pool)
                    if answer is not None:
                        # As dnsdist: such a hit keeps the cached answer's RD and CD
                        # flags, not the client's (dnsdist's own test expects it).
                        return self._cache_hit(dq, answer, client_flags=False)
                    if key.subnet is None:  # the client sent no subnet of its own
                        ecs_state(dq).key_no_ecs = key
                if not add_client_subnet(dq):
                    self.stats["ecs-add-failures"] += 1
                    return None
        if pool.cache is None or dq.skipCache:
            return self._ask_backend(dq, pool, None, None, chosen)
        cache = pool.cache
        key = cache.make_key(dq.data, dq.question_end, dq.tcp)
        answer = self._cache_lookup(cache, key, dq, pool)
        if answer is not None:
            return self._cache_hit(dq, answer)
        self.stats["cache-misses"] += 1
        cache_miss = self.chains.cache_miss.rules
        if not cache_miss:
            return self._ask_backend(dq, pool, cache, key, chosen)
        # The cache looked up and its key go with the query through the cache-miss rules
        # (which may hold it): an answer goes into the cache the key was made for, even
        # if the pool has another one by then (setCache at the console).
        return self._query_chain(
            dq,
            cache_miss,
            0,
            partial(self._after_cache_miss_rules, pool, cache, key, chosen=chosen),
        )

    def _cache_lookup(
        self, cache: PacketCache, key: CacheKey, dq: DNSQuestion, pool: Pool
    ) -> bytearray | None:
        # Stale entries are served only when the pool has no server to ask.
        allow_expired = self.settings.stale_cache_entries_ttl
        if allow_expired > 0 and any(s.is_up for s in pool.servers):
            allow_expired = 0
        now = self._now if self._now is not None else trio.current_time()
        return cache.lookup(key, dq.data, now, allow_expired=allow_expired)

    def _cache_hit(
        self, dq: DNSQuestion, answer: bytearray, *, client_flags: bool = True
    ) -> Outcome:
        self.stats["cache-hits"] += 1
        cache_hit = self.chains.cache_hit
        if not cache_hit.rules and (dq.delay_ms <= 0 or dq.tcp):
            # The common case, kept short (no cache-hit rule, no delay): the cache
            # gave the client's ID and name case back already; the client's RD and
            # CD flags, and send.
            if client_flags:
                flags = (answer[2] << 8 | answer[3]) & ~(RD | CD) | (dq.orig_flags & (RD | CD))
                answer[2], answer[3] = flags >> 8, flags & 0xFF
            if answer[3] & 0x0F == SERVFAIL:
                self.stats["servfail-responses"] += 1
            return answer
        # The client's ID and flags back, then the cache-hit rules.
        dr = DNSResponse.from_query(dq, answer)
        if client_flags:
            dr.restore_question(dq)
        return self._respond(dr, cache_hit)

    def _after_cache_miss_rules(
        self,
        pool: Pool,
        cache: PacketCache,
        key: CacheKey,
        dq: DNSQuestion,
        decision: QueryDecision,
        chosen: Chosen = None,
    ) -> Outcome:
        if decision is DROP:
            return None
        if decision is ANSWER:
            return self._self_answered(dq)
        if dq.pool == pool.name:
            return self._ask_backend(dq, pool, cache, key, chosen)
        # Another pool chosen on a miss: its cache, no second lookup (as dnsdist).
        pool = self.routing.pools.get(dq.pool) or Pool(dq.pool, self.routing.servers)
        if pool.cache is None or dq.skipCache:
            return self._ask_backend(dq, pool, None, None)
        return self._ask_backend(
            dq, pool, pool.cache, pool.cache.make_key(dq.data, dq.question_end, dq.tcp)
        )

    def _choose_server(self, pool: Pool, dq: DNSQuestion) -> Server | None:
        """The pool's policy's choice; None when it chose none or failed (logged)."""
        try:
            return select_server(pool, self.routing.policy, dq)
        except Exception as exc:
            policy = pool.policy or self.routing.policy
            self.errors.warning(
                failure_key(f"policy {policy}", exc),
                f"Error in the server policy {policy}: {first_line(exc)}",
                exc=exc,
            )
            return None

    def _ask_backend(
        self,
        dq: DNSQuestion,
        pool: Pool,
        cache: PacketCache | None,
        key: CacheKey | None,
        chosen: Chosen = None,
    ) -> Outcome:
        """Pool and policy choose the server (unless ``chosen`` already, for ECS); the
        query's task waits for its reply."""
        server = self._choose_server(pool, dq) if chosen is None else chosen[0]
        if server is None:
            self.stats["no-policy"] += 1
            if self.settings.servfail_when_no_server:
                make_rcode_answer(dq, SERVFAIL)
                return self._self_answered(dq)
            return None
        if not dq.may_wait:
            return self._overloaded(dq)
        exchange: Callable[[], Awaitable[bytes | NotSent | None]]
        if self.exchange is not None:
            exchange = self.exchange.send(server, dq)
        elif dq.tcp or server.tcp_only:
            # A client over TCP gets a zone transfer's every message (``Transfer``).
            exchange = partial(server.query_tcp, dq.data, dq.question_end, dq.tcp)
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
        """The backend's reply (or its silence): response rules, cache, send."""
        now = trio.current_time()
        if isinstance(reply, NotSent):
            # Never sent (``NotSent``: a local failure): dropped, and counted as what it
            # is, not as the backend's timeout.
            self.stats[reply.value] += 1
            return None
        if reply is None:
            self.stats["downstream-timeouts"] += 1
            self.recorder.backend_timed_out(dq, server, now)
            return None
        self.stats["responses"] += 1
        self.recorder.backend_answered(dq, server, reply, now)
        if isinstance(reply, Transfer):
            # A zone transfer's messages go to the client as the backend sent them (the
            # client's ID given back): no response rule, no cache, as dnsdist 1.7.
            return reply
        if self.settings.truncate_tc and not dq.tcp and len(reply) >= 12 and reply[2] & 0x02:
            # dnsdist's truncateTC: a TC answer is cut before the response rules see it.
            reply = bytes(strip_truncated(reply))
        if (
            not self.chains.responses.rules
            and (dq.delay_ms <= 0 or dq.tcp)
            and reply[4:6] != b"\x00\x00"
        ):
            # The common case, kept short: no response rule to see a DNSResponse. The
            # reply carries the query's question (the backend's reply is matched on it;
            # an error reply with no question takes the long way).
            answer = bytearray(reply)
            if dq.ecs is not None:
                # The client's view back: what ECS added goes (query/ecs.py).
                zero_scope = restore_answer(answer, dq.ecs)
                if zero_scope is None:
                    self.stats["ecs-broken-answers"] += 1
                    return None
                if zero_scope:
                    key = dq.ecs.key_no_ecs
            restore_client_view(answer, dq, same_question=True)
            if (
                cache is not None
                and key is not None
                and not dq.skipCache
                and cache.insert(
                    key,
                    answer,
                    now,
                    temp_failure_ttl=dq.tempFailureTTL,
                    max_udp=self.settings.max_udp_answer_size,
                )
                and (inserted := self.chains.cache_inserted.rules)
            ):
                dr = DNSResponse.from_query(dq, answer)
                return self._response_chain(dr, inserted, 0, self._send_back)
            if (answer[3] & 0x0F) == SERVFAIL:
                self.stats["servfail-responses"] += 1
            return answer
        dr = DNSResponse.from_query(dq, reply)
        dr.restore_question(dq)
        dr.ecs = dq.ecs  # undone once the response rules have seen it (``_into_cache``)
        return self._respond(dr, self.chains.responses, cache, key)

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
            return self._into_cache(cache, key, dr, SEND)
        return self._response_chain(dr, rules, 0, partial(self._into_cache, cache, key))

    def _response_chain(self, dr: DNSResponse, rules: Rules, start: int, then: Then) -> Outcome:
        """Run response rules, then ``then`` with their decision; a suspension waits first."""
        try:
            step = self.run_response_rules(dr, rules, start)
        except Exception as exc:
            return then(dr, self._response_rule_failed(dr, exc))
        if not isinstance(step, Suspended):
            return then(dr, step)
        if not dr.may_wait:
            return self._overloaded(dr)
        step.obj, step.pipeline, step.rules, step.then = dr, self, rules, then
        return Wait(step.wait, step.resumed)

    def response_resumed(self, step: Suspended, ending: Ending) -> Outcome:
        """A suspended response's wait ended: the chain goes on after the rule that
        suspended it, with its action's verdict."""
        dr, rules, then = step.obj, step.rules, step.then
        assert isinstance(dr, DNSResponse)
        if ending is _ENDED_IN_DROP:
            return then(dr, DROP_RESPONSE)
        if ending is _ENDED_IN_SERVFAIL:
            dr.rcode = SERVFAIL
            return then(dr, SEND)
        try:
            decision = self.apply_response_verdict(dr, step.action, step.extra)
        except Exception as exc:
            return then(dr, self._response_rule_failed(dr, exc))
        if decision is not None:
            return then(dr, decision)
        return self._response_chain(dr, rules, step.at + 1, then)

    def _into_cache(
        self,
        cache: PacketCache | None,
        key: CacheKey | None,
        dr: DNSResponse,
        decision: ResponseDecision,
    ) -> Outcome:
        """The response rules' decision: a drop sends nothing; else into the cache."""
        if decision is DROP_RESPONSE:
            return None
        if dr.ecs is not None:
            # A backend's answer to a query given ECS: as dnsdist, the response rules saw
            # it as the backend sent it; the client and the cache get it without.
            state, dr.ecs = dr.ecs, None
            zero_scope = restore_answer(dr.data, state)
            if zero_scope is None:
                self.stats["ecs-broken-answers"] += 1
                return None
            if zero_scope:
                key = state.key_no_ecs
        # As dnsdist: what the response rules made of the answer is cached, and the
        # cache-inserted rules then see (and may change) only what this client gets.
        if (
            cache is not None
            and key is not None
            and not dr.skipCache
            and cache.insert(
                key,
                dr.data,
                trio.current_time(),
                temp_failure_ttl=dr.tempFailureTTL,
                max_udp=self.settings.max_udp_answer_size,
            )
            and (inserted := self.chains.cache_inserted.rules)
        ):
            return self._response_chain(dr, inserted, 0, self._send_back)
        return self._send_back(dr, decision)

    def _send_back(self, dr: DNSResponse, decision: ResponseDecision) -> Outcome:
        """The answer's bytes, for the frontend to send; a delay waits first."""
        if decision is DROP_RESPONSE:
            return None
        if dr.rcode == SERVFAIL:
            self.stats["servfail-responses"] += 1
        data = bytes(dr.data)
        if dr.delay_ms > 0 and not dr.tcp and dr.may_wait:  # overloaded: sent at once
            return Wait(partial(trio.sleep, dr.delay_ms / 1000), partial(_same, data))
        return data

    # --- when a query cannot go on -----------------------------------------------------------

    def _overloaded(self, obj: DNSQuestion) -> Outcome:
        """A query that would wait while its frontend has as many waiting as it allows:
        dropped and counted, never queued (a suspension it made is let go)."""
        self.stats["frontend-overload-drops"] += 1
        if obj.suspension is not None:
            self.async_registry.abandon(obj)
        return None

    def _query_rule_failed(self, dq: DNSQuestion, exc: Exception) -> Outcome:
        """A query rule raised: logged, counted, answered SERVFAIL by the self-answered
        path (whichever chain it was in)."""
        # A broken rule fails on every query it sees: once a minute per rule and place.
        key = failure_key("query", exc)
        if isinstance(exc, RuleFailed):
            exc = exc.error
        self.errors.warning(
            key, f"Error while processing query {dq.describe()}: {first_line(exc)}", exc=exc
        )
        self.stats["rule-errors"] += 1
        self.async_registry.abandon(dq)
        make_rcode_answer(dq, SERVFAIL)
        return self._self_answered(dq)

    def _response_rule_failed(self, dr: DNSResponse, exc: Exception) -> ResponseDecision:
        """A response rule raised: logged, counted, and the response goes on SERVFAIL."""
        self.async_registry.abandon(dr)
        key = failure_key("response", exc)
        if isinstance(exc, RuleFailed):
            exc = exc.error
        self.errors.warning(
            key, f"Error while processing response {dr.describe()}: {first_line(exc)}", exc=exc
        )
        self.stats["rule-errors"] += 1
        dr.rcode = SERVFAIL  # as dnsdist: the rcode only
        return SEND


def _same(data: bytes, _: object) -> bytes:
    return data
