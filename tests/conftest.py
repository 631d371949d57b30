"""Shared fixtures for the end-to-end tests: a fake backend, triodist in-process, queries.

Every test talks to triodist through real loopback sockets:

* ``auth`` is an :class:`~triodist.testing.backend.AuthServer` (the backend), already
  listening; ``make_auth`` starts more of them (several backends, pools).
* ``start_triodist(lua_text)`` writes the configuration to ``tmp_path``, loads it
  the way ``triodist serve`` does (``triodist.cli.load``), starts a
  :class:`~triodist.server.DNSServer` on ``127.0.0.1:0`` and returns a
  :class:`Triodist` handle: the server, its address, query helpers.  In the
  configuration, ``$BACKEND`` stands for the ``auth`` backend's ``host:port``.
* ``udp_query`` / ``tcp_query`` send one query and return the reply, or ``None``
  when none comes in time.  These helpers take a ``timeout`` (against the
  ASYNC109 advice) because "no answer within t" is the result several tests
  assert, not an error to be handled by the caller's cancel scope.

Every async test runs inside an outer ``trio.fail_after(GUARD)`` (see
``pytest_runtest_call`` below), so a hang fails the test instead of stalling the
run.  Under the ``autojump_clock`` fixture the guard is in virtual time.

The tests that use ``autojump_clock`` also use real loopback sockets.  The clock
jumps only when every task is blocked and no I/O is ready; a datagram or TCP
segment sent on loopback is already queued at the receiver when ``send``
returns, so the jumps happen only when the processes really wait (checked under
heavy parallel load).
"""

from __future__ import annotations

import functools
import inspect
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype
import pytest
import trio

from triodist.cli import load
from triodist.config.runtime import LuaConfig
from triodist.server import DNSServer
from triodist.testing.backend import DEFAULT_ZONE, AuthServer

# The plugin's ``triodist`` fixture, for the suite's own policy tests. Installed, triodist
# loads it through its pytest11 entry point too; naming it here also works from a working
# tree, and the two do not clash (triodist/testing/autoload.py says why).
pytest_plugins = ["triodist.testing.plugin"]

Address = tuple[str, int]
Reply = dns.message.Message | None

GUARD = 15.0  # outer time limit of each async test, seconds
VIRTUAL_GUARD = 600.0  # the same under a mock clock, in virtual seconds
TIMEOUT = 2.0  # how long a query helper waits for a reply by default

_U16 = struct.Struct("!H")


# --- the outer guard ---------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Function) -> Iterator[None]:
    """Run every async test inside ``trio.fail_after(GUARD)``.

    This wrapper runs before pytest-trio's, which then runs the guarded function.
    """
    test = getattr(item, "obj", None)
    if test is not None and inspect.iscoroutinefunction(test):

        @functools.wraps(test)
        async def guarded(**kwargs: Any) -> Any:
            # Under a mock clock the guard is in virtual time: a test may sleep for
            # minutes there, and a hang still fails at once (the clock jumps to it).
            virtual = any(isinstance(value, trio.abc.Clock) for value in kwargs.values())
            with trio.fail_after(VIRTUAL_GUARD if virtual else GUARD):
                return await test(**kwargs)

        item.obj = guarded
    yield


# --- the backend -------------------------------------------------------------------------


@pytest.fixture
async def make_auth(nursery: trio.Nursery) -> Callable[..., Awaitable[AuthServer]]:
    """Start an AuthServer (keyword arguments go to its constructor); it stops with the test."""

    async def start(**kwargs: Any) -> AuthServer:
        server = AuthServer(**kwargs)
        await nursery.start(server.serve, "127.0.0.1", 0)
        return server

    return start


@pytest.fixture
async def auth(make_auth: Callable[..., Awaitable[AuthServer]]) -> AuthServer:
    """The default backend: the example.org. zone, answering."""
    return await make_auth()


#: A zone whose ``huge.example.org. TXT`` answer is about 58 KB: one record (so its
#: bytes are the same in every answer) of 230 strings.
HUGE_ZONE = (
    DEFAULT_ZONE + "huge IN TXT " + " ".join(f'"{i:03d}-{"h" * 245}"' for i in range(230)) + "\n"
)


