"""Rules: the selectors, actions and objects Lua builds (``QNameRule``, ``PoolAction``,
``newNMG``, ...) and the functions of each rule chain (``addAction``,
``showResponseRules``, ``rmCacheHitResponseRule``, ...).

A rule that uses a selector or action triodist lacks is left out whole, with a warning:
never half-applied.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from triodist.config.bindings.args import ConfigError, as_list, option_table
from triodist.config.bindings.base import Binding
from triodist.config.bindings.notyet import first_placeholder, placeholder_name
from triodist.rules import actionbase as B
from triodist.rules import actions as A
from triodist.rules import log_actions as L
from triodist.rules import response_actions as R
from triodist.rules import selectors as S
from triodist.rules.chain import ChainKind, NoSuchRule, RuleChain
from triodist.rules.matchers import DNSNameSet, NetmaskGroup, SuffixMatchNode
from triodist.rules.trailing import TrailingDataRule
from triodist.util.luavalues import describe
from triodist.wire.address import ComboAddress
from triodist.wire.names import DNSName, as_name

log = logging.getLogger("triodist.config")


class RuleBindings(Binding):
    """The rule chains of a configuration (``config.chains``)."""

    def rule_functions(self) -> dict[str, Callable[..., Any]]:
        """The functions of every chain: ``add{X}Action``, ``show{X}Rules``, ``rm{X}Rule``,
        ``mv{X}Rule``, ``mv{X}RuleToTop`` and ``clear{X}Rules``, X naming the chain."""
        chains = self.chains
        functions: dict[str, Callable[..., Any]] = {}
        for chain, infix in (
            (chains.queries, ""),
            (chains.responses, "Response"),
            (chains.self_answered, "SelfAnsweredResponse"),
            (chains.cache_hit, "CacheHitResponse"),
            (chains.cache_miss, "CacheMiss"),
            (chains.cache_inserted, "CacheInsertedResponse"),
        ):
            functions.update(self._chain_functions(chain, infix))
        return functions

    def _add(self, chain: RuleChain, selector: Any, action: Any, options: Any, fn: str) -> None:
        placeholder = first_placeholder([selector, action])
        if placeholder is not None:
            # A selector or action triodist lacks: the whole rule is ignored, never half-applied.
            name = placeholder_name(placeholder)
            self.warn_once(
                f"{fn}.{name}",
                f"{fn}: rule using {name} ignored (not supported yet)",
                ignored=f"{fn} rule(s) using {name}",
            )
            return
        want = B.ResponseActionBase if chain.kind is not ChainKind.QUERY else B.QueryAction
        if not isinstance(action, want):
            kind = "a response action" if want is B.ResponseActionBase else "a query action"
            raise ConfigError(f"{fn}: expected {kind}, got {describe(action)}")
        try:
            sel = S.selector_from(selector)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{fn}: {exc}") from exc
        opts = option_table(options, fn)
        opened: list[L.Logger] = []
        if self.chains.files is not None:
            # Added to a running server (the console, maintenance()): its file opens now,
            # shared with the rules that write to it already (removed ones included), or
            # appended to if the server had it open before; the rule is not added if not.
            try:
                opened = L.open_loggers(L.loggers_of([action]), self.chains.files)
            except OSError as exc:
                raise ConfigError(f"{fn}: {exc}") from exc
        rule = chain.add(
            sel, action, name=str(opts.get("name", "")), uuid=str(opts.get("uuid", ""))
        )
        rule.opened = opened

    def _chain_functions(self, chain: RuleChain, infix: str) -> dict[str, Callable[..., Any]]:
        def add(selector: Any, action: Any, options: Any = None) -> None:
            self._add(chain, selector, action, options, f"add{infix}Action")

        def show(options: Any = None) -> None:
            opts = option_table(options, f"show{infix}Rules")
            print(
                chain.show(
                    bool(opts.get("showUUIDs", False)), int(opts.get("truncateRuleWidth", 60))
                ),
                file=self.out,
            )

        def rm(key: Any) -> None:
            if not isinstance(key, str | int | float) or isinstance(key, bool):
                raise ConfigError(
                    f"rm{infix}Rule: expected a rule's number, name or UUID, got {describe(key)}"
                )
            try:
                chain.remove(key)
            except NoSuchRule as exc:  # dnsdist prints it and goes on
                print(f"Error: {exc}", file=self.out)

        def mv(source: Any, destination: Any) -> None:
            try:
                chain.move(int(source), int(destination))
            except NoSuchRule as exc:
                print(f"Error: {exc}", file=self.out)

        return {
            f"add{infix}Action": add,
            f"show{infix}Rules": show,
            f"rm{infix}Rule": rm,
            f"mv{infix}Rule": mv,
            f"mv{infix}RuleToTop": chain.top,
            f"clear{infix}Rules": chain.clear,
        }


def _flag(value: Any, default: bool) -> bool:
    return default if value is None else bool(value)


def _table(value: Any, function: str) -> Any:
    """``value``, a table of rules; nil is an error here rather than a rule of none."""
    if value is None:
        raise ConfigError(f"{function}: expected a table of selectors, got nil")
    return value


def _selectors(value: Any) -> list[S.Selector]:
    return [S.selector_from(v) for v in as_list(value)]


def _combined(rules: Any, function: str, matches: str) -> list[S.Selector]:
    """The selectors of an AndRule or OrRule.  An empty table is accepted, as dnsdist
    1.7.3 accepts it (AndRule then matches every query, OrRule none), but said: in Lua
    ``{nil}``, or a table of misspelt variables, is an empty table too."""
    selectors = _selectors(_table(rules, function))
    if not selectors:
        log.warning(
            "%s: no selector given (an empty table; {nil} is one in Lua): the rule matches %s",
            function,
            matches,
        )
    return selectors


#: The selectors, actions and objects Lua builds, by dnsdist's names.
CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    # selectors
    "AllRule": S.AllRule,
    "QNameRule": S.QNameRule,
    "QNameSuffixRule": S.QNameSuffixRule,
    "SuffixMatchNodeRule": S.SuffixMatchNodeRule,
    "QNameSetRule": S.QNameSetRule,
    "QTypeRule": S.QTypeRule,
    "QClassRule": S.QClassRule,
    "NetmaskGroupRule": lambda nmg, src=None, quiet=None: S.NetmaskGroupRule(
        nmg, _flag(src, True), _flag(quiet, False)
    ),
    "RegexRule": S.RegexRule,
    # A combination that contains a not-yet-supported selector is itself a placeholder.
    "AndRule": lambda rules: (
        first_placeholder(as_list(rules)) or S.AndRule(_combined(rules, "AndRule", "every query"))
    ),
    "OrRule": lambda rules: (
        first_placeholder(as_list(rules)) or S.OrRule(_combined(rules, "OrRule", "no query"))
    ),
    "NotRule": lambda rule: first_placeholder([rule]) or S.NotRule(rule),
    "TagRule": S.TagRule,
    "RDRule": S.RDRule,
    "OpcodeRule": S.OpcodeRule,
    "TCPRule": S.TCPRule,
    "RCodeRule": S.RCodeRule,
    "DNSSECRule": S.DNSSECRule,
    "MaxQPSRule": S.MaxQPSRule,
    "MaxQPSIPRule": S.MaxQPSIPRule,
    "LuaRule": S.LuaRule,
    "TrailingDataRule": TrailingDataRule,
    # What addAction takes in place of a selector (a name, a netmask, a table of them, a
    # DNSName), as a rule; a not-yet-supported selector stays the placeholder it is.
    "makeRule": lambda value: first_placeholder([value]) or S.selector_from(value),
    # query actions
    "AllowAction": A.AllowAction,
    "DropAction": A.DropAction,
    "NoneAction": A.NoneAction,
    "RCodeAction": A.RCodeAction,
    "SpoofAction": A.SpoofAction,
    "SpoofCNAMEAction": A.SpoofCNAMEAction,
    "SpoofRawAction": A.SpoofRawAction,
    "TCAction": A.TCAction,
    "DelayAction": A.DelayAction,
    "LogAction": L.LogAction,
    "SetTagAction": A.SetTagAction,
    "TagAction": A.SetTagAction,
    "SetNoRecurseAction": A.SetNoRecurseAction,
    "NoRecurseAction": A.SetNoRecurseAction,
    "SetSkipCacheAction": A.SetSkipCacheAction,
    "SkipCacheAction": A.SetSkipCacheAction,
    "PoolAction": A.PoolAction,
    "QPSAction": A.QPSAction,
    "QPSPoolAction": A.QPSPoolAction,
    "LuaAction": A.LuaAction,
    "ContinueAction": lambda action: first_placeholder([action]) or A.ContinueAction(action),
    # response actions
    "AllowResponseAction": R.AllowResponseAction,
    "DropResponseAction": R.DropResponseAction,
    "DelayResponseAction": R.DelayResponseAction,
    "LogResponseAction": L.LogResponseAction,
    "LuaResponseAction": R.LuaResponseAction,
    "SetTagResponseAction": R.SetTagResponseAction,
    "TCResponseAction": R.TCResponseAction,
    "SetMaxTTLResponseAction": R.SetMaxTTLResponseAction,
    "SetMinTTLResponseAction": R.SetMinTTLResponseAction,
    "LimitTTLResponseAction": R.LimitTTLResponseAction,
    "ClearRecordTypesResponseAction": R.ClearRecordTypesResponseAction,
    "SetSkipCacheResponseAction": R.SetSkipCacheResponseAction,
    # objects
    "newDNSName": lambda name: DNSName(as_name(name)),
    "newSuffixMatchNode": SuffixMatchNode,
    "newNMG": NetmaskGroup,
    "newDNSNameSet": DNSNameSet,
    "newCA": lambda text: ComboAddress.parse(str(text), 0),
}
