"""Backends under change: a server added at run time that cannot start, timeouts after a
reload, which replies match a query, and queries that never left counted as what they are.

Each test names the behaviour it holds; each fails when that behaviour is taken out (the
figures are in the project's notes for the change that added them)."""

from __future__ import annotations

import errno
import socket
from functools import partial
from typing import Any

import dns.message
import dns.rcode
import pytest
import trio
from conftest import StartTriodist, accounted, hostport, query, records

from triodist.backends.exchange import NotSent, reply_matches
from triodist.backends.server import Server
from triodist.cli import load
from triodist.ops.rings import TIMED_OUT
from triodist.reload import Reloader
from triodist.testing.backend import AuthServer
from triodist.wire.walk import question_key

# --- a newServer at run time that fails: all or nothing ----------------------------------


async def test_a_server_whose_socket_is_refused_at_run_time_is_not_added(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    # The kernel refuses a UDP socket connected to the broadcast address (EACCES).
    answer = t.lua.console_eval('newServer("255.255.255.255:53")')
    assert answer.startswith("Error: "), answer
    assert "newServer: cannot open a socket to the server 255.255.255.255:53" in answer
    assert "Permission denied" in answer
    # Nothing left behind: not in the routing table, no pool entry, no task.
    assert [s.name for s in t.server.servers] == [hostport(auth)]
    assert t.lua.console_eval("return #getServers()").strip() == "1"
    # Every query is answered by the server that works; none is dropped as a timeout.
    for index in range(20):
        assert records(await t.ask(f"q{index}.wild.example.org."))
    await accounted(t)
    assert t.stats["answered"] == 20
    assert t.stats["downstream-timeouts"] == 0
    assert t.stats["downstream-send-errors"] == 0


# --- each UDP query's own deadline, whatever changed -------------------------------------


async def test_after_a_reload_lowering_udp_timeout_a_new_query_ends_at_the_new_timeout(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.modes["silent.example.org."] = "silent"
    text = 'newServer{address="$BACKEND", udpTimeout=%s, healthCheckMode="up"}\n'
    t = await start_triodist(text % "2")
    reloader = Reloader(t.server, partial(load, str(t.config_path), [], ["127.0.0.1:0"]), t.lua)
    base = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.ask, "silent.example.org.", timeout=5.0))
        await trio.sleep(0.5)
        t.config_path.write_text((text % "0.1").replace("$BACKEND", hostport(auth)))
        assert reloader.reload() is None
        nursery.start_soon(partial(t.ask, "silent.example.org.", timeout=5.0))
    # The ring of responses has each timeout at the moment it was declared: the query sent
    # after the reload at 0.5 + 0.1 s, the one before it at its own 2 s.
    ended = [
        round(e.when - base, 3)
        for e in t.server.pipeline.recorder.response_entries()
        if e.usec == TIMED_OUT
    ]
    assert ended == [0.6, 2.0]
    assert t.stats["downstream-timeouts"] == 2
    assert t.server.servers[0].getOutstanding() == 0


