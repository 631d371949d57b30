"""The dnsdist configuration functions, as plain Python.

``ConfigAPI`` records what a ``rules.lua`` asks for in a ``ServerConfig``:
listeners, ACL, servers, pools, policies, rules.  It binds no socket and
contacts no backend, so running a configuration is safe for ``check-config``
(the one socket it opens is ``newNetworkEndpoint``'s client socket, connected
to a peer that may or may not be there).
The Lua runtime (``runtime.py``) exposes ``ConfigAPI.functions()`` as Lua
globals, after turning Lua tables into dicts and lists; these functions are
ordinary Python and are tested from Python.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from triodist import __version__
from triodist.asyncproc.network import NetworkEndpoint, NetworkListener
from triodist.backends.health import HealthCheckConfig
from triodist.backends.pools import (
    LuaServerPolicy,
    PolicySettings,
    Pool,
    ServerPolicy,
    builtin_policies,
    server_identity,
)
from triodist.backends.server import DEFAULT_MAX_TCP_CONNECTIONS, MAX_UDP_SOCKETS, Server
from triodist.config.dnsdist_names import (
    DNSDIST_GLOBALS,
    DNSDIST_USER_HOOKS,
    NOT_LISTENING,
    QUIET_TUNABLES,
    QUIET_WITH,
    SECURITY_NOT_YET,
)
from triodist.config.signatures import SIGNATURES
from triodist.ops import rings
from triodist.ops.console import console_functions
from triodist.query.pipeline import Chains
from triodist.rules import actions as A
from triodist.rules import selectors as S
from triodist.rules.chain import RuleChain
from triodist.rules.matchers import DNSNameSet, NetmaskGroup, SuffixMatchNode
from triodist.server import Listen, ServerConfig
from triodist.util.luavalues import describe as _describe
from triodist.wire.message import ComboAddress, DNSName, as_name

if TYPE_CHECKING:
    from triodist.asyncproc.registry import AsynchronousObject
    from triodist.cache.packetcache import PacketCache

log = logging.getLogger("triodist.config")


class ConfigError(Exception):
    """A configuration asked for something invalid; the message says what."""


def _text(value: Any) -> str:
    """A Lua string (bytes carried as latin-1) shown as the UTF-8 text it was."""
    text = str(value)
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _options(value: Any, function: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and not value:
        return {}
    raise ConfigError(f"{function}: expected a table of options, got {_describe(value)}")


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


# Options of newServer that a later release of triodist implements (health checks,
# outgoing TLS/DoH, ...): accepted now, with one warning naming them.
_SERVER_LATER = {
    "tls",
    "subjectName",
    "subjectAddr",
    "validateCertificates",
    "caStore",
    "ciphers",
    "ciphersTLS13",
    "dohPath",
    "addXPF",
    "useProxyProtocol",
    "useClientSubnet",
    "disableZeroScope",
    "ipBindAddrNoPort",
    "source",
    "reconnectOnUp",
    "maxInFlight",
    "retries",
    "xskSocket",
    "addXForwardedHeaders",
    "releaseBuffers",
    "enableRenegotiation",
    "proxyProtocolAdvertiseTLS",
    "tcpFastOpen",
    "tcpConnectTimeout",
    "tcpRecvTimeout",
    "tcpSendTimeout",
    "autoUpgrade",
    "autoUpgradeInterval",
    "autoUpgradeKeep",
    "autoUpgradePool",
    "autoUpgradeDoHKey",
    "ecsPrefixLength",
    "healthCheckProxyProtocol",
}
_SERVER_KNOWN = {
    "address",
    "maxConcurrentTCPConnections",
    "sockets",
    "name",
    "pool",
    "weight",
    "order",
    "udpTimeout",
    "tcpOnly",
    "qps",
    "id",
    # health checks (triodist/backends/health.py)
    "checkName",
    "checkType",
    "checkClass",
    "checkInterval",
    "checkTimeout",
    "checkFunction",
    "maxCheckFailures",
    "rise",
    "mustResolve",
    "setCD",
    "checkTCP",
    "healthCheckMode",
    "lazyHealthCheckFailedInterval",
    "lazyHealthCheckMode",
    "lazyHealthCheckSampleSize",
    "lazyHealthCheckMinSampleCount",
    "lazyHealthCheckThreshold",
    "lazyHealthCheckUseExponentialBackOff",
    "lazyHealthCheckMaxBackOff",
}

_LISTEN_KNOWN = {
    "reusePort",
    "doTCP",
    "tcpFastOpenQueueSize",
    "interface",
    "cpus",
    "maxInFlight",
    "maxConcurrentTCPConnections",
    "tcpListenQueueSize",
    "enableProxyProtocol",
    "xskSocket",
    "tcpFastOpenSize",
}


class ConfigAPI:
    """Turns dnsdist configuration calls into a ``ServerConfig``."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.warned: set[str] = set()
        #: What the configuration asked for that triodist ignores (not supported yet), in
        #: the order met: check-config ends with it.
        self.ignored: list[str] = []
        self.local_set = False
        self.out = sys.stdout
        #: Loading again for a reload: the reload says which servers it adds and removes.
        self.reloading = False

    # --- helpers ----------------------------------------------------------------------

    def warn_once(self, key: str, message: str, *, ignored: str | None = None) -> None:
        """Log ``message`` the first time ``key`` is met; ``ignored``: what it says is
        ignored, for the summary that check-config ends with."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s", message)
            if ignored is not None:
                self.ignored.append(ignored)

    @property
    def chains(self) -> Chains:
        return self.config.chains

    # --- listeners and ACL -------------------------------------------------------------

    def setLocal(self, address: str, options: Any = None) -> None:
        self.config.listens.clear()
        self.addLocal(address, options)

    def addLocal(self, address: str, options: Any = None) -> None:
        if isinstance(options, bool):  # dnsdist < 1.3: addLocal(addr, doTCP)
            opts: dict[str, Any] = {"doTCP": options}
        else:
            opts = _options(options, "addLocal")
        for key in opts:
            if key not in _LISTEN_KNOWN:
                self.warn_once(
                    f"addLocal.{key}",
                    f"addLocal: unknown option '{key}' ignored",
                    ignored=f"addLocal option '{key}'",
                )
        if opts.get("interface"):
            # Not quiet: a listener meant for one interface would answer on every one.
            self.warn_once(
                "addLocal.interface",
                "addLocal: option 'interface' not supported by triodist yet, ignored: "
                f"{address} is listened on from every interface",
                ignored="addLocal option 'interface'",
            )
        if not isinstance(address, str):
            raise ConfigError(f"addLocal: expected an address, got {_describe(address)}")
        try:
            ComboAddress.parse(str(address), 53)
        except ValueError as exc:
            raise ConfigError(f"addLocal: invalid address '{address}': {exc}") from exc
        self.config.listens.append(
            Listen(
                str(address),
                reuse_port=bool(opts.get("reusePort", False)),
                tcp=bool(opts.get("doTCP", True)),
                max_tcp_connections=_count_option(opts, "maxConcurrentTCPConnections"),
                max_in_flight=_count_option(opts, "maxInFlight"),
            )
        )
        self.local_set = True

    def setACL(self, masks: Any) -> None:
        if isinstance(masks, NetmaskGroup):
            self.config.acl = NetmaskGroup()
            self.config.acl.addNMG(masks)
            return
        if masks is None:  # dnsdist refuses nil; an empty ACL would silently refuse everyone
            raise ConfigError("setACL: expected a netmask or a table of netmasks, got nil")
        acl = NetmaskGroup()
        for mask in _list(masks):
            acl.addMask(self._mask(mask, "setACL"))
        self.config.acl = acl

    def addACL(self, mask: Any) -> None:
        self.config.acl.addMask(self._mask(mask, "addACL"))

    def _mask(self, mask: Any, function: str) -> str:
        if not isinstance(mask, str):
            raise ConfigError(f"{function}: expected a netmask, got {_describe(mask)}")
        try:
            probe = NetmaskGroup()
            probe.addMask(str(mask))
        except ValueError as exc:
            raise ConfigError(f"{function}: invalid netmask '{mask}'") from exc
        return str(mask)

    # --- servers, pools, policies ------------------------------------------------------

    def newServer(self, spec: Any, qps: Any = None, *rest: Any) -> Server:
        if isinstance(spec, str):
            opts: dict[str, Any] = {"address": spec}
            if qps is not None:
                opts["qps"] = qps
            if rest:  # newServer(addr, qps, order, pools...) in very old configurations
                opts["order"] = rest[0]
        else:
            opts = dict(_options(spec, "newServer"))
        if "address" not in opts:
            raise ConfigError("newServer: no 'address' given")
        later = sorted(k for k in opts if k in _SERVER_LATER)
        unknown = sorted(k for k in opts if k not in _SERVER_LATER and k not in _SERVER_KNOWN)
        if later:
            self.warn_once(
                "newServer." + ",".join(later),
                "newServer: option(s) not supported by triodist yet, ignored: " + ", ".join(later),
                ignored="newServer option(s) " + ", ".join(f"'{k}'" for k in later),
            )
        for key in unknown:
            self.warn_once(
                f"newServer.{key}",
                f"newServer: unknown option '{key}' ignored",
                ignored=f"newServer option '{key}'",
            )
        pools = opts.get("pool", "")
        pool_names = [str(p) for p in _list(pools)] or [""]
        try:
            mode, check_mode, health = HealthCheckConfig.from_options(opts)
        except ValueError as exc:
            raise ConfigError(f"newServer: {exc}") from exc
        weight = _number_option(opts, "weight", 1, minimum=1, integer=True)
        order = _number_option(opts, "order", 1, integer=True)
        udp_timeout = _number_option(opts, "udpTimeout", 2, minimum=0.001)
        qps_limit = _number_option(opts, "qps", 0, minimum=0)
        max_tcp = _number_option(
            opts,
            "maxConcurrentTCPConnections",
            DEFAULT_MAX_TCP_CONNECTIONS,
            minimum=0,
            integer=True,
        )
        sockets = int(_number_option(opts, "sockets", 1, minimum=0, integer=True))
        if sockets == 0:
            log.warning("Dismissing invalid number of sockets '0', using 1 instead")  # dnsdist's
        elif sockets > MAX_UDP_SOCKETS:
            log.warning(
                "newServer: sockets=%d is over the bound, using %d", sockets, MAX_UDP_SOCKETS
            )
        tcp_only = opts.get("tcpOnly", False)
        if not isinstance(tcp_only, bool):
            raise ConfigError(
                f"newServer: 'tcpOnly' must be true or false, got {_describe(tcp_only)}"
            )
        try:
            server = Server(
                str(opts["address"]),
                name=str(opts.get("name", "")),
                pools=pool_names,
                weight=int(weight),
                order=int(order),
                udp_timeout=udp_timeout,
                tcp_only=tcp_only,
                qps=qps_limit,
                max_outstanding=self.config.settings.max_udp_outstanding,
                max_tcp_connections=int(max_tcp),
                udp_sockets=sockets,
                randomize_ids=self.config.settings.randomize_udp_ids,
                randomize_sockets=self.config.settings.randomize_outgoing_sockets,
                mode=mode,
                health_check_mode=check_mode,
                health=health,
            )
        except ValueError as exc:
            raise ConfigError(f"newServer: invalid address '{opts['address']}': {exc}") from exc
        if opts.get("id"):
            # The server's identity: chashed places its points from it, getServer finds it.
            server.id = str(opts["id"])
        try:
            # While running, its sockets open here: a socket the kernel refuses leaves
            # no server behind (all or nothing, as a reload).
            self.config.routing.add_server(server)
        except OSError as exc:
            raise ConfigError(f"newServer: {exc.strerror or exc}") from exc
        if not self.reloading:
            log.info("Added downstream server %s", server.address.toStringWithPort())
        return server

    # Servers are numbered in ascending ``order`` (ties: in the order they were added), as
    # dnsdist numbers them: getServer(n), rmServer(n), getServers() and showServers() agree.

    def _numbered_servers(self) -> list[Server]:
        return sorted(self.config.routing.servers, key=lambda s: s.order)

    def _find_server(self, key: Any, function: str) -> Server:
        """A server by number (from 0), by name, or by its ``id``; else a ConfigError."""
        servers = self._numbered_servers()
        if isinstance(key, Server):
            if key in servers:
                return key
            raise ConfigError(f"{function}: the server {key} is not configured (any more)")
        if isinstance(key, int | float) and not isinstance(key, bool):
            if float(key).is_integer() and 0 <= key < len(servers):
                return servers[int(key)]
            count = len(servers)
            raise ConfigError(
                f"{function}: no server number {key:g} (there are {count}, numbered from 0)"
            )
        text = _text(key)
        for server in servers:
            if text in (server.name, server_identity(server)):
                return server
        raise ConfigError(f"{function}: no server named '{text}'")

    def getServer(self, key: Any) -> Server:
        """dnsdist's getServer: by number as shown by showServers() (from 0), or by name
        (dnsdist takes a UUID string; a server's ``id``, when it has one, works too)."""
        return self._find_server(key, "getServer")

    def getServers(self) -> list[Server]:
        """Every server, numbered as in showServers(); a Lua array (from 1) in Lua."""
        return self._numbered_servers()

    def rmServer(self, key: Any) -> None:
        server = self._find_server(key, "rmServer")
        self.config.routing.remove_server(server)

    @staticmethod
    def _columns(cells: list[tuple[int, str]]) -> str:
        """One line of a dnsdist console table: cells separated by a space, a cell with a
        tab stop starting no earlier than that column (as boost::format's ``%|Nt|``)."""
        line = cells[0][1]
        for stop, text in cells[1:]:
            line += " "
            if len(line) < stop:
                line += " " * (stop - len(line))
            line += text
        return line

    def showServers(self, options: Any = None) -> None:
        """dnsdist's table, column for column.  ``Qps`` and ``Drate`` (rates dnsdist
        measures every second) are shown as 0.0: triodist does not measure them yet."""
        opts = _options(options, "showServers")
        uuids = bool(opts.get("showUUIDs", False))
        # Tab stops of dnsdist's two layouts, after the leading columns.
        stops = (
            (62, 92, 88, 103, 106, 115, 117, 123, 128, 146, 152, 0)
            if uuids
            else (25, 55, 51, 66, 69, 78, 80, 86, 91, 109, 115, 0)
        )

        def row(lead: list[str], rest: list[str]) -> str:
            return self._columns(
                [(0, lead[0]), *((0, t) for t in lead[1:]), *zip(stops, rest, strict=True)]
            )

        def lead(number: str, name: str, uuid: str) -> list[str]:
            cells = [f"{number:<3}", f"{name:<20.20}"]
            return [cells[0], f"{uuid:<36}", cells[1]] if uuids else cells

        header = ["Address", "State", "Qps", "Qlim", "Ord", "Wt", "Queries", "Drops"]
        header += ["Drate", "Lat", "Outstanding", "Pools"]
        widths = (0, 5, 7, 7, 3, 2, 10, 7, 5, 5, 11, 0)
        titles = [f"{h:>{w}}" for h, w in zip(header, widths, strict=True)]
        lines = [row(lead("#", "Name", "UUID"), titles)]
        total_queries = total_drops = 0
        for number, s in enumerate(self._numbered_servers()):
            total_queries += s.queries
            total_drops += s.drops
            values = [
                s.address.toStringWithPort(),
                f"{s.status:>5}",
                f"{0.0:7.1f}",
                f"{int(s.qps):7d}",
                f"{s.order:3d}",
                f"{s.weight:2d}",
                f"{s.queries:10d}",
                f"{s.drops:7d}",
                f"{0.0:5.1f}",
                f"{s.latency_us / 1000:5.1f}",  # milliseconds, as dnsdist shows them
                f"{s.outstanding:11d}",
                " ".join(sorted(p for p in s.pools if p)),
            ]
            identity = getattr(s, "id", "")
            lines.append(row(lead(str(number), s.name, str(identity or "")), values))
        totals = ["", " " * 5, f"{0.0:7.1f}", " " * 7, " " * 3, " " * 2]
        totals += [f"{total_queries:10d}", f"{total_drops:7d}", " " * 5, " " * 5, " " * 11, ""]
        lines.append(row(lead("All", "", ""), totals))
        print("\n".join(lines), file=self.out)

    @staticmethod
    def _pool_name(name: Any) -> str:
        return "" if name is None else _text(name)

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
            raise ConfigError(f"{function}: expected a pool name, got {_describe(name)}")
        return _text(name)

    def getPool(self, name: Any) -> Pool:
        """The pool named ``name`` ("" is the default pool), created if missing."""
        pool = self.config.routing.pool(self._given_pool_name(name, "getPool"))
        # ``pool:getServers()`` gives Lua an array of this configuration's Lua state.
        pool.lua_array = self.lua_array
        return pool

    def getPoolServers(self, name: Any) -> list[Server]:
        """The pool's servers, up or down, in ``order``; an error if there is no such pool
        (as dnsdist)."""
        wanted = self._given_pool_name(name, "getPoolServers")
        pool = self._pools().get(wanted)
        if pool is None:
            raise ConfigError(f"getPoolServers: no pool named '{wanted}'")
        return pool.servers

    def getPoolNames(self) -> list[str]:
        return sorted(self._pools())

    def showPools(self) -> None:
        """dnsdist's table: Name, Cache, ServerPolicy, Servers (``name address``, ...)."""
        default = self.config.routing.policy.name

        def row(name: str, cache: str, policy: str, servers: str) -> str:
            return self._columns(
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

    #: Builds a Lua array from a list; set by the Lua runtime, so that Lua policies get
    #: Lua arrays (``#servers``).  Without it (Python use) they get the list itself.
    lua_array: Callable[[list[Server]], Any] | None = None

    def _policy(self, policy: Any, function: str) -> ServerPolicy:
        if not isinstance(policy, ServerPolicy):
            raise ConfigError(f"{function}: expected a server policy, got {_describe(policy)}")
        return policy

    def setServerPolicy(self, policy: Any) -> None:
        self.config.routing.policy = self._policy(policy, "setServerPolicy")

    def setPoolServerPolicy(self, policy: Any, pool: Any) -> None:
        chosen = self._policy(policy, "setPoolServerPolicy")
        name = self._pool_name(pool)
        self.config.routing.pool(name).policy = chosen
        log.debug("Setting pool '%s' server selection policy to %s", name, chosen.name)

    def showServerPolicy(self) -> None:
        print(self.config.routing.policy.name, file=self.out)

    def showPoolServerPolicy(self, pool: Any) -> None:
        found = self._pools().get(self._pool_name(pool))
        if found is None:
            raise ConfigError(f"showPoolServerPolicy: no pool named '{self._pool_name(pool)}'")
        print((found.policy or self.config.routing.policy).name, file=self.out)

    def newServerPolicy(self, name: Any, func: Any, function: str = "newServerPolicy") -> Any:
        """A policy from a Lua function(servers, dq); see ``LuaServerPolicy`` for what it
        is given (every server of the pool, up or down) and may return."""
        if not callable(func):
            raise ConfigError(f"{function}: expected a function, got {_describe(func)}")
        return LuaServerPolicy(_text(name), func, self.lua_array)

    def setServerPolicyLua(self, name: Any, func: Any) -> None:
        self.setServerPolicy(self.newServerPolicy(name, func, "setServerPolicyLua"))

    def setPoolServerPolicyLua(self, name: Any, func: Any, pool: Any) -> None:
        self.setPoolServerPolicy(self.newServerPolicy(name, func, "setPoolServerPolicyLua"), pool)

    def setServFailWhenNoServer(self, on: Any) -> None:
        self.config.settings.servfail_when_no_server = bool(on)

    def setRoundRobinFailOnNoServer(self, on: Any) -> None:
        self.policy_settings.roundrobin_fail_on_no_server = bool(on)

    def setWHashedPertubation(self, value: Any, function: str = "setWHashedPertubation") -> None:
        """The seed of the name hash of whashed and chashed (dnsdist's spelling; random
        until set, as in dnsdist)."""
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{function}: expected a number, got {_describe(value)}") from exc
        if not 0 <= number <= 0xFFFFFFFF or number != float(value):
            raise ConfigError(f"{function}: {value} is not an integer from 0 to 4294967295")
        self.policy_settings.hash_perturbation = number

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
            log.error("Invalid value passed to %s()!", function)
            return None
        return factor

    def setConsistentHashingBalancingFactor(self, value: Any) -> None:
        factor = self._balancing_factor(value, "setConsistentHashingBalancingFactor")
        if factor is not None:
            self.policy_settings.consistent_hash_balancing_factor = factor

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

    def PoolAvailableRule(self, pool: Any) -> S.PoolAvailableRule:
        """Matches while the pool has a server up; reads the pools when queries come."""
        return S.PoolAvailableRule(self._pool_name(pool), self._pool_lookup)

    def PoolOutstandingRule(self, pool: Any, limit: Any) -> S.PoolOutstandingRule:
        try:
            bound = int(limit)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"PoolOutstandingRule: invalid limit {_describe(limit)}") from exc
        return S.PoolOutstandingRule(self._pool_name(pool), bound, self._pool_lookup)

    # --- tunables that apply ------------------------------------------------------------

    def setMaxTCPConnectionsPerClient(self, n: Any) -> None:
        self.config.settings.max_tcp_connections_per_client = _whole(
            n, "setMaxTCPConnectionsPerClient", 0
        )

    def setMaxTCPUnsentBytes(self, n: Any) -> None:
        """Bytes of answers a TCP connection may have waiting to be written (triodist's
        own; dnsdist keeps them all). Over it the connection is closed and counted
        (``tcp-unsent-overflows``); at least one largest DNS message (65,537 bytes)."""
        self.config.settings.max_tcp_unsent_bytes = _whole(n, "setMaxTCPUnsentBytes", 65_537)

    def setMaxTCPQueriesPerConnection(self, n: Any) -> None:
        self.config.settings.max_tcp_queries_per_connection = int(n)

    def setMaxTCPConnectionDuration(self, n: Any) -> None:
        self.config.settings.max_tcp_connection_duration = float(n)

    def setMaxUDPOutstanding(self, n: Any) -> None:
        """Queries outstanding over UDP per backend, 1 to 65,535 (its query IDs). Over it,
        a query for that backend is dropped and counted; policies skip a full backend."""
        count = int(_non_negative(n, "setMaxUDPOutstanding"))
        if not 1 <= count <= 65_535:
            raise ConfigError(f"setMaxUDPOutstanding: expected 1 to 65535, got {_describe(n)}")
        self.config.settings.max_udp_outstanding = count
        for server in self.config.routing.servers:
            server.max_outstanding = count

    def setRandomizedIdsOverUDP(self, value: Any) -> None:
        """Each query over UDP gets a random ID among those not in flight on its socket,
        instead of the one after the last (dnsdist 1.8's setting; default false)."""
        on = _boolean(value, "setRandomizedIdsOverUDP")
        self.config.settings.randomize_udp_ids = on
        for server in self.config.routing.servers:
            server.randomize_ids = on

    def setRandomizedOutgoingSockets(self, value: Any) -> None:
        """Each query over UDP goes out on a random socket of its server's pool
        (``newServer``'s ``sockets``) instead of the next in turn (dnsdist 1.8's setting)."""
        on = _boolean(value, "setRandomizedOutgoingSockets")
        self.config.settings.randomize_outgoing_sockets = on
        for server in self.config.routing.servers:
            server.randomize_sockets = on

    def configuration_ran(self) -> None:
        """Warnings that only the whole configuration file can give (it ran without error):
        a setting that does nothing without another, whichever line comes first."""
        config = self.config
        if config.settings.randomize_outgoing_sockets and not any(
            server.udp_sockets > 1 for server in config.routing.servers
        ):
            self.warn_once(
                "setRandomizedOutgoingSockets.sockets",
                "setRandomizedOutgoingSockets(true): no server has more than one socket, so "
                "each still sends from a single source port; give servers a pool of them "
                "with newServer's sockets=N (N > 1)",
                ignored="setRandomizedOutgoingSockets",
            )

    def setMaxUDPInFlight(self, n: Any) -> None:
        """Queries waiting per UDP frontend (triodist's own; dnsdist has no such bound).
        Over it, answers that need no wait still go out; a query that would wait is
        dropped and counted (``frontend-overload-drops``)."""
        count = int(_non_negative(n, "setMaxUDPInFlight"))
        if count < 1:
            raise ConfigError(f"setMaxUDPInFlight: expected at least 1, got {_describe(n)}")
        self.config.settings.max_udp_in_flight = count

    def setMaxUDPAnswerSize(self, n: Any) -> None:
        """The largest UDP answer sent whatever a client's EDNS payload size says
        (triodist's own), 512 to 65,535; larger answers go out truncated."""
        size = _whole(n, "setMaxUDPAnswerSize", 512)
        if size > 65_535:
            raise ConfigError(f"setMaxUDPAnswerSize: expected 512 to 65535, got {_describe(n)}")
        self.config.settings.max_udp_answer_size = size

    def setUDPSocketBufferSizes(self, recv: Any, send: Any) -> None:
        """SO_RCVBUF and SO_SNDBUF of the frontends' UDP sockets, 0 to 2**32 - 1 bytes as
        dnsdist (0 keeps the system's value), set as they are bound; at run time the
        sockets are bound already, and this says so and changes nothing (as dnsdist)."""
        if self.config.start_endpoint_writer is not None:  # serving: the console
            print("setUDPSocketBufferSizes cannot be used at runtime!", file=self.out)
            return
        sizes = []
        for value in (recv, send):
            size = _whole(value, "setUDPSocketBufferSizes", 0)
            if size > 2**32 - 1:
                raise ConfigError(
                    f"setUDPSocketBufferSizes: expected 0 to 4294967295, got {_describe(value)}"
                )
            sizes.append(size)
        self.config.settings.udp_buffer_sizes = (sizes[0], sizes[1])

    def setTCPRecvTimeout(self, n: Any) -> None:
        self.config.settings.tcp_recv_timeout = float(n)

    def setTCPSendTimeout(self, n: Any) -> None:
        self.config.settings.tcp_send_timeout = float(n)

    def dumpStats(self) -> None:
        """The server's counters, in two columns as dnsdist prints them (with ``--workers``,
        the console shows their sum over the workers)."""
        print(format_stats(self.config.stats or {}), end="", file=self.out)

    # --- the ring buffers (ops/rings.py) ---------------------------------------------------

    def setRingBuffersSize(self, n: Any, shards: Any = None) -> None:
        """Entries kept in each ring (dnsdist's default 10,000; the shards are dnsdist's
        locking detail, accepted and ignored)."""
        self.config.rings.resize(_whole(n, "setRingBuffersSize", 1))

    def getTopQueries(self, n: Any = 10, labels: Any = None) -> list[list[Any]]:
        names = rings.count_names(((e[2], 0) for e in self.config.rings.queries), _labels(labels))
        return [list(row) for row in rings.top(names, _whole(n, "getTopQueries", 0))]

    def topQueries(self, n: Any = 10, labels: Any = None) -> None:
        """The most frequent names in the query ring, then the rest."""
        rows = [tuple(row) for row in self.getTopQueries(n, labels)]
        print(rings.format_top(rows), end="", file=self.out)

    def topClients(self, n: Any = 10) -> None:
        """The clients that sent most of the queries in the ring, then the rest."""
        clients = Counter(entry[1] for entry in self.config.rings.queries)
        rows = rings.top(clients, _whole(n, "topClients", 0))
        print(rings.format_top(rows), end="", file=self.out)

    def _top_responses(
        self, n: Any, labels: Any, keep: rings.ResponseFilter, function: str
    ) -> list[list[Any]]:
        entries = (
            (entry.qname_wire, 0) for entry in self.config.rings.response_entries() if keep(entry)
        )
        names = rings.count_names(entries, _labels(labels))
        return [list(row) for row in rings.top(names, _whole(n, function, 0))]

    def getTopResponses(self, n: Any = 10, kind: Any = 0, labels: Any = None) -> list[list[Any]]:
        rcode = _whole(kind, "getTopResponses", 0)
        return self._top_responses(n, labels, lambda e: e.rcode == rcode, "getTopResponses")

    def topResponses(self, n: Any = 10, kind: Any = 0, labels: Any = None) -> None:
        """The names most often answered with rcode ``kind`` (0: NOERROR) by the backends."""
        rows = [tuple(row) for row in self.getTopResponses(n, kind, labels)]
        print(rings.format_top(rows), end="", file=self.out)

    def getSlowResponses(
        self, n: Any = 10, msec: Any = 0, labels: Any = None, timeouts: Any = False
    ) -> list[list[Any]]:
        limit = _non_negative(msec, "getSlowResponses") * 1000

        def slow(entry: rings.ResponseEntry) -> bool:
            if timeouts:
                return entry.usec == rings.TIMED_OUT
            return entry.usec != rings.TIMED_OUT and entry.usec > limit

        return self._top_responses(n, labels, slow, "getSlowResponses")

    def topSlow(self, n: Any = 10, msec: Any = 500, labels: Any = None) -> None:
        """The names whose backend replies took over ``msec`` (500) milliseconds."""
        rows = [tuple(row) for row in self.getSlowResponses(n, msec, labels)]
        print(rings.format_top(rows), end="", file=self.out)

    def getResponseRing(self) -> list[dict[str, Any]]:
        return [
            {
                "name": rings.name_of(entry.qname_wire),
                "qtype": entry.qtype,
                "rcode": entry.rcode,
                "usec": entry.usec,
            }
            for entry in self.config.rings.response_entries()
        ]

    def showResponseLatency(self) -> None:
        """The backends' response times in the ring: the average and a histogram."""
        histogram = rings.latency_histogram(self.config.rings.response_entries())
        print(histogram, end="", file=self.out)

    def reloadConfig(self) -> bool:
        """Run the configuration file again and, if it loads, serve with it (keeping the
        packet caches, the suspended objects and the counters: docs/configuration.md,
        "Reloading"). False, with the error printed, when it does not load."""
        reload = self.config.reload
        if reload is None:
            raise ConfigError("reloadConfig: only a running server can reload (the console)")
        error = reload()
        if error is not None:
            print(f"Reloading the configuration failed, nothing changed: {error}", file=self.out)
            return False
        return True

    def setMaxTCPConnections(self, n: Any) -> None:
        """TCP connections at once over every listener (triodist's own; default 10,000).
        Over it a new connection is closed at once and counted (``tcp-overload-drops``)."""
        self.config.settings.max_tcp_connections = _whole(n, "setMaxTCPConnections", 1)

    def setVerbose(self, on: Any = True) -> None:
        if on:
            logging.getLogger("triodist").setLevel(logging.DEBUG)

    # --- rules ------------------------------------------------------------------------

    def _add(self, chain: RuleChain, selector: Any, action: Any, options: Any, fn: str) -> None:
        placeholder = _placeholder([selector, action])
        if placeholder is not None:
            # A selector or action triodist lacks: the whole rule is ignored, never half-applied.
            name = placeholder._name
            self.warn_once(
                f"{fn}.{name}",
                f"{fn}: rule using {name} ignored (not supported yet)",
                ignored=f"{fn} rule(s) using {name}",
            )
            return
        want = A.ResponseActionBase if chain.kind != "query" else A.QueryAction
        if not isinstance(action, want):
            kind = "a response action" if want is A.ResponseActionBase else "a query action"
            raise ConfigError(f"{fn}: expected {kind}, got {_describe(action)}")
        try:
            sel = S.selector_from(selector)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{fn}: {exc}") from exc
        opts = _options(options, fn)
        opened: list[A.Logger] = []
        if self.chains.files is not None:
            # Added to a running server (the console, maintenance()): its file opens now,
            # shared with the rules that write to it already (removed ones included), or
            # appended to if the server had it open before; the rule is not added if not.
            try:
                opened = A.open_loggers(A.loggers_of([action]), self.chains.files)
            except OSError as exc:
                raise ConfigError(f"{fn}: {exc}") from exc
        rule = chain.add(
            sel, action, name=str(opts.get("name", "")), uuid=str(opts.get("uuid", ""))
        )
        rule.opened = opened

    def _rule_functions(self, chain: RuleChain, infix: str) -> dict[str, Callable[..., Any]]:
        def add(selector: Any, action: Any, options: Any = None) -> None:
            self._add(chain, selector, action, options, f"add{infix}Action")

        def show(options: Any = None) -> None:
            opts = _options(options, f"show{infix}Rules")
            print(
                chain.show(
                    bool(opts.get("showUUIDs", False)), int(opts.get("truncateRuleWidth", 60))
                ),
                file=self.out,
            )

        def rm(key: Any) -> None:
            try:
                chain.remove(key)
            except (IndexError, KeyError) as exc:
                raise ConfigError(str(exc).strip("'\"")) from exc

        def mv(source: Any, destination: Any) -> None:
            chain.move(int(source), int(destination))

        return {
            f"add{infix}Action": add,
            f"show{infix}Rules": show,
            f"rm{infix}Rule": rm,
            f"mv{infix}Rule": mv,
            f"mv{infix}RuleToTop": chain.top,
            f"clear{infix}Rules": chain.clear,
        }

    # --- packet cache -----------------------------------------------------------------

    def newPacketCache(self, max_entries: Any, *rest: Any) -> PacketCache:
        if rest and not isinstance(rest[0], dict | list | type(None)):
            # dnsdist < 1.4: newPacketCache(maxEntries, maxTTL, minTTL, temporaryFailureTTL,
            # staleTTL, dontAge, numberOfShards, deferrableInsertLock, maxNegativeTTL, parseECS)
            opts = {
                name: value
                for name, value in zip(_PACKET_CACHE_POSITIONAL, rest, strict=False)
                if value is not None
            }
        else:
            opts = _options(rest[0] if rest else None, "newPacketCache")
        from triodist.cache.packetcache import PacketCache

        try:
            cache = PacketCache.from_lua(max_entries, opts)
        except ValueError as exc:
            raise ConfigError(f"newPacketCache: {exc}") from exc
        # purgeExpired(), dump() and the like called from Lua use the server's clock.
        cache.clock = _server_clock
        return cache

    def setStaleCacheEntriesTTL(self, ttl: Any) -> None:
        self.config.settings.stale_cache_entries_ttl = _non_negative(ttl, "setStaleCacheEntriesTTL")

    def setCacheCleaningDelay(self, delay: Any) -> None:
        self.config.settings.cache_cleaning_delay = max(
            1.0, _non_negative(delay, "setCacheCleaningDelay")
        )

    def setCacheCleaningPercentage(self, percentage: Any) -> None:
        value = _non_negative(percentage, "setCacheCleaningPercentage")
        self.config.settings.cache_cleaning_percentage = min(100.0, value)

    # --- asynchronous processing -------------------------------------------------------

    def getAsynchronousObject(self, async_id: Any, query_id: Any) -> AsynchronousObject:
        # A missing key is a Lua error naming it (raised by the registry).
        return self.config.async_registry.take(async_id, query_id)

    def setAsyncTimeoutPolicy(self, policy: Any) -> None:
        """What a suspended object that times out does: "continue" (dnsdist's behaviour,
        the default), "servfail" or "drop" (fail closed)."""
        value = str(policy).lower()
        if value not in ("continue", "servfail", "drop"):
            raise ConfigError(
                "setAsyncTimeoutPolicy: expected 'continue', 'servfail' or 'drop', "
                f"got {_describe(policy)}"
            )
        self.config.async_registry.timeout_policy = value  # type: ignore[assignment]

    def setMaxSuspended(self, count: Any) -> None:
        """The most queries and responses held at once; over it ``suspend`` returns false."""
        self.config.async_registry.max_suspended = int(_non_negative(count, "setMaxSuspended"))

    def showSuspended(self) -> None:
        print(self.config.async_registry.show(), file=self.out)

    # --- network endpoints ------------------------------------------------------------

    def newNetworkEndpoint(self, path: Any) -> NetworkEndpoint:
        """A unix datagram socket connected to ``path``; a missing peer gives an endpoint
        whose ``isValid()`` is false and whose ``send()`` returns false.  The server runs
        its writer (what the peer cannot take at once waits in a bounded queue)."""
        config = self.config
        try:
            endpoint = NetworkEndpoint(path, owner=config, bound=config.endpoint_queue)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        config.network_endpoints.add(endpoint)
        if config.start_endpoint_writer is not None:  # made while serving
            config.start_endpoint_writer(endpoint)
        return endpoint

    def setMaxNetworkEndpointQueue(self, messages: Any, size: Any = None) -> None:
        """What each network endpoint keeps for a component that has not read yet
        (triodist's own): at most ``messages`` messages and ``size`` bytes (defaults
        10,000 and 16 MiB); over it ``send()`` returns false (``async-send-overflows``)."""
        bound = self.config.endpoint_queue
        bound.messages = _whole(messages, "setMaxNetworkEndpointQueue", 0)
        if size is not None:
            bound.bytes = _whole(size, "setMaxNetworkEndpointQueue", 0)

    def newNetworkListener(self) -> NetworkListener:
        """Listening unix datagram sockets; the server runs the started ones."""
        listener = NetworkListener(self.config)  # counts into the server's stats
        self.config.network_listeners.append(listener)
        return listener

    # --- logging ----------------------------------------------------------------------

    def infolog(self, message: Any) -> None:
        log.info("%s", _text(message))

    def warnlog(self, message: Any) -> None:
        log.warning("%s", _text(message))

    def errlog(self, message: Any) -> None:
        log.error("%s", _text(message))

    def vinfolog(self, message: Any) -> None:
        log.debug("%s", _text(message))

    # --- at the console ---------------------------------------------------------------

    def showVersion(self) -> None:
        """Print the version: triodist's own, never dnsdist's."""
        print(f"triodist {__version__}", file=self.out)

    def help(self, command: Any = None) -> None:
        """help(): every function, one a line; help("name"): that one (as dnsdist's)."""
        entries = _help_entries(self.functions())
        if command is None:
            for name in sorted(entries, key=str.lower):
                print(entries[name], file=self.out)
            print(
                "Functions of dnsdist that triodist accepts without supporting them yet are "
                "not listed; docs/configuration.md has every function.",
                file=self.out,
            )
        elif _text(command) in entries:
            print(entries[_text(command)], file=self.out)
        elif _text(command) in DNSDIST_GLOBALS:
            print(f"{_text(command)}: not supported by triodist yet", file=self.out)
        else:
            print(f"Nothing found for {_text(command)}", file=self.out)

    # --- the function table -----------------------------------------------------------

    def functions(self) -> dict[str, Any]:
        """Every global a configuration can call, by dnsdist's name."""
        fns: dict[str, Any] = {}
        for name in DNSDIST_GLOBALS - DNSDIST_USER_HOOKS:
            fns[name] = self._not_yet(name, quiet=name in QUIET_TUNABLES)
        fns.update(_CONSTRUCTORS)
        # The policies are values in Lua (setServerPolicy(chashed)), this configuration's own.
        fns.update(self.policies)
        for name in (
            "setLocal",
            "addLocal",
            "setACL",
            "addACL",
            "newServer",
            "getServer",
            "getServers",
            "rmServer",
            "showServers",
            "getPool",
            "getPoolServers",
            "getPoolNames",
            "showPools",
            "setServerPolicy",
            "setPoolServerPolicy",
            "showServerPolicy",
            "showPoolServerPolicy",
            "newServerPolicy",
            "setServerPolicyLua",
            "setPoolServerPolicyLua",
            "setServFailWhenNoServer",
            "setRoundRobinFailOnNoServer",
            "setWHashedPertubation",
            "setWHashedPerturbation",
            "setConsistentHashingBalancingFactor",
            "setWeightedBalancingFactor",
            "PoolAvailableRule",
            "PoolOutstandingRule",
            "setMaxTCPConnectionsPerClient",
            "setMaxTCPQueriesPerConnection",
            "setMaxTCPUnsentBytes",
            "setMaxTCPConnectionDuration",
            "setMaxUDPOutstanding",
            "setRandomizedIdsOverUDP",
            "setRandomizedOutgoingSockets",
            "setMaxUDPInFlight",
            "setMaxUDPAnswerSize",
            "setMaxTCPConnections",
            "reloadConfig",
            "dumpStats",
            "setRingBuffersSize",
            "getTopQueries",
            "topQueries",
            "topClients",
            "getTopResponses",
            "topResponses",
            "getSlowResponses",
            "topSlow",
            "getResponseRing",
            "showResponseLatency",
            "setTCPRecvTimeout",
            "setTCPSendTimeout",
            "setUDPSocketBufferSizes",
            "setVerbose",
            "newPacketCache",
            "setStaleCacheEntriesTTL",
            "setCacheCleaningDelay",
            "setCacheCleaningPercentage",
            "getAsynchronousObject",
            "setAsyncTimeoutPolicy",
            "setMaxSuspended",
            "showSuspended",
            "newNetworkEndpoint",
            "newNetworkListener",
            "setMaxNetworkEndpointQueue",
            "infolog",
            "warnlog",
            "errlog",
            "vinfolog",
            "showVersion",
            "help",
        ):
            fns[name] = getattr(self, name)
        fns.update(self._rule_functions(self.chains.queries, ""))
        fns.update(self._rule_functions(self.chains.responses, "Response"))
        fns.update(self._rule_functions(self.chains.self_answered, "SelfAnsweredResponse"))
        fns.update(self._rule_functions(self.chains.cache_hit, "CacheHitResponse"))
        fns.update(self._rule_functions(self.chains.cache_miss, "CacheMiss"))
        fns.update(self._rule_functions(self.chains.cache_inserted, "CacheInsertedResponse"))
        fns.update(console_functions(self.config.console, lambda: self.out))
        return fns

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
                where = _text(args[0]) if args else "its address"
                if f"{name}.{where}" not in self.warned:
                    self.warned.add(f"{name}.{where}")
                    log.error("%s: %s: nothing listens on %s", name, NOT_LISTENING[name], where)
            elif name in SECURITY_NOT_YET:
                self.warn_once(f"{name}.security", f"{name}: {SECURITY_NOT_YET[name]}")
            return Anything(name)

        return accept


#: The server's counters, shown by ``dumpStats()`` at 0 until they count something (as
#: dnsdist shows its fixed list).
STAT_NAMES = (
    "acl-drops",
    "answered",
    "async-foreign-drops",
    "async-resumed",
    "async-send-failures",
    "async-send-overflows",
    "async-send-queued",
    "async-suspended",
    "async-timeouts",
    "cache-hits",
    "cache-misses",
    "config-reload-failures",
    "config-reloads",
    "downstream-overload-drops",
    "downstream-send-errors",
    "downstream-timeouts",
    "dropped",
    "frontend-overload-drops",
    "non-compliant-queries",
    "queries",
    "received",
    "responses",
    "rule-drop",
    "self-answered",
    "tcp-overload-drops",
    "tcp-send-timeouts",
    "tcp-unsent-overflows",
    "truncated-udp-answers",
    "udp-send-errors",
)


def format_stats(counters: Mapping[str, int]) -> str:
    """dnsdist's ``dumpStats()`` layout: the counters sorted by name, the first half in
    the left column and the rest in the right one."""
    shown = dict.fromkeys(STAT_NAMES, 0) | dict(counters)
    entries = [f"{name:<35}\t{value:>11}" for name, value in sorted(shown.items())]
    half = (len(entries) + 1) // 2
    left, right = entries[:half], entries[half:]
    lines = [f"{a:<50} {b}".rstrip() if b else a for a, b in zip(left, [*right, ""], strict=False)]
    return "".join(line + "\n" for line in lines)


_PACKET_CACHE_POSITIONAL = (
    "maxTTL",
    "minTTL",
    "temporaryFailureTTL",
    "staleTTL",
    "dontAge",
    "numberOfShards",
    "deferrableInsertLock",
    "maxNegativeTTL",
    "parseECS",
)


def _boolean(value: Any, function: str) -> bool:
    """A true/false argument; anything else is an error, as in dnsdist."""
    if not isinstance(value, bool):
        raise ConfigError(f"{function}: expected true or false, got {_describe(value)}")
    return value


def _number_option(
    opts: dict[str, Any],
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    integer: bool = False,
) -> float:
    """A numeric ``newServer`` option (a number, or a string holding one, as dnsdist takes)."""
    value = opts.get(name, default)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"newServer: '{name}' must be a number, got {_describe(value)}") from None
    if integer and not number.is_integer():
        raise ConfigError(f"newServer: '{name}' must be a whole number, got {_describe(value)}")
    if minimum is not None and number < minimum:
        raise ConfigError(
            f"newServer: '{name}' must be at least {minimum:g}, got {_describe(value)}"
        )
    return number


