"""Where triodist listens and who may query: ``setLocal``, ``addLocal``, ``setACL``, ``addACL``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any

from triodist.config.bindings.args import ConfigError, as_list, option_table
from triodist.config.bindings.base import Binding, lua_function
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


class ListenerBindings(Binding):
    """The listening addresses and the ACL of a configuration."""

    @lua_function
    def setLocal(self, address: str, options: Any = None) -> None:
        self.config.listens.clear()
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
