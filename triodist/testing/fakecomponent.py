"""A fake asynchronous component: the outside program a configuration hands queries to.

A configuration that suspends queries sends them through ``newNetworkEndpoint(path)`` to
a component, and learns its verdicts on a listening socket of its own
(``newNetworkListener():addUnixListeningEndpoint(path, id, callback)``). In a test,
:class:`FakeComponent` plays that component::

    def verdict(raw: bytes) -> bytes | None:
        query = dns.message.from_wire(raw)
        return f"{query.id} refuse".encode()   # whatever the configuration's Lua reads

    proxy = await triodist.start("rules.lua", components={
        "/run/triodist/filter.sock": verdict,                     # answers at once
        "/run/triodist/slow.sock": FakeComponent(verdict, delay=0.2),
    })

It binds the endpoint's socket (moved into the test's directory, as every unix path of
the configuration is), calls ``answer`` with each datagram it receives, and sends what it
returns, as one datagram, to the configuration's listening endpoint: the only one, or
the one ``reply_to`` names (a path as the configuration writes it). ``None``: no answer,
ever (the query then waits for its timeout). The bytes are the test's to make: the
component knows no protocol.

``delay`` holds each answer that long on Trio's clock (under ``autojump_clock``: no wall
time); each waits in a task of its own, so a slow answer does not hold back the next
datagram. At most :data:`MAX_PENDING` wait at once; over that, a datagram is counted
(``overflows``) and not answered.

An exception raised by ``answer`` is the test's own error: it fails the test; so does an
answer too long for one datagram (``OSError`` EMSGSIZE).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections import deque
from collections.abc import Callable

import trio

__all__ = ["MAX_PENDING", "Answer", "FakeComponent"]

#: What a test gives for a component: the received datagram -> the answer, or None.
Answer = Callable[[bytes], bytes | None]

#: Answers waiting out their delay at once, at most.
MAX_PENDING = 10_000
#: send() errors that mean the configuration's socket is gone (it may be back).
_GONE = frozenset({errno.ECONNREFUSED, errno.ENOTCONN, errno.ENOENT, errno.ECONNRESET})
#: Datagrams kept in :attr:`FakeComponent.received` (the oldest are forgotten).
HISTORY = 10_000


class FakeComponent:
    """An external component that answers each datagram with ``answer(datagram)``.

    :param answer: what to send back for a datagram; ``None``: nothing.
    :param delay: seconds (Trio's clock) before each answer is sent.
    :param reply_to: the listening endpoint to answer to, as the configuration writes its
        path; ``None``: the configuration's only one.
    """

    def __init__(
        self, answer: Answer, *, delay: float = 0.0, reply_to: str | bytes | None = None
    ) -> None:
        if not callable(answer):
            raise TypeError(f"a component's answer must be a function, got {answer!r}")
        if not delay >= 0:
            raise ValueError(f"delay={delay!r}: a number of seconds, 0 or more")
        self.answer = answer
        self.delay = delay
        self.reply_to = reply_to
        #: The datagrams received, oldest first (the last :data:`HISTORY`).
        self.received: deque[bytes] = deque(maxlen=HISTORY)
        #: Answers sent; datagrams left unanswered over :data:`MAX_PENDING`; answers that
        #: could not be sent (the configuration's socket is gone).
        self.sent = 0
        self.overflows = 0
        self.unsent = 0
        #: Where it listens and where it answers (the paths used, once serving).
        self.path: bytes | None = None
        self.reply_path: bytes | None = None
        self._pending = 0
        self._out: socket.socket | None = None
        self._sending = trio.Lock()

    def __repr__(self) -> str:
        return f"FakeComponent({self.answer!r}, delay={self.delay!r})"

    async def serve(
        self,
        path: bytes,
        reply_path: bytes | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind ``path``, report, then answer until cancelled; the socket file is removed
        at the end."""
        self.path, self.reply_path = path, reply_path
        # Bound here, not by trio's bind: that one walks the path in a thread, and under
        # autojump_clock the clock jumps to the next deadline while the thread runs.
        plain = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            plain.bind(path)
        except OSError:
            plain.close()
            raise
        sock = trio.socket.from_stdlib_socket(plain)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    data = await sock.recv(256 * 1024)
                    self.received.append(data)
                    if self._pending >= MAX_PENDING:
                        self.overflows += 1
                        continue
                    self._pending += 1
                    nursery.start_soon(self._reply, data)
        finally:
            sock.close()
            if self._out is not None:
                self._out.close()
            if not path.startswith(b"\0"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def _reply(self, data: bytes) -> None:
        try:
            if self.delay:
                await trio.sleep(self.delay)
            answer = self.answer(data)
            if answer is not None:
                await self._send(bytes(answer))
        finally:
            self._pending -= 1

    async def _send(self, data: bytes) -> None:
        """Send one answer; while the configuration's queue is full, wait for it to read
        (a connected datagram socket is writable once the peer has room)."""
        if self.reply_path is None:
            raise RuntimeError(
                "the component answered, but the configuration has no listening endpoint"
            )
        async with self._sending:  # one task at a time waits on the socket
            await self._send_now(data)

    async def _send_now(self, data: bytes) -> None:
        assert self.reply_path is not None
        reconnected = False
        while True:
            if self._out is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                try:
                    sock.connect(self.reply_path)
                except OSError:
                    sock.close()
                    self.unsent += 1
                    return
                self._out = sock
            try:
                self._out.send(data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._out)
                continue
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    # The test's answer cannot be one datagram: its mistake, said.
                    exc.add_note(f"an answer of {len(data)} bytes from {self!r}")
                    raise
                self._out.close()
                self._out = None
                # The configuration's socket may be new since (a reload): once more.
                if exc.errno in _GONE and not reconnected:
                    reconnected = True
                    continue
                self.unsent += 1
                return
            self.sent += 1
            return
