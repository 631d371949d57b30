"""The UDP frontend: datagrams in, answers out, a task for each query that waits.

The receive loop waits until the socket is readable, then drains it with
non-blocking ``recvfrom`` until it would block: one wake-up serves a burst of
queries.  Each query that passes the ACL is processed at once, in the loop; one
answered without waiting (a cache hit, a spoof, a refusal) is sent from there,
and one that must wait (for a backend, a suspension, a delay) gets its own task
in the query nursery (``_query_task``).  The number of queries waiting is bounded: over
the bound, a query that can be answered at once still is, and one that would wait is
dropped and counted (``frontend-overload-drops``), never queued.

Imports nothing above triodist.frontends (the query path and below).
"""

from __future__ import annotations

import logging
import socket
from collections import Counter

import trio

from triodist.frontends import pktinfo
from triodist.frontends.common import allowed, answer_error, answer_no_question
from triodist.query.outcome import Outcome, Wait
from triodist.query.pipeline import Pipeline
from triodist.query.settings import Settings
from triodist.rules.matchers import NetmaskGroup
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.build import truncate_answer, udp_answer_limit
from triodist.wire.message import DNSQuestion
from triodist.wire.question import MalformedQuery

log = logging.getLogger("triodist.frontends")

#: The largest query datagram taken, trailing data included: dnsdist 1.7.3's (4096 bytes
#: and DNSCrypt's 272 of padding and MAC). One larger is read one byte past this, so it
#: shows as larger and is dropped, as dnsdist drops it, rather than cut and forwarded.
MAX_QUERY = 4368
# How many datagrams one wake-up may read before giving other tasks a turn.
BATCH = 64


