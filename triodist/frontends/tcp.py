"""The TCP frontend: connections, length-prefixed queries, pipelined answers.

Each connection has its own nursery.  The connection task reads queries one
after another (each read bounded by the receive timeout, so an idle or stalled
client is let go) and processes each at once: an answer that needs no wait (a
cache hit, a spoof) is sent from there, and a query that waits gets its own task
in the connection's nursery, so several queries are in flight at once and
answered as they complete; writes are serialised by a lock.  When a query is
dropped the connection stops reading, lets the queries already in flight
answer, and closes, as dnsdist closes the connection on a drop.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter

import trio

from ..backends.server import StreamReader
from ..dnsmsg import DNSQuestion, MalformedQuery
from ..pipeline import Pipeline, Settings, Wait, finish
from ..rules.matchers import NetmaskGroup
from .common import allowed

log = logging.getLogger("triodist.frontends")

_U16 = struct.Struct("!H")


class TCPConnections:
    """The TCP connections open over every listener of a server, in all and per client:
    the global bound (``setMaxTCPConnections``) and the per-client one
    (``setMaxTCPConnectionsPerClient``) count them all, whichever listener took them."""

    def __init__(self) -> None:
        self.open = 0
        self.per_client: Counter[str] = Counter()
        #: Lower than ``setMaxTCPConnections`` when the open-file limit is (fdlimit.py).
        self.cap = 0


class TCPFrontend:
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
        self.acl = acl
        self.stats = stats
        self.settings = settings
        #: This listener's open connections; ``shared``: the server's, every listener's.
        self.connections = 0
        self.shared = shared if shared is not None else TCPConnections()
        sockname = listener.socket.getsockname()
        self.local: tuple[str, int] = (sockname[0], sockname[1])

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
            if (
                shared.open >= self.settings.max_tcp_connections
                or (shared.cap and shared.open >= shared.cap)
                or (self.max_connections and self.connections >= self.max_connections)
                or (limit and per_client[remote[0]] >= limit)
            ):
                self.stats["tcp-overload-drops"] += 1
                return
            self.connections += 1
            shared.open += 1
            per_client[remote[0]] += 1
            try:
                await self._serve_connection(stream, remote)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("TCP connection from %s ended: %s", remote[0], exc)
            finally:
                self.connections -= 1
                shared.open -= 1
                per_client[remote[0]] -= 1
                if not per_client[remote[0]]:
                    del per_client[remote[0]]

    async def _serve_connection(self, stream: trio.SocketStream, remote: tuple[str, int]) -> None:
        reader = StreamReader(stream)
        send_lock = trio.Lock()
        settings = self.settings
        count = 0
        waiting = trio.Semaphore(
            self.max_in_flight or settings.max_tcp_in_flight_per_connection or 1
        )
        async with trio.open_nursery() as queries:
            closing = trio.Event()
            duration = settings.max_tcp_connection_duration
            with trio.CancelScope(
                deadline=trio.current_time() + duration if duration else float("inf")
            ) as reading:
                queries.start_soon(_cancel_when, closing, reading)
                while True:
                    with trio.move_on_after(settings.tcp_recv_timeout) as idle:
                        try:
                            length_bytes = await reader.read_exactly(2)
                            (length,) = _U16.unpack(length_bytes)
                            data = await reader.read_exactly(length)
                        except EOFError:
                            break
                    if idle.cancelled_caught:
                        break
                    # Every whole message read is counted once as received and, in the
                    # end, once as answered or dropped (docs/reliability.md).
                    self.stats["received"] += 1
                    if len(data) < 12 or data[2] & 0x80:
                        # Broken framing or not a query: nothing sensible can follow.
                        self.stats["non-compliant-queries"] += 1
                        self.stats["dropped"] += 1
                        break
                    try:
                        dq = DNSQuestion(data, remote, self.local, tcp=True)
                    except MalformedQuery:
                        self.stats["non-compliant-queries"] += 1
                        self.stats["dropped"] += 1
                        break
                    count += 1
                    # At the bound, nothing more is read until a waiting query is answered.
                    try:
                        await waiting.acquire()
                    except trio.Cancelled:  # the connection's time is up: never processed
                        self.stats["dropped"] += 1
                        raise
                    try:
                        outcome = self.pipeline.process(dq)
                    except Exception:  # the per-query boundary: log once, go on
                        log.exception("Unexpected error while answering %s", dq.describe())
                        outcome = None
                    if isinstance(outcome, Wait):
                        # It waits in its own task; the next queries are read meanwhile.
                        queries.start_soon(
                            self._answer, dq, outcome, stream, send_lock, closing, waiting
                        )
                    else:
                        waiting.release()
                        # Shielded from the reading scope (a drop elsewhere, the
                        # connection's duration): a frame half sent would garble
                        # the others. The send has its own timeout.
                        with trio.CancelScope(shield=True):
                            await self._send(outcome, stream, send_lock, closing)
                    limit = settings.max_tcp_queries_per_connection
                    if limit and count >= limit:
                        break
            closing.set()
        # Leaving the nursery means every query read has been answered (or dropped).

    async def _answer(
        self,
        dq: DNSQuestion,
        outcome: Wait,
        stream: trio.SocketStream,
        send_lock: trio.Lock,
        closing: trio.Event,
        waiting: trio.Semaphore,
    ) -> None:
        sent = False
        try:
            try:
                reply = await finish(outcome)
            except Exception:
                log.exception("Unexpected error while answering %s", dq.describe())
                reply = None
            sent = True
            await self._send(reply, stream, send_lock, closing)
        finally:
            waiting.release()
            if not sent:  # cancelled: the connection closing, the end of the grace period
                self.stats["dropped"] += 1

    async def _send(
        self,
        reply: bytes | bytearray | None,
        stream: trio.SocketStream,
        send_lock: trio.Lock,
        closing: trio.Event,
    ) -> None:
        """Send an answer; nothing to send (a drop) closes the connection once the other
        queries read on it are answered, as dnsdist does."""
        if reply is None:
            self.stats["dropped"] += 1
            closing.set()
            return
        answered = False
        try:
            async with send_lock:
                with trio.move_on_after(self.settings.tcp_send_timeout):
                    try:
                        await stream.send_all(_U16.pack(len(reply)) + reply)
                        answered = True
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        closing.set()
        finally:
            self.stats["answered" if answered else "dropped"] += 1


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
