"""Running a capture's queries through a configuration, in-process, on a mock clock, and
finding out what became of each (``replay``).

The configuration is the one ``serve`` would run, with three things in place of the
network: the queries come from the capture instead of a socket, each at its capture
time on a ``trio.testing.MockClock`` that jumps over every wait; the answers go to the
query's ``Result`` instead of a socket; and the backends are the capture's own answers
(``FakeBackends``, the pipeline's ``BackendExchange``). Nothing is bound and nothing
waits on the wall clock: a MaxQPSIPRule sees the capture's own rates, a suspension its
whole timeout, a backend the delay of the capture's answer, all in the time the Python
takes.

Each query goes the way ``UDPFrontend._received`` takes it (the ACL, the in-flight bound,
the per-query error boundary, an answer cut to what the client allows over UDP), and one
that waits gets a task of its own in the run's nursery, as in a server. What decided its
outcome is noted as it goes: the rule whose action gave a verdict (``ReplayPipeline``,
around the pipeline's one call of an action), the server its pool's policy chose
(``FakeBackends.send``), the counters a step moved (a cache hit, no server, a rule error,
the in-flight bound), how a suspension ended. ``conclude`` turns these into the outcome.

Not replayed: external components (a suspended query is resumed only by the
configuration's own Lua, else by its timeout), health checks (every server is as
its configuration sets it, ``auto`` ones up), TCP connection limits.

Imports every layer below it (the replay is at the top, beside the command line).
"""

from __future__ import annotations

import logging
import math
import struct
from collections import Counter
from collections.abc import Callable
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from triodist.asyncproc.registry import Held, HeldState
from triodist.backends.exchange import NotSent
from triodist.backends.server import Server
from triodist.frontends.common import allowed, answer_error
from triodist.query.outcome import Outcome, Suspended, Wait
from triodist.query.pipeline import Pipeline
from triodist.query.rulerun import NONE, NOOP, RESPONSE_NONE
from triodist.replay.capture import CapturedQuery
from triodist.rules.chain import Rule
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.build import truncate_answer, udp_answer_limit
from triodist.wire.message import DNSQuestion
from triodist.wire.question import MalformedQuery

if TYPE_CHECKING:
    from triodist.config.runtime import LuaConfig
    from triodist.server import ServerConfig

log = logging.getLogger("triodist.replay")

_HEADER = struct.Struct("!HHHHHH")

# The outcomes, as the reports name them.
RULE = "rule"  # answered by a query rule
FORWARDED = "forwarded"  # answered by a backend (the capture's answer)
CACHE = "cache"  # answered from a pool's packet cache
DROPPED = "dropped"  # nothing sent
NO_SERVER = "servfail-no-server"  # SERVFAIL: no server up (setServFailWhenNoServer)
RULE_ERROR = "rule-error"  # SERVFAIL: a rule raised
ERROR = "error"  # SERVFAIL: an unexpected error (the per-query boundary)
ANSWERED = "answered"  # answered otherwise (a suspension's servfail policy...)

#: The counters a step of the pipeline moves that say what happened to the query.
_WATCHED = ("cache-hits", "no-policy", "rule-errors", "frontend-overload-drops")

#: How far the configuration's maintenance() runs ahead through a long quiet stretch of
#: the capture: once a second for this many seconds before the next query, not through
#: a gap of days (a capture's timestamps are input too).
MAINTENANCE_LEAD = 300.0


