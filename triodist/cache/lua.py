"""The work behind the packet cache's Lua methods that look entries up by name or by
address (``expungeByName``, ``getAddressListByDomain``, ``getDomainListByAddress``):
names compared as lowercased wire bytes, addresses read from the stored answers.

Imports nothing above triodist.cache.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import dns.exception
import dns.name

from triodist.cache.options import lua_list
from triodist.cache.store import Entry, answer_addresses
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.address import ComboAddress
from triodist.wire.names import DNSName, as_name

ANY = 255
NOERROR = 0


def name_wire(value: Any) -> bytes:
    """A name given from Lua or Python (a string, a DNSName, a dnspython name) as
    lowercased wire bytes.  DNSName is recognised by its ``name`` attribute."""
    inner = getattr(value, "name", None)
    if isinstance(inner, dns.name.Name):
        value = inner
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        value = as_name(value)
    if isinstance(value, dns.name.Name):
        return (value.to_wire() or b"").lower()
    raise TypeError(f"expected a DNS name, got {lua_describe(value)}")


def is_subdomain_wire(name: bytes, parent: bytes) -> bool:
    """Whether ``name`` (lowercased wire) equals ``parent`` or lies below it, cut at
    label boundaries only (a label may contain any byte)."""
    if not name.endswith(parent):
        return False
    pos = 0
    end = len(name)
    while pos < end:
        if name[pos:] == parent:
            return True
        length = name[pos]
        if length == 0 or length > 63:
            return False
        pos += length + 1
    return False


def entries_named(
    table: Mapping[int, Entry], name: Any, qtype: Any, suffix_match: Any
) -> list[int]:
    """The keys of the entries for ``name`` (a string, a DNSName, or a list of either)
    and ``qtype`` (255, ANY, for all types); with ``suffix_match``, also of every name
    below it."""
    if (
        isinstance(name, str | bytes)
        or isinstance(getattr(name, "name", None), dns.name.Name)
        or isinstance(name, dns.name.Name)
    ):
        targets = [name_wire(name)]
    else:
        targets = [name_wire(item) for item in lua_list(name)]
    wanted = ANY if qtype is None else int(qtype)
    suffix = bool(suffix_match)
    victims = []
    for hash_, entry in table.items():
        if wanted != ANY and entry.qtype != wanted:
            continue
        qname = entry.qname.lower()
        for target in targets:
            if qname == target or (suffix and is_subdomain_wire(qname, target)):
                victims.append(hash_)
                break
    return victims


def addresses_of_domain(table: Mapping[int, Entry], domain: Any) -> list[ComboAddress]:
    """The addresses in the A and AAAA records of the answer section of the NOERROR
    answers cached for ``domain``."""
    target = name_wire(domain)
    found: dict[bytes, None] = {}
    for entry in table.values():
        if entry.qname.lower() == target and entry.rcode == NOERROR:
            for raw in answer_addresses(entry.response):
                found.setdefault(raw)
    return [ComboAddress(str(ipaddress.ip_address(raw))) for raw in sorted(found)]


def domains_of_address(table: Mapping[int, Entry], addr: Any) -> list[DNSName]:
    """The names whose cached NOERROR answer has ``addr`` (a ComboAddress or a string)
    in an A or AAAA record of its answer section."""
    ip = getattr(addr, "ip", None)
    if ip is None:
        ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
    wanted = ip.packed
    names: dict[bytes, bytes] = {}
    for entry in table.values():
        if entry.rcode == NOERROR and wanted in answer_addresses(entry.response):
            names.setdefault(entry.qname.lower(), entry.qname)
    result = []
    for wire in sorted(names):
        try:
            result.append(DNSName(dns.name.from_wire(names[wire], 0)[0]))
        except dns.exception.DNSException:
            continue
    return result
