"""Network endpoints: a datagram socket connected to a component outside
(``newNetworkEndpoint(path)``), through which a configuration hands it suspended queries.

``send`` never blocks.  A message the component's receive queue has no room for now (Linux
queues ``net.unix.max_dgram_qlen`` datagrams, 10 by default) waits in the endpoint's own
queue, bounded (:class:`QueueBound`, ``setMaxNetworkEndpointQueue``), and a writer task
sends it as the component reads; ``send`` returns false only over that bound or when the
component is gone.  A component that went away and came back is reached again on the next
``send``.  Only a peer of this process's user or root is sent to (``unixtrust.py``): an
endpoint refuses a socket that another user owns, or that sits in a directory another user
may change.

Resource handling
    Running a configuration touches no socket.  Each endpoint's writer task is started by
    the server in its root nursery (:meth:`NetworkEndpoint.start_writer`); it holds the
    endpoint only while messages wait, so an endpoint Lua no longer refers to (a reloaded
    configuration's) is collected, and its writer then ends.  Without a writer
    (``check-config``, an endpoint used on its own), ``send`` queues nothing and returns
    false when the component's queue is full.

Imports nothing above triodist.asyncproc (system and util below it).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import trio

from triodist.asyncproc.unixpaths import (
    BATCH,
    HasStats,
    PathMap,
    count,
    show_path,
    unix_path,
)
from triodist.system.unixtrust import (
    UnsafePathError,
    peer_uid,
    trusted_uid,
    trusted_users,
    unsafe_directory,
    user_name,
)
from triodist.util.luavalues import describe

log = logging.getLogger("triodist.network")

#: What an endpoint keeps for a component that has not read yet, by default: as many
#: messages as queries may be held at once (``setMaxSuspended``'s default), so that a
#: burst the registry accepts is never lost in between; and at most this many bytes.
DEFAULT_QUEUE_MESSAGES = 10_000
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024

# send() errors that mean the peer is gone (closed, restarted, its file removed):
# reconnecting may reach its successor.  Anything else (EAGAIN, ENOBUFS: the peer is
# there but busy; EMSGSIZE) is answered by "not now" without touching the connection.
_PEER_GONE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ENOTCONN,
        errno.ENOENT,
        errno.EPIPE,
        errno.EDESTADDRREQ,
    }
)


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("latin-1")  # a Lua string: one character per byte
        except UnicodeEncodeError:
            return value.encode("utf-8")  # text given from Python
    if isinstance(value, int | float) and not isinstance(value, bool):
        # What Lua's tostring() gives, as dnsdist turns a number into its string.
        text = str(int(value)) if float(value).is_integer() else f"{value:.14g}"
        return text.encode()
    raise TypeError(f"send: expected a string, got {describe(value)}")


@dataclass
class QueueBound:
    """What one endpoint may keep for a component that has not read yet
    (``setMaxNetworkEndpointQueue(messages, bytes)``): both bounds hold.  A configuration
    has one, shared by its endpoints, so that the setting applies wherever it is called."""

    messages: int = DEFAULT_QUEUE_MESSAGES
    bytes: int = DEFAULT_QUEUE_BYTES


class _Outbox:
    """What an endpoint's writer task needs apart from the endpoint itself: the task keeps
    this, and the endpoint only while it sends, so that the endpoint can be collected."""

    __slots__ = ("full_logged", "keeper", "lot", "owner", "queue", "size", "stats", "writing")

    def __init__(self, owner: HasStats | None) -> None:
        #: Messages waiting for the component to read, oldest first, and their bytes.
        self.queue: deque[bytes] = deque()
        self.size = 0
        #: Where the parked writer waits for the first message of a new queue.
        self.lot = trio.lowlevel.ParkingLot()
        #: True from ``start_writer`` until the writer ends: only then does ``send`` queue.
        self.writing = False
        #: A warning was given since the queue was last empty (one per episode of overflow).
        self.full_logged = False
        #: The endpoint, while messages wait: what ``send`` accepted is sent even if Lua
        #: forgets the endpoint meanwhile.  None while the queue is empty.
        self.keeper: NetworkEndpoint | None = None
        self.owner = owner
        self.stats: Counter[str] = Counter()

    def count(self, name: str, n: int = 1) -> None:
        """Count in the running server's counters (kept over reloads), else in our own."""
        count(self.owner, self.stats, name, n)