class Result:
    """What became of one query of the capture, and what was noted on its way."""

    __slots__ = (
        "answer_rcode",
        "backend",
        "by",
        "counters",
        "decided",
        "error",
        "failed_rule",
        "outcome",
        "query",
        "response_rule",
        "rule",
        "server",
        "suspended_by",
        "suspension",
        "truncated",
    )

    def __init__(self, query: CapturedQuery) -> None:
        self.query = query
        self.outcome = ""
        self.by = ""
        #: The rcode of what was sent (None: nothing was).
        self.answer_rcode: int | None = None
        #: The TC flag of what was sent over UDP (a rule's, or an answer cut to size).
        self.truncated = False
        #: How its suspension ended, if it had one ("timed-out", "resumed"...).
        self.suspension = ""
        # Noted on the way.
        self.rule: Rule | None = None
        self.response_rule: Rule | None = None
        self.failed_rule: Rule | None = None
        #: The rule whose action suspended the query (the last one, if several did).
        self.suspended_by: Rule | None = None
        #: The rule that decided the outcome, if one did (set with the outcome).
        self.decided: Rule | None = None
        self.server = ""
        self.backend = ""  # "answered", "timed-out", "not-sent"
        self.error = False
        self.counters: set[str] = set()


def rule_label(rule: Rule) -> str:
    """A rule as the reports name it: its name, else its selector as showRules() shows it;
    then its action."""
    return f"{rule.name or rule.selector} -> {rule.action}"


def server_label(server: Server, pool: str) -> str:
    return f"{f'pool {pool}' if pool else 'default pool'}: {server.getNameWithAddr()}"


class ReplayPipeline(Pipeline):
    """The configuration's pipeline, which notes in the current query's ``Result`` the
    rules whose actions gave a verdict. Steps are synchronous and one query's at a time,
    so the runner names the current query before each step."""

    current: Result

    def _act(self, rule: Rule, obj: DNSQuestion) -> tuple[int, str]:
        try:
            verdict = super()._act(rule, obj)
        except Exception:
            self.current.failed_rule = rule
            raise
        action = verdict[0]
        if obj.suspension is not None:
            self.current.suspended_by = rule
        if obj.is_response:
            if action != RESPONSE_NONE:
                self.current.response_rule = rule
        elif action not in (NONE, NOOP) or obj.suspension is not None:
            self.current.rule = rule
        return verdict


