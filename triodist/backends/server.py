"""Downstream servers: their settings, their state, and how a query reaches them.

A ``Server`` is created when the configuration runs (``newServer``); its sockets
are opened later, when the server starts (``open``).  Over UDP each server has
a pool of connected sockets (``newServer``'s ``sockets``, 1 by default), each with
its own source port and its own receive loop, and one table of outstanding
queries keyed by (socket, query ID triodist chose).  A query goes out on the next
socket of the pool in turn, or on one drawn at random with
``setRandomizedOutgoingSockets(true)``; its ID follows the last one sent, or is
drawn at random among those not in flight on that socket with
``setRandomizedIdsOverUDP(true)``.  A query is sent at once (``send_udp``) and its
task then waits (``wait_udp``): the socket's receive loop matches each reply by ID
and question and wakes the task; the expiry loop ends the wait at the query's own
deadline (the ``udpTimeout`` in force when it was sent).
Over TCP a query takes an idle connection kept from an earlier query, or opens one;
queries in flight at the same time use separate connections.

Health: ``mode`` is the administrative state (``auto``, or forced ``up`` or
``down``) and ``healthy`` what the health checks (``health.py``) concluded;
``is_up`` combines them.  A server in lazy mode also records the outcome of
each real query here, where the reply or the timeout is known.

Configuration and life: a ``Server`` object holds what the configuration says
(``newServer``'s options, and what Lua methods such as ``setDown`` change) and, in
``life`` (a ``BackendLife``), what the running backend is: its sockets, queries in
flight, counters and health. A reload that keeps a server gives the new configuration's
object the running one's ``life`` (``adopt``): from then on both objects are the same
backend, each with its own configuration, so that work started under the old one (a
query waiting for its reply, a reply loop) ends as it began, and everything new goes
through the new one.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import operator
import random
import socket
import struct
from array import array
from collections import deque
from collections.abc import Iterable
from heapq import heappop, heappush
from typing import Any

import trio
from outcome import Value

from triodist.backends import randomness
from triodist.backends.healthstate import (
    Availability,
    CheckMode,
    HealthCheckConfig,
    LazyMode,
    LazyStatus,
    new_lazy_results,
)
from triodist.util.ratelimit import TokenBucket
from triodist.wire.message import ComboAddress

log = logging.getLogger("triodist.backends")

_U16 = struct.Struct("!H")
MAX_DATAGRAM = 65535
#: Idle TCP connections kept per backend for the next queries.
MAX_IDLE_TCP = 16

#: TCP connections to one backend at once, unless ``newServer`` says otherwise
#: (``maxConcurrentTCPConnections``; dnsdist has no bound by default, triodist has this one).
DEFAULT_MAX_TCP_CONNECTIONS = 1000

#: UDP sockets towards one backend at most (``newServer``'s ``sockets``; dnsdist has no
#: bound): each is a descriptor and a receive task.
MAX_UDP_SOCKETS = 1024


#: Random draws of an ID before a socket gets its list of free IDs (see ``_random_id``).
RANDOM_ID_DRAWS = 8
#: A key of the outstanding table: the socket's index above the 16 bits of the query ID.
_ID_BITS = 16


class TCPBackendBusy(OSError):
    """The backend's TCP connections are at their bound: the query is dropped."""


class TCPSendFailed(Exception):
    """A TCP query could not go out: the connection could not be made (refused, EMFILE,
    ENFILE, EADDRNOTAVAIL...) or the write on a new connection failed. Not an ``OSError``,
    so that the handler counting replies that never came cannot take it for one."""


class NotSent(enum.Enum):
    """Why ``Server.send_udp`` did not send a query: a local failure, not the backend's
    silence, so not a ``downstream-timeouts``. The value is the counter it is counted in."""

    #: No socket (the server is not open), or the kernel refused the send (EAGAIN and
    #: ENOBUFS when the socket's buffer is full, ECONNREFUSED after a port unreachable...):
    #: dnsdist's counter for the same.
    SEND_ERROR = "downstream-send-errors"
    #: Every query ID the server may have in flight is taken (``setMaxUDPOutstanding``):
    #: dnsdist reuses the oldest ID then, losing that query's reply; triodist drops the new one.
    OVERLOADED = "downstream-overload-drops"


