"""The one walker over a DNS message's bytes (triodist.wire.walk).

Names are skipped, never followed; hostile bytes stop the walk (-1, None or WalkError),
never read past the end or raise anything else.
"""

from __future__ import annotations

import struct

import dns.message
import dns.rrset
import pytest

from triodist.wire.message import DNSQuestion, DNSResponse
from triodist.wire.walk import (
    HEADER_LEN,
    OPT,
    WalkError,
    counts,
    find_opt,
    has_question,
    name_end,
    plain_name_end,
    question_end,
    question_key,
    records,
    skip_questions,
)


def answer(*, edns: bool = True) -> bytes:
    """www.example.com. A: three A records (owners compressed), an SOA in authority,
    and the OPT record when ``edns``."""
    query = dns.message.make_query("www.example.com.", "A", use_edns=0 if edns else False)
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text(
            "www.example.com.", 60, "IN", "A", "192.0.2.1", "192.0.2.2", "192.0.2.3"
        )
    )
    response.authority.append(
        dns.rrset.from_text("example.com.", 300, "IN", "SOA", "ns. host. 1 2 3 4 5")
    )
    return response.to_wire()


QNAME = b"\x03www\x07example\x03com\x00"


def test_name_end_skips_labels_and_stops_at_a_pointer() -> None:
    data = b"\x00" * 12 + QNAME + b"\xc0\x0c"
    assert name_end(data, 12) == 12 + len(QNAME)
    assert name_end(data, 12 + len(QNAME)) == len(data)
    assert name_end(b"\x00", 0) == 1  # the root


def test_name_end_refuses_what_is_not_a_name() -> None:
    assert name_end(b"\x03ww", 0) == -1  # runs off the end
    assert name_end(b"\x03www", 0) == -1  # no root label
    assert name_end(b"\xc0", 0) == -1  # half a pointer
    assert name_end(b"\x40abc\x00", 0) == -1  # 0x40 label type
    assert name_end(b"\x80abc\x00", 0) == -1  # 0x80 label type
    assert name_end(QNAME, 0, end=5) == -1  # ``end`` bounds it


def test_plain_name_end_refuses_a_pointer() -> None:
    assert plain_name_end(b"\x00" * 12 + QNAME) == 12 + len(QNAME)
    assert plain_name_end(b"\x00" * 12 + b"\x03www\xc0\x0c") == -1
    assert plain_name_end(b"\x00" * 12 + b"\x03www") == -1
    assert plain_name_end(QNAME, 0) == len(QNAME)


def test_question_end_walks_every_question() -> None:
    data = answer()
    assert question_end(data) == 12 + len(QNAME) + 4
    assert question_end(data[:12]) == -1  # QDCOUNT 1, no question
    assert question_end(data[:20]) == -1
    assert question_end(b"\x00" * 11) == -1
    no_question = b"\x00" * 12
    assert question_end(no_question) == 12
    two = bytearray(b"\x00" * 12 + QNAME + b"\x00\x01\x00\x01" + b"\xc0\x0c\x00\x1c\x00\x01")
    struct.pack_into("!H", two, 4, 2)
    assert question_end(two) == len(two)
    assert skip_questions(two, 12, 1) == 12 + len(QNAME) + 4
    assert skip_questions(two, 12, 3) == -1


def test_records_gives_offsets_and_fixed_fields() -> None:
    data = answer()
    end = question_end(data)
    qd, an, ns, ar = counts(data)
    assert (qd, an, ns, ar) == (1, 3, 1, 1)
    found = list(records(data, end, an + ns + ar))
    assert [r[0] for r in found] == [0, 1, 2, 3, 4]
    assert [r[2] for r in found] == [1, 1, 1, 6, OPT]
    assert [r[4] for r in found[:4]] == [60, 60, 60, 300]
    position, start, rtype, rclass, ttl, rdlen, rdata = found[0]
    assert (position, rtype, rclass, ttl, rdlen) == (0, 1, 1, 60, 4)
    assert start == end and rdata - 10 == end + 2  # the owner: a pointer to the qname
    assert struct.unpack_from("!I", data, rdata - 6)[0] == 60
    addresses = {bytes(data[r[6] : r[6] + r[5]]) for r in found[:3]}
    assert addresses == {bytes([192, 0, 2, n]) for n in (1, 2, 3)}
    assert found[1][1] == rdata + rdlen  # the next record starts where the data ends
    last = found[-1]
    assert last[6] + last[5] == len(data)


