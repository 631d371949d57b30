"""What a backend is while it runs: its queries in flight, sockets, counters and health
state (``BackendLife``), and ``BackendBase``, which shows that state as attributes.

``Server`` (server.py) derives from its two sides, ``UDPSide`` (udp.py) and ``TCPSide``
(tcp.py), which derive from ``BackendBase``: each reads the configuration from the
object it is called on, and what runs (sockets, counters, queries in flight) from its
``life``, which a reload that keeps the backend hands on to the new configuration's
``Server``. Imports nothing above triodist.backends (its own healthstate, and below).
"""

from __future__ import annotations

import operator
import random
import socket
from array import array
from collections import deque
from typing import Any

import trio

from triodist.backends.healthstate import Availability, LazyStatus
from triodist.backends.tcpconn import ConnectionPool
from triodist.util.ratelimit import TokenBucket
from triodist.wire.address import ComboAddress


class PendingQuery:
    """One query sent over UDP, until its reply, its deadline or a cancellation ends it.

    It is sent before its task exists (``UDPSide.send_udp``, from the receive loop), so
    the reply may come before the task waits: then ``wait_udp`` returns at once.
    Otherwise the task sleeps in ``wait_task_rescheduled`` and ``UDPSide._end_wait``
    wakes it.
    """

    __slots__ = ("allow_empty", "deadline", "done", "key", "question", "response", "sent", "task")

    def __init__(self, key: int, question: bytes, sent: float, deadline: float) -> None:
        #: The socket's index and the query ID (``index << 16 | qid``).
        self.key = key
        self.question = question
        self.sent = sent
        self.deadline = deadline
        #: The task waiting for it, once there is one.
        self.task: trio.lowlevel.Task | None = None
        self.response: bytes | None = None
        self.done = False
        #: A NOERROR or NXDOMAIN reply with no question answers it (``setAllowEmptyResponse``
        #: as it was when the query was sent).
        self.allow_empty = False


class BackendLife:
    """What a backend is while it runs, apart from its configuration: its sockets and
    queries in flight, its counters and its health state.

    One object per backend for as long as it runs: a reload that keeps the backend gives
    it to the new configuration's ``Server`` (``Server.adopt``). It is a plain record;
    ``Server`` and its two sides do the work (their hot paths read it through a local
    name, their other code and Lua through the attributes of the same names that
    ``BackendBase`` gives them)."""

    __slots__ = (
        "check_failures",
        "check_function_error",
        "check_successes",
        "deadlines",
        "drops",
        "expiry_scope",
        "free_ids",
        "health_check_failures",
        "health_check_latency_us",
        "healthy",
        "in_flight",
        "latency_us",
        "lazy_next_check",
        "lazy_results",
        "lazy_status",
        "next_id",
        "next_socket",
        "outstanding",
        "overload_drops",
        "pending",
        "qps_bucket",
        "queries",
        "responses",
        "send_errors",
        "socks",
        "tcp_connections",
        "tcp_overload_drops",
        "tcp_pool",
    )

    def __init__(self) -> None:
        #: What the health checks (health.py) concluded, and their state: consecutive
        #: results, and the lazy mode's state and window of query outcomes (None unless
        #: lazy: the query path tests it to know whether to record).
        self.healthy = True
        self.check_failures = 0
        self.check_successes = 0
        self.health_check_failures = 0
        self.health_check_latency_us = 0.0
        self.check_function_error: str | None = None
        self.lazy_status = LazyStatus.HEALTHY
        self.lazy_next_check = 0.0
        self.lazy_results: deque[bool] | None = None
        # Statistics.
        self.queries = 0
        self.responses = 0
        self.drops = 0
        self.outstanding = 0
        self.latency_us = 0.0
        #: Queries not sent: the send failed, or every query ID was taken (``NotSent``).
        self.send_errors = 0
        self.overload_drops = 0
        #: TCP connections open to it, and queries dropped because its TCP bound was reached.
        self.tcp_connections = 0
        self.tcp_overload_drops = 0
        #: The UDP sockets (empty until ``open``, and after ``close``); the next one in
        #: turn; queries in flight on each; and, for a socket where random IDs became hard
        #: to find, its free IDs (see ``UDPSide._random_id``).
        self.socks: list[socket.socket] = []
        self.next_socket = 0
        self.in_flight: list[int] = []
        self.free_ids: list[array[int] | None] = []
        #: Queries in flight, by ``socket index << 16 | query ID``.
        self.pending: dict[int, PendingQuery] = {}
        #: A heap of (deadline, key) of the same queries, for ``UDPSide._expire_loop``:
        #: each query has its own deadline (a reload may change ``udpTimeout`` between two
        #: queries), so they are not in the order sent. Plain tuples, which the garbage
        #: collector does not track; an answered query's entry leaves at its deadline.
        #: And the cancel scope that loop sleeps in, whose deadline is the earliest.
        self.deadlines: list[tuple[float, int]] = []
        self.expiry_scope: trio.CancelScope | None = None
        #: The TCP connections to this backend (tcpconn.py), counted in ``tcp_connections``.
        self.tcp_pool = ConnectionPool(self)
        self.next_id = random.getrandbits(16)
        self.qps_bucket: TokenBucket | None = None


