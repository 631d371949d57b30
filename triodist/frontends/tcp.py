"""The TCP frontend: connections, length-prefixed queries, pipelined answers.

Each connection has its own nursery holding three kinds of task: the reader (the
connection task itself), which reads queries one after another (each read bounded
by the receive timeout, so an idle or stalled client is let go) and processes each
at once; a task for each query that must wait (for a backend, a suspension), so
several queries are in flight at once and answered as they complete; and one
writer, which writes the answers in the order they were ready.

Answers go through the connection's :class:`Outbox`, which bounds what a client
that does not read can make us keep:

* the bytes of answers not yet written are bounded (``setMaxTCPUnsentBytes``,
  128 KiB by default: two of the largest DNS messages); an answer that does
  not fit closes the connection;
* the reader reads ahead only as far as the answers to the queries in flight may
  fit: it counts each as large as the largest of the connection's last answers (as
  the largest DNS message until one has come back), so a client asking for large
  answers has few queries in flight, and one asking for small ones many, as TCP's
  slow start opens its window as acknowledgements come;
* while more than 16 KiB of answers wait to be written (the socket is not taking
  them) the reader stops reading: a client that does not read its answers gets no
  more of its queries read, so what it can make us keep is what was already asked;
* a write that makes no progress for the send timeout closes the connection, and
  so does any write that did not complete (a frame half written would garble
  every answer after it).

When a query is dropped the connection stops reading, lets the queries already in
flight answer, and closes, as dnsdist closes the connection on a drop.

Imports nothing above triodist.frontends (the query path and below).
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator

import trio

from triodist.backends.transfer import Transfer
from triodist.frontends.common import allowed, answer_error, answer_no_question
from triodist.query.outcome import Wait, answer_after_waits
from triodist.query.pipeline import Pipeline
from triodist.query.settings import Settings
from triodist.rules.matchers import NetmaskGroup
from triodist.util.ratelimit import source_key
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.message import DNSQuestion
from triodist.wire.question import MalformedQuery
from triodist.wire.stream import StreamReader

log = logging.getLogger("triodist.frontends")

_U16 = struct.Struct("!H")

#: Answers waiting beyond this many bytes stop the reader: far less than one large
#: answer, and many small ones, so that pipelined small queries keep flowing.
PAUSE_READING_AT = 16 * 1024
#: The largest DNS message over TCP, with its length prefix: what a query in flight is
#: counted as until the connection's answers say otherwise.
LARGEST_FRAME = 2 + 65_535
#: How many of a connection's last answers its estimate of the next one looks at.
RECENT_ANSWERS = 8


class TCPConnections:
    """The TCP connections open over every listener of a server, in all and per client:
    the global bound (``setMaxTCPConnections``) and the per-client one
    (``setMaxTCPConnectionsPerClient``) count them all, whichever listener took them."""

    def __init__(self) -> None:
        self.open = 0
        # Only clients with an open connection have an entry, so this holds at most
        # ``setMaxTCPConnections`` keys whatever addresses come and go. A client is its
        # address (IPv4) or its /64 (IPv6: one host may hold a whole /64), as an int.
        self.per_client: Counter[int] = Counter()
        #: Lower than ``setMaxTCPConnections`` when the open-file limit is (system/fdlimit.py).
        self.cap = 0


class _Stalled(Exception):
    """A write made no progress for the send timeout."""


class Outbox:
    """The answers of one connection waiting to be written, bounded in bytes.

    Answers are put in synchronously (by the reader for an answer that needed no
    wait, by a query's task for one that did) and written in that order by
    :meth:`run`, the connection's one writer.  Each answer put is counted once, in
    the end, as ``answered`` (written whole) or ``dropped`` (not written whole: the
    connection failed or closed first).

    Resource handling: at most ``limit`` bytes wait here.  Error handling: any
    failure to write (the peer gone, no progress for ``send_timeout``, the bound
    exceeded, cancellation) marks the outbox broken and cancels ``failed``, the
    connection's scope, so the connection closes; a write is never resumed after a
    failure, since how much of its frame went out is then unknown.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        stats: Counter[str],
        *,
        limit: int,
        send_timeout: float,
    ) -> None:
        self._send = _sender(stream)
        self.stats = stats
        self.limit = limit
        self.send_timeout = send_timeout
        #: Bytes put and not yet written (the frame being written included).
        self.unsent = 0
        #: Queries read and not yet answered (they wait for a backend or a suspension).
        self.in_flight = 0
        #: The sizes of the last answers put, for the estimate of the next ones.
        self._recent: deque[int] = deque([LARGEST_FRAME], maxlen=RECENT_ANSWERS)
        self.broken = False
        self._frames: deque[bytes] = deque()
        #: No more answers will come (``no_more_answers``).
        self._closing = False
        self._wake_writer = trio.Event()
        self._room = trio.Event()
        self._failed: trio.CancelScope | None = None
        #: Where a zone transfer's task waits for the answers before to be written.
        self._drained = trio.lowlevel.ParkingLot()

    @property
    def full(self) -> bool:
        """Whether the reader should wait before reading another query: answers are
        not being taken by the client, or those of the queries in flight may not fit."""
        return self.unsent > PAUSE_READING_AT or (
            self.in_flight > 0
            and self.unsent + (self.in_flight + 1) * max(self._recent) > self.limit
        )

    def query_started(self) -> None:
        """A query read goes on in a task of its own: its answer will come later."""
        self.in_flight += 1

    def query_done(self) -> None:
        """A query in flight was answered (put) or dropped."""
        self.in_flight -= 1
        self._room.set()

    def put(self, answer: bytes | bytearray, *, continued: bool = False) -> None:
        """Queue an answer; over the bound the connection closes and it is dropped.
        ``continued``: a zone transfer's message after its first, which is not a query's
        answer of its own (not counted as answered or dropped)."""
        if self.broken:
            self.stats["dropped"] += not continued
            return
        frame = _U16.pack(len(answer)) + answer
        if continued:
            frame = _Continued(frame)
        self._recent.append(len(frame))
        if self.unsent + len(frame) > self.limit:
            log.debug("TCP answers not read by the client exceed %d bytes: closing", self.limit)
            self.stats["tcp-unsent-overflows"] += 1
            self.stats["dropped"] += not continued
            self._fail()
            return
        self._frames.append(frame)
        self.unsent += len(frame)
        self._wake_writer.set()

    async def room(self) -> None:
        """Return once the reader may read again (or the connection failed)."""
        while self.full and not self.broken:
            self._room = trio.Event()
            await self._room.wait()

    async def drained(self) -> None:
        """Return once at most ``PAUSE_READING_AT`` bytes wait to be written (or the
        connection failed): a zone transfer reads its next message from the backend only
        then, so that it is streamed through, never piled up here."""
        while self.unsent > PAUSE_READING_AT and not self.broken:
            await self._drained.park()

    def no_more_answers(self) -> None:
        """No more answers will come: the writer returns once all are written."""
        self._closing = True
        self._wake_writer.set()

    async def run(self, failed: trio.CancelScope) -> None:
        """The writer: until :meth:`no_more_answers` and everything written, or a failure."""
        self._failed = failed
        send = self._send
        frames = self._frames
        try:
            while True:
                if not frames:
                    if self._closing:
                        return
                    self._wake_writer = trio.Event()
                    await self._wake_writer.wait()
                    continue
                view = memoryview(frames[0])
                while view:
                    with trio.move_on_after(self.send_timeout) as progress:
                        written = await send(view)
                    if progress.cancelled_caught:
                        raise _Stalled
                    view = view[written:]
                    self.unsent -= written
                    if not self.full:
                        self._room.set()
                    if self.unsent <= PAUSE_READING_AT:
                        self._drained.unpark_all()
                if type(frames.popleft()) is not _Continued:
                    self.stats["answered"] += 1
        except _Stalled:
            log.debug("No progress writing a TCP answer for %ss: closing", self.send_timeout)
            self.stats["tcp-send-timeouts"] += 1
            self._fail()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("Writing a TCP answer failed: %s", exc)
            self._fail()
        finally:
            # Whatever was not written whole is lost: counted, never written later.
            self.stats["dropped"] += sum(type(f) is not _Continued for f in frames)
            frames.clear()
            self.broken = True  # nothing put from now on would be written
            self.unsent = 0
            self._room.set()
            self._drained.unpark_all()

    def _fail(self) -> None:
        self.broken = True
        self._room.set()
        self._drained.unpark_all()
        if self._failed is not None:
            self._failed.cancel()


