"""Attacks that a remote client can make, each tried with real sockets on loopback.

Each test names what must hold; bench/reliability.md lists them with the attack.

* TCP clients that pipeline queries for large answers and never read them: what the
  server keeps for them is bounded, they are let go within the send timeout, and a
  well-behaved client is answered throughout.
* A TCP answer that could not be written whole closes the connection: the client
  never receives a frame after a partial one.
* No UDP answer is larger than the client allows (see test_truncation.py).
"""

from __future__ import annotations

import socket
import struct
import tracemalloc

import dns.message
import dns.rdatatype
import pytest
import trio
from conftest import StartTriodist, accounted, frame, query, tcp_pipelined, tcp_query, until

from triodist.frontends.tcp import client_key
from triodist.testing.backend import AuthServer

_U16 = struct.Struct("!H")


async def non_reader(address: tuple[str, int], queries: int, name: str) -> trio.socket.SocketType:
    """A TCP client that pipelines ``queries`` queries for ``name`` and never reads."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window: the server's writes stall early, as over a slow link.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(address)
    wire = b"".join(frame(query(name, "TXT").to_wire()) for _ in range(queries))
    view = memoryview(wire)
    while view:
        view = view[await sock.send(view) :]
    return sock


CONFIG = """
newServer{address="$BACKEND"}
setTCPSendTimeout(2)
setTCPRecvTimeout(30)
"""


async def test_tcp_clients_that_never_read_are_let_go_and_cost_a_bounded_amount(
    start_triodist: StartTriodist, huge_auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist(CONFIG, backend=huge_auth)
    limit = t.server.config.settings.max_tcp_unsent_bytes
    clients = 10
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = trio.current_time()
        socks = [await non_reader(t.address, 50, "huge.example.org.") for _ in range(clients)]
        # A well-behaved client is answered while they hold their connections.
        good = await tcp_query(t.address, query("www.example.org."), timeout=1)
        assert good is not None and good.rcode() == 0
        # Every one of them is let go: by the bound on unsent answers or, when its
        # answers stop flowing, within the send timeout.
        await until(lambda: t.server.tcp_connections.open == 0, timeout=30)
        let_go = trio.current_time() - started
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    stats = t.stats
    assert stats["tcp-unsent-overflows"] + stats["tcp-send-timeouts"] >= clients
    # Before the bound, each such connection kept every answer it was sent (50 x 58 KB
    # here, 29 MB in all), and was held 2 s per answer, one after another.
    assert peak < clients * limit + 4 * 1024 * 1024, f"peak {peak} bytes"
    assert let_go < 2 * 2 + 1, f"held for {let_go:.1f} s"
    await accounted(t)
    # Their queries stopped being read once their answers stopped flowing.
    assert stats["received"] < clients * 50
    for sock in socks:
        sock.close()


CACHE = 'getPool(""):setCache(newPacketCache(100, {maximumEntrySize=65535}))\n'


@pytest.mark.parametrize("cached", [False, True], ids=["forwarded", "cached"])
async def test_the_reader_stops_while_the_client_does_not_read(
    start_triodist: StartTriodist,
    huge_auth: AuthServer,
    autojump_clock: trio.abc.Clock,
    cached: bool,
) -> None:
    # Answers of 58 KB: a few fill what the kernel and the outbox take, after which
    # no more of the client's queries are read, let alone sent to the backend. From the
    # cache, each answer is ready at once, in the reader: only the pause stops it.
    t = await start_triodist(
        CONFIG
        + "setMaxTCPUnsentBytes(1000000)\nsetTCPSendTimeout(1000)\n"
        + (CACHE if cached else ""),
        backend=huge_auth,
    )
    # Not the bound on queries in flight either: that one allows them all here.
    t.server.config.settings.max_tcp_in_flight_per_connection = 1000
    sock = await non_reader(t.address, 400, "huge.example.org.")
    await until(lambda: t.stats["received"] > 0, timeout=30)
    await trio.sleep(60)  # the client goes on not reading for a minute
    read = t.stats["received"]
    assert read < 50, f"{read} queries read from a client that reads nothing"
    await trio.sleep(60)
    assert t.stats["received"] == read  # and no more since
    # Held back by not reading, not by the bound: the connection is still there.
    assert t.stats["tcp-unsent-overflows"] == 0
    assert t.server.tcp_connections.open == 1
    sock.close()


def _frames(stream: bytes) -> tuple[list[bytes], bytes]:
    """The whole frames in ``stream`` and what follows them (an incomplete frame)."""
    frames = []
    while len(stream) >= 2:
        (length,) = _U16.unpack_from(stream, 0)
        if len(stream) < 2 + length:
            break
        frames.append(stream[2 : 2 + length])
        stream = stream[2 + length :]
    return frames, stream


async def test_an_answer_not_written_whole_closes_the_connection(
    start_triodist: StartTriodist, huge_auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist(CONFIG + "setMaxTCPUnsentBytes(1000000)\n", backend=huge_auth)
    expected = await tcp_query(t.address, query("huge.example.org.", "TXT"))
    assert expected is not None
    sock = await non_reader(t.address, 8, "huge.example.org.")
    # The client reads nothing for 5 s, then reads everything there is until the end.
    await trio.sleep(5)
    received = bytearray()
    with trio.fail_after(30):
        while chunk := await sock.recv(65536):
            received += chunk
    sock.close()
    frames, rest = _frames(bytes(received))
    for data in frames:
        reply = dns.message.from_wire(data)
        assert reply.answer == expected.answer
    # Nothing follows the frame that could not be written whole: what came of it is a
    # prefix of that answer (before, the next answers followed it, garbling them all).
    assert len(frames) < 8
    whole = _U16.pack(len(expected.to_wire())) + expected.to_wire()
    assert rest[4:] == whole[4 : len(rest)], "bytes after a partial frame"
    assert t.stats["tcp-send-timeouts"] == 1
    await accounted(t)


async def test_one_address_holds_at_most_twenty_connections_by_default(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    held = []
    for _ in range(25):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await sock.connect(t.address)
        held.append(sock)
    # The first 20 are served; the others are closed at once and counted.
    await until(lambda: t.stats["tcp-overload-drops"] == 5, timeout=5)
    assert t.server.tcp_connections.per_client[client_key("127.0.0.1")] == 20
    # Another address is served meanwhile.
    other = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await other.bind(("127.0.0.2", 0))
    await other.connect(t.address)
    await other.send(frame(query("www.example.org.").to_wire()))
    with trio.fail_after(5):
        assert len(await other.recv(65536)) > 12
    for sock in [*held, other]:
        sock.close()


async def test_a_client_that_resets_its_connection_costs_only_that_connection(
    start_triodist: StartTriodist,
) -> None:
    # Half a query, then a reset (SO_LINGER 0): the read fails with ECONNRESET inside the
    # connection's nursery. Before, that error left the connection handler as an exception
    # group and ended the whole server.
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    for partial in (b"\x00\x30\x12", b"", frame(query("www.example.org.").to_wire())):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await sock.connect(t.address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if partial:
            await sock.send(partial)
        await until(lambda: t.server.tcp_connections.open == 1, timeout=5)
        sock.close()
        await until(lambda: t.server.tcp_connections.open == 0, timeout=5)
    answer = await tcp_query(t.address, query("www.example.org."))
    assert answer is not None and answer.answer
    assert t.stats["tcp-connection-errors"] == 0
    await accounted(t)


async def test_a_client_that_reads_gets_every_large_answer_it_pipelined(
    start_triodist: StartTriodist, huge_auth: AuthServer
) -> None:
    # 40 queries for the 58 KB answer at once, read as they come: more than the bound on
    # unsent answers if they were all in flight at once, so the connection reads ahead only
    # as far as their answers fit, and every one is answered.
    t = await start_triodist('newServer{address="$BACKEND"}\n', backend=huge_auth)
    msgs = [query("huge.example.org.", "TXT") for _ in range(40)]
    for n, msg in enumerate(msgs):
        msg.id = n
    replies = await tcp_pipelined(t.address, msgs, timeout=20)
    assert sorted(replies) == list(range(40))
    assert all(len(r.answer[0][0].strings) == 230 for r in replies.values())
    assert t.stats["tcp-unsent-overflows"] == 0
    await accounted(t)


def test_an_ipv6_client_is_its_slash_64_for_the_per_client_bound() -> None:
    # One host may hold a whole /64: counted by address, it would hold 20 connections from
    # each of 2**64 addresses.
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1")
