"""Asynchronous processing driven by an external component over unix datagram sockets.

The configuration of dnsdist's own regression test for the feature, in our words: the
rule sends each query (and each response) to a responder, which answers "<id> <verdict>"
on triodist's listening socket according to the query name; the Lua callback resumes,
refuses, drops or rewrites the held object.

The verdicts and the timeouts, over UDP and TCP, are tested as a user tests them, with
the pytest plugin's fake component (``test_async_policies.py``). Here: the cache, a
component that dies and comes back, bad datagrams, with a component of the test's own.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio
from conftest import StartTriodist, Triodist, query, until
from test_async_policies import CONFIG as POLICY_CONFIG
from test_async_policies import LISTENER, RESPONDER, verdict_for

from triodist.testing.backend import AuthServer

# The configuration and the verdicts of test_async_policies.py, with the servers on the
# test's own backend and the socket paths the test's own component makes.
CONFIG = (
    POLICY_CONFIG.replace('address="192.0.2.1:53", name="resolver1", ', 'address="$BACKEND", ')
    .replace('address="192.0.2.2:53", name="tcp-resolver", ', 'address="$BACKEND", ')
    .replace(RESPONDER, "$RESPONDER")
    .replace(LISTENER, "$LISTENER")
)
assert CONFIG.count("$BACKEND") == 2 and "$RESPONDER" in CONFIG and "$LISTENER" in CONFIG


class Responder:
    """The external component: reads held messages, answers on triodist's socket."""

    def __init__(self, listen: Path, reply: Path) -> None:
        self.listen = listen
        self.reply = reply
        self.received = 0
        #: Cancelled to kill the component.
        self.scope = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.bind(str(self.listen))
            task_status.started()
            try:
                with self.scope:
                    await self._answer(sock)
            finally:
                self.listen.unlink(missing_ok=True)

    async def _answer(self, sock: trio.socket.SocketType) -> None:
        while True:
            data = await sock.recv(65535)
            self.received += 1
            msg = dns.message.from_wire(data)
            verdict = verdict_for(msg)
            if verdict is None:
                continue
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                await out.connect(str(self.reply))
                await out.send(f"{msg.id} {verdict}".encode())


@pytest.fixture
async def responder(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Responder]:
    r = Responder(tmp_path / "responder.sock", tmp_path / "triodist.sock")
    await nursery.start(r.serve)
    yield r


async def start(start_triodist: StartTriodist, responder: Responder, hold_ms: int) -> Triodist:
    text = (
        CONFIG.replace("$RESPONDER", str(responder.listen))
        .replace("$LISTENER", str(responder.reply))
        .replace("$TIMEOUT", str(hold_ms))
    )
    return await start_triodist(text)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cached_answers_and_cache_hit_responses(
    start_triodist: StartTriodist, auth: AuthServer, responder: Responder, transport: str
) -> None:
    t = await start(start_triodist, responder, 2000)
    ask = t.tcp if transport == "tcp" else t.udp
    name = "accept.cache.async.example.org."
    for _ in range(2):
        reply = await ask(query(name), timeout=1.5)
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert len(auth.queries_for(name)) == 1  # the second came from the cache ...
    # ... and was held twice too: the query, then the cache-hit response.
    assert t.stats["async-resumed"] == 4
    refused = "accept-then-refuse.cache.async.example.org."
    for _ in range(2):
        reply = await ask(query(refused), timeout=1.5)
        assert reply is not None and reply.rcode() == dns.rcode.REFUSED


async def test_a_dead_component_means_timeouts_and_a_restarted_one_is_reached(
    start_triodist: StartTriodist,
    auth: AuthServer,
    responder: Responder,
    tmp_path: Path,
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
) -> None:
    first = responder
    t = await start(start_triodist, first, 500)
    reply = await t.udp(query("refuse.async.example.org."), timeout=5)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    # The component dies: every held query times out and goes on (fail-open).
    first.scope.cancel()
    await until(lambda: not first.listen.exists())  # gone: its socket closed and removed
    for _ in range(3):
        reply = await t.udp(query("refuse.async.example.org."), timeout=5)
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert t.stats["async-timeouts"] >= 3
    # It comes back on the same path: the endpoint reaches it again.
    second = Responder(tmp_path / "responder.sock", tmp_path / "triodist.sock")
    await nursery.start(second.serve)
    reply = await t.udp(query("refuse.async.example.org."), timeout=5)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    assert second.received >= 1


async def test_bad_datagrams_never_stop_the_listener(
    start_triodist: StartTriodist, auth: AuthServer, responder: Responder
) -> None:
    t = await start(start_triodist, responder, 2000)
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        await sock.connect(str(responder.reply))
        for junk in (b"", b"not a number", b"65000 accept", b"1 2 3", b"x" * 60000, b"\xff\x00"):
            await sock.send(junk)
    reply = await t.udp(query("refuse.async.example.org."), timeout=1.5)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