def in_life(name: str) -> Any:
    """An attribute kept in the object's ``BackendLife`` (read at C speed: policies read
    ``outstanding`` of every server for every query)."""

    def set_value(backend: BackendBase, value: Any) -> None:
        setattr(backend.life, name, value)

    return property(operator.attrgetter(f"life.{name}"), set_value)


class BackendBase:
    """A backend seen through its ``life``: what ``Server`` and its two sides share.

    The configuration is declared here and set by ``Server.__init__``; the running state
    is the life's, under the names the rest of triodist, Lua and tests use. The
    accounting of a query's outcome is here too, since both sides do it."""

    life: BackendLife

    # What the configuration says (``Server.__init__`` sets it).
    name: str
    address: ComboAddress
    mode: Availability
    tcp_only: bool
    udp_timeout: float
    tcp_timeout: float
    udp_sockets: int
    randomize_ids: bool
    randomize_sockets: bool
    allow_empty_response: bool
    max_outstanding: int
    max_tcp_connections: int
    tcp_connections_cap: int
    #: Whether a SERVFAIL reply counts as a failed query for the lazy health check
    #: (``lazyHealthCheckMode``).
    servfail_is_failure: bool

    # Its life (``BackendLife``), by the names the rest of triodist and tests use.
    healthy: bool = in_life("healthy")
    check_failures: int = in_life("check_failures")
    check_successes: int = in_life("check_successes")
    health_check_failures: int = in_life("health_check_failures")
    health_check_latency_us: float = in_life("health_check_latency_us")
    check_function_error: str | None = in_life("check_function_error")
    lazy_status: LazyStatus = in_life("lazy_status")
    lazy_next_check: float = in_life("lazy_next_check")
    lazy_results: deque[bool] | None = in_life("lazy_results")
    queries: int = in_life("queries")
    responses: int = in_life("responses")
    drops: int = in_life("drops")
    outstanding: int = in_life("outstanding")
    latency_us: float = in_life("latency_us")
    send_errors: int = in_life("send_errors")
    overload_drops: int = in_life("overload_drops")
    tcp_connections: int = in_life("tcp_connections")
    tcp_overload_drops: int = in_life("tcp_overload_drops")

    def getNameWithAddr(self) -> str:
        """The name and the address, as logs show them (``Server`` says how)."""
        raise NotImplementedError

    # --- a query's outcome ---------------------------------------------------------------

    def record_outcome(self, failed: bool) -> None:
        """One real query's outcome, for the lazy health check (only while ``auto``)."""
        results = self.life.lazy_results
        if results is not None and self.mode == Availability.AUTO:
            results.append(failed)

    def record_latency(self, seconds: float) -> None:
        # dnsdist keeps an exponentially weighted average over recent answers.
        life = self.life
        life.latency_us = (
            0.9 * life.latency_us + 0.1 * seconds * 1e6 if life.responses else (seconds * 1e6)
        )

    def count_no_reply(self) -> None:
        """A query that got no reply (or was not sent): a drop, and for the lazy health
        check a failure."""
        life = self.life
        life.drops += 1
        if life.lazy_results is not None:
            self.record_outcome(True)

    # --- what it holds open --------------------------------------------------------------

    def close(self) -> None:
        """Close its UDP sockets and its TCP connections (its reply loops ended, or the
        server shuts down): a query waiting on one gets no reply."""
        life = self.life
        for sock in life.socks:
            sock.close()
        life.socks = []
        life.tcp_pool.close_all()
