"""triodist.wire.edns: reading and editing EDNS options on the wire, checked against
dnspython's reading of the result, and against hostile bytes."""

from __future__ import annotations

import io

import dns.edns
import dns.message
import dns.rrset
import pytest

from triodist.wire import edns
from triodist.wire.edns import Edit, EDNSError


def _query(*, use_edns: bool = True, options: list[dns.edns.Option] | None = None) -> bytearray:
    q = dns.message.make_query("edns.example.", "A", use_edns=use_edns, options=options or [])
    q.id = 4321
    return bytearray(q.to_wire())


def _with_tsig_like_record_after_opt() -> bytearray:
    # An OPT record followed by another additional record, as a signed query has.
    q = dns.message.make_query("edns.example.", "A", use_edns=0)
    data = bytearray(q.to_wire())
    extra = dns.rrset.from_text("extra.example.", 60, "IN", "TXT", '"after"')
    buffer = io.BytesIO()
    extra.to_wire(buffer)
    data += buffer.getvalue()
    data[11] += 1
    return data


def test_no_opt_reads_as_none() -> None:
    data = _query(use_edns=False)
    assert edns.locate_opt(data) is None
    assert edns.read_options(data) is None
    assert edns.get_option(data, 8) is None


def test_locate_opt_reads_the_fixed_fields() -> None:
    q = dns.message.make_query("edns.example.", "A", use_edns=0, want_dnssec=True, payload=1232)
    opt = edns.locate_opt(q.to_wire())
    assert opt is not None
    assert (opt.payload, opt.version, opt.dnssec_ok) == (1232, 0, True)


def test_options_are_read_in_order() -> None:
    data = _query(
        options=[dns.edns.GenericOption(65001, b"ab"), dns.edns.GenericOption(10, b"c" * 8)]
    )
    assert edns.read_options(data) == [(65001, b"ab"), (10, b"c" * 8)]
    assert edns.get_option(data, 10) == b"c" * 8


def test_set_option_adds_an_opt_record_and_says_so() -> None:
    data = _query(use_edns=False)
    assert edns.set_option(data, 65002, b"xyz") is Edit.ADDED_OPT
    parsed = dns.message.from_wire(bytes(data))
    assert parsed.edns == 0
    assert parsed.payload == edns.DEFAULT_ADDED_PAYLOAD
    assert [(o.otype, o.to_wire()) for o in parsed.options] == [(65002, b"xyz")]


def test_set_option_appends_to_an_existing_opt_record() -> None:
    data = _query(options=[dns.edns.GenericOption(65001, b"ab")])
    assert edns.set_option(data, 65002, b"z") is Edit.ADDED
    assert edns.read_options(data) == [(65001, b"ab"), (65002, b"z")]
    assert dns.message.from_wire(bytes(data)).payload == 1232


def test_set_option_replaces_in_place_or_keeps() -> None:
    options = [
        dns.edns.GenericOption(1, b"a"),
        dns.edns.GenericOption(2, b"bb"),
        dns.edns.GenericOption(3, b"c"),
    ]
    data = _query(options=options)
    before = bytes(data)
    assert edns.set_option(data, 2, b"new!", replace=False) is Edit.KEPT
    assert bytes(data) == before
    assert edns.set_option(data, 2, b"longer value") is Edit.REPLACED
    assert edns.read_options(data) == [(1, b"a"), (2, b"longer value"), (3, b"c")]
    dns.message.from_wire(bytes(data))


def test_edits_keep_records_after_the_opt_record() -> None:
    data = _with_tsig_like_record_after_opt()
    assert edns.set_option(data, 65001, b"v") is Edit.ADDED
    parsed = dns.message.from_wire(bytes(data))
    assert [o.otype for o in parsed.options] == [65001]
    assert [r.name.to_text() for r in parsed.additional] == ["extra.example."]
    assert edns.remove_opt(data)
    parsed = dns.message.from_wire(bytes(data))
    assert parsed.edns == -1 and len(parsed.additional) == 1


def test_remove_option_and_remove_opt() -> None:
    data = _query(
        options=[
            dns.edns.GenericOption(8, b"x"),
            dns.edns.GenericOption(9, b"y"),
            dns.edns.GenericOption(8, b"z"),
        ]
    )
    assert edns.remove_option(data, 8) == 2
    assert edns.read_options(data) == [(9, b"y")]
    assert edns.remove_option(data, 8) == 0
    assert edns.remove_opt(data)
    assert edns.locate_opt(data) is None
    assert data[10:12] == b"\x00\x00"
    assert not edns.remove_opt(data)


