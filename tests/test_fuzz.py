"""Property-based fuzzing of everything that reads bytes from outside.

Clients send the query bytes (UDP datagrams, TCP streams), backends the reply bytes,
external components the network listener's datagrams, and triodist sends the external
filter its own. None of them is trusted: whatever arrives, the parsers raise only what
they document (``MalformedQuery``; a DNS parse error where a rule asks for the whole
message), nothing hangs (every wait in these tests has a deadline), every answer a client
gets carries its own ID and its own question, and a live server fed garbage keeps answering
well-formed queries afterwards.

Inputs are raw bytes and, more usefully, real messages built with dnspython (every
common record type, EDNS with Client Subnet, cookies, padding and huge options) then
damaged the ways that matter: bits flipped, cut short, wrong section counts, compression
pointers that loop, names longer than 255 bytes, option lengths running past the end.

The console (dnsdist's control socket) gets any bytes in place of its handshake, and
sessions with the right key whose commands (Lua from a vocabulary that cannot loop or
change the server) and broken frames (garbage boxes, lying lengths, replays, skipped
nonces, frames cut short) are drawn; it must answer every well-formed message, go on
serving a good client's ``1+2``, and log no error.

The end-to-end properties use the coverage-guided harness's labs (``fuzz/targets.py``,
loaded by path: atheris is not needed to run them; every target also runs over its seed
corpus, the console's included) and the live-server properties the ``start_triodist``
fixture. The web API and the proxy protocol do not exist yet, so nothing here covers
them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import random
import socket
import string
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from conftest import StartTriodist, Triodist, frame, query, read_frame, tcp_query, udp_query
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from triodist.backends.exchange import reply_matches
from triodist.cache.packetcache import PacketCache
from triodist.wire.build import edns_payload, restore_client_view
from triodist.wire.header import CD, RD
from triodist.wire.message import DNSQuestion, DNSResponse
from triodist.wire.question import MalformedQuery, parse_question, read_question
from triodist.wire.stream import StreamReader
from triodist.wire.walk import find_opt

REMOTE = ("192.0.2.10", 40000)
LOCAL = ("127.0.0.1", 53)
_U16 = struct.Struct("!H")

#: Unit-level properties: cheap examples, many of them.
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Properties that run the pipeline over sockets (a few ms an example).
PIPELINE = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Properties against a live server (real time: tens of ms an example).
LIVE = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _load_harness() -> ModuleType:
    """fuzz/targets.py, by path (fuzz/ is not a package and atheris is optional)."""
    path = Path(__file__).resolve().parent.parent / "fuzz" / "targets.py"
    spec = importlib.util.spec_from_file_location("triodist_fuzz_targets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


@pytest.fixture(scope="module")
def targets() -> Iterator[Any]:
    """The harness's targets (their labs: configurations loaded, sockets bound), once."""
    made = harness.Targets()
    yield made
    made.close()


# --- strategies -----------------------------------------------------------------------------

RDATA = {
    "A": ["192.0.2.1", "192.0.2.2"],
    "AAAA": ["2001:db8::1"],
    "MX": ["10 mail.example.org."],
    "TXT": ['"v=spf1 -all"', '"' + "x" * 255 + '"'],
    "SRV": ["0 5 5060 sip.example.org."],
    "NS": ["ns1.example.org."],
    "SOA": ["ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 300"],
    "CNAME": ["target.example.org."],
    "PTR": ["host.example.org."],
    "CAA": ['0 issue "ca.example.net"'],
    "DNSKEY": [
        "257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+"
        "KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==",
    ],
}
QTYPES = [*RDATA, "ANY", "NULL", "TYPE65534"]

_LABEL = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20).map(str.encode),
    st.binary(min_size=1, max_size=63),
)


@st.composite
def names(draw: st.DrawFn) -> dns.name.Name:
    """Any legal name: labels of any bytes, at most 255 bytes on the wire."""
    labels = draw(st.lists(_LABEL, max_size=8))
    while sum(len(label) + 1 for label in labels) + 1 > 255:
        labels.pop()
    return dns.name.Name([*labels, b""])


