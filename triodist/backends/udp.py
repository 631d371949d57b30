"""A backend's UDP side: its sockets, the query IDs in flight on each, and the wait of
each query for its reply or its deadline.

Each server has a pool of connected sockets (``newServer``'s ``sockets``, 1 by default),
each with its own source port and its own receive loop, and one table of outstanding
queries keyed by (socket, query ID triodist chose). A query goes out on the next socket
of the pool in turn, or on one drawn at random with ``setRandomizedOutgoingSockets(true)``;
its ID follows the last one sent, or is drawn at random among those not in flight on that
socket with ``setRandomizedIdsOverUDP(true)``. A query is sent at once (``send_udp``) and
its task then waits (``wait_udp``): the socket's receive loop matches each reply by ID and
question and wakes the task; the expiry loop ends the wait at the query's own deadline
(the ``udpTimeout`` in force when it was sent).

``UDPSide`` is one of ``Server``'s two sides (see life.py). Imports nothing above
triodist.backends.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import struct
from array import array
from heapq import heappop, heappush
from typing import Any

import trio
from outcome import Value

from triodist.backends import randomness
from triodist.backends.exchange import NotSent, reply_matches
from triodist.backends.life import BackendBase, PendingQuery, in_life
from triodist.wire.walk import question_key

log = logging.getLogger("triodist.backends")

_U16 = struct.Struct("!H")
MAX_DATAGRAM = 65535

#: UDP sockets towards one backend at most (``newServer``'s ``sockets``; dnsdist has no
#: bound): each is a descriptor and a receive task.
MAX_UDP_SOCKETS = 1024

#: Random draws of an ID before a socket gets its list of free IDs (see ``_random_id``).
RANDOM_ID_DRAWS = 8
#: A key of the outstanding table: the socket's index above the 16 bits of the query ID.
_ID_BITS = 16


class UDPSide(BackendBase):
    """Queries to the backend over UDP: sent without waiting (``send_udp``), then waited
    for (``wait_udp``); the replies read by ``receive_loop``."""

    # The life's sockets and free-ID lists, for tests.
    _socks: list[socket.socket] = in_life("socks")
    _free_ids: list[array[int] | None] = in_life("free_ids")

    def open(self, socks: list[socket.socket] | None = None) -> None:
        """Open the UDP sockets towards the backend (at server start, not at config time):
        ``udp_sockets`` of them, each connected, so each has its own source port and the
        kernel delivers to it only what comes from the backend's address and port.
        An ``OSError`` (its text names the server) leaves none open. ``socks``: sockets
        opened beforehand instead (``new_udp_sockets``: a reload that turns ``tcpOnly``
        off opens them before it commits, and hands them to a server that has none)."""
        if self.life.socks or self.tcp_only:
            return
        self._use_sockets(socks if socks is not None else self.new_udp_sockets())

    def new_udp_sockets(self) -> list[socket.socket]:
        """``udp_sockets`` new connected UDP sockets towards the backend, not yet its own
        (``open``; a reload that turns ``tcpOnly`` off opens them before it commits to
        anything). An ``OSError`` (its text names the server) leaves none open."""
        family = socket.AF_INET6 if self.address.isIPv6() else socket.AF_INET
        socks: list[socket.socket] = []
        try:
            for _ in range(self.udp_sockets):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setblocking(False)
                sock.connect((self.address.toString(), self.address.port))
        except OSError as exc:
            for sock in socks:
                sock.close()
            name = self.getNameWithAddr()
            message = f"cannot open a socket to the server {name}: {exc.strerror}"
            raise OSError(exc.errno, message) from exc
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        return socks

    def _use_sockets(self, socks: list[socket.socket]) -> None:
        """Make ``socks`` the server's UDP sockets (``open``, a reload that turns
        ``tcpOnly`` off; a benchmark gives stubs)."""
        life = self.life
        life.socks = socks
        life.next_socket = 0
        life.in_flight = [0] * len(socks)
        life.free_ids = [None] * len(socks)

    async def receive_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read replies from the backend and wake the queries waiting for them; beside it,
        ``_expire_loop`` wakes those whose deadline has passed. When this ends (the server
        removed, or shutting down) every query still waiting is woken with no reply.

        Resource handling: this task owns the server's UDP sockets. It runs one reader
        per socket and the expiry loop in a nursery of its own, so that they all stop
        together when the backend's tasks are cancelled, and it closes the sockets on the
        way out, whoever cancelled it."""
        self.open()
        life = self.life
        socks = life.socks
        task_status.started()
        if not socks:
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._expire_loop)
                for index, sock in enumerate(socks):
                    nursery.start_soon(self._read_replies, index, sock)
        finally:
            for pending in list(life.pending.values()):
                self._end_wait(pending, None)
            self.close()

    async def _read_replies(self, index: int, sock: socket.socket) -> None:
        """One socket's replies: wait until it is readable, then drain it without waiting
        (one wake-up per batch of datagrams, not per datagram)."""
        base = index << _ID_BITS
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    data = sock.recv(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as exc:
                    # ICMP port unreachable and friends: the query times out.
                    log.debug("Error reading from %s: %s", self.name, exc)
                    continue
                self._deliver(base, data)

    async def _expire_loop(self) -> None:
        """End each query still waiting at its own deadline, with no reply.

        Deadlines are kept in a heap (``BackendLife.deadlines``): queries are not in the
        order of their deadlines once ``udpTimeout`` changes (a reload lowering it from 2 s
        to 0.1 s: a query sent after it ends before those sent before it). This task ends
        those due, skipping the queries already answered, then sleeps in a cancel scope
        whose deadline is the earliest left; ``send_udp`` moves that deadline earlier when
        a query due sooner is sent."""
        life = self.life
        heap = life.deadlines
        table = life.pending
        while True:
            now = trio.current_time()
            while heap:
                deadline, key = heap[0]
                pending = table.get(key)
                if pending is None or pending.deadline != deadline:
                    heappop(heap)  # answered (or cancelled) already
                    continue
                if deadline > now:
                    break
                heappop(heap)
                self._end_wait(pending, None)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                life.expiry_scope = scope
                await trio.sleep_forever()
            life.expiry_scope = None

    def _end_wait(self, pending: PendingQuery, response: bytes | None) -> None:
        """End a query's wait with its reply, or None (its deadline, the backend gone):
        out of the table of queries in flight, its ID free again, its task woken."""
        if pending.done:
            return
        pending.done = True
        pending.response = response
        life = self.life
        life.outstanding -= 1
        key = pending.key
        if life.pending.get(key) is pending:
            del life.pending[key]
            self._release_id(key)
        if pending.task is not None:
            trio.lowlevel.reschedule(pending.task, Value(response))

    def _deliver(self, base: int, data: bytes) -> None:
        if len(data) < 12:
            return
        key = base | _U16.unpack_from(data, 0)[0]
        pending = self.life.pending.get(key)
        if pending is None:
            return
        if not reply_matches(data, pending.question, pending.allow_empty):
            log.debug(
                "Reply from %s with ID %d does not match the question", self.name, key & 0xFFFF
            )
            return
        self._end_wait(pending, data)

    def _choose_socket(self) -> int:
        """The index of the socket for the next query: in turn, as dnsdist does, or at
        random with ``setRandomizedOutgoingSockets(true)``."""
        life = self.life
        count = len(life.socks)
        if count == 1:
            return 0
        if self.randomize_sockets:
            return randomness.below(count)
        index = life.next_socket % count
        life.next_socket = index + 1
        return index

    def _allocate_id(self, index: int) -> int | None:
        """A query ID not in flight on socket ``index``; None at ``max_outstanding``
        (at most 65,536 in all, so a socket always has a free ID under it)."""
        life = self.life
        pending = life.pending
        if len(pending) >= min(self.max_outstanding, 65536):
            return None
        if self.randomize_ids:
            qid = self._random_id(index)
        else:
            if life.free_ids[index] is not None:
                # Random IDs were turned off (a reload): consecutive IDs do not keep
                # the free lists up to date, so they go, and are rebuilt if needed.
                life.free_ids = [None] * len(life.free_ids)
            base = index << _ID_BITS
            qid = life.next_id
            while base | qid in pending:
                qid = (qid + 1) & 0xFFFF
            life.next_id = (qid + 1) & 0xFFFF
        life.in_flight[index] += 1
        return qid

    def _random_id(self, index: int) -> int:
        """A random ID among those not in flight on socket ``index``, in O(1).

        While the socket has few queries in flight, a random draw is almost always free:
        up to ``RANDOM_ID_DRAWS`` draws are tried. When they all hit IDs in flight (likely
        only once the socket holds most of the 65,536), the socket gets a list of its free
        IDs (128 KiB, built once) and takes a random entry of it from then on, with no
        retries, until it has no query in flight again. So an ID is never reused while in
        flight (dnsdist 1.8 keeps its fifth draw even then, overwriting the older query),
        and the cost stays bounded however full the table is."""
        life = self.life
        free = life.free_ids[index]
        if free is None:
            base = index << _ID_BITS
            pending = life.pending
            for _ in range(RANDOM_ID_DRAWS):
                qid = randomness.u16()
                if base | qid not in pending:
                    return qid
            free = array("H", (q for q in range(65536) if base | q not in pending))
            life.free_ids[index] = free
            log.debug("Server %s: socket %d keeps a list of free IDs", self.name, index)
        # Swap a random entry with the last one and take it: O(1), uniform over the free.
        position = randomness.below(len(free))
        qid = free[position]
        free[position] = free[-1]
        free.pop()
        return qid

    def _release_id(self, key: int) -> None:
        """Key ``key`` is no longer in flight: its ID is free again on its socket."""
        life = self.life
        index = key >> _ID_BITS
        if index >= len(life.in_flight):
            return  # the sockets were closed (and are gone) meanwhile
        life.in_flight[index] -= 1
        free = life.free_ids[index]
        if free is not None:
            if life.in_flight[index]:
                free.append(key & 0xFFFF)
            else:
                life.free_ids[index] = None  # idle again: draws find free IDs at once

    def send_udp(self, query: bytes | bytearray, question_end: int) -> PendingQuery | NotSent:
        """Send ``query`` with an ID of ours, without waiting. The caller's task then
        waits for the reply with ``wait_udp``. A query that could not go gets why
        (``NotSent``: no socket, no free ID, the send refused), counted as a drop of this
        server; only a refused send counts as a failure for the lazy health check (the
        backend may be the cause: a port unreachable), the others are triodist's own."""
        life = self.life
        life.queries += 1
        socks = life.socks
        if not socks:
            life.send_errors += 1
            life.drops += 1
            return NotSent.SEND_ERROR
        index = self._choose_socket()
        qid = self._allocate_id(index)
        if qid is None:
            life.overload_drops += 1
            life.drops += 1
            return NotSent.OVERLOADED
        key = index << _ID_BITS | qid
        packet = bytearray(query)
        _U16.pack_into(packet, 0, qid)
        try:
            socks[index].send(packet)
        except OSError as exc:  # BlockingIOError included: as dnsdist, a send error
            if exc.errno != errno.ECONNREFUSED:
                log.debug("Error sending to %s: %s", self.name, exc)
            self._release_id(key)
            life.send_errors += 1
            self.count_no_reply()
            return NotSent.SEND_ERROR
        now = trio.current_time()
        deadline = now + self.udp_timeout
        pending = PendingQuery(key, question_key(packet, question_end), now, deadline)
        pending.allow_empty = self.allow_empty_response
        life.pending[key] = pending
        heappush(life.deadlines, (deadline, key))
        life.outstanding += 1
        scope = life.expiry_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline  # due before what the expiry loop sleeps until
        return pending

    def last_udp_deadline(self) -> float | None:
        """When the last UDP query sent to this server times out, if any still waits."""
        return max((p.deadline for p in self.life.pending.values()), default=None)

    async def wait_udp(self, pending: PendingQuery) -> bytes | None:
        """Wait for the reply to a query ``send_udp`` sent; None after its deadline.

        No Event and no cancel scope of its own: the receive loop wakes the task with the
        reply, the expiry loop with None at the deadline, and a cancellation (shutdown)
        takes the query out of the table."""
        if not pending.done:
            pending.task = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                pending.task = None
                self._end_wait(pending, None)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        response = pending.response
        if response is None:
            self.count_no_reply()
            return None
        self.record_latency(trio.current_time() - pending.sent)
        life = self.life
        life.responses += 1
        if life.lazy_results is not None:
            self.record_outcome(self.servfail_is_failure and (response[3] & 0x0F) == 2)
        return response
