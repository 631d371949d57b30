"""Selectors on a message's shape and where it arrived: how many records each section
holds (``RecordsCountRule``, ``RecordsTypeCountRule``), how long the question name is
(``QNameLabelsCountRule``, ``QNameWireLengthRule``) and the port the query came to
(``DSTPortRule``).

They read the header's counts and the bytes, never a dnspython parse: a query's records
are rarely many, and the walk over them (``wire.walk.records``) stops at the first one
that runs off the end. The bytes are a client's: a count that promises more records
than the message holds counts those that are there, as dnsdist's does.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

import logging
from typing import Any

from triodist.rules.actionbase import type_text
from triodist.rules.selectors import Selector, qtype_code
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.message import DNSQuestion
from triodist.wire.walk import HEADER_LEN, WalkError, counts, name_end, records, skip_questions

log = logging.getLogger("triodist.config")

#: dnsdist's short names of the sections, as its rules describe them (DNSSection's order).
SECTION_NAMES = ("QD", "AN", "NS", "AR")

_U16_MAX = 0xFFFF


def _whole(value: Any, function: str, what: str, top: int) -> int:
    """A whole number from 0 to ``top`` given to ``function``; any other is an error that
    names both (a wrapped or truncated number would match other queries than meant)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{function}: expected a number for {what}, got {lua_describe(value)}")
    if value != value or not float(value).is_integer() or not 0 <= value <= top:
        raise ValueError(
            f"{function}: {what} must be a whole number from 0 to {top}, got {lua_describe(value)}"
        )
    return int(value)


def _section(value: Any, function: str) -> int:
    """A section number (``DNSSection.Answer`` is 1). dnsdist takes any byte here and
    counts no record in a section past the fourth: so does triodist, and says so."""
    section = _whole(value, function, "the section", 0xFF)
    if section >= len(SECTION_NAMES):
        log.warning(
            "%s: section %d is none of DNSSection's (0 to 3): no record is ever counted in it",
            function,
            section,
        )
    return section


def _range(low: Any, high: Any, function: str, what: str, top: int) -> tuple[int, int]:
    return _whole(low, function, f"the minimum {what}", top), _whole(
        high, function, f"the maximum {what}", top
    )


class RecordsCountRule(Selector):
    """Matches when the section holds from ``minCount`` to ``maxCount`` records, as the
    header counts them."""

    def __init__(self, section: Any, min_count: Any, max_count: Any) -> None:
        self.section = _section(section, "RecordsCountRule")
        self.low, self.high = _range(min_count, max_count, "RecordsCountRule", "count", _U16_MAX)
        # Where the section's count sits in the header (-1: a section past the fourth).
        self._at = 4 + 2 * self.section if self.section < len(SECTION_NAMES) else -1

    def matches(self, dq: DNSQuestion) -> bool:
        at, data = self._at, dq.data
        count = data[at] << 8 | data[at + 1] if at >= 0 else 0
        return self.low <= count <= self.high

    def describe(self) -> str:
        where = SECTION_NAMES[self.section] if self.section < len(SECTION_NAMES) else ""
        return f"{self.low} <= records in {where} <= {self.high}"


class RecordsTypeCountRule(Selector):
    """Matches when the section holds from ``minCount`` to ``maxCount`` records of type
    ``qtype``. The header's count is looked at first: a section that announces fewer
    records than ``minCount`` is not walked."""

    def __init__(self, section: Any, qtype: Any, min_count: Any, max_count: Any) -> None:
        self.section = _section(section, "RecordsTypeCountRule")
        self.qtype = qtype_code(qtype, "RecordsTypeCountRule")
        self.low, self.high = _range(
            min_count, max_count, "RecordsTypeCountRule", "count", _U16_MAX
        )

    def matches(self, dq: DNSQuestion) -> bool:
        announced = counts(dq.data)[self.section] if self.section < len(SECTION_NAMES) else 0
        if announced < self.low:
            return False
        return self.low <= count_of_type(dq.data, self.section, self.qtype) <= self.high

    def describe(self) -> str:
        where = SECTION_NAMES[self.section] if self.section < len(SECTION_NAMES) else ""
        return f"{self.low} <= {type_text(self.qtype)} records in {where} <= {self.high}"


def count_of_type(data: bytes | bytearray, section: int, rtype: int) -> int:
    """How many records (questions, for section 0) of type ``rtype`` the section holds,
    counting those before the first one that cannot be walked."""
    if len(data) < HEADER_LEN or section >= len(SECTION_NAMES):
        return 0
    qdcount, ancount, nscount, arcount = counts(data)
    if section == 0:
        found, pos, end = 0, HEADER_LEN, len(data)
        for _ in range(qdcount):
            pos = name_end(data, pos, end)
            if pos < 0 or pos + 4 > end:
                break
            if (data[pos] << 8 | data[pos + 1]) == rtype:
                found += 1
            pos += 4
        return found
    start = skip_questions(data, HEADER_LEN, qdcount)
    if start < 0:
        return 0
    first = (0, ancount, ancount + nscount)[section - 1]
    last = first + (ancount, nscount, arcount)[section - 1]
    found = 0
    try:
        for position, _, type_, *_ in records(data, start, last):
            if position >= first and type_ == rtype:
                found += 1
    except WalkError:
        pass  # the records before the broken one are counted, as dnsdist counts them
    return found


class QNameLabelsCountRule(Selector):
    """Matches a name of fewer than ``min`` or more than ``max`` labels (the root label
    not counted: ``www.example.org.`` has 3)."""

    def __init__(self, low: Any, high: Any) -> None:
        self.low, self.high = _range(low, high, "QNameLabelsCountRule", "label count", 2**32 - 1)

    def matches(self, dq: DNSQuestion) -> bool:
        labels = label_count(dq.qname_wire)
        return labels < self.low or labels > self.high

    def describe(self) -> str:
        return f"labels count < {self.low} || labels count > {self.high}"


def label_count(wire: bytes) -> int:
    """The labels of a name in uncompressed wire form, the root label left out."""
    labels, pos, end = 0, 0, len(wire)
    while pos < end and wire[pos]:
        labels += 1
        pos += wire[pos] + 1
    return labels


class QNameWireLengthRule(Selector):
    """Matches a name shorter than ``min`` or longer than ``max`` bytes as it is written
    in a message, uncompressed (the root name ``.`` is 1 byte)."""

    def __init__(self, low: Any, high: Any) -> None:
        self.low, self.high = _range(low, high, "QNameWireLengthRule", "length", 2**63 - 1)

    def matches(self, dq: DNSQuestion) -> bool:
        length = len(dq.qname_wire)
        return length < self.low or length > self.high

    def describe(self) -> str:
        return f"wire length < {self.low} || wire length > {self.high}"


class DSTPortRule(Selector):
    """Matches a query that arrived on this local port (the listener's)."""

    def __init__(self, port: Any) -> None:
        self.port = _whole(port, "DSTPortRule", "the port", _U16_MAX)

    def matches(self, dq: DNSQuestion) -> bool:
        return bool(dq.local[1] == self.port)

    def describe(self) -> str:
        return f"dst port=={self.port}"
