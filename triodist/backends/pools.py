"""Pools of servers and the policies that choose one server for a query."""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from ..dnsmsg import DNSQuestion
from .server import Server

PolicyFunc = Callable[[Sequence[Server], DNSQuestion], Server | None]


class ServerPolicy:
    """A named policy (dnsdist's ``newServerPolicy``, or a built-in one)."""

    def __init__(self, name: str, func: PolicyFunc) -> None:
        self.name = name
        self.func = func

    def choose(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        if not servers:
            return None
        return self.func(servers, dq)

    def __str__(self) -> str:
        return self.name


def least_outstanding(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    return min(servers, key=lambda s: (s.outstanding, s.order, s.latency_us))


def first_available(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    ordered = sorted(servers, key=lambda s: s.order)
    for server in ordered:
        if server.qps <= 0 or server.qps_bucket_take():
            return server
    return least_outstanding(servers, dq)


_rr_counter = itertools.count()


def round_robin(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    return servers[next(_rr_counter) % len(servers)]


def weighted_random(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    return random.choices(list(servers), weights=[s.weight for s in servers])[0]


WHASHED_PERTURBATION = [0]


def weighted_hashed(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    key = dq.name.canonicalize().to_wire()
    value = zlib.crc32(key or b"", WHASHED_PERTURBATION[0])
    total = sum(s.weight for s in servers)
    point = value % total
    for server in servers:
        point -= server.weight
        if point < 0:
            return server
    return servers[-1]


BUILTIN_POLICIES: dict[str, ServerPolicy] = {
    name: ServerPolicy(name, func)
    for name, func in (
        ("leastOutstanding", least_outstanding),
        ("firstAvailable", first_available),
        ("roundrobin", round_robin),
        ("wrandom", weighted_random),
        ("whashed", weighted_hashed),
    )
}


class Pool:
    """dnsdist's ServerPool: the servers that carry a pool name, a policy, a cache."""

    def __init__(self, name: str, registry: list[Server] | None = None) -> None:
        self.name = name
        # Membership is read from the servers themselves (their ``pools``), so that
        # ``server:addPool()``/``rmPool()`` take effect at once, as in dnsdist.
        self._registry: list[Server] = registry if registry is not None else []
        self.policy: ServerPolicy | None = None
        self.cache: Any = None

    @property
    def servers(self) -> list[Server]:
        name = self.name
        return [s for s in self._registry if name in s.pools]

    def up_servers(self) -> list[Server]:
        name = self.name
        return [s for s in self._registry if name in s.pools and s.is_up]

    # --- what configurations call -------------------------------------------------------

    def setCache(self, cache: Any) -> None:
        self.cache = cache

    def getCache(self) -> Any:
        return self.cache

    def unsetCache(self) -> None:
        self.cache = None

    def __str__(self) -> str:
        return self.name
