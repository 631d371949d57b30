"""Answers triodist makes itself, and their EDNS: a rule's answer (RCodeAction, a Lua
verdict, SpoofAction, TCAction, NegativeAndSOAAction, ERCodeAction) and the SERVFAIL for
a pool without a server carry an OPT record of triodist's own when the query had one:
payload size 1232 unless ``setPayloadSizeOnSelfGeneratedAnswers`` says otherwise, the
query's DO bit, no options; none with ``setAddEDNSToSelfGeneratedResponses(false)``.
And ``setAllowEmptyResponse``: a backend's NOERROR or NXDOMAIN reply with no question.

Real sockets on loopback, the configuration as a user writes it."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio
from conftest import StartTriodist, accounted

from triodist.config.runtime import load_config
from triodist.testing.backend import AuthServer, Transport
from triodist.wire.build import finish_self_answer
from triodist.wire.message import DNSQuestion

RULES = """
newServer{address="$BACKEND"}
addAction("refused.example.org.", RCodeAction(DNSRCode.REFUSED))
addAction("spoofed.example.org.", SpoofAction({"192.0.2.7", "192.0.2.8"}))
addAction("truncated.example.org.", TCAction())
function nx(dq) return DNSAction.Nxdomain end
addAction("lua.example.org.", LuaAction(nx))
addAction("soa.example.org.", NegativeAndSOAAction(true, "example.org.", 30, "ns.example.org.",
  "hostmaster.example.org.", 2024, 3600, 600, 86400, 60))
addAction("badvers.example.org.", ERCodeAction(DNSRCode.BADVERS))
"""

NAMES = ("refused", "spoofed", "truncated", "lua", "soa", "badvers")


def edns_query(
    name: str,
    *,
    do: bool = False,
    payload: int = 4096,
    options: list[dns.edns.Option] | None = None,
) -> dns.message.Message:
    return dns.message.make_query(
        name,
        "A",
        use_edns=0,
        payload=payload,
        want_dnssec=do,
        options=options or [],
    )


NSID_REQUEST = dns.edns.GenericOption(dns.edns.NSID, b"")


async def ask_both(t: object, msg: dns.message.Message) -> list[dns.message.Message]:
    """The answer over UDP and over TCP (TCAction answers only over UDP)."""
    answers = []
    transports = ("udp",) if msg.question[0].name.labels[0] == b"truncated" else ("udp", "tcp")
    for transport in transports:
        reply = await getattr(t, transport)(msg)
        assert reply is not None, f"{msg.question[0].name} over {transport}: no answer"
        answers.append(reply)
    return answers


async def test_answers_made_here_carry_an_opt_record_of_their_own(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(RULES)
    for name in NAMES:
        for do in (False, True):
            query = edns_query(f"{name}.example.org.", do=do, options=[NSID_REQUEST])
            for reply in await ask_both(t, query):
                # Not the client's payload size (4096) nor its option: dnsdist's default.
                assert reply.edns == 0, name
                assert reply.payload == 1232, name
                assert bool(reply.ednsflags & dns.flags.DO) == do, name
                assert not reply.options, name
    await accounted(t)


async def test_the_payload_size_is_the_configured_one(start_triodist: StartTriodist) -> None:
    t = await start_triodist(RULES + "setPayloadSizeOnSelfGeneratedAnswers(1400)\n")
    for name in NAMES:
        for reply in await ask_both(t, edns_query(f"{name}.example.org.", payload=512)):
            assert reply.payload == 1400, name


async def test_no_edns_in_no_edns_out(start_triodist: StartTriodist) -> None:
    t = await start_triodist(RULES)
    for name in NAMES:
        query = dns.message.make_query(f"{name}.example.org.", "A")
        for reply in await ask_both(t, query):
            assert reply.edns == -1, name


async def test_turned_off_the_answers_carry_no_opt_record(start_triodist: StartTriodist) -> None:
    t = await start_triodist(RULES + "setAddEDNSToSelfGeneratedResponses(false)\n")
    for name in NAMES:
        for reply in await ask_both(t, edns_query(f"{name}.example.org.", do=True)):
            assert reply.edns == -1, name
    # The answers are otherwise what they were: the spoofed records are there.
    spoofed = await t.udp(edns_query("spoofed.example.org."))
    assert spoofed is not None
    assert sorted(rd.address for rd in spoofed.answer[0]) == ["192.0.2.7", "192.0.2.8"]


async def test_the_records_of_an_answer_stay_before_the_new_opt_record(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(RULES + "setPayloadSizeOnSelfGeneratedAnswers(1300)\n")
    soa = await t.tcp(edns_query("soa.example.org.", do=True))
    assert soa is not None
    assert soa.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in soa.additional] == [dns.rdatatype.SOA]
    assert soa.additional[0].ttl == 30
    assert (soa.payload, bool(soa.ednsflags & dns.flags.DO)) == (1300, True)
    truncated = await t.udp(edns_query("truncated.example.org.", do=True))
    assert truncated is not None
    assert truncated.flags & dns.flags.TC
    assert (truncated.payload, bool(truncated.ednsflags & dns.flags.DO)) == (1300, True)


async def test_an_extended_rcode_is_in_the_opt_record(start_triodist: StartTriodist) -> None:
    t = await start_triodist(RULES)
    for reply in await ask_both(t, edns_query("badvers.example.org.")):
        assert reply.rcode() == dns.rcode.BADVERS  # 16: header 0, OPT's upper bits 1
        assert reply.flags & 0x000F == 0
    # Without EDNS the upper bits have nowhere to go: the header's four bits alone.
    plain = await t.udp(dns.message.make_query("badvers.example.org.", "A"))
    assert plain is not None
    assert plain.rcode() == dns.rcode.NOERROR
    assert plain.edns == -1


async def test_a_backends_answer_keeps_its_own_opt_record(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(RULES + "setPayloadSizeOnSelfGeneratedAnswers(1400)\n")
    reply = await t.udp(edns_query("www.example.org.", do=True))
    assert reply is not None
    assert reply.answer
    # The backend's payload size, not the self-generated one.
    assert reply.payload != 1400
    assert len(auth.received) == 1


# A whole answer a Lua action gives: an A record and an OPT record of payload 4000 with
# option 65001, the question of whatever query asked.
WHOLE_PACKET = """
function whole(dq)
  local q_end = 13 + #dq.qname:toDNSString() + 4
  local question = dq:getContent():sub(13, q_end - 1)
  local header = dq:getContent():sub(1, 2) .. string.char(0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1)
  local a = string.char(0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9)
  local opt = string.char(0, 0, 41, 0x0f, 0xa0, 0, 0, 0, 0, 0, 4, 0xfd, 0xe9, 0, 0)
  dq:setContent(header .. question .. a .. opt)
  return DNSAction.HeaderModify
