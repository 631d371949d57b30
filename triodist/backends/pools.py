"""Pools of servers and the policies that choose one server for a query.

A ``Pool`` is a name; its servers are the servers that carry that name in their
``pools``, read afresh at each query (so ``server:addPool()``/``rmPool()`` and
``rmServer`` take effect at once) and kept in ascending ``order``, as dnsdist
keeps them.  A policy is given *all* the servers of the pool, up or down, in
that order, and chooses one or none:

* the built-in policies (``leastOutstanding``, ``firstAvailable``,
  ``roundrobin``, ``wrandom``, ``whashed``, ``chashed``, ``orderedWrandUntag``)
  never choose a server that is down, except ``roundrobin`` which, as in
  dnsdist, picks among all servers when none is up (unless
  ``setRoundRobinFailOnNoServer(true)``);
* a Lua policy (``newServerPolicy``, ``setServerPolicyLua``) sees the down
  servers too, as dnsdist's Lua policies do, and its choice is final.

The tunables that dnsdist keeps as globals (hash perturbation, balancing
factors, roundrobin's behaviour with no server up) live in a
``PolicySettings`` that each configuration owns; its built-in policies are
built over it by ``builtin_policies``, so two configurations in one process do
not share them.

The hash of ``whashed`` and ``chashed`` is dnsdist's (Bob Jenkins' lookup2 over
the lowercased wire name, seeded with the perturbation): with the same
``setWHashedPertubation`` value and the same weights, a name goes to the same
backend as with dnsdist.

Imports nothing above triodist.backends: what Lua sees of a query when a Lua policy is
called is handed in by the configuration (``LuaServerPolicy``'s ``call``).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from triodist.backends.server import Server
from triodist.wire.message import DNSQuestion

log = logging.getLogger("triodist.backends")

PolicyFunc = Callable[[Sequence[Server], DNSQuestion], Server | None]
#: How a Lua policy's function is called for a query: ``call(f, dq)`` calls ``f`` with
#: what Lua is to see of ``dq`` (``rules.luaview.call_with_view``: the view of the query).
ViewCall = Callable[[Callable[[Any], Any], DNSQuestion], Any]

_U32 = 0xFFFFFFFF
_INT_MAX = 0x7FFFFFFF


# --- the hash dnsdist uses for whashed and chashed ----------------------------------------


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - b - c) & _U32
    a ^= c >> 13
    b = (b - c - a) & _U32
    b ^= (a << 8) & _U32
    c = (c - a - b) & _U32
    c ^= b >> 13
    a = (a - b - c) & _U32
    a ^= c >> 12
    b = (b - c - a) & _U32
    b ^= (a << 16) & _U32
    c = (c - a - b) & _U32
    c ^= b >> 5
    a = (a - b - c) & _U32
    a ^= c >> 3
    b = (b - c - a) & _U32
    b ^= (a << 10) & _U32
    c = (c - a - b) & _U32
    c ^= b >> 15
    return a, b, c


def burtle_ci(key: bytes, init: int = 0) -> int:
    """Bob Jenkins' lookup2 hash of ``key`` with ASCII letters lowercased, seeded with ``init``.

    This is the hash dnsdist computes over a name (``DNSName::hash``) and over a
    backend's identity for ``chashed``: using the same one lets a configuration move
    between dnsdist and triodist without reshuffling which backend serves which name.
    """
    k = key.lower()  # bytes.lower() touches A-Z only, as DNS case folding does
    length = len(k)
    a = b = 0x9E3779B9
    c = init & _U32
    pos = 0
    word = int.from_bytes
    while length - pos >= 12:
        a = (a + word(k[pos : pos + 4], "little")) & _U32
        b = (b + word(k[pos + 4 : pos + 8], "little")) & _U32
        c = (c + word(k[pos + 8 : pos + 12], "little")) & _U32
        a, b, c = _mix(a, b, c)
        pos += 12
    tail = k[pos:]
    # The last 0 to 11 bytes; the low byte of ``c`` is taken by the length.
    c = (c + length) & _U32
    a = (a + word(tail[0:4], "little")) & _U32
    b = (b + word(tail[4:8], "little")) & _U32
    c = (c + (word(tail[8:11], "little") << 8)) & _U32
    return _mix(a, b, c)[2]


@functools.lru_cache(maxsize=8192)
def _wire_hash(wire: bytes, perturbation: int) -> int:
    return burtle_ci(wire, perturbation)


def qname_hash(dq: DNSQuestion, perturbation: int) -> int:
    """dnsdist's hash of the query name (case-insensitive), cached for popular names."""
    # The wire bytes kept from the query: the same bytes ``dq.name.to_wire()`` gives,
    # without parsing a ``Name`` for every query.
    return _wire_hash(dq.qname_wire.lower(), perturbation)


