"""Network endpoints and listeners: how a configuration talks to a component outside.

dnsdist's asynchronous processing hands a suspended query to an external component and
hears back from it over unix datagram sockets:

* :class:`NetworkEndpoint` (``newNetworkEndpoint(path)``) is a datagram socket connected
  to the component.  ``send`` never blocks.  A message the component's receive queue has
  no room for now (Linux queues ``net.unix.max_dgram_qlen`` datagrams, 10 by default)
  waits in the endpoint's own queue, bounded (:class:`QueueBound`,
  ``setMaxNetworkEndpointQueue``), and a writer task sends it as the component reads;
  ``send`` returns false only over that bound or when the component is gone.  A
  component that went away and came back is reached again on the next ``send``.
* :class:`NetworkListener` (``newNetworkListener()``) owns listening sockets; each
  datagram received is handed to a callback, ``callback(endpointID, message, from)``,
  which typically resumes the query (``getAsynchronousObject(a, q):resume()``).

A path that starts with a NUL byte (``"\\0name"`` in Lua) is in Linux's abstract
namespace: no file is created, and it vanishes with the socket.

Local users
    Only this process's user and root are listened to or sent to (``unixtrust.py``): a
    listening socket receives the sender's credentials with every datagram and drops, and
    counts (``async-foreign-drops``), those of any other user, abstract names included; an
    endpoint refuses to send to a socket that another user owns; a socket's directory is
    created 0700 and one that another user owns or may write to is refused.

Resource handling
    Running a configuration only records the listening endpoints (and checks their
    paths), so ``check-config`` never touches a live server's socket files.  The server
    binds them at start-up (:meth:`NetworkListener.open`, before it reports that it is
    listening), runs one receive task per socket in its root nursery
    (:meth:`NetworkListener.start_tasks`) and, when it stops, closes them and removes
    the socket files it created (:meth:`NetworkListener.close`).  A socket file is
    created with mode 0600 in a private directory: whoever can send to it can resume or
    drop queries.  Each endpoint's writer task is started by the server in its root
    nursery too (:meth:`NetworkEndpoint.start_writer`); it holds the endpoint only while
    messages wait, so an endpoint Lua no longer refers to (a reloaded configuration's)
    is collected, and its writer then ends.  Without a writer (``check-config``, an
    endpoint used on its own), ``send`` queues nothing and returns false when the
    component's queue is full.

Error handling
    An error raised by the callback (a Lua error) is logged, once per distinct message,
    and the listener goes on with the next datagram.  Whatever a datagram holds (nothing,
    64 KiB, garbage) it is given to the callback, which decides what to do with it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import weakref
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from triodist.system.unixtrust import (
    CREDENTIALS_SPACE,
    UnsafePathError,
    check_directory,
    open_private_directory,
    pass_credentials,
    peer_uid,
    sender_credentials,
    sender_uid,
    trusted_uid,
    trusted_users,
    unsafe_directory,
    user_name,
)
from triodist.util.luavalues import describe

log = logging.getLogger("triodist.asyncproc.network")

#: The largest datagram a listener receives whole.  A sender cannot send more than its
#: send buffer holds (212992 bytes by default on Linux); anything longer is dropped.
MAX_DATAGRAM = 256 * 1024
#: How many datagrams one wake-up may read before giving other tasks a turn.
BATCH = 64
#: ``sun_path`` is 108 bytes; a filesystem path also needs its terminating NUL.
MAX_PATH = 107
MAX_ABSTRACT = 108
#: Distinct callback error messages logged at WARNING; beyond, at DEBUG (memory stays bounded).
MAX_LOGGED_ERRORS = 256
#: Seconds between two warnings about datagrams dropped from other users (one per
#: listening socket): a flood of them is counted, not written to the log one by one.
FOREIGN_LOG_INTERVAL = 60.0
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

Callback = Callable[[int, bytes, bytes], Any]


class HasStats(Protocol):
    """What owns a listener: the server's configuration, whose ``stats`` are the running
    server's counters (None until it runs)."""

    stats: Counter[str] | None


#: What ``{worker}`` in a path becomes: this process's worker index (``serve --workers``),
#: set by the command line before the configuration runs; 0 in a single process.
worker_index = 0


