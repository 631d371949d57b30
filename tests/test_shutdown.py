"""A graceful shutdown, end to end: once it is asked for, no new query is read; the queries
in flight are answered; and the server stops as soon as the last of them is, not at the
end of its grace period.

The receive and accept loops run in the server's ``listen`` nursery, which the shutdown
cancels first; the queries run in ``work``, which only gets a deadline. A loop started in
``work`` by mistake would go on reading queries through the whole grace period, and keep
the server running until its end. (The grace deadline itself, and the queries it cuts, are
in ``test_accounting.py``.)
"""

from __future__ import annotations

import contextlib
import socket

import dns.message
import dns.rcode
import pytest
import trio
import trio.testing
from conftest import Address, StartTriodist, frame, query, read_frame, until

from triodist.testing.backend import AuthServer

#: The backend answers a second after it is asked; the grace period is far longer.
BACKEND_DELAY = 1.0
GRACE = 10.0


async def tcp_after_shutdown(
    address: Address,
    timeout: float,  # noqa: ASYNC109 - silence is an answer
) -> dns.message.Message | None:
    """One query over a new TCP connection; ``None`` when no answer comes, whether the
    connection is refused (the listener closed) or left unanswered."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError:  # refused: nobody listens any more
            return None
        async with stream:
            try:
                await stream.send_all(frame(query("www.example.org.").to_wire()))
            except trio.BrokenResourceError:
                return None
            data = await read_frame(stream, bytearray())
            return None if data is None else dns.message.from_wire(data)
    return None


@pytest.mark.parametrize("over", ["udp", "tcp"])
async def test_after_a_shutdown_no_query_is_read_and_the_server_stops_with_the_last_in_flight(
    start_triodist: StartTriodist,
    auth: AuthServer,
    autojump_clock: trio.abc.Clock,
    over: str,
) -> None:
    auth.mode = "slow"
    auth.delay = BACKEND_DELAY
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}')
    t.server.config.settings.grace_period = GRACE
    replies: dict[str, dns.message.Message | None] = {}
    answered_at: dict[str, float] = {}

    async def ask(label: str) -> None:
        if label == "in flight" or over == "udp":
            replies[label] = await t.ask("www.example.org.", timeout=2 * GRACE)
        else:
            replies[label] = await tcp_after_shutdown(t.address, 2 * GRACE)
        answered_at[label] = trio.current_time()

    async with trio.open_nursery() as clients:
        clients.start_soon(ask, "in flight")
        # It has reached the backend: from here on it is a query in flight, which keeps
        # the grace period in force until its answer comes.
        await until(lambda: bool(auth.queries_for("www.example.org.")))
        t.server.request_shutdown()
        # The server has done what the shutdown does at once (its listeners stopped):
        # everything waits now, the backend and the client of the query in flight.
        await trio.testing.wait_all_tasks_blocked()
        shutdown = trio.current_time()
        clients.start_soon(ask, "after the shutdown")
        await t.server.wait_stopped()
        stopped = trio.current_time()

    reply = replies["in flight"]
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert replies["after the shutdown"] is None
    assert len(auth.queries_for("www.example.org.")) == 1  # the second never went out
    assert t.stats["received"] == t.stats["answered"] == 1, dict(t.stats)
    # Stopped with the answer in flight, well before the grace period would have ended.
    assert stopped == pytest.approx(answered_at["in flight"], abs=1e-6)
    assert stopped - shutdown < BACKEND_DELAY < GRACE


async def test_after_a_shutdown_the_listening_sockets_take_no_query(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    """Once stopped, nothing of the server listens: TCP is refused, and a UDP datagram
    gets the kernel's port unreachable (seen as a refused connection by a connected
    socket)."""
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}')
    t.server.request_shutdown()
    await t.server.wait_stopped()
    with pytest.raises(OSError):
        await trio.open_tcp_stream(*t.address)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(t.address)
        await sock.send(query("www.example.org.").to_wire())
        refused = False
        with trio.move_on_after(1.0):  # a socket left open would never answer
            try:
                await sock.recv(512)
            except ConnectionRefusedError:
                refused = True
        assert refused


async def test_after_a_shutdown_an_open_connection_reads_no_new_query(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    """A connection opened before the shutdown: its query in flight is answered, a query it
    sends after is not read, and the connection closes; the server stops with the answer."""
    auth.mode = "slow"
    auth.delay = BACKEND_DELAY
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}')
    t.server.config.settings.grace_period = GRACE
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        await stream.send_all(frame(query("www.example.org.").to_wire()))
        await until(lambda: bool(auth.queries_for("www.example.org.")))
        t.server.request_shutdown()
        await trio.testing.wait_all_tasks_blocked()
        shutdown = trio.current_time()
        with contextlib.suppress(trio.BrokenResourceError):  # closed already: not read either
            await stream.send_all(frame(query("late.example.org.").to_wire()))
        buffer = bytearray()
        first = await read_frame(stream, buffer)
        assert first is not None
        assert dns.message.from_wire(first).rcode() == dns.rcode.NOERROR
        assert await read_frame(stream, buffer) is None  # closed, the late query unread
        await t.server.wait_stopped()
    assert trio.current_time() - shutdown < BACKEND_DELAY < GRACE
    assert auth.queries_for("late.example.org.") == []
    assert t.stats["received"] == t.stats["answered"] == 1, dict(t.stats)
