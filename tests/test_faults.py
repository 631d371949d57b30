"""Backends that misbehave: the server stays up, nothing poisoned reaches a client or the
cache, and every query is accounted for (received == answered + dropped).

The misbehaving backend is a plain socket in the test, so that each fault is exactly the
one named: replies with the wrong ID, from the wrong address, for another question,
garbage, a TCP connection closed in the middle of a message, a backend that goes away.
"""

from __future__ import annotations

import functools
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio
import trio.testing
from conftest import (
    CLOSED_UNANSWERED,
    StartTriodist,
    accounted,
    hostport,
    query,
    records,
    tcp_pipelined,
    tcp_session,
    udp_query,
    until,
)
from test_cli import MakeAuth, start_serve

from triodist.config.runtime import ConfigError, LuaConfig, load_config
from triodist.server import ServerConfig
from triodist.testing.backend import AuthServer

GOOD = "192.0.2.10"
ANSWER_ORG = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
EVIL = "6.6.6.6"

Reply = Callable[
    [dns.message.Message, bytes, trio.socket.SocketType, tuple[str, int]], Awaitable[None]
]


def answer(query: dns.message.Message, address: str, *, qid: int | None = None) -> bytes:
    response = dns.message.make_response(query)
    name = query.question[0].name
    response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", address))
    if qid is not None:
        response.id = qid
    return response.to_wire()