def set_worker_index(index: int) -> None:
    global worker_index
    worker_index = index


def unix_path(value: Any, function: str) -> bytes:
    """A unix socket path from Lua (a latin-1 str carrying its bytes) or Python, as bytes.

    ``{worker}`` in the path is replaced by the worker index, so that each worker of
    ``serve --workers N`` gets its own socket from one configuration.

    Raises ``ValueError`` (with ``function``'s name) when it cannot name a socket.
    """
    if isinstance(value, str):
        try:
            path = value.encode("latin-1")  # a Lua string: one character per byte
        except UnicodeEncodeError:
            path = os.fsencode(value)  # text given from Python
    elif isinstance(value, bytes | bytearray):
        path = bytes(value)
    elif isinstance(value, os.PathLike):
        path = os.fsencode(value)
    else:
        raise ValueError(f"{function}: expected a path, got {describe(value)}")
    path = path.replace(b"{worker}", str(worker_index).encode())
    if not path or path == b"\0":
        raise ValueError(f"{function}: the path is empty")
    if path.startswith(b"\0"):
        if len(path) > MAX_ABSTRACT:
            raise ValueError(
                f"{function}: the abstract name {show_path(path)} is too long "
                f"({len(path)} bytes, at most {MAX_ABSTRACT} with the leading NUL)"
            )
    else:
        if b"\0" in path:
            raise ValueError(f"{function}: the path {show_path(path)} contains a NUL byte")
        if len(path) > MAX_PATH:
            raise ValueError(
                f"{function}: the path {show_path(path)} is too long "
                f"({len(path)} bytes, at most {MAX_PATH})"
            )
    return path


def show_path(path: bytes) -> str:
    """A path as shown in messages: quoted, an abstract name with ``@`` for its NUL."""
    if path.startswith(b"\0"):
        path = b"@" + path[1:]
    return "'" + path.decode("utf-8", errors="backslashreplace").replace("\0", "\\0") + "'"


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


# --- the endpoint ---------------------------------------------------------------------------


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
        stats = self.owner.stats if self.owner is not None else None
        (self.stats if stats is None else stats)[name] += n


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
        self, path: Any, *, owner: HasStats | None = None, bound: QueueBound | None = None
    ) -> None:
        self.path = unix_path(path, "newNetworkEndpoint")
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


# --- the listener ---------------------------------------------------------------------------


@dataclass(eq=False)
class ListeningEndpoint:
    """One ``addUnixListeningEndpoint``: where to listen and whom to tell."""

    path: bytes
    endpoint_id: int
    callback: Callback
    sock: socket.socket | None = None
    #: (device, inode) of the socket file this process created, so that ``close``
    #: removes it only while it is still ours.
    file_id: tuple[int, int] | None = None
    #: The socket's directory, held open while the socket is bound: the file is made,
    #: replaced and removed through it (never by a path someone may have redirected).
    dir_fd: int | None = None
    #: Datagrams given to the callback, callback errors, datagrams too long to receive.
    received: int = 0
    errors: int = 0
    too_long: int = 0
    logged: set[str] = field(default_factory=set)
    #: Datagrams dropped because another user (or a sender without credentials) sent
    #: them; the same number since the last warning, and when that warning was given.
    foreign: int = 0
    foreign_unlogged: int = 0
    foreign_logged_at: float | None = None

    @property
    def abstract(self) -> bool:
        return self.path.startswith(b"\0")