class FakeBackends:
    """The backends of a replay (the pipeline's ``BackendExchange``): a server chosen for
    a query answers it with the capture's answer to that query, after the delay the
    capture shows, or, if that is longer than the server's timeout, not at all; a query
    the capture has no answer for is answered NOERROR with no records, at once. The
    server's counters move as a real exchange moves them (policies read them)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def send(self, server: Server, dq: DNSQuestion) -> PendingReply:
        result = self.runner.pipeline.current
        result.server = server_label(server, dq.pool)
        query = result.query
        life = server.life
        life.queries += 1
        life.outstanding += 1
        timeout = server.tcp_timeout if dq.tcp or server.tcp_only else server.udp_timeout
        if query.answer is None:
            answer = no_records_answer(dq.data, dq.question_end)
            return PendingReply(server, answer, 0.0, timeout)
        return PendingReply(server, query.answer, query.answer_delay, timeout)


class PendingReply:
    """A fake backend's reply on its way: due at ``due`` on the mock clock. Awaited, it
    is what a query's task waits for; the runner may instead take it up itself at that
    time (``Runner._until``), which spares the query a task of its own."""

    __slots__ = ("answer", "delay", "due", "patience", "server")

    def __init__(self, server: Server, answer: bytes, delay: float, patience: float) -> None:
        self.server = server
        self.answer = answer
        self.delay = delay
        self.patience = patience
        self.due = trio.current_time() + min(delay, patience)

    async def __call__(self) -> bytes | None:
        arrived = False
        try:
            await trio.sleep_until(self.due)
            arrived = True
        finally:
            if not arrived:  # cancelled: no longer outstanding
                self.server.life.outstanding -= 1
        return self.arrive()

    def arrive(self) -> bytes | None:
        """The reply (None: the server's timeout came first), counted as it arrives."""
        server = self.server
        life = server.life
        life.outstanding -= 1
        if self.delay > self.patience:
            server.count_no_reply()
            return None
        server.record_latency(self.delay)
        life.responses += 1
        return self.answer


def no_records_answer(query: bytes | bytearray, question_end: int) -> bytes:
    """The answer a fake backend gives when the capture has none: the query's ID and
    question, QR and RA set, RD as asked, NOERROR, no records (and no EDNS)."""
    qid, flags = struct.unpack_from("!HH", query, 0)
    flags = 0x8080 | (flags & 0x0100)
    return _HEADER.pack(qid, flags, 1, 0, 0, 0) + bytes(query[12:question_end])


class Runner:
    """Replays queries through one configuration (``run``): the ``Result`` of each."""

    def __init__(self, lua: LuaConfig) -> None:
        self.lua = lua
        config: ServerConfig = lua.api.config
        self.config = config
        self.stats: Counter[str] = Counter()
        config.stats = self.stats
        self.pipeline = ReplayPipeline(
            config.chains, config.routing, config.settings, config.async_registry
        )
        self.pipeline.stats = self.stats
        self.pipeline.exchange = FakeBackends(self)
        config.async_registry.stats = self.stats
        self.errors = RateLimitedLog(log)
        self.in_flight = 0
        #: Queries waiting for a fake backend's reply that no task waits for: (when it
        #: is due, order of arrival, the query's result, the query, its ``Wait``).
        self._replies: list[tuple[float, int, Result, DNSQuestion, Wait]] = []
        self._sent = 0
        self.results: list[Result] = []
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        #: The mock clock's time of the next query to enter (maintenance() reads it).
        self._next_at = 0.0
        self._nursery: trio.Nursery | None = None

    def run(self, queries: list[CapturedQuery]) -> list[Result]:
        """Every query's ``Result``, in the order of ``queries`` (their capture times)."""
        self.results = [Result(q) for q in queries]
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        trio.run(self._main, clock=self.clock)
        return self.results

    async def _main(self) -> None:
        results = self.results
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.pipeline.clean_caches)
            maintenance = self.lua.call_hook("maintenance")
            if maintenance is not None:
                nursery.start_soon(self._maintenance, maintenance)
            if results:
                start = trio.current_time() + 1.0  # maintenance() runs once before
                first = results[0].query.time
                async with trio.open_nursery() as queries:
                    self._nursery = queries
                    unslept = 0
                    for result in results:
                        at = start + (result.query.time - first)
                        self._next_at = at
                        if at > trio.current_time():
                            await self._until(at)
                            unslept = 0
                        else:
                            # Queries of the same instant: a turn for the others now and
                            # then, as a frontend's receive loop gives after a batch.
                            unslept += 1
                            if unslept % 64 == 0:
                                await trio.lowlevel.checkpoint()
                        self._enter(result)
                    while self._replies:  # the replies still due, each at its time
                        await self._until(self._replies[0][0])
                self._nursery = None
            nursery.cancel_scope.cancel()

    async def _until(self, at: float) -> None:
        """Move the mock clock on to ``at``, through every deadline before it, and take
        up the fake backends' replies due by then, each at its time.

        What ``trio.sleep_until(at)`` does under an autojumping clock, for a fraction of
        its cost (a replay does it for every query): the clock is moved here, not by
        the clock's own task once every task waits, and only as far as the next
        deadline or reply, so that every task and reply is taken at its time, in order."""
        clock = self.clock
        replies = self._replies
        while True:
            now = clock.current_time()
            due = replies[0][0] if replies else math.inf
            target = min(at, due)
            if target > now:
                statistics = trio.lowlevel.current_statistics()
                if statistics.tasks_runnable:
                    await trio.lowlevel.checkpoint()  # they run at ``now``, before it moves
                    continue
                gap = statistics.seconds_to_next_deadline
                if gap < target - now:
                    clock.jump(max(gap, 0.0))
                    await trio.lowlevel.checkpoint()  # the deadline expires: its task runs
                    continue
                clock.jump(target - now)
            if not replies or due > at:
                return
            _, _, result, dq, wait = heappop(replies)
            pending = wait.wait
            assert isinstance(pending, PendingReply)
            reply = pending.arrive()
            result.backend = "answered" if reply is not None else "timed-out"
            outcome = self._step(result, dq, wait.then, reply)
            if isinstance(outcome, Wait):
                self._wait(result, dq, outcome)  # still counted in flight
            else:
                self.in_flight -= 1
                self._conclude(result, dq, outcome)

    def _wait(self, result: Result, dq: DNSQuestion, outcome: Wait) -> None:
        """A query that waits (already counted in flight): a fake backend's reply is
        taken up by ``_until``, anything else gets the query a task of its own."""
        if isinstance(outcome.wait, PendingReply):
            self._sent += 1
            heappush(self._replies, (outcome.wait.due, self._sent, result, dq, outcome))
        else:
            assert self._nursery is not None
            self._nursery.start_soon(self._query_task, result, dq, outcome, name="replayed query")

    async def _maintenance(self, function: Callable[[], Any]) -> None:
        """The configuration's maintenance(), once a second of the capture's time, as a
        server calls it (only up to ``MAINTENANCE_LEAD`` before a query across a gap)."""
        errors = RateLimitedLog(log)
        next_tick = trio.current_time()
        while True:
            next_tick = max(next_tick + 1.0, self._next_at - MAINTENANCE_LEAD)
            await trio.sleep_until(next_tick)
            try:
                function()
            except Exception as exc:
                first = (str(exc) or repr(exc)).splitlines()[0]
                errors.warning(first, f"Error in maintenance(): {first}", exc=exc)

    # --- one query --------------------------------------------------------------------

    def _enter(self, result: Result) -> None:
        """A query arrives, as in ``UDPFrontend._received``: the ACL, then the pipeline as
        far as it goes without waiting; an answer or a drop now, else a task."""
        query = result.query
        stats = self.stats
        stats["received"] += 1
        if not allowed(self.config.acl, query.client):
            stats["acl-drops"] += 1
            self._conclude(result, None, None, by="the ACL (setACL)")
            return
        try:
            dq = DNSQuestion(
                query.data,
                (query.client, query.client_port),
                (query.server, query.server_port),
                tcp=query.tcp,
                now=trio.current_time(),
            )
        except MalformedQuery:
            stats["non-compliant-queries"] += 1
            self._conclude(result, None, None, by="malformed query")
            return
        if not query.tcp and self.in_flight >= self.config.settings.max_udp_in_flight:
            dq.may_wait = False
        outcome = self._step(result, dq, self.pipeline.process, dq)
        if isinstance(outcome, Wait):
            self.in_flight += 1
            self._wait(result, dq, outcome)
        else:
            self._conclude(result, dq, outcome)

    def _step(
        self, result: Result, dq: DNSQuestion, step: Callable[[Any], Outcome], arg: Any
    ) -> Outcome:
        """One synchronous step of the query's life, with what it moved noted."""
        self.pipeline.current = result
        stats = self.stats
        before = [stats.get(name, 0) for name in _WATCHED]
        try:
            outcome = step(arg)
        except Exception as exc:  # the per-query boundary, as a frontend's
            result.error = True
            outcome = answer_error(dq, exc, stats, self.errors)
        for name, count in zip(_WATCHED, before, strict=True):
            if stats.get(name, 0) != count:
                result.counters.add(name)
        return outcome

    async def _query_task(self, result: Result, dq: DNSQuestion, outcome: Wait) -> None:
        """A query that waits, in its own task: await, take the next step, until there
        is an answer."""
        dq.may_wait = True
        reply: Outcome = outcome
        try:
            while isinstance(reply, Wait):
                held = _held(reply)
                waited = await reply.wait()
                if held is not None:
                    result.suspension = str(held.state)
                elif isinstance(waited, NotSent):
                    result.backend = "not-sent"
                elif result.server and not result.backend:
                    result.backend = "answered" if waited is not None else "timed-out"
                reply = self._step(result, dq, reply.then, waited)
        finally:
            self.in_flight -= 1
        self._conclude(result, dq, reply)

    def _conclude(
        self, result: Result, dq: DNSQuestion | None, answer: Outcome, by: str = ""
    ) -> None:
        """The query's outcome, from what it was sent (if anything) and what was noted."""
        if answer is None or isinstance(answer, Wait):
            self.stats["dropped"] += 1
            result.outcome = DROPPED
            result.by = by or _why_dropped(result, self.config.async_registry.timeout_policy)
            for rule in (result.response_rule, result.rule):
                if rule is not None and result.by == rule_label(rule):
                    result.decided = rule
                    break
            _note_suspension(result)
            return
        self.stats["answered"] += 1
        if dq is not None and not dq.tcp and len(answer) > 512:
            limit = udp_answer_limit(dq, self.config.settings.max_udp_answer_size)
            if len(answer) > limit:
                answer = truncate_answer(answer, limit)
                self.stats["truncated-udp-answers"] += 1
        result.answer_rcode = answer[3] & 0x0F if len(answer) >= 12 else None
        result.truncated = len(answer) >= 12 and bool(answer[2] & 0x02)
        counters = result.counters
        pool = dq.pool if dq is not None else ""
        if result.error:
            result.outcome, result.by = ERROR, "unexpected error (see the log)"
        elif "rule-errors" in counters:
            rule = result.failed_rule
            result.outcome, result.by = RULE_ERROR, rule_label(rule) if rule else "a rule"
        elif "no-policy" in counters:
            result.outcome = NO_SERVER
            result.by = f"no server up in {f'pool {pool}' if pool else 'the default pool'}"
        elif "cache-hits" in counters:
            result.outcome = CACHE
            result.by = f"cache of {f'pool {pool}' if pool else 'the default pool'}"
        elif result.server:
            result.outcome, result.by = FORWARDED, result.server
        elif result.rule is not None:
            result.outcome, result.by = RULE, rule_label(result.rule)
            result.decided = result.rule
        else:
            result.outcome, result.by = ANSWERED, "-"
        if result.outcome == RULE_ERROR:
            result.decided = result.failed_rule
        response_rule = result.response_rule
        if response_rule is not None and result.outcome in (FORWARDED, CACHE):
            result.by += f", then {rule_label(response_rule)}"
            result.decided = response_rule
        _note_suspension(result)


