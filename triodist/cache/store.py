"""The packet cache's storage: an entry per answer, what serving it needs (found once,
when it is stored, by walking its records), and the table that keeps entries in
insertion order and evicts them.

Answers are walked once, when inserted, with the wire walker; it notes where each TTL
sits, so that serving a hit is a copy, the query's ID and name written over the stored
ones (the client sees its own 0x20 case), and the TTLs patched in place. A response the
walker cannot follow (a name running off the end, a record cut short, counts larger than
the records present) is not cached; nothing here raises on bad bytes.

Imports nothing above triodist.cache.
"""

from __future__ import annotations

import random
import struct
from collections import OrderedDict

from triodist.cache.keys import CacheKey
from triodist.wire.walk import HEADER_LEN, WalkError, counts, records, skip_questions

_U32 = struct.Struct("!I")

_TC = 0x02  # in the third header byte

# Record types and the class the walk looks at.
A = 1
SOA = 6
AAAA = 28
OPT = 41
CLASS_IN = 1

#: How many of the oldest entries an insert into a full cache looks at for an
#: expired one before it evicts the oldest: enough to find the expired ones that
#: pile up at the old end, few enough to keep an insert O(1).
EVICTION_SCAN = 8


class AnswerFacts:
    """What walking a response's records once, at insert time, found (:func:`read_answer`)."""

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
        self.question_end = HEADER_LEN
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


class Entry:
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
        facts: AnswerFacts,
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
        self.qname_len = len(key.qname) if facts.qdcount else 0
        self.ttl_offsets = facts.ttl_offsets
        self.ttls = facts.ttls
        self.shuffle_offsets = facts.shuffle_offsets
        self.shuffle_len = facts.shuffle_len

    def answer(
        self,
        query: bytes | bytearray,
        qname: bytes,
        now: float,
        age: bool,
        stale_ttl: int | None,
        rng: random.Random | None,
    ) -> bytearray:
        """A copy of the answer for ``query``: its ID, and its question name as the client
        wrote it (``qname``, when of the stored length), the TTLs aged since it was
        stored (``age``) or all set to ``stale_ttl`` (a stale answer), and the A/AAAA
        records of the answer section shuffled with ``rng`` (None: kept in order)."""
        out = bytearray(self.response)
        out[0:2] = query[0:2]
        qlen = self.qname_len
        if qlen and len(qname) == qlen:
            out[HEADER_LEN : HEADER_LEN + qlen] = qname
        if age and self.ttl_offsets:
            pack = _U32.pack_into
            if stale_ttl is not None:
                for offset in self.ttl_offsets:
                    pack(out, offset, stale_ttl)
            else:
                elapsed = int(now - self.added)
                if elapsed > 0:
                    for offset, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
                        pack(out, offset, ttl - elapsed if ttl > elapsed else 0)
        if rng is not None and self.shuffle_offsets:
            width = self.shuffle_len
            offsets = self.shuffle_offsets
            chunks = [bytes(out[o : o + width]) for o in offsets]
            rng.shuffle(chunks)
            for offset, chunk in zip(offsets, chunks, strict=True):
                out[offset : offset + width] = chunk
        return out


def read_answer(data: bytes, want_shuffle: bool) -> AnswerFacts | None:
    """Walk the question and every record of a response; None if it is malformed (or
    has more than one question)."""
    if len(data) < HEADER_LEN:
        return None
    qdcount, ancount, nscount, arcount = counts(data)
    if qdcount > 1:
        return None
    facts = AnswerFacts()
    facts.qdcount = qdcount
    pos = skip_questions(data, HEADER_LEN, qdcount)
    if pos < 0:
        return None
    facts.question_end = pos
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
    try:
        for index, owner_start, rtype, rclass, ttl, rdlen, rdata in records(
            data, pos, ancount + nscount + arcount
        ):
            if rtype == OPT:
                # The OPT "TTL" is the extended rcode and flags: never aged, never a TTL.
                seen_opt = True
            else:
                offsets.append(rdata - 6)
                ttls.append(ttl)
                if not seen_opt:
                    if min_ttl is None or ttl < min_ttl:
                        min_ttl = ttl
                    if rtype == SOA and rclass == CLASS_IN and ancount <= index < authority_end:
                        facts.seen_auth_soa = True
                        # RFC 2308: a negative answer lives no longer than the SOA's MINIMUM
                        # field either (its last 32 bits), whatever TTL the SOA record carries.
                        if rdlen >= 22:
                            minimum = _U32.unpack_from(data, rdata + rdlen - 4)[0]
                            if minimum < min_ttl:
                                min_ttl = minimum
            if run_open and index < ancount:
                if rtype in (A, AAAA):
                    owner = data[owner_start : rdata - 10]
                    if not run:
                        run_type, run_owner, run_len = rtype, owner, rdlen
                        run.append(rdata)
                    elif rtype == run_type and owner == run_owner and rdlen == run_len:
                        run.append(rdata)
                    else:
                        run_open = False
                elif run:
                    run_open = False
    except WalkError:
        return None
    facts.min_ttl = min_ttl
    facts.ttl_offsets = tuple(offsets)
    facts.ttls = tuple(ttls)
    if len(run) > 1:
        facts.shuffle_offsets = tuple(run)
        facts.shuffle_len = run_len
    return facts


def answer_addresses(data: bytes) -> list[bytes]:
    """The raw addresses of the IN A and AAAA records of an answer section."""
    if len(data) < HEADER_LEN:
        return []
    qdcount, ancount, _, _ = counts(data)
    pos = skip_questions(data, HEADER_LEN, qdcount)
    if pos < 0:
        return []
    found = []
    try:
        for _, _, rtype, rclass, _, rdlen, rdata in records(data, pos, ancount):
            if rclass == CLASS_IN and (
                (rtype == A and rdlen == 4) or (rtype == AAAA and rdlen == 16)
            ):
                found.append(data[rdata : rdata + rdlen])
    except WalkError:
        pass
    return found


class EntryTable(OrderedDict[int, Entry]):
    """The entries by key hash, in insertion order: the first item is the oldest entry,
    the first evicted."""

    def evict_one(self, now: float) -> None:
        """Make room for one entry: an expired one among the oldest few, else the oldest."""
        victim: int | None = None
        for scanned, (hash_, entry) in enumerate(self.items()):
            if entry.validity <= now:
                victim = hash_
                break
            if scanned + 1 >= EVICTION_SCAN:
                break
        if victim is None:
            self.popitem(last=False)
        else:
            del self[victim]

    def remove_expired(self, now: float, up_to: int) -> int:
        """Remove expired entries, oldest first, until at most ``up_to`` entries are
        left; how many were removed."""
        excess = len(self) - max(0, up_to)
        if excess <= 0:
            return 0
        victims: list[int] = []
        for hash_, entry in self.items():
            if entry.validity <= now:
                victims.append(hash_)
                if len(victims) >= excess:
                    break
        for hash_ in victims:
            del self[hash_]
        return len(victims)

    def remove_oldest(self, keep: int) -> int:
        """Remove entries, oldest first, leaving at most ``keep``; how many were removed."""
        removed = 0
        while len(self) > keep:
            self.popitem(last=False)
            removed += 1
        return removed
