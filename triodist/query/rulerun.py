"""Running a rule chain over a query or a response: each matching rule's action, what its
verdict means (dnsdist's ``processRulesResult``), and where an action that suspended the
object stops the chain.

``RuleRunner`` is the pipeline's base (``pipeline.py``): the rule chains are one part of
a query's life, and this is the part that knows the verdicts. Nothing here waits.

Imports nothing above triodist.query (rules, asyncproc, util and the wire format).
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import Counter

from triodist.asyncproc.registry import AsyncRegistry
from triodist.query.outcome import QueryDecision, ResponseDecision, Suspended
from triodist.query.settings import Chains
from triodist.rules.chain import Rule, Rules
from triodist.rules.verdicts import Action, ResponseAction
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.build import (
    make_raw_spoof_answer,
    make_rcode_answer,
    make_truncated_answer,
    rebuild,
    spoof_from_string,
)
from triodist.wire.message import DNSQuestion, DNSResponse

log = logging.getLogger("triodist.pipeline")

SERVFAIL = 2
NXDOMAIN = 3
REFUSED = 5
# Plain ints and module names for the checks every rule makes: reading an enum's member
# goes through EnumType.__getattr__ in Python 3.11 (bench/lua-cost.md).
NONE, NOOP, RESPONSE_NONE = int(Action.None_), int(Action.NoOp), int(ResponseAction.None_)
DROP, ANSWER, FORWARD = QueryDecision.DROP, QueryDecision.ANSWER, QueryDecision.FORWARD
SEND, DROP_RESPONSE = ResponseDecision.SEND, ResponseDecision.DROP


class RuleRunner:
    """Rule chains run over queries and responses, and what that counts."""

    def __init__(self, chains: Chains, async_registry: AsyncRegistry | None = None) -> None:
        self.chains = chains
        self.async_registry = async_registry or AsyncRegistry()
        self.stats: Counter[str] = Counter()
        #: Errors of rules and policies come at the query rate: one line a minute per error.
        self.errors = RateLimitedLog(log)

    # --- query rules -----------------------------------------------------------------------

    def run_query_rules(
        self, dq: DNSQuestion, rules: Rules | None = None, start: int = 0
    ) -> QueryDecision | Suspended:
        """Run query rules (``addAction``'s chain unless ``rules`` is given) from
        ``start``: drop, answer or forward, or where an action suspended the query."""
        if rules is None:
            rules = self.chains.queries.rules
        for index in range(start, len(rules)):
            rule = rules[index]
            try:
                if not rule.selector.matches(dq):
                    continue
                action, extra = self._act(rule, dq)
            except Exception as exc:
                raise RuleFailed(rule, exc) from exc
            if dq.suspension is not None:
                return Suspended(index, action, extra)
            if action in (NONE, NOOP):
                continue
            dq.rule_fired = str(rule.action)
            decision = self.apply_query_verdict(action, extra, dq)
            if decision is not None:
                return decision
        return ANSWER if dq.is_answer() else FORWARD

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

    def apply_query_verdict(self, action: int, extra: str, dq: DNSQuestion) -> QueryDecision | None:
        """dnsdist's processRulesResult: ``None`` means go on with the next rule."""
        if action == Action.Allow:
            return ANSWER if dq.is_answer() else FORWARD
        if action == Action.Drop:
            self.stats["rule-drop"] += 1
            return DROP
        if action == Action.Nxdomain:
            self.stats["rule-nxdomain"] += 1
            make_rcode_answer(dq, NXDOMAIN)
            return ANSWER
        if action == Action.Refused:
            self.stats["rule-refused"] += 1
            make_rcode_answer(dq, REFUSED)
            return ANSWER
        if action == Action.ServFail:
            self.stats["rule-servfail"] += 1
            make_rcode_answer(dq, SERVFAIL)
            return ANSWER
        if action == Action.Spoof:
            # Nothing of the query's type to spoof with: dnsdist forwards the query.
            return ANSWER if spoof_from_string(dq, extra) else FORWARD
        if action == Action.SpoofRaw:
            # dnsdist's reading of a Lua action's raw answer: rdatas separated by commas
            # (empty ones skipped), as Latin-1 text holds the bytes; none: forwarded.
            raws = [raw.encode("latin-1") for raw in extra.split(",") if raw]
            return ANSWER if make_raw_spoof_answer(dq, raws) else FORWARD
        if action == Action.SpoofPacket:
            dq.setContent(extra)
            return ANSWER
        if action == Action.Truncate:
            if dq.tcp:
                return None
            make_truncated_answer(dq)
            return ANSWER
        if action == Action.HeaderModify:
            return ANSWER if dq.is_answer() else FORWARD
        if action == Action.Pool:
            dq.pool = extra
            return FORWARD
        if action == Action.NoRecurse:
            dq.data[2] &= 0xFE
            return FORWARD
        if action == Action.Delay:
            dq.delay_ms = to_int(extra)
            return None
        if action == Action.SetTag:
            return None
        log.warning("Unknown action %d returned by a rule; ignoring it", action)
        return None

    # --- response rules --------------------------------------------------------------------

    def run_response_rules(
        self, dr: DNSResponse, rules: Rules, start: int = 0
    ) -> ResponseDecision | Suspended:
        """Run response ``rules`` from ``start``: send or drop, or where an action
        suspended the response."""
        for index in range(start, len(rules)):
            rule = rules[index]
            try:
                if not rule.selector.matches(dr):
                    continue
                action, extra = self._act(rule, dr)
            except Exception as exc:
                raise RuleFailed(rule, exc) from exc
            if dr.suspension is not None:
                return Suspended(index, action, extra)
            decision = self.apply_response_verdict(dr, action, extra)
            if decision is not None:
                return decision
        return SEND

    def apply_response_verdict(
        self, dr: DNSResponse, action: int, extra: str
    ) -> ResponseDecision | None:
        """What a response action's verdict means: ``None`` to go on with the next rule."""
        if action == RESPONSE_NONE:
            return None
        if action == ResponseAction.Allow or action == ResponseAction.HeaderModify:
            return SEND
        if action == ResponseAction.Drop:
            self.stats["rule-drop"] += 1
            return DROP_RESPONSE
        if action == ResponseAction.ServFail:
            dr.rcode = SERVFAIL  # as dnsdist: the rcode only
            return SEND
        if action == ResponseAction.Truncate:
            if not dr.tcp:
                dr.data[2] |= 0x02
                rebuild(dr, answer=None)
            return SEND
        if action == ResponseAction.Delay:
            dr.delay_ms = to_int(extra)
        return None


def to_int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class RuleFailed(Exception):
    """A rule's selector or action raised ``error``: the rule is said with it, so that its
    errors are logged as one (``failure_key``) however their text varies per query."""

    def __init__(self, rule: Rule, error: Exception) -> None:
        super().__init__(str(error))
        self.rule = rule
        self.error = error


# "rules.lua:3: " or '[string "..."]:1: ', where a Lua error says it was raised.
_LUA_LOCATION = re.compile(r"^(.*?:\d+): ")


def failure_key(where: str, exc: Exception) -> str:
    """What errors are logged as one under: the rule (if known) and where the error was
    raised (a Lua error's chunk and line, else the Python type and innermost frame), not
    its text, which may name the query (``error("bad " .. dq.qname:toString())``)."""
    rule = ""
    if isinstance(exc, RuleFailed):
        rule, exc = f" rule {exc.rule.uuid}", exc.error
    lua = _LUA_LOCATION.match(first_line(exc))
    if lua:
        location = lua[1]
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        last = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        location = f"{type(exc).__name__}{last}"
    return f"{where}{rule}: {location}"
