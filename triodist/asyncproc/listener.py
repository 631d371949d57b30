"""Network listeners: listening unix datagram sockets (``newNetworkListener()``), each
datagram received handed to a callback, ``callback(endpointID, message, from)``, which
typically resumes the query (``getAsynchronousObject(a, q):resume()``).

Local users
    Only this process's user and root are listened to (``unixtrust.py``): a listening
    socket receives the sender's credentials with every datagram and drops, and counts
    (``async-foreign-drops``), those of any other user, abstract names included; a
    socket's directory is created 0700 and one that another user owns or may write to is
    refused (``socketfiles.py``).

Resource handling
    Running a configuration only records the listening endpoints (and checks their
    paths), so ``check-config`` never touches a live server's socket files.  The server
    binds them at start-up (:meth:`NetworkListener.open`, before it reports that it is
    listening), runs one receive task per socket in its root nursery
    (:meth:`NetworkListener.start_tasks`) and, when it stops, closes them and removes
    the socket files it created (:meth:`NetworkListener.close`).  A socket file is
    created with mode 0600 in a private directory: whoever can send to it can resume or
    drop queries.

Error handling
    An error raised by the callback (a Lua error) is logged, once per distinct message,
    and the listener goes on with the next datagram.  Whatever a datagram holds (nothing,
    64 KiB, garbage) it is given to the callback, which decides what to do with it.

Imports nothing above triodist.asyncproc (system and util below it).
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from triodist.asyncproc.socketfiles import bind_socket, check_bindable, unbind_socket
from triodist.asyncproc.unixpaths import (
    BATCH,
    HasStats,
    PathMap,
    count,
    show_path,
    unix_path,
)
from triodist.system.unixtrust import (
    CREDENTIALS_SPACE,
    sender_credentials,
    sender_uid,
    trusted_uid,
    trusted_users,
    user_name,
)
from triodist.util.luavalues import describe

log = logging.getLogger("triodist.network")

#: The largest datagram a listener receives whole.  A sender cannot send more than its
#: send buffer holds (212992 bytes by default on Linux); anything longer is dropped.
MAX_DATAGRAM = 256 * 1024
#: Distinct callback error messages logged at WARNING; beyond, at DEBUG (memory stays bounded).
MAX_LOGGED_ERRORS = 256
#: Seconds between two warnings about datagrams dropped from other users (one per
#: listening socket): a flood of them is counted, not written to the log one by one.
FOREIGN_LOG_INTERVAL = 60.0

Callback = Callable[[int, bytes, bytes], Any]


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

    def __init__(self, owner: HasStats | None = None, remap: PathMap | None = None) -> None:
        self.endpoints: list[ListeningEndpoint] = []
        #: Moves each path given (``ServerConfig.unix_paths``); None: as written.
        self.remap = remap
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
        where = unix_path(path, fn, self.remap)
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
            check_bindable(where, fn)
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
        count(self.owner, self.stats, "async-foreign-drops")
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


def _sender(address: Any) -> bytes:
    """The sender's path as bytes: "" when unbound, an abstract name with its NUL."""
    if not address:
        return b""
    if isinstance(address, str):
        return os.fsencode(address)
    return bytes(address)


def _bind(endpoint: ListeningEndpoint) -> None:
    endpoint.sock, endpoint.dir_fd, endpoint.file_id = bind_socket(endpoint.path)


def _unbind(endpoint: ListeningEndpoint) -> None:
    sock, endpoint.sock = endpoint.sock, None
    if sock is None:
        return
    bound = (sock, endpoint.dir_fd, endpoint.file_id)
    endpoint.dir_fd = endpoint.file_id = None
    unbind_socket(endpoint.path, bound)
