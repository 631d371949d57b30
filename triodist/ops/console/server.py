"""The console's server side: one accept loop per ``controlSocket`` address, one task per
connection, each command run in the current configuration's evaluator.

It runs in the server's root nursery: one accept loop per address, one task per
connection in a nursery it owns.  A connection from outside the console ACL, or while
no key is set, is closed at once; a client whose message does not decrypt, that sends
a message over ``MAX_COMMAND`` or that stops in the middle of one, is closed.  The
command itself runs in the *current* configuration's evaluator (``lua_eval`` of the
host's ``config``), synchronously: Lua cannot be interrupted, so a command that loops
holds the server, as it does in dnsdist.  The console runs trusted code: whoever has
the key can do anything the configuration can.

What it serves is handed to it (``ConsoleHost``): it imports neither the configuration
nor the server.  Imports nothing above triodist.ops.
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Protocol

import trio

from triodist.frontends.common import bind_tcp, client_ip
from triodist.ops.console.protocol import (
    LENGTH,
    MAC_BYTES,
    NONCE_BYTES,
    ConsoleError,
    SecretChannel,
    frame,
    text_from_wire,
    text_to_wire,
)
from triodist.ops.console.settings import ConsoleSettings, show_address
from triodist.wire.stream import StreamReader

log = logging.getLogger("triodist.console")

#: The largest command the server reads, encrypted (triodist's bound: dnsdist reads up
#: to setConsoleOutputMaxMsgSize, 10 MB).  A Lua line longer than 1 MiB is no command.
MAX_COMMAND = 1 << 20
#: Once a client has started a message (or connected), the rest must come within this
#: many seconds.  Between messages a connection may stay idle as long as it likes, as
#: an interactive session does.
FRAME_TIMEOUT = 10.0

# accept() errors that mean "out of a resource for now": wait a little and go on, as
# trio.serve_listeners does.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_NO_KEY_WARNING = (
    "Warning, the console has been enabled via 'controlSocket()' but no key has been set "
    "with 'setKey()' so all connections will fail until a key has been set"
)


class ConsoleConfig(Protocol):
    """What the console reads of the running configuration (``ServerConfig`` has it)."""

    @property
    def console(self) -> ConsoleSettings: ...

    #: Runs one command in the configuration's Lua state; None: no configuration loaded.
    @property
    def lua_eval(self) -> Callable[[str], str] | None: ...


class ConsoleHost(Protocol):
    """What the console serves: the running server (its configuration may be replaced)."""

    @property
    def config(self) -> ConsoleConfig: ...


class _Reader(StreamReader):
    """The DNS TCP reader, with the end of the stream as None rather than an error."""

    async def exactly(self, size: int) -> bytes | None:
        try:
            return await self.read_exactly(size)
        except EOFError:
            return None


class _Connections:
    """The number of console connections open, against the bound read at each accept."""

    def __init__(self) -> None:
        self.count = 0


async def serve(
    host: ConsoleHost,
    *,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on every ``controlSocket`` address, report them, serve until cancelled.

    Resource handling: the listening sockets are bound before ``task_status.started``
    (an ``OSError`` there is the caller's: the server does not start) and closed when
    this returns; each connection is a task in this function's own nursery, closed
    when its task ends; at most ``max_connections`` are open at once.

    Error handling: nothing a client sends ends anything but its own connection.  A
    connection's task logs ``Exception`` and lets ``trio.Cancelled`` through.  The
    settings (key, ACL, bounds) and the evaluator are read from ``host.config`` at
    every connection and command, so the console itself (``setKey``,
    ``setConsoleACL``) and a new configuration change them.
    """
    settings = host.config.console
    listeners: list[trio.SocketListener] = []
    try:
        for address, port in settings.addresses:
            try:
                sock = bind_tcp(address, port, backlog=16)
            except OSError as exc:  # say which socket: the DNS listeners bind the same way
                where = show_address((address, port))
                raise OSError(
                    exc.errno, f"Unable to bind to control socket on {where}: {exc.strerror}"
                ) from exc
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    bound: list[tuple[str, int]] = [listener.socket.getsockname()[:2] for listener in listeners]
    for local in bound:
        log.info("Accepting control connections on %s", show_address(local))
    log.info("Console ACL allowing connections from: %s", settings.acl.toString())
    if settings.key is None:
        log.warning("%s", _NO_KEY_WARNING)
    connections = _Connections()
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, host, listener, nursery, connections)
            task_status.started(bound)
    finally:
        for listener in listeners:
            listener.socket.close()