@pytest.fixture
async def huge_auth(make_auth: Callable[..., Awaitable[AuthServer]]) -> AuthServer:
    """A backend that also serves :data:`HUGE_ZONE`'s ``huge.example.org. TXT``."""
    return await make_auth(zone_text=HUGE_ZONE)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp that another user may search but not write:
    for a server that drops privileges and must read its configuration again, or for user
    nobody reaching a socket made 0666 in it (pytest's own directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="triodist-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        # Files the dropped server or nobody made in it are the test's to remove too.
        shutil.rmtree(path, ignore_errors=True)


def hostport(server: AuthServer) -> str:
    assert server.address is not None
    return f"{server.address[0]}:{server.address[1]}"


def free_port() -> int:
    """A port number free for both UDP and TCP on 127.0.0.1 (at the time of asking)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


# --- triodist in-process -----------------------------------------------------------------


@dataclass
class Triodist:
    """A running triodist: what a test needs to talk to it and to look inside."""

    server: DNSServer
    lua: LuaConfig
    address: Address  # UDP and TCP listen on the same address
    config_path: Path

    @property
    def stats(self) -> Any:
        return self.server.stats

    async def udp(
        self,
        msg: dns.message.Message | bytes,
        timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
    ) -> Reply:
        return await udp_query(self.address, msg, timeout)

    async def tcp(
        self,
        msg: dns.message.Message | bytes,
        timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
    ) -> Reply:
        return await tcp_query(self.address, msg, timeout)

    async def ask(
        self,
        name: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
    ) -> dns.message.Message | None:
        msg = query(name, rdtype)
        return await (self.tcp if tcp else self.udp)(msg, timeout)


StartTriodist = Callable[..., Awaitable[Triodist]]


async def accounted(t: Triodist, timeout: float = 2.0) -> None:  # noqa: ASYNC109
    """Wait until every query received is counted as answered or dropped, and fail with
    the counters if that does not come about.

    An answer's bytes reach the client in the same step as the write that sends them,
    and the server counts it once that write returns: a test that has its last answer
    may look at the counters a moment before they include it."""
    stats = t.stats

    def balanced() -> bool:
        return bool(stats["received"] == stats["answered"] + stats["dropped"])

    try:
        await until(balanced, timeout)
    except AssertionError:
        raise AssertionError(f"not accounted within {timeout}s: {dict(stats)}") from None


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 - the bound is part of what is asserted
    step: float = 0.001,
) -> float:
    """Wait until ``condition()`` holds, and fail if it does not within ``timeout``; the
    time (``trio.current_time()``) at which it was seen to hold, for the tests that
    measure when a state arrived.

    For state that changes on the far side of a socket or in another process, where no
    event of ours can signal it; ``condition`` may be a coroutine function.  Under
    ``autojump_clock`` the polling costs no wall time (and ``step`` and the time
    returned are virtual)."""
    with trio.move_on_after(timeout):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return trio.current_time()
            await trio.sleep(step)
    raise AssertionError(f"not within {timeout}s: {getattr(condition, '__name__', condition)}")


async def whoami(
    t: Triodist,
    *,
    tcp: bool = False,
    timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
) -> str | None:
    """Which backend answered: the name an AuthServer puts in ``whoami.example.org. TXT``,
    or ``None`` when no answer came."""
    reply = await t.ask("whoami.example.org.", "TXT", tcp=tcp, timeout=timeout)
    if reply is None:
        return None
    (text,) = records(reply)  # 'whoami.example.org. TXT "name"'
    return text.split()[-1].strip('"')


@pytest.fixture
async def start_triodist(
    nursery: trio.Nursery, tmp_path: Path, auth: AuthServer
) -> AsyncIterator[StartTriodist]:
    """``await start_triodist(lua_text, backend=auth)``: load and start triodist.

    ``$BACKEND`` in the text is replaced by ``backend``'s ``host:port`` (by default
    the ``auth`` fixture's).  Listens on 127.0.0.1:0.
    """
    started: list[DNSServer] = []
    counter = 0

    async def start(lua_text: str, backend: AuthServer | None = None) -> Triodist:
        nonlocal counter
        lua_text = lua_text.replace("$BACKEND", hostport(backend or auth))
        counter += 1
        path = tmp_path / f"rules{counter}.lua"
        path.write_text(lua_text)
        lua = load(str(path), [], ["127.0.0.1:0"])
        server = DNSServer(lua.api.config)
        bound: list[Address] = await nursery.start(server.run)
        started.append(server)
        return Triodist(server, lua, bound[0], path)

    yield start
    # Stop the servers the way a SIGTERM does: no sockets are left to the garbage collector.
    for server in started:
        server.config.settings.grace_period = 0
        server.request_shutdown()
    for server in started:
        await server.wait_stopped()


# --- queries -------------------------------------------------------------------------------


def query(
    name: str,
    rdtype: str = "A",
    *,
    rd: bool = True,
    edns: bool = False,
    rdclass: str = "IN",
) -> dns.message.Message:
    msg = dns.message.make_query(name, rdtype, rdclass, use_edns=0 if edns else False)
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg


def _wire(msg: dns.message.Message | bytes) -> bytes:
    return msg if isinstance(msg, bytes) else msg.to_wire()


async def udp_query(
    address: Address,
    msg: dns.message.Message | bytes,
    timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
) -> dns.message.Message | None:
    """Send one datagram; the reply with the same ID, or ``None`` after ``timeout``."""
    wire = _wire(msg)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(wire)
        with trio.move_on_after(timeout):
            while True:
                data = await sock.recv(65535)
                if data[:2] == wire[:2]:
                    return dns.message.from_wire(data)
    return None


async def udp_silent(
    address: Address,
    data: bytes,
    timeout: float = 0.5,  # noqa: ASYNC109 - silence is an answer
) -> bool:
    """Send a datagram; True if nothing at all comes back within ``timeout``."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(data)
        with trio.move_on_after(timeout):
            await sock.recv(65535)
            return False
    return True


def frame(wire: bytes) -> bytes:
    return _U16.pack(len(wire)) + wire


async def read_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """One length-prefixed message from ``stream`` (``None`` when it closes first)."""
    while True:
        if len(buffer) >= 2:
            (length,) = _U16.unpack_from(buffer, 0)
            if len(buffer) >= 2 + length:
                data = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                return data
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return None
        if not chunk:
            return None
        buffer += chunk


async def tcp_query(
    address: Address,
    msg: dns.message.Message | bytes,
    timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
) -> dns.message.Message | None:
    """One query over a new TCP connection; the reply, or ``None`` (closed or timed out)."""
    wire = _wire(msg)
    with trio.move_on_after(timeout):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(frame(wire))
            data = await read_frame(stream, bytearray())
            return None if data is None else dns.message.from_wire(data)
    return None


async def tcp_pipelined(
    address: Address,
    msgs: Sequence[dns.message.Message],
    timeout: float = TIMEOUT,  # noqa: ASYNC109 - silence is an answer
) -> dict[int, dns.message.Message]:
    """Send every query at once on one connection; the replies received, by ID."""
    replies: dict[int, dns.message.Message] = {}
    with trio.move_on_after(timeout):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(b"".join(frame(m.to_wire()) for m in msgs))
            buffer = bytearray()
            while len(replies) < len(msgs):
                data = await read_frame(stream, buffer)
                if data is None:
                    break
                reply = dns.message.from_wire(data)
                replies[reply.id] = reply
    return replies


@dataclass
class TCPOutcome:
    """What the server did on one connection: the replies, by ID, and whether it closed
    the connection within the time the client waited."""

    replies: dict[int, dns.message.Message]
    closed: bool
    elapsed: float = field(default=0.0, compare=False)  # until closed, or the time waited


#: A query dropped over TCP: no answer, and the connection closed (as dnsdist closes it).
CLOSED_UNANSWERED = TCPOutcome({}, closed=True)

#: How long :func:`tcp_session` waits by default: a dropped query's connection closes at
#: once, and this stays well below the server's idle timeout (``setTCPRecvTimeout``, 2 s
#: by default), so that a connection closed for being idle is not taken for a drop.
CLOSE_WAIT = 0.5


async def tcp_session(
    address: Address,
    msgs: Sequence[dns.message.Message | bytes],
    timeout: float = CLOSE_WAIT,  # noqa: ASYNC109 - an open connection is an answer
) -> TCPOutcome:
    """Send every query at once on one connection, then read until the server closes it
    (end of stream or reset) or ``timeout`` passes.

    Unlike :func:`tcp_query`, this tells a connection the server closed from one it left
    open: "no answer" over TCP is two different behaviours."""
    replies: dict[int, dns.message.Message] = {}
    start = trio.current_time()
    with trio.move_on_after(timeout):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            try:
                await stream.send_all(b"".join(frame(_wire(m)) for m in msgs))
            except trio.BrokenResourceError:
                return TCPOutcome(replies, True, trio.current_time() - start)
            buffer = bytearray()
            while True:
                data = await read_frame(stream, buffer)
                if data is None:
                    return TCPOutcome(replies, True, trio.current_time() - start)
                reply = dns.message.from_wire(data)
                replies[reply.id] = reply
    return TCPOutcome(replies, False, trio.current_time() - start)


def records(reply: dns.message.Message | None, section: str = "answer") -> set[str]:
    """The records of a section as ``"name TYPE rdata"`` texts (TTL left out)."""
    assert reply is not None, "no reply"
    return {
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in getattr(reply, section)
        for rd in rrset
    }


def ttls(reply: dns.message.Message | None) -> dict[str, int]:
    """TTL of each answer RRset, by ``"name TYPE"``."""
    assert reply is not None, "no reply"
    return {f"{r.name} {dns.rdatatype.to_text(r.rdtype)}": r.ttl for r in reply.answer}
