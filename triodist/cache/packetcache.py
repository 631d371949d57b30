"""The packet cache: answers kept as wire bytes, served again with their TTLs aged.

A cache belongs to a pool (``getPool(""):setCache(newPacketCache(10000))``).  For
each query the pipeline computes a :class:`CacheKey` with :meth:`PacketCache.make_key`,
asks :meth:`PacketCache.lookup`, and on a miss hands the backend's answer to
:meth:`PacketCache.insert` under the same key.  Nothing here opens a socket or
reads a clock: the caller passes ``now`` (``trio.current_time()``), so a mock
clock drives expiry in tests exactly as it drives the server.

What makes two queries "the same" (as dnsdist decides it) is the key's business
(``keys``): the normalised bytes of the query after its ID, its ``ident``, and their
32-bit ``hash``.  A lookup compares the whole ``ident`` before serving, so two
questions that share a hash never get each other's answer (dnsdist compares the name,
type, class, flags and DO bit after a hash match; comparing the ident is as cheap and
also tells apart two queries that differ only in an EDNS option).

Answers are walked once, when inserted (``store``), so that serving a hit is a copy
with the ID, the name's case and the TTLs patched in place.  The rest is beside this
module: ``newPacketCache``'s options (``options``), the dump (``dump``), the lookups by
name and address behind the Lua methods (``lua``).  This module holds the cache itself:
its settings, the pipeline's calls and the Lua-facing methods.

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

Imports nothing above triodist.cache.
"""

from __future__ import annotations

import logging
import random
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from triodist.cache.dump import write_dump
from triodist.cache.keys import (
    COOKIE,
    DEFAULT_SKIPPED_OPTIONS,
    CacheKey,
    compute_key,
    default_key_hash,
)
from triodist.cache.lua import addresses_of_domain, domains_of_address, entries_named
from triodist.cache.options import packet_cache_arguments
from triodist.cache.store import AnswerFacts, Entry, EntryTable, read_answer
from triodist.wire.address import ComboAddress
from triodist.wire.names import DNSName
from triodist.wire.walk import HEADER_LEN

log = logging.getLogger("triodist.cache")

_TYPE_CLASS = struct.Struct("!HH")

_QR = 0x80  # in the third header byte
_TC = 0x02  # in the third header byte

# The question types and rcodes the cache looks at.
_IXFR = 251
_AXFR = 252
_ANY = 255
_NOERROR = 0
_NXDOMAIN = 3
_SERVFAIL = 2
_REFUSED = 5


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
            skipped.discard(COOKIE)
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
        self._map = EntryTable()
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
        entries, kwargs = packet_cache_arguments(max_entries, options)
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
        return compute_key(
            data,
            question_end,
            tcp,
            self.hash_function,
            self.skip_options,
            self.parse_ecs,
            self.payload_ranks,
        )

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
        out = entry.answer(
            query,
            key.qname,
            now,
            not self.dont_age,
            self.stale_ttl if stale else None,
            self.random if self.shuffle else None,
        )
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
        if not key.usable or size < HEADER_LEN or size > self.maximum_entry_size:
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
        facts = read_answer(data, self.shuffle)
        if facts is None:
            return False
        if facts.qdcount:
            qname_end = facts.question_end - 4
            asked = _TYPE_CLASS.unpack_from(data, qname_end)
            if data[HEADER_LEN:qname_end].lower() != key.qname_lower or asked != (
                key.qtype,
                key.qclass,
            ):
                return False
        elif rcode not in (_SERVFAIL, _REFUSED):
            # Only a failure may come back without its question (dnsdist caches a
            # header-only REFUSED); a positive answer must say what it answers.
            return False
        ttl = self._ttl_for(data, rcode, facts, temp_failure_ttl)
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
            self._map.evict_one(now)
            self.evictions += 1
        self._map[key.hash] = Entry(key, data, now, validity, facts)
        return True

    def _ttl_for(
        self, data: bytes, rcode: int, facts: AnswerFacts, temp_failure_ttl: int | None
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
            found = facts.min_ttl
        if found is None:
            return None  # no record at all
        if rcode == _NXDOMAIN or facts.seen_auth_soa:
            found = min(found, self.max_negative_ttl)
        elif found > self.max_ttl:
            found = self.max_ttl
        if found < self.min_ttl:
            self.ttl_too_shorts += 1
            return None
        return found

    def purge_expired(self, now: float, up_to: int = 0) -> int:
        """Remove expired entries, oldest first, until at most ``up_to`` entries are
        left (the periodic cleaning); how many were removed."""
        self._last_now = now
        self.cleanup_count += 1
        return self._map.remove_expired(now, int(up_to))

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
        return self._map.remove_oldest(max(0, int(n or 0)))

    def expungeByName(self, name: Any, qtype: Any = _ANY, suffixMatch: Any = False) -> int:
        """Remove the entries for ``name`` (a string, a DNSName, or a list of either)
        and ``qtype`` (255, ANY, for all types); with ``suffixMatch``, also every name
        below it.  Returns how many were removed."""
        victims = entries_named(self._map, name, qtype, suffixMatch)
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
        write_dump(filename, self._map, self._now(), bool(rawResponse), self.out)

    def getAddressListByDomain(self, domain: Any) -> list[ComboAddress]:
        """The addresses (ComboAddress) in the A and AAAA records of the answer section
        of the NOERROR answers cached for ``domain``."""
        return addresses_of_domain(self._map, domain)

    def getDomainListByAddress(self, addr: Any) -> list[DNSName]:
        """The names (DNSName) whose cached NOERROR answer has ``addr`` (a ComboAddress
        or a string) in an A or AAAA record of its answer section."""
        return domains_of_address(self._map, addr)