def test_an_added_opt_record_can_be_taken_away_again() -> None:
    original = _query(use_edns=False)
    data = bytearray(original)
    assert edns.set_option(data, 8, b"\x00\x01\x18\x00\x7f\x00\x00") is Edit.ADDED_OPT
    assert edns.remove_opt(data)
    assert data == original


def test_trailing_data_is_dropped_by_an_edit() -> None:
    data = _query(use_edns=False) + b"trailing"
    assert edns.set_option(data, 65001, b"") is Edit.ADDED_OPT
    dns.message.from_wire(bytes(data))  # would raise on trailing junk


@pytest.mark.parametrize(
    ("mangle", "records_walk"),
    [
        (lambda d: d[:-3], False),  # the OPT record runs off the end
        (lambda d: d[:11], False),  # shorter than a header
        # An option runs past its record: the OPT record itself can still be removed.
        (lambda d: d[:-6] + b"\x00\x09\x00\x05\x00\x00", True),
    ],
)
def test_hostile_bytes_raise_edns_error_and_are_left_alone(
    mangle: object, records_walk: bool
) -> None:
    data = bytearray(mangle(bytes(_query(options=[dns.edns.GenericOption(9, b"ab")]))))  # type: ignore[operator]
    before = bytes(data)
    for call in (
        lambda: edns.read_options(data),
        lambda: edns.set_option(data, 8, b"x"),
        lambda: edns.remove_option(data, 9),
    ):
        with pytest.raises(EDNSError):
            call()
        assert bytes(data) == before
    if records_walk:
        assert edns.remove_opt(data)
    else:
        with pytest.raises(EDNSError):
            edns.remove_opt(data)
        assert bytes(data) == before


def test_an_edit_over_max_size_fails_untouched() -> None:
    data = _query(use_edns=False)
    before = bytes(data)
    with pytest.raises(EDNSError):
        edns.set_option(data, 65001, b"x" * 100, max_size=len(data) + 50)
    assert bytes(data) == before


def test_a_compression_pointer_that_does_not_point_back_is_refused() -> None:
    answer = dns.message.make_response(dns.message.make_query("edns.example.", "A", use_edns=0))
    answer.answer.append(dns.rrset.from_text("edns.example.", 60, "IN", "A", "192.0.2.1"))
    data = bytearray(answer.to_wire())
    owner = 12 + len(b"\x04edns\x07example\x00") + 4
    assert data[owner : owner + 2] == b"\xc0\x0c"  # the answer's owner: back to the question
    assert edns.locate_opt(data) is not None
    # Pointing at itself, then past itself: a reader following it would loop, or read
    # what is not a name; the walker, which only skips names, would not notice.
    for pointer in (b"\xc0" + bytes([owner]), b"\xc3\xff"):
        data[owner : owner + 2] = pointer
        before = bytes(data)
        with pytest.raises(EDNSError):
            edns.locate_opt(data)
        with pytest.raises(EDNSError):
            edns.remove_opt(data)
        assert bytes(data) == before


def test_strip_takes_out_what_was_added_and_reads_it_first() -> None:
    options = [dns.edns.GenericOption(10, b"k" * 8), dns.edns.GenericOption(8, b"\x00\x01\x18\x00")]
    data = _query(options=options)
    assert edns.strip(data, 8, whole_opt=False) == b"\x00\x01\x18\x00"
    assert edns.read_options(data) == [(10, b"k" * 8)]
    assert edns.strip(data, 8, whole_opt=False) is None  # nothing left to take
    assert edns.read_options(data) == [(10, b"k" * 8)]
    assert edns.strip(data, 10, whole_opt=True) == b"k" * 8
    assert edns.locate_opt(data) is None and data[10:12] == b"\x00\x00"
    assert edns.strip(data, 10, whole_opt=True) is None


def test_strip_leaves_unreadable_options_unless_the_whole_record_goes() -> None:
    data = bytearray(_query(options=[dns.edns.GenericOption(9, b"ab")])[:-6])
    data += b"\x00\x09\x00\x05\x00\x00"  # an option that runs past its record
    before = bytes(data)
    assert edns.strip(data, 9, whole_opt=False) is None
    assert bytes(data) == before
    assert edns.strip(data, 9, whole_opt=True) is None
    assert edns.locate_opt(data) is None
