"""Rule chains: ordered (selector, action) pairs, as ``addAction`` builds them.

Imports nothing above triodist.rules.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from triodist.rules.log_actions import Logger, close_when_released
from triodist.rules.selectors import Selector


@dataclass
class Rule:
    selector: Selector
    action: Any  # a QueryAction or a ResponseActionBase
    name: str = ""
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    creation_order: int = 0
    matches: int = 0
    #: The loggers this rule opened (its action's, once the server serves it), each to
    #: be closed once when the rule goes: the same action may be in another rule too.
    opened: list[Logger] = field(default_factory=list)


#: The rules of a chain at one moment: a value that no edit changes.
Rules = tuple[Rule, ...]


class ChainKind(StrEnum):
    """What a chain's rules act on, and so which actions it takes: query actions for
    ``QUERY`` (``addAction``, ``addCacheMissAction``), response actions for the others."""

    QUERY = "query"
    RESPONSE = "response"
    SELF_ANSWERED = "self-answered"
    CACHE_HIT = "cache-hit"
    CACHE_INSERTED = "cache-inserted"


class NoSuchRule(LookupError):
    """``rmRule`` or ``mvRule`` named a rule the chain does not have: dnsdist says so and
    goes on, it raises no Lua error."""


class RuleChain:
    """One chain of rules (queries, responses, self-answered responses, ...).

    ``rules`` is a tuple that no edit changes: ``addAction``, ``rmRule``, ``mvRule``,
    ``clearRules``... put a new tuple in its place (copy on write), as a reload puts a
    new chain in place of the old. A query or response reads ``rules`` once, when it
    enters the chain, and holds that tuple to the chain's end, even while it waits
    (a suspension): whatever the console or ``maintenance()`` do meanwhile, it goes on
    in the chain it started in, never at an index of a list that has moved under it.
    Edits are rare and chains short; the copy costs nothing that matters."""

    def __init__(self, kind: ChainKind) -> None:
        self.kind = kind
        self.rules: Rules = ()
        self._created = 0

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def add(self, selector: Selector, action: Any, name: str = "", uuid: str = "") -> Rule:
        rule = Rule(selector, action, name=name, creation_order=self._created)
        if uuid:
            rule.uuid = uuid
        self._created += 1
        self.rules = (*self.rules, rule)
        return rule

    def replace(self, rules: list[tuple[Selector, Any, str, str]]) -> list[Rule]:
        """dnsdist's ``setRules``: ``rules`` (selector, action, name, UUID) in place of the
        chain's, in one edit; the new rules, in order."""
        new: list[Rule] = []
        for selector, action, name, uuid in rules:
            rule = Rule(selector, action, name=name, creation_order=self._created)
            if uuid:
                rule.uuid = uuid
            self._created += 1
            new.append(rule)
        removed, self.rules = self.rules, tuple(new)
        for rule in removed:
            _close_when_released(rule)
        return new

    def find(self, key: Any) -> int:
        """Index of a rule given by position, UUID or name (as dnsdist's rmRule accepts);
        :class:`NoSuchRule` in dnsdist's words when there is none."""
        if isinstance(key, int | float) and not isinstance(key, bool):
            index = int(key)
            if 0 <= index < len(self.rules):
                return index
            raise NoSuchRule(f"attempt to delete non-existing rule {index}")
        text = str(key)
        for index, rule in enumerate(self.rules):
            if text in (rule.uuid, rule.name):
                return index
        raise NoSuchRule(f"no rule matched '{text}'")

    def remove(self, key: Any) -> None:
        index = self.find(key)
        removed = self.rules[index]
        self.rules = self.rules[:index] + self.rules[index + 1 :]
        _close_when_released(removed)

    def move(self, source: int, destination: int) -> None:
        """dnsdist's mvRule: the rule at ``source`` goes before the one at ``destination``
        (as numbered before the move); ``destination`` may be the count, for last."""
        count = len(self.rules)
        if not (0 <= source < count and 0 <= destination <= count):
            raise NoSuchRule(
                f"attempt to move rules from/to invalid index ({source} to {destination}, "
                f"with {count} rule{'' if count == 1 else 's'})"
            )
        rules = list(self.rules)
        rule = rules.pop(source)
        rules.insert(destination - 1 if source < destination else destination, rule)
        self.rules = tuple(rules)

    def top(self) -> None:
        if self.rules:
            self.rules = (self.rules[-1], *self.rules[:-1])

    def clear(self) -> None:
        removed, self.rules = self.rules, ()
        for rule in removed:
            _close_when_released(rule)

    def show(self, show_uuids: bool = False, truncate: int = 60) -> str:
        """The table ``showRules()`` prints."""
        head = f"{'#':<3} {'Name':<30} "
        if show_uuids:
            head += f"{'UUID':<37}"
        head += f"{'Matches':>9} {'Rule':<{truncate}} Action"
        lines = [head]
        for index, rule in enumerate(self.rules):
            selector = str(rule.selector)[:truncate]
            line = f"{index:<3} {rule.name:<30} "
            if show_uuids:
                line += f"{rule.uuid:<37}"
            line += f"{rule.matches:>9} {selector:<{truncate}} {rule.action}"
            lines.append(line)
        return "\n".join(lines)


def _close_when_released(rule: Rule) -> None:
    """A rule taken out of its chain closes its files (LogAction...) once no query holds
    it: a query that entered the chain before the edit holds the old tuple, and with it
    the rule, to the chain's end, and may still write. (A tuple cannot be weakly
    referenced; the rule, which the tuple holds, can.)"""
    opened, rule.opened = rule.opened, []
    close_when_released(rule, opened)
