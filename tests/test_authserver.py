"""Tests for the authoritative test server, :mod:`triodist.testing.backend`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
import trio
import trio.testing

from triodist.testing.backend import AuthServer

Address = tuple[str, int]

GUARD = 10.0  # outer time limit of each test, seconds
SILENCE = 0.3  # how long to wait before deciding that no reply comes


@asynccontextmanager
async def running(server: AuthServer) -> AsyncIterator[Address]:
    async with trio.open_nursery() as nursery:
        address: Address = await nursery.start(server.serve)
        yield address
        nursery.cancel_scope.cancel()


def query(
    name: str,
    rdtype: str = "A",
    *,
    rd: bool = True,
    edns: int | None = None,
    payload: int = 1232,
    dnssec: bool = False,
) -> dns.message.Message:
    msg = dns.message.make_query(
        name,
        rdtype,
        use_edns=edns if edns is not None else (0 if dnssec else False),
        payload=payload,
        want_dnssec=dnssec,
    )
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg


async def udp_exchange(address: Address, msg: dns.message.Message | bytes) -> dns.message.Message:
    """Send one datagram and wait for the reply with the same ID."""
    wire = msg if isinstance(msg, bytes) else msg.to_wire()
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(wire)
        while True:
            reply = dns.message.from_wire(await sock.recv(65535))
            if reply.id == int.from_bytes(wire[:2], "big"):
                return reply


async def no_udp_reply(address: Address, msg: dns.message.Message | bytes) -> bool:
    """True if no reply comes within :data:`SILENCE` seconds."""
    with trio.move_on_after(SILENCE) as scope:
        await udp_exchange(address, msg)
    return scope.cancelled_caught


async def receive_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    while True:
        if len(buffer) >= 2:
            length = int.from_bytes(buffer[:2], "big")
            if len(buffer) >= 2 + length:
                frame = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                return frame
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk


async def tcp_exchange(
    address: Address, msgs: Sequence[dns.message.Message]
) -> list[dns.message.Message]:
    """Send all queries at once on one connection; the replies, by query order."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        wire = b"".join(len(w).to_bytes(2, "big") + w for w in (m.to_wire() for m in msgs))
        await stream.send_all(wire)
        replies: dict[int, dns.message.Message] = {}
        buffer = bytearray()
        while len(replies) < len(msgs):
            frame = await receive_frame(stream, buffer)
            assert frame is not None, "connection closed early"
            reply = dns.message.from_wire(frame)
            replies[reply.id] = reply
    return [replies[m.id] for m in msgs]


def answer_texts(reply: dns.message.Message) -> set[str]:
    return {
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in reply.answer
        for rd in rrset
    }


async def test_reports_address_and_answers_udp_and_tcp_on_same_port() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            assert address[0] == "127.0.0.1"
            assert address[1] > 0
            assert server.address == address
            udp = await udp_exchange(address, query("www.example.org."))
            (tcp,) = await tcp_exchange(address, [query("www.example.org.")])
    for reply in (udp, tcp):
        assert reply is not None
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.QR
        assert reply.flags & dns.flags.AA
        assert reply.flags & dns.flags.RD
        assert not reply.flags & dns.flags.RA
        assert answer_texts(reply) == {
            "www.example.org. A 192.0.2.10",
            "www.example.org. A 192.0.2.11",
        }