# --- settings -----------------------------------------------------------------------------


@dataclass
class PolicySettings:
    """The tunables of the built-in policies (dnsdist keeps these as globals).

    ``hash_perturbation`` starts random, as in dnsdist: ``whashed`` and ``chashed``
    give the same backend for a name across restarts and instances only once
    ``setWHashedPertubation`` fixes it.  A balancing factor of 0 disables the bounded
    load; otherwise a server with more than ``factor`` times its share (by weight) of
    the queries in flight is passed over.
    """

    hash_perturbation: int = field(default_factory=lambda: random.getrandbits(32))
    roundrobin_fail_on_no_server: bool = False
    weighted_balancing_factor: float = 0.0
    consistent_hash_balancing_factor: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


# --- policy objects -----------------------------------------------------------------------


def _as_server_list(servers: Any) -> list[Server]:
    """A Python sequence as is; a Lua array (1-based) as a list."""
    if isinstance(servers, list | tuple):
        return list(servers)
    return [servers[i] for i in range(1, len(servers) + 1)]


class ServerPolicy:
    """A named policy: dnsdist's ``ServerPolicy`` (a built-in one, or ``newServerPolicy``).

    ``func(servers, dq)`` is given every server of the pool in ``order`` and returns the
    chosen one or ``None``.  The object is a value in Lua (``setServerPolicy(chashed)``),
    with dnsdist's ``name``, ``isLua``, ``isFFI``, ``isPerThread``, ``policy`` and
    ``toString()``.
    """

    isLua = False
    isFFI = False
    isPerThread = False

    def __init__(self, name: str, func: PolicyFunc) -> None:
        self.name = name
        self.func = func

    def choose(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        if not servers:
            return None
        return self.func(servers, dq)

    @property
    def policy(self) -> Callable[[Any, DNSQuestion], Server | None]:
        """The policy as a function of (servers, dq), callable from Lua with a Lua array
        (``return leastOutstanding.policy(servers, dq)`` inside a Lua policy)."""
        return lambda servers, dq: self.choose(_as_server_list(servers), dq)

    def toString(self) -> str:
        return f'ServerPolicy{" (Lua)" if self.isLua else ""} "{self.name}"'

    def __str__(self) -> str:
        return self.toString()


class LuaServerPolicy(ServerPolicy):
    """A policy written in Lua: ``function(servers, dq)`` returning a server or an index.

    The function receives every server of the pool, **including those that are
    down**, as a Lua array in ascending ``order`` (``#servers``, ``servers[1]:isUp()``),
    because dnsdist gives its Lua policies the whole pool and leaves the choice to them.
    It returns a server object (dnsdist up to 2.0) or the 1-based index of one in the
    array (dnsdist 2.1); ``nil``, ``0``, an index out of range or any other value means
    "no server".  A returned server is used even if it is down: the policy's choice is
    final, as in dnsdist.  An error raised by the function propagates to the caller
    (the pipeline logs it and treats the query as having no server).

    Building a Lua table for every query would cost more than most policies do, so the
    array is built once per distinct server list and reused while the pool's servers
    stay the same.  A policy should therefore not modify it; one that adds or removes
    entries is noticed (by its length) and gets a fresh array the next time.

    ``call(f, dq)`` calls the function with what Lua sees of the query (``ViewCall``):
    the configuration hands in ``rules.luaview.call_with_view``, the view rules get.
    """

    isLua = True
    _CACHE_LIMIT = 64

    def __init__(
        self,
        name: str,
        func: Callable[[Any, DNSQuestion], Any],
        make_array: Callable[[list[Server]], Any] | None = None,
        *,
        call: ViewCall,
    ) -> None:
        super().__init__(name, self._choose_lua)
        self.lua_func = func
        self._make_array = make_array
        self._call = call
        self._arrays: dict[tuple[Server, ...], Any] = {}
        self._complained: set[str] = set()

    @property
    def policy(self) -> Callable[[Any, DNSQuestion], Any]:
        return self.lua_func

    def _array(self, servers: Sequence[Server]) -> tuple[tuple[Server, ...], Any]:
        key = tuple(servers)
        array = self._arrays.get(key)
        if array is None:
            if len(self._arrays) >= self._CACHE_LIMIT:
                self._arrays.clear()
            array = self._make_array(list(key)) if self._make_array else list(key)
            self._arrays[key] = array
        return key, array

    def _choose_lua(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        key, array = self._array(servers)
        # The query's view, as rules get it (rules/luaview.py): no userdata per query.
        result = self._call(functools.partial(self.lua_func, array), dq)
        if len(array) != len(key):
            del self._arrays[key]
        if isinstance(result, tuple):  # several values returned: the first counts
            result = result[0] if result else None
        if result is None:
            return None
        if isinstance(result, Server):
            return result
        if isinstance(result, int | float) and not isinstance(result, bool):
            if float(result).is_integer() and 1 <= result <= len(key):
                return key[int(result) - 1]
            return None
        kind = type(result).__name__
        if kind not in self._complained:
            self._complained.add(kind)
            log.warning(
                "Server policy '%s' returned a %s instead of a server or an index: no server",
                self.name,
                kind,
            )
        return None


# --- the built-in policies ----------------------------------------------------------------


def _least_outstanding(servers: Sequence[Server]) -> Server | None:
    if len(servers) == 1:
        return servers[0] if servers[0].is_up else None
    best: Server | None = None
    best_key: tuple[int, int, float] | None = None
    for server in servers:
        if not server.is_up:
            continue
        key = (server.outstanding, server.order, server.latency_us)
        if best_key is None or key < best_key:
            best, best_key = server, key
    return best


def least_outstanding(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    """Fewest queries in flight; on a tie the lowest ``order``, then the lowest latency."""
    return _least_outstanding(servers)


def first_available(servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
    """The first server up (in ``order``) under its ``qps`` limit, else ``leastOutstanding``.

    The token is taken from the limit of the server chosen here only, so its ``qps``
    counts the queries this policy sends to it.
    """
    for server in servers:
        if server.is_up and (server.qps <= 0 or server.qps_bucket_take()):
            return server
    return _least_outstanding(servers)


def _target_load(servers: Sequence[Server], factor: float) -> float | None:
    """The queries in flight a server may have per unit of weight under a bounded load."""
    if factor <= 0:
        return None
    load = 1.0  # the query being placed
    weight = 0
    for server in servers:
        if server.is_up:
            load += server.outstanding
            weight += server.weight
    return load / weight * factor if weight else None


def _weighted(servers: Sequence[Server], value: int, factor: float) -> Server | None:
    """The server whose weight interval holds ``value`` modulo the total weight."""
    target = _target_load(servers, factor)
    usable: list[Server] = []
    bounds: list[int] = []
    total = 0
    for server in servers:
        if not server.is_up:
            continue
        if target is not None and server.outstanding > target * server.weight:
            continue
        # Very high weights saturate instead of overflowing, as in dnsdist.
        total = _INT_MAX if server.weight > _INT_MAX - total else total + server.weight
        usable.append(server)
        bounds.append(total)
    if not usable or total == 0:
        return None
    index = bisect.bisect_right(bounds, value % total)
    return usable[index] if index < len(usable) else None


class _Builtins:
    """The built-in policies of one configuration, over its ``PolicySettings``."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self._rr_counter = itertools.count()
        # chashed: each server's sorted points on the ring.
        self._rings: dict[tuple[Server, int, int, str], list[int]] = {}

    def roundrobin(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        """The next server that is up; with none up, the next of all of them (dnsdist's
        default) or none (``setRoundRobinFailOnNoServer(true)``)."""
        candidates = [s for s in servers if s.is_up]
        if not candidates:
            if self.settings.roundrobin_fail_on_no_server:
                return None
            candidates = list(servers)
        return candidates[next(self._rr_counter) % len(candidates)]

    def wrandom(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        """At random, in proportion to ``weight``."""
        value = self.settings.rng.getrandbits(31)
        return _weighted(servers, value, self.settings.weighted_balancing_factor)

    def whashed(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        """By the hash of the query name, in proportion to ``weight``: a name sticks to
        a server while the pool does not change."""
        value = qname_hash(dq, self.settings.hash_perturbation)
        return _weighted(servers, value, self.settings.weighted_balancing_factor)

    def _ring(self, server: Server) -> list[int]:
        # Looked up by the server and what its points depend on (a rename changes its
        # identity), so that a query does not rebuild the identity string.
        key = (server, server.weight, self.settings.hash_perturbation, server.name)
        points = self._rings.get(key)
        if points is None:
            if len(self._rings) > 4096:  # servers or weights changed a lot: start over
                self._rings.clear()
            identity, seed = server_identity(server), self.settings.hash_perturbation
            points = sorted(
                burtle_ci(f"{identity}-{w}".encode(), seed) for w in range(server.weight, 0, -1)
            )
            self._rings[key] = points
        return points

    def chashed(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        """Consistent hashing: each server has ``weight`` points on a ring, hashed from
        its identity; the name's hash goes to the next point.  Adding or removing a
        server only moves the names that fall next to its points."""
        qhash = qname_hash(dq, self.settings.hash_perturbation)
        target = _target_load(servers, self.settings.consistent_hash_balancing_factor)
        chosen: Server | None = None
        chosen_point = _U32 + 1
        first: Server | None = None
        first_point = _U32 + 1
        for server in servers:
            if not server.is_up:
                continue
            if target is not None and server.outstanding > target * server.weight:
                continue
            points = self._ring(server)
            if points[0] < first_point:  # the lowest point of all: where the ring wraps
                first, first_point = server, points[0]
            index = bisect.bisect_left(points, qhash)
            if index < len(points) and points[index] < chosen_point:
                chosen, chosen_point = server, points[index]
        return chosen if chosen is not None else first

    def ordered_wrand_untag(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        """``wrandom`` among the servers up of the lowest ``order``, leaving out those
        whose ``getNameWithAddr()`` is a tag of the query (to retry elsewhere)."""
        candidates: list[Server] = []
        lowest: int | None = None
        for server in servers:
            if not server.is_up or server.getNameWithAddr() in dq.tags:
                continue
            if lowest is not None and server.order > lowest:
                break
            lowest = server.order
            candidates.append(server)
        if not candidates:
            return None
        value = self.settings.rng.getrandbits(31)
        return _weighted(candidates, value, self.settings.weighted_balancing_factor)


def server_identity(server: Server) -> str:
    """What ``chashed`` hashes for a server: its ``id`` (dnsdist's UUID) when it has one,
    else its name and address, which stay the same across restarts."""
    identity = getattr(server, "id", None)
    return identity if isinstance(identity, str) and identity else server.getNameWithAddr()


def builtin_policies(settings: PolicySettings) -> dict[str, ServerPolicy]:
    """dnsdist's built-in policies, by their Lua names, over ``settings``."""
    b = _Builtins(settings)
    funcs: list[tuple[str, PolicyFunc]] = [
        ("firstAvailable", first_available),
        ("roundrobin", b.roundrobin),
        ("wrandom", b.wrandom),
        ("whashed", b.whashed),
        ("chashed", b.chashed),
        ("orderedWrandUntag", b.ordered_wrand_untag),
        ("leastOutstanding", least_outstanding),
    ]
    return {name: ServerPolicy(name, func) for name, func in funcs}


#: Policies over default settings, for code that has no configuration of its own
#: (the default ``leastOutstanding`` of a ``Routing``).
BUILTIN_POLICIES: dict[str, ServerPolicy] = builtin_policies(PolicySettings())


# --- pools --------------------------------------------------------------------------------


def _order(server: Server) -> int:
    return server.order


class Pool:
    """dnsdist's ServerPool: the servers that carry a pool name, a policy, a cache."""

    def __init__(self, name: str, registry: list[Server] | None = None) -> None:
        self.name = name
        # Membership is read from the servers themselves (their ``pools``), so that
        # ``server:addPool()``/``rmPool()`` take effect at once, as in dnsdist.
        self._registry: list[Server] = registry if registry is not None else []
        self.policy: ServerPolicy | None = None
        self.cache: Any = None
        self.use_ecs = False
        self._members: list[Server] = []
        self._members_of: tuple[int, int] = (-1, -1)
        self._members_ecs = False
        #: Builds a Lua array of the configuration's Lua state (``getServers``); None
        #: when used from Python.
        self.lua_array: Callable[[list[Server]], Any] | None = None

    @property
    def servers(self) -> list[Server]:
        """Every server of the pool, up or down, in ascending ``order`` (ties: in the
        order they were added), which is the order policies and Lua see them in.
        Computed again only when servers or their pools changed (the list is shared:
        callers do not modify it)."""
        registry = self._registry
        generation = (Server.membership_generation, len(registry))
        if generation != self._members_of:
            name = self.name
            members = [s for s in registry if name in s.pools]
            members.sort(key=_order)
            self._members, self._members_of = members, generation
            self._members_ecs = any(s.use_ecs for s in members)
        return self._members

    @property
    def may_use_ecs(self) -> bool:
        """Whether a query to this pool may get EDNS Client Subnet: a server of it has
        ``useClientSubnet``, or the pool adds it when no server is chosen (``setECS``).
        Read for every query: kept with the list of members."""
        # ``servers`` first: it brings the members, and their flag, up to date.
        return self.use_ecs or (bool(self.servers) and self._members_ecs)

    def up_servers(self) -> list[Server]:
        return [s for s in self.servers if s.is_up]

    def countServers(self, upOnly: Any = False) -> int:
        """How many servers the pool has (only those up, when ``upOnly``)."""
        return sum(1 for s in self.servers if s.is_up or not upOnly)

    def poolLoad(self) -> int:
        """The queries in flight to the pool's servers."""
        return sum(s.outstanding for s in self.servers)

    # --- what configurations call -------------------------------------------------------

    def setCache(self, cache: Any) -> None:
        from triodist.cache.packetcache import (
            PacketCache,  # the cache module does not need the pools
        )

        if not isinstance(cache, PacketCache):
            raise TypeError(f"setCache: expected a packet cache (newPacketCache), got {cache!r}")
        self.cache = cache

    def getCache(self) -> Any:
        return self.cache

    def getServers(self) -> Any:
        """The pool's servers, up or down, in ``order``: a Lua array in Lua, numbered from
        1 as ``getPoolServers`` gives them (``lua_array``, set by ``getPool``)."""
        servers = list(self.servers)
        return servers if self.lua_array is None else self.lua_array(servers)

    def unsetCache(self) -> None:
        self.cache = None

    def getECS(self) -> bool:
        return self.use_ecs

    def setECS(self, on: Any) -> None:
        """Whether a query gets EDNS Client Subnet when the policy chooses no server
        (none up), so that it finds the answers cached with its subnet (dnsdist's
        ``setECS``)."""
        self.use_ecs = bool(on)

    def toString(self) -> str:
        return f'ServerPool "{self.name}"'

    def __str__(self) -> str:
        return self.toString()


def select_server(pool: Pool, default_policy: ServerPolicy, dq: DNSQuestion) -> Server | None:
    """The server for ``dq`` in ``pool``: the pool's policy, else the default one, given
    every server of the pool (each policy decides what to do with those that are down).
    May raise if a Lua policy fails; the caller logs that and treats it as no server."""
    policy = pool.policy or default_policy
    return policy.choose(pool.servers, dq)