class UDPFrontend:
    def __init__(
        self,
        sock: socket.socket,
        pipeline: Pipeline,
        acl: NetmaskGroup,
        stats: Counter[str],
        settings: Settings,
    ) -> None:
        self.sock = sock
        self.pipeline = pipeline
        #: Unexpected errors while answering, written once a minute per distinct error.
        self.errors = RateLimitedLog(log)
        self.acl = acl
        self.stats = stats
        self.settings = settings
        self.in_flight = 0
        sockname = sock.getsockname()
        self.local: tuple[str, int] = (sockname[0], sockname[1])
        #: Bound to every address (0.0.0.0, ::): each query's local address is the one it
        #: was sent to, and its answer goes out from there (pktinfo.py).
        self.destinations = pktinfo.enable(sock)

    async def serve(self, query_nursery: trio.Nursery) -> None:
        """Receive until cancelled; queries run in ``query_nursery``."""
        if self.destinations:
            await self._serve_any_address(query_nursery)
            return
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()  # one clock reading for the batch
            for _ in range(BATCH):
                try:
                    data, addr = sock.recvfrom(MAX_QUERY + 1)
                except BlockingIOError:
                    break
                except OSError as exc:
                    log.debug("recvfrom failed: %s", exc)
                    continue
                self._received(data, addr, query_nursery, now)
            else:
                await trio.lowlevel.checkpoint()

    async def _serve_any_address(self, query_nursery: trio.Nursery) -> None:
        """``serve`` for a socket bound to every address: ``recvmsg``, which also says
        where each datagram was sent."""
        sock = self.sock
        port = self.local[1]
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            for _ in range(BATCH):
                try:
                    data, addr, dest = pktinfo.receive(sock, MAX_QUERY + 1)
                except BlockingIOError:
                    break
                except OSError as exc:
                    log.debug("recvmsg failed: %s", exc)
                    continue
                local = self.local if dest is None else (dest, port)
                self._received(data, addr, query_nursery, now, local)
            else:
                await trio.lowlevel.checkpoint()

    def _sendto(
        self, data: bytes | bytearray, addr: tuple[str, int], local: tuple[str, int]
    ) -> None:
        if self.destinations and local is not self.local:
            pktinfo.send(self.sock, data, addr, local[0])
        else:
            self.sock.sendto(data, addr)

    def _received(
        self,
        data: bytes,
        addr: tuple[str, int],
        query_nursery: trio.Nursery,
        now: float,
        local: tuple[str, int] | None = None,
    ) -> None:
        """One datagram, in the receive loop: through the pipeline as far as it goes
        without waiting, then sent from here (the inline fast path), dropped, or given a
        task of its own if it must wait."""
        stats = self.stats
        # Every datagram is counted once as received and, in the end, once as answered
        # or dropped (bench/reliability.md, "Every query accounted for").
        stats["received"] += 1
        # An IPv4 address is (host, port) already; an IPv6 one has two more fields.
        remote = addr if len(addr) == 2 else (addr[0], addr[1])
        if not allowed(self.acl, remote[0]):
            stats["acl-drops"] += 1
            stats["dropped"] += 1
            return
        if len(data) < 12 or data[2] & 0x80 or len(data) > MAX_QUERY:
            # Too short for a header, a response sent to us, or too large: dnsdist
            # drops all three.
            stats["non-compliant-queries"] += 1
            stats["dropped"] += 1
            return
        empty = answer_no_question(data, stats, self.settings.drop_empty_queries)
        if empty is not None:
            if not empty:  # setDropEmptyQueries(true)
                stats["dropped"] += 1
                return
            try:
                # No larger than the query: no size check.
                self._sendto(empty, addr, local or self.local)
            except OSError as exc:
                stats["udp-send-errors"] += 1
                stats["dropped"] += 1
                log.debug("sendto %s failed: %s", addr, exc)
            else:
                stats["answered"] += 1
            return
        try:
            dq = DNSQuestion(data, remote, local or self.local, tcp=False, now=now)
        except MalformedQuery as exc:
            log.debug("Dropping a malformed query from %s: %s", remote[0], exc)
            stats["non-compliant-queries"] += 1
            stats["dropped"] += 1
            return
        if self.in_flight >= self.settings.max_udp_in_flight:
            # Answered if it can be without waiting (a cache hit, a spoof); dropped and
            # counted by the pipeline if it would wait.
            dq.may_wait = False
        try:
            outcome = self.pipeline.process(dq)
        except Exception as exc:  # the per-query boundary: SERVFAIL, the server goes on
            outcome = answer_error(dq, exc, stats, self.errors)
        if isinstance(outcome, Wait):
            self.in_flight += 1
            # A name given: Trio would otherwise make one (a new string) for every task.
            query_nursery.start_soon(self._query_task, dq, outcome, addr, name="udp query")
        elif outcome is not None:
            self._send(outcome, addr, dq)
        else:
            stats["dropped"] += 1

    async def _query_task(self, dq: DNSQuestion, outcome: Wait, addr: tuple[str, int]) -> None:
        """A query that waits (for a backend, a suspension, a delay), in its own task."""
        dq.may_wait = True  # counted in flight now: later waits are its own
        accounted = False  # counted as answered or dropped
        try:
            # ``answer_after_waits``, written out: one coroutine frame less per waiting
            # query.
            reply: Outcome = outcome
            while isinstance(reply, Wait):
                reply = reply.then(await reply.wait())
            accounted = True
            if reply is not None:
                self._send(reply, addr, dq)
            else:
                self.stats["dropped"] += 1
        except Exception as exc:  # the per-query boundary: SERVFAIL, the server goes on
            if not accounted:
                accounted = True
                self._send(answer_error(dq, exc, self.stats, self.errors), addr, dq)
        finally:
            self.in_flight -= 1
            if not accounted:  # an error, or cancelled (the end of the grace period)
                self.stats["dropped"] += 1

    def _send(self, reply: bytes | bytearray, addr: tuple[str, int], dq: DNSQuestion) -> None:
        """Send an answer; it is counted answered or dropped, whatever happens (the end of
        the per-query boundary: nothing raised here leaves the receive loop)."""
        try:
            # Every UDP answer passes here, forwarded, cached, spoofed or self-generated:
            # none is ever larger than the client allows (an amplifier otherwise). 512
            # bytes fit every client, so only a larger answer costs a look at its EDNS.
            if len(reply) > 512:
                limit = udp_answer_limit(dq, self.settings.max_udp_answer_size)
                if len(reply) > limit:
                    reply = truncate_answer(reply, limit)
                    self.stats["truncated-udp-answers"] += 1
            self._sendto(reply, addr, dq.local)
        except OSError as exc:  # BlockingIOError included: UDP does not queue answers
            self.stats["udp-send-errors"] += 1
            self.stats["dropped"] += 1
            log.debug("sendto %s failed: %s", addr, exc)
        except Exception as exc:
            self.stats["unexpected-errors"] += 1
            self.stats["dropped"] += 1
            self.errors.unexpected("send", f"while sending the answer to {dq.describe()}", exc)
        else:
            self.stats["answered"] += 1