_OPTIONS = st.lists(
    st.one_of(
        st.builds(
            dns.edns.ECSOption, st.ip_addresses(v=4).map(str), st.integers(0, 32), st.just(0)
        ),
        st.builds(
            dns.edns.ECSOption, st.ip_addresses(v=6).map(str), st.integers(0, 128), st.just(0)
        ),
        st.binary(min_size=8, max_size=40).map(
            lambda b: dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b)
        ),
        st.integers(0, 600).map(
            lambda n: dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * n)
        ),
        # Huge and unknown options.
        st.builds(dns.edns.GenericOption, st.integers(0, 65535), st.binary(max_size=2000)),
    ),
    max_size=3,
)


@st.composite
def query_messages(draw: st.DrawFn, options: bool = True) -> dns.message.Message:
    """A well-formed query as a client may send it (``options``: with EDNS options)."""
    drawn = draw(_OPTIONS) if options else []
    edns = draw(st.booleans()) or bool(drawn)
    msg = dns.message.make_query(
        draw(names()),
        draw(st.sampled_from(QTYPES)),
        use_edns=0 if edns else False,
        want_dnssec=edns and draw(st.booleans()),
        options=drawn or None,
        payload=draw(st.sampled_from([512, 1232, 4096, 65535])),
    )
    msg.id = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        msg.flags ^= dns.flags.RD
    if draw(st.booleans()):
        msg.flags |= dns.flags.CD
    return msg


def queries(options: bool = True) -> st.SearchStrategy[bytes]:
    return query_messages(options).map(_render)


@st.composite
def responses(draw: st.DrawFn, to: dns.message.Message | None = None) -> bytes:
    """A well-formed response (to ``to``, else to a drawn query): records of every common
    type, names compressed by dnspython, any rcode, sometimes truncated."""
    asked = to if to is not None else draw(query_messages())
    msg = dns.message.make_response(asked)
    msg.set_rcode(draw(st.sampled_from([0, 0, 0, 2, 3, 5, 1, 4])))
    owner = asked.question[0].name
    for section in (msg.answer, msg.authority, msg.additional):
        for rdtype in draw(st.lists(st.sampled_from(list(RDATA)), max_size=3)):
            name = owner if draw(st.booleans()) else draw(names())
            ttl = draw(st.integers(0, 2**31 - 1))
            section.append(dns.rrset.from_text_list(name, ttl, "IN", rdtype, RDATA[rdtype]))
    if draw(st.booleans()):
        msg.flags |= dns.flags.TC
    return _render(msg)


def _render(msg: dns.message.Message) -> bytes:
    """``msg`` on the wire. dnspython shuffles the records of an RRset with the global
    ``random``, which a strategy must leave as it found it."""
    state = random.getstate()
    try:
        return msg.to_wire(max_size=65535)
    finally:
        random.setstate(state)


def _pointer(target: int) -> bytes:
    return _U16.pack(0xC000 | (target & 0x3FFF))


@st.composite
def damaged(draw: st.DrawFn, wire: bytes) -> bytes:
    """``wire`` damaged in one to four of the ways that break parsers."""
    data = bytearray(wire)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["flip", "byte", "cut", "count", "loop", "long-name", "huge-option", "insert"]
            )
        )
        where = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[where] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[where:]
        elif kind == "count" and len(data) >= 12:
            field = draw(st.sampled_from([4, 6, 8, 10]))
            _U16.pack_into(data, field, draw(st.sampled_from([0, 1, 2, 3, 255, 0xFFFF])))
        elif kind == "loop":
            # A pointer to itself or further on: a name that never ends if followed.
            at = max(12, where)
            data[at : at + 2] = _pointer(at + draw(st.sampled_from([0, 0, 2, 4])))
        elif kind == "long-name" and len(data) >= 12:
            # Labels of 63 bytes past the 255-byte limit, in place of the question name.
            data[12:] = (b"\x3f" + b"a" * 63) * draw(st.integers(4, 6)) + b"\x00\x00\x01\x00\x01"
        elif kind == "huge-option" and len(data) >= 12:
            # An OPT whose option claims 64 KiB that are not there.
            data += b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x08\x00\x0a\xff\xff" + b"x" * 4
            _U16.pack_into(data, 10, (_U16.unpack_from(data, 10)[0] + 1) & 0xFFFF)
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _damaged_queries() -> st.SearchStrategy[bytes]:
    return queries().flatmap(damaged)


