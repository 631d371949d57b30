"""The packet cache: answers kept as wire bytes, served again with their TTLs aged.

A cache belongs to a pool (``getPool(""):setCache(newPacketCache(10000))``).  For
each query the pipeline computes a :class:`CacheKey` with :meth:`PacketCache.make_key`,
asks :meth:`PacketCache.lookup`, and on a miss hands the backend's answer to
:meth:`PacketCache.insert` under the same key.  Nothing here opens a socket or
reads a clock: the caller passes ``now`` (``trio.current_time()``), so a mock
clock drives expiry in tests exactly as it drives the server.

What makes two queries "the same" (as dnsdist decides it): the header without
its ID (flags and section counts), the question name compared without ASCII
case, QTYPE and QCLASS, everything after the question (the OPT record, so the
DO bit, the payload size and the EDNS options count) except the content of the
options in the skip set (EDNS Cookie and Padding unless told otherwise), and
whether the query goes out over UDP or TCP.  Those bytes, normalised, are the
key's ``ident``; its 32-bit ``hash`` indexes the table.  A lookup compares the
whole ``ident`` before serving, so two questions that share a hash never get
each other's answer (dnsdist compares the name, type, class, flags and DO bit
after a hash match; comparing the ident is as cheap and also tells apart two
queries that differ only in an EDNS option).

Answers are walked once, when inserted, by a small record walker over the
bytes; it notes where each TTL sits, so that serving a hit is a copy, the
query's ID and name written over the stored ones (the client sees its own
0x20 case), and the TTLs patched in place.  A response the walker cannot
follow (a name running off the end, a record cut short, counts larger than
the records present) is not cached; nothing here raises on bad bytes.

Deliberate difference from dnsdist: when the cache is full, dnsdist refuses new
entries until its periodic cleaning removes expired ones, so a cache that
fills with long-lived answers stops caching anything new for as long as they
live.  Here an insert into a full cache evicts one entry instead: an expired
one if one of the oldest few is expired, otherwise the oldest inserted entry
(the table keeps insertion order, so finding it costs O(1)).  New answers are
always cached, and ``len(cache) <= max_entries`` always holds.

Other deliberate differences, each small:

- Rcodes other than NOERROR, NXDOMAIN, SERVFAIL and REFUSED are never cached
  (dnsdist would cache, say, a NOTIMP answer that carries records).
- A response the walker cannot follow is never cached (dnsdist caches a
  response whose records are cut short, with the TTLs it managed to read).
- A stale entry is served with every TTL set to ``staleTTL`` even when that
  is 0 (dnsdist leaves the TTLs as they were stored when ``staleTTL`` is 0).
- ``skipOptions`` adds to the default skip set (Cookie, Padding); recent
  dnsdist replaces it with Cookie plus the given list.
- Entries are evicted and expunged oldest first; dnsdist's order is that of
  its hash table.
- Unknown options and values of the wrong type in ``newPacketCache`` are
  errors; dnsdist logs a warning and ignores them.
- A negative answer lives no longer than its SOA's MINIMUM field either
  (RFC 2308); dnsdist reads only the record TTLs.
- A truncated answer is cached only with ``truncatedTTL``, records or not;
  dnsdist caches one that carries records for their TTL.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import random
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype

from triodist.util.luavalues import describe as lua_describe

log = logging.getLogger("triodist.cache.packetcache")

__all__ = ["CacheKey", "PacketCache", "default_key_hash"]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TYPE_CLASS = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")
_COUNTS = struct.Struct("!HHHH")

_HEADER_LEN = 12
_QR = 0x80  # in the third header byte
_TC = 0x02  # in the third header byte

# Record and option codes the cache looks at.
_A = 1
_SOA = 6
_AAAA = 28
_OPT = 41
_IXFR = 251
_AXFR = 252
_ANY = 255
_CLASS_IN = 1
_ECS = 8
_COOKIE = 10
_PADDING = 12

_NOERROR = 0
_NXDOMAIN = 3
_SERVFAIL = 2
_REFUSED = 5

#: How many of the oldest entries an insert into a full cache looks at for an
#: expired one before it evicts the oldest: enough to find the expired ones that
#: pile up at the old end, few enough to keep an insert O(1).
EVICTION_SCAN = 8
#: The longest normalised query kept as it is in an entry; longer ones are kept as a digest.
MAX_IDENT = 512

#: The EDNS options whose content is left out of the key unless asked otherwise:
#: a cookie is per client and padding is filler, neither changes the answer.
DEFAULT_SKIPPED_OPTIONS = frozenset({_COOKIE, _PADDING})


def default_key_hash(ident: bytes) -> int:
    """The 32-bit key of an ident.  Python's own ``hash`` of bytes (SipHash) is the
    fastest good hash at hand; it changes between processes, which only matters
    for ``dump`` output, never for correctness."""
    return hash(ident) & 0xFFFFFFFF


class CacheKey:
    """What :meth:`PacketCache.make_key` computed for one query.

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


