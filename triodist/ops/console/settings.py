"""What the console is asked for (``controlSocket``, ``setKey``, the ``setConsole*``
functions: ``ConsoleSettings``), dnsdist's defaults, and the parsing of its address and key.

Imports nothing above triodist.ops (its own protocol module, and the ACL type from
triodist.rules.matchers).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from typing import Any

from triodist.ops.console.protocol import KEY_BYTES
from triodist.rules.matchers import NetmaskGroup
from triodist.wire.address import ComboAddress

DEFAULT_PORT = 5199
DEFAULT_ADDRESS = ("127.0.0.1", DEFAULT_PORT)
#: dnsdist's console ACL before a configuration changes it.
DEFAULT_CONSOLE_ACL = ("127.0.0.0/8", "::1/128")
#: dnsdist's defaults for setConsoleMaximumConcurrentConnections (0: no bound) and
#: setConsoleOutputMaxMsgSize (the largest message a client accepts).
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MAX_OUTPUT = 10_000_000


@dataclass
class ConsoleSettings:
    """What ``controlSocket``, ``setKey`` and the ``setConsole*`` functions ask for."""

    #: Where to listen (one ``controlSocket`` call each); empty: no console.
    addresses: list[tuple[str, int]] = field(default_factory=list)
    #: The shared secret (32 bytes); ``None`` until ``setKey``: every connection refused.
    key: bytes | None = None
    acl: NetmaskGroup = field(default_factory=lambda: NetmaskGroup(DEFAULT_CONSOLE_ACL))
    #: Connections at once; over it a new one is closed.  0: no bound (as dnsdist).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: The largest answer sent, and accepted by the client (MAC included).
    max_output_size: int = DEFAULT_MAX_OUTPUT
    #: Log every connection and disconnection (``setConsoleConnectionsLogging``).
    log_connections: bool = True


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1"`` → (127.0.0.1, 5199); ``"[::1]:5300"`` → (::1, 5300)."""
    address = ComboAddress.parse(text, DEFAULT_PORT)
    if not 0 <= address.port <= 65535:
        raise ValueError(f"port {address.port} out of range")
    return address.toString(), address.port


def decode_key(text: str) -> bytes:
    """The key of ``setKey``/``-k``: base64 of exactly 32 bytes, else ``ValueError``."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"unable to decode '{text}' as Base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"the key must be {KEY_BYTES} bytes, as makeKey() prints them, "
            f"not {len(key)} (from '{text}')"
        )
    return key


def new_key() -> str:
    """A new random key, in base64 (what ``makeKey()`` prints in a ``setKey`` line)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def show_address(peer: Any) -> str:
    """An (address, port) pair as dnsdist shows it: ``192.0.2.1:5199``, ``[::1]:5199``."""
    host, port = str(peer[0]), int(peer[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