async def fake_backend(nursery: trio.Nursery, reply: Reply) -> tuple[str, int]:
    """A UDP backend on loopback that hands each query to ``reply``."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        with sock:
            while True:
                data, peer = await sock.recvfrom(65535)
                try:
                    query = dns.message.from_wire(data)
                except Exception:
                    continue
                await reply(query, data, sock, peer)

    nursery.start_soon(serve)
    host, port = sock.getsockname()
    return host, port


async def test_poisoning_attempts_are_ignored_and_the_real_answer_wins(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def poisoner(
        query: dns.message.Message, data: bytes, sock: trio.socket.SocketType, peer: tuple[str, int]
    ) -> None:
        if query.question[0].name.to_text() == "bench.test.":  # nothing else asks it
            return
        # From another address (port): dropped by the connected socket.
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            await other.bind(("127.0.0.1", 0))
            await other.sendto(answer(query, EVIL), peer)
        # Wrong ID, another question with the right ID, garbage, a bare header.
        await sock.sendto(answer(query, EVIL, qid=(query.id + 1) & 0xFFFF), peer)
        other_question = dns.message.make_query("evil.example.", "A")
        other_question.id = query.id
        await sock.sendto(answer(other_question, EVIL), peer)
        await sock.sendto(b"\x01\x02garbage", peer)
        await sock.sendto(data[:2] + b"\x81\x80" + b"\x00" * 8, peer)  # NOERROR, no question
        await trio.sleep(0.05)
        await sock.sendto(answer(query, GOOD), peer)

    host, port = await fake_backend(nursery, poisoner)
    t = await start_triodist(
        f'newServer{{address="{host}:{port}", udpTimeout=1, healthCheckMode="up"}}\n'
        "getPool(''):setCache(newPacketCache(100))\n"
    )
    first = await t.ask("www.example.org.", timeout=2)
    assert records(first) == {f"www.example.org. A {GOOD}"}
    again = await t.ask("www.example.org.", timeout=2)  # from the cache: the good answer
    assert records(again) == {f"www.example.org. A {GOOD}"}
    assert t.stats["cache-hits"] == 1
    await accounted(t)
    assert t.stats["answered"] == 2


async def test_a_backend_that_answers_garbage_costs_a_timeout_not_the_server(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def garbage(
        query: dns.message.Message, data: bytes, sock: trio.socket.SocketType, peer: tuple[str, int]
    ) -> None:
        name = query.question[0].name.to_text()
        if name == "good.example.":
            await sock.sendto(answer(query, GOOD), peer)
        else:
            for junk in (b"", b"\xff" * 3, data[:2] + b"\x80" + b"\xff" * 40, data[:12]):
                await sock.sendto(junk, peer)

    host, port = await fake_backend(nursery, garbage)
    t = await start_triodist(
        f'newServer{{address="{host}:{port}", udpTimeout=1, healthCheckMode="up"}}'
    )
    async with trio.open_nursery() as clients:
        for _ in range(5):
            clients.start_soon(t.ask, "junk.example.", "A")
    assert records(await t.ask("good.example.")) == {f"good.example. A {GOOD}"}
    await trio.sleep(1.5)
    assert t.stats["downstream-timeouts"] == 5
    await accounted(t)
    assert t.stats["dropped"] == 5 and t.stats["answered"] == 1


async def test_a_backend_that_goes_away_and_comes_back(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def good(
        query: dns.message.Message, data: bytes, sock: trio.socket.SocketType, peer: tuple[str, int]
    ) -> None:
        await sock.sendto(answer(query, GOOD), peer)

    # The port is taken by a socket that is closed at once: nothing listens there (the
    # kernel answers with port unreachable), then a backend starts on the same port.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    host, port = probe.getsockname()
    probe.close()
    t = await start_triodist(
        f'newServer{{address="{host}:{port}", udpTimeout=1, healthCheckMode="up"}}'
    )
    for _ in range(3):
        assert await t.ask("www.example.org.", timeout=1.5) is None
    back = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await back.bind((host, port))

    async def serve() -> None:
        with back:
            while True:
                data, peer = await back.recvfrom(65535)
                await good(dns.message.from_wire(data), data, back, peer)

    nursery.start_soon(serve)
    assert records(await t.ask("www.example.org.", timeout=2)) == {f"www.example.org. A {GOOD}"}
    await accounted(t)
    assert t.stats["dropped"] == 3 and t.stats["answered"] == 1


async def test_a_tcp_backend_that_closes_mid_message(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def half_then_close(stream: trio.SocketStream) -> None:
        async with stream:
            header = await stream.receive_some(2)
            if len(header) < 2:
                return
            (length,) = struct.unpack("!H", header)
            data = b""
            while len(data) < length:
                chunk = await stream.receive_some(length - len(data))
                if not chunk:
                    return
                data += chunk
            query = dns.message.from_wire(data)
            if query.question[0].name.to_text() == "good.example.":
                wire = answer(query, GOOD)
                await stream.send_all(struct.pack("!H", len(wire)) + wire)
            else:
                wire = answer(query, EVIL)
                await stream.send_all(struct.pack("!H", len(wire)) + wire[: len(wire) // 2])

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, half_then_close, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    t = await start_triodist(
        f'newServer{{address="127.0.0.1:{port}", tcpOnly=true, healthCheckMode="up"}}'
    )
    assert await t.ask("cut.example.", timeout=3) is None
    assert records(await t.ask("good.example.", timeout=3)) == {f"good.example. A {GOOD}"}
    assert records(await t.ask("good.example.", tcp=True, timeout=3)) == {f"good.example. A {GOOD}"}
    await accounted(t)
    assert t.stats["answered"] == 2 and t.stats["dropped"] == 1


async def test_a_lua_rule_that_raises_answers_servfail_and_the_server_goes_on(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        "addAction(AllRule(), LuaAction(function(dq)\n"
        '  if dq.qname:toString() == "boom.example." then error("boom") end\n'
        "  return DNSAction.None\n"
        "end))\n"
    )
    reply = await t.ask("boom.example.")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert t.stats["rule-errors"] == 1
    assert records(await t.ask("www.example.org.")) == {
        "www.example.org. A 192.0.2.10",
        "www.example.org. A 192.0.2.11",
    }
    await accounted(t)


async def test_tcp_queries_per_connection_are_bounded(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\nsetMaxTCPQueriesPerConnection(3)')
    msgs = [query(f"n{n}.example.org.") for n in range(6)]
    for n, msg in enumerate(msgs):
        msg.id = n + 1
    replies = await tcp_pipelined(t.address, msgs, timeout=2)
    assert sorted(replies) == [1, 2, 3]  # the connection closes after its third query
    await accounted(t)
    assert t.stats["received"] == 3


async def test_slowloris_connections_do_not_starve_other_clients(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    # 1,000 connections that send one byte of a length prefix and stall. They stand for
    # many clients: here they all come from 127.0.0.1, so the per-client bound is lifted.
    t = await start_triodist(
        'newServer{address="$BACKEND"}\nsetTCPRecvTimeout(2)\nsetMaxTCPConnectionsPerClient(0)'
    )
    stalled = []
    for _ in range(1000):
        stream = await trio.open_tcp_stream(*t.address)
        await stream.send_all(b"\x00")
        stalled.append(stream)
    try:
        assert records(await t.ask("www.example.org.", timeout=1)) == ANSWER_ORG
        assert records(await t.ask("www.example.org.", tcp=True, timeout=1)) == ANSWER_ORG
        assert sum(f.connections for f in t.server.tcp_frontends) >= 1000  # all accepted
        await trio.sleep(2.5)  # the idle timeout closes every stalled connection
        assert sum(f.connections for f in t.server.tcp_frontends) == 0
        for stream in stalled[:10]:
            assert await stream.receive_some(10) == b""  # closed by the server
    finally:
        for stream in stalled:
            await stream.aclose()
    await accounted(t)


async def test_hundreds_of_pipelined_queries_on_one_connection(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}')
    msgs = [query("www.example.org.") for _ in range(500)]
    for n, msg in enumerate(msgs):
        msg.id = n
    replies = await tcp_pipelined(t.address, msgs, timeout=10)
    assert sorted(replies) == list(range(500))
    assert all(records(r) == ANSWER_ORG for r in replies.values())
    await accounted(t)
    assert t.stats["answered"] == 500


async def test_queries_waiting_per_tcp_connection_are_bounded(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.mode = "slow"
    auth.delay = 1.0
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}')
    t.server.tcp_frontends[0].max_in_flight = 2  # addLocal's maxInFlight
    msgs = [query(f"n{n}.example.org.") for n in range(6)]
    for n, msg in enumerate(msgs):
        msg.id = n + 1
    start = trio.current_time()
    replies = await tcp_pipelined(t.address, msgs, timeout=10)
    assert sorted(replies) == [1, 2, 3, 4, 5, 6]
    # Two at a time against a backend that takes a second: three rounds, not one.
    assert trio.current_time() - start >= 3
    await accounted(t)


def test_listener_options_for_tcp_bounds(tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(
        'setLocal("127.0.0.1:5300", {maxConcurrentTCPConnections=2, maxInFlight=8})\n'
        'addLocal("127.0.0.1:5301")\n'
    )
    listens = load_config(path).api.config.listens
    assert [(x.max_tcp_connections, x.max_in_flight) for x in listens] == [(2, 8), (0, 0)]
    path.write_text('setLocal("127.0.0.1:5300", {maxInFlight=-1})\n')
    with pytest.raises(ConfigError, match="'maxInFlight' must be a whole number"):
        load_config(path)


async def test_a_listeners_connection_bound(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}')
    t.server.tcp_frontends[0].max_connections = 1  # addLocal's maxConcurrentTCPConnections
    first = await trio.open_tcp_stream(*t.address)
    async with first:
        # Once the first connection is counted, a second one is turned away: closed.
        await until(lambda: t.server.tcp_connections.open == 1)
        assert await tcp_session(t.address, [query("www.example.org.")]) == CLOSED_UNANSWERED
        assert t.stats["tcp-overload-drops"] == 1


async def _tcp_answered(address: tuple[str, int], source: str = "127.0.0.1") -> bool:
    """Open a connection from ``source``, ask one query: whether it was answered (the
    connection is left open only while asking)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(address)
    stream = trio.SocketStream(sock)
    async with stream:
        wire = query("www.example.org.").to_wire()
        try:
            await stream.send_all(struct.pack("!H", len(wire)) + wire)
            with trio.move_on_after(2):
                return bool(await stream.receive_some(65536))
        except trio.BrokenResourceError:  # closed by the server, with a reset
            return False
    return False


