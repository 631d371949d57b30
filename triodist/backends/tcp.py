"""A backend's TCP side: a query over an idle connection kept from an earlier one, or
over a new connection, within the backend's bound on connections.

Queries in flight at the same time use separate connections; up to ``MAX_IDLE_TCP`` idle
ones are kept for the next queries. ``TCPSide`` is one of ``Server``'s two sides (see
life.py). Imports nothing above triodist.backends.
"""

from __future__ import annotations

import logging
import struct

import trio

from triodist.backends.exchange import NotSent, reply_matches
from triodist.backends.life import BackendBase
from triodist.wire.stream import StreamReader
from triodist.wire.walk import question_key

log = logging.getLogger("triodist.backends")

_U16 = struct.Struct("!H")
#: Idle TCP connections kept per backend for the next queries.
MAX_IDLE_TCP = 16


class TCPBackendBusy(OSError):
    """The backend's TCP connections are at their bound: the query is dropped."""


class TCPSendFailed(Exception):
    """A TCP query could not go out: the connection could not be made (refused, EMFILE,
    ENFILE, EADDRNOTAVAIL...) or the write on a new connection failed. Not an ``OSError``,
    so that the handler counting replies that never came cannot take it for one."""


class TCPSide(BackendBase):
    """Queries to the backend over TCP (``query_tcp``), one connection per query at a time."""

    async def query_tcp(
        self, query: bytes | bytearray, question_end: int
    ) -> bytes | NotSent | None:
        """Send ``query`` over TCP (an idle connection kept from an earlier query, else a new
        one); return the reply, None when it did not come (the timeout, the connection
        closed or broken after the query was written), or why nothing was sent:
        ``NotSent.OVERLOADED`` when the backend's TCP connections are at their bound,
        ``NotSent.SEND_ERROR`` when the connect or the write failed, as a refused UDP send."""
        self.queries += 1
        self.outstanding += 1
        start = trio.current_time()
        try:
            with trio.move_on_after(self.tcp_timeout):
                reply = await self._tcp_exchange(query, question_end)
                self.responses += 1
                self.record_latency(trio.current_time() - start)
                if self.lazy_results is not None:
                    self.record_outcome(self.servfail_is_failure and (reply[3] & 0x0F) == 2)
                return reply
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
        except (OSError, trio.BrokenResourceError, EOFError) as exc:
            log.debug("TCP query to %s failed: %s", self.name, exc)
        finally:
            self.outstanding -= 1
        self.count_no_reply()
        return None

    async def _tcp_exchange(self, query: bytes | bytearray, question_end: int) -> bytes:
        """One query and its reply on a TCP connection, which is then kept for the next
        query (up to ``MAX_IDLE_TCP`` idle ones). An idle connection the backend has closed
        meanwhile fails at once: the query is sent again, once, on a new connection."""
        qid = _U16.unpack_from(query, 0)[0]
        question = question_key(query, question_end)
        framed = _U16.pack(len(query)) + bytes(query)
        while True:
            idle = self.life.idle_tcp
            fresh = not idle
            if fresh:
                try:
                    stream = await self._open_tcp()
                except TCPBackendBusy:
                    raise
                except OSError as exc:  # trio.open_tcp_stream's "all attempts ... failed"
                    raise TCPSendFailed(str(exc)) from exc
                reader = StreamReader(stream)
            else:
                stream, reader = idle.pop()
            try:
                await stream.send_all(framed)
            except (OSError, trio.BrokenResourceError) as exc:
                self.close_tcp(stream)
                if fresh:
                    raise TCPSendFailed(str(exc)) from exc
                continue  # a stale idle connection: try again on a new one
            except BaseException:  # cancelled (the deadline): the connection is in between
                self.close_tcp(stream)
                raise
            try:
                while True:
                    (length,) = _U16.unpack(await reader.read_exactly(2))
                    reply = await reader.read_exactly(length)
                    # Our query's ID and question (any case), as over UDP; anything else
                    # on the connection is skipped.
                    if (
                        len(reply) >= 12
                        and _U16.unpack_from(reply, 0)[0] == qid
                        and reply_matches(reply, question)
                    ):
                        break
            except (OSError, trio.BrokenResourceError, EOFError):
                self.close_tcp(stream)
                if fresh:
                    raise
                continue  # a stale idle connection: try again
            except BaseException:  # cancelled (the deadline): the connection is in between
                self.close_tcp(stream)
                raise
            if len(idle) < MAX_IDLE_TCP and not reader.has_buffered:
                idle.append((stream, reader))
            else:
                self.close_tcp(stream)
            return reply

    @property
    def tcp_connections_bound(self) -> int:
        """The bound on TCP connections in force (0: none)."""
        bounds = [b for b in (self.max_tcp_connections, self.tcp_connections_cap) if b > 0]
        return min(bounds) if bounds else 0

    async def _open_tcp(self) -> trio.SocketStream:
        bound = self.tcp_connections_bound
        if bound and self.tcp_connections >= bound:
            self.tcp_overload_drops += 1
            raise TCPBackendBusy(f"{bound} TCP connections open already")
        self.tcp_connections += 1
        try:
            return await trio.open_tcp_stream(self.address.toString(), self.address.port)
        except BaseException:
            self.tcp_connections -= 1
            raise