class NetworkEndpoint:
    """A unix datagram socket connected to ``path`` (``newNetworkEndpoint``).

    Lua calls ``send`` and ``isValid``; neither ever blocks nor raises for a peer that
    is missing, busy or gone.  A peer that belongs to another user (or sits in a directory
    another user can change) is refused like a missing one: what is sent is the query,
    and whoever receives it decides its fate.

    A message the peer has no room for now is queued (``bound``) and sent by the writer
    task (:meth:`start_writer`) as the peer reads, in the order ``send`` was called.
    Counted in ``owner``'s statistics (the server's): ``async-send-queued`` (messages that
    waited), ``async-send-overflows`` (refused over the bound), ``async-send-failures``
    (not sent: no peer, or the peer went away while they waited).
    """

    def __init__(
        self,
        path: Any,
        *,
        owner: HasStats | None = None,
        bound: QueueBound | None = None,
        remap: PathMap | None = None,
    ) -> None:
        self.path = unix_path(path, "newNetworkEndpoint", remap)
        self.bound = bound if bound is not None else QueueBound()
        # The current socket, in a list that a finalizer shares: whenever this object is
        # collected (the Lua state outlives the server, check-config never serves), the
        # socket is closed, not left to the garbage collector's ResourceWarning.
        self._holder: list[socket.socket] = []
        weakref.finalize(self, _close_all, self._holder)
        self._outbox = _Outbox(owner)
        self._closed = False
        #: Datagrams sent, those that could not be sent (no peer, peer gone, over the
        #: bound), those that waited in the queue, and those refused over the bound.
        self.sent = 0
        self.failed = 0
        self.queued = 0
        self.overflows = 0
        #: Why the last peer was refused (logged once until a peer is accepted).
        self._refused: str | None = None
        # No socket yet: running the configuration touches none (check-config is pure).
        # The server connects when it starts the writer; a send, or an ``isValid()`` the
        # configuration calls, connects on demand before that.

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "not connected"
        return f"NetworkEndpoint({show_path(self.path)}, {state})"

    @property
    def stats(self) -> Counter[str]:
        """The counters when there is no server to count in."""
        return self._outbox.stats

    @property
    def waiting(self) -> int:
        """Messages queued for the peer now."""
        return len(self._outbox.queue)

    def isValid(self) -> bool:
        """True when connected to a peer; a disconnected endpoint tries to connect first,
        so a component started after triodist is seen at once."""
        if self._sock is None and not self._closed and not self._outbox.queue:
            self._connect()
        return self._sock is not None

    def send(self, payload: Any) -> bool:
        """Send ``payload`` as one datagram, now or, when the peer has no room for it
        yet, once it reads; false when it will not be sent (no peer, or over the bound).

        A peer that went away is reconnected to, once per call, before giving up: the
        external component may have restarted and bound its path again.
        """
        if self._closed:
            return False
        data = _payload(payload)
        if not data:
            return False  # as dnsdist: an empty payload is not sent
        if self._outbox.queue:
            # Older messages wait: this one goes after them (the writer owns the socket).
            return self._enqueue(data)
        if self._sock is not None:
            error = self._send(self._sock, data)
            if error is None:
                return True
            if error.errno not in _PEER_GONE:
                return self._busy(data, error)
            log.warning(
                "Lost network endpoint %s: %s", show_path(self.path), error.strerror or error
            )
        # Not connected, or the peer is gone: one attempt to reach it (or its successor).
        connect_error = self._connect()
        if connect_error is None:
            log.info("Reconnected to network endpoint %s", show_path(self.path))
            assert self._sock is not None
            error = self._send(self._sock, data)
            if error is None:
                return True
            if error.errno not in _PEER_GONE:
                return self._busy(data, error)
            log.debug("send to %s failed: %s", show_path(self.path), error)
        else:
            log.debug("Reconnecting to %s failed: %s", show_path(self.path), connect_error)
        self._fail()
        return False

    def close(self) -> None:
        self._closed = True
        self._drop_socket()
        self._outbox.lot.unpark_all()  # a parked writer ends

    def start_writer(self, nursery: trio.Nursery) -> None:
        """Start the task that sends what ``send`` queues, in ``nursery`` (the server's
        root nursery: the server calls this, for each endpoint, when it starts serving,
        when a reload brings new endpoints and when one is made at run time).

        It connects the endpoint first, if nothing has yet (a configuration that ran
        touched no socket). The task keeps only a weak reference to the endpoint while
        nothing waits: when the endpoint is collected, the task is woken and ends."""
        outbox = self._outbox
        if outbox.writing or self._closed:
            return
        if self._sock is None and not outbox.queue:
            # The first connection, now that the server serves (not while the
            # configuration ran).
            error = self._connect()
            if error is not None and not isinstance(error, UnsafePathError):
                # Normal when the external component starts after triodist: send() connects.
                log.info(
                    "Network endpoint %s not reachable yet (%s): send() returns false until it is",
                    show_path(self.path),
                    error.strerror or error,
                )
        outbox.writing = True
        nursery.start_soon(
            _write_loop,
            weakref.ref(self),
            outbox,
            name=f"network endpoint {show_path(self.path)}",
        )

    # --- internals ----------------------------------------------------------------------

    def _busy(self, data: bytes, error: OSError) -> bool:
        """The peer is there but has no room for ``data`` now: queued when a writer runs."""
        if isinstance(error, BlockingIOError) and self._outbox.writing:
            return self._enqueue(data)
        log.debug("send to %s failed: %s", show_path(self.path), error)
        self._fail()
        return False

    def _enqueue(self, data: bytes) -> bool:
        outbox, bound = self._outbox, self.bound
        if len(outbox.queue) >= bound.messages or outbox.size + len(data) > bound.bytes:
            self.overflows += 1
            self.failed += 1
            outbox.count("async-send-overflows")
            if not outbox.full_logged:
                outbox.full_logged = True
                log.warning(
                    "Network endpoint %s: %d messages (%d bytes) wait for the peer to read, "
                    "at the bound (setMaxNetworkEndpointQueue(%d, %d)): send() returns false "
                    "until it reads",
                    show_path(self.path),
                    len(outbox.queue),
                    outbox.size,
                    bound.messages,
                    bound.bytes,
                )
            return False
        if not outbox.queue:
            outbox.keeper = self
            outbox.lot.unpark_all()  # the writer parks while the queue is empty
        outbox.queue.append(data)
        outbox.size += len(data)
        self.queued += 1
        outbox.count("async-send-queued")
        return True

    def _fail(self, n: int = 1) -> None:
        self.failed += n
        self._outbox.count("async-send-failures", n)

    def _discard(self, reason: str) -> None:
        """Forget every queued message: the peer is gone (or the endpoint closed)."""
        outbox = self._outbox
        if not outbox.queue:
            return
        count = len(outbox.queue)
        outbox.queue.clear()
        outbox.size = 0
        outbox.full_logged = False
        outbox.keeper = None
        self._fail(count)
        log.warning(
            "Network endpoint %s: %d queued message(s) not sent: %s",
            show_path(self.path),
            count,
            reason,
        )

    async def _flush(self) -> None:
        """Send the queued messages as the peer reads them; return once none is left.

        A full peer makes ``send`` raise EAGAIN and, for a connected unix datagram
        socket, makes it unwritable until the peer reads (Linux wakes a sender waiting on
        a full peer's queue): so waiting for the socket to be writable is waiting for the
        peer to read, with no polling."""
        outbox = self._outbox
        queue = outbox.queue
        since_checkpoint = 0
        gone_in_a_row = 0
        while queue and not self._closed:
            sock = self._sock
            if sock is None:
                error = self._connect()
                if error is not None:
                    self._discard(f"cannot reach it ({error.strerror or error})")
                    return
                log.info("Reconnected to network endpoint %s", show_path(self.path))
                continue
            data = queue[0]
            try:
                sent = sock.send(data)
            except BlockingIOError:
                # Closed meanwhile (close()): the loop looks again.
                with contextlib.suppress(trio.ClosedResourceError):
                    await trio.lowlevel.wait_writable(sock)
                since_checkpoint = 0
                continue
            except OSError as exc:
                if exc.errno in _PEER_GONE:
                    log.warning(
                        "Lost network endpoint %s: %s",
                        show_path(self.path),
                        exc.strerror or exc,
                    )
                    self._drop_socket()
                    gone_in_a_row += 1
                    if gone_in_a_row > 1:  # its successor went away at once too
                        self._discard(f"it went away ({exc.strerror or exc})")
                        return
                    continue
                # This message cannot be sent (EMSGSIZE, say): it alone is dropped.
                log.debug("send to %s failed: %s", show_path(self.path), exc)
                sent = -1
            queue.popleft()
            outbox.size -= len(data)
            if sent == len(data):
                self.sent += 1
                gone_in_a_row = 0
            else:
                self._fail()
            since_checkpoint += 1
            if since_checkpoint >= BATCH:  # a peer that keeps up must not starve the rest
                since_checkpoint = 0
                await trio.lowlevel.checkpoint()
        if self._closed:
            self._discard("the endpoint is closed")
        outbox.full_logged = False
        outbox.keeper = None

    def _send(self, sock: socket.socket, data: bytes) -> OSError | None:
        try:
            sent = sock.send(data)
        except OSError as exc:  # BlockingIOError included: never wait
            if exc.errno in _PEER_GONE:
                self._drop_socket()
            return exc
        if sent != len(data):  # datagrams are all or nothing; be safe anyway
            return OSError(errno.EMSGSIZE, "datagram truncated")
        self.sent += 1
        return None

    def _connect(self) -> OSError | None:
        """(Re)connect a fresh socket; the error, or None when connected.

        A peer of another user is refused (``UnsafePathError``), logged once per reason."""
        self._drop_socket()
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as exc:  # out of descriptors: "not now", like any other failure
            return exc
        try:
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            return exc
        # Checked once connected, so that a missing peer costs no more than before; a
        # connected datagram socket stays tied to that peer until it goes away.
        reason = self._foreign_peer(sock)
        if reason is not None:
            sock.close()
            return self._refuse(reason)
        self._refused = None
        self._holder.append(sock)
        return None

    def _foreign_peer(self, sock: socket.socket) -> str | None:
        """Why the connected peer is not to be sent to; None when it is ours or root's.

        A path's directory must be private too: otherwise another user could replace the
        socket file, and the next reconnection would reach theirs."""
        abstract = self.path.startswith(b"\0")
        if not abstract:
            try:
                reason = unsafe_directory(os.path.dirname(self.path) or b".")
            except OSError as exc:
                return f"cannot examine its directory ({exc.strerror})"
            if reason is not None:
                return f"unsafe directory: {reason}"
        try:
            uid = peer_uid(sock)
        except OSError as exc:
            if abstract:
                # Anyone may bind an abstract name: without the kernel's word, nobody.
                return f"cannot tell who listens on this abstract name ({exc.strerror or exc})"
            try:
                uid = os.stat(self.path).st_uid  # the directory is private: the file's owner
            except OSError as stat_error:
                return f"cannot tell who owns the socket ({stat_error.strerror})"
        if trusted_uid(uid):
            return None
        return f"the socket belongs to {user_name(uid)}, not to {trusted_users()}"

    def _refuse(self, reason: str) -> UnsafePathError:
        if reason != self._refused:
            self._refused = reason
            log.warning(
                "Network endpoint %s refused, nothing is sent to it: %s",
                show_path(self.path),
                reason,
            )
        return UnsafePathError(errno.EPERM, reason)

    def _drop_socket(self) -> None:
        _close_all(self._holder)

    @property
    def _sock(self) -> socket.socket | None:
        return self._holder[0] if self._holder else None


