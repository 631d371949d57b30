"""EDNS options on the wire: read the OPT record's options, add, replace or remove one,
add an OPT record where there is none, take one away.

Everything here works on a message's bytes (a query on its way to a backend, an answer
on its way to a client) without a dnspython parse, and edits a ``bytearray`` in place.

The bytes may be hostile. A function that reads returns ``None`` where there is no OPT
record; where the records cannot be walked (a name or a record runs off the end, a
compression pointer in a question or owner name does not point back to a name that can
be read), or the OPT record's options run past its data, it raises :class:`EDNSError`
(a ``ValueError``) and, for an edit, leaves the bytes as they were. Nothing else is
raised. The caller decides what a malformed message
becomes (dnsdist forwards a query it could not add an option to unchanged, or drops it,
depending on the feature).

An edit rebuilds the message as: everything before the OPT record, the new OPT record,
the records after it. Data after the last record (trailing data) is dropped by an edit,
as dnsdist drops it when it adds an option. An OPT record added where there was none
goes after the last additional record and counts in ARCOUNT; the caller remembers that
it was added (:attr:`Edit.ADDED_OPT`) so that the answer can lose it again
(:func:`remove_opt`) before the client sees it.

The API:

- :func:`locate_opt` — the OPT record (an :class:`OptRecord`: where it sits, payload
  size, extended rcode, version, flags);
- :func:`read_options`, :func:`get_option` — the options as ``(code, value)`` pairs;
- :func:`set_option` — add an option, or replace the first one with its code (or keep
  it, ``replace=False``); adds an OPT record when there is none; says what it did;
- :func:`remove_option` — remove every option with a code;
- :func:`strip` — what was added on the way out taken back out of an answer (the OPT
  record, or an option), the option's value read as it goes, in one walk;
- :func:`add_opt`, :func:`remove_opt` — a whole OPT record;
- :func:`option_bytes` — one option as it sits in the OPT record's data.

Imports nothing from triodist but the walker.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from triodist.wire.walk import (
    HEADER_LEN,
    OPT,
    WalkError,
    counts,
    name_end,
    question_end,
    records,
)

_U16 = struct.Struct("!H")
_OPTION_HEAD = struct.Struct("!HH")
# An OPT record after its (root) owner name: type, class (payload size), extended
# rcode, version, flags, data length.
_OPT_FIXED = struct.Struct("!HHBBHH")

#: The DO (DNSSEC OK) bit of the OPT record's flags.
DO_BIT = 0x8000
#: The payload size dnsdist writes in an OPT record it adds to a query (its
#: ``g_EdnsUDPPayloadSize``).
DEFAULT_ADDED_PAYLOAD = 512
#: The largest DNS message (over TCP); an edit that would make a larger one fails.
MAX_MESSAGE = 65535


class EDNSError(ValueError):
    """The message's records cannot be walked, its OPT record's options run past its
    data, or an edit would make it larger than allowed."""


class Edit(enum.Enum):
    """What :func:`set_option` did."""

    #: There was no OPT record: one was added, holding the option.
    ADDED_OPT = "added-opt"
    #: The OPT record had no option with that code: the option was added to it.
    ADDED = "added"
    #: An option with that code was there and was replaced.
    REPLACED = "replaced"
    #: An option with that code was there and was kept (``replace=False``).
    KEPT = "kept"


@dataclass(frozen=True, slots=True)
class OptRecord:
    """Where a message's OPT record sits and what its fixed fields say."""

    #: Offset of its owner name (the record's first byte).
    start: int
    #: Offset of its data (the first option).
    rdata: int
    #: Offset just past it.
    end: int
    #: The requestor's UDP payload size (the record's class field).
    payload: int
    #: The upper 8 bits of the extended rcode.
    ext_rcode: int
    version: int
    #: The 16 flag bits (:data:`DO_BIT` is the DNSSEC OK bit).
    flags: int

    @property
    def dnssec_ok(self) -> bool:
        return bool(self.flags & DO_BIT)


def _walk(data: bytes | bytearray) -> tuple[OptRecord | None, int, int]:
    """The OPT record of the additional section (the first, if several), the end of
    the last record, and the offset of the additional section's first record. Raises
    EDNSError where the records cannot be followed."""
    if len(data) < HEADER_LEN:
        raise EDNSError("shorter than a DNS header")
    pos = question_end(data)
    if pos < 0:
        raise EDNSError("the question runs off the end")
    qdcount, ancount, nscount, arcount = counts(data)
    name = HEADER_LEN
    for _ in range(qdcount):
        _check_name(data, name)
        name = name_end(data, name) + 4
    first_additional = ancount + nscount
    opt: OptRecord | None = None
    end = pos
    try:
        for index, start, rtype, _, _, rdlen, rdata in records(
            data, pos, first_additional + arcount
        ):
            end = rdata + rdlen
            _check_name(data, start)
            if rtype == OPT and index >= first_additional and opt is None:
                _, payload, ext_rcode, version, flags, _ = _OPT_FIXED.unpack_from(data, rdata - 10)
                opt = OptRecord(start, rdata, end, payload, ext_rcode, version, flags)
    except WalkError as exc:
        raise EDNSError(str(exc)) from exc
    return opt, end, pos