def _damaged_responses() -> st.SearchStrategy[bytes]:
    return responses().flatmap(damaged)


ANY_QUERY_BYTES = st.one_of(st.binary(max_size=600), queries(), _damaged_queries())
ANY_REPLY_BYTES = st.one_of(st.binary(min_size=12, max_size=600), _damaged_responses())


def _question(data: bytes) -> DNSQuestion:
    return DNSQuestion(data, REMOTE, LOCAL, now=0.0)


# --- the query parser -----------------------------------------------------------------------


@FAST
@given(data=ANY_QUERY_BYTES)
def test_a_query_parses_or_is_malformed_and_what_parses_is_consistent(data: bytes) -> None:
    try:
        dq = _question(data)
    except MalformedQuery:
        return
    assert 12 < dq.question_end <= len(data)
    assert (dq.qtype, dq.qclass) == struct.unpack_from("!HH", data, dq.question_end - 4)
    # Everything a rule reads of the question, and no exception from any of it.
    assert parse_question(data)[1:] == (dq.qtype, dq.qclass, dq.question_end)
    assert dq.name.to_wire() == dq.qname_wire
    assert len(dq.qname_wire) <= 255
    dq.qname.toString()
    dq.describe()
    dq.getDO()
    assert edns_payload(dq) >= 512
    opt = find_opt(dq.data, dq.question_end)
    if opt is not None:
        assert dq.question_end <= opt[0] < opt[1] <= len(data)
    # The whole message may not parse: a rule asking for it then fails, by design.
    with contextlib.suppress(dns.exception.DNSException):
        dq.getEDNSOptions()


@FAST
@given(data=st.one_of(queries(), _damaged_queries()))
def test_the_question_read_agrees_with_dnspython(data: bytes) -> None:
    try:
        dq = _question(data)
        theirs = dns.message.from_wire(data, question_only=True, ignore_trailing=True)
    except (MalformedQuery, dns.exception.DNSException):
        return
    if not theirs.question:
        return
    question = theirs.question[0]
    assert dq.name == question.name
    assert (dq.qtype, dq.qclass) == (question.rdtype, question.rdclass)


@FAST
@given(data=st.binary(max_size=300))
def test_read_question_raises_only_malformed_query(data: bytes) -> None:
    try:
        wire, name, qtype, qclass, end = read_question(data)
    except MalformedQuery:
        return
    assert name is None or name.to_wire() == wire
    assert 0 <= qtype <= 0xFFFF and 0 <= qclass <= 0xFFFF and end <= len(data)


# --- backend replies ------------------------------------------------------------------------


