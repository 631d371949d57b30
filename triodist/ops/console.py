"""The console: dnsdist's control socket, both ends.

A configuration opens it with ``controlSocket("127.0.0.1:5199")`` and
``setKey("<base64 of 32 bytes>")``; ``dnsdist -c`` or ``triodist console`` then
sends Lua lines that run in the server's Lua state and get back what they printed.

The wire protocol is dnsdist's (1.7), so either client talks to either server:

1. On connecting, the client sends a random 24-byte nonce; the server answers
   with its own.  Each side then derives two nonces from the pair: the one it
   reads with is the first half of its own nonce followed by the second half of
   the peer's, the one it writes with is the first half of the peer's followed
   by the second half of its own.  So each direction has its own nonce and the
   two ends agree on both.
2. Every message is a 4-byte big-endian length, then libsodium's
   ``crypto_secretbox`` of the text (the 16-byte MAC, then the ciphertext)
   under the shared key and that direction's nonce.  After each message the
   nonce's first four bytes, read as a big-endian counter, are incremented (a
   nonce is never used twice on a connection).
3. The client first sends an empty line and waits for the (empty) answer: a
   server that closes the connection instead holds another key.  A message of
   length 0 (not encrypted at all) is answered with length 0.

The server side (``serve``) runs in the server's root nursery: one accept loop
per address, one task per connection in a nursery it owns.  A connection from
outside the console ACL, or while no key is set, is closed at once; a client
whose message does not decrypt, that sends a message over ``MAX_COMMAND`` or
that stops in the middle of one, is closed.  The command itself runs in the
*current* configuration's evaluator (``ServerConfig.lua_eval``), synchronously:
Lua cannot be interrupted, so a command that loops holds the server, as it
does in dnsdist.  The console runs trusted code: whoever has the key can do
anything the configuration can.

The client side (``ConsoleClient``, ``client_main``) is a blocking client for
the command line, as ``dnsdist -c``.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import secrets
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, NoReturn, Protocol, TextIO

import trio
from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

from triodist.backends.server import StreamReader
from triodist.frontends.common import bind_tcp, client_ip
from triodist.rules.matchers import NetmaskGroup, parse_network
from triodist.wire.message import ComboAddress

if TYPE_CHECKING:
    from triodist.server import ServerConfig

log = logging.getLogger("triodist.ops.console")

DEFAULT_PORT = 5199
DEFAULT_ADDRESS = ("127.0.0.1", DEFAULT_PORT)
#: dnsdist's console ACL before a configuration changes it.
DEFAULT_CONSOLE_ACL = ("127.0.0.0/8", "::1/128")
#: dnsdist's defaults for setConsoleMaximumConcurrentConnections (0: no bound) and
#: setConsoleOutputMaxMsgSize (the largest message a client accepts).
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MAX_OUTPUT = 10_000_000

KEY_BYTES = 32
NONCE_BYTES = 24
MAC_BYTES = 16
#: The largest command the server reads, encrypted (triodist's bound: dnsdist reads up
#: to setConsoleOutputMaxMsgSize, 10 MB).  A Lua line longer than 1 MiB is no command.
MAX_COMMAND = 1 << 20
#: Once a client has started a message (or connected), the rest must come within this
#: many seconds.  Between messages a connection may stay idle as long as it likes, as
#: an interactive session does.
FRAME_TIMEOUT = 10.0
#: How long the client waits for the server's nonce and for the first answer.
CLIENT_TIMEOUT = 10.0

_LENGTH = struct.Struct("!I")
_COUNTER = struct.Struct("!I")
# accept() errors that mean "out of a resource for now": wait a little and go on, as
# trio.serve_listeners does.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_NO_KEY_WARNING = (
    "Warning, the console has been enabled via 'controlSocket()' but no key has been set "
    "with 'setKey()' so all connections will fail until a key has been set"
)


class ConsoleError(Exception):
    """A console conversation failed: closed, refused, or a message that does not decrypt."""


# --- configuration ------------------------------------------------------------------------


@dataclass
class ConsoleSettings:
    """What ``controlSocket``, ``setKey`` and the ``setConsole*`` functions ask for."""

    #: Where to listen (one ``controlSocket`` call each); empty: no console.
    addresses: list[tuple[str, int]] = field(default_factory=list)
    #: The shared secret (32 bytes); ``None`` until ``setKey``: every connection refused.
    key: bytes | None = None
    acl: NetmaskGroup = field(default_factory=lambda: NetmaskGroup(DEFAULT_CONSOLE_ACL))
    #: Connections at once; over it a new one is closed.  0: no bound (as dnsdist).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: The largest answer sent, and accepted by the client (MAC included).
    max_output_size: int = DEFAULT_MAX_OUTPUT
    #: Log every connection and disconnection (``setConsoleConnectionsLogging``).
    log_connections: bool = True


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1"`` → (127.0.0.1, 5199); ``"[::1]:5300"`` → (::1, 5300)."""
    address = ComboAddress.parse(text, DEFAULT_PORT)
    if not 0 <= address.port <= 65535:
        raise ValueError(f"port {address.port} out of range")
    return address.toString(), address.port


