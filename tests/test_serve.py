"""``triodist serve`` as a client and a backend see it: real sockets on loopback.

Forwarding over UDP and TCP, pipelined TCP, the ACL, a backend that stops
answering, truncation and the retry over TCP, errors in Lua rules, and input
that is not DNS at all.  Whatever goes wrong with one query, the next one is
answered.  Timeouts run under ``autojump_clock`` (virtual time).
"""

from __future__ import annotations

import random
import struct

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import trio
import trio.testing
from conftest import (
    CLOSED_UNANSWERED,
    StartTriodist,
    frame,
    query,
    read_frame,
    records,
    tcp_pipelined,
    tcp_session,
    udp_silent,
)

from triodist.testing.backend import AuthServer

WWW = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}

FORWARDER = """
newServer{address="$BACKEND", udpTimeout=1}
"""


# --- forwarding ----------------------------------------------------------------------------


async def test_forwards_over_udp_and_tcp(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(FORWARDER)
    for tcp in (False, True):
        msg = query("WwW.ExAmple.ORG.", edns=True)
        reply = await (t.tcp if tcp else t.udp)(msg)
        assert reply is not None
        assert reply.id == msg.id
        # (The owner names keep the case the backend saw, as in dnsdist.)
        assert {text.lower() for text in records(reply)} == {text.lower() for text in WWW}
        assert reply.flags & dns.flags.QR and reply.flags & dns.flags.AA
        assert reply.edns == 0  # the backend's OPT record comes through
        # The client's spelling of the name is given back, whatever the backend did.
        assert reply.question[0].name.to_text() == "WwW.ExAmple.ORG."
        assert auth.received[-1].transport == ("tcp" if tcp else "udp")
    assert t.stats["queries"] == 2
    assert t.stats["responses"] == 2
    assert t.server.servers[0].getQueries() == 2
    assert t.server.servers[0].getDrops() == 0


async def test_negative_and_large_answers_are_forwarded(start_triodist: StartTriodist) -> None:
    t = await start_triodist(FORWARDER)
    nx = await t.ask("nope.example.org.")
    assert nx is not None and nx.rcode() == dns.rcode.NXDOMAIN
    assert records(nx, "authority") == {
        "example.org. SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 900 1209600 300"
    }
    big = await t.udp(query("big.example.org.", "TXT", edns=True))
    assert big is not None and not big.flags & dns.flags.TC
    assert len(big.answer[0][0].strings) == 12
    big_tcp = await t.ask("big.example.org.", "TXT", tcp=True)
    assert big_tcp is not None and big_tcp.answer == big.answer


async def test_pipelined_tcp_queries_on_one_connection(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    auth.delay = 0.5
    auth.modes["slow.example.org."] = "slow"
    t = await start_triodist(FORWARDER)
    # slow.example.org. is not in the zone: its answer is a late NXDOMAIN.
    names = [
        "slow.example.org.",
        "www.example.org.",
        "mail.example.org.",
        "ns1.example.org.",
        "txt.example.org.",
    ]
    msgs = [query(name, "TXT" if name.startswith("txt") else "A") for name in names]
    stream = await trio.open_tcp_stream(*t.address)
    arrived: list[str] = []
    async with stream:
        await stream.send_all(b"".join(frame(m.to_wire()) for m in msgs))
        buffer = bytearray()
        for _ in msgs:
            data = await read_frame(stream, buffer)
            assert data is not None
            reply = dns.message.from_wire(data)
            arrived.append(reply.question[0].name.to_text())
            sent = next(m for m in msgs if m.id == reply.id)
            assert reply.question == sent.question
    # All answered on the one connection, each as soon as it was ready: the slow
    # one did not hold the others back.
    assert sorted(arrived) == sorted(names)
    assert arrived[-1] == "slow.example.org."
    # One backend connection per query in flight at once (for now); the connection reads
    # ahead two queries (two of the largest answers fit its unsent bound) until its first
    # answers show how large they are, then the rest.
    assert 2 <= auth.tcp_connections <= len(names)


async def test_many_queries_in_flight_over_udp(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    auth.mode = "slow"
    auth.delay = 0.5
    t = await start_triodist(FORWARDER)
    answered = 0

    async def one() -> None:
        nonlocal answered
        if records(await t.ask("www.example.org.")) == WWW:
            answered += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert answered == 50
    # Concurrently, not one after another.
    assert trio.current_time() - start < 1.0


# --- the ACL -------------------------------------------------------------------------------


async def test_acl_drops_clients_outside_it(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        FORWARDER
        + """
        setACL({"192.0.2.0/24", "2001:db8::/32"})
        """
    )
    assert await t.ask("www.example.org.", timeout=0.5) is None
    # Over TCP the connection is closed at once, as dnsdist closes it.
    assert await tcp_session(t.address, [query("www.example.org.")]) == CLOSED_UNANSWERED
    assert t.stats["acl-drops"] == 2
    assert t.stats["queries"] == 0
    assert len(auth.received) == 0
    # Changing the ACL while serving applies to the next query.
    t.lua.run_string('addACL("127.0.0.1/32")', "console")
    assert records(await t.ask("www.example.org.")) == WWW
    assert records(await t.ask("www.example.org.", tcp=True)) == WWW
    assert t.stats["acl-drops"] == 2


async def test_default_acl_allows_loopback(start_triodist: StartTriodist) -> None:
    t = await start_triodist(FORWARDER)
    assert records(await t.ask("www.example.org.")) == WWW
    assert t.stats["acl-drops"] == 0


# --- a backend that does not answer ----------------------------------------------------------


async def test_dead_backend_times_out_and_the_server_goes_on(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    auth.mode = "silent"
    t = await start_triodist(
        """
        newServer{address="$BACKEND", udpTimeout=0.5}
        """
    )
    backend = t.server.servers[0]
    start = trio.current_time()
    assert await t.ask("www.example.org.", timeout=3) is None
    assert trio.current_time() - start >= 3
    assert len(auth.received) == 1  # it was asked
    assert t.stats["downstream-timeouts"] == 1
    assert backend.getDrops() == 1
    assert backend.getOutstanding() == 0
    # The backend is back: the next query is answered.
    auth.mode = "answer"
    assert records(await t.ask("www.example.org.")) == WWW
    assert t.stats["downstream-timeouts"] == 1
    assert backend.getDrops() == 1


async def test_late_backend_answer_is_ignored(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    auth.mode = "slow"
    auth.delay = 1.0
    t = await start_triodist(
        """
        newServer{address="$BACKEND", udpTimeout=0.5}
        """
    )
    # The backend answers after 1 s, the server gave up after 0.5 s.
    assert await t.ask("www.example.org.", timeout=2) is None
    assert t.stats["downstream-timeouts"] == 1
    auth.mode = "answer"
    assert records(await t.ask("mail.example.org.")) == {"mail.example.org. A 192.0.2.25"}
    assert t.stats["responses"] == 1


async def test_dead_backend_over_tcp(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    auth.mode = "silent"
    t = await start_triodist(
        """
        newServer{address="$BACKEND", udpTimeout=0.5}
        setTCPRecvTimeout(5)
        """
    )
    t.server.servers[0].tcp_timeout = 1.0
    assert await t.ask("www.example.org.", tcp=True, timeout=3) is None
    assert t.stats["downstream-timeouts"] == 1
    assert t.server.servers[0].getDrops() == 1
    auth.mode = "answer"
    assert records(await t.ask("www.example.org.", tcp=True)) == WWW


async def test_servfail_when_no_server(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        setServFailWhenNoServer(true)
        addAction("empty.example.org", PoolAction("nobody"))
        """
    )
    for tcp in (False, True):
        reply = await t.ask("empty.example.org.", tcp=tcp)
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    # The same when every server of the pool is down.
    t.server.servers[0].setDown()
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert t.stats["no-policy"] == 3
    t.server.servers[0].setAuto()
    assert records(await t.ask("www.example.org.")) == WWW


async def test_no_server_without_servfail_setting_drops(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        getServer(0):setDown()
        """
    )
    assert await t.ask("www.example.org.", timeout=0.5) is None
    assert t.stats["no-policy"] == 1


# --- truncation --------------------------------------------------------------------------


async def test_truncated_backend_answer_then_retry_over_tcp(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    auth.mode = "truncate"
    t = await start_triodist(FORWARDER)
    udp = await t.ask("www.example.org.")
    assert udp is not None and udp.flags & dns.flags.TC and udp.answer == []
    # A stub resolver's fallback: TC over UDP, then TCP through triodist.
    host, port = t.address
    reply, used_tcp = await dns.asyncquery.udp_with_fallback(
        query("www.example.org."), host, port=port, timeout=2
    )
    assert used_tcp
    assert records(reply) == WWW and not reply.flags & dns.flags.TC
    assert [r.transport for r in auth.received] == ["udp", "udp", "tcp"]


async def test_large_answer_without_edns_is_truncated_then_fetched_over_tcp(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(FORWARDER)
    host, port = t.address
    reply, used_tcp = await dns.asyncquery.udp_with_fallback(
        query("big.example.org.", "TXT"), host, port=port, timeout=2
    )
    assert used_tcp
    assert len(reply.answer[0][0].strings) == 12


# --- errors in Lua ---------------------------------------------------------------------------


async def test_lua_errors_give_servfail_and_the_server_goes_on(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("action.example.org", LuaAction(function(dq) error("action failed") end))
        addAction(LuaRule(function(dq)
            if dq.qname:toString() == "rule.example.org." then error("rule failed") end
            return false
        end), DropAction())
        addAction("nil.example.org", LuaAction(function(dq) return dq.nosuchfield.x end))
        addResponseAction("response.example.org", LuaResponseAction(function(dr)
            error("response failed")
        end))
        """
    )
    for tcp in (False, True):
        for name in ("action", "rule", "nil", "response"):
            reply = await t.ask(f"{name}.example.org.", tcp=tcp)
            assert reply is not None, name
            assert reply.rcode() == dns.rcode.SERVFAIL, name
            assert reply.question[0].name.to_text() == f"{name}.example.org."
        assert records(await t.ask("www.example.org.", tcp=tcp)) == WWW
    assert t.stats["rule-errors"] == 8
    # Only the failing response rule reached the backend.
    assert [r.qname.to_text() for r in auth.received if r.qname] == [
        "response.example.org.",
        "www.example.org.",
        "response.example.org.",
        "www.example.org.",
    ]


async def test_lua_error_over_pipelined_tcp_does_not_close_the_connection(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("boom.example.org", LuaAction(function(dq) error("boom") end))
        """
    )
    msgs = [query("boom.example.org."), query("www.example.org."), query("boom.example.org.")]
    replies = await tcp_pipelined(t.address, msgs)
    assert len(replies) == 3
    assert replies[msgs[0].id].rcode() == dns.rcode.SERVFAIL
    assert records(replies[msgs[1].id]) == WWW
    assert replies[msgs[2].id].rcode() == dns.rcode.SERVFAIL


# --- input that is not DNS -----------------------------------------------------------------


GARBAGE = {
    "short": b"\x12\x34\x01",
    "random": random.Random(20240101).randbytes(80),
    "response": query("www.example.org.").to_wire()[:2]
    + b"\x81\x80"
    + query("www.example.org.").to_wire()[4:],
    "bad name (label)": struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x3fabc",
    "bad name (pointer loop)": struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    + b"\xc0\x0c\x00\x01\x00\x01",
    "bad name (unterminated)": struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    + b"\x03www\x07example",
    "empty": b"",
}


async def test_garbage_datagrams_are_dropped(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(FORWARDER)
    for label, data in GARBAGE.items():
        assert await udp_silent(t.address, data, timeout=0.5), label
        assert records(await t.ask("www.example.org.")) == WWW, label
    assert t.stats["non-compliant-queries"] == len(GARBAGE)
    assert t.stats["queries"] == len(GARBAGE)  # only the real ones
    assert [r.qname.to_text() for r in auth.received if r.qname] == ["www.example.org."] * len(
        GARBAGE
    )


async def _tcp_exchange_raw(address: tuple[str, int], data: bytes) -> list[bytes]:
    """Send ``data``, close our side, and collect what comes back until the server closes."""
    frames: list[bytes] = []
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(data)
        await stream.send_eof()
        buffer = bytearray()
        while (got := await read_frame(stream, buffer)) is not None:
            frames.append(got)
    return frames


async def test_broken_tcp_framing_does_not_hurt(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(FORWARDER)
    good = query("www.example.org.").to_wire()
    cases = {
        "length larger than what follows": struct.pack("!H", 300) + good,
        "zero length": struct.pack("!H", 0),
        "half a length": b"\x00",
        "garbage message": frame(random.Random(7).randbytes(40)),
        "a response": frame(good[:2] + b"\x81\x80" + good[4:]),
        "bad name": frame(GARBAGE["bad name (pointer loop)"]),
    }
    for label, data in cases.items():
        assert await _tcp_exchange_raw(t.address, data) == [], label
        assert records(await t.ask("www.example.org.", tcp=True)) == WWW, label
        assert records(await t.ask("www.example.org.")) == WWW, label


async def test_good_query_then_broken_framing_on_one_connection(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(FORWARDER)
    msg = query("www.example.org.")
    frames = await _tcp_exchange_raw(t.address, frame(msg.to_wire()) + struct.pack("!H", 0))
    # The query read before the broken frame is still answered, then the connection closes.
    assert len(frames) == 1
    assert records(dns.message.from_wire(frames[0])) == WWW


async def test_idle_tcp_connection_is_closed(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(FORWARDER + "setTCPRecvTimeout(3)\n")
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        start = trio.current_time()
        assert await read_frame(stream, bytearray()) is None
        assert 3 <= trio.current_time() - start < 4
    assert records(await t.ask("www.example.org.", tcp=True)) == WWW
