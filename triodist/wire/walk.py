"""The one walker over a DNS message's bytes: names, questions, records, the OPT record.

Everything in triodist that needs to know where something sits in a message (the end of
the question, the TTL fields a cache ages, the OPT record that says the client's EDNS
payload size, the question a backend's reply must carry) finds it here, without a
dnspython parse: these run for every query or every answer.

The bytes may be hostile (a client's query, a backend's reply): nothing here reads past
the end of the data, and nothing raises anything but :class:`WalkError`, where a caller
asks for records. Names are skipped, never followed: a compression pointer ends the name
where it sits, and only the name's length in the message matters. A length byte of 64 to
191 (the obsolete 0x40 and 0x80 label types) is not a name: the walk stops there, as it
does at a name or a record that runs off the end.

The API, smallest first:

- :func:`name_end` (any name), :func:`plain_name_end` (a name that is only labels, no
  pointer: its bytes can be compared as they are);
- :func:`skip_questions`, :func:`question_end`;
- :func:`records`, which yields each record (a :data:`Record` tuple: where it starts,
  its type, class, TTL and data) and raises :class:`WalkError` where it cannot go on;
- :func:`find_opt`, the OPT record of the additional section;
- :func:`message_end`, where the message ends and trailing data (if any) begins;
- :func:`question_key` and :func:`has_question`: a question as the bytes a reply must
  repeat, and whether a message carries it.

Imports nothing from triodist.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

#: The fixed header, before the first question.
HEADER_LEN = 12
#: The OPT pseudo-record's type (EDNS).
OPT = 41

_COUNTS = struct.Struct("!HHHH")
_RR_FIXED = struct.Struct("!HHIH")


class WalkError(ValueError):
    """The records cannot be followed: a name or a record runs off the end of the
    message, or a length byte is not a label's."""


#: One resource record as :func:`records` finds it, a plain tuple (a named tuple costs
#: twice the rest of the walk to make):
#: ``(position, start, rtype, rclass, ttl, rdlen, rdata)``, where ``position`` is its
#: place among the records after the question (answer section first, then authority,
#: then additional: ``position < ancount`` is an answer), ``start`` the offset of its
#: owner name and ``rdata`` that of its data (``rdlen`` bytes). The fixed fields are the
#: 10 bytes before ``rdata``: the owner name ends at ``rdata - 10``, the 32-bit TTL
#: field sits at ``rdata - 6``, and the next record starts at ``rdata + rdlen``.
Record = tuple[int, int, int, int, int, int, int]


def counts(data: bytes | bytearray) -> tuple[int, int, int, int]:
    """QDCOUNT, ANCOUNT, NSCOUNT and ARCOUNT (the message holds a header)."""
    qd, an, ns, ar = _COUNTS.unpack_from(data, 4)
    return int(qd), int(an), int(ns), int(ar)


def name_end(data: bytes | bytearray, pos: int, end: int | None = None) -> int:
    """The offset just past the name at ``pos``, or -1 when there is no name there (it
    runs past ``end``, by default the end of ``data``, or has a length byte of 64-191).

    A compression pointer ends the name where it sits (its target is not followed)."""
    if end is None:
        end = len(data)
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


def plain_name_end(data: bytes | bytearray, pos: int = HEADER_LEN) -> int:
    """The offset just past the name at ``pos`` when it is plain labels ending with the
    root label (no compression pointer), else -1. A query's question name is usually
    such a name, and its bytes can then be copied and compared as they are."""
    end = len(data)
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length > 63:
            return -1
        pos += length + 1
    return -1


def skip_questions(data: bytes | bytearray, pos: int, count: int) -> int:
    """The offset just past ``count`` questions (name, type, class) starting at ``pos``,
    or -1 when they run off the end."""
    end = len(data)
    for _ in range(count):
        pos = name_end(data, pos, end)
        if pos < 0 or pos + 4 > end:
            return -1
        pos += 4
    return pos


def question_end(data: bytes | bytearray) -> int:
    """The offset just past the question section (all QDCOUNT questions; 12 for none),
    or -1 when it cannot be walked (shorter than a header included)."""
    if len(data) < HEADER_LEN:
        return -1
    return skip_questions(data, HEADER_LEN, counts(data)[0])


