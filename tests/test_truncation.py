"""No UDP answer is larger than the client allows, whatever made it.

512 bytes without EDNS, else the client's EDNS payload size, and never more than
``setMaxUDPAnswerSize`` (4,096 by default). Over that, the client gets TC=1 with the
question (and the OPT record) only, and retries over TCP, where it gets the whole
answer. Forwarded, cached, spoofed and self-generated answers alike; and the cache
keeps for UDP clients only what they may be sent.
"""

from __future__ import annotations

import socket

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import pytest
import trio
from conftest import StartTriodist, query

from triodist.testing.backend import AuthServer
from triodist.wire.build import truncate_answer


async def udp_raw(address: tuple[str, int], msg: dns.message.Message) -> bytes:
    """The reply's bytes as they came (their size is what is tested)."""
    wire = msg.to_wire()
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(wire)
        with trio.fail_after(5):
            while True:
                data = await sock.recv(65535)
                if data[:2] == wire[:2]:
                    return data


def edns_query(name: str, rdtype: str, payload: int) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, use_edns=0, payload=payload)


def assert_truncated(data: bytes, msg: dns.message.Message, *, opt: bool) -> dns.message.Message:
    reply = dns.message.from_wire(data)
    assert reply.flags & dns.flags.TC and reply.flags & dns.flags.QR
    assert reply.question == msg.question
    assert not reply.answer and not reply.authority
    assert (reply.edns >= 0) == opt
    return reply


TCP_ONLY = """
newServer{address="$BACKEND", tcpOnly=true}
pc = newPacketCache(100, {maximumEntrySize=65535})
getPool(""):setCache(pc)
"""


async def test_a_tcp_only_backend_answer_is_truncated_for_a_udp_client(
    start_triodist: StartTriodist, huge_auth: AuthServer
) -> None:
    t = await start_triodist(TCP_ONLY, backend=huge_auth)
    plain = query("huge.example.org.", "TXT")
    # Before: the whole 58 KB answer, TC clear, to a 40-byte query (and from the cache
    # again for the next one).
    for _ in range(2):
        data = await udp_raw(t.address, plain)
        assert len(data) <= 512, f"{len(data)}-byte UDP answer to a query without EDNS"
        assert_truncated(data, plain, opt=False)
    large = edns_query("huge.example.org.", "TXT", 4096)
    data = await udp_raw(t.address, large)
    assert len(data) <= 4096
    assert_truncated(data, large, opt=True)
    # Over TCP the client gets it all.
    whole = await t.ask("huge.example.org.", "TXT", tcp=True)
    assert whole is not None and not whole.flags & dns.flags.TC
    assert len(whole.to_wire()) > 50_000
    assert t.stats["truncated-udp-answers"] == 3


async def test_an_answer_over_the_maximum_is_truncated_whatever_the_client_says(
    start_triodist: StartTriodist, huge_auth: AuthServer
) -> None:
    t = await start_triodist(TCP_ONLY + "setMaxUDPAnswerSize(1232)\n", backend=huge_auth)
    # big.example.org. TXT is about 700 bytes: it fits 1232.
    fits = await udp_raw(t.address, edns_query("big.example.org.", "TXT", 65535))
    assert not dns.message.from_wire(fits).flags & dns.flags.TC
    msg = edns_query("huge.example.org.", "TXT", 65535)
    data = await udp_raw(t.address, msg)
    assert len(data) <= 1232
    assert_truncated(data, msg, opt=True)


async def test_the_cache_keeps_for_udp_clients_only_what_they_may_be_sent(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    # big.example.org. TXT (about 700 bytes) comes whole from a TCP-only backend. A
    # client allowing 1232 bytes gets it and it is cached for such clients; one allowing
    # 512 (a different key) gets it truncated, and it is not cached for those.
    t = await start_triodist(TCP_ONLY)
    large = edns_query("big.example.org.", "TXT", 1232)
    small = edns_query("big.example.org.", "TXT", 512)
    first = dns.message.from_wire(await udp_raw(t.address, large))
    assert not first.flags & dns.flags.TC and first.answer
    for _ in range(2):
        assert_truncated(await udp_raw(t.address, small), small, opt=True)
    again = dns.message.from_wire(await udp_raw(t.address, large))
    assert again.answer == first.answer
    assert t.stats["cache-hits"] == 1  # the 1232 client's second query
    assert t.stats["cache-misses"] == 3  # both 512 queries went to the backend
    assert auth.tcp_queries == 3


async def test_spoofed_and_self_generated_answers_are_truncated_too(
    start_triodist: StartTriodist,
) -> None:
    addresses = [f"2001:db8::{n:x}" for n in range(1, 61)]
    listed = ", ".join(f'"{a}"' for a in addresses)
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        f'addAction("spoof.example.", SpoofAction({{{listed}}}))\n'
        'addAction("lua.example.", LuaAction(function(dq)\n'
        f'  return DNSAction.Spoof, "{",".join(addresses)}"\n'
        "end))\n"
    )
    for name in ("spoof.example.", "lua.example."):
        msg = query(name, "AAAA")
        data = await udp_raw(t.address, msg)
        assert len(data) <= 512, f"{len(data)}-byte spoofed answer for {name}"
        assert_truncated(data, msg, opt=False)
        whole = await t.ask(name, "AAAA", tcp=True)
        assert whole is not None and len(whole.answer[0]) == 60
        # With room for it, the whole answer over UDP.
        roomy = dns.message.from_wire(await udp_raw(t.address, edns_query(name, "AAAA", 4096)))
        assert not roomy.flags & dns.flags.TC and len(roomy.answer[0]) == 60


def test_truncating_keeps_the_header_question_and_opt() -> None:
    msg = dns.message.make_query(
        "huge.example.org.",
        "TXT",
        use_edns=0,
        payload=1232,
        options=[dns.edns.GenericOption(65001, b"x" * 2000)],
    )
    reply = dns.message.make_response(msg)
    reply.set_rcode(3)
    wire = reply.to_wire()
    cut = truncate_answer(wire, 1232)
    parsed = dns.message.from_wire(bytes(cut))
    assert parsed.id == msg.id and parsed.rcode() == 3 and parsed.flags & dns.flags.TC
    assert parsed.question == msg.question
    assert parsed.edns == 0 and parsed.payload == reply.payload  # the answer's own OPT
    assert not parsed.options  # 2,000 bytes of options do not fit 1,232
    assert len(cut) <= 1232


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x12\x34\x81\x80\x00\x05\x00\x00\x00\x00\x00\x01" + b"\x3f" * 600,
        b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x09"
        + b"\x00\x00\x01\x00\x01"
        + b"\xff" * 600,
    ],
)
def test_truncating_hostile_bytes_gives_a_small_answer(garbage: bytes) -> None:
    cut = truncate_answer(garbage, 512)
    assert len(cut) <= 512 and cut[2] & 0x02


async def test_the_cache_keeps_no_udp_answer_over_the_configured_maximum(
    start_triodist: StartTriodist,
) -> None:
    # big.example.org. TXT (about 700 bytes) for clients allowing 4096, with the maximum
    # at 512: each is sent truncated, and none is kept to be truncated again.
    t = await start_triodist(TCP_ONLY + "setMaxUDPAnswerSize(512)\n")
    msg = edns_query("big.example.org.", "TXT", 4096)
    for _ in range(3):
        assert_truncated(await udp_raw(t.address, msg), msg, opt=True)
    assert t.stats["cache-hits"] == 0 and t.stats["cache-misses"] == 3