end
addAction("whole.example.org.", LuaAction(whole))
"""


async def test_a_whole_packet_from_a_rule_keeps_its_own_opt_record(
    start_triodist: StartTriodist,
) -> None:
    """A whole answer a rule gives (``setContent``) goes out as it is, with its own OPT
    record, as from dnsdist: none is put in its place, none added, none taken out."""
    t = await start_triodist(RULES + WHOLE_PACKET)
    queries = [
        edns_query("whole.example.org.", do=True, options=[NSID_REQUEST]),
        dns.message.make_query("whole.example.org.", "A"),
    ]
    for query in queries:
        for reply in await ask_both(t, query):
            assert [rd.address for rd in reply.answer[0]] == ["192.0.2.9"]
            assert (reply.edns, reply.payload) == (0, 4000)
            assert [option.otype for option in reply.options] == [65001]
    await accounted(t)


async def test_servfail_for_a_pool_without_a_server(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND", pool="elsewhere"}\nsetServFailWhenNoServer(true)\n'
    )
    for reply in await ask_both(t, edns_query("www.example.org.", do=False)):
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert (reply.payload, bool(reply.ednsflags & dns.flags.DO)) == (1232, False)
    for reply in await ask_both(t, dns.message.make_query("www.example.org.", "A")):
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert reply.edns == -1


@pytest.mark.parametrize(("asked", "kept"), [(100, 512), (511, 512), (512, 512), (9000, 1500)])
def test_a_payload_size_out_of_bounds_is_brought_in(
    asked: int, kept: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(f"setPayloadSizeOnSelfGeneratedAnswers({asked})\n")
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    assert config.api.config.settings.self_generated_payload == kept
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ([] if asked == kept else [warned[0]])
    if asked != kept:
        assert f"using {kept} instead" in warned[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("setPayloadSizeOnSelfGeneratedAnswers('big')", "expected a payload size"),
        ("setPayloadSizeOnSelfGeneratedAnswers(70000)", "got 70000"),
        ("setAddEDNSToSelfGeneratedResponses(1)", "expected true or false"),
        ("setAllowEmptyResponse(nil)", "expected true or false, got nil"),
    ],
)
def test_bad_values_name_the_file_and_line(line: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(f"-- first line\n{line}\n")
    with pytest.raises(Exception, match=rf"rules\.lua:2: .*{message}"):
        load_config(path)


class HeaderOnlyAuth(AuthServer):
    """A backend whose answers to names starting with ``empty-`` have no question, with
    the rcode the second label names (``empty-nx``: NXDOMAIN, ``empty-ok``: NOERROR,
    ``empty-refused``: REFUSED)."""

    async def handle(
        self, query: dns.message.Message, transport: Transport
    ) -> dns.message.Message | None:
        reply = await super().handle(query, transport)
        label = query.question[0].name.labels[0].decode() if query.question else ""
        if reply is None or not label.startswith("empty-"):
            return reply
        rcode = {"nx": dns.rcode.NXDOMAIN, "ok": dns.rcode.NOERROR, "refused": dns.rcode.REFUSED}
        reply.set_rcode(rcode[label.removeprefix("empty-")])
        reply.question = []
        reply.answer, reply.authority = [], []
        return reply


@pytest.fixture
async def header_only(nursery: trio.Nursery) -> AuthServer:
    server = HeaderOnlyAuth()
    await nursery.start(server.serve, "127.0.0.1", 0)
    return server


@pytest.mark.parametrize("allow", [False, True])
async def test_an_answer_with_no_question(
    allow: bool, start_triodist: StartTriodist, header_only: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND", timeout=1}\n'
        f"setAllowEmptyResponse({str(allow).lower()})\n",
        backend=header_only,
    )
    # An error reply with no question is always taken as the answer (as dnsdist does).
    refused = await t.udp(dns.message.make_query("empty-refused.example.org.", "A"))
    assert refused is not None
    assert refused.rcode() == dns.rcode.REFUSED
    for label, rcode in (("empty-nx", dns.rcode.NXDOMAIN), ("empty-ok", dns.rcode.NOERROR)):
        for transport in ("udp", "tcp"):
            query = dns.message.make_query(f"{label}.example.org.", "A")
            reply = await getattr(t, transport)(query, timeout=2.5)
            if allow:
                assert reply is not None, (label, transport)
                assert (reply.id, reply.rcode(), reply.question) == (query.id, rcode, [])
            else:
                # Not taken as the answer (it could answer any query): the query times out.
                assert reply is None, (label, transport)


def _answer_of(wire: bytes) -> DNSQuestion:
    dq = DNSQuestion(wire, ("192.0.2.1", 5300), ("127.0.0.1", 53), now=0.0)
    dq.data[2] |= 0x80  # made an answer by a rule
    return dq


def test_an_opt_record_not_last_is_replaced_where_the_records_allow() -> None:
    plain = edns_query("www.example.org.", do=True, options=[NSID_REQUEST]).to_wire()
    # A TXT record after the OPT record: owner "x." TXT IN TTL 60, one string "after".
    txt = b"\x01x\x00" + struct.pack("!HHIH", 16, 1, 60, 6) + b"\x05after"
    with_txt_after = bytearray(plain + txt)
    with_txt_after[11] += 1  # ARCOUNT: the OPT record and the TXT record
    for data, kept in ((bytes(with_txt_after), [dns.rdatatype.TXT]), (plain + b"tail", [])):
        dq = _answer_of(data)
        finish_self_answer(dq, payload=1300)
        assert not dq.data.endswith(b"tail")  # trailing data goes
        answer = dns.message.from_wire(bytes(dq.data))
        assert (answer.payload, bool(answer.ednsflags & dns.flags.DO)) == (1300, True)
        assert not answer.options
        assert [r.rdtype for r in answer.additional] == kept


def test_an_answer_whose_records_cannot_be_followed_is_left_as_it_is() -> None:
    # ARCOUNT says a second additional record follows the OPT record: one byte of it.
    wire = bytearray(edns_query("www.example.org.").to_wire() + b"\x07")
    wire[11] = 2
    dq = _answer_of(bytes(wire))
    before = bytes(dq.data)
    finish_self_answer(dq, payload=1300)
    assert bytes(dq.data) == before
