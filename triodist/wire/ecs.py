"""EDNS Client Subnet (RFC 7871) on the wire: the option a query carries to tell a backend
where its client is, added on the way out and taken back out of the answer.

- :func:`option_value` — the option's data for an address and a source prefix length;
- :func:`parse_option` — an option's data read back (network and scope), or None;
- :func:`add_to_query` — give a query the option, the way dnsdist does it (see there);
- :func:`restore_answer` — take out of a backend's answer what :func:`add_to_query`
  added, and say whether the answer's scope was zero;
- :class:`ECSState` — what one query remembers between the two.

The bytes are hostile: both edits raise :class:`~triodist.wire.edns.EDNSError` (the
bytes unchanged) where the records cannot be walked; the query path decides what that
means (a query is dropped, as dnsdist drops one it could not add the option to; an
answer that cannot be walked is dropped, as dnsdist's fails).

Imports nothing from triodist but the EDNS option editing and the walker.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from triodist.wire import edns
from triodist.wire.walk import counts

#: The option's code.
ECS = 8
_FAMILY_V4 = 1
_FAMILY_V6 = 2
_HEAD = struct.Struct("!HBB")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ECSState:
    """What a query remembers of its client subnet: the subnet a rule chose
    (``SetECSAction``), what was added to the query (so that the answer loses it again),
    and the cache key of the query as it was before (``key_no_ecs``: an answer whose
    scope is zero is filed under it, for every client, as dnsdist's zero-scope feature
    does). Made only for a query that meets ECS."""

    __slots__ = ("ecs_added", "edns_added", "key_no_ecs", "subnet")

    def __init__(self, subnet: Network | None = None) -> None:
        self.subnet = subnet
        self.edns_added = False
        self.ecs_added = False
        self.key_no_ecs: object | None = None


def option_value(address: str, prefix: int) -> bytes:
    """The ECS option's data for ``address`` cut to ``prefix`` bits (clamped to the
    family's length): family, source prefix length, scope 0, then only the address bytes
    the prefix covers, the bits past it zero (RFC 7871 6). Raises ValueError for what is
    not an IPv4 or IPv6 address.

    Runs for every query given ECS: the bytes are cut and masked by hand, which costs a
    fifth of building an ``ipaddress`` network."""
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
        family = _FAMILY_V4
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, address)
        except OSError:
            raise ValueError(f"not an IP address: {address!r}") from None
        family = _FAMILY_V6
    prefix = max(0, min(int(prefix), len(packed) * 8))
    kept = bytearray(packed[: (prefix + 7) // 8])
    if prefix % 8:
        kept[-1] &= (0xFF << (8 - prefix % 8)) & 0xFF
    return _HEAD.pack(family, prefix, 0) + bytes(kept)


def network_value(network: Network) -> bytes:
    """The option's data for a whole subnet (``SetECSAction``'s)."""
    return option_value(str(network.network_address), network.prefixlen)


def parse_option(value: bytes) -> tuple[Network, int] | None:
    """The source subnet and the scope prefix length of an option's data; None when the
    data is not a valid ECS option (unknown family, a prefix over the family's length, an
    address of the wrong length)."""
    if len(value) < 4:
        return None
    family, source, scope = _HEAD.unpack_from(value, 0)
    width = {_FAMILY_V4: 4, _FAMILY_V6: 16}.get(family)
    if width is None or source > width * 8 or len(value) - 4 != (source + 7) // 8:
        return None
    raw = bytes(value[4:]).ljust(width, b"\0")
    address = ipaddress.ip_address(raw)
    return ipaddress.ip_network(f"{address}/{source}", strict=False), scope


def add_to_query(
    data: bytearray, value: bytes, *, override: bool, max_size: int = edns.MAX_MESSAGE
) -> tuple[bool, bool]:
    """Give the query the ECS option with ``value``; (OPT record added, option added).

    As dnsdist 1.7: a query without an OPT record gets one (payload size 512) holding
    only the option; a query whose OPT record has no ECS option gets it after the
    others; one that has it keeps it, unless ``override``, when it is replaced: where it
    sits when the OPT record is the only record after the question, else (records in
    the answer or authority section, or more than one additional record) every ECS
    option is taken out and the new one goes last. Neither an OPT record nor an option
    that was already there counts as added: the answer keeps them.

    Raises :class:`EDNSError` (the bytes unchanged) as :func:`triodist.wire.edns.set_option`.
    """
    _, ancount, nscount, arcount = counts(data) if len(data) >= 12 else (0, 0, 0, 0)
    slow_path = bool(ancount or nscount or arcount > 1)
    if slow_path and override and edns.get_option(data, ECS) is not None:
        work = bytearray(data)
        edns.remove_option(work, ECS)
        edns.set_option(work, ECS, value, max_size=max_size)
        data[:] = work
        return False, False
    done = edns.set_option(data, ECS, value, replace=override, max_size=max_size)
    if done is edns.Edit.ADDED_OPT:
        return True, True
    return False, done is edns.Edit.ADDED


def restore_answer(data: bytearray, state: ECSState) -> bool:
    """Take out of a backend's answer the OPT record or the ECS option ``state`` says
    was added to its query; True when the answer's ECS option (before it went) had a
    scope prefix length of zero: valid for every client.

    Raises :class:`EDNSError` (the bytes unchanged) when the answer's records cannot be
    walked. When only the option was added, an OPT record whose options cannot be read
    is left as it is (nothing in it can be told apart), as dnsdist leaves it."""
    if not (state.edns_added or state.ecs_added):
        return False
    value = edns.strip(data, ECS, whole_opt=state.edns_added)
    return value is not None and len(value) >= 4 and value[3] == 0
