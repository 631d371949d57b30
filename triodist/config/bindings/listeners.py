"""Where triodist listens and who may query: ``setLocal``, ``addLocal``, ``addTLSLocal``,
``setACL``, ``addACL``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any

from triodist.config.bindings.args import ConfigError, as_list, option_table
from triodist.config.bindings.base import Binding, lua_function
from triodist.frontends.tls import TLS_VERSIONS, TLSSettings
from triodist.rules.matchers import NetmaskGroup
from triodist.server import Listen
from triodist.util.luavalues import describe
from triodist.wire.address import ComboAddress

#: The options of ``addLocal`` triodist knows (every other one is warned of and ignored).
LISTEN_KNOWN = {
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

#: The options of ``addTLSLocal`` triodist applies, beside ``addLocal``'s.
TLS_KNOWN = {
    "minTLSVersion",
    "ciphers",
    "preferServerCiphers",
    "sessionTickets",
    "keyLogFile",
    "provider",
}
#: ``addTLSLocal`` options triodist does not support yet: reported as ignored when given
#: (``enableRenegotiation`` only when it asks for renegotiation, which is off anyway).
TLS_NOT_YET = {
    "ciphersTLS13",
    "numberOfTicketsKeys",
    "ticketKeyFile",
    "ticketsKeysRotationDelay",
    "sessionTimeout",
    "numberOfStoredSessions",
    "ocspResponses",
    "releaseBuffers",
    "enableRenegotiation",
}


class ListenerBindings(Binding):
    """The listening addresses and the ACL of a configuration."""

    @lua_function
    def setLocal(self, address: str, options: Any = None) -> None:
        # As dnsdist: the plain listeners are replaced, DNS over TLS ones stay.
        self.config.listens[:] = [x for x in self.config.listens if x.tls is not None]
        self.addLocal(address, options)

    @lua_function
    def addLocal(self, address: str, options: Any = None) -> None:
        if isinstance(options, bool):  # dnsdist < 1.3: addLocal(addr, doTCP)
            opts: dict[str, Any] = {"doTCP": options}
        else:
            opts = option_table(options, "addLocal")
        for key in opts:
            if key not in LISTEN_KNOWN:
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
            raise ConfigError(f"addLocal: expected an address, got {describe(address)}")
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

    @lua_function
    def addTLSLocal(self, address: Any, certificates: Any, keys: Any, options: Any = None) -> None:
        """DNS over TLS on ``address`` (port 853 by default), with one certificate and
        key, or lists of them in the same order. The files are read when the server
        starts (check-config reads none, as dnsdist)."""
        opts = option_table(options, "addTLSLocal")
        for key in opts:
            if key in TLS_NOT_YET:
                if key == "enableRenegotiation" and not opts[key]:
                    continue
                self.warn_once(
                    f"addTLSLocal.{key}",
                    f"addTLSLocal: option '{key}' not supported by triodist yet, ignored",
                    ignored=f"addTLSLocal option '{key}'",
                )
            elif key not in LISTEN_KNOWN and key not in TLS_KNOWN:
                self.warn_once(
                    f"addTLSLocal.{key}",
                    f"addTLSLocal: unknown option '{key}' ignored",
                    ignored=f"addTLSLocal option '{key}'",
                )
        if opts.get("interface"):
            self.warn_once(
                "addTLSLocal.interface",
                "addTLSLocal: option 'interface' not supported by triodist yet, ignored: "
                f"{address} is listened on from every interface",
                ignored="addTLSLocal option 'interface'",
            )
        provider = opts.get("provider")
        if provider is not None and str(provider).lower() != "openssl":
            self.warn_once(
                "addTLSLocal.provider",
                f"addTLSLocal: provider '{provider}' not supported by triodist, OpenSSL used",
                ignored="addTLSLocal option 'provider'",
            )
        if not isinstance(address, str):
            raise ConfigError(f"addTLSLocal: expected an address, got {describe(address)}")
        try:
            ComboAddress.parse(address, 853)
        except ValueError as exc:
            raise ConfigError(f"addTLSLocal: invalid address '{address}': {exc}") from exc
        certs, key_files = _files(certificates, "certificate"), _files(keys, "key")
        if isinstance(certificates, str) != isinstance(keys, str) or len(certs) != len(key_files):
            # dnsdist logs this and goes on, without the listener.
            self.config_error(
                "Error, mismatching number of certificates and keys in call to addTLSLocal()!"
            )
            return
        min_version = opts.get("minTLSVersion")
        if min_version is not None and min_version not in TLS_VERSIONS:
            raise ConfigError(f"addTLSLocal: Unknown TLS version '{min_version}'")
        tls = TLSSettings(
            certificates=tuple(zip(certs, key_files, strict=True)),
            min_version=None if min_version is None else str(min_version),
            ciphers=_optional_text(opts, "ciphers"),
            prefer_server_ciphers=bool(opts.get("preferServerCiphers", True)),
            session_tickets=bool(opts.get("sessionTickets", True)),
            key_log_file=_optional_text(opts, "keyLogFile"),
        )
        self.config.listens.append(
            Listen(
                address,
                reuse_port=bool(opts.get("reusePort", False)),
                udp=False,
                max_tcp_connections=_count_option(opts, "maxConcurrentTCPConnections"),
                max_in_flight=_count_option(opts, "maxInFlight"),
                tls=tls,
            )
        )

    @lua_function
    def setACL(self, masks: Any) -> None:
        if isinstance(masks, NetmaskGroup):
            self.config.acl = NetmaskGroup()
            self.config.acl.addNMG(masks)
            return
        if masks is None:  # dnsdist refuses nil; an empty ACL would silently refuse everyone
            raise ConfigError("setACL: expected a netmask or a table of netmasks, got nil")
        acl = NetmaskGroup()
        for mask in as_list(masks):
            acl.addMask(self._mask(mask, "setACL"))
        self.config.acl = acl

    @lua_function
    def addACL(self, mask: Any) -> None:
        self.config.acl.addMask(self._mask(mask, "addACL"))

    def _mask(self, mask: Any, function: str) -> str:
        if not isinstance(mask, str):
            raise ConfigError(f"{function}: expected a netmask, got {describe(mask)}")
        try:
            probe = NetmaskGroup()
            probe.addMask(str(mask))
        except ValueError as exc:
            raise ConfigError(f"{function}: invalid netmask '{mask}'") from exc
        return str(mask)


def _count_option(opts: dict[str, Any], name: str) -> int:
    """An addLocal option that counts something: a whole number >= 0 (0 when absent)."""
    value = opts.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"addLocal: '{name}' must be a whole number >= 0, got {describe(value)}")
    if value != int(value):
        raise ConfigError(f"addLocal: '{name}' must be a whole number >= 0, got {describe(value)}")
    return int(value)


def _files(value: Any, what: str) -> list[str]:
    """``addTLSLocal``'s certificate (or key) argument: one path, or a table of paths."""
    files = as_list(value)
    if not files or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(
            f"addTLSLocal: expected the path of a {what} file, or a table of them, "
            f"got {describe(value)}"
        )
    return [str(f) for f in files]


def _optional_text(opts: dict[str, Any], name: str) -> str | None:
    value = opts.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"addTLSLocal: '{name}' must be a string, got {describe(value)}")
    return value