async def test_zone_lookups() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            nx = await udp_exchange(address, query("nope.example.org."))
            nodata = await udp_exchange(address, query("www.example.org.", "MX"))
            ent = await udp_exchange(address, query("empty.example.org.", "A"))
            refused = await udp_exchange(address, query("www.example.net."))
            chain = await udp_exchange(address, query("chain.example.org.", "AAAA"))
            outside = await udp_exchange(address, query("outside.example.org."))
            wild = await udp_exchange(address, query("a.b.wild.example.org.", "TXT"))
            apex_mx = await udp_exchange(address, query("example.org.", "MX"))
            anyq = await udp_exchange(address, query("multi.example.org.", "ANY"))
            whoami = await udp_exchange(address, query("whoami.example.org.", "TXT"))
    assert nx is not None and nodata is not None and ent is not None
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.flags & dns.flags.AA
    assert [r.rdtype for r in nx.authority] == [dns.rdatatype.SOA]
    assert nx.authority[0].ttl == 300  # min(SOA TTL, SOA minimum)
    for reply in (nodata, ent):
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer == []
        assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]
    assert refused is not None
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.flags & dns.flags.AA
    assert chain is not None
    assert answer_texts(chain) == {
        "chain.example.org. CNAME alias.example.org.",
        "alias.example.org. CNAME www.example.org.",
        "www.example.org. AAAA 2001:db8::10",
    }
    assert outside is not None
    assert answer_texts(outside) == {"outside.example.org. CNAME www.example.net."}
    assert wild is not None
    assert answer_texts(wild) == {'a.b.wild.example.org. TXT "wildcard"'}
    assert apex_mx is not None
    assert answer_texts(apex_mx) == {"example.org. MX 10 mail.example.org."}
    assert anyq is not None
    assert {r.rdtype for r in anyq.answer} == {
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
        dns.rdatatype.TXT,
    }
    assert whoami is not None
    assert answer_texts(whoami) == {'whoami.example.org. TXT "authserver"'}


async def test_custom_zone_origin_and_name() -> None:
    zone = "@ 60 IN SOA ns hm 1 2 3 4 5\n@ 60 IN NS ns\nns 60 IN A 198.51.100.1\n"
    server = AuthServer(zone, origin="test.", name="second")
    with trio.fail_after(GUARD):
        async with running(server) as address:
            a = await udp_exchange(address, query("ns.test."))
            who = await udp_exchange(address, query("whoami.test.", "TXT"))
            other = await udp_exchange(address, query("www.example.org."))
    assert a is not None and answer_texts(a) == {"ns.test. A 198.51.100.1"}
    assert who is not None and answer_texts(who) == {'whoami.test. TXT "second"'}
    assert other is not None and other.rcode() == dns.rcode.REFUSED


def test_zone_without_soa_is_rejected() -> None:
    with pytest.raises(ValueError):
        AuthServer("www 60 IN A 192.0.2.1\n")
    with pytest.raises(ValueError):
        AuthServer("@ IN SOA broken\n")


async def test_udp_truncation_follows_edns_buffer() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            plain = await udp_exchange(address, query("big.example.org.", "TXT"))
            small = await udp_exchange(
                address, query("big.example.org.", "TXT", edns=0, payload=512)
            )
            large = await udp_exchange(
                address, query("big.example.org.", "TXT", edns=0, payload=4096)
            )
            (tcp,) = await tcp_exchange(address, [query("big.example.org.", "TXT")])
    assert plain is not None and small is not None and large is not None
    for reply in (plain, small):
        assert reply.flags & dns.flags.TC
        assert reply.answer == []
        assert reply.flags & dns.flags.AA
    assert plain.edns == -1
    assert small.edns == 0
    assert not large.flags & dns.flags.TC
    assert len(large.answer) == 1
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer) == 1
    assert len(tcp.to_wire()) > 512


async def test_edns_do_bit_and_badvers() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            do = await udp_exchange(address, query("www.example.org.", dnssec=True))
            plain = await udp_exchange(address, query("www.example.org.", edns=0))
            badvers = await udp_exchange(address, query("www.example.org.", edns=1))
    assert do is not None and do.edns == 0 and do.ednsflags & dns.flags.DO
    assert plain is not None and plain.edns == 0 and not plain.ednsflags & dns.flags.DO
    assert badvers is not None and badvers.rcode() == dns.rcode.BADVERS