def _server_clock() -> float:
    """Trio's clock while serving; before (``check-config``) the cache is empty anyway."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def _count_option(opts: dict[str, Any], name: str) -> int:
    """An addLocal option that counts something: a whole number >= 0 (0 when absent)."""
    value = opts.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"addLocal: '{name}' must be a whole number >= 0, got {_describe(value)}")
    if value != int(value):
        raise ConfigError(f"addLocal: '{name}' must be a whole number >= 0, got {_describe(value)}")
    return int(value)


def _labels(value: Any) -> int | None:
    """The ``labels`` argument of the top-N functions: how many of a name's last labels
    to count by (None: the whole name)."""
    return None if value is None else _whole(value, "labels", 0)


def _whole(value: Any, function: str, minimum: int) -> int:
    """A count given to ``function``: a whole number, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{function}: expected a whole number, got {_describe(value)}")
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise ConfigError(f"{function}: expected a whole number, got {_describe(value)}")
    if value < minimum:
        raise ConfigError(f"{function}: expected a number >= {minimum}, got {_describe(value)}")
    return int(value)


def _non_negative(value: Any, function: str) -> float:
    try:
        if isinstance(value, bool):  # float(True) is 1.0; Lua's true is no number
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{function}: expected a number, got {_describe(value)}") from None
    if number < 0:
        raise ConfigError(f"{function}: expected a number >= 0, got {_describe(value)}")
    return number


