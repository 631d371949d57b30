"""A backend's TCP side: queries over its TCP connections (``tcpconn.py``), within the
backend's bound on connections.

Up to ``maxInFlight`` queries share a connection at once (one when it is 0, dnsdist's
default: a query in flight then has a connection to itself), their replies matched by
ID in any order; idle connections are kept for the next queries. A zone transfer has a
connection of its own, and its answer comes back as a ``Transfer`` (transfer.py) to a
caller that can relay several messages. ``TCPSide`` is one of ``Server``'s two sides
(see life.py). Imports nothing above triodist.backends.
"""

from __future__ import annotations

import logging
import struct

import trio

from triodist.backends.exchange import NotSent
from triodist.backends.life import BackendBase
from triodist.backends.tcpconn import MAX_IDLE_TCP, BackendConnection, ConnectionLost
from triodist.backends.transfer import Transfer, is_transfer
from triodist.wire.walk import question_key

log = logging.getLogger("triodist.backends")

__all__ = ["MAX_IDLE_TCP", "TCPBackendBusy", "TCPSendFailed", "TCPSide"]

_U16 = struct.Struct("!H")
#: How many connections one query tries when those it is on fail after having worked
#: (dnsdist's default ``retries``).
MAX_TCP_ATTEMPTS = 5


class TCPBackendBusy(OSError):
    """The backend's TCP connections are at their bound: the query is dropped."""


class TCPSendFailed(Exception):
    """A TCP query could not go out: the connection could not be made (refused, EMFILE,
    ENFILE, EADDRNOTAVAIL...) or the write failed before the connection had worked. Not an
    ``OSError``, so that the handler counting replies that never came cannot take it for
    one."""


class TCPSide(BackendBase):
    """Queries to the backend over TCP (``query_tcp``)."""

    #: Queries one connection carries at once (``newServer``'s ``maxInFlight``; 0: one).
    max_in_flight: int = 0

    async def query_tcp(
        self, query: bytes | bytearray, question_end: int, relays: bool = False
    ) -> bytes | NotSent | None:
        """Send ``query`` over TCP and return the reply; None when it did not come (the
        timeout, the connection closed or broken after the query was written), or why
        nothing was sent: ``NotSent.OVERLOADED`` when the backend's TCP connections are at
        their bound, ``NotSent.SEND_ERROR`` when the connect or the write failed, as a
        refused UDP send. ``relays``: the caller passes a zone transfer's messages on one
        by one, so a transfer's reply is a ``Transfer``; otherwise its first message only."""
        self.queries += 1
        self.outstanding += 1
        start = trio.current_time()
        transfer = is_transfer(query, question_end)
        try:
            with trio.move_on_after(self.tcp_timeout):
                reply, conn = await self._tcp_exchange(query, question_end, transfer)
                self.responses += 1
                self.record_latency(trio.current_time() - start)
                if self.lazy_results is not None:
                    self.record_outcome(self.servfail_is_failure and (reply[3] & 0x0F) == 2)
                if not transfer:
                    return reply
                if not relays:
                    conn.close()
                    return reply
                return Transfer(
                    reply,
                    conn,
                    client_id=_U16.unpack_from(query, 0)[0],
                    read_timeout=self.tcp_timeout,
                )
        except TCPBackendBusy:
            # Our own bound, not the backend's failure: no health outcome recorded.
            self.drops += 1
            self.overload_drops += 1
            return NotSent.OVERLOADED
        except TCPSendFailed as exc:
            # Nothing went out, so no reply was awaited: dnsdist's send error, not the
            # backend's timeout. A failure for the lazy health check, as a refused UDP
            # send is (a refused connect is likely the backend's doing).
            log.debug("TCP query to %s not sent: %s", self.name, exc.__cause__)
            self.send_errors += 1
            self.count_no_reply()
            return NotSent.SEND_ERROR
        except ConnectionLost as exc:
            log.debug("TCP query to %s failed: %s", self.name, exc)
        finally:
            self.outstanding -= 1
        self.count_no_reply()
        return None

    async def _tcp_exchange(
        self, query: bytes | bytearray, question_end: int, exclusive: bool
    ) -> tuple[bytes, BackendConnection]:
        """One query and its reply on a connection with room (an idle or busy one, else a
        new one); a connection that fails after having worked (one the backend closed
        while it was idle, say) is left for another, up to ``MAX_TCP_ATTEMPTS`` in all.
        ``exclusive``: the query gets a connection to itself, left open for the caller."""
        question = question_key(query, question_end)
        pool = self.life.tcp_pool
        pool.name = self.name
        attempt = 0
        while True:
            attempt += 1
            conn = pool.take_idle() if exclusive else pool.find()
            opener = conn is None
            if conn is None:
                conn = self._new_connection(exclusive)
            elif exclusive:
                conn.exclusive = True
            slot = conn.reserve(question)
            slot.allow_empty = self.allow_empty_response
            pool.settle(conn)
            try:
                if opener:
                    try:
                        await conn.connect(self.address.toString(), self.address.port)
                    except OSError as exc:  # trio.open_tcp_stream's "all attempts ... failed"
                        raise TCPSendFailed(str(exc)) from exc
                await conn.send(slot, query)
                return await conn.wait_reply(slot), conn
            except ConnectionLost as lost:
                if lost.retry and attempt < MAX_TCP_ATTEMPTS:
                    continue
                if not lost.sent:
                    raise TCPSendFailed(str(lost)) from lost
                raise
            finally:
                conn.release(slot)

    def _new_connection(self, exclusive: bool) -> BackendConnection:
        bound = self.tcp_connections_bound
        if bound and self.tcp_connections >= bound:
            self.tcp_overload_drops += 1
            raise TCPBackendBusy(f"{bound} TCP connections open already")
        return self.life.tcp_pool.new(self.max_in_flight, exclusive=exclusive)

    @property
    def tcp_connections_bound(self) -> int:
        """The bound on TCP connections in force (0: none)."""
        bounds = [b for b in (self.max_tcp_connections, self.tcp_connections_cap) if b > 0]
        return min(bounds) if bounds else 0