@st.composite
def query_and_reply(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A query and what a backend sends back: its answer, damaged or not, or noise."""
    msg = draw(query_messages())
    reply = draw(
        st.one_of(
            responses(to=msg),
            responses(to=msg).flatmap(damaged),
            st.binary(min_size=12, max_size=300),
        )
    )
    # Shorter than a header, a reply never gets past the backend's receive loop.
    assume(len(reply) >= 12)
    return _render(msg), reply


@FAST
@given(pair=query_and_reply())
def test_any_reply_makes_a_response_that_rules_can_read_and_edit(pair: tuple[bytes, bytes]) -> None:
    wire, reply = pair
    dq = _question(wire)
    dr = DNSResponse.from_query(dq, reply)
    dr.restore_question(dq)
    assert dr.data[:2] == dq.data[:2]
    flags = _U16.unpack_from(dr.data, 2)[0]
    assert flags & (RD | CD) == dq.orig_flags & (RD | CD)
    dr.qname.toString()
    dr.getDO()
    dr.set_ttls(lambda ttl: min(ttl, 60))  # never raises, however broken the records
    with contextlib.suppress(dns.exception.DNSException):
        dr.clear_record_types(frozenset({1}))


@FAST
@given(reply=st.binary(max_size=64), question=st.binary(max_size=40))
def test_reply_matches_is_total(reply: bytes, question: bytes) -> None:
    assert reply_matches(reply, question.lower()) in (True, False)


@FAST
@given(msg=query_messages(), data=st.data())
def test_restoring_the_client_view_touches_only_id_flags_and_name_case(
    msg: dns.message.Message, data: st.DataObject
) -> None:
    wire = _render(msg)
    dq = _question(wire)
    reply = bytearray(data.draw(responses(to=msg)))
    # The backend's own ID and flags, and the name in 0x20 case.
    _U16.pack_into(reply, 0, data.draw(st.integers(0, 0xFFFF)))
    _U16.pack_into(reply, 2, data.draw(st.integers(0, 0xFFFF)) | 0x8000)
    end = dq.question_end - 4
    reply[12:end] = bytes(reply[12:end]).swapcase()
    assert reply_matches(bytes(reply), dq.data[12 : dq.question_end].lower())
    before = bytes(reply)
    restore_client_view(reply, dq, same_question=True)
    assert len(reply) == len(before)
    assert reply[:2] == wire[:2]
    assert _U16.unpack_from(reply, 2)[0] & (RD | CD) == dq.orig_flags & (RD | CD)
    assert reply[12:end] == wire[12:end]
    assert reply[end:] == before[end:]


def test_ttls_of_a_reply_with_more_records_announced_than_present_regression() -> None:
    """Found by fuzzing: a backend reply whose records could not be walked (a count too
    large, a name or a record cut short) made ``set_ttls`` raise IndexError or
    struct.error, so any TTL response rule turned it into SERVFAIL and logged a warning
    per response. Now the walk stops quietly, as dnsdist's does."""
    wire = dns.message.make_query("www.example.org.", "A").to_wire()
    answer = dns.message.make_response(dns.message.from_wire(wire))
    answer.answer.append(dns.rrset.from_text("www.example.org.", 300, "IN", "A", "192.0.2.1"))
    good = answer.to_wire()
    too_many = bytearray(good)
    too_many[7] = 2
    record = len(good) - 16  # the answer: a pointer, 10 fixed bytes, 4 of address
    dangling_pointer = good[: record + 1]
    label_running_off = good[:record] + b"\x03ww"
    cut_in_fixed_part = good[: record + 8]
    dq = _question(wire)
    for reply in (bytes(too_many), dangling_pointer, label_running_off, cut_in_fixed_part):
        dr = DNSResponse.from_query(dq, reply)
        dr.set_ttls(lambda ttl: ttl)
        assert dr.data == reply
    dr = DNSResponse.from_query(dq, bytes(too_many))
    dr.set_ttls(lambda ttl: 60)
    assert struct.unpack_from("!I", dr.data, record + 6)[0] == 60  # the one record there


@FAST
@given(pair=query_and_reply(), tcp=st.booleans(), later=st.floats(0, 5000))
def test_the_cache_stores_any_reply_safely_and_serves_it_with_the_clients_id(
    pair: tuple[bytes, bytes], tcp: bool, later: float
) -> None:
    wire, reply = pair
    cache = PacketCache(8, shuffle=True, parse_ecs=True, truncated_ttl=5)
    dq = _question(wire)
    key = cache.make_key(dq.data, dq.question_end, tcp)
    answer = bytearray(reply)
    restore_client_view(
        answer, dq, same_question=reply_matches(reply, dq.data[12 : dq.question_end].lower())
    )
    stored = cache.insert(key, answer, 100.0)
    again = bytearray(wire)
    _U16.pack_into(again, 0, dq.id ^ 0xFFFF)
    hit = cache.lookup(key, again, 100.0 + later, allow_expired=10)
    if hit is not None:
        assert stored
        assert hit[:2] == again[:2]
        assert len(hit) == len(answer)


# --- TCP framing ----------------------------------------------------------------------------


class ChunkedStream:
    """A receive stream that delivers a byte stream in the chunks it is given."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""


@FAST
@given(stream=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_framing_reads_every_whole_message_whatever_the_chunks(
    stream: bytes, cuts: list[int]
) -> None:
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]

    async def read_all() -> list[bytes]:
        reader = StreamReader(ChunkedStream(chunks))  # type: ignore[arg-type]
        messages = []
        with trio.fail_after(5):
            try:
                while True:
                    (length,) = _U16.unpack(await reader.read_exactly(2))
                    messages.append(await reader.read_exactly(length))
            except EOFError:
                return messages

    assert trio.run(read_all) == harness.frames(stream)


# --- the whole query path, over sockets (the harness's labs) -----------------------------------


@PIPELINE
@given(data=ANY_QUERY_BYTES)
def test_any_datagram_through_the_udp_frontend_and_the_rules(targets: Any, data: bytes) -> None:
    with targets.findings.watching():
        targets.query(data)


@PIPELINE
@given(reply=st.one_of(ANY_REPLY_BYTES, st.binary(max_size=11)))
def test_any_backend_reply_through_matching_cache_and_response_rules(
    targets: Any, reply: bytes
) -> None:
    with targets.findings.watching():
        targets.reply(reply)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Well-formed queries framed one after the other, then anything at all."""
    good = draw(st.lists(queries(options=False), max_size=4))
    tail = draw(
        st.one_of(
            st.binary(max_size=200),
            _damaged_queries().map(frame),
            st.builds(lambda n, body: _U16.pack(n) + body, st.integers(0, 0xFFFF), st.binary()),
        )
    )
    return good, b"".join(frame(q) for q in good) + tail


@PIPELINE
@given(stream=streams())
def test_a_tcp_stream_gets_every_query_before_the_garbage_answered_in_order(
    targets: Any, stream: tuple[list[bytes], bytes]
) -> None:
    good, data = stream
    assert harness.leading_queries(harness.frames(data))[: len(good)] == good
    with targets.findings.watching():
        targets.tcp(data)  # one answer per leading query, in order, and nothing else


_VERDICTS = st.sampled_from(["allow", "refuse", "nxdomain", "drop", "servfail", ""])
LISTENER_DATAGRAMS = st.one_of(
    st.builds(
        lambda n, v, tail: f"{n} {v}{tail}".encode("latin-1"),
        st.integers(-3, 70000),
        _VERDICTS,
        st.sampled_from(["", "\n", " ", " extra", "\0"]),
    ),
    st.binary(max_size=200),
)


@PIPELINE
@given(data=LISTENER_DATAGRAMS)
def test_any_datagram_to_the_network_listener(targets: Any, data: bytes) -> None:
    with targets.findings.watching():
        targets.listener(data)


@PIPELINE
@given(data=st.one_of(st.binary(max_size=300), queries(), _damaged_queries()))
def test_any_datagram_to_the_external_filter(targets: Any, data: bytes) -> None:
    targets.filter(data)


def _record(kind: int, payload: bytes) -> bytes:
    return bytes([kind, len(payload)]) + payload


#: The records of a console session (fuzz/targets.py, ``REC_*``), well formed or not.
CONSOLE_RECORDS = st.one_of(
    st.binary(max_size=30).map(lambda p: _record(harness.REC_COMMAND, p)),
    st.binary(max_size=30).map(lambda p: _record(harness.REC_ECHO, p)),
    st.just(bytes([harness.REC_EMPTY])),
    st.binary(max_size=60).map(lambda p: _record(harness.REC_GARBAGE, p)),
    st.builds(
        lambda length, p: (
            bytes([harness.REC_LYING]) + length.to_bytes(4, "big") + bytes([len(p)]) + p
        ),
        st.one_of(st.integers(0, 100), st.integers(0, 0xFFFFFFFF)),
        st.binary(max_size=60),
    ),
    st.just(bytes([harness.REC_REPLAY])),
    st.binary(max_size=10).map(lambda p: _record(harness.REC_SKIP, p)),
    st.builds(
        lambda p, cut: _record(harness.REC_CUT, p) + bytes([cut]),
        st.binary(max_size=10),
        st.integers(0, 255),
    ),
)
CONSOLE_INPUTS = st.one_of(
    # Anything in place of the handshake (the first byte: the flags, session bit clear).
    st.builds(
        lambda flags, raw: bytes([flags & ~harness.CONSOLE_SESSION]) + raw,
        st.integers(0, 255),
        st.binary(max_size=200),
    ),
    # A session: records, then whatever is left of the input.
    st.builds(
        lambda flags, records, tail: (
            bytes([flags | harness.CONSOLE_SESSION]) + b"".join(records) + tail
        ),
        st.integers(0, 255),
        st.lists(CONSOLE_RECORDS, max_size=8),
        st.binary(max_size=20),
    ),
)


@PIPELINE
@given(data=CONSOLE_INPUTS)
def test_any_connection_to_the_console(targets: Any, data: bytes) -> None:
    with targets.findings.watching():
        targets.console(data)  # the answers, the close, a good client's 1+2 meanwhile


def test_the_console_seeds_are_the_ones_the_harness_writes() -> None:
    """fuzz/corpus/console is what ``python fuzz/targets.py console-seeds`` writes."""
    directory = harness.CORPUS / "console"
    committed = {path.name: path.read_bytes() for path in directory.iterdir()}
    assert committed == harness.console_seeds()


def test_every_target_runs_clean_over_the_seed_corpus(targets: Any) -> None:
    with targets.findings.watching():
        for name, target in targets.by_name.items():
            inputs = list(harness.corpus_inputs(name))
            assert inputs, f"no seed for {name}"
            for data in inputs:
                target(data)


# --- a live server ----------------------------------------------------------------------------

#: Health checks off (``healthCheckMode="up"``) in every live configuration: they draw
#: their query IDs from the global ``random``, and hypothesis, drawing examples in another
#: thread meanwhile, takes any change to it for a strategy using ``random``.
PLAIN_LIVE = 'newServer{address="$BACKEND", healthCheckMode="up"}'
HOSTILE = """
newServer{address="$BACKEND", healthCheckMode="up"}
newServer{address="$HOSTILE", pool="hostile", udpTimeout=0.1, healthCheckMode="up"}
getPool(""):setCache(newPacketCache(100))
getPool("hostile"):setCache(newPacketCache(100, {truncatedTTL=5}))
addAction(QNameSuffixRule("hostile.test."), PoolAction("hostile"))
addResponseAction(AllRule(), LimitTTLResponseAction(1, 3600))
"""


async def _still_answers(t: Triodist) -> None:
    """A well-formed query gets its answer, over UDP and over TCP."""
    for ask in (udp_query, tcp_query):
        reply = await ask(t.address, query("www.example.org.", "A"))
        assert reply is not None, f"no answer over {ask.__name__} after the garbage"
        assert reply.rcode() == dns.rcode.NOERROR


async def _raw_udp(t: Triodist, wire: bytes) -> bytes | None:
    """Send a query; the first datagram back with its ID (bytes: it may not parse), or None
    once the server gave up on the backend (its ``downstream-timeouts`` counter moved)."""
    timeouts = t.stats["downstream-timeouts"]
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(t.address)
        await sock.send(wire)
        with trio.fail_after(2):
            while t.stats["downstream-timeouts"] == timeouts:
                with trio.move_on_after(0.01):
                    data = await sock.recv(65535)
                    if data[:2] == wire[:2]:
                        return data
    return None


def _in_a_thread(property_: Callable[[], None]) -> Any:
    """Run a hypothesis property in a worker thread, so that each example can talk to the
    server running in this test's Trio loop (``trio.from_thread.run``)."""
    return trio.to_thread.run_sync(property_)


async def test_a_live_server_keeps_answering_after_garbage_datagrams(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(PLAIN_LIVE)

    async def send_then_check(datagrams: list[bytes]) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect(t.address)
            for datagram in datagrams:
                await sock.send(datagram)
        await _still_answers(t)

    @LIVE
    @given(datagrams=st.lists(ANY_QUERY_BYTES, min_size=1, max_size=8))
    def garbage(datagrams: list[bytes]) -> None:
        trio.from_thread.run(send_then_check, datagrams)

    await _in_a_thread(garbage)


async def test_a_live_server_keeps_answering_after_garbage_tcp_streams(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(PLAIN_LIVE)

    async def send_then_check(data: bytes, good: list[bytes]) -> None:
        stream = await trio.open_tcp_stream(*t.address)
        async with stream:
            await stream.send_all(data)
            buffer = bytearray()
            # The well-formed queries in front of the garbage are answered.
            with trio.fail_after(2):
                for _ in good:
                    assert await read_frame(stream, buffer) is not None
        await _still_answers(t)

    @LIVE
    @given(stream=streams())
    def garbage(stream: tuple[list[bytes], bytes]) -> None:
        good, data = stream
        trio.from_thread.run(send_then_check, data, good)

    await _in_a_thread(garbage)


async def test_a_live_server_survives_a_hostile_backend(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    backend = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await backend.bind(("127.0.0.1", 0))
    host, port = backend.getsockname()
    t = await start_triodist(HOSTILE.replace("$HOSTILE", f"{host}:{port}"))
    replies: list[bytes] = []

    async def play_backend() -> None:
        """Answer each forwarded query with the current damaged reply, under its ID."""
        with backend:
            while True:
                forwarded, sender = await backend.recvfrom(65535)
                if replies:
                    await backend.sendto(forwarded[:2] + replies[-1][2:], sender)

    nursery.start_soon(play_backend)

    async def ask_hostile_then_check(reply: bytes, name: str) -> None:
        replies.append(reply)
        asked = query(name, "A").to_wire()
        # The answer is the backend's bytes (garbage in its records stays garbage, as
        # with dnsdist), but it is the client's: its ID and its flags.
        answer = await _raw_udp(t, asked)
        if answer is not None:
            assert answer[:2] == asked[:2] and answer[2] & 0x80
            assert answer[2] & 0x01 == asked[2] & 0x01  # RD as the client sent it
        await _still_answers(t)

    @LIVE
    @given(reply=ANY_REPLY_BYTES, label=st.text(string.ascii_lowercase, min_size=1, max_size=8))
    def hostile(reply: bytes, label: str) -> None:
        trio.from_thread.run(ask_hostile_then_check, reply, f"{label}.hostile.test.")

    await _in_a_thread(hostile)


# --- what the fuzzing found -----------------------------------------------------------------

# Found by the harness: reply_matches took a backend reply with QR clear (a query echoed
# back) for the answer, over UDP and TCP; dnsdist drops it as non-compliant. Fixed.

#: The atheris input (reply target) that showed it: a query, QR clear, as the reply.
QR_CLEAR_INPUT = bytes.fromhex(
    "000001178300000100000000000003626967076578616d706c65036f72670000100001"
)


def test_a_backend_reply_with_qr_clear_is_not_an_answer_harness_regression(
    targets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "KNOWN_BUG_QR_CLEAR_REPLY", False)
    with targets.findings.watching():
        targets.reply(QR_CLEAR_INPUT)


async def test_a_backend_reply_with_qr_clear_is_not_an_answer_regression(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    echo = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await echo.bind(("127.0.0.1", 0))
    host, port = echo.getsockname()

    async def echo_back() -> None:
        """A backend that sends every datagram back as it came: the query itself."""
        with echo:
            while True:
                data, sender = await echo.recvfrom(65535)
                await echo.sendto(data, sender)

    nursery.start_soon(echo_back)
    t = await start_triodist(
        f'newServer{{address="{host}:{port}", udpTimeout=0.1, healthCheckMode="up"}}'
    )
    asked = query("www.example.org.", "A").to_wire()
    answer = await _raw_udp(t, asked)
    assert answer is None, f"the client got its own query back as the answer: {answer!r}"