async def test_cd_copied_and_other_opcodes_not_implemented() -> None:
    server = AuthServer()
    msg = query("www.example.org.")
    msg.flags |= dns.flags.CD
    notify = query("example.org.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    with trio.fail_after(GUARD):
        async with running(server) as address:
            cd = await udp_exchange(address, msg)
            notimp = await udp_exchange(address, notify)
    assert cd is not None and cd.flags & dns.flags.CD
    assert notimp is not None and notimp.rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize(
    ("mode", "rcode"),
    [("servfail", dns.rcode.SERVFAIL), ("refused", dns.rcode.REFUSED), ("echo", dns.rcode.NOERROR)],
)
async def test_rcode_modes(mode: str, rcode: dns.rcode.Rcode) -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            server.mode = mode  # type: ignore[assignment]
            udp = await udp_exchange(address, query("www.example.org."))
            (tcp,) = await tcp_exchange(address, [query("www.example.org.")])
    for reply in (udp, tcp):
        assert reply is not None
        assert reply.rcode() == rcode
        assert reply.answer == [] and reply.authority == []
        assert len(reply.question) == 1
        assert reply.flags & dns.flags.RD
        assert not reply.flags & dns.flags.AA


async def test_silent_mode_and_mode_changes_at_runtime() -> None:
    server = AuthServer(mode="silent")
    with trio.fail_after(GUARD):
        async with running(server) as address:
            assert await no_udp_reply(address, query("www.example.org."))
            assert server.udp_queries == 1
            server.mode = "answer"
            reply = await udp_exchange(address, query("www.example.org."))
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR


async def test_truncate_mode() -> None:
    server = AuthServer(mode="truncate")
    with trio.fail_after(GUARD):
        async with running(server) as address:
            udp = await udp_exchange(address, query("www.example.org.", dnssec=True))
            (tcp,) = await tcp_exchange(address, [query("www.example.org.")])
    assert udp is not None
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert udp.edns == 0
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer) == 1


async def test_per_name_modes_override_global_mode() -> None:
    server = AuthServer()
    server.modes["fail.example.org."] = "servfail"
    server.modes["quiet.example.org."] = "silent"
    with trio.fail_after(GUARD):
        async with running(server) as address:
            fail = await udp_exchange(address, query("FAIL.example.org."))
            quiet = await no_udp_reply(address, query("quiet.example.org."))
            www = await udp_exchange(address, query("www.example.org."))
    assert fail is not None and fail.rcode() == dns.rcode.SERVFAIL
    assert quiet
    assert www is not None and www.rcode() == dns.rcode.NOERROR


async def test_slow_mode_uses_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    server = AuthServer(mode="slow", delay=5.0)
    with trio.fail_after(GUARD):  # virtual time: the delay passes at once
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.serve)
            start = trio.current_time()
            reply = await udp_exchange(address, query("www.example.org."))
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
    assert reply.rcode() == dns.rcode.NOERROR
    assert 5.0 <= elapsed < GUARD


async def test_slow_answer_does_not_block_other_queries() -> None:
    server = AuthServer(delay=0.5)
    server.modes["www.example.org."] = "slow"
    results: dict[str, float] = {}
    with trio.fail_after(GUARD):
        async with running(server) as address:
            start = trio.current_time()

            async def ask(name: str) -> None:
                reply = await udp_exchange(address, query(name))
                assert reply is not None
                results[name] = trio.current_time() - start

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "www.example.org.")
                nursery.start_soon(ask, "mail.example.org.")
    assert results["mail.example.org."] < 0.4 <= results["www.example.org."]


async def test_statistics_and_history() -> None:
    server = AuthServer(history=3)
    with trio.fail_after(GUARD):
        async with running(server) as address:
            await udp_exchange(address, query("www.example.org.", rd=False))
            await udp_exchange(address, query("mail.example.org."))
            await tcp_exchange(address, [query("txt.example.org.", "TXT"), query("x.example.org.")])
    assert server.udp_queries == 2
    assert server.tcp_queries == 2
    assert server.tcp_connections == 1
    assert len(server.received) == 3  # bounded
    names = [str(r.qname) for r in server.received]
    assert names[0] == "mail.example.org."
    assert set(names[1:]) == {"txt.example.org.", "x.example.org."}
    assert [r.transport for r in server.received] == ["udp", "tcp", "tcp"]
    assert server.received[0].message.flags & dns.flags.RD
    assert server.queries_for("txt.example.org.", "TXT")[0].qtype == dns.rdatatype.TXT
    assert server.queries_for("www.example.org.") == []  # dropped from history
    assert server.received[0].peer[0] == "127.0.0.1"
    server.reset_stats()
    assert server.udp_queries == server.tcp_queries == 0
    assert not server.received


