"""Every query a frontend reads is counted once as received and once as answered or dropped.

Mixed traffic with faults over real loopback sockets: answers, cache hits, spoofs, rule drops,
a backend that stays silent (timeouts), garbage and responses sent as queries, TCP clients
that send a broken frame or close before their answer. Once everything has settled,
``received == answered + dropped``, and ``answered`` is what the clients really got.
"""

from __future__ import annotations

import socket
import struct

import dns.message
import pytest
import trio
import trio.testing
from conftest import StartTriodist, accounted, frame, query, read_frame, until

from triodist.testing.backend import AuthServer

CONFIG = """
newServer{address="$BACKEND", udpTimeout=1, healthCheckMode="up"}
getPool(""):setCache(newPacketCache(100))
addAction("spoofed.example.", SpoofAction("192.0.2.1"))
addAction("dropped.example.", DropAction())
"""


async def test_every_query_is_answered_or_dropped_and_counted(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.modes["silent.example.org."] = "silent"
    t = await start_triodist(CONFIG)
    got = 0  # answers the clients received

    async def ask(name: str, *, tcp: bool = False) -> None:
        nonlocal got
        if await t.ask(name, tcp=tcp, timeout=3.0) is not None:
            got += 1

    async def ask_tcp(name: str) -> None:
        await ask(name, tcp=True)

    async def send_raw(data: bytes) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect(t.address)
            await sock.send(data)

    async def tcp_broken_frame() -> None:
        stream = await trio.open_tcp_stream(*t.address)
        async with stream:
            await stream.send_all(struct.pack("!H", 5) + b"\x00\x01\x02\x03\x04")
            buffer = bytearray()
            assert await read_frame(stream, buffer) is None  # closed, nothing sent

    async def tcp_gone_before_the_answer() -> None:
        stream = await trio.open_tcp_stream(*t.address)
        async with stream:
            await stream.send_all(frame(query("silent.example.org.").to_wire()))
        # Closed while the query waits for a backend that never answers.

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(ask, f"n{n}.example.org.")
            nursery.start_soon(ask, "cached.example.org.")
            nursery.start_soon(ask, "spoofed.example.")
            nursery.start_soon(ask, "dropped.example.")
        for _ in range(3):
            nursery.start_soon(ask, "silent.example.org.")
            nursery.start_soon(ask_tcp, "www.example.org.")
        await send_raw(b"\x00" * 5)  # shorter than a header
        await send_raw(dns.message.make_response(query("www.example.org.")).to_wire())
        await send_raw(b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 20)  # a question that runs off
        nursery.start_soon(tcp_broken_frame)
        nursery.start_soon(tcp_gone_before_the_answer)

    # Every backend timeout fires (30 s over TCP, in virtual time), then all is counted.
    await until(lambda: t.stats["downstream-timeouts"] == 3 + 1, timeout=31)
    await accounted(t)
    stats = t.stats
    assert stats["received"] == 40 + 6 + 3 + 1 + 1
    assert stats["answered"] == got == 10 + 10 + 10 + 3
    # The drops by reason add up to the drops.
    assert stats["dropped"] == (
        10  # DropAction
        + 3
        + 1  # backend timeouts (UDP, and the TCP client that left)
        + 3
        + 1  # non-compliant: short, a response, a broken question; the broken frame
    ), dict(stats)
    assert stats["downstream-timeouts"] == 3 + 1
    assert stats["non-compliant-queries"] == 3 + 1
    assert stats["rule-drop"] == 10


async def test_queries_cut_by_the_grace_period_are_counted_as_dropped(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    # The backend never answers, and its timeout (30 s) is far beyond the grace period
    # (0.5 s): only the grace deadline can end these queries when the server stops.
    auth.modes["silent.example.org."] = "silent"
    t = await start_triodist('newServer{address="$BACKEND", udpTimeout=30, healthCheckMode="up"}')
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(t.ask, "silent.example.org.", "A")
        await until(lambda: t.stats["received"] >= 4)
        t.server.config.settings.grace_period = 0.5
        shutdown = trio.current_time()
        t.server.request_shutdown()
        await t.server.wait_stopped()
        stopped = trio.current_time()
    # Stopped at the grace deadline, not at the backend timeout...
    assert stopped - shutdown == pytest.approx(0.5, abs=1e-6)
    # ...which none of them reached: they were cut, and counted as dropped all the same.
    assert t.stats["downstream-timeouts"] == 0
    assert t.stats["received"] == 4
    assert t.stats["dropped"] == 4
    assert t.stats["answered"] == 0
