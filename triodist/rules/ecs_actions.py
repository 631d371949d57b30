"""The actions that steer EDNS Client Subnet for the queries a rule matches:
``SetECSAction`` (the subnet sent), ``SetECSPrefixLengthAction`` (how much of the
client's address is sent), ``SetECSOverrideAction`` (whether a client's own option is
replaced) and ``SetDisableECSAction`` (none sent). Each changes the query's settings and
lets the rules go on (dnsdist's ``Action::None``); the option itself is added when the
query leaves for a backend whose ``newServer`` has ``useClientSubnet`` (the pipeline,
``triodist.query.ecs``).

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from triodist.rules.actionbase import QueryAction
from triodist.rules.verdicts import NONE, Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.ecs import ECSState, Network
from triodist.wire.message import DNSQuestion


def _is_v4_client(dq: DNSQuestion) -> bool:
    # As dnsdist: by the socket's family (an IPv4-mapped address is an IPv6 client).
    return ":" not in dq.remote[0]


def _prefix(value: Any, function: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{function}: expected a prefix length, got {lua_describe(value)}")
    if not float(value).is_integer() or not 0 <= value <= maximum:
        raise ValueError(f"{function}: expected a prefix length of 0 to {maximum}, got {value}")
    return int(value)


def _netmask(value: Any, function: str) -> Network:
    if not isinstance(value, str):
        raise TypeError(
            f"{function}: expected a netmask such as '192.0.2.0/24', got {lua_describe(value)}"
        )
    try:
        # As dnsdist's Netmask: the bits past the prefix length do not count.
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{function}: '{value}' is not a netmask: {exc}") from None


class SetECSAction(QueryAction):
    """Send ``v4`` (and, for IPv6 clients, ``v6`` when given) as the client subnet in
    place of the client's address: dnsdist's ``SetECSAction(v4 [, v6])``. With one
    netmask, every client gets it (it may be an IPv6 one)."""

    def __init__(self, v4: Any, v6: Any = None) -> None:
        self.v4 = _netmask(v4, "SetECSAction")
        self.v6 = None if v6 is None else _netmask(v6, "SetECSAction")

    def __call__(self, dq: DNSQuestion) -> Verdict:
        subnet = self.v4 if self.v6 is None or _is_v4_client(dq) else self.v6
        if dq.ecs is None:
            dq.ecs = ECSState(subnet)
        else:
            dq.ecs.subnet = subnet
        return NONE

    def describe(self) -> str:
        text = f"set ECS to {self.v4}"
        return text if self.v6 is None else f"{text} / {self.v6}"


class SetECSPrefixLengthAction(QueryAction):
    """How many bits of the client's address go in its subnet: ``v4`` for IPv4 clients,
    ``v6`` for IPv6 ones (dnsdist's ``SetECSPrefixLengthAction``)."""

    def __init__(self, v4: Any, v6: Any) -> None:
        self.v4 = _prefix(v4, "SetECSPrefixLengthAction", 32)
        self.v6 = _prefix(v6, "SetECSPrefixLengthAction", 128)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.ecsPrefixLength = self.v4 if _is_v4_client(dq) else self.v6
        return NONE

    def describe(self) -> str:
        return f"set ECS prefix length to {self.v4}/{self.v6}"


class SetECSOverrideAction(QueryAction):
    """Whether a client's own ECS option is replaced (true) or kept (false) for this
    query, whatever ``setECSOverride`` says (dnsdist's ``SetECSOverrideAction``)."""

    def __init__(self, override: Any) -> None:
        if not isinstance(override, bool):
            raise TypeError(
                f"SetECSOverrideAction: expected true or false, got {lua_describe(override)}"
            )
        self.override = override

    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.ecsOverride = self.override
        return NONE

    def describe(self) -> str:
        return f"set ECS override to {int(self.override)}"


class SetDisableECSAction(QueryAction):
    """No ECS option is added to this query (dnsdist's ``SetDisableECSAction``)."""

    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.useECS = False
        return NONE

    def describe(self) -> str:
        return "disable ECS"