async def test_rd_flag_is_recorded() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            reply = await udp_exchange(address, query("www.example.org.", rd=False))
    assert reply is not None and not reply.flags & dns.flags.RD
    (received,) = server.queries_for("www.example.org.", "A")
    assert not received.message.flags & dns.flags.RD


async def test_pipelined_tcp_queries() -> None:
    server = AuthServer(delay=0.2)
    server.modes["www.example.org."] = "slow"
    queries = [
        query(name) for name in ("www.example.org.", "mail.example.org.", "nope.example.org.")
    ]
    queries.append(query("txt.example.org.", "TXT"))
    with trio.fail_after(GUARD):
        async with running(server) as address:
            replies = await tcp_exchange(address, queries)
    assert [r.id for r in replies] == [q.id for q in queries]
    assert [r.rcode() for r in replies] == [
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOERROR,
    ]
    assert server.tcp_connections == 1
    assert server.tcp_queries == 4


async def test_garbage_datagrams_are_ignored() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            assert await no_udp_reply(address, b"\x12\x34garbage")
            response = query("www.example.org.").to_wire()
            flipped = response[:2] + bytes([response[2] | 0x80]) + response[3:]  # QR set
            assert await no_udp_reply(address, flipped)
            reply = await udp_exchange(address, query("www.example.org."))
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert server.malformed == 2
    assert server.udp_queries == 1


async def test_broken_tcp_framing_closes_only_that_connection() -> None:
    server = AuthServer()
    with trio.fail_after(GUARD):
        async with running(server) as address:
            good = await trio.open_tcp_stream(*address)
            bad = await trio.open_tcp_stream(*address)
            async with good, bad:
                await bad.send_all(b"\x00\x05hello")
                assert await bad.receive_some(100) == b""  # closed by the server
                wire = query("www.example.org.").to_wire()
                await good.send_all(len(wire).to_bytes(2, "big") + wire)
                frame = await receive_frame(good, bytearray())
            zero = await trio.open_tcp_stream(*address)
            async with zero:
                await zero.send_all(b"\x00\x00")
                assert await zero.receive_some(100) == b""
            reply = await udp_exchange(address, query("www.example.org."))
    assert frame is not None
    assert dns.message.from_wire(frame).rcode() == dns.rcode.NOERROR
    assert reply is not None
    assert server.malformed == 2


async def test_tcp_idle_connections_are_closed() -> None:
    server = AuthServer(tcp_idle_timeout=0.2)
    with trio.fail_after(GUARD):
        async with running(server) as address:
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                assert await stream.receive_some(100) == b""


async def test_handler_errors_become_servfail(monkeypatch: pytest.MonkeyPatch) -> None:
    server = AuthServer()

    def broken(query: dns.message.Message) -> dns.message.Message:
        raise RuntimeError("boom")

    monkeypatch.setattr(server, "answer", broken)
    with trio.fail_after(GUARD):
        async with running(server) as address:
            udp = await udp_exchange(address, query("www.example.org."))
            (tcp,) = await tcp_exchange(address, [query("www.example.org.")])
    for reply in (udp, tcp):
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL


async def test_explicit_port_and_two_servers() -> None:
    first = AuthServer(name="one")
    second = AuthServer(name="two")
    # Re-use the number on another loopback address: proves ``port`` is honoured.
    with trio.fail_after(GUARD):
        async with running(first) as address, trio.open_nursery() as nursery:
            other = await nursery.start(second.serve, "127.0.0.2", address[1])
            assert other == ("127.0.0.2", address[1])
            one = await udp_exchange(address, query("whoami.example.org.", "TXT"))
            two = await udp_exchange(other, query("whoami.example.org.", "TXT"))
            (two_tcp,) = await tcp_exchange(other, [query("whoami.example.org.", "TXT")])
            nursery.cancel_scope.cancel()
    assert one is not None and answer_texts(one) == {'whoami.example.org. TXT "one"'}
    assert two is not None and answer_texts(two) == {'whoami.example.org. TXT "two"'}
    assert answer_texts(two_tcp) == {'whoami.example.org. TXT "two"'}


async def test_port_in_use_is_an_error() -> None:
    first = AuthServer()
    with trio.fail_after(GUARD):
        async with running(first) as address:
            with pytest.raises(OSError):
                await AuthServer().serve(*address)