class _Entry:
    """One cached answer and what serving it needs, found once at insert time."""

    __slots__ = (
        "added",
        "dnssec_ok",
        "ident",
        "qclass",
        "qname",
        "qname_len",
        "qtype",
        "query_flags",
        "rcode",
        "response",
        "shuffle_len",
        "shuffle_offsets",
        "subnet",
        "tc",
        "tcp",
        "ttl_offsets",
        "ttls",
        "validity",
    )

    def __init__(
        self,
        key: CacheKey,
        response: bytes,
        added: float,
        validity: float,
        walk: _Walk,
    ) -> None:
        self.ident = key.ident
        self.qname = key.qname
        self.qtype = key.qtype
        self.qclass = key.qclass
        self.tcp = key.tcp
        self.query_flags = key.query_flags
        self.dnssec_ok = key.dnssec_ok
        self.subnet = key.subnet
        self.response = response
        self.added = added
        self.validity = validity
        self.rcode = response[3] & 0x0F
        self.tc = bool(response[2] & _TC)
        # Where the question name sits in the response (0: header-only answer).
        self.qname_len = len(key.qname) if walk.qdcount else 0
        self.ttl_offsets = walk.ttl_offsets
        self.ttls = walk.ttls
        self.shuffle_offsets = walk.shuffle_offsets
        self.shuffle_len = walk.shuffle_len


class _Walk:
    """What the record walker learnt about a response."""

    __slots__ = (
        "min_ttl",
        "qdcount",
        "question_end",
        "seen_auth_soa",
        "shuffle_len",
        "shuffle_offsets",
        "ttl_offsets",
        "ttls",
    )

    def __init__(self) -> None:
        self.qdcount = 0
        self.question_end = _HEADER_LEN
        #: The smallest TTL of the records before the first OPT (None: no record).
        self.min_ttl: int | None = None
        self.seen_auth_soa = False
        #: Offsets of the TTL fields of every record except OPT, and their values.
        self.ttl_offsets: tuple[int, ...] = ()
        self.ttls: tuple[int, ...] = ()
        #: Offsets of the RDATA of the first run of A or AAAA records of one name in
        #: the answer section (two at least), all ``shuffle_len`` bytes long.
        self.shuffle_offsets: tuple[int, ...] = ()
        self.shuffle_len = 0


def _skip_name(data: bytes, pos: int, end: int) -> int:
    """The offset just past the name at ``pos``, or -1 if it is not a name.

    A compression pointer ends the name where it sits (its target is not
    followed: only the length matters here)."""
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2 if pos + 2 <= end else -1
        if length > 63:
            return -1  # the 0x40 and 0x80 label types are obsolete or unused
        pos += length + 1
    return -1


def _plain_name_end(data: bytes) -> int:
    """The offset just past the uncompressed name that starts a query's question,
    or -1.  Only plain labels make a name whose bytes can be compared as they are."""
    pos = _HEADER_LEN
    end = len(data)
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length > 63:
            return -1
        pos += length + 1
    return -1


def _walk_response(data: bytes, want_shuffle: bool) -> _Walk | None:
    """Walk the question and every record of a response; None if it is malformed."""
    end = len(data)
    if end < _HEADER_LEN:
        return None
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(data, 4)
    if qdcount > 1:
        return None
    walk = _Walk()
    walk.qdcount = qdcount
    pos = _HEADER_LEN
    if qdcount:
        pos = _skip_name(data, pos, end)
        if pos < 0 or pos + 4 > end:
            return None
        pos += 4
        walk.question_end = pos
    offsets: list[int] = []
    ttls: list[int] = []
    min_ttl: int | None = None
    seen_opt = False
    authority_end = ancount + nscount
    # The first run of A/AAAA records of one owner in the answer section.
    run: list[int] = []
    run_type = 0
    run_owner = b""
    run_len = 0
    run_open = want_shuffle and ancount > 1
    for index in range(ancount + nscount + arcount):
        owner_start = pos
        pos = _skip_name(data, pos, end)
        if pos < 0 or pos + 10 > end:
            return None
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        rdata = pos + 10
        if rdata + rdlen > end:
            return None
        if rtype == _OPT:
            # The OPT "TTL" is the extended rcode and flags: never aged, never a TTL.
            seen_opt = True
        else:
            offsets.append(pos + 4)
            ttls.append(ttl)
            if not seen_opt:
                if min_ttl is None or ttl < min_ttl:
                    min_ttl = ttl
                if rtype == _SOA and rclass == _CLASS_IN and ancount <= index < authority_end:
                    walk.seen_auth_soa = True
                    # RFC 2308: a negative answer lives no longer than the SOA's MINIMUM
                    # field either (its last 32 bits), whatever TTL the SOA record carries.
                    if rdlen >= 22:
                        minimum = _U32.unpack_from(data, rdata + rdlen - 4)[0]
                        if minimum < min_ttl:
                            min_ttl = minimum
        if run_open and index < ancount:
            if rtype in (_A, _AAAA):
                owner = data[owner_start:pos]
                if not run:
                    run_type, run_owner, run_len = rtype, owner, rdlen
                    run.append(rdata)
                elif rtype == run_type and owner == run_owner and rdlen == run_len:
                    run.append(rdata)
                else:
                    run_open = False
            elif run:
                run_open = False
        pos = rdata + rdlen
    walk.min_ttl = min_ttl
    walk.ttl_offsets = tuple(offsets)
    walk.ttls = tuple(ttls)
    if len(run) > 1:
        walk.shuffle_offsets = tuple(run)
        walk.shuffle_len = run_len
    return walk


