"""DNS names as Lua sees them: dnsdist's ``DNSName``, and :func:`as_name`, which takes
what dnsdist takes where a name is expected.

Imports nothing from triodist.
"""

from __future__ import annotations

from typing import Any

import dns.exception
import dns.name


class DNSName:
    """dnsdist's DNSName, as Lua sees it (``dq.qname:toString()``)."""

    __slots__ = ("name",)

    def __init__(self, name: dns.name.Name | str) -> None:
        if isinstance(name, str):
            name = as_name(name)
        self.name = name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DNSName):
            return bool(self.name == other.name)
        if isinstance(other, dns.name.Name):
            return bool(self.name == other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.toString()

    def __repr__(self) -> str:
        return f"DNSName({self.toString()!r})"

    def toString(self) -> str:
        return str(self.name.to_text())

    def toStringNoDot(self) -> str:
        return str(self.name.to_text(omit_final_dot=True)) or "."

    def toDNSString(self) -> bytes:
        return self.name.to_wire() or b""

    def countLabels(self) -> int:
        return len(self.name.labels) - 1

    def wirelength(self) -> int:
        return len(self.name.to_wire() or b"")

    def isPartOf(self, other: Any) -> bool:
        return self.name.is_subdomain(as_name(other))

    def equal(self, other: Any) -> bool:
        return bool(self.name == as_name(other))

    def chopOff(self) -> bool:
        if self.name == dns.name.root:
            return False
        self.name = self.name.parent()
        return True

    def makeRelative(self, zone: Any) -> DNSName:
        return DNSName(self.name.relativize(as_name(zone)))

    def hash(self) -> int:
        return hash(self.name.canonicalize()) & 0xFFFFFFFF

    def isRoot(self) -> bool:
        return bool(self.name == dns.name.root)


def as_name(value: Any) -> dns.name.Name:
    """Accept what dnsdist accepts where a name is expected: a DNSName or a string."""
    if isinstance(value, DNSName):
        return value.name
    if isinstance(value, dns.name.Name):
        return value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        try:
            return dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            # dnspython's "A DNS label is empty." names neither the value nor the caller:
            # dnsdist's words, with the value; the function called from Lua adds its name.
            raise ValueError(
                f"{_NAME_PROBLEMS.get(type(exc), 'Invalid')} in DNSName {value}"
            ) from None
    raise TypeError(f"expected a DNS name, got {value!r}")


# What is wrong with a name, as dnsdist says it ("Found . in wrong position in DNSName a..b").
_NAME_PROBLEMS: dict[type[Exception], str] = {
    dns.name.EmptyLabel: "Found . in wrong position",
    dns.name.LabelTooLong: "Label longer than 63 octets",
    dns.name.NameTooLong: "Name longer than 255 octets",
    dns.name.BadEscape: "Bad escape",
}