class NetworkListener:
    """Listening unix datagram sockets and their callbacks (``newNetworkListener``).

    ``addUnixListeningEndpoint`` and ``start`` are called by the configuration; the
    server then calls ``open`` (bind), ``start_tasks`` (one receive task per socket in
    its nursery) and ``close``.  :meth:`serve` does all three for use outside a server.
    """

    def __init__(self, owner: HasStats | None = None) -> None:
        self.endpoints: list[ListeningEndpoint] = []
        self.started = False
        #: The configuration that made this listener: its ``stats`` are the running
        #: server's counters (kept over reloads), where ``async-foreign-drops`` is counted.
        self.owner = owner
        #: Where it is counted when there is no server (a listener used on its own).
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        paths = ", ".join(show_path(e.path) for e in self.endpoints)
        return f"NetworkListener([{paths}]{', started' if self.started else ''})"

    # --- the Lua methods ------------------------------------------------------------------

    def addUnixListeningEndpoint(self, path: Any, endpointID: Any, callback: Any = None) -> bool:
        """Listen on ``path``; each datagram calls ``callback(endpointID, message, from)``."""
        fn = "addUnixListeningEndpoint"
        if self.started:
            raise ValueError(f"{fn}: the listener is already started; add endpoints before start()")
        where = unix_path(path, fn)
        if callback is None:
            raise ValueError(
                f"{fn}: callback is nil: define the function before passing it (a function "
                "defined further down the file does not exist yet at this line)"
            )
        if not callable(callback):
            raise ValueError(f"{fn}: the callback must be a function, got {describe(callback)}")
        endpoint_id = _endpoint_id(endpointID, fn)
        if any(e.path == where for e in self.endpoints):
            raise ValueError(f"{fn}: {show_path(where)} is already a listening endpoint")
        if not where.startswith(b"\0"):
            _check_bindable(where, fn)
        self.endpoints.append(ListeningEndpoint(where, endpoint_id, callback))
        return True

    def start(self) -> None:
        """Mark the listener to be run by the server (a listener never started never runs)."""
        if not self.endpoints:
            raise ValueError(
                "start: the listener has no endpoint; call addUnixListeningEndpoint first"
            )
        self.started = True

    # --- run by the server ----------------------------------------------------------------

    def open(self) -> None:
        """Bind every endpoint's socket; on failure none is left open (``OSError``)."""
        try:
            for endpoint in self.endpoints:
                if endpoint.sock is None:
                    _bind(endpoint)
                    log.info("Listening for network messages on %s", show_path(endpoint.path))
        except BaseException:
            self.close()
            raise

    def open_endpoint(self, endpoint: ListeningEndpoint) -> None:
        """Bind one endpoint's socket (a reload adding a path)."""
        _bind(endpoint)
        log.info("Listening for network messages on %s", show_path(endpoint.path))

    @staticmethod
    def retire(endpoint: ListeningEndpoint) -> None:
        """Close one endpoint while the server runs: its receive task returns."""
        if endpoint.sock is not None:
            trio.lowlevel.notify_closing(endpoint.sock)
        _unbind(endpoint)

    def start_tasks(self, nursery: trio.Nursery) -> None:
        """One receive task per (open) socket, in ``nursery``."""
        for endpoint in self.endpoints:
            if endpoint.sock is not None:
                nursery.start_soon(self.receive_loop, endpoint)

    def close(self) -> None:
        """Close the sockets and remove the socket files this listener created."""
        for endpoint in self.endpoints:
            _unbind(endpoint)

    async def serve(
        self, *, task_status: trio.TaskStatus[list[bytes]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report the paths, receive until cancelled, close."""
        self.open()
        try:
            async with trio.open_nursery() as nursery:
                self.start_tasks(nursery)
                task_status.started([e.path for e in self.endpoints])
        finally:
            self.close()

    async def receive_loop(self, endpoint: ListeningEndpoint) -> None:
        """Hand every datagram arriving on ``endpoint`` to its callback, until cancelled.

        Waits until the socket is readable, then drains it with non-blocking reads (at
        most ``BATCH`` per wake-up), so a burst of answers costs one wake-up.  A datagram
        from another user than this process's or root is dropped before anything reads
        it (:meth:`_drop_foreign`).
        """
        sock = endpoint.sock
        assert sock is not None, "open() first"
        buffer = bytearray(MAX_DATAGRAM)
        view = memoryview(buffer)
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return  # closed by a reload that no longer listens here
            # Read at each wake-up, not once: the server may have dropped root's
            # privileges (serve -u) since it bound this socket.
            own = os.geteuid()
            for _ in range(BATCH):
                try:
                    size, ancdata, flags, sender = sock.recvmsg_into([buffer], CREDENTIALS_SPACE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    log.debug("recvmsg on %s failed: %s", show_path(endpoint.path), exc)
                    continue
                uid = sender_uid(ancdata)
                # The common case costs two comparisons; None (no credentials) is foreign.
                if uid != own and uid != 0 and not trusted_uid(uid):
                    self._drop_foreign(endpoint, ancdata)
                    continue
                if flags & socket.MSG_TRUNC:
                    endpoint.too_long += 1
                    self._log_error(endpoint, f"datagram longer than {MAX_DATAGRAM} bytes dropped")
                    continue
                self._deliver(endpoint, bytes(view[:size]), _sender(sender))
            else:
                await trio.lowlevel.checkpoint()

    def _drop_foreign(self, endpoint: ListeningEndpoint, ancdata: Any) -> None:
        """Count a datagram from another user; warn at most once per ``FOREIGN_LOG_INTERVAL``."""
        endpoint.foreign += 1
        endpoint.foreign_unlogged += 1
        stats = self.owner.stats if self.owner is not None else None
        (self.stats if stats is None else stats)["async-foreign-drops"] += 1
        now = trio.current_time()
        last = endpoint.foreign_logged_at
        if last is not None and now - last < FOREIGN_LOG_INTERVAL:
            return
        credentials = sender_credentials(ancdata)
        who = (
            "without credentials"
            if credentials is None
            else f"last from {user_name(credentials[1])}, pid {credentials[0]}"
        )
        log.warning(
            "Dropped %d datagram(s) sent to the network listener on %s by another user (%s): "
            "only %s may send to it",
            endpoint.foreign_unlogged,
            show_path(endpoint.path),
            who,
            trusted_users("and"),
        )
        endpoint.foreign_logged_at = now
        endpoint.foreign_unlogged = 0

    def _deliver(self, endpoint: ListeningEndpoint, message: bytes, sender: bytes) -> None:
        endpoint.received += 1
        try:
            endpoint.callback(endpoint.endpoint_id, message, sender)
        except Exception as exc:  # the callback's boundary: log, go on with the next one
            endpoint.errors += 1
            text = str(exc).strip().splitlines()
            self._log_error(endpoint, text[0] if text else type(exc).__name__)

    def _log_error(self, endpoint: ListeningEndpoint, message: str) -> None:
        if message in endpoint.logged:
            log.debug("Network listener %s: %s", show_path(endpoint.path), message)
            return
        if len(endpoint.logged) < MAX_LOGGED_ERRORS:
            endpoint.logged.add(message)
        log.warning(
            "Exception in the read callback of the network listener on %s: %s",
            show_path(endpoint.path),
            message,
        )


# --- sockets and files ----------------------------------------------------------------------


def _endpoint_id(value: Any, function: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{function}: the endpoint ID must be a number, got {describe(value)}")
    if not float(value).is_integer() or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{function}: the endpoint ID must be an integer 0..65535, got {value}")
    return int(value)


def _check_bindable(path: bytes, function: str) -> None:
    """What can be known about binding ``path`` without binding it (``ValueError``).

    The socket is bound when the server starts, not while the configuration runs, so
    that checking a configuration never replaces the socket of a server that runs it.
    """
    directory = os.path.dirname(path) or b"."
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        _check_creatable(path, directory, function)
        return
    except OSError as exc:
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: {show_path(directory)}: {exc.strerror}"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: {show_path(directory)} is not a directory"
        )
    try:
        check_directory(directory)
    except OSError as exc:
        raise ValueError(f"{function}: cannot bind {show_path(path)}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: no permission to create "
            f"files in {show_path(directory)}"
        )
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValueError(f"{function}: cannot bind {show_path(path)}: {exc.strerror}") from None
    if not stat.S_ISSOCK(existing.st_mode):
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: a file that is not a socket is "
            "in the way (only a stale socket is removed)"
        )


def _check_creatable(path: bytes, directory: bytes, function: str) -> None:
    """A missing socket directory: created 0700 at start-up, in a parent that must be safe."""
    parent = os.path.dirname(directory) or b"."
    try:
        reason = unsafe_directory(parent, holds_socket=False)
    except FileNotFoundError:
        # It may be created before the server starts (by the external component, or a
        # service manager's runtime directory): a warning now, an error at start-up.
        log.warning(
            "%s: the directory %s does not exist yet; it must exist when the server starts",
            function,
            show_path(parent),
        )
        return
    except OSError as exc:
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: {show_path(parent)}: {exc.strerror}"
        ) from None
    if reason is not None:
        raise ValueError(f"{function}: cannot bind {show_path(path)}: unsafe directory: {reason}")
    log.info(
        "%s: the directory %s will be created (mode 0700) when the server starts",
        function,
        show_path(directory),
    )


def _bind(endpoint: ListeningEndpoint) -> None:
    """Bind ``endpoint``'s socket: in a private directory, mode 0600, credentials passed,
    a stale socket file replaced.

    The directory is pinned by a descriptor (:func:`open_private_directory`) and every
    step in it goes through that descriptor: the stale file is examined and removed
    relative to it, and the socket bound at ``/proc/self/fd/N/name``, which the kernel
    resolves to that very directory.  A server started as root for ``serve -u USER``
    trusts USER's directories, and by the path USER could rename the directory and put
    a symbolic link in its place between the check and the act, to have root remove or
    create a socket file of that name in any directory."""
    path = endpoint.path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dir_fd: int | None = None
    try:
        sock.setblocking(False)
        pass_credentials(sock)
        if endpoint.abstract:
            sock.bind(path)
        else:
            dir_fd = open_private_directory(os.path.dirname(path) or b".")
            name = os.path.basename(path)
            pinned = _pinned(dir_fd, name)
            _remove_stale(dir_fd, name, pinned, path)
            # bind() creates the file with 0777 & ~umask: with the umask at 0177 it is
            # born 0600, with no moment at which someone else could open it.  No await
            # happens in between, so no other task runs with this umask.
            previous = os.umask(0o177)
            try:
                sock.bind(pinned)
            finally:
                os.umask(previous)
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            endpoint.file_id = (info.st_dev, info.st_ino)
    except OSError as exc:
        sock.close()
        if dir_fd is not None:
            os.close(dir_fd)
        raise OSError(
            exc.errno, f"Error binding Unix socket to path {show_path(path)}: {exc.strerror}"
        ) from exc
    except BaseException:
        sock.close()
        if dir_fd is not None:
            os.close(dir_fd)
        raise
    endpoint.sock = sock
    endpoint.dir_fd = dir_fd


#: sockaddr_un's sun_path, less the terminating NUL.
_MAX_UNIX_PATH = 107


def _pinned(dir_fd: int, name: bytes) -> bytes:
    """The path of ``name`` in the directory open as ``dir_fd``, that no one can redirect."""
    pinned = b"/proc/self/fd/%d/%s" % (dir_fd, name)
    if len(pinned) > _MAX_UNIX_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"the socket's name is too long: {len(name)} bytes, at most "
            f"{_MAX_UNIX_PATH - len(pinned) + len(name)} (it is bound through "
            f"{show_path(pinned[: -len(name)])})",
        )
    return pinned


def _remove_stale(dir_fd: int, name: bytes, pinned: bytes, path: bytes) -> None:
    try:
        existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
    # A socket file nobody listens on is stale; one that answers belongs to a live
    # process (another triodist, another listener), whose socket is never taken over.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(pinned)
    except OSError:
        pass
    else:
        raise OSError(errno.EADDRINUSE, "another process is listening on this socket")
    finally:
        probe.close()
    log.info("Removing the stale socket file %s", show_path(path))
    os.unlink(name, dir_fd=dir_fd)


def _unbind(endpoint: ListeningEndpoint) -> None:
    sock, endpoint.sock = endpoint.sock, None
    if sock is None:
        return
    sock.close()
    file_id, endpoint.file_id = endpoint.file_id, None
    dir_fd, endpoint.dir_fd = endpoint.dir_fd, None
    if file_id is None or dir_fd is None:
        return
    name = os.path.basename(endpoint.path)
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        # Remove the file only if it is still the one we created (a successor may have
        # bound the path again in the meantime).
        if (info.st_dev, info.st_ino) == file_id:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("Unable to remove %s: %s", show_path(endpoint.path), exc.strerror)
    finally:
        os.close(dir_fd)


def _sender(address: Any) -> bytes:
    """The sender's path as bytes: "" when unbound, an abstract name with its NUL."""
    if not address:
        return b""
    if isinstance(address, str):
        return os.fsencode(address)
    return bytes(address)
