"""``dr:editTTLs(func)``: each record's TTL becomes what ``func(section, qclass, qtype,
ttl)`` returns (0 leaves it), as dnsdist's; the walk ends at the OPT record, and stops
quietly where the records or ``func`` fail."""

from __future__ import annotations

import struct
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from conftest import StartTriodist, query

from triodist.testing.backend import AuthServer
from triodist.wire.message import DNSQuestion, DNSResponse

QUERY = dns.message.make_query("www.example.org.", "A")


def record(rtype: int, ttl: int, rdata: bytes, rclass: int = 1) -> bytes:
    # Owner: a pointer to the question's name (offset 12).
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def response(answer: list[bytes], authority: list[bytes], additional: list[bytes]) -> bytes:
    wire = QUERY.to_wire()
    qid = struct.unpack_from("!H", wire)[0]
    question = wire[12:]
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, len(answer), len(authority), len(additional))
    return header + question + b"".join(answer + authority + additional)


def ttls(data: bytes | bytearray, count: int) -> list[int]:
    """The TTLs of the first ``count`` records after the question (each record built by
    ``record``: a two-byte owner)."""
    pos, found = len(QUERY.to_wire()), []
    for _ in range(count):
        _, _, ttl, rdlen = struct.unpack_from("!HHIH", data, pos + 2)
        found.append(ttl)
        pos += 12 + rdlen
    return found


def make_dr(wire: bytes) -> DNSResponse:
    dq = DNSQuestion(QUERY.to_wire(), ("192.0.2.7", 5353), ("127.0.0.1", 53), now=0.0)
    return DNSResponse.from_query(dq, wire)


A = record(1, 3600, bytes([192, 0, 2, 10]))
NS = record(2, 7200, b"\xc0\x0c")
GLUE = record(1, 900, bytes([192, 0, 2, 53]), rclass=254)  # class NONE: passed on as it is
OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000, 0)  # DO set


def test_each_record_is_passed_with_its_section_class_type_and_ttl() -> None:
    dr = make_dr(response([A], [NS], [GLUE]))
    calls: list[tuple[Any, ...]] = []

    def edit(section: int, qclass: int, qtype: int, ttl: int) -> int:
        calls.append((section, qclass, qtype, ttl))
        return section * 1000 + qtype

    dr.editTTLs(edit)
    assert calls == [(1, 1, 1, 3600), (2, 1, 2, 7200), (3, 254, 1, 900)]
    assert ttls(dr.data, 3) == [1001, 2002, 3001]


def test_zero_leaves_the_ttl_and_other_values_wrap_as_32_bits() -> None:
    dr = make_dr(response([A, A], [], []))
    results = iter([0, 2**32 + 7])
    dr.editTTLs(lambda *_: next(results))
    assert ttls(dr.data, 2) == [3600, 7]


def test_the_walk_ends_at_the_opt_record() -> None:
    # A record after the OPT record is not visited (dnsdist stops there), and OPT's TTL
    # field (extended rcode, version, DO) is never changed.
    dr = make_dr(response([A], [], [OPT, GLUE]))
    seen: list[int] = []

    def edit(section: int, qclass: int, qtype: int, ttl: int) -> int:
        seen.append(qtype)
        return 5

    dr.editTTLs(edit)
    assert seen == [1]
    assert bytes(dr.data[-(len(OPT) + len(GLUE)) :]) == OPT + GLUE


def test_a_failing_function_or_a_value_that_is_not_a_number_stops_quietly() -> None:
    for bad in (RuntimeError("boom"), None, "7", True):
        dr = make_dr(response([A, A], [NS], []))
        results: list[Any] = [9, bad]

        def edit(*_: Any, results: list[Any] = results) -> Any:
            value = results.pop(0)
            if isinstance(value, Exception):
                raise value
            return value

        dr.editTTLs(edit)  # no exception
        # The first TTL changed, the second left as the backend sent it.
        assert ttls(dr.data, 2) == [9, 3600], bad


def test_records_that_run_off_the_end_stop_the_walk() -> None:
    wire = response([A, A], [], [])
    cut = wire[:-3]  # the second record's data is cut short
    dr = make_dr(cut)
    dr.editTTLs(lambda *_: 42)
    first, second = ttls(dr.data, 2)
    # Both fixed parts are there: both TTLs changed, as dnsdist changes a TTL before it
    # finds that the record's data runs off the end.
    assert (first, second) == (42, 42)
    assert len(dr.data) == len(cut)
    make_dr(wire[:14]).editTTLs(lambda *_: 42)  # a header and a bit: nothing to do


CONFIG = """
newServer{address="$BACKEND"}
function edit(section, qclass, qtype, ttl)
  return section * 1000 + qtype
end
function edit_all(dr)
  dr:editTTLs(edit)
  return DNSResponseAction.None, ""
end
addResponseAction(AllRule(), LuaResponseAction(edit_all))
"""


async def test_lua_response_action_edits_the_ttls_over_udp_and_tcp(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CONFIG)
    for tcp in (False, True):
        msg = query("www.example.org.", edns=True)
        msg.want_dnssec(True)
        reply = await (t.tcp if tcp else t.udp)(msg)
        assert reply is not None and reply.rcode() == dns.rcode.NOERROR
        assert [rrset.ttl for rrset in reply.answer] == [1001]
        # The OPT record is untouched: EDNS version 0, DO still set.
        assert reply.edns == 0 and reply.ednsflags & dns.flags.DO
        nx = await (t.tcp if tcp else t.udp)(query("nope.example.org."))
        assert nx is not None and nx.rcode() == dns.rcode.NXDOMAIN
        assert [(rrset.rdtype, rrset.ttl) for rrset in nx.authority] == [(dns.rdatatype.SOA, 2006)]
