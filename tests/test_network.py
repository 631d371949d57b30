"""Network endpoints and listeners: unix datagram sockets to and from an external component.

``newNetworkEndpoint(path)`` sends, never blocking and never failing loudly; a peer that
restarts is reached again.  ``newNetworkListener()`` receives, one task per socket, and
hands every datagram to a callback that may fail without stopping it.  Everything runs
over real unix sockets, under ``tmp_path`` or in the abstract namespace.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest
import trio
from conftest import StartTriodist, records, until
from helpers import abstract_name, peer

from triodist.asyncproc.endpoint import NetworkEndpoint
from triodist.asyncproc.listener import MAX_DATAGRAM, NetworkListener
from triodist.cli import load
from triodist.config.api import ConfigAPI
from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import LuaConfig

ROOT = Path(__file__).resolve().parent.parent

Received = tuple[int, bytes, bytes]


# --- helpers -------------------------------------------------------------------------------


async def receive(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(MAX_DATAGRAM)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


def sender() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


class Inbox:
    """A callback that keeps what it is given; ``await inbox.get()`` waits for the next."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Received](100)

    def __call__(self, endpoint_id: int, message: bytes, sender: bytes) -> None:
        self.send.send_nowait((endpoint_id, message, sender))

    async def get(self) -> Received:
        return await self.receive.receive()


@pytest.fixture
def lua() -> LuaConfig:
    return LuaConfig(ConfigAPI())


# --- the endpoint --------------------------------------------------------------------------


async def test_send_and_receive_round_trip(nursery: trio.Nursery, tmp_path: Path) -> None:
    listener = NetworkListener()
    inbox = Inbox()
    listener.addUnixListeningEndpoint(str(tmp_path / "in.sock"), 7, inbox)
    listener.start()
    await nursery.start(listener.serve)

    endpoint = NetworkEndpoint(str(tmp_path / "in.sock"))
    assert endpoint.isValid()
    assert endpoint.send("12345")
    assert endpoint.send(b"\x00\xff binary")
    assert endpoint.send("caf\xe9")  # a Lua string: latin-1 characters are its bytes
    assert await inbox.get() == (7, b"12345", b"")
    assert (await inbox.get())[1] == b"\x00\xff binary"
    assert (await inbox.get())[1] == b"caf\xe9"

    # The sender's path is given when it has one.
    with sender() as named:
        named.bind(str(tmp_path / "from.sock"))
        named.sendto(b"hello", str(tmp_path / "in.sock"))
        assert await inbox.get() == (7, b"hello", os.fsencode(tmp_path / "from.sock"))
    endpoint.close()


async def test_missing_peer_gives_an_invalid_endpoint_whose_send_is_false(
    tmp_path: Path, lua: LuaConfig
) -> None:
    endpoint = NetworkEndpoint(str(tmp_path / "nobody.sock"))
    assert not endpoint.isValid()
    assert endpoint.send("hello") is False
    assert not endpoint.isValid()

    # From Lua: an object, never nil, and no error.
    path = str(tmp_path / "nobody.sock")
    result = lua.lua.execute(
        f"local e = newNetworkEndpoint('{path}')\n"
        "return e ~= nil, e:isValid(), e:send('x'), e:send('')"
    )
    assert tuple(result) == (True, False, False, False)


async def test_a_restarted_peer_is_reached_again(tmp_path: Path) -> None:
    path = tmp_path / "component.sock"
    first = peer(path)
    endpoint = NetworkEndpoint(str(path))
    assert endpoint.send("one")
    assert await receive(first) == b"one"

    # The component goes away: sends fail, without an exception.
    first.close()
    path.unlink()
    assert endpoint.send("lost") is False
    assert not endpoint.isValid()

    # It comes back on the same path: the next send reaches it.
    with peer(path) as second:
        assert endpoint.send("two")
        assert endpoint.isValid()
        assert await receive(second) == b"two"

    # A restart between two sends (no failure seen in between): still reached at once.
    path.unlink()
    with peer(path) as third:
        assert endpoint.send("three")
        assert await receive(third) == b"three"
    endpoint.close()


