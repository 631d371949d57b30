"""Addresses: dnsdist's ``ComboAddress`` (an IP address with a port), and parsing
``"192.0.2.1:53"`` or ``"[2001:db8::1]:53"`` into a host and a port.

Imports nothing from triodist.
"""

from __future__ import annotations

import ipaddress


class ComboAddress:
    """dnsdist's ComboAddress: an IP address with a port."""

    __slots__ = ("ip", "port")

    def __init__(self, ip: str, port: int = 0) -> None:
        self.ip = ipaddress.ip_address(ip.split("%", 1)[0])
        self.port = port

    @classmethod
    def parse(cls, text: str, default_port: int = 0) -> ComboAddress:
        host, port = split_host_port(text, default_port)
        return cls(host, port)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ComboAddress):
            return NotImplemented
        return (self.ip, self.port) == (other.ip, other.port)

    def __hash__(self) -> int:
        return hash((self.ip, self.port))

    def __str__(self) -> str:
        return self.toStringWithPort()

    def toString(self) -> str:
        return str(self.ip)

    def toStringWithPort(self) -> str:
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    def getPort(self) -> int:
        return self.port

    def isIPv4(self) -> bool:
        return self.ip.version == 4

    def isIPv6(self) -> bool:
        return self.ip.version == 6

    def isMappedIPv4(self) -> bool:
        return isinstance(self.ip, ipaddress.IPv6Address) and self.ip.ipv4_mapped is not None

    def getRaw(self) -> bytes:
        return self.ip.packed

    def truncate(self, bits: int) -> None:
        net = ipaddress.ip_network(f"{self.ip}/{int(bits)}", strict=False)
        self.ip = net.network_address


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``"192.0.2.1:53"``, ``"[2001:db8::1]:53"``, ``"2001:db8::1"`` or ``"192.0.2.1"``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = _port(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if text.count(":") == 1:
        host, port_text = text.split(":")
        return host, _port(port_text)
    return text, default_port


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return port


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