def _held(wait: Wait) -> Held | None:
    """The suspension a ``Wait`` waits for the end of, if it is one."""
    step = getattr(wait.wait, "__self__", None)
    if isinstance(step, Suspended):
        held: Held | None = step.obj.suspension
        return held
    return None


def _note_suspension(result: Result) -> None:
    """Say in ``by`` which rule suspended the query and how its suspension ended: a
    configuration that holds queries differs from one that does not, even where both
    forward them in the end. Where no other rule decided, the suspending rule did."""
    rule = result.suspended_by
    if rule is None or not result.suspension:
        return
    note = f"{rule_label(rule)} suspended it ({result.suspension})"
    if result.by in ("-", f"suspension {result.suspension}", rule_label(rule)):
        result.by = note
    else:
        result.by += f", after {note}"
    if result.decided is None:
        result.decided = rule


def _why_dropped(result: Result, timeout_policy: str) -> str:
    """Why nothing was sent, from what was noted on the way (the last cause first)."""
    if "frontend-overload-drops" in result.counters:
        return "the in-flight bound (max UDP queries waiting)"
    if result.response_rule is not None:
        return rule_label(result.response_rule)
    if result.backend == "timed-out":
        return f"no answer in time from {result.server}"
    if result.backend == "not-sent":
        return f"not sent to {result.server}"
    if "no-policy" in result.counters:
        return "no server up"
    if result.suspension in (HeldState.DROPPED, HeldState.ABANDONED) or (
        result.suspension == HeldState.TIMED_OUT and timeout_policy == "drop"
    ):
        return f"suspension {result.suspension}"
    if result.rule is not None:
        return rule_label(result.rule)
    return "-"