async def _accept_loop(
    host: ConsoleHost,
    listener: trio.SocketListener,
    handlers: trio.Nursery,
    connections: _Connections,
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            log.error("Error accepting a control connection: %s", exc)
            await trio.sleep(0.1)
            continue
        # Refusals are decided here, without a task, so a flood of them costs no memory.
        settings = host.config.console
        try:
            peer = stream.socket.getpeername()
            client = show_address(peer)
            allowed = settings.acl.match_ip(client_ip(str(peer[0])))
        except (OSError, ValueError):  # gone already, or an address we cannot parse
            await trio.aclose_forcefully(stream)
            continue
        # The ACL first: a client it keeps out cannot fill the log with warnings.
        if not allowed:
            log.info("Control connection from %s dropped because of ACL", client)
        elif settings.key is None:
            log.warning(
                "Control connection from %s dropped because we don't have a valid key "
                "configured, please configure one using setKey()",
                client,
            )
        elif 0 < settings.max_connections <= connections.count:
            log.error(
                "Control connection from %s dropped: too many concurrent console "
                "connections (%d, setConsoleMaximumConcurrentConnections)",
                client,
                settings.max_connections,
            )
        else:
            connections.count += 1
            if settings.log_connections:
                log.warning("Got control connection from %s", client)
            handlers.start_soon(_connection, host, stream, client, connections)
            continue
        await trio.aclose_forcefully(stream)


async def _connection(
    host: ConsoleHost, stream: trio.SocketStream, client: str, connections: _Connections
) -> None:
    """One client, from the nonce exchange to the close: the error boundary."""
    try:
        async with stream:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            await _converse(host, stream)
    except ConsoleError as exc:
        log.warning("Closed control connection from %s: %s", client, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.info("Control connection from %s broken: %s", client, exc)
    except Exception:
        log.exception("Error in control connection from %s", client)
    else:
        if host.config.console.log_connections:
            log.info("Closed control connection from %s", client)
    finally:
        connections.count -= 1


async def _converse(host: ConsoleHost, stream: trio.SocketStream) -> None:
    reader = _Reader(stream)
    # Until a message proves that the client has the key, it has FRAME_TIMEOUT in all,
    # from the connection on (nonce and first message included): connections that never
    # prove it cannot hold the console's places.
    proven_by = trio.current_time() + FRAME_TIMEOUT
    with trio.move_on_at(proven_by) as handshake:
        theirs = await reader.exactly(NONCE_BYTES)
    if handshake.cancelled_caught:
        raise ConsoleError(f"no nonce within {FRAME_TIMEOUT:g} s")
    if theirs is None:
        return  # closed before saying anything: a port probe
    ours = secrets.token_bytes(NONCE_BYTES)
    await stream.send_all(ours)
    key = host.config.console.key
    if key is None:  # the key cannot be unset; a new configuration may lack one
        raise ConsoleError("no key set (setKey)")
    channel = SecretChannel(key, ours, theirs)
    proven = False
    while True:
        # Once proven, idle between commands as long as the client likes; a message,
        # once started, must arrive whole within FRAME_TIMEOUT.
        if proven:
            more = await reader.fill(1)
        else:
            more = False
            with trio.move_on_at(proven_by) as waiting:
                more = await reader.fill(1)
            if waiting.cancelled_caught:
                raise ConsoleError(f"no command within {FRAME_TIMEOUT:g} s of connecting")
        if not more:
            return
        box: bytes | None = b""
        frame_by = trio.current_time() + FRAME_TIMEOUT
        with trio.move_on_at(frame_by if proven else min(frame_by, proven_by)) as partial:
            header = await reader.exactly(LENGTH.size)
            if header is None:
                raise ConsoleError("closed in the middle of a message")
            (length,) = LENGTH.unpack(header)
            if length > MAX_COMMAND:
                raise ConsoleError(f"message of {length} bytes, more than {MAX_COMMAND}")
            if length:
                box = await reader.exactly(length)
        if partial.cancelled_caught:
            raise ConsoleError(f"incomplete message after {FRAME_TIMEOUT:g} s")
        if box is None:
            raise ConsoleError("closed in the middle of a message")
        if not box:
            # An unencrypted empty message is acknowledged with one, as dnsdist does.
            await stream.send_all(frame(b""))
            continue
        line = channel.open(box)
        proven = True
        run = getattr(host, "run_console_command", None)
        if run is not None:
            # The parent of --workers: the command runs in the workers (workers.py).
            reply = _bounded(host.config, await run(text_from_wire(line)))
        else:
            reply = _evaluate(host, line)
        await stream.send_all(frame(channel.seal(reply)))


def _evaluate(host: ConsoleHost, line: bytes) -> bytes:
    """Run one command in the current configuration; its output, within the bound."""
    config = host.config
    evaluate = config.lua_eval
    if evaluate is None:
        reply = "Error: no configuration is loaded to run the command in"
    else:
        try:
            reply = evaluate(text_from_wire(line))
        except Exception as exc:  # the evaluator reports Lua errors itself: a bug
            log.exception("Error running a console command")
            reply = f"Error: {exc}"
    return _bounded(config, reply)


def _bounded(config: ConsoleConfig, reply: str) -> bytes:
    """A command's output on the wire, or why not when it is over the bound."""
    data = text_to_wire(reply)
    limit = config.console.max_output_size
    if limit and len(data) + MAC_BYTES > limit:
        # The client would refuse it and close; say why instead.
        return text_to_wire(
            f"Error: the output is {len(data) + MAC_BYTES} bytes, more than "
            f"setConsoleOutputMaxMsgSize ({limit})"
        )
    return data