def records(
    data: bytes | bytearray, pos: int, count: int, *, whole: bool = True
) -> Iterator[Record]:
    """Yield the ``count`` records that start at ``pos`` (usually the question's end and
    ANCOUNT + NSCOUNT + ARCOUNT), in order.

    Raises :class:`WalkError` where a record cannot be followed, after the records
    before it. Every record yielded lies wholly inside ``data``; with ``whole=False``,
    a record whose fixed fields are there but whose data runs off the end is yielded
    first (its TTL can still be edited in place, as dnsdist's ``editDNSPacketTTL``
    does) and the error comes after it."""
    end = len(data)
    unpack = _RR_FIXED.unpack_from
    for index in range(count):
        start = pos
        if pos < end and data[pos] >= 0xC0:  # a pointer, the usual owner: no call
            pos += 2
        else:
            pos = name_end(data, pos, end)
        if pos < 0 or pos + 10 > end:
            raise WalkError(f"record {index} at offset {start} runs off the end")
        rtype, rclass, ttl, rdlen = unpack(data, pos)
        rdata = pos + 10
        pos = rdata + rdlen
        if pos > end:
            if not whole:
                yield index, start, rtype, rclass, ttl, rdlen, rdata
            raise WalkError(f"the data of record {index} at offset {start} runs off the end")
        yield index, start, rtype, rclass, ttl, rdlen, rdata


def message_end(data: bytes | bytearray) -> int:
    """The offset just past the message's last record: where trailing data, bytes a
    client (or a backend) put after the DNS message, starts; ``len(data)`` when there is
    none, and when the sections cannot be walked (as dnsdist then sees no trailing data,
    rather than none of the message). Only the lengths are followed: a message whose
    records are nonsense but fit is still a message here."""
    size = len(data)
    if size < HEADER_LEN:
        return size
    qdcount, ancount, nscount, arcount = counts(data)
    pos = skip_questions(data, HEADER_LEN, qdcount)
    if pos < 0:
        return size
    try:
        for _, _, _, _, _, rdlen, rdata in records(data, pos, ancount + nscount + arcount):
            pos = rdata + rdlen
    except WalkError:
        return size
    return pos


def find_opt(data: bytes | bytearray, question_end: int) -> tuple[int, int] | None:
    """The OPT record of the additional section: (its start offset, its end offset), or
    None when there is none or the records before it cannot be followed.

    The same walk as :func:`records`, written out: this one runs for every UDP answer
    larger than 512 bytes and every self-made answer, and a generator of records costs
    it three times as much."""
    end = len(data)
    if end < HEADER_LEN:
        return None
    _, ancount, nscount, arcount = counts(data)
    if arcount == 0:
        return None
    first_additional = ancount + nscount
    pos = question_end
    for index in range(first_additional + arcount):
        start = pos
        # An owner is most often a compression pointer: skipped here without a call.
        if pos < end and data[pos] >= 0xC0:
            pos += 2
        else:
            pos = name_end(data, pos, end)
        if pos < 0 or pos + 10 > end:
            return None
        rtype, _, _, rdlen = _RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > end:
            return None
        if rtype == OPT and index >= first_additional:
            return start, pos
    return None


def question_key(packet: bytes | bytearray, question_end: int) -> bytes:
    """The (first) question of ``packet``, which ends at ``question_end``, as the bytes a
    reply is matched against (:func:`has_question`): the name in lower case, the type and
    class as they are."""
    qname_end = max(HEADER_LEN, question_end - 4)
    return bytes(packet[HEADER_LEN:qname_end]).lower() + bytes(packet[qname_end:question_end])


def has_question(message: bytes | bytearray, key: bytes) -> bool:
    """Whether ``message``'s question starts with ``key`` (:func:`question_key`): the same
    name in any ASCII case and exactly the same type and class. Only the name is
    compared without case: lowering the type and class too would make type 97 ('a') the
    same as type 65 ('A'); a name's length bytes (under 64) are not letters. A key too
    short to hold a type and class is compared as bytes, as it is."""
    qname_end = HEADER_LEN + len(key) - 4
    if qname_end <= HEADER_LEN:
        return message[HEADER_LEN : HEADER_LEN + len(key)] == key
    return (
        message[HEADER_LEN:qname_end].lower() == key[:-4]
        and message[qname_end : qname_end + 4] == key[-4:]
    )
