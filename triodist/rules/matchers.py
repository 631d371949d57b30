"""Sets that rules match against: netmask groups, name suffixes, name sets.

These are dnsdist's ``newNMG()``, ``newSuffixMatchNode()`` and ``newDNSNameSet()``
objects; the camelCase methods are the ones configurations call.

Imports nothing above triodist.rules (the wire format below it).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import dns.name

from triodist.wire.address import ComboAddress
from triodist.wire.names import DNSName, as_name

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: str) -> IPNetwork:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:53" style, as dnsdist accepts
        text = text[1 : text.index("]")]
    return ipaddress.ip_network(text, strict=False)


def _flatten(items: Any) -> list[Any]:
    if isinstance(items, str | bytes | DNSName | dns.name.Name):
        return [items]
    if isinstance(items, dict) or hasattr(items, "values"):
        # dicts, and Lua tables handed over unconverted (methods called on objects)
        return list(items.values())
    return list(items)


class NetmaskGroup:
    """A set of networks, some of them negated with a leading ``!`` (dnsdist's NMG).

    The most specific matching network decides, as in dnsdist.
    """

    #: How many client verdicts ``match_host`` keeps (the oldest goes first).
    MAX_VERDICTS = 65536

    def __init__(self, masks: Iterable[str] = ()) -> None:
        self._entries: list[tuple[IPNetwork, bool]] = []
        #: Verdicts by address text, for the frontends' ACL check, and the same addresses
        #: oldest first; both emptied on every change.
        self._verdicts: dict[str, bool] = {}
        self._verdict_order: deque[str] = deque()
        #: Verdicts forgotten to make room for another client's.
        self.verdicts_evicted = 0
        for mask in masks:
            self.addMask(mask)

    def addMask(self, mask: Any) -> None:
        text = mask.decode() if isinstance(mask, bytes) else str(mask)
        negate = text.startswith("!")
        network = parse_network(text[1:] if negate else text)
        self._entries = [e for e in self._entries if e[0] != network]
        self._entries.append((network, not negate))
        self._entries.sort(key=lambda entry: entry[0].prefixlen, reverse=True)
        self._verdicts.clear()
        self._verdict_order.clear()

    def addMasks(self, masks: Any) -> None:
        for mask in _flatten(masks):
            self.addMask(mask)

    def addNMG(self, other: NetmaskGroup) -> None:
        for network, positive in other._entries:
            self.addMask(("" if positive else "!") + str(network))

    def match(self, address: Any) -> bool:
        if isinstance(address, ComboAddress):
            ip: IPAddress = address.ip
        else:
            ip = ipaddress.ip_address(str(address))
        return self.match_ip(ip)

    def match_ip(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network, positive in self._entries:
            if ip.version == network.version and ip in network:
                return positive
        return False

    def match_host(self, host: str, parse: Callable[[str], IPAddress]) -> bool:
        """``match_ip`` for an address as text (``parse`` turns it into an address);
        verdicts are kept, since clients come back again and again."""
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self.match_ip(parse(host))
            if len(self._verdicts) >= self.MAX_VERDICTS:
                # One out for one in: emptying the whole map here would make one query
                # from a new (perhaps spoofed) address pay for all the others.
                del self._verdicts[self._verdict_order.popleft()]
                self.verdicts_evicted += 1
            self._verdicts[host] = verdict
            self._verdict_order.append(host)
        return verdict

    def clear(self) -> None:
        self._entries.clear()
        self._verdicts.clear()
        self._verdict_order.clear()

    def size(self) -> int:
        return len(self._entries)

    def toString(self) -> str:
        return ", ".join(("" if pos else "!") + str(net) for net, pos in self._entries)

    def __str__(self) -> str:
        return self.toString()


class SuffixMatchNode:
    """Names and everything below them (dnsdist's SuffixMatchNode)."""

    def __init__(self, names: Iterable[Any] = ()) -> None:
        self._suffixes: set[dns.name.Name] = set()
        for name in names:
            self.add(name)

    def add(self, names: Any) -> None:
        for name in _flatten(names):
            self._suffixes.add(as_name(name).canonicalize())

    def remove(self, names: Any) -> None:
        for name in _flatten(names):
            self._suffixes.discard(as_name(name).canonicalize())

    def check(self, name: Any) -> bool:
        return self.match_name(as_name(name))

    def match_name(self, name: dns.name.Name) -> bool:
        if not self._suffixes:
            return False
        labels = name.canonicalize().labels
        suffixes = self._suffixes
        return any(dns.name.Name(labels[start:]) in suffixes for start in range(len(labels)))

    def getBestMatch(self, name: Any) -> DNSName | None:
        labels = as_name(name).canonicalize().labels
        for start in range(len(labels)):
            candidate = dns.name.Name(labels[start:])
            if candidate in self._suffixes:
                return DNSName(candidate)
        return None

    def __str__(self) -> str:
        return ", ".join(sorted(n.to_text() for n in self._suffixes))


class DNSNameSet:
    """An exact set of names (dnsdist's DNSNameSet)."""

    def __init__(self) -> None:
        self._names: set[dns.name.Name] = set()

    def add(self, names: Any) -> None:
        for name in _flatten(names):
            self._names.add(as_name(name).canonicalize())

    def check(self, name: Any) -> bool:
        return as_name(name).canonicalize() in self._names

    def contains(self, name: dns.name.Name) -> bool:
        return name.canonicalize() in self._names

    def delete(self, name: Any) -> int:
        key = as_name(name).canonicalize()
        present = key in self._names
        self._names.discard(key)
        return int(present)

    def clear(self) -> None:
        self._names.clear()

    def empty(self) -> bool:
        return not self._names

    def size(self) -> int:
        return len(self._names)

    def toString(self) -> str:
        return " ".join(sorted(n.to_text() for n in self._names))

    def __str__(self) -> str:
        return self.toString()