async def test_no_two_server_objects_share_their_attributes_after_a_reload(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND", weight=1, healthCheckMode="up"}\n')
    reloader = Reloader(t.server, partial(load, str(t.config_path), [], ["127.0.0.1:0"]), t.lua)
    old = t.server.servers[0]
    t.config_path.write_text(f'newServer{{address="{hostport(auth)}", weight=7}}\n')
    assert reloader.reload() is None
    new = t.server.servers[0]
    # One backend (its life), two configurations: each object keeps its own attributes.
    assert new.life is old.life and vars(new) is not vars(old)
    assert (old.weight, new.weight) == (1, 7)
    assert records(await t.ask("www.example.org."))
    assert old.getQueries() == new.getQueries() >= 1


# --- reply matching: the name in any case, type and class exactly ------------------------


def _reply_bytes(msg: dns.message.Message, *, qtype: int | None = None) -> bytes:
    wire = bytearray(msg.to_wire())
    if qtype is not None:
        # The question's type, after its name (12-byte header, then the name).
        name = msg.question[0].name.to_wire()
        assert name is not None
        name_end = 12 + len(name)
        wire[name_end : name_end + 2] = qtype.to_bytes(2, "big")
    return bytes(wire)


def test_a_reply_matches_the_name_in_any_case_and_the_type_and_class_exactly() -> None:
    asked = query("www.example.org.", "HTTPS")  # type 65, 'A' as a byte
    wire = asked.to_wire()
    key = question_key(wire, len(wire))
    reply = dns.message.make_response(asked)
    assert reply_matches(_reply_bytes(reply), key)
    upper = dns.message.make_response(query("WWW.Example.ORG.", "HTTPS"))
    assert reply_matches(_reply_bytes(upper), key)
    # Type 97 ('a' as a byte) is another type, as is class 97.
    assert not reply_matches(_reply_bytes(reply, qtype=97), key)
    other_class = bytearray(_reply_bytes(reply))
    other_class[-2:] = (97).to_bytes(2, "big")
    assert not reply_matches(bytes(other_class), key)


async def test_a_reply_for_another_type_is_not_taken(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    # A backend that first answers NXDOMAIN for type 97, then NOERROR for the type asked.
    async def backend(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            task_status.started(sock.getsockname())
            while True:
                data, peer = await sock.recvfrom(65535)
                asked = dns.message.from_wire(data)
                wrong = dns.message.make_response(asked)
                wrong.set_rcode(dns.rcode.NXDOMAIN)
                await sock.sendto(_reply_bytes(wrong, qtype=97), peer)
                await sock.sendto(dns.message.make_response(asked).to_wire(), peer)

    host, port = await nursery.start(backend)
    t = await start_triodist(f'newServer{{address="{host}:{port}", healthCheckMode="up"}}\n')
    reply = await t.ask("www.example.org.", "HTTPS")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.question[0].rdtype == 65
    nursery.cancel_scope.cancel()


# --- queries that never left: counted as what they are -----------------------------------


async def test_no_free_query_id_is_an_overload_drop_not_a_timeout(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.modes["silent.example.org."] = "silent"
    t = await start_triodist(
        "setMaxUDPOutstanding(1)\n"
        'newServer{address="$BACKEND", udpTimeout=1, healthCheckMode="up"}\n'
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.ask, "silent.example.org.", timeout=3.0))
        await trio.testing.wait_all_tasks_blocked()
        # The only ID is in flight: this one is never sent.
        assert await t.ask("www.example.org.", timeout=0.5) is None
        assert t.stats["downstream-overload-drops"] == 1
        assert t.stats["downstream-timeouts"] == 0
    # The one sent times out, and only it is a timeout.
    assert t.stats["downstream-timeouts"] == 1
    assert t.server.servers[0].overload_drops == 1
    await accounted(t)
    assert t.stats["dropped"] == 2


async def test_a_backend_at_its_tcp_bound_is_an_overload_drop_not_a_timeout(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.modes["slow.example.org."] = "slow"
    auth.delay = 1.0
    t = await start_triodist(
        'newServer{address="$BACKEND", tcpOnly=true, healthCheckMode="up",'
        " maxConcurrentTCPConnections=1}\n"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.ask, "slow.example.org.", timeout=3.0))
        await trio.testing.wait_all_tasks_blocked()
        assert await t.ask("www.example.org.", timeout=0.5) is None
    assert t.stats["downstream-overload-drops"] == 1
    assert t.stats["downstream-timeouts"] == 0
    assert t.stats["responses"] == 1


class _RefusingSocket:
    """A backend socket whose sends the kernel refuses (its buffer full: EAGAIN, or no
    buffer memory: ENOBUFS); everything else is the real socket's."""

    def __init__(self, real: socket.socket, code: int) -> None:
        self._real = real
        self._code = code
        self.refused = 0

    def send(self, data: bytes) -> int:
        self.refused += 1
        raise OSError(self._code, "refused")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOBUFS])
async def test_a_send_the_kernel_refuses_is_a_send_error_not_a_timeout(
    start_triodist: StartTriodist, code: int
) -> None:
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}\n')
    server = t.server.servers[0]
    refusing = _RefusingSocket(server._socks[0], code)
    server._socks[0] = refusing  # type: ignore[call-overload]
    assert await t.ask("www.example.org.", timeout=0.5) is None
    assert refusing.refused == 1
    await accounted(t)
    assert t.stats["downstream-send-errors"] == 1
    assert t.stats["downstream-timeouts"] == 0
    assert server.send_errors == 1 and server.getOutstanding() == 0


def test_a_server_with_no_socket_gives_a_send_error() -> None:
    server = Server("127.0.0.1:53")  # never opened
    wire = query("www.example.org.").to_wire()
    assert server.send_udp(wire, len(wire)) is NotSent.SEND_ERROR
    assert server.send_errors == 1 and server.drops == 1 and server.getOutstanding() == 0


def _closed_port() -> int:
    """A loopback TCP port with nothing listening on it: a connect is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_tcp_connect_is_a_send_error_not_a_timeout(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(
        f'newServer{{address="127.0.0.1:{_closed_port()}", tcpOnly=true, healthCheckMode="up"}}\n'
    )
    server = t.server.servers[0]
    assert await t.ask("www.example.org.", timeout=0.5) is None
    await accounted(t)
    assert t.stats["downstream-send-errors"] == 1
    assert t.stats["downstream-timeouts"] == 0
    assert server.send_errors == 1 and server.drops == 1
    assert server.getOutstanding() == 0 and server.tcp_connections == 0


async def test_a_tcp_connect_failing_locally_is_a_send_error_not_a_timeout(
    start_triodist: StartTriodist, auth: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = await start_triodist('newServer{address="$BACKEND", tcpOnly=true, healthCheckMode="up"}\n')
    server = t.server.servers[0]
    attempts: list[tuple[Any, ...]] = []

    async def out_of_descriptors(*args: Any, **kwargs: Any) -> trio.SocketStream:
        attempts.append(args)
        raise OSError(errno.EMFILE, "Too many open files")

    # The client below asks over UDP: only the server's connect to the backend is refused.
    monkeypatch.setattr(trio, "open_tcp_stream", out_of_descriptors)
    assert await t.ask("www.example.org.", timeout=0.5) is None
    assert len(attempts) == 1
    await accounted(t)
    assert t.stats["downstream-send-errors"] == 1
    assert t.stats["downstream-timeouts"] == 0
    assert server.send_errors == 1 and server.tcp_connections == 0
    # Once descriptors are back, the same server answers.
    monkeypatch.undo()
    assert records(await t.ask("www.example.org.", timeout=3.0))
    assert t.stats["downstream-send-errors"] == 1 and t.stats["responses"] == 1
