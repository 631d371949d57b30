"""EDNS Client Subnet: the settings (``setECSOverride``, ``setECSSourcePrefixV4``,
``setECSSourcePrefixV6``) and the actions (``SetECSAction``, ``SetECSPrefixLengthAction``,
``SetECSOverrideAction``, ``SetDisableECSAction`` and their pre-1.6 names), as
``ECS_CONSTRUCTORS``. ``newServer``'s ``useClientSubnet`` and ``disableZeroScope`` are
``servers.py``'s; a pool's ``setECS`` is the pool's own.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from triodist.config.bindings.args import ConfigError, boolean, whole
from triodist.config.bindings.base import Binding, lua_function
from triodist.rules import ecs_actions as E
from triodist.util.luavalues import describe


def _prefix(value: Any, function: str, maximum: int) -> int:
    length = whole(value, function, 0)
    if length > maximum:
        raise ConfigError(
            f"{function}: expected a prefix length of 0 to {maximum}, got {describe(value)}"
        )
    return length


class ECSBindings(Binding):
    """The client subnet settings every query starts with (``config.settings``)."""

    @lua_function
    def setECSOverride(self, value: Any) -> None:
        """Whether a client's own ECS option is replaced by the one triodist adds
        (default false: kept)."""
        self.config.settings.ecs_override = boolean(value, "setECSOverride")

    @lua_function
    def setECSSourcePrefixV4(self, prefix: Any) -> None:
        """The bits of an IPv4 client's address sent in its subnet (default 24)."""
        self.config.settings.ecs_source_prefix_v4 = _prefix(prefix, "setECSSourcePrefixV4", 32)

    @lua_function
    def setECSSourcePrefixV6(self, prefix: Any) -> None:
        """The bits of an IPv6 client's address sent in its subnet (default 56)."""
        self.config.settings.ecs_source_prefix_v6 = _prefix(prefix, "setECSSourcePrefixV6", 128)


#: The actions Lua builds, by dnsdist's names (the pre-1.6 ones too, as dnsdist 1.7.3
#: still takes them).
ECS_CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "SetECSAction": E.SetECSAction,
    "SetECSPrefixLengthAction": E.SetECSPrefixLengthAction,
    "ECSPrefixLengthAction": E.SetECSPrefixLengthAction,
    "SetECSOverrideAction": E.SetECSOverrideAction,
    "ECSOverrideAction": E.SetECSOverrideAction,
    "SetDisableECSAction": E.SetDisableECSAction,
    "DisableECSAction": E.SetDisableECSAction,
}
