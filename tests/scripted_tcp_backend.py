"""A TCP backend whose every connection runs a script the test gives: it reads queries and
answers them when, how and in what order the test says (out of order, several messages
for one query, garbage, an unknown ID, a close half way).

Used by ``test_tcp_pipelining.py`` and ``test_axfr.py``; it serves on loopback only.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Awaitable, Callable

import dns.message
import dns.rrset
import trio

_U16 = struct.Struct("!H")


class BackendConnection:
    """One connection as the backend sees it."""

    def __init__(self, stream: trio.SocketStream, number: int) -> None:
        self.stream = stream
        self.number = number
        self._buffer = bytearray()
        #: Queries read on it and not yet answered (what the test's script says it answered).
        self.unanswered = 0
        #: The most that were unanswered at once.
        self.most_unanswered = 0

    async def read_query(self) -> dns.message.Message | None:
        """The next query, or None when the other side closed the connection."""
        while True:
            if len(self._buffer) >= 2:
                (length,) = _U16.unpack_from(self._buffer, 0)
                if len(self._buffer) >= 2 + length:
                    data = bytes(self._buffer[2 : 2 + length])
                    del self._buffer[: 2 + length]
                    self.unanswered += 1
                    self.most_unanswered = max(self.most_unanswered, self.unanswered)
                    return dns.message.from_wire(data)
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not chunk:
                return None
            self._buffer += chunk

    async def send(self, message: dns.message.Message, *, answers: bool = True) -> None:
        """Send ``message``; ``answers``: it is the answer to one query read."""
        await self.send_raw(message.to_wire(max_size=65535))
        if answers:
            self.unanswered -= 1

    async def send_raw(self, wire: bytes) -> None:
        await self.stream.send_all(_U16.pack(len(wire)) + wire)


Script = Callable[[BackendConnection], Awaitable[None]]


class ScriptedTCPBackend:
    """Accepts TCP connections on 127.0.0.1 and runs ``script`` for each."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections: list[BackendConnection] = []
        #: Connections whose script returned or whose peer closed them.
        self.closed = 0
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> int:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1")
        )
        self.port = listeners[0].socket.getsockname()[1]
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = BackendConnection(stream, len(self.connections))
        self.connections.append(conn)
        try:
            async with stream:
                await self.script(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed += 1


def answer(query: dns.message.Message, *records: str) -> dns.message.Message:
    """The reply to ``query`` with the given answer records (zone-file lines)."""
    reply = dns.message.make_response(query)
    for text in records:
        reply.answer.append(dns.rrset.from_text(*_split(text)))
    return reply


def _split(text: str) -> tuple[str, int, str, str, str]:
    name, ttl, rdclass, rdtype, rdata = text.split(None, 4)
    return name, int(ttl), rdclass, rdtype, rdata
