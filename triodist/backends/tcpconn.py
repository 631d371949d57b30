"""TCP connections to a backend, each carrying up to its backend's ``maxInFlight`` queries
at once (one when it is 0, the default), their answers matched by ID in whatever order
they come (dnsdist's "out-of-order" processing).

Each query on a connection gets an ID of the connection's own (``Slot``), as dnsdist
numbers them, so that queries from different clients that happen to carry the same ID
can share it; the reply gets the client's ID back later (the pipeline restores it).

Nobody reads a connection in a task of its own. The query tasks waiting on it take turns:
one reads frames and hands each to the query it answers, until its own reply comes; then
it wakes one of the others to read on (``BackendConnection.wait_reply``). So every read
happens in a query's task, under that query's deadline, and no task outlives the queries
it serves. Reads are safe to cancel: ``StreamReader.fill`` keeps what it has, and a frame
is taken out of the buffer only once it is whole, so the next reader goes on from there.
A write cut short (a cancellation, an error) leaves the stream in between two frames:
the connection is given up.

Bounds: at most ``capacity`` queries per connection (an ID waits there after its query's
deadline until its reply comes or the connection closes, since the backend may still
answer it); a connection nobody waits on any more is closed at once when it still owes
replies, kept idle otherwise (at most ``MAX_IDLE_TCP`` per backend). A reply with an ID
nobody was given, or shorter than a DNS header, gives the connection up, as dnsdist does
(``notifyAllQueriesFailed``): what follows on it cannot be trusted.

Imports nothing above triodist.backends.
"""

from __future__ import annotations

import logging
import struct
from typing import Protocol

import trio

from triodist.backends.exchange import reply_matches
from triodist.wire.stream import StreamReader

log = logging.getLogger("triodist.backends")

_U16 = struct.Struct("!H")
#: Idle TCP connections kept per backend for the next queries.
MAX_IDLE_TCP = 16
#: The most queries one connection carries at once: its IDs are 16 bits.
MAX_IN_FLIGHT = 65_535


class ConnectionLost(Exception):
    """The connection failed before this query's reply. ``sent``: the query had been
    written; ``retry``: sending it again on another connection makes sense (the connection
    had worked before it failed: a backend closing a connection it kept idle, or after so
    many queries; or the query never went out through no fault of the backend)."""

    def __init__(self, reason: str, *, sent: bool, retry: bool) -> None:
        super().__init__(reason)
        self.sent = sent
        self.retry = retry


class Slot:
    """One query on a connection: the ID it was given there, the question its reply must
    carry, and the reply once it came."""

    __slots__ = ("abandoned", "allow_empty", "event", "id", "question", "reply", "sent")

    def __init__(self, qid: int, question: bytes) -> None:
        self.id = qid
        self.question = question
        #: A NOERROR or NXDOMAIN reply with no question answers it too
        #: (``setAllowEmptyResponse``).
        self.allow_empty = False
        self.reply: bytes | None = None
        self.sent = False
        #: Its query stopped waiting (its deadline) after it was sent: the ID stays taken
        #: until the reply comes, which is then thrown away.
        self.abandoned = False
        #: Set to wake its task: the reply came, the connection failed, or its turn to read.
        self.event: trio.Event | None = None


class Counts(Protocol):
    """Where a backend counts its open TCP connections (its ``BackendLife``)."""

    tcp_connections: int