def _flag(value: Any, default: bool) -> bool:
    return default if value is None else bool(value)


def _table(value: Any, function: str) -> Any:
    """``value``, a table of rules; nil is an error here rather than a rule of none."""
    if value is None:
        raise ConfigError(f"{function}: expected a table of selectors, got nil")
    return value


def _selectors(value: Any) -> list[S.Selector]:
    return [S.selector_from(v) for v in _list(value)]


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


def _help_entries(functions: Mapping[str, Any]) -> dict[str, str]:
    """``help()``'s lines: "name(parameters): what it does" for every function triodist
    has (its docstring's first sentence where it has one), the placeholders left out.
    The parameters are written as dnsdist's documentation writes them (``SIGNATURES``),
    not as Python declares them."""
    entries: dict[str, str] = {}
    for name, value in functions.items():
        if not callable(value) or "_not_yet" in getattr(value, "__qualname__", ""):
            continue
        # A function missing from the table (a test checks there is none) still gets a
        # line; its parameters are not guessed from Python's names.
        signature = SIGNATURES.get(name, f"{name}(...)")
        doc = (inspect.getdoc(value) or "").split("\n\n", 1)[0].replace("\n", " ")
        doc = doc.replace("``", "")  # reStructuredText quoting, not for a console
        if isinstance(value, type) and value.__doc__ is None:
            doc = ""  # a class's docstring inherited from its base says nothing of it
        entries[name] = signature + (f": {doc}" if doc else "")
    return entries


