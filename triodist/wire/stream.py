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

    async def fill(self, count: int) -> bool:
        """Until ``count`` bytes are buffered; False if the stream ends first."""
        while len(self.buffer) < count:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    async def read_exactly(self, count: int) -> bytes:
        if not await self.fill(count):
            raise EOFError("connection closed")
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    @property
    def has_buffered(self) -> bool:
        return bool(self.buffer)