async def test_send_never_blocks_when_the_peer_is_full(tmp_path: Path) -> None:
    path = tmp_path / "slow.sock"
    with peer(path) as slow:  # never reads
        endpoint = NetworkEndpoint(str(path))
        payload = b"x" * 1000
        began = trio.current_time()
        results = [endpoint.send(payload) for _ in range(5000)]
        assert trio.current_time() - began < 2.0, "send waited"
        assert results[0] is True
        assert results[-1] is False, "the receive queue never filled up"
        first_refused = results.index(False)
        assert not any(results[first_refused:]), "a full queue stays full while nobody reads"
        assert endpoint.isValid(), "a busy peer is still there"
        # Once the component reads, sending works again.
        for _ in range(first_refused):
            slow.recv(MAX_DATAGRAM)
        assert endpoint.send(payload)
        endpoint.close()


async def test_abstract_names(nursery: trio.Nursery) -> None:
    name = abstract_name()
    listener = NetworkListener()
    inbox = Inbox()
    listener.addUnixListeningEndpoint(name, 1, inbox)
    listener.start()
    await nursery.start(listener.serve)

    endpoint = NetworkEndpoint(name)
    assert endpoint.isValid()
    assert endpoint.send("abstract")
    assert await inbox.get() == (1, b"abstract", b"")

    # An abstract sender is named with its leading NUL: a callback can answer it.
    reply_name = abstract_name()
    with sender() as named:
        named.bind(reply_name.encode("latin-1"))
        named.sendto(b"hi", name.encode("latin-1"))
        assert await inbox.get() == (1, b"hi", reply_name.encode("latin-1"))
    endpoint.close()

    assert not NetworkEndpoint(abstract_name()).isValid()


# --- the listener --------------------------------------------------------------------------


async def test_listener_socket_is_created_0600_with_no_wider_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    umask_at_bind: list[int] = []
    real_bind = socket.socket.bind

    def bind(self: socket.socket, address: Any) -> None:
        current = os.umask(0o022)
        os.umask(current)
        umask_at_bind.append(current)
        real_bind(self, address)

    monkeypatch.setattr(socket.socket, "bind", bind)
    before = os.umask(0o002)  # a permissive umask: the socket must not inherit it
    try:
        path = tmp_path / "private.sock"
        listener = NetworkListener()
        listener.addUnixListeningEndpoint(str(path), 0, Inbox())
        listener.start()
        listener.open()
        try:
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
            # The file was born 0600 (the umask excluded everything else at bind time)...
            assert umask_at_bind == [0o177]
            # ...and the process umask is back to what it was.
            assert os.umask(0o002) == 0o002
        finally:
            listener.close()
        assert not path.exists()
    finally:
        os.umask(before)


async def test_stale_socket_file_is_replaced_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    peer(path).close()  # a socket file left by a process that is gone
    assert path.exists()
    listener = NetworkListener()
    listener.addUnixListeningEndpoint(str(path), 0, Inbox())
    listener.start()
    listener.open()
    assert NetworkEndpoint(str(path)).isValid()
    listener.close()
    assert not path.exists()


async def test_a_live_socket_is_never_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with peer(path):  # another process listens there
        listener = NetworkListener()
        listener.addUnixListeningEndpoint(str(path), 0, Inbox())
        listener.start()
        with pytest.raises(OSError, match="another process is listening"):
            listener.open()
        assert path.exists()
        with sender() as probe:
            probe.connect(os.fsencode(path))  # still the other process's socket


async def test_is_valid_connects_to_a_component_started_later(tmp_path: Path) -> None:
    path = tmp_path / "later.sock"
    endpoint = NetworkEndpoint(str(path))
    assert not endpoint.isValid()
    with peer(path) as component:
        assert endpoint.isValid()  # no send needed to notice it
        assert endpoint.send(b"hello")
        assert await receive(component) == b"hello"


async def test_close_leaves_a_successors_socket_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "shared.sock"
    listener = NetworkListener()
    listener.addUnixListeningEndpoint(str(path), 0, Inbox())
    listener.start()
    listener.open()
    path.unlink()
    with peer(path):  # another process bound the path meanwhile
        listener.close()
        assert path.exists()


