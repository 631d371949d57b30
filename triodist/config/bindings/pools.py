"""Pools and the policies that choose a server in them: ``getPool``, ``showPools``,
``setServerPolicy`` and its kin, the policies' tunables, ``PoolAvailableRule`` and
``PoolOutstandingRule``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from triodist.backends.pools import (
    LuaServerPolicy,
    PolicySettings,
    Pool,
    ServerPolicy,
    builtin_policies,
)
from triodist.backends.server import Server
from triodist.config.bindings.args import ConfigError, text
from triodist.config.bindings.base import Binding, columns, lua_function
from triodist.rules import selectors as S
from triodist.rules.luaview import call_with_view
from triodist.util.luavalues import describe

log = logging.getLogger("triodist.config")


class PoolBindings(Binding):
    """The pools of a configuration (``config.routing``) and their server policies."""

    @staticmethod
    def _pool_name(name: Any) -> str:
        return "" if name is None else text(name)

    def _pools(self) -> dict[str, Pool]:
        """Every pool, including those only named by a server (``server:addPool("x")``),
        which dnsdist creates at once."""
        routing = self.config.routing
        for server in list(routing.servers):
            for name in server.pools:
                if name not in routing.pools:
                    routing.pool(name)
        return routing.pools

    @staticmethod
    def _given_pool_name(name: Any, function: str) -> str:
        """A pool name given to getPool or getPoolServers: a string, or a number as Lua
        writes it (dnsdist takes ``getPool(5)`` as the pool "5"); nil or a boolean is
        refused, as dnsdist refuses them, rather than taken as the default pool ("")."""
        if isinstance(name, int | float) and not isinstance(name, bool):
            return str(name) if isinstance(name, int) else format(name, ".14g")
        if not isinstance(name, str):
            raise ConfigError(f"{function}: expected a pool name, got {describe(name)}")
        return text(name)

    @lua_function
    def getPool(self, name: Any) -> Pool:
        """The pool named ``name`` ("" is the default pool), created if missing."""
        pool = self.config.routing.pool(self._given_pool_name(name, "getPool"))
        # ``pool:getServers()`` gives Lua an array of this configuration's Lua state.
        pool.lua_array = self.lua_array
        return pool

    @lua_function
    def getPoolServers(self, name: Any) -> list[Server]:
        """The pool's servers, up or down, in ``order``; an error if there is no such pool
        (as dnsdist)."""
        wanted = self._given_pool_name(name, "getPoolServers")
        pool = self._pools().get(wanted)
        if pool is None:
            raise ConfigError(f"getPoolServers: no pool named '{wanted}'")
        return pool.servers

    @lua_function
    def getPoolNames(self) -> list[str]:
        return sorted(self._pools())

    @lua_function
    def showPools(self) -> None:
        """dnsdist's table: Name, Cache, ServerPolicy, Servers (``name address``, ...)."""
        default = self.config.routing.policy.name

        def row(name: str, cache: str, policy: str, servers: str) -> str:
            return columns(
                [(0, f"{name:<20.20}"), (25, f"{cache:>20}"), (25, f"{policy:>20}"), (50, servers)]
            )

        lines = [row("Name", "Cache", "ServerPolicy", "Servers")]
        pools = self._pools()
        for name in sorted(pools):
            pool = pools[name]
            cache = "" if pool.cache is None else str(pool.cache)
            policy = pool.policy.name if pool.policy is not None else default
            servers = ", ".join(f"{s.name} {s.address.toStringWithPort()}" for s in pool.servers)
            lines.append(row(name, cache, policy, servers))
        print("\n".join(lines), file=self.out)

    # The built-in policies of this configuration, over its own settings (dnsdist's
    # globals: hash perturbation, balancing factors, roundrobin with no server up).

    @functools.cached_property
    def policy_settings(self) -> PolicySettings:
        return PolicySettings()

    @functools.cached_property
    def policies(self) -> dict[str, ServerPolicy]:
        return builtin_policies(self.policy_settings)

    def _policy(self, policy: Any, function: str) -> ServerPolicy:
        if not isinstance(policy, ServerPolicy):
            raise ConfigError(f"{function}: expected a server policy, got {describe(policy)}")
        return policy

    @lua_function
    def setServerPolicy(self, policy: Any) -> None:
        self.config.routing.policy = self._policy(policy, "setServerPolicy")

    @lua_function
    def setPoolServerPolicy(self, policy: Any, pool: Any) -> None:
        chosen = self._policy(policy, "setPoolServerPolicy")
        name = self._pool_name(pool)
        self.config.routing.pool(name).policy = chosen
        log.debug("Setting pool '%s' server selection policy to %s", name, chosen.name)

    @lua_function
    def showServerPolicy(self) -> None:
        print(self.config.routing.policy.name, file=self.out)

    @lua_function
    def showPoolServerPolicy(self, pool: Any) -> None:
        found = self._pools().get(self._pool_name(pool))
        if found is None:
            raise ConfigError(f"showPoolServerPolicy: no pool named '{self._pool_name(pool)}'")
        print((found.policy or self.config.routing.policy).name, file=self.out)

    @lua_function
    def newServerPolicy(self, name: Any, func: Any, function: str = "newServerPolicy") -> Any:
        """A policy from a Lua function(servers, dq); see ``LuaServerPolicy`` for what it
        is given (every server of the pool, up or down) and may return."""
        if not callable(func):
            raise ConfigError(f"{function}: expected a function, got {describe(func)}")
        return LuaServerPolicy(text(name), func, self.lua_array, call=call_with_view)

    @lua_function
    def setServerPolicyLua(self, name: Any, func: Any) -> None:
        self.setServerPolicy(self.newServerPolicy(name, func, "setServerPolicyLua"))

    @lua_function
    def setPoolServerPolicyLua(self, name: Any, func: Any, pool: Any) -> None:
        self.setPoolServerPolicy(self.newServerPolicy(name, func, "setPoolServerPolicyLua"), pool)

    @lua_function
    def setServFailWhenNoServer(self, on: Any) -> None:
        self.config.settings.servfail_when_no_server = bool(on)

    @lua_function
    def setRoundRobinFailOnNoServer(self, on: Any) -> None:
        self.policy_settings.roundrobin_fail_on_no_server = bool(on)

    @lua_function
    def setWHashedPertubation(self, value: Any, function: str = "setWHashedPertubation") -> None:
        """The seed of the name hash of whashed and chashed (dnsdist's spelling; random
        until set, as in dnsdist)."""
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{function}: expected a number, got {describe(value)}") from exc
        if not 0 <= number <= 0xFFFFFFFF or number != float(value):
            raise ConfigError(f"{function}: {value} is not an integer from 0 to 4294967295")
        self.policy_settings.hash_perturbation = number

    @lua_function
    def setWHashedPerturbation(self, value: Any) -> None:
        self.setWHashedPertubation(value, "setWHashedPerturbation")

    def _balancing_factor(self, value: Any, function: str) -> float | None:
        # As dnsdist: 0 turns the bounded load off, below 1 is refused with an error
        # message and the factor in place is kept.
        try:
            factor = float(value)
        except (TypeError, ValueError):
            factor = -1.0
        if factor != 0 and not factor >= 1.0:
            self.config_error(f"Invalid value passed to {function}()!")  # dnsdist's words
            return None
        return factor

    @lua_function
    def setConsistentHashingBalancingFactor(self, value: Any) -> None:
        factor = self._balancing_factor(value, "setConsistentHashingBalancingFactor")
        if factor is not None:
            self.policy_settings.consistent_hash_balancing_factor = factor

    @lua_function
    def setWeightedBalancingFactor(self, value: Any) -> None:
        factor = self._balancing_factor(value, "setWeightedBalancingFactor")
        if factor is not None:
            self.policy_settings.weighted_balancing_factor = factor

    def _pool_lookup(self, name: str) -> Pool | None:
        routing = self.config.routing
        pool = routing.pools.get(name)
        if pool is None and any(name in s.pools for s in routing.servers):
            pool = Pool(name, routing.servers)  # named by a server only (addPool)
        return pool

    @lua_function
    def PoolAvailableRule(self, pool: Any) -> S.PoolAvailableRule:
        """Matches while the pool has a server up; reads the pools when queries come."""
        return S.PoolAvailableRule(self._pool_name(pool), self._pool_lookup)

    @lua_function
    def PoolOutstandingRule(self, pool: Any, limit: Any) -> S.PoolOutstandingRule:
        try:
            bound = int(limit)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"PoolOutstandingRule: invalid limit {describe(limit)}") from exc
        return S.PoolOutstandingRule(self._pool_name(pool), bound, self._pool_lookup)
