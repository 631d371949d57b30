"""Cache keys: what makes two queries "the same" to the packet cache.

The header without its ID (flags and section counts), the question name compared
without ASCII case, QTYPE and QCLASS, everything after the question (the OPT record,
so the DO bit, the payload size and the EDNS options count) except the content of the
options in the skip set (EDNS Cookie and Padding unless told otherwise), and whether
the query goes out over UDP or TCP. Those bytes, normalised, are the key's ``ident``;
its 32-bit ``hash`` indexes the table.

Imports nothing above triodist.cache.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
import sys
from collections.abc import Callable

from triodist.wire.walk import HEADER_LEN, plain_name_end

_U16 = struct.Struct("!H")
_TYPE_CLASS = struct.Struct("!HH")

# The EDNS options a key looks at.
ECS = 8
COOKIE = 10
PADDING = 12

#: The longest normalised query kept as it is in an entry; longer ones are kept as a digest.
MAX_IDENT = 512

#: The EDNS options whose content is left out of the key unless asked otherwise:
#: a cookie is per client and padding is filler, neither changes the answer.
DEFAULT_SKIPPED_OPTIONS = frozenset({COOKIE, PADDING})


def default_key_hash(ident: bytes) -> int:
    """The 32-bit key of an ident.  Python's own ``hash`` of bytes (SipHash) is the
    fastest good hash at hand; it changes between processes, which only matters
    for ``dump`` output, never for correctness."""
    return hash(ident) & 0xFFFFFFFF


class CacheKey:
    """What ``PacketCache.make_key`` computed for one query.

    The lookup uses it, and the insert of the backend's answer reuses it, so the
    answer is filed under the question as it was asked (as dnsdist does).
    """

    __slots__ = (
        "dnssec_ok",
        "hash",
        "ident",
        "qclass",
        "qname",
        "qname_lower",
        "qtype",
        "query_flags",
        "subnet",
        "tcp",
        "udp_limit",
        "usable",
    )

    def __init__(
        self,
        hash: int,
        ident: bytes,
        qname: bytes,
        qname_lower: bytes,
        qtype: int,
        qclass: int,
        tcp: bool,
        query_flags: int,
        dnssec_ok: bool,
        subnet: str | None,
        usable: bool,
        udp_limit: int,
    ) -> None:
        #: The 32-bit key, as ``dump`` shows it.
        self.hash = hash
        #: The normalised bytes the hash was computed over; compared on every hit.
        self.ident = ident
        #: The question name's wire bytes as the client wrote them, and lowercased.
        self.qname = qname
        self.qname_lower = qname_lower
        self.qtype = qtype
        self.qclass = qclass
        self.tcp = tcp
        #: The header's flags word as read in host order (what dnsdist's dump shows).
        self.query_flags = query_flags
        self.dnssec_ok = dnssec_ok
        #: The EDNS Client Subnet of the query ("192.0.2.0/24"), with ``parseECS`` only.
        self.subnet = subnet
        #: False when the question could not be read: such a key never hits or stores.
        self.usable = usable
        #: Over UDP, the largest answer every client whose query has this key may be sent
        #: (512 bytes without EDNS, else the payload size, as mapped onto payloadRanks).
        self.udp_limit = udp_limit

    def __repr__(self) -> str:
        return f"CacheKey(hash={self.hash}, qname={self.qname!r}, qtype={self.qtype})"


def compute_key(
    data: bytes,
    question_end: int,
    tcp: bool,
    hash_function: Callable[[bytes], int],
    skip_options: frozenset[int],
    parse_ecs: bool,
    payload_ranks: tuple[int, ...],
) -> CacheKey:
    """The key of a query under a cache's settings (see ``PacketCache.make_key``, which
    keeps the keys it computed)."""
    size = len(data)
    qname_end = question_end - 4
    usable = qname_end > HEADER_LEN and question_end <= size and plain_name_end(data) == qname_end
    if not usable:
        qname_end = min(max(qname_end, HEADER_LEN), size)
        question_end = min(max(question_end, qname_end), size)
    head = data[2:HEADER_LEN]
    qname = data[HEADER_LEN:qname_end]
    qname_lower = qname.lower()
    type_class = data[qname_end:question_end]
    qtype, qclass = _TYPE_CLASS.unpack(type_class) if len(type_class) == 4 else (0, 0)
    dnssec_ok = False
    subnet: str | None = None
    tail: bytes
    if question_end >= size:
        tail = b""
    elif (
        head[2:] == b"\x00\x01\x00\x00\x00\x00\x00\x01"
        and question_end + 11 <= size
        and data[question_end : question_end + 3] == b"\x00\x00\x29"
    ):
        # Exactly one question and one additional record, an OPT at the root.
        tail, dnssec_ok, subnet = normalise_opt(
            data, question_end, skip_options, parse_ecs, payload_ranks
        )
    else:
        tail = b"R" + data[question_end:]
    ident = b"".join((head, qname_lower, type_class, tail, b"\x01" if tcp else b"\x00"))
    if subnet is not None:
        ident += b"S" + subnet.encode("ascii")
    if len(ident) > MAX_IDENT:
        # A query carrying large EDNS options (up to 64 KiB over TCP) must not make its
        # entry that large: a 256-bit digest stands in for it, still compared in full.
        ident = b"#" + hashlib.blake2b(ident, digest_size=32).digest()
    # Positional arguments: this runs for every query that meets a cache.
    return CacheKey(
        hash_function(ident) & 0xFFFFFFFF,
        ident,
        qname,
        qname_lower,
        qtype,
        qclass,
        tcp,
        # dnsdist's dump shows the flags word as it sits in memory (host order).
        int.from_bytes(head[:2], sys.byteorder),
        dnssec_ok,
        subnet,
        usable,
        # The OPT header follows the b"E": its class field is the payload size.
        max(512, _U16.unpack_from(tail, 4)[0]) if tail[:1] == b"E" else 512,
    )


def normalise_opt(
    query: bytes,
    pos: int,
    skip_options: frozenset[int],
    parse_ecs: bool,
    payload_ranks: tuple[int, ...],
) -> tuple[bytes, bool, str | None]:
    """The part of a query after its question when that part is exactly one OPT
    record: the OPT header (payload size mapped onto ``payloadRanks``), then each
    option, whole or, for a skipped option, its code and length only."""
    size = len(query)
    dnssec_ok = bool(query[pos + 7] & 0x80)
    header = query[pos : pos + 11]
    if payload_ranks:
        payload = _U16.unpack_from(header, 3)[0]
        rank = 0
        for candidate in payload_ranks:
            if candidate > payload:
                break
            rank = candidate
        if rank:
            header = header[:3] + _U16.pack(rank) + header[5:]
    rdlen = _U16.unpack_from(header, 9)[0]
    pos += 11
    if rdlen == 0 or rdlen > size - pos:
        return b"E" + header + query[pos:], dnssec_ok, None
    parts = [b"E", header]
    subnet: str | None = None
    options_end = pos + rdlen
    skip = skip_options
    while pos + 4 <= options_end:
        code, length = _TYPE_CLASS.unpack_from(query, pos)
        if pos + 4 + length > options_end:
            break
        if code in skip:
            parts.append(query[pos : pos + 4])
        else:
            parts.append(query[pos : pos + 4 + length])
        # With parseECS the subnet is compared even when the option is left out of
        # the hash (skipOptions), so one subnet's answer never reaches another.
        if code == ECS and parse_ecs:
            subnet = subnet_text(query[pos + 4 : pos + 4 + length])
        pos += 4 + length
    if pos < size:
        parts.append(query[pos:])
    return b"".join(parts), dnssec_ok, subnet


def subnet_text(option: bytes) -> str | None:
    """The source subnet of an EDNS Client Subnet option's data, as text."""
    if len(option) < 4:
        return None
    family, source = _U16.unpack_from(option, 0)[0], option[2]
    address = option[4:]
    try:
        if family == 1 and source <= 32:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                address.ljust(4, b"\0")[:4]
            )
        elif family == 2 and source <= 128:
            ip = ipaddress.IPv6Address(address.ljust(16, b"\0")[:16])
        else:
            return None
    except ValueError:
        return None
    return str(ipaddress.ip_network(f"{ip}/{source}", strict=False))