async def test_a_missing_directory_warns_then_fails_at_start_up(
    tmp_path: Path, lua: LuaConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # The socket's own directory is created (0700) when the server starts; the one it
    # goes in may be created between the check and the start (by the external component,
    # by a service manager): a warning while the configuration runs...
    directory = tmp_path / "later" / "private"
    lua.run_string(
        "l = newNetworkListener()\n"
        f"l:addUnixListeningEndpoint('{tmp_path / 'ok.sock'}', 0, print)\n"
        f"l:addUnixListeningEndpoint('{directory / 'x.sock'}', 1, print)\n"
        "l:start()\n",
        "rules.lua",
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("later' does not exist yet" in w for w in warnings), warnings
    # ...and, still missing when the server starts, an OSError that says where.
    (listener,) = lua.api.config.network_listeners
    with pytest.raises(OSError, match=r"Error binding Unix socket to path '.*x\.sock'"):
        listener.open()
    assert not (tmp_path / "ok.sock").exists(), "nothing is left bound"
    (tmp_path / "later").mkdir()
    listener.open()
    assert (directory / "x.sock").exists()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    listener.close()


LUA_CALLBACK = """
received = {}
function gotAsyncResponse(endpointID, message, from)
  if message == "boom" then error("the component said boom") end
  local n = tonumber(message)
  if n == nil and #message > 0 and #message < 100 then
    error("not a number: " .. message)
  end
  received[#received + 1] = endpointID .. ":" .. #message
end
"""


async def test_callback_errors_are_logged_and_the_listener_goes_on(
    nursery: trio.Nursery, tmp_path: Path, lua: LuaConfig, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "cb.sock")
    lua.run_string(
        LUA_CALLBACK + f"listener = newNetworkListener()\n"
        f"listener:addUnixListeningEndpoint('{path}', 3, gotAsyncResponse)\n"
        "listener:start()\n",
        "rules.lua",
    )
    (listener,) = lua.api.config.network_listeners
    await nursery.start(listener.serve)
    received = lua.lua.globals().received

    with sender() as s:
        for data in (b"boom", b"boom", b"1", b"", b"x" * 65536, b"not a number", b"2"):
            s.sendto(data, path)
    await until(lambda: len(received) == 4)
    assert list(received.values()) == ["3:1", "3:0", "3:65536", "3:1"]

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([e for e in errors if "the component said boom" in e]) == 1, errors
    assert len([e for e in errors if "not a number: not a number" in e]) == 1, errors
    assert all("\n" not in e for e in errors), "first line only"
    assert listener.endpoints[0].received == 7
    assert listener.endpoints[0].errors == 3


async def test_odd_datagrams_reach_the_callback(nursery: trio.Nursery, tmp_path: Path) -> None:
    listener = NetworkListener()
    inbox = Inbox()
    path = str(tmp_path / "odd.sock")
    listener.addUnixListeningEndpoint(path, 0, inbox)
    listener.start()
    await nursery.start(listener.serve)
    with sender() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for data in (b"", b"\xff" * 65536, b"not a number", b"\x00" * 3):
            s.sendto(data, path)
    assert [(await inbox.get())[1] for _ in range(4)] == [
        b"",
        b"\xff" * 65536,
        b"not a number",
        b"\x00" * 3,
    ]


# --- configuration errors, as check-config reports them -------------------------------------


SEED_EXAMPLE = """\
local asyncID = 0
local asyncResponderEndpoint = newNetworkEndpoint('{remote}')
local listener = newNetworkListener()
listener:addUnixListeningEndpoint('{local}', 0, gotAsyncResponse)
listener:start()

function gotAsyncResponse(endpointID, message, from)
  local queryID = tonumber(message)
  local asyncObject = getAsynchronousObject(asyncID, queryID)
  asyncObject:resume()
end
"""

CONFIG_ERRORS: dict[str, tuple[str, int, str]] = {
    # name: (rules.lua, line of the error, what the message says)
    "seed example as printed": (SEED_EXAMPLE, 4, "callback is nil: define the function before"),
    "empty path": (
        "local l = newNetworkListener()\nl:addUnixListeningEndpoint('', 0, print)\n",
        2,
        "the path is empty",
    ),
    "add after start": (
        "local l = newNetworkListener()\n"
        "l:addUnixListeningEndpoint('{local}', 0, print)\n"
        "l:start()\n"
        "l:addUnixListeningEndpoint('{local}2', 1, print)\n",
        4,
        "already started",
    ),
    "start with no endpoint": (
        "local l = newNetworkListener()\n\nl:start()\n",
        3,
        "no endpoint",
    ),
    "a file where the directory should be": (
        "local l = newNetworkListener()\nl:addUnixListeningEndpoint('{file}/x.sock', 0, print)\n",
        2,
        "is not a directory",
    ),
    "a regular file in the way": (
        "local l = newNetworkListener()\nl:addUnixListeningEndpoint('{file}', 0, print)\n",
        2,
        "not a socket",
    ),
    "empty endpoint path": ("newNetworkEndpoint('')\n", 1, "the path is empty"),
    "bad endpoint ID": (
        "local l = newNetworkListener()\nl:addUnixListeningEndpoint('{local}', 70000, print)\n",
        2,
        "0..65535",
    ),
}


async def test_configuration_errors_name_file_line_and_reason(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("not a socket")
    paths = {
        "remote": str(tmp_path / "remote.sock"),
        "local": str(tmp_path / "local.sock"),
        "dir": str(tmp_path),
        "file": str(tmp_path / "file.txt"),
    }
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}
    configs: dict[str, Path] = {}

    async def check(name: str, text: str) -> None:
        config = tmp_path / f"{name.replace(' ', '_')}.lua"
        for key, value in paths.items():
            text = text.replace("{" + key + "}", value)
        config.write_text(text)
        configs[name] = config
        results[name] = await trio.run_process(
            [sys.executable, "-m", "triodist", "check-config", "--config", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    async with trio.open_nursery() as checks:
        for name, (text, _, _) in CONFIG_ERRORS.items():
            checks.start_soon(check, name, text)

    for name, (_, line, reason) in CONFIG_ERRORS.items():
        result = results[name]
        stderr = result.stderr.decode()
        assert result.returncode == 1, (name, result.stdout, stderr)
        assert f"{configs[name]}:{line}: " in stderr, (name, stderr)
        assert reason in stderr, (name, stderr)
    # Checking a configuration binds nothing and removes nothing.
    assert not (tmp_path / "local.sock").exists()
    assert (tmp_path / "file.txt").read_text() == "not a socket"


async def test_seed_order_fixed_passes_check_config(tmp_path: Path) -> None:
    fixed = SEED_EXAMPLE.replace(
        "listener:addUnixListeningEndpoint('{local}', 0, gotAsyncResponse)\nlistener:start()\n",
        "",
    ) + ("listener:addUnixListeningEndpoint('{local}', 0, gotAsyncResponse)\nlistener:start()\n")
    text = fixed.replace("{remote}", str(tmp_path / "r.sock")).replace(
        "{local}", str(tmp_path / "l.sock")
    )
    lua = LuaConfig(ConfigAPI())
    lua.run_string(text, "rules.lua")
    (listener,) = lua.api.config.network_listeners
    assert listener.started
    assert not (tmp_path / "l.sock").exists(), "bound only when serving"


async def test_api_errors_are_config_errors(lua: LuaConfig) -> None:
    with pytest.raises(ConfigError, match=r"rules.lua:2: .*callback is nil"):
        lua.run_string(
            "local l = newNetworkListener()\nl:addUnixListeningEndpoint('/tmp/x', 0, nil)\n",
            "rules.lua",
        )
    with pytest.raises(ConfigError, match="newNetworkEndpoint: the path is empty"):
        lua.api.newNetworkEndpoint("")


async def test_running_a_configuration_creates_no_socket_for_an_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "component.sock"
    config = tmp_path / "rules.lua"
    config.write_text(f"filter = newNetworkEndpoint('{path}')\n")
    made: list[tuple[Any, ...]] = []
    real = socket.socket

    def recording(*args: Any, **kwargs: Any) -> socket.socket:
        made.append(args)
        return real(*args, **kwargs)

    with peer(path) as component:  # there to be reached: only laziness keeps it unreached
        monkeypatch.setattr(socket, "socket", recording)
        lua = load(str(config), [], ["127.0.0.1:0"])  # what check-config and a reload run
        assert made == []  # check-config is pure: not even a socket
        # A configuration that asks gets a meaningful answer: connected on demand.
        endpoint = lua.lua.globals().filter
        assert endpoint.isValid()
        assert made[0] == (socket.AF_UNIX, socket.SOCK_DGRAM)
        monkeypatch.undo()
        assert endpoint.send("query")
        assert await receive(component) == b"query"
        endpoint.close()


async def test_the_server_connects_its_endpoints_when_it_starts_serving(
    start_triodist: StartTriodist, tmp_path: Path
) -> None:
    path = tmp_path / "component.sock"
    with peer(path) as component:
        t = await start_triodist(f"newServer('$BACKEND')\nfilter = newNetworkEndpoint('{path}')\n")
        endpoint = t.lua.lua.globals().filter
        assert repr(endpoint).endswith(", connected)")  # by the server, before any send
        assert endpoint.send("query")
        assert await receive(component) == b"query"


# --- in a running server -------------------------------------------------------------------


async def test_listener_in_a_running_server_calls_lua(
    start_triodist: StartTriodist, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "server.sock"
    idle = tmp_path / "idle.sock"
    td = await start_triodist(
        "newServer('$BACKEND')\n"
        "count = 0\n"
        "function onMessage(endpointID, message, from)\n"
        "  count = count + 1\n"
        "  infolog('got ' .. message .. ' on ' .. endpointID)\n"
        "end\n"
        "local listener = newNetworkListener()\n"
        f"listener:addUnixListeningEndpoint('{path}', 9, onMessage)\n"
        "listener:start()\n"
        "local notStarted = newNetworkListener()\n"
        f"notStarted:addUnixListeningEndpoint('{idle}', 1, onMessage)\n"
    )
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert not idle.exists(), "a listener never started never runs"

    endpoint = NetworkEndpoint(str(path))
    assert endpoint.send("hello")
    assert endpoint.send("again")
    globals_ = td.lua.lua.globals()
    await until(lambda: globals_.count == 2)
    assert "got hello on 9" in caplog.messages
    assert "got again on 9" in caplog.messages
    endpoint.close()

    # Shutdown closes the socket and removes its file.
    td.server.config.settings.grace_period = 0
    td.server.request_shutdown()
    await td.server.wait_stopped()
    assert not path.exists()


SEED_FIXED = """\
newServer('$BACKEND')
local asyncID = 0
local asyncResponderEndpoint = newNetworkEndpoint('{remote}')

function gotAsyncResponse(endpointID, message, from)
  local queryID = tonumber(message)
  local asyncObject = getAsynchronousObject(asyncID, queryID)
  asyncObject:resume()
end

local listener = newNetworkListener()
listener:addUnixListeningEndpoint('{local}', 0, gotAsyncResponse)
listener:start()

function passQueryToAsyncFilter(dq)
  local timeout = 2000
  local buffer = dq:getContent()
  local id = dq.dh:getID()
  dq:suspend(asyncID, id, timeout)
  asyncResponderEndpoint:send(buffer)
  return DNSAction.Allow
end

addAction(AllRule(), LuaAction(passQueryToAsyncFilter))
"""


async def test_seed_example_suspends_and_resumes_through_the_sockets(
    nursery: trio.Nursery, start_triodist: StartTriodist, tmp_path: Path
) -> None:
    remote, local = tmp_path / "component.sock", tmp_path / "triodist.sock"
    component = peer(remote)
    seen: list[int] = []

    async def external_component() -> None:
        # Answers every query with its ID, to the listener.
        with component, sender() as out:
            while True:
                wire = await receive(component)
                query_id = dns.message.from_wire(wire).id
                seen.append(query_id)
                out.sendto(str(query_id).encode(), os.fsencode(local))

    nursery.start_soon(external_component)
    td = await start_triodist(
        SEED_FIXED.replace("{remote}", str(remote)).replace("{local}", str(local))
    )
    reply = await td.ask("www.example.org")
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert len(seen) == 1


async def test_a_server_whose_listener_cannot_bind_does_not_start(
    start_triodist: StartTriodist, tmp_path: Path
) -> None:
    path = tmp_path / "gone" / "private" / "x.sock"  # only the last level is created
    with pytest.raises(OSError, match="Error binding Unix socket"):
        await start_triodist(
            "newServer('$BACKEND')\n"
            "local l = newNetworkListener()\n"
            f"l:addUnixListeningEndpoint('{path}', 0, print)\n"
            "l:start()\n"
        )