class _Continued(bytes):
    """A frame of a zone transfer after its first message (see ``Outbox.put``)."""

    __slots__ = ()


def _sender(stream: trio.abc.Stream) -> Callable[[memoryview], Awaitable[int]]:
    """How the writer sends: with a socket's own ``send``, which is all or nothing towards
    cancellation (a cancelled send wrote nothing), so what was written is always known.
    Any other stream (an in-memory one, in tests) takes each chunk whole."""
    if isinstance(stream, trio.SocketStream):
        return stream.socket.send

    async def send_all(view: memoryview) -> int:
        await stream.send_all(view)
        return len(view)

    return send_all


#: A client's connection as the frontends read it: plain TCP, or TLS over it (tls.py).
Connection = trio.SocketStream | trio.SSLStream[trio.SocketStream]


def socket_of(stream: Connection) -> trio.socket.SocketType:
    """The TCP socket under a connection, TLS or not."""
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return stream.transport_stream.socket


class TCPFrontend:
    #: What a query read here says it came over (``dq:getProtocol()``).
    protocol = "Do53 TCP"

    def __init__(
        self,
        listener: trio.SocketListener,
        pipeline: Pipeline,
        acl: NetmaskGroup,
        stats: Counter[str],
        settings: Settings,
        *,
        max_connections: int = 0,
        max_in_flight: int = 0,
        shared: TCPConnections | None = None,
    ) -> None:
        self.listener = listener
        #: This listener's own bound on connections (dnsdist's maxConcurrentTCPConnections;
        #: 0: only the global one) and on queries waiting per connection (maxInFlight).
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.pipeline = pipeline
        #: Unexpected errors while answering, written once a minute per distinct error.
        self.errors = RateLimitedLog(log)
        self.acl = acl
        self.stats = stats
        self.settings = settings
        #: This listener's open connections; ``shared``: the server's, every listener's.
        self.connections = 0
        self.shared = shared if shared is not None else TCPConnections()
        #: The reading scopes of the open connections: a shutdown cancels them, so that an
        #: open connection reads no new query either (its queries in flight are answered,
        #: then it closes). ``stopped``: set once, for the connections accepted after.
        self._reading: set[trio.CancelScope] = set()
        self.stopped = False
        sockname = listener.socket.getsockname()
        self.local: tuple[str, int] = (sockname[0], sockname[1])

    def stop_reading(self) -> None:
        """At shutdown: every open connection stops reading queries, as a new one would
        not be accepted; what it has read is still answered."""
        self.stopped = True
        for scope in self._reading:
            scope.cancel()

    @contextlib.contextmanager
    def _stoppable(self, reading: trio.CancelScope) -> Iterator[None]:
        """While a connection reads, ``stop_reading`` may cancel ``reading``."""
        if self.stopped:
            reading.cancel()
        self._reading.add(reading)
        try:
            yield
        finally:
            self._reading.discard(reading)

    async def serve(self, connection_nursery: trio.Nursery) -> None:
        """Accept until cancelled; connections run in ``connection_nursery``."""
        await trio.serve_listeners(
            self._connection, [self.listener], handler_nursery=connection_nursery
        )

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
        except OSError as exc:  # reset before it was accepted: gone already
            log.debug("TCP connection gone before it was served: %s", exc)
            self.stats["tcp-gone-before-accept"] += 1
            await trio.aclose_forcefully(stream)
            return
        remote = (str(peer[0]), int(peer[1]))
        async with stream:
            if not allowed(self.acl, remote[0]):
                self.stats["acl-drops"] += 1
                return
            limit = self.settings.max_tcp_connections_per_client
            shared = self.shared
            per_client = shared.per_client
            client = client_key(remote[0])
            if (
                shared.open >= self.settings.max_tcp_connections
                or (shared.cap and shared.open >= shared.cap)
                or (self.max_connections and self.connections >= self.max_connections)
                or (limit and per_client[client] >= limit)
            ):
                self.stats["tcp-overload-drops"] += 1
                return
            self.connections += 1
            shared.open += 1
            per_client[client] += 1
            try:
                await self._serve_connection(stream, remote)
            except Exception as exc:  # the connection's boundary: it ends, the server goes on
                if _gone(exc):  # the peer reset or closed it: nothing wrong on our side
                    log.debug("TCP connection from %s ended: %r", remote[0], exc)
                else:
                    self.stats["tcp-connection-errors"] += 1
                    self.errors.unexpected(
                        "connection", f"on a TCP connection from {remote[0]}", exc
                    )
            finally:
                self.connections -= 1
                shared.open -= 1
                per_client[client] -= 1
                if not per_client[client]:
                    del per_client[client]

    async def _serve_connection(self, stream: Connection, remote: tuple[str, int]) -> None:
        settings = self.settings
        outbox = Outbox(
            stream,
            self.stats,
            limit=settings.max_tcp_unsent_bytes,
            send_timeout=settings.tcp_send_timeout,
        )
        async with trio.open_nursery() as connection:
            # A failed write cancels this nursery: the reader and the queries in flight
            # stop (the latter counted as dropped) and the connection closes.
            connection.start_soon(outbox.run, connection.cancel_scope)
            await self._read_queries(stream, remote, outbox)
            # Every query read has been answered (or dropped): the writer ends once the
            # answers are written.
            outbox.no_more_answers()

    async def _read_queries(
        self, stream: Connection, remote: tuple[str, int], outbox: Outbox
    ) -> None:
        reader = StreamReader(stream)
        settings = self.settings
        count = 0
        local = self.local
        if local[0] in ("0.0.0.0", "::"):
            # A listener bound to every address: the connection's own end says which
            # address the client reached (dq.localaddr, as dnsdist gives it).
            with contextlib.suppress(OSError):
                sockname = socket_of(stream).getsockname()
                local = (str(sockname[0]), int(sockname[1]))
        waiting = trio.Semaphore(
            self.max_in_flight or settings.max_tcp_in_flight_per_connection or 1
        )
        async with trio.open_nursery() as queries:
            closing = trio.Event()
            duration = settings.max_tcp_connection_duration
            with (
                trio.CancelScope(
                    deadline=trio.current_time() + duration if duration else float("inf")
                ) as reading,
                self._stoppable(reading),
            ):
                queries.start_soon(_cancel_when, closing, reading)
                while True:
                    if outbox.full:
                        # The client is not reading its answers: read no more of its
                        # queries until it does (or the writer gives up on it).
                        await outbox.room()
                        if outbox.broken:
                            break
                    # The receive timeout bounds each read, not the whole message (as
                    # dnsdist's); 0 is none. setMaxTCPConnectionDuration bounds the rest.
                    idle = settings.tcp_recv_timeout or None
                    try:
                        length_bytes = await reader.read_exactly(2, idle)
                        (length,) = _U16.unpack(length_bytes)
                        data = await reader.read_exactly(length, idle)
                    except (EOFError, trio.TooSlowError):
                        break
                    # Every whole message read is counted once as received and, in the
                    # end, once as answered or dropped (bench/reliability.md).
                    self.stats["received"] += 1
                    if len(data) < 12 or data[2] & 0x80:
                        # Broken framing or not a query: nothing sensible can follow.
                        self.stats["non-compliant-queries"] += 1
                        self.stats["dropped"] += 1
                        break
                    empty = answer_no_question(data, self.stats, settings.drop_empty_queries)
                    if empty is not None and not empty:
                        # setDropEmptyQueries(true): dnsdist closes the connection.
                        self.stats["dropped"] += 1
                        break
                    if empty is not None:  # answered NOTIMP by the reader, as dnsdist does
                        count += 1
                        outbox.put(empty)
                        limit = settings.max_tcp_queries_per_connection
                        if limit and count >= limit:
                            break
                        continue
                    try:
                        dq = DNSQuestion(data, remote, local, tcp=True, protocol=self.protocol)
                    except MalformedQuery:
                        # Dropped, and the connection goes on: the framing is intact, so
                        # the client's next queries are still read (as dnsdist does).
                        self.stats["non-compliant-queries"] += 1
                        self.stats["dropped"] += 1
                        continue
                    count += 1
                    # At the bound, nothing more is read until a waiting query is answered.
                    try:
                        await waiting.acquire()
                    except trio.Cancelled:  # the connection's time is up: never processed
                        self.stats["dropped"] += 1
                        raise
                    try:
                        outcome = self.pipeline.process(dq)
                    except Exception as exc:  # the per-query boundary: SERVFAIL, go on
                        outcome = answer_error(dq, exc, self.stats, self.errors)
                    if isinstance(outcome, Wait):
                        # It waits in its own task; the next queries are read meanwhile.
                        outbox.query_started()
                        queries.start_soon(self._query_task, dq, outcome, outbox, closing, waiting)
                    else:
                        # Answered (or dropped) without waiting: from the reader itself.
                        waiting.release()
                        self._deliver(dq, outcome, outbox, closing)
                    limit = settings.max_tcp_queries_per_connection
                    if limit and count >= limit:
                        break
            closing.set()
        # Leaving the nursery means every query read has been answered (or dropped).

    async def _query_task(
        self,
        dq: DNSQuestion,
        outcome: Wait,
        outbox: Outbox,
        closing: trio.Event,
        waiting: trio.Semaphore,
    ) -> None:
        """A query that waits (for a backend, a suspension), in its own task."""
        delivered = False
        reply: bytes | bytearray | None = None  # a Transfer must be closed, whatever comes
        try:
            try:
                reply = await answer_after_waits(outcome)
            except Exception as exc:  # the per-query boundary: SERVFAIL, go on
                reply = answer_error(dq, exc, self.stats, self.errors)
            delivered = True  # counted by _deliver from here on
            self._deliver(dq, reply, outbox, closing)
            if isinstance(reply, Transfer):
                await _relay_transfer(reply, outbox, closing)
        finally:
            if isinstance(reply, Transfer):
                reply.close()  # its backend connection, whatever became of the relay
            waiting.release()
            outbox.query_done()
            if not delivered:  # cancelled: the connection failing or closing, shutdown
                self.stats["dropped"] += 1

    def _deliver(
        self,
        dq: DNSQuestion,
        reply: bytes | bytearray | None,
        outbox: Outbox,
        closing: trio.Event,
    ) -> None:
        """Hand an answer to the writer; nothing to send (a drop) closes the connection
        once the other queries read on it are answered, as dnsdist does.

        The end of the per-query boundary: an unexpected error here leaves the stream in a
        state nobody knows, so the query is counted dropped, the error logged once a
        minute, and the connection closes the same way."""
        try:
            if reply is None:
                self.stats["dropped"] += 1
                closing.set()
                return
            outbox.put(reply)
        except Exception as exc:
            self.stats["unexpected-errors"] += 1
            self.stats["dropped"] += 1
            self.errors.unexpected("deliver", f"while answering {dq.describe()}", exc)
            closing.set()


def client_key(host: str) -> int:
    """Who a connection counts against for ``setMaxTCPConnectionsPerClient``: the
    address, or its /64 for IPv6."""
    return source_key(host, 0, 64)


_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _gone(exc: BaseException) -> bool:
    """Whether ``exc`` only says the connection went away (reset, closed), alone or
    grouped by the connection's nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(_GONE)[1] is None
    return isinstance(exc, _GONE)


async def _relay_transfer(transfer: Transfer, outbox: Outbox, closing: trio.Event) -> None:
    """The rest of a zone transfer after its first message, one message at a time: the
    next is read from the backend only once the answers before it are mostly written. A
    transfer cut short closes the connection once the other answers are written, as
    dnsdist closes it (the client must not take a part for the whole)."""
    while not transfer.finished:
        await outbox.drained()
        if outbox.broken:
            return
        message = await transfer.next()
        if message is None:
            if not transfer.complete:
                outbox.stats["tcp-transfers-cut"] += 1
                closing.set()
            return
        outbox.put(message, continued=True)


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