@pytest.mark.parametrize("bound", ["setMaxTCPConnections(2)", "setMaxTCPConnectionsPerClient(2)"])
async def test_tcp_bounds_count_every_listener(
    nursery: trio.Nursery, tmp_path: Path, auth: AuthServer, bound: str
) -> None:
    from conftest import hostport

    from triodist.cli import load
    from triodist.server import DNSServer

    path = tmp_path / "rules.lua"
    path.write_text(f'newServer{{address="{hostport(auth)}"}}\n{bound}\n')
    lua = load(str(path), [], ["127.0.0.1:0", "127.0.0.1:0"])
    server = DNSServer(lua.api.config)
    first, second = await nursery.start(server.run)
    held: list[trio.SocketStream] = []
    try:
        for address in (first, second):  # one connection on each listener, kept open
            stream = await trio.open_tcp_stream(*address)
            held.append(stream)
        await trio.testing.wait_all_tasks_blocked()
        assert server.tcp_connections.open == 2
        # A third, on either listener, is over the bound: closed at once, counted.
        assert not await _tcp_answered(first)
        assert server.stats["tcp-overload-drops"] == 1
        if "PerClient" in bound:
            # Another client is not held back by this one's connections.
            assert await _tcp_answered(second, source="127.0.0.2")
        for stream in held:
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert await _tcp_answered(second)
    finally:
        for stream in held:
            await stream.aclose()
        server.config.settings.grace_period = 0
        server.request_shutdown()
        await server.wait_stopped()


