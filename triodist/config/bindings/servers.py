"""The backends: ``newServer`` and its options, ``getServer``, ``getServers``, ``rmServer``,
``showServers``.

Servers are numbered in ascending ``order`` (ties: in the order they were added), as
dnsdist numbers them: getServer(n), rmServer(n), getServers() and showServers() agree.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from triodist.backends.healthstate import HealthCheckConfig
from triodist.backends.pools import server_identity
from triodist.backends.server import Server
from triodist.backends.udp import MAX_UDP_SOCKETS
from triodist.config.bindings.args import ConfigError, as_list, option_table, text
from triodist.config.bindings.base import Binding, columns, lua_function
from triodist.config.hostnames import HostResolver, NotResolved, is_host_name
from triodist.system.fdlimit import DEFAULT_MAX_TCP_CONNECTIONS
from triodist.util.luavalues import describe
from triodist.wire.address import ComboAddress, split_host_port

log = logging.getLogger("triodist.config")

#: Options of newServer that a later release of triodist implements (health checks,
#: outgoing TLS/DoH, ...): accepted now, with one warning naming them.
SERVER_LATER = {
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
    "ipBindAddrNoPort",
    "source",
    "reconnectOnUp",
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
#: Options of newServer that triodist implements.
SERVER_KNOWN = {
    "address",
    "maxConcurrentTCPConnections",
    "maxInFlight",
    "sockets",
    "name",
    "pool",
    "weight",
    "order",
    "udpTimeout",
    "tcpOnly",
    "qps",
    "id",
    # EDNS Client Subnet (triodist/query/ecs.py)
    "useClientSubnet",
    "disableZeroScope",
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


#: The largest weight dnsdist takes (a C int).
MAX_WEIGHT = 2**31 - 1


class ServerBindings(Binding):
    """The backends of a configuration (``config.routing``)."""

    @cached_property
    def host_resolver(self) -> HostResolver:
        """Resolves ``newServer``'s host names; one per load (its time bound is the load's)."""
        return HostResolver()

    def _server_address(self, value: Any) -> str | None:
        """The address a ``newServer`` asks for, a host name resolved; None, with the error
        logged, when there is none (the server is skipped, as dnsdist skips it)."""
        address = value if isinstance(value, str) else describe(value)
        try:
            parsed = ComboAddress.parse(address, 53)
        except ValueError as exc:
            problem = str(exc)
        else:
            if parsed.ip.is_unspecified:
                # As dnsdist: 0.0.0.0 or :: would send the queries to this host itself.
                self.config_error(
                    f"newServer: {address} is not a valid address for a backend; "
                    "the server is skipped"
                )
                return None
            return address
        try:
            host, port = split_host_port(address, 53)
        except ValueError:
            host, port = "", 53
        if not is_host_name(host):
            self.config_error(
                f"newServer: invalid address '{address}': {problem}; the server is skipped"
            )
            return None
        try:
            found = self.host_resolver.resolve(host)
        except NotResolved as exc:
            self.config_error(
                f"newServer: the host name '{host}' does not resolve ({exc}); the server is skipped"
            )
            return None
        resolved = str(ComboAddress(found[0], port))
        # Not dnsdist's (it takes addresses only): say what was chosen, so that an
        # operator whose name moves knows a reload picks the move up.
        location = self.where()
        log.warning(
            "%snewServer: host name '%s' resolved to %s; using %s until the next reload",
            f"{location}: " if location else "",
            host,
            ", ".join(found),
            resolved,
        )
        return resolved

    @lua_function
    def newServer(self, spec: Any, qps: Any = None, *rest: Any) -> Server | None:
        if isinstance(spec, str):
            opts: dict[str, Any] = {"address": spec}
            if qps is not None:
                opts["qps"] = qps
            if rest:  # newServer(addr, qps, order, pools...) in very old configurations
                opts["order"] = rest[0]
        else:
            opts = dict(option_table(spec, "newServer"))
        if "address" not in opts:
            raise ConfigError("newServer: no 'address' given")
        later = sorted(k for k in opts if k in SERVER_LATER)
        unknown = sorted(k for k in opts if k not in SERVER_LATER and k not in SERVER_KNOWN)
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
        address = self._server_address(opts["address"])
        if address is None:
            return None
        pools = opts.get("pool", "")
        pool_names = [str(p) for p in as_list(pools)] or [""]
        if "checkType" in opts:
            try:
                HealthCheckConfig.from_options({"checkType": opts["checkType"]})
            except ValueError as exc:
                # dnsdist takes any text here; triodist checks with its default (A).
                self.config_error(f"newServer: {exc}; the health check asks for A")
                opts.pop("checkType")
        try:
            mode, check_mode, health = HealthCheckConfig.from_options(opts)
        except ValueError as exc:
            raise ConfigError(f"newServer: {exc}") from exc
        try:
            weight = _number_option(opts, "weight", 1, minimum=1, integer=True)
            if weight > MAX_WEIGHT:
                raise ConfigError(f"newServer: 'weight' must be at most {MAX_WEIGHT}")
        except ConfigError as exc:
            if isinstance(opts.get("weight"), bool):
                raise  # not a number nor text: dnsdist stops there too
            # dnsdist logs a weight out of range and creates no server; the file goes on.
            self.config_error(f"{exc}; the server is skipped", dnsdist=_weight_error(opts))
            return None
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
                f"newServer: 'tcpOnly' must be true or false, got {describe(tcp_only)}"
            )
        try:
            server = Server(
                address,
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
            self.config_error(
                f"newServer: invalid address '{address}': {exc}; the server is skipped"
            )
            return None
        # Queries pipelined on one TCP connection to it, answered in any order.
        server.max_in_flight = int(
            _number_option(opts, "maxInFlight", 0, minimum=0, integer=True)
        )
        server.use_ecs = _flag_option(opts, "useClientSubnet")
        server.disable_zero_scope = _flag_option(opts, "disableZeroScope")
        server.allow_empty_response = self.config.settings.allow_empty_response
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
        name = text(key)
        for server in servers:
            if name in (server.name, server_identity(server)):
                return server
        raise ConfigError(f"{function}: no server named '{name}'")

    @lua_function
    def getServer(self, key: Any) -> Server:
        """dnsdist's getServer: by number as shown by showServers() (from 0), or by name
        (dnsdist takes a UUID string; a server's ``id``, when it has one, works too)."""
        return self._find_server(key, "getServer")

    @lua_function
    def getServers(self) -> list[Server]:
        """Every server, numbered as in showServers(); a Lua array (from 1) in Lua."""
        return self._numbered_servers()

    @lua_function
    def rmServer(self, key: Any) -> None:
        server = self._find_server(key, "rmServer")
        self.config.routing.remove_server(server)

    @lua_function
    def showServers(self, options: Any = None) -> None:
        """dnsdist's table, column for column.  ``Qps`` and ``Drate`` (rates dnsdist
        measures every second) are shown as 0.0: triodist does not measure them yet."""
        opts = option_table(options, "showServers")
        uuids = bool(opts.get("showUUIDs", False))
        # Tab stops of dnsdist's two layouts, after the leading columns.
        stops = (
            (62, 92, 88, 103, 106, 115, 117, 123, 128, 146, 152, 0)
            if uuids
            else (25, 55, 51, 66, 69, 78, 80, 86, 91, 109, 115, 0)
        )

        def row(lead: list[str], rest: list[str]) -> str:
            return columns(
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


def _flag_option(opts: dict[str, Any], name: str) -> bool:
    """A true/false ``newServer`` option (absent: false)."""
    value = opts.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"newServer: '{name}' must be true or false, got {describe(value)}")
    return value


def _weight_error(opts: dict[str, Any]) -> str:
    """What dnsdist logs for a weight it refuses: one line for a number below 1, another
    for anything else (too large, or not a number)."""
    value = opts.get("weight")
    if isinstance(value, int | float) and value < 1:
        return "Error creating new server: downstream weight value must be greater than 0."
    return f"Error creating new server: downstream weight value must be between 1 and {MAX_WEIGHT}"


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
        raise ConfigError(f"newServer: '{name}' must be a number, got {describe(value)}") from None
    if integer and not number.is_integer():
        raise ConfigError(f"newServer: '{name}' must be a whole number, got {describe(value)}")
    if minimum is not None and number < minimum:
        raise ConfigError(
            f"newServer: '{name}' must be at least {minimum:g}, got {describe(value)}"
        )
    return number