def _subnet_text(option: bytes) -> str | None:
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


def _name_wire(value: Any) -> bytes:
    """A name given from Lua or Python (a string, a DNSName, a dnspython name) as
    lowercased wire bytes.  DNSName is recognised by its ``name`` attribute so that
    this module does not import the DNS objects (and with them Trio)."""
    inner = getattr(value, "name", None)
    if isinstance(inner, dns.name.Name):
        value = inner
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        value = dns.name.from_text(value)
    if isinstance(value, dns.name.Name):
        return (value.to_wire() or b"").lower()
    raise TypeError(f"expected a DNS name, got {lua_describe(value)}")


def _is_subdomain_wire(name: bytes, parent: bytes) -> bool:
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


def _values(value: Any) -> list[Any]:
    """A list given from Lua: a Python list, a dict ``{1: a, 2: b}`` or a Lua table."""
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    if isinstance(value, Mapping):
        return [value[k] for k in sorted(value, key=lambda k: (not isinstance(k, int), k))]
    items = getattr(value, "items", None)  # a lupa table
    if callable(items) and not isinstance(value, str | bytes):
        pairs = list(items())
        return [v for _, v in sorted(pairs, key=lambda kv: (not isinstance(kv[0], int), kv[0]))]
    raise ValueError(f"expected a list, got {lua_describe(value)}")


def _as_int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' must be an integer, got {lua_describe(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"'{name}' must be an integer, got {lua_describe(value)}")
        value = int(value)
    if value < minimum:
        raise ValueError(f"'{name}' must be at least {minimum}, got {value}")
    return int(value)


def _as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be a boolean, got {lua_describe(value)}")
    return value


def _as_codes(value: Any, name: str) -> list[int]:
    try:
        items = _values(value)
    except ValueError:
        raise ValueError(
            f"'{name}' must be a list of integers, got {lua_describe(value)}"
        ) from None
    return [_as_int(item, name) for item in items]


# newPacketCache's options: name -> (keyword of PacketCache.__init__, kind).
_LUA_OPTIONS: dict[str, tuple[str, str]] = {
    "maxTTL": ("max_ttl", "int"),
    "minTTL": ("min_ttl", "int"),
    "temporaryFailureTTL": ("temporary_failure_ttl", "int"),
    "maxNegativeTTL": ("max_negative_ttl", "int"),
    "staleTTL": ("stale_ttl", "int"),
    "dontAge": ("dont_age", "bool"),
    "keepStaleData": ("keep_stale_data", "bool"),
    "numberOfShards": ("number_of_shards", "int"),
    "deferrableInsertLock": ("deferrable_insert_lock", "bool"),
    "skipOptions": ("skip_options", "codes"),
    "cookieHashing": ("cookie_hashing", "bool"),
    "maximumEntrySize": ("maximum_entry_size", "int"),
    "truncatedTTL": ("truncated_ttl", "int"),
    "shuffle": ("shuffle", "bool"),
    "parseECS": ("parse_ecs", "bool"),
    "ecsParsing": ("parse_ecs", "bool"),  # the name before dnsdist 1.4
    "payloadRanks": ("payload_ranks", "codes"),
}


#: How many computed keys a cache keeps per transport (``PacketCache.make_key``); the
#: map is emptied when full. Only queries of up to ``KEPT_QUERY_SIZE`` bytes are kept,
#: so the map holds about 4 MiB at most.
KEYS_KEPT = 4096
KEPT_QUERY_SIZE = 512


