"""dnsdist's names that triodist does not support yet: each is a Lua global that accepts
any call, warns once (or keeps quiet, for a tunable without effect here, or says what
does not happen when the name matters for security) and returns ``Anything``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from triodist.config.bindings.args import text
from triodist.config.bindings.base import Binding
from triodist.config.dnsdist_names import DNSDIST_GLOBALS, DNSDIST_USER_HOOKS
from triodist.config.unsupported import (
    NOT_LISTENING,
    QUIET_TUNABLES,
    QUIET_WITH,
    SECURITY_NOT_YET,
)

log = logging.getLogger("triodist.config")


class Anything:
    """What a not-yet-supported dnsdist function returns: every method works and
    returns the object again, so a configuration that uses it still loads."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Callable[..., Anything]:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return lambda *args: self

    def __call__(self, *args: Any) -> Anything:
        return self

    def __str__(self) -> str:
        return f"{self._name} (not supported by triodist yet)"


def placeholder_name(value: Anything) -> str:
    """The dnsdist name a placeholder stands for.  (Not an attribute: in Lua, every
    attribute of a placeholder is a method that returns it.)"""
    return value._name


def first_placeholder(values: list[Any]) -> Anything | None:
    """The first not-yet-supported object among ``values``: a rule built on it is ignored."""
    return next((v for v in values if isinstance(v, Anything)), None)


def is_placeholder_function(value: Any) -> bool:
    """Whether ``value`` is the Lua global of a name triodist does not support yet."""
    return "_not_yet" in getattr(value, "__qualname__", "")


class NotYetBindings(Binding):
    """The Lua globals of dnsdist's names that triodist lacks."""

    def not_yet_functions(self) -> dict[str, Callable[..., Any]]:
        """A placeholder for every dnsdist global (the hooks a configuration defines
        itself left out); the functions triodist has replace theirs."""
        return {
            name: self._not_yet(name, quiet=name in QUIET_TUNABLES)
            for name in DNSDIST_GLOBALS - DNSDIST_USER_HOOKS
        }

    def _not_yet(self, name: str, *, quiet: bool) -> Callable[..., Any]:
        def accept(*args: Any) -> Anything:
            if quiet:
                # Quiet only when the call asks for what triodist does anyway.
                if name in QUIET_WITH and (not args or args[0] != QUIET_WITH[name]):
                    self.warn_once(
                        name, f"{name}: not supported by triodist yet, ignored", ignored=name
                    )
                return Anything(name)
            self.warn_once(name, f"{name}: not supported by triodist yet, ignored", ignored=name)
            # What a missing security-relevant function means, said where it is missed.
            if name in NOT_LISTENING:
                where = text(args[0]) if args else "its address"
                if f"{name}.{where}" not in self.warned:
                    self.warned.add(f"{name}.{where}")
                    log.error("%s: %s: nothing listens on %s", name, NOT_LISTENING[name], where)
            elif name in SECURITY_NOT_YET:
                self.warn_once(f"{name}.security", f"{name}: {SECURITY_NOT_YET[name]}")
            return Anything(name)

        return accept