async def test_tcp_connections_to_a_backend_are_bounded(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    """``maxConcurrentTCPConnections``: a query that would need one more connection to the
    backend is dropped and counted; the others are answered."""
    release = trio.Event()
    connected: list[trio.SocketStream] = []

    async def held_until_released(stream: trio.SocketStream) -> None:
        connected.append(stream)
        async with stream:
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                data += chunk
            await release.wait()
            wire = answer(dns.message.from_wire(data[2:]), GOOD)
            await stream.send_all(struct.pack("!H", len(wire)) + wire)

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, held_until_released, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    t = await start_triodist(
        f'newServer{{address="127.0.0.1:{port}", tcpOnly=true, healthCheckMode="up",'
        " maxConcurrentTCPConnections=2}"
    )
    backend = t.server.servers[0]
    replies: list[object] = []

    async def ask(name: str) -> None:
        replies.append(await t.ask(name, timeout=3))

    async with trio.open_nursery() as asking:
        for index in range(5):
            asking.start_soon(ask, f"q{index}.example.")
        while len(connected) < 2 or backend.tcp_overload_drops < 3:  # noqa: ASYNC110
            await trio.sleep(0.01)
        assert backend.tcp_connections == 2
        release.set()
    assert sum(r is not None for r in replies) == 2
    assert len(connected) == 2 and backend.tcp_overload_drops == 3
    await accounted(t)
    assert t.stats["answered"] == 2 and t.stats["dropped"] == 3


def _config(code: str) -> ServerConfig:
    lua = LuaConfig()
    lua.run_string(code, "rules.lua")
    return lua.api.config


def test_backend_tcp_bound_option() -> None:
    config = _config('newServer{address="127.0.0.1:53"}')
    assert config.routing.servers[0].max_tcp_connections == 1000  # triodist's default
    config = _config('newServer{address="127.0.0.1:53", maxConcurrentTCPConnections=0}')
    assert config.routing.servers[0].tcp_connections_bound == 0  # dnsdist's "no bound"
    with pytest.raises(ConfigError, match="maxConcurrentTCPConnections"):
        _config('newServer{address="127.0.0.1:53", maxConcurrentTCPConnections=1.5}')
    for bad in ("-1", "2.5", "1e400", '"x"'):
        with pytest.raises(ConfigError, match="setMaxTCPConnectionsPerClient"):
            _config(f"setMaxTCPConnectionsPerClient({bad})")
        with pytest.raises(ConfigError, match="setMaxTCPConnections"):
            _config(f"setMaxTCPConnections({bad})")


async def test_a_low_open_file_limit_lowers_the_tcp_bounds(
    tmp_path: Path, make_auth: MakeAuth
) -> None:
    """``ulimit -n 200`` under the default 10,000 TCP connections: the bound is lowered to
    fit, with a warning, so that stalled connections cannot take the descriptors that
    health checks and backend sockets need: the server goes on answering."""
    auth = await make_auth()
    rules = tmp_path / "rules.lua"
    rules.write_text(
        f'newServer{{address="{hostport(auth)}", checkInterval=1}}\nsetACL({{"127.0.0.0/8"}})\n'
        # The stalled connections stand for many clients, all from 127.0.0.1 here.
        "setMaxTCPConnectionsPerClient(0)\n"
    )
    served = await start_serve(tmp_path, "--config", str(rules), open_files=200)
    held: list[trio.SocketStream] = []
    try:
        await served.wait_answering()
        # (200 - 64 reserved - 2 for the backend - 2 for the listener) // 2 = 66 for clients.
        assert "open-file limit (ulimit -n) is 200" in served.err.read_text()
        assert "at most 66 client TCP connections" in served.err.read_text()
        for _ in range(250):  # stalled: one byte each
            stream = await trio.open_tcp_stream(*served.address)
            await stream.send_all(b"\x00")
            held.append(stream)
        checks = len(auth.health_checks)
        with trio.fail_after(10):
            while len(auth.health_checks) < checks + 3:  # noqa: ASYNC110 - health checks go on
                await trio.sleep(0.1)
        reply = await udp_query(served.address, query("www.example.org."))
        assert reply is not None and records(reply)
        assert "Too many open files" not in served.err.read_text()
    finally:
        for stream in held:
            await stream.aclose()
        served.process.send_signal(signal.SIGTERM)
        assert await served.process.wait() == 0
    counters = served.err.read_text().split("Counters: ")[-1]
    assert "tcp-overload-drops 184" in counters  # 250 - 66


async def test_a_connection_reset_before_it_is_accepted_costs_nothing(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    """A client that connects and resets at once, before the server's accept: the kernel
    still hands the connection over, with no peer any more. The server goes on."""
    from conftest import tcp_query

    t = await start_triodist(f'newServer{{address="{hostport(auth)}", healthCheckMode="up"}}')
    for _ in range(50):  # within the listen backlog: each connect completes at once
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.connect(t.address)  # blocking, before the server's task runs: not accepted yet
        sock.close()  # RST
    assert records(await tcp_query(t.address, query("www.example.org.")))
    assert records(await t.ask("www.example.org."))
    assert t.stats["tcp-gone-before-accept"] > 0