def _placeholder(values: list[Any]) -> Anything | None:
    """The first not-yet-supported object among ``values``: a rule built on it is ignored."""
    return next((v for v in values if isinstance(v, Anything)), None)


_CONSTRUCTORS: dict[str, Callable[..., Any]] = {
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
        _placeholder(_list(rules)) or S.AndRule(_combined(rules, "AndRule", "every query"))
    ),
    "OrRule": lambda rules: (
        _placeholder(_list(rules)) or S.OrRule(_combined(rules, "OrRule", "no query"))
    ),
    "NotRule": lambda rule: _placeholder([rule]) or S.NotRule(rule),
    "TagRule": S.TagRule,
    "RDRule": S.RDRule,
    "OpcodeRule": S.OpcodeRule,
    "TCPRule": S.TCPRule,
    "RCodeRule": S.RCodeRule,
    "DNSSECRule": S.DNSSECRule,
    "MaxQPSRule": S.MaxQPSRule,
    "MaxQPSIPRule": S.MaxQPSIPRule,
    "LuaRule": S.LuaRule,
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
    "LogAction": A.LogAction,
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
    "ContinueAction": lambda action: _placeholder([action]) or A.ContinueAction(action),
    # response actions
    "AllowResponseAction": A.AllowResponseAction,
    "DropResponseAction": A.DropResponseAction,
    "DelayResponseAction": A.DelayResponseAction,
    "LogResponseAction": A.LogResponseAction,
    "LuaResponseAction": A.LuaResponseAction,
    "SetTagResponseAction": A.SetTagResponseAction,
    "TCResponseAction": A.TCResponseAction,
    "SetMaxTTLResponseAction": A.SetMaxTTLResponseAction,
    "SetMinTTLResponseAction": A.SetMinTTLResponseAction,
    "LimitTTLResponseAction": A.LimitTTLResponseAction,
    "ClearRecordTypesResponseAction": A.ClearRecordTypesResponseAction,
    "SetSkipCacheResponseAction": A.SetSkipCacheResponseAction,
    # objects
    "newDNSName": lambda name: DNSName(as_name(name)),
    "newSuffixMatchNode": SuffixMatchNode,
    "newNMG": NetmaskGroup,
    "newDNSNameSet": DNSNameSet,
    "newCA": lambda text: ComboAddress.parse(str(text), 0),
}
