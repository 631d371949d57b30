"""``setTCPRecvTimeout`` bounds each read of a TCP client, not the whole message, as in
dnsdist: a client that keeps sending, however slowly, keeps its connection until
``setMaxTCPConnectionDuration``; one that goes quiet for the timeout is closed."""

from __future__ import annotations

import struct

import dns.message
import trio
from conftest import StartTriodist, query

from triodist.testing.backend import AuthServer


async def closed_by_server(stream: trio.SocketStream) -> bool:
    """Whether the server has closed the connection (EOF or reset), without waiting."""
    with trio.move_on_after(0):
        try:
            return await stream.receive_some(65535) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def trickle(stream: trio.SocketStream, data: bytes, pause: float) -> bool:
    """Send ``data`` a byte at a time, ``pause`` seconds apart; False once the server has
    closed the connection."""
    for byte in data:
        await trio.sleep(pause)
        if await closed_by_server(stream):
            return False
        try:
            await stream.send_all(bytes([byte]))
        except trio.BrokenResourceError:
            return False
    return True


async def read_answer(stream: trio.SocketStream) -> dns.message.Message:
    buffer = b""
    while len(buffer) < 2 or len(buffer) < 2 + struct.unpack_from("!H", buffer)[0]:
        chunk = await stream.receive_some(65535)
        assert chunk, "closed before the answer"
        buffer += chunk
    return dns.message.from_wire(buffer[2:])


async def test_a_slow_but_steady_client_is_answered(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\nsetTCPRecvTimeout(2)\n')
    wire = query("www.example.org.").to_wire()
    framed = struct.pack("!H", len(wire)) + wire
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        started = trio.current_time()
        # One byte a second: each read comes within the 2 s timeout, the message takes
        # far longer (about 35 s).
        assert await trickle(stream, framed, 1.0)
        assert trio.current_time() - started > 30
        answer = await read_answer(stream)
        assert answer.id == query_id(wire) and answer.answer


async def test_a_quiet_client_is_closed_after_the_timeout(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\nsetTCPRecvTimeout(2)\n')
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        await stream.send_all(b"\x00")  # half a length prefix, then nothing
        started = trio.current_time()
        assert await stream.receive_some(65535) == b""
        assert 2 <= trio.current_time() - started < 2.5


async def test_the_connection_duration_bounds_a_trickling_client(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\nsetTCPRecvTimeout(2)\nsetMaxTCPConnectionDuration(5)\n'
    )
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        started = trio.current_time()
        # The largest length, then a byte every 0.1 s: never a whole message.
        assert not await trickle(stream, b"\xff\xff" + b"A" * 200, 0.1)
        assert 5 <= trio.current_time() - started < 5.5


def query_id(wire: bytes) -> int:
    return int(struct.unpack_from("!H", wire)[0])