def test_records_stops_with_walk_error_after_the_good_ones() -> None:
    data = answer(edns=False)
    end = question_end(data)
    _, an, ns, ar = counts(data)
    cut = data[:-3]  # the SOA's data cut short
    seen: list[tuple[int, ...]] = []
    with pytest.raises(WalkError):
        for record in records(cut, end, an + ns + ar):
            seen.append(record)
    assert [r[2] for r in seen] == [1, 1, 1]
    # whole=False: the cut record comes too (its TTL field is there), then the error.
    seen = []
    with pytest.raises(WalkError):
        for record in records(cut, end, an + ns + ar, whole=False):
            seen.append(record)
    assert [r[2] for r in seen] == [1, 1, 1, 6]
    # More records announced than present.
    with pytest.raises(WalkError):
        list(records(data, end, an + ns + ar + 1))
    # A hostile label type where an owner should be.
    bad = data[:end] + b"\x40" + data[end + 1 :]
    with pytest.raises(WalkError):
        list(records(bad, end, 1))


def test_find_opt_finds_the_opt_record_of_the_additional_section() -> None:
    data = answer()
    end = question_end(data)
    opt = find_opt(data, end)
    assert opt is not None
    start, stop = opt
    assert stop == len(data)
    assert data[start] == 0 and struct.unpack_from("!H", data, start + 1)[0] == OPT
    assert find_opt(answer(edns=False), end) is None
    assert find_opt(data[:-1], end) is None  # cut short
    assert find_opt(data[:10], end) is None  # shorter than a header


def test_find_opt_agrees_with_records() -> None:
    data = answer()
    end = question_end(data)
    _, an, ns, ar = counts(data)
    opts = [r for r in records(data, end, an + ns + ar) if r[2] == OPT and r[0] >= an + ns]
    assert find_opt(data, end) == (opts[0][1], opts[0][6] + opts[0][5])


def test_question_key_and_has_question() -> None:
    query = dns.message.make_query("WwW.Example.COM.", "A").to_wire()
    end = question_end(query)
    key = question_key(query, end)
    assert key == QNAME + b"\x00\x01\x00\x01"
    reply = bytearray(answer())
    assert has_question(reply, key)
    reply[13] = ord("W")  # 0x20 case in the reply
    assert has_question(reply, key)
    # Type 97 ('a') is not type 65 ('A'): only the name is compared without case.
    other = bytearray(reply)
    struct.pack_into("!H", other, HEADER_LEN + len(QNAME), 97)
    key65 = QNAME + b"\x00\x41\x00\x01"
    assert not has_question(other, key65)
    assert not has_question(reply[:20], key)
    # A key without a whole question is compared as bytes.
    assert has_question(b"\x00" * 12 + b"\x00\x01", b"\x00\x01")
    assert question_key(b"\x00" * 12, 12) == b""


def test_a_response_to_another_type_is_read_as_its_own() -> None:
    """``DNSResponse.from_query`` keeps the query's parse only for the same question: the
    name in any case, the type and class exactly (lowering them made type 97, 'a', the
    query's type 65, 'A')."""
    query = dns.message.make_query("www.example.org.", 65).to_wire()
    dq = DNSQuestion(query, ("127.0.0.1", 53000), ("127.0.0.1", 53), now=0.0)
    end = dq.question_end
    reply = bytearray(dns.message.make_response(dns.message.from_wire(query)).to_wire())
    reply[HEADER_LEN : end - 4] = reply[HEADER_LEN : end - 4].upper()
    assert DNSResponse.from_query(dq, reply).qtype == 65  # the same question
    struct.pack_into("!H", reply, end - 4, 97)
    assert DNSResponse.from_query(dq, reply).qtype == 97
    struct.pack_into("!HH", reply, end - 4, 65, 3 | 0x20)  # class 35, not CH (3)
    assert DNSResponse.from_query(dq, reply).qclass == 35
