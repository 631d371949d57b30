"""DNS over a byte stream (TCP, DoT): reading exact byte counts, for the two-byte length
prefix and the message after it.

Used by the TCP frontend, the backends' TCP side and the console. Imports nothing of
triodist (only Trio's stream interface).
"""

from __future__ import annotations

import trio


class StreamReader:
    """Read exact byte counts from a Trio stream (DNS over TCP framing)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def fill(self, count: int, idle: float | None = None) -> bool:
        """Until ``count`` bytes are buffered; False if the stream ends first.

        ``idle``: the longest wait for each read (``trio.TooSlowError`` after it), so a
        peer that keeps sending, however slowly, is not cut off (dnsdist's
        ``setTCPRecvTimeout`` is per read, not per message)."""
        while len(self.buffer) < count:
            if idle is None:
                chunk = await self.stream.receive_some(65536)
            else:
                with trio.fail_after(idle):
                    chunk = await self.stream.receive_some(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    async def read_exactly(self, count: int, idle: float | None = None) -> bytes:
        if not await self.fill(count, idle):
            raise EOFError("connection closed")
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    @property
    def has_buffered(self) -> bool:
        return bool(self.buffer)
