"""The console's client side, for the command line, as ``dnsdist -c``: ``ConsoleClient``
(blocking: connect, then one command at a time) and ``client_main`` (``triodist
console``: one command, or lines from stdin).

The address and key come from the settings it is handed (the configuration's
``controlSocket`` and ``setKey``, read by the command line) or from the command line
itself.  Imports nothing above triodist.ops.
"""

from __future__ import annotations

import secrets
import socket
import sys
from typing import IO

from triodist.ops.console.protocol import (
    LENGTH,
    NONCE_BYTES,
    ConsoleError,
    SecretChannel,
    frame,
    text_to_wire,
)
from triodist.ops.console.settings import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_OUTPUT,
    ConsoleSettings,
    decode_key,
    parse_address,
    show_address,
)

#: How long the client waits for the server's nonce and for the first answer.
CLIENT_TIMEOUT = 10.0


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
        header = self._exactly(LENGTH.size)
        if header is None:
            raise ConsoleError("Connection closed by the server.")
        (length,) = LENGTH.unpack(header)
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
    settings: ConsoleSettings | None,
    address: str | None,
    key: str | None,
    command: str | None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[bytes] | None = None,
) -> int:
    """``triodist console``: the address and key from ``settings`` (the configuration's
    ``controlSocket``/``setKey``, when one is given), ``address``/``key`` over them;
    one ``command``, or lines from ``stdin`` until EOF, ``quit`` or ``exit``."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout.buffer if stdout is None else stdout
    settings = ConsoleSettings() if settings is None else settings
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
    shown = show_address(target)
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
        print(f"Console at {show_address(client.address)}: {exc}", file=sys.stderr)
        return 1
    failed = command_failed(reply)
    # dnsdist sends an error without a final newline: add one, for the terminal.
    if reply and not reply.endswith(b"\n"):
        reply += b"\n"
    stdout.write(reply)
    stdout.flush()
    return COMMAND_FAILED if failed else 0