def question_key(packet: bytes | bytearray, question_end: int) -> bytes:
    """The question of ``packet`` (ending at ``question_end``) as replies are matched
    against it: the name in lower case, the type and class as they are."""
    name_end = max(12, question_end - 4)
    return bytes(packet[12:name_end]).lower() + bytes(packet[name_end:question_end])


def reply_matches(reply: bytes, question: bytes | bytearray) -> bool:
    """Whether a backend's reply answers our question (``question_key``): the same name in
    any case (the backend may answer with 0x20 case) and exactly the same type and class,
    or, as dnsdist accepts, no question at all in an error reply (FORMERR, SERVFAIL,
    NOTIMP, REFUSED...; not NOERROR or NXDOMAIN).
    A message without QR (a query, say one echoed back) is never a reply, as in dnsdist."""
    if len(reply) < 12 or not reply[2] & 0x80:
        return False
    # Only the name is lowered: lowering the type and class too would make type 97 ('a')
    # the same as type 65 ('A'). Length octets (under 64) are not letters.
    name_end = 12 + len(question) - 4
    if name_end <= 12:  # no whole question (not sent by triodist): bytes as they are
        if reply[12 : 12 + len(question)] == question:
            return True
    elif (
        reply[12:name_end].lower() == question[:-4]
        and reply[name_end : name_end + 4] == question[-4:]
    ):
        return True
    return reply[4:6] == b"\x00\x00" and (reply[3] & 0x0F) not in (0, 3)


class PendingQuery:
    """One query sent over UDP, until its reply, its deadline or a cancellation ends it.

    It is sent before its task exists (``Server.send_udp``, from the receive loop), so
    the reply may come before the task waits: then ``wait_udp`` returns at once.
    Otherwise the task sleeps in ``wait_task_rescheduled`` and ``Server._settle`` wakes it.
    """

    __slots__ = ("deadline", "done", "key", "question", "response", "sent", "task")

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


class BackendLife:
    """What a backend is while it runs, apart from its configuration: its sockets and
    queries in flight, its counters and its health state.

    One object per backend for as long as it runs: a reload that keeps the backend gives
    it to the new configuration's ``Server`` (``Server.adopt``). It is a plain record;
    ``Server`` does the work (its hot paths read it through a local name, its other code
    and Lua through ``Server``'s attributes of the same names)."""

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
        "idle_tcp",
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
        #: to find, its free IDs (see ``Server._random_id``).
        self.socks: list[socket.socket] = []
        self.next_socket = 0
        self.in_flight: list[int] = []
        self.free_ids: list[array[int] | None] = []
        #: Queries in flight, by ``socket index << 16 | query ID``.
        self.pending: dict[int, PendingQuery] = {}
        #: A heap of (deadline, key) of the same queries, for ``Server._expire_loop``:
        #: each query has its own deadline (a reload may change ``udpTimeout`` between two
        #: queries), so they are not in the order sent. Plain tuples, which the garbage
        #: collector does not track; an answered query's entry leaves at its deadline.
        #: And the cancel scope that loop sleeps in, whose deadline is the earliest.
        self.deadlines: list[tuple[float, int]] = []
        self.expiry_scope: trio.CancelScope | None = None
        #: Idle TCP connections to this backend, with what was read ahead on them.
        self.idle_tcp: list[tuple[trio.SocketStream, StreamReader]] = []
        self.next_id = random.getrandbits(16)
        self.qps_bucket: TokenBucket | None = None


def _in_life(name: str) -> Any:
    """A ``Server`` attribute kept in its ``BackendLife`` (read at C speed: policies read
    ``outstanding`` of every server for every query)."""

    def set_value(server: Server, value: Any) -> None:
        setattr(server.life, name, value)

    return property(operator.attrgetter(f"life.{name}"), set_value)


