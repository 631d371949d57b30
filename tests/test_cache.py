"""The packet cache on its own: keys, TTL arithmetic, insertion rules, collisions,
eviction, stale answers, the Lua-facing methods.  Messages are built with dnspython
and handed to the cache directly; ``now`` is a plain number, so time is whatever the
test says it is.  What a client sees through a running server is in
``test_cache_e2e.py``.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triodist.cache.keys import CacheKey
from triodist.cache.packetcache import KEYS_KEPT, PacketCache
from triodist.config.runtime import LUPA
from triodist.wire.address import ComboAddress
from triodist.wire.names import DNSName
from triodist.wire.question import parse_question

NAME = "www.example.org."
T0 = 1000.0  # an arbitrary "now" for the first insert


# --- building messages ----------------------------------------------------------------


def make_query(
    name: str = NAME,
    rdtype: str | int = "A",
    *,
    rdclass: str = "IN",
    qid: int = 4321,
    rd: bool = True,
    cd: bool = False,
    edns: bool = False,
    do: bool = False,
    payload: int = 1232,
    options: Sequence[dns.edns.Option] = (),
) -> bytes:
    use_edns = edns or do or bool(options)
    if use_edns:
        msg = dns.message.make_query(
            name, rdtype, rdclass, use_edns=0, want_dnssec=do, payload=payload, options=options
        )
    else:
        msg = dns.message.make_query(name, rdtype, rdclass, use_edns=False)
    msg.id = qid
    msg.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    return msg.to_wire()


def make_answer(
    query: bytes,
    answer: Iterable[dns.rrset.RRset] = (),
    *,
    authority: Iterable[dns.rrset.RRset] = (),
    additional: Iterable[dns.rrset.RRset] = (),
    rcode: int = dns.rcode.NOERROR,
    tc: bool = False,
    do: bool = False,
) -> bytes:
    request = dns.message.from_wire(query)
    msg = dns.message.make_response(request)
    if do:
        msg.use_edns(0, dns.flags.DO, 1232)
    msg.answer.extend(answer)
    msg.authority.extend(authority)
    msg.additional.extend(additional)
    msg.set_rcode(rcode)
    if tc:
        msg.flags |= dns.flags.TC
    return msg.to_wire()


def rrset(name: str, ttl: int, rdtype: str, *values: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *values)


def a_answer(query: bytes, ttl: int = 300, name: str = NAME) -> bytes:
    return make_answer(query, [rrset(name, ttl, "A", "192.0.2.1")])


def soa(name: str = "example.org.", ttl: int = 300, minimum: int = 60) -> dns.rrset.RRset:
    return rrset(name, ttl, "SOA", f"ns.{name} hostmaster.{name} 1 3600 600 86400 {minimum}")


def key_of(cache: PacketCache, query: bytes, tcp: bool = False) -> CacheKey:
    return cache.make_key(query, parse_question(query)[3], tcp)


def store(cache: PacketCache, query: bytes, response: bytes, now: float = T0) -> bool:
    return cache.insert(key_of(cache, query), response, now)


def serve(
    cache: PacketCache, query: bytes, now: float = T0, tcp: bool = False, **kw: Any
) -> dns.message.Message | None:
    wire = cache.lookup(key_of(cache, query, tcp), query, now, **kw)
    return None if wire is None else dns.message.from_wire(bytes(wire))


def ttl_map(msg: dns.message.Message | None) -> dict[str, int]:
    """ "section name type" -> TTL, for every record set of a message."""
    assert msg is not None
    out = {}
    for section, rrsets in (
        ("an", msg.answer),
        ("ns", msg.authority),
        ("ar", msg.additional),
    ):
        for rrs in rrsets:
            out[f"{section} {rrs.name} {dns.rdatatype.to_text(rrs.rdtype)}"] = rrs.ttl
    return out


def addresses(msg: dns.message.Message | None) -> list[str]:
    assert msg is not None
    return [rd.to_text() for rrs in msg.answer for rd in rrs]


# --- keys -----------------------------------------------------------------------------


def _variants() -> dict[str, bytes]:
    return {
        "plain": make_query(),
        "no RD": make_query(rd=False),
        "CD": make_query(cd=True),
        "EDNS": make_query(edns=True),
        "DO": make_query(do=True),
        "payload 4096": make_query(edns=True, payload=4096),
        "ECS 192.0.2.0/24": make_query(options=[dns.edns.ECSOption("192.0.2.0", 24)]),
        "ECS 198.51.100.0/24": make_query(options=[dns.edns.ECSOption("198.51.100.0", 24)]),
        "AAAA": make_query(rdtype="AAAA"),
        "CH": make_query(rdclass="CH"),
        "other name": make_query("mail.example.org."),
    }


def test_what_changes_the_answer_changes_the_key() -> None:
    cache = PacketCache(100)
    variants = _variants()
    keys = {label: key_of(cache, wire) for label, wire in variants.items()}
    keys["TCP"] = key_of(cache, variants["plain"], tcp=True)
    assert len({k.ident for k in keys.values()}) == len(keys)
    assert len({k.hash for k in keys.values()}) == len(keys)
    # And behaviourally: an answer stored for one is never served to another.
    plain = variants["plain"]
    assert store(cache, plain, a_answer(plain))
    for label, wire in variants.items():
        assert (serve(cache, wire) is not None) == (label == "plain"), label
    assert serve(cache, plain, tcp=True) is None


def test_the_qtype_bytes_are_not_case_folded() -> None:
    # 0x41 is "A" and 0x61 is "a": HTTPS (65) and type 97 must stay apart.
    cache = PacketCache(10)
    https = key_of(cache, make_query(rdtype=65))
    other = key_of(cache, make_query(rdtype=97))
    assert https.ident != other.ident


def test_qname_case_is_one_key_and_the_hit_carries_the_queries_case_and_id() -> None:
    cache = PacketCache(10)
    first = make_query("www.example.org.", qid=1)
    assert store(cache, first, a_answer(first))
    again = make_query("WwW.ExAmPlE.oRg.", qid=0xBEEF)
    assert key_of(cache, again).hash == key_of(cache, first).hash
    reply = serve(cache, again)
    assert reply is not None
    assert reply.id == 0xBEEF
    assert reply.question[0].name.to_text() == "WwW.ExAmPlE.oRg."
    assert addresses(reply) == ["192.0.2.1"]


def test_the_cookie_is_left_out_of_the_key_unless_cookie_hashing() -> None:
    one = make_query(options=[dns.edns.CookieOption(b"\x01" * 8, b"")])
    two = make_query(options=[dns.edns.CookieOption(b"\x02" * 8, b"")])
    default = PacketCache(10)
    assert key_of(default, one).ident == key_of(default, two).ident
    hashing = PacketCache(10, cookie_hashing=True)
    assert key_of(hashing, one).ident != key_of(hashing, two).ident


def test_padding_is_skipped_by_default_and_skip_options_add_more() -> None:
    pad1 = make_query(options=[dns.edns.GenericOption(12, b"\x00" * 8)])
    pad2 = make_query(options=[dns.edns.GenericOption(12, b"\xff" * 8)])
    ecs1 = make_query(options=[dns.edns.ECSOption("192.0.2.0", 24)])
    ecs2 = make_query(options=[dns.edns.ECSOption("198.51.100.0", 24)])
    default = PacketCache(10)
    assert key_of(default, pad1).ident == key_of(default, pad2).ident
    assert key_of(default, ecs1).ident != key_of(default, ecs2).ident
    skip_ecs = PacketCache(10, skip_options=[8])
    assert key_of(skip_ecs, ecs1).ident == key_of(skip_ecs, ecs2).ident
    assert key_of(skip_ecs, pad1).ident == key_of(skip_ecs, pad2).ident


def test_payload_ranks_share_entries_between_payload_sizes() -> None:
    cache = PacketCache(10, payload_ranks=[1232, 4096, 100, 70000])
    assert cache.payload_ranks == (1232, 4096)  # outside 512..maximumEntrySize: dropped
    k1400 = key_of(cache, make_query(edns=True, payload=1400))
    k1500 = key_of(cache, make_query(edns=True, payload=1500))
    k1232 = key_of(cache, make_query(edns=True, payload=1232))
    k512 = key_of(cache, make_query(edns=True, payload=512))
    k4096 = key_of(cache, make_query(edns=True, payload=4096))
    assert k1400.ident == k1500.ident == k1232.ident
    assert len({k1232.ident, k512.ident, k4096.ident}) == 3
    plain = PacketCache(10)
    assert (
        key_of(plain, make_query(edns=True, payload=1400)).ident
        != key_of(plain, make_query(edns=True, payload=1500)).ident
    )


def test_an_unreadable_question_gives_a_key_that_never_hits_nor_stores() -> None:
    cache = PacketCache(10)
    query = make_query()
    broken = cache.make_key(query, 5, False)  # question_end inside the header
    assert not broken.usable
    assert not cache.insert(broken, a_answer(query), T0)
    assert cache.lookup(broken, query, T0) is None
    assert len(cache) == 0


# --- TTLs -----------------------------------------------------------------------------


def _full_answer(query: bytes) -> bytes:
    return make_answer(
        query,
        [rrset(NAME, 300, "A", "192.0.2.1")],
        do=True,
        authority=[rrset("example.org.", 600, "NS", "ns.example.org.")],
        additional=[rrset("ns.example.org.", 900, "A", "192.0.2.53")],
    )


def test_ttls_age_with_now_in_whole_seconds_and_opt_is_untouched() -> None:
    cache = PacketCache(10)
    query = make_query(do=True)
    response = _full_answer(query)
    assert store(cache, query, response, T0)
    fresh = serve(cache, query, T0 + 0.9)
    assert ttl_map(fresh) == {
        "an www.example.org. A": 300,
        "ns example.org. NS": 600,
        "ar ns.example.org. A": 900,
    }
    aged = serve(cache, query, T0 + 100.5)
    assert ttl_map(aged) == {
        "an www.example.org. A": 200,
        "ns example.org. NS": 500,
        "ar ns.example.org. A": 800,
    }
    assert aged is not None and aged.ednsflags & dns.flags.DO and aged.payload == 1232
    # The entry lives as long as its smallest TTL, and never serves a TTL of 0.
    last = serve(cache, query, T0 + 299.9)
    assert ttl_map(last)["an www.example.org. A"] == 1
    assert serve(cache, query, T0 + 300) is None


def test_dont_age_serves_the_ttls_as_stored() -> None:
    cache = PacketCache(10, dont_age=True)
    query = make_query()
    assert store(cache, query, _full_answer(query))
    assert ttl_map(serve(cache, query, T0 + 250))["an www.example.org. A"] == 300
    assert serve(cache, query, T0 + 300) is None


def test_max_ttl_caps_how_long_an_entry_lives_not_the_ttl_served() -> None:
    cache = PacketCache(10, max_ttl=100)
    query = make_query()
    assert store(cache, query, a_answer(query, ttl=5000))
    assert ttl_map(serve(cache, query, T0 + 10))["an www.example.org. A"] == 4990
    assert serve(cache, query, T0 + 99.5) is not None
    assert serve(cache, query, T0 + 100) is None


def test_min_ttl_refuses_short_answers_and_counts_them() -> None:
    cache = PacketCache(10, min_ttl=60)
    short, long = make_query("short.example.org."), make_query("long.example.org.")
    assert not store(cache, short, a_answer(short, ttl=59, name="short.example.org."))
    assert store(cache, long, a_answer(long, ttl=60, name="long.example.org."))
    assert cache.getStats()["ttlTooShorts"] == 1
    assert len(cache) == 1


def test_negative_answers_live_for_the_smallest_ttl_capped_by_max_negative_ttl() -> None:
    cache = PacketCache(10, max_negative_ttl=120, max_ttl=10)
    nx = make_query("nope.example.org.")
    # SOA TTL and MINIMUM 7200: capped at maxNegativeTTL (and maxTTL does not apply to it).
    answer = make_answer(nx, authority=[soa(ttl=7200, minimum=7200)], rcode=dns.rcode.NXDOMAIN)
    assert store(cache, nx, answer)
    reply = serve(cache, nx, T0 + 119)
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert ttl_map(reply)["ns example.org. SOA"] == 7200 - 119
    assert serve(cache, nx, T0 + 120) is None
    # NODATA: NOERROR, no answer, an SOA in the authority section.
    nodata = make_query(NAME, "TXT")
    assert store(cache, nodata, make_answer(nodata, authority=[soa(ttl=30, minimum=3600)]))
    assert serve(cache, nodata, T0 + 29) is not None
    assert serve(cache, nodata, T0 + 30) is None


def test_the_negative_ttl_honours_the_soa_minimum() -> None:
    # RFC 2308: min(SOA TTL, SOA MINIMUM); dnsdist reads only the record TTL.
    cache = PacketCache(10)
    nx = make_query("nope.example.org.")
    answer = make_answer(nx, authority=[soa(ttl=300, minimum=60)], rcode=dns.rcode.NXDOMAIN)
    assert store(cache, nx, answer)
    assert serve(cache, nx, T0 + 59) is not None
    assert serve(cache, nx, T0 + 60) is None
    # The smaller of the two, whichever it is.
    answer = make_answer(nx, authority=[soa(ttl=40, minimum=600)], rcode=dns.rcode.NXDOMAIN)
    assert store(cache, nx, answer, T0 + 100)
    assert serve(cache, nx, T0 + 139) is not None
    assert serve(cache, nx, T0 + 140) is None


def test_an_soa_in_the_answer_section_is_a_positive_answer() -> None:
    cache = PacketCache(10, max_ttl=10, max_negative_ttl=3600)
    query = make_query("example.org.", "SOA")
    assert store(cache, query, make_answer(query, [soa(ttl=300)]))
    assert serve(cache, query, T0 + 9) is not None
    assert serve(cache, query, T0 + 10) is None  # maxTTL, not maxNegativeTTL


def test_records_after_the_opt_record_do_not_set_the_lifetime() -> None:
    # As dnsdist: the smallest TTL is looked for up to the OPT record (a TSIG, TTL 0,
    # comes after it); every record but OPT is aged.
    cache = PacketCache(10)
    query = make_query(do=True)
    response = bytearray(make_answer(query, [rrset(NAME, 300, "A", "192.0.2.1")], do=True))
    response += b"\x00" + struct.pack("!HHIH", 16, 1, 0, 1) + b"\x00"
    response[11] += 1  # ARCOUNT
    assert store(cache, query, bytes(response))
    reply = serve(cache, query, T0 + 100)
    assert reply is not None and ttl_map(reply)["an www.example.org. A"] == 200


def test_answers_without_any_record_are_not_cached() -> None:
    cache = PacketCache(10)
    nx = make_query("nope.example.org.")
    assert not store(cache, nx, make_answer(nx, rcode=dns.rcode.NXDOMAIN))
    nodata = make_query(NAME, "TXT", edns=True)  # only an OPT record: still nothing
    assert not store(cache, nodata, make_answer(nodata))
    assert len(cache) == 0


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_temporary_failures_are_cached_for_temporary_failure_ttl(rcode: int) -> None:
    cache = PacketCache(10, temporary_failure_ttl=30)
    query = make_query()
    assert store(cache, query, make_answer(query, rcode=rcode))
    reply = serve(cache, query, T0 + 29)
    assert reply is not None and reply.rcode() == rcode
    assert serve(cache, query, T0 + 30) is None
    never = PacketCache(10, temporary_failure_ttl=0)
    assert not store(never, query, make_answer(query, rcode=rcode))


def test_a_header_only_refused_is_cached_and_served_with_the_queries_id() -> None:
    cache = PacketCache(10)
    query = make_query(qid=1)
    response = dns.message.from_wire(make_answer(query, rcode=dns.rcode.REFUSED))
    response.question = []
    assert store(cache, query, response.to_wire())
    wire = cache.lookup(key_of(cache, query), make_query(qid=77), T0 + 1)
    assert wire is not None and len(wire) == 12
    assert struct.unpack("!H", wire[:2])[0] == 77
    # But a positive answer must carry its question.
    other = make_query("other.example.org.")
    bare = dns.message.from_wire(a_answer(other, name="other.example.org."))
    bare.question = []
    assert not store(cache, other, bare.to_wire())


def test_the_temporary_failure_ttl_can_be_set_per_answer() -> None:
    cache = PacketCache(10, temporary_failure_ttl=60)
    query = make_query()
    key = key_of(cache, query)
    assert cache.insert(key, make_answer(query, rcode=dns.rcode.SERVFAIL), T0, temp_failure_ttl=5)
    assert serve(cache, query, T0 + 4) is not None
    assert serve(cache, query, T0 + 5) is None


@pytest.mark.parametrize(
    "rcode", [dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.YXDOMAIN, dns.rcode.NOTAUTH]
)
def test_other_rcodes_are_not_cached(rcode: int) -> None:
    cache = PacketCache(10)
    query = make_query()
    answer = make_answer(query, [rrset(NAME, 300, "A", "192.0.2.1")], rcode=rcode)
    assert not store(cache, query, answer)
    assert len(cache) == 0


def test_an_empty_truncated_answer_is_cached_only_with_truncated_ttl() -> None:
    query = make_query()
    empty_tc = make_answer(query, tc=True)
    assert not store(PacketCache(10), query, empty_tc)
    cache = PacketCache(10, truncated_ttl=5)
    assert store(cache, query, empty_tc)
    reply = serve(cache, query, T0 + 4)
    assert reply is not None and reply.flags & dns.flags.TC
    assert serve(cache, query, T0 + 5) is None
    # dnsdist's second lookup for DoH refuses a truncated answer.
    assert serve(cache, query, T0 + 1, truncated_ok=False) is None
    # truncatedTTL is for truncated answers only.
    empty = make_query("empty.example.org.")
    assert not store(cache, empty, make_answer(empty))


def test_a_truncated_answer_with_records_is_not_cached_either() -> None:
    # dnsdist caches it for its records' TTL; an incomplete answer is never cached here
    # unless truncatedTTL asks for it, and then for truncatedTTL.
    query = make_query()
    tc = make_answer(query, [rrset(NAME, 100, "A", "192.0.2.1")], tc=True)
    assert not store(PacketCache(10), query, tc)
    cache = PacketCache(10, truncated_ttl=5)
    assert store(cache, query, tc)
    assert serve(cache, query, T0 + 4) is not None
    assert serve(cache, query, T0 + 5) is None


def test_answers_larger_than_maximum_entry_size_are_not_cached() -> None:
    query = make_query(rdtype="TXT", edns=True, payload=4096)  # room for it over UDP
    big = make_answer(query, [rrset(NAME, 300, "TXT", *[f'"{"x" * 200}{i}"' for i in range(5)])])
    assert len(big) > 1000
    assert not store(PacketCache(10, maximum_entry_size=1000), query, big)
    assert store(PacketCache(10, maximum_entry_size=len(big)), query, big)


def test_a_udp_key_keeps_no_answer_larger_than_its_clients_may_be_sent() -> None:
    records = [rrset(NAME, 300, "TXT", *[f'"{"x" * 200}{i}"' for i in range(5)])]
    plain = make_query(rdtype="TXT")  # 512 bytes over UDP
    assert not store(PacketCache(10), plain, make_answer(plain, records))
    cache = PacketCache(10)
    assert cache.insert(key_of(cache, plain, True), make_answer(plain, records), T0)  # TCP
    roomy = make_query(rdtype="TXT", edns=True, payload=1232)
    assert store(PacketCache(10), roomy, make_answer(roomy, records))
    # payloadRanks file a 1,400-byte client under 1,232: it keeps only what fits 1,232.
    ranked = make_query(rdtype="TXT", edns=True, payload=1400)
    big = make_answer(ranked, [rrset(NAME, 300, "TXT", *[f'"{"x" * 200}{i}"' for i in range(6)])])
    assert 1232 < len(big) <= 1400
    assert store(PacketCache(10), ranked, big)
    assert not store(PacketCache(10, payload_ranks=[1232]), ranked, big)


def test_zone_transfers_are_not_cached() -> None:
    cache = PacketCache(10)
    for rdtype in ("AXFR", "IXFR"):
        query = make_query("example.org.", rdtype)
        assert not store(cache, query, make_answer(query, [soa()]))
    assert len(cache) == 0


def test_an_answer_to_another_question_is_not_cached() -> None:
    cache = PacketCache(10)
    query = make_query()
    other_name = make_query("mail.example.org.")
    other_type = make_query(NAME, "AAAA")
    assert not store(cache, query, a_answer(other_name, name="mail.example.org."))
    assert not store(cache, query, make_answer(other_type, [rrset(NAME, 300, "AAAA", "::1")]))
    not_a_response = bytearray(a_answer(query))
    not_a_response[2] &= 0x7F  # QR cleared
    assert not store(cache, query, bytes(not_a_response))
    assert len(cache) == 0


def test_a_longer_lived_answer_to_the_same_question_replaces_the_entry() -> None:
    cache = PacketCache(10)
    query = make_query()
    assert store(cache, query, a_answer(query, ttl=100), T0)
    assert not store(cache, query, a_answer(query, ttl=50), T0 + 10)  # ends sooner: kept
    assert store(cache, query, a_answer(query, ttl=300), T0 + 10)
    assert ttl_map(serve(cache, query, T0 + 20))["an www.example.org. A"] == 290
    assert len(cache) == 1


# --- malformed input --------------------------------------------------------------------


def _malformed(query: bytes) -> dict[str, bytes]:
    good = a_answer(query)
    qend = parse_question(query)[3]
    bad_label = bytearray(good)
    bad_label[qend] = 0x41  # the answer's owner: a 0x40-type label
    counts = bytearray(good)
    counts[7] = 5  # ANCOUNT 5, one record present
    two_questions = bytearray(good)
    two_questions[5] = 2
    # An owner name with a 64-byte label (the most a label holds is 63).
    long_label = good[:qend] + b"\x40" + b"a" * 64 + b"\x00" + good[qend + 2 :]
    return {
        "64-byte label": long_label,
        "cut in the rdata": good[:-2],
        "cut in the fixed part": good[: qend + 6],
        "bad label type": bytes(bad_label),
        "more records than present": bytes(counts),
        "two questions": bytes(two_questions),
        "header only, NOERROR": good[:12],
        "shorter than a header": good[:7],
    }


@pytest.mark.parametrize("label", list(_malformed(make_query())))
def test_malformed_responses_are_not_cached(label: str) -> None:
    cache = PacketCache(10)
    query = make_query()
    assert not store(cache, query, _malformed(query)[label])
    assert len(cache) == 0
    assert store(cache, query, a_answer(query))  # the well-formed one is


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(response=st.binary(max_size=300), now=st.floats(0, 1e6))
def test_random_responses_never_raise(response: bytes, now: float) -> None:
    cache = PacketCache(4, shuffle=True, truncated_ttl=5)
    query = make_query()
    key = key_of(cache, query)
    cache.insert(key, response, now)
    cache.lookup(key, query, now + 1, allow_expired=10)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    data=st.data(),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_damaged_answers_never_raise_and_a_hit_keeps_the_stored_length(
    data: st.DataObject, flips: list[tuple[int, int]]
) -> None:
    cache = PacketCache(4, shuffle=True)
    query = make_query(do=True)
    damaged = bytearray(_full_answer(query))
    for where, value in flips:
        damaged[where % len(damaged)] = value
    key = key_of(cache, query)
    stored = cache.insert(key, bytes(damaged), T0)
    wire = cache.lookup(key, query, T0 + data.draw(st.floats(0, 2000)), allow_expired=100)
    if wire is not None:
        assert stored and len(wire) == len(damaged)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(query=st.binary(max_size=120), question_end=st.integers(-5, 200), tcp=st.booleans())
def test_random_queries_never_raise(query: bytes, question_end: int, tcp: bool) -> None:
    cache = PacketCache(4, parse_ecs=True, payload_ranks=[1232])
    key = cache.make_key(query, question_end, tcp)
    cache.insert(key, a_answer(make_query()), T0)
    cache.lookup(key, query, T0)
    cache.lookup(key_of(cache, make_query()), query, T0)


# --- collisions -----------------------------------------------------------------------


def test_forced_collisions_never_serve_the_other_question() -> None:
    cache = PacketCache(10)
    cache.hash_function = lambda ident: 7  # every question on one key
    www, mail = make_query(), make_query("mail.example.org.")
    assert store(cache, www, a_answer(www), T0)
    # Lookup: same hash, another question: a collision, not a hit and not a miss.
    assert serve(cache, mail, T0 + 1) is None
    # Insert: the live entry stays.
    assert not store(cache, mail, a_answer(mail, name="mail.example.org."), T0 + 1)
    stats = cache.getStats()
    assert (stats["lookupCollisions"], stats["insertCollisions"]) == (1, 1)
    assert (stats["hits"], stats["misses"]) == (0, 0)
    assert addresses(serve(cache, www, T0 + 2)) == ["192.0.2.1"]
    # Once the entry has expired, the other question takes the slot.
    assert store(cache, mail, a_answer(mail, ttl=600, name="mail.example.org."), T0 + 300)
    reply = serve(cache, mail, T0 + 301)
    assert reply is not None and reply.question[0].name.to_text() == "mail.example.org."
    assert serve(cache, www, T0 + 301) is None
    assert len(cache) == 1


def test_a_collision_on_an_ecs_only_difference_is_caught() -> None:
    # dnsdist without parseECS would serve the first subnet's answer here.
    cache = PacketCache(10)
    cache.hash_function = lambda ident: 7
    one = make_query(options=[dns.edns.ECSOption("192.0.2.0", 24)])
    two = make_query(options=[dns.edns.ECSOption("198.51.100.0", 24)])
    assert store(cache, one, a_answer(one))
    assert serve(cache, two, T0 + 1) is None
    assert cache.getStats()["lookupCollisions"] == 1


# --- a full cache -----------------------------------------------------------------------


def _names(n: int) -> list[bytes]:
    return [make_query(f"n{i}.example.org.") for i in range(n)]


def test_a_full_cache_evicts_the_oldest_and_never_grows() -> None:
    cache = PacketCache(3)
    queries = _names(6)
    for i, query in enumerate(queries):
        assert store(cache, query, a_answer(query, name=f"n{i}.example.org."), T0 + i)
        assert len(cache) <= 3
    assert cache.isFull() and len(cache) == 3
    served = [serve(cache, q, T0 + 10) is not None for q in queries]
    assert served == [False, False, False, True, True, True]
    assert cache.evictions == 3


def test_a_refreshed_entry_counts_as_the_newest() -> None:
    cache = PacketCache(2)
    q0, q1, q2 = _names(3)
    store(cache, q0, a_answer(q0, ttl=100, name="n0.example.org."), T0)
    store(cache, q1, a_answer(q1, ttl=100, name="n1.example.org."), T0 + 1)
    assert store(cache, q0, a_answer(q0, ttl=300, name="n0.example.org."), T0 + 2)
    store(cache, q2, a_answer(q2, ttl=100, name="n2.example.org."), T0 + 3)
    assert [serve(cache, q, T0 + 4) is not None for q in (q0, q1, q2)] == [True, False, True]


def test_a_full_cache_evicts_an_expired_entry_first() -> None:
    cache = PacketCache(3)
    q0, q1, q2, q3 = _names(4)
    store(cache, q0, a_answer(q0, ttl=1000, name="n0.example.org."))
    store(cache, q1, a_answer(q1, ttl=10, name="n1.example.org."))
    store(cache, q2, a_answer(q2, ttl=1000, name="n2.example.org."))
    assert store(cache, q3, a_answer(q3, ttl=1000, name="n3.example.org."), T0 + 20)
    assert serve(cache, q0, T0 + 21) is not None  # the oldest survives
    assert serve(cache, q1, T0 + 21, allow_expired=1000) is None  # the expired one went
    assert len(cache) == 3


# --- stale answers ------------------------------------------------------------------------


def test_stale_entries_are_served_with_stale_ttl_within_allow_expired() -> None:
    cache = PacketCache(10, stale_ttl=7)
    query = make_query()
    assert store(cache, query, _full_answer(query))  # lives 300 s
    assert serve(cache, query, T0 + 305) is None
    stale = serve(cache, query, T0 + 305, allow_expired=10)
    assert set(ttl_map(stale).values()) == {7}
    assert serve(cache, query, T0 + 310, allow_expired=10) is None  # expired 10 s ago
    assert cache.getStats()["hits"] == 1


def test_stale_entries_keep_their_stored_ttls_with_dont_age() -> None:
    cache = PacketCache(10, stale_ttl=7, dont_age=True)
    query = make_query()
    assert store(cache, query, _full_answer(query))
    assert ttl_map(serve(cache, query, T0 + 305, allow_expired=10))["an www.example.org. A"] == 300


# --- shuffle ------------------------------------------------------------------------------


def test_shuffle_serves_the_address_records_in_varying_order() -> None:
    values = [f"192.0.2.{i}" for i in range(1, 6)]
    query = make_query()
    answer = make_answer(query, [rrset(NAME, 300, "A", *values)])
    cache = PacketCache(10, shuffle=True)
    cache.random.seed(1)
    assert store(cache, query, answer)
    orders = {tuple(addresses(serve(cache, query, T0 + 1))) for _ in range(30)}
    assert len(orders) > 5
    assert all(sorted(order) == sorted(values) for order in orders)
    still = PacketCache(10)
    assert store(still, query, answer)
    assert len({tuple(addresses(serve(still, query, T0 + 1))) for _ in range(10)}) == 1


def test_shuffle_leaves_other_record_types_alone() -> None:
    query = make_query()
    answer = make_answer(
        query,
        [
            rrset(NAME, 300, "CNAME", "web.example.org."),
            rrset("web.example.org.", 300, "A", "192.0.2.1", "192.0.2.2", "192.0.2.3"),
        ],
    )
    cache = PacketCache(10, shuffle=True)
    cache.random.seed(3)
    assert store(cache, query, answer)
    orders = set()
    for _ in range(20):
        reply = serve(cache, query, T0 + 1)
        assert reply is not None and reply.answer[0].rdtype == dns.rdatatype.CNAME
        orders.add(tuple(addresses(reply)[1:]))
    assert len(orders) > 1


def _wire_order(wire: bytes, ips: Sequence[str]) -> list[str]:
    """The addresses in the order their RDATA sits in ``wire`` (a parse would merge
    two record sets of one name and type)."""
    return sorted(ips, key=lambda ip: wire.find(ipaddress.ip_address(ip).packed))


@pytest.mark.parametrize(
    "after",
    [
        [rrset("other.example.org.", 300, "A", "198.51.100.1", "198.51.100.2")],
        [rrset(NAME, 300, "TXT", '"between"'), rrset(NAME, 300, "A", "198.51.100.1")],
    ],
    ids=["another name follows", "another type between"],
)
def test_shuffle_moves_only_the_first_run_of_one_name_and_type(
    after: list[dns.rrset.RRset],
) -> None:
    query = make_query()
    first = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    answer = make_answer(query, [rrset(NAME, 300, "A", *first), *after])
    rest = [rd.to_text() for rrs in after for rd in rrs if rrs.rdtype == dns.rdatatype.A]
    stored_rest = _wire_order(answer, rest)
    cache = PacketCache(10, shuffle=True)
    cache.random.seed(5)
    assert store(cache, query, answer)
    leaders = set()
    for _ in range(30):
        wire = cache.lookup(key_of(cache, query), query, T0 + 1)
        assert wire is not None
        got = _wire_order(wire, first + rest)
        assert sorted(got[:3]) == first
        assert got[3:] == stored_rest
        leaders.add(got[0])
    assert len(leaders) == 3


# --- maintenance and the Lua methods ---------------------------------------------------


def _fill(cache: PacketCache, specs: Iterable[tuple[str, str, int]]) -> None:
    for name, rdtype, ttl in specs:
        query = make_query(name, rdtype)
        value = "::1" if rdtype == "AAAA" else "192.0.2.1"
        assert store(cache, query, make_answer(query, [rrset(name, ttl, rdtype, value)]))


def test_expunge_keeps_at_most_n_entries_the_newest() -> None:
    cache = PacketCache(10)
    _fill(cache, [(f"n{i}.example.org.", "A", 300) for i in range(5)])
    assert cache.expunge(2) == 3
    assert len(cache) == 2
    assert serve(cache, make_query("n4.example.org."), T0) is not None
    assert cache.expunge() == 2
    assert len(cache) == 0


def test_expunge_by_name_exact_by_type_and_by_suffix() -> None:
    cache = PacketCache(20)
    specs = [
        ("www.example.org.", "A", 300),
        ("www.example.org.", "AAAA", 300),
        ("a.www.example.org.", "A", 300),
        ("example.org.", "A", 300),
        ("notexample.org.", "A", 300),
        ("x\\007example.org.", "A", 300),  # ends with the bytes, not the labels
        ("other.net.", "A", 300),
    ]
    _fill(cache, specs)
    assert cache.expungeByName("WWW.Example.ORG", 1) == 1  # case-insensitive, A only
    assert serve(cache, make_query("www.example.org.", "AAAA"), T0) is not None
    assert cache.expungeByName(DNSName("www.example.org.")) == 1  # any type: the AAAA
    assert cache.expungeByName("example.org.", 255, True) == 2  # a.www and the apex
    assert serve(cache, make_query("notexample.org."), T0) is not None
    _fill(cache, specs[:2])
    assert cache.expungeByName(["www.example.org.", DNSName("other.net.")]) == 3
    assert len(cache) == 2  # notexample.org. and x\007example.org.


def test_expunge_by_name_takes_a_lua_table_of_names() -> None:
    cache = PacketCache(20)
    _fill(cache, [("a.example.", "A", 300), ("b.example.", "A", 300), ("c.example.", "A", 300)])
    lua = LUPA.LuaRuntime(encoding="latin-1")
    lua.globals().pc = cache
    removed = lua.execute('return pc:expungeByName({"a.example.", "c.example."}, 1, false)')
    assert removed == 2 and len(cache) == 1
    assert lua.execute("return pc:toString()") == "1/20"
    assert lua.execute("return pc:getStats().entries") == 1


def test_purge_expired_removes_expired_entries_down_to_up_to() -> None:
    cache = PacketCache(10)
    _fill(cache, [(f"s{i}.example.", "A", 10) for i in range(4)])
    _fill(cache, [("long.example.", "A", 1000)])
    assert cache.purge_expired(T0 + 5) == 0  # nothing expired yet
    assert cache.purge_expired(T0 + 20, up_to=3) == 2  # only down to 3 entries
    assert len(cache) == 3
    assert cache.purge_expired(T0 + 20) == 2  # the long-lived one stays
    assert len(cache) == 1
    assert cache.getStats()["cleanupCount"] == 3
    cache.clock = lambda: T0 + 2000
    assert cache.purgeExpired(0) == 1


def test_stats_count_what_happened() -> None:
    cache = PacketCache(100)
    query = make_query()
    assert serve(cache, query, T0) is None
    store(cache, query, a_answer(query))
    serve(cache, query, T0 + 1)
    serve(cache, query, T0 + 2)
    assert serve(cache, query, T0 + 400) is None  # expired
    assert cache.getStats() == {
        "entries": 1,
        "maxEntries": 100,
        "hits": 2,
        "misses": 2,
        "deferredInserts": 0,
        "deferredLookups": 0,
        "lookupCollisions": 0,
        "insertCollisions": 0,
        "ttlTooShorts": 0,
        "cleanupCount": 0,
    }
    assert cache.toString() == str(cache) == "1/100"
    assert cache.getEntriesCount() == 1 and not cache.isFull()
    cache.out = io.StringIO()
    cache.printStats()
    assert cache.out.getvalue().splitlines() == [
        "Entries: 1/100",
        "Hits: 2",
        "Misses: 2",
        "Deferred inserts: 0",
        "Deferred lookups: 0",
        "Lookup Collisions: 0",
        "Insert Collisions: 0",
        "TTL Too Shorts: 0",
        "Cleanup Count: 0",
    ]


_DUMP_LINE = re.compile(
    r"(?P<qname>\S+) (?P<ttl>-?\d+) (?P<qclass>\S+) (?P<qtype>\S+) ; ecs (?P<ecs>\S+), "
    r"rcode (?P<rcode>\d+), key (?P<key>\d+), length (?P<length>\d+), "
    r"received over UDP (?P<udp>[01]), added (?P<added>\d+), dnssecOK (?P<do>[01]), "
    r"raw query flags (?P<flags>\d+)(, base64response (?P<raw>\S+))?$"
)


def test_dump_writes_one_line_per_entry_in_dnsdists_format(tmp_path: Path) -> None:
    cache = PacketCache(10, parse_ecs=True)
    cache.out = io.StringIO()
    upper = make_query("WWW.example.org.", do=True)
    ecs = make_query("ecs.example.org.", options=[dns.edns.ECSOption("192.0.2.77", 24)])
    nx = make_query("nope.example.org.")
    upper_answer = a_answer(upper, name="WWW.example.org.")
    assert store(cache, upper, upper_answer)
    assert cache.insert(key_of(cache, ecs, tcp=True), a_answer(ecs, name="ecs.example.org."), T0)
    assert store(
        cache, nx, make_answer(nx, authority=[soa(ttl=120, minimum=3600)], rcode=dns.rcode.NXDOMAIN)
    )
    cache.clock = lambda: T0 + 20
    target = tmp_path / "dump.txt"
    cache.dump(str(target), True)
    assert cache.out.getvalue() == "Dumped 3 records\n"
    lines = target.read_text().splitlines()
    assert all(line.startswith(";") for line in lines[:2])
    parsed = [_DUMP_LINE.match(line) for line in lines[2:]]
    assert all(parsed), lines
    fields = {m["qname"]: m for m in parsed if m}
    www = fields["WWW.example.org."]
    assert (www["ttl"], www["qclass"], www["qtype"], www["ecs"], www["rcode"]) == (
        "280",
        "IN",
        "A",
        "empty",
        "0",
    )
    assert int(www["key"]) == key_of(cache, upper).hash
    assert int(www["length"]) == len(upper_answer)
    raw_flags = str(int.from_bytes(upper[2:4], "little"))  # as it sits in memory on x86
    assert (www["udp"], www["do"], www["flags"]) == ("1", "1", raw_flags)
    assert base64.b64decode(www["raw"]) == upper_answer
    assert (fields["ecs.example.org."]["ecs"], fields["ecs.example.org."]["udp"]) == (
        "192.0.2.0/24",
        "0",
    )
    nope = fields["nope.example.org."]
    assert (nope["rcode"], nope["ttl"]) == ("3", "100")
    # An existing file is never overwritten.
    cache.dump(str(target))
    assert "Error opening dump file for writing" in cache.out.getvalue()
    assert target.read_text().splitlines() == lines


def test_address_and_domain_lists() -> None:
    cache = PacketCache(10)
    query = make_query()
    other = make_query("alias.example.org.")
    two = [rrset(NAME, 300, "A", "192.0.2.1", "192.0.2.2")]
    assert store(cache, query, make_answer(query, two))
    one = [rrset("alias.example.org.", 300, "A", "192.0.2.2")]
    assert store(cache, other, make_answer(other, one))
    found = cache.getAddressListByDomain(DNSName(NAME))
    assert sorted(a.toString() for a in found) == ["192.0.2.1", "192.0.2.2"]
    names = cache.getDomainListByAddress(ComboAddress("192.0.2.2"))
    assert sorted(n.toString() for n in names) == ["alias.example.org.", "www.example.org."]
    assert cache.getDomainListByAddress("198.51.100.1") == []


# --- newPacketCache options -------------------------------------------------------------


def test_from_lua_reads_dnsdists_options() -> None:
    cache = PacketCache.from_lua(
        1000,
        {
            "maxTTL": 600,
            "minTTL": 5,
            "temporaryFailureTTL": 7,
            "maxNegativeTTL": 30,
            "staleTTL": 9,
            "dontAge": True,
            "keepStaleData": True,
            "numberOfShards": 4,
            "deferrableInsertLock": False,
            "skipOptions": {1: 8, 2: 65001},
            "cookieHashing": True,
            "maximumEntrySize": 2048,
            "truncatedTTL": 3,
            "shuffle": True,
            "ecsParsing": True,
            "payloadRanks": [4096, 1232, 300],
        },
    )
    assert (cache.max_entries, cache.max_ttl, cache.min_ttl) == (1000, 600, 5)
    assert (cache.temporary_failure_ttl, cache.max_negative_ttl, cache.stale_ttl) == (7, 30, 9)
    assert cache.dont_age and cache.keep_stale_data and cache.shuffle and cache.parse_ecs
    assert (cache.number_of_shards, cache.deferrable_insert_lock) == (4, False)
    assert cache.skip_options == {8, 12, 65001}  # the cookie hashed, padding still skipped
    assert (cache.maximum_entry_size, cache.truncated_ttl) == (2048, 3)
    assert cache.payload_ranks == (1232,)  # 300 too small, 4096 above maximumEntrySize


def test_from_lua_defaults_follow_dnsdist() -> None:
    cache = PacketCache.from_lua(10000, None)
    assert (cache.max_ttl, cache.min_ttl, cache.temporary_failure_ttl) == (86400, 0, 60)
    assert (cache.max_negative_ttl, cache.stale_ttl, cache.maximum_entry_size) == (3600, 60, 4096)
    assert cache.number_of_shards == 20 and cache.skip_options == {10, 12}
    assert PacketCache.from_lua(5, {}).number_of_shards == 5  # never more shards than entries
    assert PacketCache.from_lua(10.0, {"parseECS": True}).parse_ecs  # Lua numbers may be floats
    # As dnsdist, a maximumEntrySize smaller than a header is ignored.
    assert PacketCache.from_lua(10, {"maximumEntrySize": 4}).maximum_entry_size == 4096


@pytest.mark.parametrize(
    ("max_entries", "options", "message"),
    [
        (-1, None, "maximum number of entries"),
        (0, None, "maximum number of entries"),
        ("100", None, "maximum number of entries"),
        (1.5, None, "maximum number of entries"),
        (100, {"maxTTl": 5}, "unknown option 'maxTTl'"),
        (100, {"maxTTL": -5}, "'maxTTL' must be at least 0"),
        (100, {"maxTTL": True}, "'maxTTL' must be an integer"),
        (100, {"minTTL": "60"}, "'minTTL' must be an integer"),
        (100, {"dontAge": 1}, "'dontAge' must be a boolean"),
        (100, {"skipOptions": "8"}, "'skipOptions' must be a list"),
        (100, {"skipOptions": [8, "x"]}, "'skipOptions' must be an integer"),
        (100, {"maximumEntrySize": -1}, "'maximumEntrySize' must be at least 0"),
    ],
)
def test_from_lua_rejects_bad_values_naming_them(
    max_entries: Any, options: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PacketCache.from_lua(max_entries, options)


def test_a_query_with_large_options_keeps_its_entry_small() -> None:
    # A 60 KB EDNS option (possible over TCP) must not make the entry hold 60 KB of key.
    def big(content: bytes) -> bytes:
        msg = dns.message.make_query(
            NAME, "A", use_edns=0, options=[dns.edns.GenericOption(65001, content)]
        )
        return msg.to_wire(max_size=65535)

    big_a, big_b = big(b"a" * 60000), big(b"a" * 59999 + b"b")
    cache = PacketCache(10)
    key_a, key_b = key_of(cache, big_a, tcp=True), key_of(cache, big_b, tcp=True)
    assert len(key_a.ident) <= 64 and key_a.ident != key_b.ident
    answer = make_answer(make_query(), [rrset(NAME, 100, "A", "192.0.2.1")])
    assert cache.insert(key_a, answer, T0)
    assert cache.lookup(key_a, big_a, T0 + 1) is not None
    assert cache.lookup(key_b, big_b, T0 + 1) is None


def test_parse_ecs_compares_the_subnet_even_when_the_option_is_skipped() -> None:
    one = make_query(options=[dns.edns.ECSOption("192.0.2.0", 24)])
    two = make_query(options=[dns.edns.ECSOption("198.51.100.0", 24)])
    answer = make_answer(one, [rrset(NAME, 100, "A", "192.0.2.1")])
    # Without parseECS a skipped ECS option is left out: one subnet's answer serves the other.
    cache = PacketCache(10, skip_options=[8])
    assert store(cache, one, answer)
    assert serve(cache, two, T0 + 1) is not None
    # With parseECS the subnet is compared: never served across subnets.
    parsing = PacketCache(10, skip_options=[8], parse_ecs=True)
    assert store(parsing, one, answer)
    assert serve(parsing, one, T0 + 1) is not None
    assert serve(parsing, two, T0 + 1) is None


def test_keys_are_kept_by_the_querys_bytes_after_its_id() -> None:
    cache = PacketCache(10)
    first = make_query("www.example.org.", qid=1)
    again = make_query("www.example.org.", qid=2)
    assert key_of(cache, first) is key_of(cache, again)  # the ID is not part of it
    assert key_of(cache, first, tcp=True) is not key_of(cache, first)
    assert key_of(cache, first, tcp=True).ident != key_of(cache, first).ident
    # A different question_end for the same bytes is computed anew, not taken.
    wire = bytearray(first)
    end = parse_question(bytes(wire))[3]
    assert cache.make_key(wire, end - 1, False).ident != cache.make_key(wire, end, False).ident


def test_the_kept_keys_are_bounded() -> None:
    cache = PacketCache(10)
    for n in range(KEYS_KEPT + 10):
        key_of(cache, make_query(f"n{n}.example.org."))
    assert 0 < len(cache._keys[False]) <= KEYS_KEPT


def test_large_queries_are_not_kept() -> None:
    cache = PacketCache(10)
    msg = dns.message.make_query("www.example.org.", "A", use_edns=0)
    msg.use_edns(0, options=[dns.edns.GenericOption(65001, b"x" * 600)])
    wire = msg.to_wire()
    key = key_of(cache, wire)
    assert key.ident == key_of(cache, wire).ident
    assert not cache._keys[False]


@given(query=st.binary(min_size=12, max_size=120), tcp=st.booleans())
def test_a_kept_key_is_the_key_computed_anew(query: bytes, tcp: bool) -> None:
    cache = PacketCache(10)
    end = len(query)
    first = cache.make_key(query, end, tcp)
    kept = cache.make_key(b"\xab\xcd" + query[2:], end, tcp)  # another ID, same question
    fresh = PacketCache(10)._compute_key(bytes(query), end, tcp)
    assert kept is first
    assert (kept.hash, kept.ident, kept.usable) == (fresh.hash, fresh.ident, fresh.usable)