def _close_all(holder: list[socket.socket]) -> None:
    while holder:
        sock = holder.pop()
        # A writer waiting for it to be writable is woken (ClosedResourceError).  Outside
        # Trio's run (a finalizer, check-config) RuntimeError: nobody waits on it then.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(sock)
        sock.close()


async def _write_loop(ref: weakref.ref[NetworkEndpoint], outbox: _Outbox) -> None:
    """An endpoint's writer: park while nothing is queued, send while something is.

    While messages wait, the outbox keeps the endpoint alive (``keeper``); once the
    queue is empty, only a weak reference is left, and when the endpoint is collected a
    finalizer wakes the task (through the Trio token, safe from wherever the collector
    runs) and it ends.  Whatever is still queued when the task ends (cancelled at
    shutdown) is counted as not sent."""
    endpoint = ref()
    if endpoint is None:
        outbox.writing = False
        return
    waker = weakref.finalize(endpoint, _wake, trio.lowlevel.current_trio_token(), outbox)
    waker.atexit = False
    del endpoint
    try:
        while True:
            if not outbox.queue:
                if ref() is None:
                    return
                await outbox.lot.park()
                continue
            endpoint = outbox.keeper  # set while messages wait
            if endpoint is None or endpoint._closed:
                return
            await endpoint._flush()
            del endpoint  # not kept alive by this frame while parked
    finally:
        outbox.writing = False
        outbox.keeper = None
        waker.detach()
        if outbox.queue:
            outbox.count("async-send-failures", len(outbox.queue))
            outbox.queue.clear()
            outbox.size = 0


def _wake(token: trio.lowlevel.TrioToken, outbox: _Outbox) -> None:
    with contextlib.suppress(trio.RunFinishedError):  # the server has stopped
        token.run_sync_soon(outbox.lot.unpark_all)