def _check_name(data: bytes | bytearray, pos: int) -> None:
    """Raise EDNSError unless the name at ``pos`` can be read: its compression pointers
    each point backwards (so following them ends) at a name that can be read too, as
    dnsdist's reader requires before it edits a message. The walker only skips names."""
    end = len(data)
    while True:
        if pos >= end:
            raise EDNSError(f"a name runs off the end at offset {pos}")
        length = data[pos]
        if length == 0:
            return
        if length >= 0xC0:
            if pos + 2 > end:
                raise EDNSError(f"a compression pointer runs off the end at offset {pos}")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos:
                raise EDNSError(f"the compression pointer at offset {pos} does not point back")
            pos = target
        elif length > 63:
            raise EDNSError(f"a label of an unknown type at offset {pos}")
        else:
            pos += length + 1


def locate_opt(data: bytes | bytearray) -> OptRecord | None:
    """The OPT record of the additional section, or None when there is none. Raises
    :class:`EDNSError` when the records cannot be walked."""
    return _walk(data)[0]


def _parse(data: bytes | bytearray, opt: OptRecord) -> list[tuple[int, int, int]]:
    """Each option of ``opt`` as (code, offset of its code field, offset past its value)."""
    found: list[tuple[int, int, int]] = []
    pos = opt.rdata
    while pos < opt.end:
        if pos + 4 > opt.end:
            raise EDNSError(f"an EDNS option header at offset {pos} runs past the OPT record")
        code, length = _OPTION_HEAD.unpack_from(data, pos)
        value_end = pos + 4 + length
        if value_end > opt.end:
            raise EDNSError(f"EDNS option {code} at offset {pos} runs past the OPT record")
        found.append((int(code), pos, value_end))
        pos = value_end
    return found


def read_options(data: bytes | bytearray) -> list[tuple[int, bytes]] | None:
    """The OPT record's options in order, as (code, value) pairs; None when the message
    has no OPT record. Raises :class:`EDNSError` when the records cannot be walked or an
    option runs past the OPT record."""
    opt = locate_opt(data)
    if opt is None:
        return None
    return [(code, bytes(data[start + 4 : end])) for code, start, end in _parse(data, opt)]


def get_option(data: bytes | bytearray, code: int) -> bytes | None:
    """The value of the first option with ``code``; None when there is none (or no OPT
    record). Raises :class:`EDNSError` as :func:`read_options` does."""
    for option_code, value in read_options(data) or ():
        if option_code == code:
            return value
    return None


def option_bytes(code: int, value: bytes) -> bytes:
    """One option as it sits in an OPT record's data: code, length, value."""
    if not 0 <= code <= 0xFFFF or len(value) > 0xFFFF:
        raise EDNSError(f"EDNS option {code} of {len(value)} bytes cannot be written")
    return _OPTION_HEAD.pack(code, len(value)) + value


def opt_record_bytes(
    options: bytes = b"",
    *,
    payload: int = DEFAULT_ADDED_PAYLOAD,
    ext_rcode: int = 0,
    version: int = 0,
    flags: int = 0,
) -> bytes:
    """A whole OPT record (root owner) holding ``options`` (already encoded, see
    :func:`option_bytes`)."""
    if len(options) > 0xFFFF:
        raise EDNSError("the EDNS options do not fit in one OPT record")
    return (
        b"\x00"
        + _OPT_FIXED.pack(
            OPT, payload & 0xFFFF, ext_rcode & 0xFF, version & 0xFF, flags & 0xFFFF, len(options)
        )
        + options
    )


def _rewrite(
    data: bytearray,
    opt: OptRecord,
    records_end: int,
    options: bytes,
    max_size: int,
) -> None:
    """Put ``options`` in place of ``opt``'s data, dropping what follows the records."""
    if len(options) > 0xFFFF:
        raise EDNSError("the EDNS options do not fit in one OPT record")
    new_size = records_end - (opt.end - opt.rdata) + len(options)
    if new_size > max_size:
        raise EDNSError(f"the message would be {new_size} bytes, over {max_size}")
    tail = bytes(data[opt.end : records_end])
    del data[opt.rdata - 2 :]
    data += _U16.pack(len(options))
    data += options
    data += tail


def _bump_arcount(data: bytearray, delta: int) -> None:
    arcount = _U16.unpack_from(data, 10)[0] + delta
    _U16.pack_into(data, 10, arcount & 0xFFFF)


