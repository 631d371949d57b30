"""Zone transfers (AXFR, IXFR) over TCP: an answer of several messages, relayed whole.

A transfer's query gets a connection to the backend of its own (``BackendConnection``
with ``exclusive``). Its first message comes back as the query's reply, as a
``Transfer``: the bytes of that message, and the way to the rest. Whoever relays it to
the client (the TCP frontend) asks for the next message only once the client has taken
most of what came before, so a transfer is streamed, never kept: one message at a time,
however large the zone.

When it ends is dnsdist's rule (``TransferEnd``): a message with an error rcode ends it;
otherwise the SOA records of the answer sections are counted, and the transfer is
complete at the second SOA when it carries the first one's serial (an AXFR: the zone
between two copies of its SOA), or at the third time the first serial comes (an IXFR:
the new SOA first, then each difference opened and closed by SOAs, then the new SOA
again). Whatever the backend sends after that is not the client's: the connection is
closed, never reused.

Imports nothing above triodist.backends.
"""

from __future__ import annotations

import logging
import struct

import trio

from triodist.backends.tcpconn import BackendConnection
from triodist.wire.walk import HEADER_LEN, WalkError, counts, records, skip_questions

log = logging.getLogger("triodist.backends")

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
AXFR, IXFR, SOA, IN = 252, 251, 6, 1


def is_transfer(query: bytes | bytearray, question_end: int) -> bool:
    """Whether ``query`` (whose question ends at ``question_end``) asks for AXFR or IXFR."""
    if question_end < HEADER_LEN + 5 or question_end > len(query):
        return False
    return _U16.unpack_from(query, question_end - 4)[0] in (AXFR, IXFR)


class TransferEnd:
    """Counts a transfer's SOA records to tell when it is complete (dnsdist's rule)."""

    __slots__ = ("first_seen", "first_serial", "soas")

    def __init__(self) -> None:
        self.soas = 0
        self.first_serial: int | None = None
        self.first_seen = 0

    def complete_after(self, message: bytes | bytearray) -> bool:
        """Whether the transfer is complete with ``message``; a message that cannot be
        walked counts no SOA (dnsdist goes on after one it cannot parse)."""
        if len(message) < HEADER_LEN:
            return False
        if message[3] & 0x0F:
            return True  # an error ends it
        qdcount, ancount, _, _ = counts(message)
        pos = skip_questions(message, HEADER_LEN, qdcount)
        if pos < 0:
            return False
        complete = False
        try:
            for _, _, rtype, rclass, _, rdlen, rdata in records(message, pos, ancount):
                if rtype != SOA or rclass != IN:
                    continue
                if rdlen < 22:  # two root names and five 32-bit numbers at the least
                    return complete
                # The names before it may be compressed: the serial is read from the end.
                serial = _U32.unpack_from(message, rdata + rdlen - 20)[0]
                self.soas += 1
                if self.first_serial is None:
                    self.first_serial, self.first_seen = serial, 1
                elif serial == self.first_serial:
                    self.first_seen += 1
                    if self.soas == 2 or self.first_seen == 3:
                        complete = True
        except WalkError:
            pass
        return complete


class Transfer(bytes):
    """The first message of a transfer's answer (its bytes, with the client's ID given
    back: a reply like any other to whoever only sends it on), and the rest to come, one
    ``next`` at a time.

    Resource handling: it owns its backend connection from when it is made until
    ``close``, which whoever relays it must call (in a ``finally``): until then the
    connection counts towards the backend's bound."""

    _conn: BackendConnection
    _backend_id: int
    _client_id: int
    _read_timeout: float
    _end: TransferEnd
    messages: int
    finished: bool
    complete: bool

    def __new__(
        cls,
        first: bytes,
        conn: BackendConnection,
        *,
        client_id: int,
        read_timeout: float,
    ) -> Transfer:
        self = super().__new__(cls, _U16.pack(client_id) + first[2:])
        self._conn = conn
        self._backend_id = _U16.unpack_from(first, 0)[0]
        self._client_id = client_id
        self._read_timeout = read_timeout
        self._end = TransferEnd()
        #: Messages passed on after the first.
        self.messages = 0
        #: No more messages: the transfer is complete (``complete``) or cut short.
        self.finished = self.complete = self._end.complete_after(first)
        if self.finished:
            self.close()
        return self

    async def next(self) -> bytearray | None:
        """The next message (the client's ID given back), or None at the end: then
        ``complete`` says whether the transfer was whole or cut short (the backend closed
        the connection, sent something else, or nothing for its TCP timeout)."""
        if self.finished:
            return None
        message: bytes | None = None
        with trio.move_on_after(self._read_timeout):
            message = await self._conn.read_message()
        if (
            message is None
            or len(message) < HEADER_LEN
            or _U16.unpack_from(message, 0)[0] != self._backend_id
        ):
            log.debug("Zone transfer from %s cut short", self._conn.pool.name)
            self.finished = True
            self.close()
            return None
        answer = bytearray(message)
        _U16.pack_into(answer, 0, self._client_id)
        self.messages += 1
        if self._end.complete_after(answer):
            self.finished = self.complete = True
            self.close()  # what the backend sends after the end is not the client's
        return answer

    def close(self) -> None:
        self._conn.close()
