"""The dnsdist configuration functions, as plain Python.

``ConfigAPI`` records what a ``rules.lua`` asks for in a ``ServerConfig``:
listeners, ACL, servers, pools, policies, rules.  It opens no socket and
contacts no backend, so running a configuration is safe for ``check-config``.
The Lua runtime (``runtime.py``) exposes ``ConfigAPI.functions()`` as Lua
globals, after turning Lua tables into dicts and lists; these functions are
ordinary Python and are tested from Python.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from ..backends.pools import BUILTIN_POLICIES, Pool, ServerPolicy
from ..backends.server import Server
from ..dnsmsg import ComboAddress, DNSName, as_name
from ..pipeline import Chains
from ..rules import actions as A
from ..rules import selectors as S
from ..rules.chain import RuleChain
from ..rules.matchers import DNSNameSet, NetmaskGroup, SuffixMatchNode
from ..server import Listen, ServerConfig
from .dnsdist_names import DNSDIST_GLOBALS, DNSDIST_USER_HOOKS, QUIET_TUNABLES

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
    raise ConfigError(f"{function}: expected a table of options, got {value!r}")


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
    "sockets",
    "reconnectOnUp",
    "maxInFlight",
    "maxConcurrentTCPConnections",
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
    "id",
    "autoUpgrade",
    "autoUpgradeInterval",
    "autoUpgradeKeep",
    "autoUpgradePool",
    "autoUpgradeDoHKey",
    "ecsPrefixLength",
    "healthCheckProxyProtocol",
}
_SERVER_KNOWN = {"address", "name", "pool", "weight", "order", "udpTimeout", "tcpOnly", "qps"}

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
        self.local_set = False
        self.out = sys.stdout

    # --- helpers ----------------------------------------------------------------------

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s", message)

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
                self.warn_once(f"addLocal.{key}", f"addLocal: unknown option '{key}' ignored")
        try:
            ComboAddress.parse(str(address), 53)
        except ValueError as exc:
            raise ConfigError(f"addLocal: invalid address '{address}': {exc}") from exc
        self.config.listens.append(
            Listen(
                str(address),
                reuse_port=bool(opts.get("reusePort", False)),
                tcp=bool(opts.get("doTCP", True)),
            )
        )
        self.local_set = True

    def setACL(self, masks: Any) -> None:
        if isinstance(masks, NetmaskGroup):
            self.config.acl = NetmaskGroup()
            self.config.acl.addNMG(masks)
            return
        acl = NetmaskGroup()
        for mask in _list(masks):
            acl.addMask(self._mask(mask, "setACL"))
        self.config.acl = acl

    def addACL(self, mask: Any) -> None:
        self.config.acl.addMask(self._mask(mask, "addACL"))

    def _mask(self, mask: Any, function: str) -> str:
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
            )
        for key in unknown:
            self.warn_once(f"newServer.{key}", f"newServer: unknown option '{key}' ignored")
        pools = opts.get("pool", "")
        pool_names = [str(p) for p in _list(pools)] or [""]
        try:
            server = Server(
                str(opts["address"]),
                name=str(opts.get("name", "")),
                pools=pool_names,
                weight=int(opts.get("weight", 1)),
                order=int(opts.get("order", 1)),
                udp_timeout=float(opts.get("udpTimeout", 2)),
                tcp_only=bool(opts.get("tcpOnly", False)),
                qps=float(opts.get("qps", 0)),
            )
        except ValueError as exc:
            raise ConfigError(f"newServer: invalid address '{opts['address']}': {exc}") from exc
        if float(opts.get("weight", 1)) < 1:
            raise ConfigError("newServer: 'weight' must be at least 1")
        self.config.routing.add_server(server)
        log.info("Added downstream server %s", server.address.toStringWithPort())
        return server

    def getServer(self, key: Any) -> Server:
        servers = self.config.routing.servers
        if isinstance(key, int | float):
            index = int(key)
            if 0 <= index < len(servers):
                return servers[index]
            raise ConfigError(f"getServer: no server number {index}")
        for server in servers:
            if server.name == str(key):
                return server
        raise ConfigError(f"getServer: no server named '{key}'")

    def getServers(self) -> list[Server]:
        return list(self.config.routing.servers)

    def rmServer(self, key: Any) -> None:
        server = key if isinstance(key, Server) else self.getServer(key)
        self.config.routing.remove_server(server)

    def showServers(self, options: Any = None) -> None:
        lines = [
            f"{'#':<3} {'Name':<20} {'Address':<39} {'State':<8} {'Qps':>5} {'Qlim':>4} "
            f"{'Ord':>3} {'Wt':>3} {'Queries':>10} {'Drops':>8} {'Lat':>6} {'Outstanding':>11}"
            " Pools"
        ]
        for index, s in enumerate(self.config.routing.servers):
            pools = ", ".join(p for p in s.pools if p)
            lines.append(
                f"{index:<3} {s.name:<20} {s.address.toStringWithPort():<39} {s.status:<8} "
                f"{0:>5} {int(s.qps):>4} {s.order:>3} {s.weight:>3} {s.queries:>10} {s.drops:>8} "
                f"{s.getLatency():>6.1f} {s.outstanding:>11} {pools}"
            )
        print("\n".join(lines), file=self.out)

    def getPool(self, name: Any) -> Pool:
        return self.config.routing.pool(str(name))

    def getPoolServers(self, name: Any) -> list[Server]:
        return list(self.config.routing.pool(str(name)).servers)

    def _policy_not_yet(self, policy: Any) -> bool:
        """A policy triodist lacks (``chashed``, ``newServerPolicy()``): warn, keep the old one."""
        if isinstance(policy, Anything):
            self.warn_once(policy._name, f"{policy._name}: not supported by triodist yet, ignored")
            return True
        return False

    def setServerPolicy(self, policy: Any) -> None:
        if self._policy_not_yet(policy):
            return
        if not isinstance(policy, ServerPolicy):
            raise ConfigError(f"setServerPolicy: expected a server policy, got {policy!r}")
        self.config.routing.policy = policy

    def setPoolServerPolicy(self, policy: Any, pool: Any) -> None:
        if self._policy_not_yet(policy):
            return
        if not isinstance(policy, ServerPolicy):
            raise ConfigError(f"setPoolServerPolicy: expected a server policy, got {policy!r}")
        self.config.routing.pool(str(pool)).policy = policy

    def showServerPolicy(self) -> None:
        print(self.config.routing.policy.name, file=self.out)

    def setServFailWhenNoServer(self, on: Any) -> None:
        self.config.settings.servfail_when_no_server = bool(on)

    # --- tunables that apply ------------------------------------------------------------

    def setMaxTCPConnectionsPerClient(self, n: Any) -> None:
        self.config.settings.max_tcp_connections_per_client = int(n)

    def setMaxTCPQueriesPerConnection(self, n: Any) -> None:
        self.config.settings.max_tcp_queries_per_connection = int(n)

    def setMaxTCPConnectionDuration(self, n: Any) -> None:
        self.config.settings.max_tcp_connection_duration = float(n)

    def setTCPRecvTimeout(self, n: Any) -> None:
        self.config.settings.tcp_recv_timeout = float(n)

    def setTCPSendTimeout(self, n: Any) -> None:
        self.config.settings.tcp_send_timeout = float(n)

    def setVerbose(self, on: Any = True) -> None:
        if on:
            logging.getLogger("triodist").setLevel(logging.DEBUG)

    # --- rules ------------------------------------------------------------------------

    def _add(self, chain: RuleChain, selector: Any, action: Any, options: Any, fn: str) -> None:
        placeholder = _placeholder([selector, action])
        if placeholder is not None:
            # A selector or action triodist lacks: the whole rule is ignored, never half-applied.
            name = placeholder._name
            self.warn_once(f"{fn}.{name}", f"{fn}: rule using {name} ignored (not supported yet)")
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
        chain.add(sel, action, name=str(opts.get("name", "")), uuid=str(opts.get("uuid", "")))

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

    # --- logging ----------------------------------------------------------------------

    def infolog(self, message: Any) -> None:
        log.info("%s", _text(message))

    def warnlog(self, message: Any) -> None:
        log.warning("%s", _text(message))

    def errlog(self, message: Any) -> None:
        log.error("%s", _text(message))

    def vinfolog(self, message: Any) -> None:
        log.debug("%s", _text(message))

    # --- the function table -----------------------------------------------------------

    def functions(self) -> dict[str, Any]:
        """Every global a configuration can call, by dnsdist's name."""
        fns: dict[str, Any] = {}
        for name in DNSDIST_GLOBALS - DNSDIST_USER_HOOKS:
            fns[name] = self._not_yet(name, quiet=name in QUIET_TUNABLES)
        fns.update(_CONSTRUCTORS)
        fns.update(BUILTIN_POLICIES)
        # dnsdist's other policies are values too (setServerPolicy(chashed)): they load,
        # and setting them warns and keeps the current policy.
        for name in ("chashed", "orderedWrandUntag"):
            fns[name] = Anything(name)
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
            "setServerPolicy",
            "setPoolServerPolicy",
            "showServerPolicy",
            "setServFailWhenNoServer",
            "setMaxTCPConnectionsPerClient",
            "setMaxTCPQueriesPerConnection",
            "setMaxTCPConnectionDuration",
            "setTCPRecvTimeout",
            "setTCPSendTimeout",
            "setVerbose",
            "infolog",
            "warnlog",
            "errlog",
            "vinfolog",
        ):
            fns[name] = getattr(self, name)
        fns.update(self._rule_functions(self.chains.queries, ""))
        fns.update(self._rule_functions(self.chains.responses, "Response"))
        fns.update(self._rule_functions(self.chains.self_answered, "SelfAnsweredResponse"))
        fns.update(self._rule_functions(self.chains.cache_hit, "CacheHitResponse"))
        return fns

    def _not_yet(self, name: str, *, quiet: bool) -> Callable[..., Any]:
        def accept(*args: Any) -> Anything:
            if not quiet:
                self.warn_once(name, f"{name}: not supported by triodist yet, ignored")
            return Anything(name)

        return accept


def _describe(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, str | int | float) else repr(value)


def _flag(value: Any, default: bool) -> bool:
    return default if value is None else bool(value)


def _selectors(value: Any) -> list[S.Selector]:
    return [S.selector_from(v) for v in _list(value)]


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
    "AndRule": lambda rules: _placeholder(_list(rules)) or S.AndRule(_selectors(rules)),
    "OrRule": lambda rules: _placeholder(_list(rules)) or S.OrRule(_selectors(rules)),
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
    # objects
    "newDNSName": lambda name: DNSName(as_name(name)),
    "newSuffixMatchNode": SuffixMatchNode,
    "newNMG": NetmaskGroup,
    "newDNSNameSet": DNSNameSet,
    "newCA": lambda text: ComboAddress.parse(str(text), 0),
}
