"""Rules as a set: ``newRuleAction`` (a rule as a value) and ``setRules`` (the query rules
replaced by a list of them, in one edit); the selectors on a message's shape
(``RecordsCountRule``, ``RecordsTypeCountRule``, ``QNameLabelsCountRule``,
``QNameWireLengthRule``, ``DSTPortRule``) and the actions that set something on a query
(``SetDisableValidationAction``, ``SetTempFailureCacheTTLAction``, and their names from
before dnsdist 1.6).

Imports nothing above triodist.config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from triodist.config.bindings.args import ConfigError, as_list, option_table
from triodist.config.bindings.base import lua_function
from triodist.config.bindings.notyet import Anything, first_placeholder, placeholder_name
from triodist.config.bindings.rules import RuleBindings
from triodist.rules import log_actions as L
from triodist.rules import selectors as S
from triodist.rules import setting_actions as SA
from triodist.rules import shape
from triodist.rules.actionbase import QueryAction
from triodist.util.luavalues import describe


@dataclass(frozen=True)
class RuleAction:
    """What ``newRuleAction`` returns: a query rule not in any chain yet, for ``setRules``."""

    selector: S.Selector
    action: QueryAction
    name: str = ""
    uuid: str = ""

    def __str__(self) -> str:
        return f"rule {self.selector} -> {self.action}"


class RuleSetBindings(RuleBindings):
    """``newRuleAction``, ``setRules``, and the selectors and actions of this module."""

    @lua_function
    def newRuleAction(self, rule: Any, action: Any, options: Any = None) -> RuleAction | Anything:
        """A rule (a selector, or what addAction takes in its place, and a query action)
        as a value, for setRules."""
        placeholder = first_placeholder([rule, action])
        if placeholder is not None:
            return placeholder  # setRules leaves it out, with addAction's warning
        if not isinstance(action, QueryAction):
            raise ConfigError(f"newRuleAction: expected a query action, got {describe(action)}")
        try:
            selector = S.selector_from(rule)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"newRuleAction: {exc}") from exc
        opts = option_table(options, "newRuleAction")
        return RuleAction(
            selector, action, name=str(opts.get("name", "")), uuid=str(opts.get("uuid", ""))
        )

    @lua_function
    def setRules(self, rules: Any) -> None:
        """The query rules replaced by ``rules`` (a table of newRuleAction values), at once:
        a query sees the old rules or the new ones, never a mix."""
        wanted: list[RuleAction] = []
        for position, item in enumerate(as_list(rules), start=1):
            if isinstance(item, Anything):
                name = placeholder_name(item)
                self.warn_once(
                    f"setRules.{name}",
                    f"setRules: rule using {name} ignored (not supported yet)",
                    ignored=f"setRules rule(s) using {name}",
                )
                continue
            if not isinstance(item, RuleAction):
                raise ConfigError(
                    f"setRules: expected a table of newRuleAction(...) values, got "
                    f"{describe(item)} at position {position}"
                )
            wanted.append(item)
        opened: list[list[L.Logger]] = []
        if self.chains.files is not None:
            # A running server (the console): the new rules' files open first, all or
            # none, so that a file that cannot be opened leaves the old rules in place.
            try:
                for item in wanted:
                    opened.append(L.open_loggers(L.loggers_of([item.action]), self.chains.files))
            except OSError as exc:
                for loggers in opened:
                    for logger in loggers:
                        logger.close()
                raise ConfigError(f"setRules: {exc}") from exc
        new = self.chains.queries.replace(
            [(item.selector, item.action, item.name, item.uuid) for item in wanted]
        )
        for rule, loggers in zip(new, opened, strict=False):
            rule.opened = loggers

    # --- selectors (rules/shape.py) ------------------------------------------------------

    @lua_function
    def RecordsCountRule(self, section: Any, min_count: Any, max_count: Any) -> S.Selector:
        """Matches when the section holds from minCount to maxCount records."""
        return _built(shape.RecordsCountRule, section, min_count, max_count)

    @lua_function
    def RecordsTypeCountRule(
        self, section: Any, qtype: Any, min_count: Any, max_count: Any
    ) -> S.Selector:
        """Matches when the section holds from minCount to maxCount records of the type."""
        return _built(shape.RecordsTypeCountRule, section, qtype, min_count, max_count)

    @lua_function
    def QNameLabelsCountRule(self, low: Any, high: Any) -> S.Selector:
        """Matches a query name of fewer than min or more than max labels."""
        return _built(shape.QNameLabelsCountRule, low, high)

    @lua_function
    def QNameWireLengthRule(self, low: Any, high: Any) -> S.Selector:
        """Matches a query name shorter than min or longer than max bytes on the wire."""
        return _built(shape.QNameWireLengthRule, low, high)

    @lua_function
    def DSTPortRule(self, port: Any) -> S.Selector:
        """Matches a query that arrived on this local port."""
        return _built(shape.DSTPortRule, port)

    # --- actions (rules/setting_actions.py) ----------------------------------------------

    @lua_function
    def SetDisableValidationAction(self) -> QueryAction:
        """Set the CD flag in the query the backend gets; the rules go on."""
        return SA.SetDisableValidationAction()

    @lua_function
    def DisableValidationAction(self) -> QueryAction:
        """SetDisableValidationAction's name before dnsdist 1.6."""
        return SA.SetDisableValidationAction()

    @lua_function
    def SetTempFailureCacheTTLAction(self, ttl: Any) -> QueryAction:
        """Cache a SERVFAIL or REFUSED answer to the query for ttl seconds; the rules go on."""
        return _built(SA.SetTempFailureCacheTTLAction, ttl)

    @lua_function
    def TempFailureCacheTTLAction(self, ttl: Any) -> QueryAction:
        """SetTempFailureCacheTTLAction's name before dnsdist 1.6."""
        return _built(SA.SetTempFailureCacheTTLAction, ttl)


Built = TypeVar("Built")


def _built(cls: Callable[..., Built], *args: Any) -> Built:
    """``cls(*args)``, a bad argument a configuration error (file and line given)."""
    try:
        return cls(*args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