def add_opt(
    data: bytearray,
    *,
    options: Iterable[tuple[int, bytes]] = (),
    payload: int = DEFAULT_ADDED_PAYLOAD,
    ext_rcode: int = 0,
    version: int = 0,
    flags: int = 0,
    max_size: int = MAX_MESSAGE,
) -> bool:
    """Add an OPT record after the last additional record (ARCOUNT counts it), unless
    there is one already. True when it was added; False when the message already had
    one (it is left as it is). Raises :class:`EDNSError` when the records cannot be
    walked, the message has 65535 additional records or would grow over ``max_size``."""
    opt, records_end, _ = _walk(data)
    if opt is not None:
        return False
    encoded = b"".join(option_bytes(code, value) for code, value in options)
    record = opt_record_bytes(
        encoded, payload=payload, ext_rcode=ext_rcode, version=version, flags=flags
    )
    _append_record(data, records_end, record, max_size)
    return True


def _append_record(data: bytearray, records_end: int, record: bytes, max_size: int) -> None:
    if counts(data)[3] == 0xFFFF:
        raise EDNSError("the additional section is full")
    if records_end + len(record) > max_size:
        raise EDNSError(f"the message would be {records_end + len(record)} bytes, over {max_size}")
    del data[records_end:]
    data += record
    _bump_arcount(data, 1)


def remove_opt(data: bytearray) -> bool:
    """Take the OPT record out (ARCOUNT one less). True when there was one. Raises
    :class:`EDNSError` when the records cannot be walked (the bytes are unchanged).
    Data after the last record is dropped with it."""
    opt, records_end, _ = _walk(data)
    if opt is None:
        return False
    tail = bytes(data[opt.end : records_end])
    del data[opt.start :]
    data += tail
    _bump_arcount(data, -1)
    return True


def set_option(
    data: bytearray,
    code: int,
    value: bytes,
    *,
    replace: bool = True,
    payload: int = DEFAULT_ADDED_PAYLOAD,
    max_size: int = MAX_MESSAGE,
) -> Edit:
    """Give the message the option ``code`` with ``value``.

    - no OPT record: one is added (payload size ``payload``, no flags) holding only this
      option: :attr:`Edit.ADDED_OPT`;
    - an OPT record without such an option: it is added after the others:
      :attr:`Edit.ADDED`;
    - an OPT record with one: the first is replaced where it sits (others with the same
      code stay), :attr:`Edit.REPLACED`, or with ``replace=False`` left as it is:
      :attr:`Edit.KEPT` (the bytes untouched).

    Raises :class:`EDNSError` (the bytes unchanged) when the records cannot be walked,
    the OPT record's options run past its data, or the message would grow over
    ``max_size``."""
    encoded = option_bytes(code, value)
    opt, records_end, _ = _walk(data)
    if opt is None:
        # One walk only: this runs for every query given ECS.
        _append_record(data, records_end, opt_record_bytes(encoded, payload=payload), max_size)
        return Edit.ADDED_OPT
    existing = _parse(data, opt)
    old = bytes(data[opt.rdata : opt.end])
    for option_code, start, end in existing:
        if option_code == code:
            if not replace:
                return Edit.KEPT
            at, until = start - opt.rdata, end - opt.rdata
            _rewrite(data, opt, records_end, old[:at] + encoded + old[until:], max_size)
            return Edit.REPLACED
    _rewrite(data, opt, records_end, old + encoded, max_size)
    return Edit.ADDED


def strip(data: bytearray, code: int, *, whole_opt: bool) -> bytes | None:
    """Take out of a message what was added to it on its way: the whole OPT record
    (``whole_opt``) or every option with ``code``; the value of the first such option as
    it was (None: none, or no OPT record), in one walk of the message.

    Raises :class:`EDNSError` (the bytes unchanged) when the records cannot be walked. An
    OPT record whose options run past its data gives None and, unless ``whole_opt``, is
    left as it is (nothing in it can be told apart)."""
    opt, records_end, _ = _walk(data)
    if opt is None:
        return None
    try:
        existing = _parse(data, opt)
    except EDNSError:
        existing = None
    first = None
    if existing is not None:
        first = next((bytes(data[s + 4 : e]) for c, s, e in existing if c == code), None)
    if whole_opt:
        tail = bytes(data[opt.end : records_end])
        del data[opt.start :]
        data += tail
        _bump_arcount(data, -1)
    elif existing is not None and first is not None:
        kept = b"".join(data[s:e] for c, s, e in existing if c != code)
        _rewrite(data, opt, records_end, kept, MAX_MESSAGE)
    return first


def remove_option(data: bytearray, code: int) -> int:
    """Take every option with ``code`` out of the OPT record; how many there were (0:
    the bytes untouched, also when there is no OPT record). Raises :class:`EDNSError`
    (the bytes unchanged) as :func:`set_option` does."""
    opt, records_end, _ = _walk(data)
    if opt is None:
        return 0
    existing = _parse(data, opt)
    kept = [data[start:end] for option_code, start, end in existing if option_code != code]
    removed = len(existing) - len(kept)
    if removed:
        _rewrite(data, opt, records_end, b"".join(kept), MAX_MESSAGE)
    return removed