class PacketCache:
    """dnsdist's packet cache (``newPacketCache``), for one process.

    The Python API (``make_key``, ``lookup``, ``insert``, ``purge_expired``) is
    what the pipeline calls; the camelCase methods are dnsdist's ``PacketCache``
    methods, callable from Lua with dnsdist's names and arguments.

    Lua-facing methods that need the time (``purgeExpired``, ``dump``) read
    ``clock`` when the integrator set it (``cache.clock = trio.current_time``),
    else use the latest ``now`` any call passed in.  ``printStats`` and ``dump``
    report on ``out`` (standard output unless replaced).
    """

    def __init__(
        self,
        max_entries: int,
        *,
        max_ttl: int = 86400,
        min_ttl: int = 0,
        temporary_failure_ttl: int = 60,
        max_negative_ttl: int = 3600,
        stale_ttl: int = 60,
        dont_age: bool = False,
        keep_stale_data: bool = False,
        number_of_shards: int = 1,
        skip_options: Iterable[int] = (),
        cookie_hashing: bool = False,
        maximum_entry_size: int = 4096,
        truncated_ttl: int = 0,
        shuffle: bool = False,
        parse_ecs: bool = False,
        payload_ranks: Iterable[int] = (),
        deferrable_insert_lock: bool = True,
    ) -> None:
        if max_entries <= 0:
            raise ValueError(f"the maximum number of entries must be positive, got {max_entries}")
        self.max_entries = int(max_entries)
        self.max_ttl = max_ttl
        self.min_ttl = min_ttl
        self.temporary_failure_ttl = temporary_failure_ttl
        self.max_negative_ttl = max_negative_ttl
        self.stale_ttl = stale_ttl
        self.dont_age = dont_age
        #: Read by the pipeline: no cleaning while the pool has no server up.
        self.keep_stale_data = keep_stale_data
        # One table serves one process; shards only spread dnsdist's locks.
        self.number_of_shards = max(1, number_of_shards)
        self.deferrable_insert_lock = deferrable_insert_lock
        skipped = set(DEFAULT_SKIPPED_OPTIONS) | {int(code) for code in skip_options}
        if cookie_hashing:
            skipped.discard(_COOKIE)
        self.cookie_hashing = cookie_hashing
        self.skip_options: frozenset[int] = frozenset(skipped)
        self.maximum_entry_size = maximum_entry_size
        self.truncated_ttl = truncated_ttl
        self.shuffle = shuffle
        self.parse_ecs = parse_ecs
        self.payload_ranks: tuple[int, ...] = tuple(
            sorted({r for r in payload_ranks if 512 <= r <= maximum_entry_size})
        )
        #: Replaceable, so that a test can force two questions onto one key.
        self.hash_function: Callable[[bytes], int] = default_key_hash
        #: Where ``printStats`` and ``dump`` report.
        self.out: TextIO = sys.stdout
        #: The time source of the Lua-facing methods; None: the latest ``now`` seen.
        self.clock: Callable[[], float] | None = None
        #: The order of the A/AAAA records served when ``shuffle`` is on.
        self.random = random.Random()
        self._last_now = 0.0
        # Keys already computed, by the query's bytes after its ID (one map for UDP, one
        # for TCP): a client asks the same question with the same bytes again and again,
        # and a key costs ~2.3 µs to compute against ~0.2 µs to find (make_key).
        self._keys: tuple[dict[bytes, tuple[int, CacheKey]], dict[bytes, tuple[int, CacheKey]]]
        self._keys = ({}, {})
        # Insertion order is eviction order: the first item is the oldest entry.
        self._map: OrderedDict[int, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.deferred_lookups = 0  # always 0: no lock to find busy
        self.deferred_inserts = 0  # always 0: no lock to find busy
        self.lookup_collisions = 0
        self.insert_collisions = 0
        self.ttl_too_shorts = 0
        self.cleanup_count = 0
        #: Entries removed to make room for new ones (not in dnsdist's statistics).
        self.evictions = 0

    @classmethod
    def from_lua(cls, max_entries: Any, options: Mapping[str, Any] | None) -> PacketCache:
        """``newPacketCache(maxEntries, {options})``, with dnsdist's option names.

        A bad value or an unknown option raises ``ValueError`` naming it.  As in
        dnsdist, the number of shards defaults to 20 and never exceeds the number of
        entries, and a ``maximumEntrySize`` smaller than a DNS header is ignored.
        """
        try:
            entries = _as_int(max_entries, "maxEntries", minimum=1)
        except ValueError:
            raise ValueError(
                "the maximum number of entries must be a positive integer, "
                f"got {lua_describe(max_entries)}"
            ) from None
        kwargs: dict[str, Any] = {"number_of_shards": 20}
        for name, value in (options or {}).items():
            spec = _LUA_OPTIONS.get(str(name))
            if spec is None:
                raise ValueError(f"unknown option '{name}'")
            keyword, kind = spec
            if kind == "int":
                kwargs[keyword] = _as_int(value, str(name))
            elif kind == "bool":
                kwargs[keyword] = _as_bool(value, str(name))
            else:
                kwargs[keyword] = _as_codes(value, str(name))
        size = kwargs.get("maximum_entry_size")
        if size is not None and size < _HEADER_LEN:
            log.warning(
                "newPacketCache: maximumEntrySize %d is smaller than a DNS header, using 4096",
                size,
            )
            del kwargs["maximum_entry_size"]
        if kwargs["number_of_shards"] > entries:
            kwargs["number_of_shards"] = entries
        return cls(entries, **kwargs)

    # --- the pipeline's side ------------------------------------------------------------

    def make_key(self, query: bytes | bytearray, question_end: int, tcp: bool) -> CacheKey:
        """The key of a query; ``question_end`` is the offset just past its first
        question's QTYPE and QCLASS.  Never raises: a question that cannot be read
        gives a key that is never served nor stored.

        A key depends only on the query's bytes after its ID, ``question_end``,
        ``tcp`` and the cache's own settings, so the last ``KEYS_KEPT`` keys are kept
        and shared (a key is never changed once made)."""
        data = query if isinstance(query, bytes) else bytes(query)
        keys = self._keys[tcp]
        tail = data[2:]
        known = keys.get(tail)
        if known is not None and known[0] == question_end:
            return known[1]
        key = self._compute_key(data, question_end, tcp)
        if len(tail) <= KEPT_QUERY_SIZE:  # large queries (TCP, big EDNS) are not kept
            if len(keys) >= KEYS_KEPT:
                keys.clear()
            keys[tail] = (question_end, key)
        return key

    def _compute_key(self, data: bytes, question_end: int, tcp: bool) -> CacheKey:
        size = len(data)
        qname_end = question_end - 4
        usable = (
            qname_end > _HEADER_LEN and question_end <= size and _plain_name_end(data) == qname_end
        )
        if not usable:
            qname_end = min(max(qname_end, _HEADER_LEN), size)
            question_end = min(max(question_end, qname_end), size)
        head = data[2:_HEADER_LEN]
        qname = data[_HEADER_LEN:qname_end]
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
            tail, dnssec_ok, subnet = self._normalise_opt(data, question_end)
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
            self.hash_function(ident) & 0xFFFFFFFF,
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

    def _normalise_opt(self, query: bytes, pos: int) -> tuple[bytes, bool, str | None]:
        """The part of a query after its question when that part is exactly one OPT
        record: the OPT header (payload size mapped onto ``payloadRanks``), then each
        option, whole or, for a skipped option, its code and length only."""
        size = len(query)
        dnssec_ok = bool(query[pos + 7] & 0x80)
        header = query[pos : pos + 11]
        if self.payload_ranks:
            payload = _U16.unpack_from(header, 3)[0]
            rank = 0
            for candidate in self.payload_ranks:
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
        skip = self.skip_options
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
            if code == _ECS and self.parse_ecs:
                subnet = _subnet_text(query[pos + 4 : pos + 4 + length])
            pos += 4 + length
        if pos < size:
            parts.append(query[pos:])
        return b"".join(parts), dnssec_ok, subnet

    def lookup(
        self,
        key: CacheKey,
        query: bytes | bytearray,
        now: float,
        *,
        allow_expired: float = 0,
        truncated_ok: bool = True,
        record_miss: bool = True,
    ) -> bytearray | None:
        """The cached answer to ``query`` (with its ID and name case, TTLs aged), or None;
        a fresh copy, the caller's to change and send.

        ``allow_expired`` > 0 also serves an entry that expired less than that many
        seconds ago, every TTL set to ``staleTTL`` (dnsdist's stale answers, for a
        pool with no server up).  ``truncated_ok=False`` refuses a TC=1 answer and
        ``record_miss=False`` does not count a miss (dnsdist's second lookup for
        DoH).  Counts hits, misses and lookup collisions.
        """
        self._last_now = now
        if not key.usable or key.qtype == _AXFR or key.qtype == _IXFR:
            if record_miss:
                self.misses += 1
            return None
        entry = self._map.get(key.hash)
        if entry is None:
            if record_miss:
                self.misses += 1
            return None
        stale = False
        if entry.validity <= now:
            if now - entry.validity >= allow_expired:
                if record_miss:
                    self.misses += 1
                return None
            stale = True
        if entry.ident != key.ident:
            self.lookup_collisions += 1
            return None
        if entry.tc and not truncated_ok:
            return None
        out = bytearray(entry.response)
        out[0:2] = query[0:2]
        qlen = entry.qname_len
        if qlen and len(key.qname) == qlen:
            out[_HEADER_LEN : _HEADER_LEN + qlen] = key.qname
        if not self.dont_age and entry.ttl_offsets:
            pack = _U32.pack_into
            if stale:
                for offset in entry.ttl_offsets:
                    pack(out, offset, self.stale_ttl)
            else:
                age = int(now - entry.added)
                if age > 0:
                    for offset, ttl in zip(entry.ttl_offsets, entry.ttls, strict=True):
                        pack(out, offset, ttl - age if ttl > age else 0)
        if self.shuffle and entry.shuffle_offsets:
            width = entry.shuffle_len
            offsets = entry.shuffle_offsets
            chunks = [bytes(out[o : o + width]) for o in offsets]
            self.random.shuffle(chunks)
            for offset, chunk in zip(offsets, chunks, strict=True):
                out[offset : offset + width] = chunk
        self.hits += 1
        return out

    def insert(
        self,
        key: CacheKey,
        response: bytes | bytearray,
        now: float,
        *,
        temp_failure_ttl: int | None = None,
        max_udp: int = 65_535,
    ) -> bool:
        """Cache ``response`` under ``key`` if dnsdist's rules allow it; whether it was
        stored.  ``temp_failure_ttl`` overrides ``temporaryFailureTTL`` for this
        answer (dnsdist's ``SetTempFailureCacheTTLAction``); ``max_udp`` is the largest
        UDP answer sent to anyone (``setMaxUDPAnswerSize``).

        Stored: NOERROR and NXDOMAIN for the smallest TTL of their records (OPT
        aside), at most ``maxTTL``, or at most ``maxNegativeTTL`` for NXDOMAIN and for
        NOERROR with an SOA in the authority section; refused (and counted in
        ``ttlTooShorts``) below ``minTTL``.  SERVFAIL and REFUSED for
        ``temporaryFailureTTL`` (0: not at all).  An answer without any record is not
        stored, unless it is truncated and ``truncatedTTL`` is set.  Never stored: an
        answer to another question, larger than ``maximumEntrySize`` (or, for a UDP
        key, than its clients may be sent over UDP), to AXFR/IXFR,
        other rcodes, or bytes the record walker cannot follow.
        """
        self._last_now = now
        size = len(response)
        if not key.usable or size < _HEADER_LEN or size > self.maximum_entry_size:
            return False
        if not key.tcp and size > min(key.udp_limit, max_udp):
            # Not what the clients asking over UDP with this key may be sent: they get it
            # truncated, and it is not kept for them.
            return False
        if key.qtype == _AXFR or key.qtype == _IXFR:
            return False
        data = bytes(response)
        if not data[2] & _QR:
            return False
        rcode = data[3] & 0x0F
        if rcode not in (_NOERROR, _NXDOMAIN, _SERVFAIL, _REFUSED):
            return False
        walk = _walk_response(data, self.shuffle)
        if walk is None:
            return False
        if walk.qdcount:
            qname_end = walk.question_end - 4
            asked = _TYPE_CLASS.unpack_from(data, qname_end)
            if data[_HEADER_LEN:qname_end].lower() != key.qname_lower or asked != (
                key.qtype,
                key.qclass,
            ):
                return False
        elif rcode not in (_SERVFAIL, _REFUSED):
            # Only a failure may come back without its question (dnsdist caches a
            # header-only REFUSED); a positive answer must say what it answers.
            return False
        ttl = self._ttl_for(data, rcode, walk, temp_failure_ttl)
        if ttl is None:
            return False
        validity = now + ttl
        existing = self._map.get(key.hash)
        if existing is not None:
            if existing.ident != key.ident and existing.validity > now:
                # Another live question under this hash: keep it (as dnsdist).
                self.insert_collisions += 1
                return False
            if validity <= existing.validity:
                return False  # the entry there lasts as long already
            del self._map[key.hash]  # re-inserted below, as the newest
        elif len(self._map) >= self.max_entries:
            self._evict(now)
        self._map[key.hash] = _Entry(key, data, now, validity, walk)
        return True

    def _ttl_for(
        self, data: bytes, rcode: int, walk: _Walk, temp_failure_ttl: int | None
    ) -> int | None:
        """How long an answer may be cached, or None when it may not."""
        if rcode in (_SERVFAIL, _REFUSED):
            ttl = self.temporary_failure_ttl if temp_failure_ttl is None else temp_failure_ttl
            return ttl if ttl > 0 else None
        if data[2] & _TC:
            # A truncated answer is incomplete: cached only when truncatedTTL asks for it,
            # and then for that long, records or not.
            if self.truncated_ttl == 0:
                return None
            found: int | None = self.truncated_ttl
        else:
            found = walk.min_ttl
        if found is None:
            return None  # no record at all
        if rcode == _NXDOMAIN or walk.seen_auth_soa:
            found = min(found, self.max_negative_ttl)
        elif found > self.max_ttl:
            found = self.max_ttl
        if found < self.min_ttl:
            self.ttl_too_shorts += 1
            return None
        return found

    def _evict(self, now: float) -> None:
        """Make room for one entry: an expired one among the oldest few, else the oldest."""
        victim: int | None = None
        for scanned, (hash_, entry) in enumerate(self._map.items()):
            if entry.validity <= now:
                victim = hash_
                break
            if scanned + 1 >= EVICTION_SCAN:
                break
        if victim is None:
            self._map.popitem(last=False)
        else:
            del self._map[victim]
        self.evictions += 1

    def purge_expired(self, now: float, up_to: int = 0) -> int:
        """Remove expired entries, oldest first, until at most ``up_to`` entries are
        left (the periodic cleaning); how many were removed."""
        self._last_now = now
        self.cleanup_count += 1
        excess = len(self._map) - max(0, int(up_to))
        if excess <= 0:
            return 0
        victims: list[int] = []
        for hash_, entry in self._map.items():
            if entry.validity <= now:
                victims.append(hash_)
                if len(victims) >= excess:
                    break
        for hash_ in victims:
            del self._map[hash_]
        return len(victims)

    #: The options a key is made from: entries made under other values would not be found.
    KEY_OPTIONS = ("skip_options", "cookie_hashing", "parse_ecs", "payload_ranks", "hash_function")
    #: The counters ``getStats`` and ``printStats`` show.
    COUNTERS = (
        "hits",
        "misses",
        "deferred_lookups",
        "deferred_inserts",
        "lookup_collisions",
        "insert_collisions",
        "ttl_too_shorts",
        "cleanup_count",
        "evictions",
        "_last_now",
    )

    def take_entries(self, old: PacketCache) -> bool:
        """A reload: take ``old``'s entries and counters, when its keys are made the same
        way (else nothing is taken: false). The table is shared, not copied, so a query
        still finishing with ``old`` inserts its answer here too. Over this cache's
        ``max_entries``, the oldest entries go."""
        if any(getattr(self, a) != getattr(old, a) for a in self.KEY_OPTIONS):
            return False
        self._map = old._map
        self._keys = old._keys
        for counter in self.COUNTERS:
            setattr(self, counter, getattr(old, counter))
        self.expunge(self.max_entries)
        return True

    def __len__(self) -> int:
        return len(self._map)

    def _now(self) -> float:
        return self.clock() if self.clock is not None else self._last_now

    # --- dnsdist's PacketCache methods (Lua) --------------------------------------------

    def expunge(self, n: Any = 0) -> int:
        """Remove entries, oldest first, leaving at most ``n``; how many were removed."""
        keep = max(0, int(n or 0))
        removed = 0
        while len(self._map) > keep:
            self._map.popitem(last=False)
            removed += 1
        return removed

    def expungeByName(self, name: Any, qtype: Any = _ANY, suffixMatch: Any = False) -> int:
        """Remove the entries for ``name`` (a string, a DNSName, or a list of either)
        and ``qtype`` (255, ANY, for all types); with ``suffixMatch``, also every name
        below it.  Returns how many were removed."""
        if (
            isinstance(name, str | bytes)
            or isinstance(getattr(name, "name", None), dns.name.Name)
            or isinstance(name, dns.name.Name)
        ):
            targets = [_name_wire(name)]
        else:
            targets = [_name_wire(item) for item in _values(name)]
        wanted = _ANY if qtype is None else int(qtype)
        suffix = bool(suffixMatch)
        victims = []
        for hash_, entry in self._map.items():
            if wanted != _ANY and entry.qtype != wanted:
                continue
            qname = entry.qname.lower()
            for target in targets:
                if qname == target or (suffix and _is_subdomain_wire(qname, target)):
                    victims.append(hash_)
                    break
        for hash_ in victims:
            del self._map[hash_]
        return len(victims)

    def purgeExpired(self, n: Any = 0) -> int:
        """Remove expired entries until at most ``n`` are left (dnsdist's Lua name)."""
        return self.purge_expired(self._now(), int(n or 0))

    def expungeExpired(self, n: Any = 0) -> int:
        """Another name for :meth:`purgeExpired`."""
        return self.purgeExpired(n)

    def isFull(self) -> bool:
        return len(self._map) >= self.max_entries

    def getEntriesCount(self) -> int:
        return len(self._map)

    def toString(self) -> str:
        """Entries and capacity, e.g. ``"3/10000"``."""
        return f"{len(self._map)}/{self.max_entries}"

    def __str__(self) -> str:
        return self.toString()

    def __repr__(self) -> str:
        return f"<PacketCache {self.toString()}>"

    def getStats(self) -> dict[str, int]:
        """dnsdist's counters, under dnsdist's names."""
        return {
            "entries": len(self._map),
            "maxEntries": self.max_entries,
            "hits": self.hits,
            "misses": self.misses,
            "deferredInserts": self.deferred_inserts,
            "deferredLookups": self.deferred_lookups,
            "lookupCollisions": self.lookup_collisions,
            "insertCollisions": self.insert_collisions,
            "ttlTooShorts": self.ttl_too_shorts,
            "cleanupCount": self.cleanup_count,
        }

    def printStats(self) -> None:
        """The counters, one a line, worded as dnsdist's console shows them."""
        lines = (
            f"Entries: {len(self._map)}/{self.max_entries}",
            f"Hits: {self.hits}",
            f"Misses: {self.misses}",
            f"Deferred inserts: {self.deferred_inserts}",
            f"Deferred lookups: {self.deferred_lookups}",
            f"Lookup Collisions: {self.lookup_collisions}",
            f"Insert Collisions: {self.insert_collisions}",
            f"TTL Too Shorts: {self.ttl_too_shorts}",
            f"Cleanup Count: {self.cleanup_count}",
        )
        self.out.write("\n".join(lines) + "\n")

    def dump(self, filename: Any, rawResponse: Any = False) -> None:
        """Write one line per entry to a new file (an existing file is never
        overwritten), in dnsdist's dump format, then report "Dumped N records"."""
        try:
            fd = os.open(str(filename), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o660)
        except OSError as exc:
            self.out.write(f"Error opening dump file for writing: {exc.strerror}\n")
            return
        now = self._now()
        # "added" is shown as a Unix time, as dnsdist does; entries carry the
        # caller's clock, so it is rebased on the wall clock here, for display only.
        wall_offset = time.time() - now
        count = 0
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as file:
            file.write("; packet cache dump follows\n;\n")
            for hash_, entry in list(self._map.items()):
                count += 1
                file.write(self._dump_line(hash_, entry, now, wall_offset, bool(rawResponse)))
        self.out.write(f"Dumped {count} records\n")

    @staticmethod
    def _dump_line(hash_: int, entry: _Entry, now: float, wall_offset: float, raw: bool) -> str:
        try:
            qname = dns.name.from_wire(entry.qname, 0)[0].to_text()
        except dns.exception.DNSException:
            return f"; error printing '{entry.qname!r}'\n"
        line = (
            f"{qname} {int(entry.validity - now)} "
            f"{dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(entry.qclass))} "
            f"{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(entry.qtype))} "
            f"; ecs {entry.subnet or 'empty'}, rcode {entry.rcode}, key {hash_}, "
            f"length {len(entry.response)}, received over UDP {0 if entry.tcp else 1}, "
            f"added {int(entry.added + wall_offset)}, dnssecOK {int(entry.dnssec_ok)}, "
            f"raw query flags {entry.query_flags}"
        )
        if raw:
            line += f", base64response {base64.b64encode(entry.response).decode('ascii')}"
        return line + "\n"

    def getAddressListByDomain(self, domain: Any) -> list[Any]:
        """The addresses (ComboAddress) in the A and AAAA records of the answer section
        of the NOERROR answers cached for ``domain``."""
        from triodist.wire.message import (
            ComboAddress,  # the DNS objects import Trio: only when asked
        )

        target = _name_wire(domain)
        found: dict[bytes, None] = {}
        for entry in self._map.values():
            if entry.qname.lower() == target and entry.rcode == _NOERROR:
                for raw in _answer_addresses(entry.response):
                    found.setdefault(raw)
        return [ComboAddress(str(ipaddress.ip_address(raw))) for raw in sorted(found)]

    def getDomainListByAddress(self, addr: Any) -> list[Any]:
        """The names (DNSName) whose cached NOERROR answer has ``addr`` (a ComboAddress
        or a string) in an A or AAAA record of its answer section."""
        from triodist.wire.message import DNSName  # the DNS objects import Trio: only when asked

        ip = getattr(addr, "ip", None)
        if ip is None:
            ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
        wanted = ip.packed
        names: dict[bytes, bytes] = {}
        for entry in self._map.values():
            if entry.rcode == _NOERROR and wanted in _answer_addresses(entry.response):
                names.setdefault(entry.qname.lower(), entry.qname)
        result = []
        for wire in sorted(names):
            try:
                result.append(DNSName(dns.name.from_wire(names[wire], 0)[0]))
            except dns.exception.DNSException:
                continue
        return result


def _answer_addresses(data: bytes) -> list[bytes]:
    """The raw addresses of the IN A and AAAA records of an answer section."""
    end = len(data)
    if end < _HEADER_LEN:
        return []
    qdcount, ancount = _U16.unpack_from(data, 4)[0], _U16.unpack_from(data, 6)[0]
    pos = _HEADER_LEN
    for _ in range(qdcount):
        pos = _skip_name(data, pos, end)
        if pos < 0:
            return []
        pos += 4
    found = []
    for _ in range(ancount):
        pos = _skip_name(data, pos, end)
        if pos < 0 or pos + 10 > end:
            break
        rtype, rclass, _ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        rdata = pos + 10
        if rdata + rdlen > end:
            break
        if rclass == _CLASS_IN and (
            (rtype == _A and rdlen == 4) or (rtype == _AAAA and rdlen == 16)
        ):
            found.append(data[rdata : rdata + rdlen])
        pos = rdata + rdlen
    return found