def decode_key(text: str) -> bytes:
    """The key of ``setKey``/``-k``: base64 of exactly 32 bytes, else ``ValueError``."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"unable to decode '{text}' as Base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"the key must be {KEY_BYTES} bytes, as makeKey() prints them, "
            f"not {len(key)} (from '{text}')"
        )
    return key


def new_key() -> str:
    """A new random key, in base64 (what ``makeKey()`` prints in a ``setKey`` line)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _fail(message: str) -> NoReturn:
    # config.api imports server, which imports this module: ConfigError is imported
    # when a configuration is running, never while the modules load.
    from triodist.config.api import ConfigError

    raise ConfigError(message)


def _count(value: Any, function: str, *, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        _fail(f"{function}: expected a whole number, got {value!r}")
    if value < 0 or (maximum is not None and value > maximum):
        bound = f"0 to {maximum}" if maximum is not None else "a number >= 0"
        _fail(f"{function}: expected {bound}, got {value!r}")
    return int(value)


def console_functions(
    settings: ConsoleSettings, out: Callable[[], TextIO]
) -> dict[str, Callable[..., Any]]:
    """The console's configuration functions, by dnsdist's names.  ``out`` gives where
    they print (the console's output while a console command runs)."""

    def controlSocket(address: Any = None) -> None:
        text = "127.0.0.1:5199" if address is None else str(address)
        try:
            settings.addresses.append(parse_address(text))
        except ValueError as exc:
            _fail(f"controlSocket: invalid address '{text}': {exc}")

    def setKey(key: Any) -> None:
        try:
            settings.key = decode_key(str(key))
        except ValueError as exc:
            _fail(f"setKey: {exc}")

    def makeKey() -> None:
        print(f'setKey("{new_key()}")', file=out())

    def _masks(masks: Any, function: str) -> list[str]:
        if isinstance(masks, NetmaskGroup):
            return masks.toString().split(", ") if masks.size() else []
        if isinstance(masks, dict):
            items = list(masks.values())
        elif isinstance(masks, list | tuple):
            items = list(masks)
        else:
            items = [masks]
        texts = [str(mask) for mask in items]
        probe = NetmaskGroup()
        for text in texts:
            try:
                probe.addMask(text)
            except ValueError:
                _fail(f"{function}: invalid netmask '{text}'")
        return texts

    def setConsoleACL(masks: Any) -> None:
        settings.acl = NetmaskGroup(_masks(masks, "setConsoleACL"))

    def addConsoleACL(mask: Any) -> None:
        settings.acl.addMasks(_masks(mask, "addConsoleACL"))

    def showConsoleACL() -> None:
        text = settings.acl.toString()
        # IPv4 first, then IPv6, each in address order: dnsdist's order.
        for mask in sorted(text.split(", ") if text else [], key=_mask_order):
            print(mask, file=out())

    def setConsoleMaximumConcurrentConnections(count: Any) -> None:
        settings.max_connections = _count(count, "setConsoleMaximumConcurrentConnections")

    def setConsoleConnectionsLogging(enabled: Any) -> None:
        settings.log_connections = bool(enabled)

    def setConsoleOutputMaxMsgSize(size: Any) -> None:
        settings.max_output_size = _count(size, "setConsoleOutputMaxMsgSize", maximum=0xFFFFFFFF)

    def testCrypto(message: Any = None) -> None:
        text = "testStringForCryptoTests" if message is None else str(message)
        print(check_crypto(settings.key, text.encode("latin-1", "replace")), file=out())

    return {
        "controlSocket": controlSocket,
        "setKey": setKey,
        "makeKey": makeKey,
        "setConsoleACL": setConsoleACL,
        "addConsoleACL": addConsoleACL,
        "showConsoleACL": showConsoleACL,
        "setConsoleMaximumConcurrentConnections": setConsoleMaximumConcurrentConnections,
        "setConsoleConnectionsLogging": setConsoleConnectionsLogging,
        "setConsoleOutputMaxMsgSize": setConsoleOutputMaxMsgSize,
        "testCrypto": testCrypto,
    }


def _mask_order(mask: str) -> tuple[int, int, int]:
    network = parse_network(mask.lstrip("!"))
    return network.version, int(network.network_address), network.prefixlen


def check_crypto(key: bytes | None, message: bytes) -> str:
    """dnsdist's ``testCrypto()``: a round trip with two consecutive nonces."""
    if key is None or len(key) != KEY_BYTES:
        size = 0 if key is None else len(key)
        return (
            f"Crypto failed: Invalid encryption key of size {size}, use setKey() to set a valid key"
        )
    nonce = secrets.token_bytes(NONCE_BYTES)
    sender, receiver = SecretChannel(key, nonce, nonce), SecretChannel(key, nonce, nonce)
    try:
        for _ in range(2):
            if receiver.open(sender.seal(message)) != message:
                return "Crypto failed.. (the decoded value does not match the cleartext one)"
    except ConsoleError as exc:
        return f"Crypto failed: {exc}"
    return "Everything is ok!"


# --- the protocol -------------------------------------------------------------------------


def merge_nonces(lower: bytes, higher: bytes) -> bytes:
    """The first half of ``lower`` and the second half of ``higher``."""
    half = NONCE_BYTES // 2
    return lower[:half] + higher[half:]


def increment_nonce(nonce: bytes) -> bytes:
    """The next nonce: the first four bytes are a big-endian counter (wrapping)."""
    (count,) = _COUNTER.unpack_from(nonce)
    return _COUNTER.pack((count + 1) & 0xFFFFFFFF) + nonce[_COUNTER.size :]


class SecretChannel:
    """One connection's encryption, either end, without I/O: ``seal`` what is sent,
    ``open`` what is received; each advances its own direction's nonce."""

    def __init__(self, key: bytes, ours: bytes, theirs: bytes) -> None:
        if len(key) != KEY_BYTES or len(ours) != NONCE_BYTES or len(theirs) != NONCE_BYTES:
            raise ValueError("a console key is 32 bytes and a nonce 24")
        self._key = key
        self._reading = merge_nonces(ours, theirs)
        self._writing = merge_nonces(theirs, ours)

    def seal(self, plaintext: bytes) -> bytes:
        # crypto_secretbox's output here is the MAC followed by the ciphertext: the
        # same bytes as crypto_secretbox_easy, which dnsdist uses.
        box = crypto_secretbox(plaintext, self._writing, self._key)
        self._writing = increment_nonce(self._writing)
        return box

    def open(self, box: bytes) -> bytes:
        if len(box) < MAC_BYTES:
            raise ConsoleError(f"Could not decrypt message of size {len(box)}")
        try:
            plaintext = crypto_secretbox_open(box, self._reading, self._key)
        except CryptoError:
            raise ConsoleError(
                "Could not decrypt message, please check that the key configured with "
                "setKey() is correct"
            ) from None
        self._reading = increment_nonce(self._reading)
        return plaintext


def frame(payload: bytes) -> bytes:
    """A message on the wire: its length (4 bytes, big-endian), then the message."""
    return _LENGTH.pack(len(payload)) + payload


def text_to_wire(text: str) -> bytes:
    """Console text as bytes: UTF-8, with bytes that were not UTF-8 given back as they came."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def text_from_wire(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --- the server ---------------------------------------------------------------------------


class ConsoleHost(Protocol):
    """What the console serves: the running server (its configuration may be replaced)."""

    @property
    def config(self) -> ServerConfig: ...


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


def _show(peer: Any) -> str:
    host, port = str(peer[0]), int(peer[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
                where = _show((address, port))
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
        log.info("Accepting control connections on %s", _show(local))
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
            client = _show(peer)
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
            header = await reader.exactly(_LENGTH.size)
            if header is None:
                raise ConsoleError("closed in the middle of a message")
            (length,) = _LENGTH.unpack(header)
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


def _bounded(config: ServerConfig, reply: str) -> bytes:
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


# --- the client ---------------------------------------------------------------------------


class ConsoleClient:
    """A blocking console client, as ``dnsdist -c``: connect, then one ``command`` at a time."""

    def __init__(
        self,
        address: tuple[str, int],
        key: bytes,
        *,
        max_reply: int = DEFAULT_MAX_OUTPUT,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self.address = address
        self._key = key
        self._max_reply = max_reply
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._channel: SecretChannel | None = None

    def connect(self) -> None:
        """Connect, exchange nonces and check the key with an empty command."""
        sock = socket.create_connection(self.address, timeout=self._timeout)
        self._sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ours = secrets.token_bytes(NONCE_BYTES)
            sock.sendall(ours)
            theirs = self._exactly(NONCE_BYTES)
            if theirs is None:
                raise ConsoleError(
                    "The server closed the connection right away: the console refused "
                    "this client (its ACL, or it has no key set)"
                )
            self._channel = SecretChannel(self._key, ours, theirs)
            try:
                self.command(b"")
            except TimeoutError:
                raise ConsoleError(
                    f"no answer within {self._timeout:g} s: is this a console?"
                ) from None
            except (ConsoleError, OSError) as exc:
                raise ConsoleError(
                    "The server closed the connection right away, likely indicating a key "
                    "mismatch. Please check your setKey() directive."
                ) from exc
            # A command may take as long as it takes.
            sock.settimeout(None)
        except BaseException:
            self.close()
            raise

    def command(self, line: bytes) -> bytes:
        """Send one line, return the server's answer (what the line printed)."""
        if self._sock is None or self._channel is None:
            raise ConsoleError("not connected")
        self._sock.sendall(frame(self._channel.seal(line)))
        header = self._exactly(_LENGTH.size)
        if header is None:
            raise ConsoleError("Connection closed by the server.")
        (length,) = _LENGTH.unpack(header)
        if length > self._max_reply:
            raise ConsoleError(
                f"The answer is {length} bytes, more than the maximum of {self._max_reply} "
                "(setConsoleOutputMaxMsgSize)"
            )
        if length == 0:
            return b""
        box = self._exactly(length)
        if box is None:
            raise ConsoleError("Connection closed by the server.")
        return self._channel.open(box)

    def _exactly(self, size: int) -> bytes | None:
        assert self._sock is not None
        data = bytearray()
        while len(data) < size:
            chunk = self._sock.recv(min(size - len(data), 65536))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ConsoleClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_main(
    config: str | None,
    address: str | None,
    key: str | None,
    command: str | None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[bytes] | None = None,
) -> int:
    """``triodist console``: the address and key from the configuration's
    ``controlSocket``/``setKey`` (when ``config`` is given), ``address``/``key`` over
    them; one ``command``, or lines from ``stdin`` until EOF, ``quit`` or ``exit``."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout.buffer if stdout is None else stdout
    settings = ConsoleSettings()
    if config:
        # Running the configuration records what it asks for and binds nothing (no
        # server is started here).  Imported here: config imports this module.
        from triodist.config.api import ConfigAPI, ConfigError
        from triodist.config.runtime import LuaConfig

        api = ConfigAPI()
        logging.disable(logging.WARNING)  # what the configuration logs is the server's
        try:
            LuaConfig(api).run_file(config)
        except ConfigError as exc:
            print(f"Error in configuration: {exc}", file=sys.stderr)
            return 1
        finally:
            logging.disable(logging.NOTSET)
        settings = api.config.console
    try:
        target = (
            parse_address(address)
            if address
            else (settings.addresses[0] if settings.addresses else DEFAULT_ADDRESS)
        )
    except ValueError as exc:
        print(f"Invalid console address '{address}': {exc}", file=sys.stderr)
        return 2
    try:
        secret = decode_key(key) if key is not None else settings.key
    except ValueError as exc:
        print(f"Invalid key given with -k: {exc}", file=sys.stderr)
        return 2
    if secret is None:
        print(
            "The currently configured console key is not valid, please configure a valid "
            "key using the setKey() directive (in the configuration given with -C) or -k",
            file=sys.stderr,
        )
        return 1
    shown = _show(target)
    client = ConsoleClient(target, secret, max_reply=settings.max_output_size)
    try:
        client.connect()
    except (OSError, ConsoleError) as exc:
        print(f"Unable to use the console at {shown}: {exc}", file=sys.stderr)
        return 1
    try:
        if command is not None:
            return _run_one(client, command, stdout)
        interactive = stdin.isatty()
        failed = False
        while True:
            if interactive:
                try:
                    line = input("> ")
                except EOFError:
                    break
            else:
                raw = stdin.readline()
                if not raw:
                    break
                line = raw.rstrip("\r\n")
            if line.strip() in ("quit", "exit"):
                break
            if line.strip() in ("help", "?"):
                line = "help()"
            if not line.strip():
                continue  # no need to send an empty line (as dnsdist)
            status = _run_one(client, line, stdout)
            if status == COMMAND_FAILED:
                # A session goes on after an error, as at dnsdist's console; commands
                # piped in say at the end that one of them failed.
                failed = failed or not interactive
            elif status:
                return status
        return COMMAND_FAILED if failed else 0
    finally:
        client.close()


#: ``console`` exits with this when a command failed (a Lua error); 1 is for a console
#: it could not use, 2 for a command line it could not understand.
COMMAND_FAILED = 3


def command_failed(reply: bytes) -> bool:
    """Whether a console answer reports an error. The protocol has no status, only text:
    dnsdist (and triodist) put an error last, as "Error: ...", without the final newline
    that printed lines and returned values always end with."""
    if not reply or reply.endswith(b"\n"):
        return False
    return reply.rsplit(b"\n", 1)[-1].startswith(b"Error: ")


def _run_one(client: ConsoleClient, line: str, stdout: IO[bytes]) -> int:
    """Send one line and print its answer: 0, ``COMMAND_FAILED`` for an error that the
    answer reports, 1 when the console could not be used."""
    try:
        reply = client.command(text_to_wire(line))
    except (OSError, ConsoleError) as exc:
        print(f"Console at {_show(client.address)}: {exc}", file=sys.stderr)
        return 1
    failed = command_failed(reply)
    # dnsdist sends an error without a final newline: add one, for the terminal.
    if reply and not reply.endswith(b"\n"):
        reply += b"\n"
    stdout.write(reply)
    stdout.flush()
    return COMMAND_FAILED if failed else 0