class BackendConnection:
    """One TCP connection to a backend and the queries in flight on it."""

    def __init__(self, pool: ConnectionPool, capacity: int, *, exclusive: bool = False) -> None:
        self.pool = pool
        self.capacity = max(1, min(capacity, MAX_IN_FLIGHT))
        #: Given to one query alone (a zone transfer, whose answer is several messages
        #: under one ID): never shared, and never kept once that query is done with it.
        self.exclusive = exclusive
        self.stream: trio.SocketStream | None = None
        self.reader: StreamReader | None = None
        #: The queries it carries, by their ID on it (abandoned ones included).
        self.slots: dict[int, Slot] = {}
        #: Queries whose task is still with it.
        self.live = 0
        #: Replies read on it: one that fails after working is worth a retry.
        self.answered = 0
        #: The backend itself sent what cannot be a reply (too short, an unknown ID, a
        #: question not asked): its queries get no answer, and none is sent elsewhere, as
        #: in dnsdist (where a retry would only hand the client whatever comes next).
        self.untrusted = False
        self._next_id = 0
        self._reading = False
        self._send_lock = trio.StrictFIFOLock()
        #: Set once connected, or once the connect failed.
        self._ready = trio.Event()
        self._connect_failed = False
        #: Why it carries nothing more (None while it works).
        self.broken: str | None = None
        self.closed = False

    def reserve(self, question: bytes) -> Slot:
        """A place for one more query (the pool lists it as having room)."""
        qid = self._next_id
        while qid in self.slots:  # at most ``capacity`` (< 65536) are taken
            qid = (qid + 1) & 0xFFFF
        self._next_id = (qid + 1) & 0xFFFF
        slot = Slot(qid, question)
        self.slots[qid] = slot
        self.live += 1
        return slot

    def release(self, slot: Slot) -> None:
        """``slot``'s query is done with the connection: its reply, its deadline, a failure.
        The pool then keeps the connection, or closes it."""
        self.live -= 1
        if self.slots.get(slot.id) is slot and (
            slot.reply is not None or not slot.sent or self.broken is not None
        ):
            del self.slots[slot.id]
        elif self.slots.get(slot.id) is slot:
            slot.abandoned = True  # the backend may still answer it: the ID stays taken
        self._hand_over()
        self.pool.settle(self)

    # --- connecting and sending -----------------------------------------------------------

    async def connect(self, host: str, port: int) -> None:
        """Open the connection (by the query that made it; the others wait in ``send``).
        An ``OSError`` means it could not be made."""
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            self._connect_failed = True
            self.fail("connect failed")
            raise
        except BaseException:
            self.fail("connect cut short")
            raise
        if self.closed:  # closed while connecting (the backend removed, shutdown)
            stream.socket.close()
            raise ConnectionLost("closed while connecting", sent=False, retry=False)
        self.stream, self.reader = stream, StreamReader(stream)
        self._ready.set()

    async def send(self, slot: Slot, query: bytes | bytearray) -> None:
        """Write ``query`` under ``slot``'s ID, once the connection is made and any other
        write on it is done."""
        await self._ready.wait()
        frame = _U16.pack(len(query)) + _U16.pack(slot.id) + bytes(query[2:])
        async with self._send_lock:
            stream = self.stream
            if self.broken is not None or stream is None:
                # Nothing went out: worth another connection unless none can be made.
                raise ConnectionLost(
                    self.broken or "not connected", sent=False, retry=not self._connect_failed
                )
            try:
                await stream.send_all(frame)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.fail(f"write failed: {exc}")
                raise ConnectionLost(str(exc), sent=False, retry=self.answered > 0) from exc
            except BaseException:
                # Cancelled with part of the frame maybe written: every frame after it
                # would be garbled.
                self.fail("a write was cut short")
                raise
        slot.sent = True

    # --- reading --------------------------------------------------------------------------

    async def wait_reply(self, slot: Slot) -> bytes:
        """``slot``'s reply. While another task reads the connection this one sleeps; when
        nobody does, it reads, handing each frame to the query it answers, until its own
        comes. ``ConnectionLost`` when the connection fails first."""
        while slot.reply is None:
            if self.broken is not None:
                raise ConnectionLost(
                    self.broken, sent=True, retry=self.answered > 0 and not self.untrusted
                )
            if self._reading:
                slot.event = trio.Event()
                await slot.event.wait()
                continue
            self._reading = True
            try:
                message = await self.read_message()
            finally:
                self._reading = False
            if message is not None:
                self._dispatch(message)
        return slot.reply

    async def read_message(self) -> bytes | None:
        """The next whole frame's message; None (the connection given up) when the stream
        ends or fails. Cancellation loses nothing: a frame leaves the buffer whole."""
        reader = self.reader
        assert reader is not None
        try:
            if await reader.fill(2):
                end = 2 + _U16.unpack_from(reader.buffer, 0)[0]
                if await reader.fill(end):
                    message = bytes(reader.buffer[2:end])
                    del reader.buffer[:end]
                    return message
            self.fail("closed by the backend")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(f"read failed: {exc}")
        return None

    def _dispatch(self, message: bytes) -> None:
        if len(message) < 12:
            self.untrusted = True
            self.fail(f"a reply of {len(message)} bytes, shorter than a DNS header")
            return
        slot = self.slots.get(_U16.unpack_from(message, 0)[0])
        if slot is None:
            # dnsdist gives up on the connection too: nothing after it can be trusted.
            self.untrusted = True
            self.fail(f"a reply with an ID no query has on it ({message[0] << 8 | message[1]})")
            return
        self.answered += 1
        if slot.abandoned:  # its query gave up waiting: the ID is free again
            del self.slots[slot.id]
            self.pool.settle(self)
            return
        if not reply_matches(message, slot.question, slot.allow_empty):
            # Our ID but not our question (or a header-only NOERROR/NXDOMAIN without
            # setAllowEmptyResponse): the backend is confused, and the query gets no answer.
            self.untrusted = True
            self.fail("a reply that does not answer the question asked")
            return
        slot.reply = message
        del self.slots[slot.id]
        if slot.event is not None:
            slot.event.set()

    def _hand_over(self) -> None:
        """Wake one query still waiting for its reply to read on, if nobody reads."""
        if self._reading or self.broken is not None:
            return
        for slot in self.slots.values():
            event = slot.event
            if event is None or event.is_set() or slot.abandoned:
                continue
            if slot.reply is None:
                event.set()
                return

    # --- the end --------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """It carries nothing more: every query on it is woken (to fail or go elsewhere)."""
        if self.broken is not None:
            return
        log.debug("TCP connection to %s given up: %s", self.pool.name, reason)
        self.broken = reason
        self._ready.set()
        for slot in self.slots.values():
            if slot.event is not None:
                slot.event.set()
        self.pool.settle(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fail("closed")
        if self.stream is not None:
            # Trio wakes a task waiting on the socket with ClosedResourceError.
            self.stream.socket.close()
        self.pool.forget(self)


class ConnectionPool:
    """A backend's TCP connections: every open one (to count and close them), the idle ones
    and those busy with room for another query, most recently used last."""

    def __init__(self, counts: Counts, name: str = "") -> None:
        self.counts = counts
        self.name = name
        self.open: set[BackendConnection] = set()
        self.idle: dict[BackendConnection, None] = {}
        self.busy: dict[BackendConnection, None] = {}

    def find(self) -> BackendConnection | None:
        """A connection with room: an idle one first (as dnsdist), then a busy one."""
        for group in (self.idle, self.busy):
            if group:
                return next(reversed(group))
        return None

    def take_idle(self) -> BackendConnection | None:
        """An idle connection, for a query that needs one to itself."""
        if not self.idle:
            return None
        conn = next(reversed(self.idle))
        del self.idle[conn]
        return conn

    def new(self, capacity: int, *, exclusive: bool = False) -> BackendConnection:
        conn = BackendConnection(self, capacity, exclusive=exclusive)
        self.open.add(conn)
        self.counts.tcp_connections += 1
        return conn

    def settle(self, conn: BackendConnection) -> None:
        """Where ``conn`` belongs after a change: closed, idle, busy with room, or full."""
        self.idle.pop(conn, None)
        self.busy.pop(conn, None)
        if conn.closed:
            return
        if conn.broken is not None or (conn.live == 0 and conn.slots):
            # Given up, or owing replies nobody waits for: nothing more to get from it.
            conn.close()
            return
        if conn.exclusive:
            return  # its one query (a transfer) closes it
        if not conn.slots:
            if conn.live == 0:
                reader = conn.reader
                if (reader is not None and reader.has_buffered) or len(self.idle) >= MAX_IDLE_TCP:
                    conn.close()  # unasked-for bytes, or enough idle ones kept
                else:
                    self.idle[conn] = None
            else:
                self.busy[conn] = None
        elif len(conn.slots) < conn.capacity:
            self.busy[conn] = None

    def forget(self, conn: BackendConnection) -> None:
        if conn in self.open:
            self.open.discard(conn)
            self.counts.tcp_connections -= 1
        self.idle.pop(conn, None)
        self.busy.pop(conn, None)

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.close()