class Server:
    """One backend (dnsdist's ``newServer``), with the methods configurations call on it."""

    #: Bumped whenever a server is created, added, removed or changes pools, so that a
    #: pool's list of members is computed again only then (``Pool.servers``).
    membership_generation = 0

    # Its life (``BackendLife``), by the names the rest of triodist and tests use.
    healthy: bool = _in_life("healthy")
    check_failures: int = _in_life("check_failures")
    check_successes: int = _in_life("check_successes")
    health_check_failures: int = _in_life("health_check_failures")
    health_check_latency_us: float = _in_life("health_check_latency_us")
    check_function_error: str | None = _in_life("check_function_error")
    lazy_status: LazyStatus = _in_life("lazy_status")
    lazy_next_check: float = _in_life("lazy_next_check")
    lazy_results: deque[bool] | None = _in_life("lazy_results")
    queries: int = _in_life("queries")
    responses: int = _in_life("responses")
    drops: int = _in_life("drops")
    outstanding: int = _in_life("outstanding")
    latency_us: float = _in_life("latency_us")
    send_errors: int = _in_life("send_errors")
    overload_drops: int = _in_life("overload_drops")
    tcp_connections: int = _in_life("tcp_connections")
    tcp_overload_drops: int = _in_life("tcp_overload_drops")
    _socks: list[socket.socket] = _in_life("socks")
    _free_ids: list[array[int] | None] = _in_life("free_ids")

    def __init__(
        self,
        address: str,
        *,
        name: str = "",
        pools: Iterable[str] = ("",),
        weight: int = 1,
        order: int = 1,
        udp_timeout: float = 2.0,
        tcp_timeout: float = 30.0,
        tcp_only: bool = False,
        qps: float = 0,
        max_outstanding: int = 65535,
        max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS,
        udp_sockets: int = 1,
        randomize_ids: bool = False,
        randomize_sockets: bool = False,
        mode: str = Availability.AUTO,
        health_check_mode: str = CheckMode.ACTIVE,
        health: HealthCheckConfig | None = None,
    ) -> None:
        self.life = BackendLife()
        self.address = ComboAddress.parse(address, 53)
        # dnsdist shows the address alone for a server without a name.
        self._named = bool(name)
        self.name = name or self.address.toStringWithPort()
        #: dnsdist's server ``id`` (a UUID there); empty unless ``newServer{id=...}``.
        self.id = ""
        self.pools = list(pools)
        Server.membership_generation += 1
        self.weight = max(1, int(weight))
        self.order = int(order)
        self.udp_timeout = float(udp_timeout)
        self.tcp_timeout = float(tcp_timeout)
        self.tcp_only = bool(tcp_only)
        self.qps = float(qps)
        self.max_outstanding = max_outstanding
        #: UDP sockets towards it (``sockets``); fixed for the server's life once open: a
        #: reload that changes it keeps the sockets the server has (see ``adopt``).
        self.udp_sockets = max(1, min(int(udp_sockets), MAX_UDP_SOCKETS))
        #: ``setRandomizedIdsOverUDP`` and ``setRandomizedOutgoingSockets``.
        self.randomize_ids = bool(randomize_ids)
        self.randomize_sockets = bool(randomize_sockets)
        #: TCP connections to it at once, idle or busy (dnsdist's newServer option
        #: ``maxConcurrentTCPConnections``; 0: no bound): a query that would need one more
        #: is dropped. ``tcp_connections_cap``, when set (``fit_to_descriptor_limit``),
        #: lowers it to what the process's open-file limit leaves.
        self.max_tcp_connections = max_tcp_connections
        self.tcp_connections_cap = 0
        # Administrative state as dnsdist has it: "auto" follows health checks,
        # "up" and "down" are forced.  ``health_check_mode`` ("active" or "lazy")
        # is kept while forced, for ``setAuto`` to restore.
        self.mode = Availability(mode)
        self.health_check_mode = CheckMode(health_check_mode)
        self.health = health or HealthCheckConfig()
        self._servfail_is_failure = self.health.lazy_mode == LazyMode.TIMEOUT_OR_SERVFAIL
        if self.health_check_mode == CheckMode.LAZY:
            self.lazy_results = new_lazy_results(self.health)

    def same_backend(self, other: Server) -> bool:
        """Whether ``other`` (from a reloaded configuration) is this server again: the same
        address and the same name (or both unnamed)."""
        return self.address == other.address and self.name == other.name

    def adopt(self, newer: Server, udp: list[socket.socket] | None = None) -> None:
        """A reload keeps this running server as ``newer`` (``same_backend``): ``newer``
        takes this server's life, with its own configuration, so that the new
        configuration's Lua variables holding it act on the running backend.

        This object keeps its configuration for what was started under it: a query
        waiting for its reply, the reply loops (which use only the life). Its health
        checks are started again for ``newer`` (``BackendTasks.renamed``). ``udp``: the
        UDP sockets the reload opened for a server that had none (``tcpOnly`` turned
        off), which become its own; its reply loops start with them."""
        life = self.life
        if newer.health_check_mode != self.health_check_mode or newer.health != self.health:
            # The new settings start the lazy window and state afresh.
            life.lazy_results = newer.life.lazy_results
            life.lazy_status = newer.life.lazy_status
        if newer.qps != self.qps:
            life.qps_bucket = None
        if newer.udp_sockets != self.udp_sockets and life.socks:
            # Its sockets go on (queries are in flight on them, and a socket that cannot
            # be opened must not fail the reload half-way): the new count waits for the
            # server to start again.
            log.warning(
                "Server %s keeps its %d UDP socket(s): sockets=%d applies when it is "
                "started again (a restart, or under another name)",
                self.getNameWithAddr(),
                len(life.socks),
                newer.udp_sockets,
            )
            newer.udp_sockets = self.udp_sockets
        newer.tcp_connections_cap = self.tcp_connections_cap
        newer.life = life
        if udp:
            newer._use_sockets(udp)
        Server.membership_generation += 1

    # --- what configurations call -------------------------------------------------------

    def getName(self) -> str:
        return self.name

    def getNameWithAddr(self) -> str:
        address = self.address.toStringWithPort()
        return f"{self.name} ({address})" if self._named else address

    def isUp(self) -> bool:
        return self.is_up

    def canAcceptQueries(self) -> bool:
        """Up, and with room for another query in flight (dnsdist's test for Lua policies)."""
        return self.is_up and self.outstanding < self.max_outstanding

    def setUp(self) -> None:
        self.mode = Availability.UP

    def setDown(self) -> None:
        self.mode = Availability.DOWN

    def setAuto(self, status: Any = None) -> None:
        """Back to following the health checks, in the check mode it had (active or lazy)."""
        self.mode = Availability.AUTO
        if status is not None:
            self.healthy = bool(status)

    def setActiveAuto(self, status: Any = None) -> None:
        self.health_check_mode = CheckMode.ACTIVE
        self.lazy_results = None
        self.setAuto(status)

    def setLazyAuto(self, status: Any = None) -> None:
        if self.health_check_mode != CheckMode.LAZY:
            self.health_check_mode = CheckMode.LAZY
            self.lazy_status = LazyStatus.HEALTHY
            self.lazy_results = new_lazy_results(self.health)
        self.setAuto(status)

    def getHealthCheckMode(self) -> CheckMode:
        return self.health_check_mode

    def setHealthCheckParams(self, params: Any = None) -> None:
        """Change checkTimeout (ms), checkInterval (s), maxCheckFailures and rise at run
        time; as in dnsdist, unknown keys and values that are not positive are ignored."""
        items = params.items() if params is not None and hasattr(params, "items") else ()
        for key, value in items:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if number <= 0:
                continue
            if key == "checkTimeout":
                self.health.check_timeout = number / 1000
            elif key == "checkInterval":
                self.health.check_interval = number
            elif key == "maxCheckFailures":
                self.health.max_check_failures = int(number)
            elif key == "rise":
                self.health.rise = int(number)

    @property
    def upStatus(self) -> bool:
        """dnsdist's ``server.upStatus``: the last state the health checks gave."""
        return self.healthy

    @upStatus.setter
    def upStatus(self, value: Any) -> None:
        self.healthy = bool(value)

    def getOutstanding(self) -> int:
        return self.outstanding

    def getLatency(self) -> float:
        """Average latency of recent answers in microseconds (dnsdist's unit)."""
        return self.latency_us

    def getDrops(self) -> int:
        return self.drops

    def getQueries(self) -> int:
        return self.queries

    def addPool(self, pool: str) -> None:
        if pool not in self.pools:
            self.pools.append(str(pool))
            Server.membership_generation += 1

    def rmPool(self, pool: str) -> None:
        if pool in self.pools:
            self.pools.remove(str(pool))
            Server.membership_generation += 1

    def __str__(self) -> str:
        return self.getNameWithAddr()

    # --- state ---------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        if self.mode == Availability.UP:
            return True
        if self.mode == Availability.DOWN:
            return False
        return self.healthy

    @property
    def status(self) -> str:
        if self.mode == Availability.AUTO:
            return "up" if self.healthy else "down"
        return self.mode.upper()

    def qps_bucket_take(self) -> bool:
        """Whether one more query fits in this server's ``qps`` limit."""
        life = self.life
        if life.qps_bucket is None:
            life.qps_bucket = TokenBucket(self.qps)
        return life.qps_bucket.take()

    def _record_outcome(self, failed: bool) -> None:
        """One real query's outcome, for the lazy health check (only while ``auto``)."""
        results = self.life.lazy_results
        if results is not None and self.mode == Availability.AUTO:
            results.append(failed)

    def _record_latency(self, seconds: float) -> None:
        # dnsdist keeps an exponentially weighted average over recent answers.
        life = self.life
        life.latency_us = (
            0.9 * life.latency_us + 0.1 * seconds * 1e6 if life.responses else (seconds * 1e6)
        )

    # --- UDP -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the UDP sockets towards the backend (at server start, not at config time):
        ``udp_sockets`` of them, each connected, so each has its own source port and the
        kernel delivers to it only what comes from the backend's address and port.
        An ``OSError`` (its text names the server) leaves none open."""
        if self.life.socks or self.tcp_only:
            return
        self._use_sockets(self.new_udp_sockets())

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

    def close(self) -> None:
        life = self.life
        for sock in life.socks:
            sock.close()
        life.socks = []
        for stream, _ in life.idle_tcp:
            self._close_tcp(stream)
        life.idle_tcp.clear()

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
                self._settle(pending, None)
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
                self._settle(pending, None)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                life.expiry_scope = scope
                await trio.sleep_forever()
            life.expiry_scope = None

    def _settle(self, pending: PendingQuery, response: bytes | None) -> None:
        """The end of a query's wait: its reply, or None (deadline, backend gone)."""
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
        if not reply_matches(data, pending.question):
            log.debug(
                "Reply from %s with ID %d does not match the question", self.name, key & 0xFFFF
            )
            return
        self._settle(pending, data)

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
            self._no_reply()
            return NotSent.SEND_ERROR
        now = trio.current_time()
        deadline = now + self.udp_timeout
        pending = PendingQuery(key, question_key(packet, question_end), now, deadline)
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
                self._settle(pending, None)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        response = pending.response
        if response is None:
            self._no_reply()
            return None
        self._record_latency(trio.current_time() - pending.sent)
        life = self.life
        life.responses += 1
        if life.lazy_results is not None:
            self._record_outcome(self._servfail_is_failure and (response[3] & 0x0F) == 2)
        return response

    def _no_reply(self) -> None:
        life = self.life
        life.drops += 1
        if life.lazy_results is not None:
            self._record_outcome(True)

    # --- TCP -----------------------------------------------------------------------------

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
                self._record_latency(trio.current_time() - start)
                if self.lazy_results is not None:
                    self._record_outcome(self._servfail_is_failure and (reply[3] & 0x0F) == 2)
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
            self._no_reply()
            return NotSent.SEND_ERROR
        except (OSError, trio.BrokenResourceError, EOFError) as exc:
            log.debug("TCP query to %s failed: %s", self.name, exc)
        finally:
            self.outstanding -= 1
        self._no_reply()
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
                self._close_tcp(stream)
                if fresh:
                    raise TCPSendFailed(str(exc)) from exc
                continue  # a stale idle connection: try again on a new one
            except BaseException:  # cancelled (the deadline): the connection is in between
                self._close_tcp(stream)
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
                self._close_tcp(stream)
                if fresh:
                    raise
                continue  # a stale idle connection: try again
            except BaseException:  # cancelled (the deadline): the connection is in between
                self._close_tcp(stream)
                raise
            if len(idle) < MAX_IDLE_TCP and not reader.has_buffered:
                idle.append((stream, reader))
            else:
                self._close_tcp(stream)
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

    def _close_tcp(self, stream: trio.SocketStream) -> None:
        stream.socket.close()
        self.tcp_connections -= 1


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
