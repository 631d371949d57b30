"""The console's functions (``controlSocket``, ``setKey``, ``makeKey``, its ACL and
bounds, ``testCrypto``) and what an operator types at it: ``reloadConfig``,
``showVersion``.

The console itself (the protocol, the server, the client) is triodist.ops.console; these
record its settings in ``config.console``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any, NoReturn

from triodist import __version__
from triodist.config.bindings.args import ConfigError
from triodist.config.bindings.base import Binding, lua_function
from triodist.ops.console.protocol import check_crypto
from triodist.ops.console.settings import decode_key, new_key, parse_address
from triodist.rules.matchers import NetmaskGroup, parse_network


class ConsoleBindings(Binding):
    """The console's settings (``config.console``) and the commands typed at it."""

    @lua_function
    def controlSocket(self, address: Any = None) -> None:
        where = "127.0.0.1:5199" if address is None else str(address)
        try:
            self.config.console.addresses.append(parse_address(where))
        except ValueError as exc:
            _fail(f"controlSocket: invalid address '{where}': {exc}")

    @lua_function
    def setKey(self, key: Any) -> None:
        try:
            self.config.console.key = decode_key(str(key))
        except ValueError as exc:
            if not self.where():
                # Typed at the console (no configuration file runs): the answer says so.
                _fail(f"setKey: {exc}")
            # As dnsdist: logged, the key left as it was (none: the console refuses every
            # client), the rest of the configuration still runs.
            self.config_error(f"setKey: {exc}; the key is not changed")

    @lua_function
    def makeKey(self) -> None:
        print(f'setKey("{new_key()}")', file=self.out)

    @lua_function
    def setConsoleACL(self, masks: Any) -> None:
        self.config.console.acl = NetmaskGroup(_masks(masks, "setConsoleACL"))

    @lua_function
    def addConsoleACL(self, mask: Any) -> None:
        self.config.console.acl.addMasks(_masks(mask, "addConsoleACL"))

    @lua_function
    def showConsoleACL(self) -> None:
        shown = self.config.console.acl.toString()
        # IPv4 first, then IPv6, each in address order: dnsdist's order.
        for mask in sorted(shown.split(", ") if shown else [], key=_mask_order):
            print(mask, file=self.out)

    @lua_function
    def setConsoleMaximumConcurrentConnections(self, count: Any) -> None:
        self.config.console.max_connections = _count(
            count, "setConsoleMaximumConcurrentConnections"
        )

    @lua_function
    def setConsoleConnectionsLogging(self, enabled: Any) -> None:
        self.config.console.log_connections = bool(enabled)

    @lua_function
    def setConsoleOutputMaxMsgSize(self, size: Any) -> None:
        self.config.console.max_output_size = _count(
            size, "setConsoleOutputMaxMsgSize", maximum=0xFFFFFFFF
        )

    @lua_function
    def testCrypto(self, message: Any = None) -> None:
        plain = "testStringForCryptoTests" if message is None else str(message)
        key = self.config.console.key
        print(check_crypto(key, plain.encode("latin-1", "replace")), file=self.out)

    @lua_function
    def reloadConfig(self) -> bool:
        """Run the configuration file again and, if it loads, serve with it (keeping the
        packet caches, the suspended objects and the counters: docs/reference/configuration.md,
        "Reloading"). False, with the error printed, when it does not load."""
        reload = self.config.reload
        if reload is None:
            raise ConfigError("reloadConfig: only a running server can reload (the console)")
        error = reload()
        if error is not None:
            print(f"Reloading the configuration failed, nothing changed: {error}", file=self.out)
            return False
        return True

    @lua_function
    def showVersion(self) -> None:
        """Print the version: triodist's own, never dnsdist's."""
        print(f"triodist {__version__}", file=self.out)


def _fail(message: str) -> NoReturn:
    raise ConfigError(message)


def _count(value: Any, function: str, *, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        _fail(f"{function}: expected a whole number, got {value!r}")
    if value < 0 or (maximum is not None and value > maximum):
        bound = f"0 to {maximum}" if maximum is not None else "a number >= 0"
        _fail(f"{function}: expected {bound}, got {value!r}")
    return int(value)


def _masks(masks: Any, function: str) -> list[str]:
    if isinstance(masks, NetmaskGroup):
        return masks.toString().split(", ") if masks.size() else []
    if isinstance(masks, dict):
        items = list(masks.values())
    elif isinstance(masks, list | tuple):
        items = list(masks)
    else:
        items = [masks]
    texts = [str(mask) for mask in items]
    probe = NetmaskGroup()
    for mask in texts:
        try:
            probe.addMask(mask)
        except ValueError:
            _fail(f"{function}: invalid netmask '{mask}'")
    return texts


def _mask_order(mask: str) -> tuple[int, int, int]:
    network = parse_network(mask.lstrip("!"))
    return network.version, int(network.network_address), network.prefixlen
