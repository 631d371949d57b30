"""The console (dnsdist's control socket): the protocol, the configuration functions,
the server's defences, and both command-line clients against both servers.

* The protocol pieces (nonces, the channel) and ``LuaConfig.console_eval`` are
  checked from Python.
* The server is started on its own (``console.serve`` on 127.0.0.1:0, with the
  configuration's settings) or inside a ``DNSServer`` (to check that DNS goes on),
  and talked to with a small Trio client written here from the protocol.
* ``triodist serve`` and ``triodist console`` run as a user runs them, and the real
  ``dnsdist -c`` and ``dnsdist`` are used where installed (skipped without them,
  unless ``CI`` is "true": then missing dnsdist fails).
"""

from __future__ import annotations

import base64
import errno
import logging
import re
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import StartTriodist, free_port, hostport, query, records, udp_query
from helpers import needs_dnsdist, require_dnsdist, subprocess_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triodist import __version__
from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import LuaConfig
from triodist.config.signatures import SIGNATURES
from triodist.ops.console.protocol import (
    NONCE_BYTES,
    ConsoleError,
    SecretChannel,
    frame,
    increment_nonce,
    merge_nonces,
)
from triodist.ops.console.server import FRAME_TIMEOUT, MAX_COMMAND, serve
from triodist.ops.console.settings import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_OUTPUT
from triodist.server import ServerConfig
from triodist.testing.backend import AuthServer

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
OTHER_KEY = bytes(range(1, 33))
WWW = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
Address = tuple[str, int]

# --- a client, written here from the protocol ----------------------------------------------


class WireClient:
    """A console client on Trio: raw bytes when a test wants them, commands otherwise."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.channel: SecretChannel | None = None

    @classmethod
    async def open(cls, address: Address) -> WireClient:
        return cls(await trio.open_tcp_stream(*address))

    async def receive(self, size: int) -> bytes | None:
        """``size`` bytes, or None once the server has closed the connection."""
        while len(self.buffer) < size:
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def send(self, data: bytes) -> bool:
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            return False
        return True

    async def handshake(self, key: bytes = KEY) -> bool:
        ours = secrets.token_bytes(NONCE_BYTES)
        if not await self.send(ours):
            return False
        theirs = await self.receive(NONCE_BYTES)
        if theirs is None:
            return False
        self.channel = SecretChannel(key, ours, theirs)
        return True

    async def command(self, line: str | bytes) -> bytes | None:
        """The answer to one line, or None if the server closed the connection."""
        assert self.channel is not None
        data = line.encode() if isinstance(line, str) else line
        if not await self.send(frame(self.channel.seal(data))):
            return None
        header = await self.receive(4)
        if header is None:
            return None
        length = int.from_bytes(header, "big")
        box = await self.receive(length)
        return None if box is None else self.channel.open(box)

    async def closed_by_server(self) -> bool:
        """Whether the server closes the connection without sending anything more."""
        with trio.fail_after(5):
            return await self.receive(1) is None

    async def aclose(self) -> None:
        await self.stream.aclose()


async def session(address: Address, *lines: str, key: bytes = KEY) -> list[bytes | None]:
    """Connect as ``dnsdist -c`` does (nonces, then an empty line) and run ``lines``."""
    client = await WireClient.open(address)
    try:
        assert await client.handshake(key), "closed before the nonce exchange"
        assert await client.command("") == b"", "the empty first line is not answered"
        return [await client.command(line) for line in lines]
    finally:
        await client.aclose()


# --- the console on its own -----------------------------------------------------------------


@dataclass
class Host:
    """What ``console.serve`` needs of the server: its (current) configuration."""

    config: ServerConfig


StartConsole = Callable[[str], Awaitable[tuple[Host, Address]]]


@pytest.fixture
async def start_console(nursery: trio.Nursery, tmp_path: Path) -> StartConsole:
    """``await start_console(lua_text)``: run the configuration, serve its console on
    127.0.0.1:0 (in place of its controlSocket addresses); the host and the address."""

    async def start(text: str) -> tuple[Host, Address]:
        lua = LuaConfig()
        lua.run_string(text, str(tmp_path / "rules.lua"))
        lua.api.config.console.addresses[:] = [("127.0.0.1", 0)]
        host = Host(lua.api.config)
        bound: list[Address] = await nursery.start(serve, host)
        return host, bound[0]

    return start


KEYED = f'setKey("{KEY_B64}")\nnewServer{{address="192.0.2.1", name="b1", healthCheckMode="up"}}\n'


# --- the protocol ---------------------------------------------------------------------------


def test_nonces_are_merged_and_counted_as_dnsdist_does() -> None:
    ours, theirs = bytes(range(24)), bytes(range(100, 124))
    merged = merge_nonces(ours, theirs)
    assert merged == bytes(range(12)) + bytes(range(112, 124))
    # The counter is the first four bytes, big-endian, and wraps.
    assert increment_nonce(b"\x00\x00\x01\xff" + bytes(20)) == b"\x00\x00\x02\x00" + bytes(20)
    assert increment_nonce(b"\xff" * 4 + b"\x07" * 20) == b"\x00" * 4 + b"\x07" * 20


def test_two_ends_agree_and_never_reuse_a_nonce() -> None:
    client_nonce, server_nonce = secrets.token_bytes(24), secrets.token_bytes(24)
    client = SecretChannel(KEY, client_nonce, server_nonce)
    server = SecretChannel(KEY, server_nonce, client_nonce)
    first, second = client.seal(b"showServers()"), client.seal(b"showServers()")
    assert first != second  # the nonce moved on
    assert server.open(first) == b"showServers()"
    assert server.open(second) == b"showServers()"
    assert client.open(server.seal(b"")) == b""  # the other direction has its own nonce
    with pytest.raises(ConsoleError, match="setKey"):
        server.open(first)  # a replay: its nonce is used up
    stranger = SecretChannel(OTHER_KEY, client_nonce, server_nonce)
    with pytest.raises(ConsoleError, match="setKey"):
        SecretChannel(KEY, server_nonce, client_nonce).open(stranger.seal(b"1"))
    with pytest.raises(ConsoleError, match="size 3"):
        server.open(b"abc")


# --- the configuration functions ------------------------------------------------------------


def _config(text: str) -> LuaConfig:
    lua = LuaConfig()
    lua.run_string(text, "rules.lua")
    return lua


def test_defaults_are_dnsdists() -> None:
    settings = ServerConfig().console
    assert settings.addresses == []
    assert settings.key is None
    assert settings.acl.match("127.0.0.1") and settings.acl.match("::1")
    assert not settings.acl.match("10.0.0.1") and not settings.acl.match("192.168.1.1")
    assert settings.max_connections == DEFAULT_MAX_CONNECTIONS == 100
    assert settings.max_output_size == DEFAULT_MAX_OUTPUT == 10_000_000
    assert settings.log_connections


def test_control_socket_addresses() -> None:
    lua = _config(
        'controlSocket()\ncontrolSocket("127.0.0.2")\ncontrolSocket("[::1]:5300")\n'
        'controlSocket("192.0.2.1:0")\n'
    )
    assert lua.api.config.console.addresses == [
        ("127.0.0.1", 5199),
        ("127.0.0.2", 5199),
        ("::1", 5300),
        ("192.0.2.1", 0),
    ]
    with pytest.raises(ConfigError, match=r"rules.lua:1: controlSocket: invalid address"):
        _config('controlSocket("localhost:5199")')


def test_set_key_takes_base64_of_32_bytes() -> None:
    assert _config(f'setKey("{KEY_B64}")').api.config.console.key == KEY
    short = base64.b64encode(bytes(16)).decode()
    for bad, why in ((short, "32 bytes"), ("not base64!", "Base64"), ("", "32 bytes")):
        # As dnsdist: an error logged with file and line, no key set, the file goes on.
        lua = _config(f'controlSocket()\nsetKey("{bad}")\nsetKey("{KEY_B64}")')
        assert lua.api.config.console.key == KEY
        assert len(lua.api.errors) == 1
        assert re.search(rf"rules.lua:2: setKey: .*{why}", lua.api.errors[0])


def test_make_key_prints_a_set_key_line_that_loads(capsys: pytest.CaptureFixture[str]) -> None:
    _config("makeKey()")
    line = capsys.readouterr().out.strip()
    assert line.startswith('setKey("') and line.endswith('")')
    assert len(_config(line).api.config.console.key or b"") == 32


def test_console_acl_functions(capsys: pytest.CaptureFixture[str]) -> None:
    lua = _config('setConsoleACL("10.0.0.0/8")\naddConsoleACL("192.0.2.0/24")\nshowConsoleACL()')
    acl = lua.api.config.console.acl
    assert acl.match("10.1.1.1") and acl.match("192.0.2.7")
    assert not acl.match("127.0.0.1")  # replaced, as dnsdist's setConsoleACL does
    assert set(capsys.readouterr().out.split()) == {"10.0.0.0/8", "192.0.2.0/24"}
    lua = _config('setConsoleACL({"127.0.0.1/32", "::1"})')
    assert lua.api.config.console.acl.match("::1")
    with pytest.raises(ConfigError, match=r"rules\.lua:1: addConsoleACL: invalid netmask"):
        _config('addConsoleACL("nonsense")')


def test_console_bounds_and_logging() -> None:
    lua = _config(
        "setConsoleMaximumConcurrentConnections(3)\nsetConsoleOutputMaxMsgSize(5000)\n"
        "setConsoleConnectionsLogging(false)\n"
    )
    settings = lua.api.config.console
    assert (settings.max_connections, settings.max_output_size) == (3, 5000)
    assert not settings.log_connections
    with pytest.raises(ConfigError, match=r"rules\.lua:1: setConsoleMaximumConcurrentConnections"):
        _config("setConsoleMaximumConcurrentConnections(-1)")


# --- console_eval: one line, as dnsdist's console runs it ---------------------------------


def test_expressions_statements_and_output() -> None:
    lua = _config(KEYED)
    run = lua.console_eval
    assert run("1+2") == "3\n"
    assert run("0.5") == "0.5\n"
    assert run("'a' .. 'b'") == "ab\n"
    assert run("x = 5") == ""  # a statement
    assert run("x * 2") == "10\n"
    assert run("print('x', 1, nil)") == "x\t1\tnil\n"
    assert run("nothing") == ""  # nil: no value
    assert run("showServerPolicy()") == "leastOutstanding\n"
    assert run("getServer(0)") == "b1\n"  # a server: its name
    assert run('{a=1, b=2.5, ["c d"]=3}') == '{"a": 1, "b": 2.5, "c d": 3}\n'
    assert run("'é'") == "é\n"  # UTF-8 through Lua and back
    assert run("true") == "true\n" and run("1 == 2") == "false\n"  # dnsdist: "can't print"
    assert run("makeKey()").startswith('setKey("')
    assert run("testCrypto()") == "Everything is ok!\n"
    # Before any query, dnsdist's layout with the counters at 0.
    stats = dict(re.findall(r"(\S+)\s+(\d+)", run("dumpStats()")))
    assert stats["queries"] == stats["received"] == stats["tcp-overload-drops"] == "0"


def test_errors_come_back_as_text_and_nothing_breaks() -> None:
    lua = _config(KEYED)
    run = lua.console_eval
    lua.lua.execute("lua_print = print")
    # As dnsdist: the chunk is named by its text, the expression form when it compiled.
    assert run("nosuchfunction()") == (
        'Error: [string "return nosuchfunction()"]:1: '
        "attempt to call global 'nosuchfunction' (a nil value)"
    )
    # A line that does not parse: Lua's message, without dnsdist's trailing ": ".
    assert run("x = = 1") == "Error: [string \"x = = 1\"]:1: unexpected symbol near '='"
    # A Python error in a configuration function: its message, with the line's location
    # unless the call was a tail call (``return f()``: Lua keeps no frame for the line).
    assert run('setKey("short")') == "Error: setKey: unable to decode 'short' as Base64"
    assert run('local k = setKey("short")') == (
        'Error: [string "local k = setKey("short")"]:1: '
        "setKey: unable to decode 'short' as Base64"
    )
    assert run("error('boom', 1) x = 1") == "Error: [string \"error('boom', 1) x = 1\"]:1: boom"
    # What was printed before the error is kept, and print is Lua's own again after.
    assert run("print('before') error('x')").startswith("before\nError: ")
    assert lua.lua.eval("print == lua_print") is True
    assert run("1+2") == "3\n"


def test_rm_and_mv_of_a_rule_that_is_not_there_say_so_and_go_on() -> None:
    """As dnsdist 1.7.3: an error printed, once, naming what was asked, and no Lua error
    (``pcall`` returns true); a key that is no rule's number, name or UUID is an error."""
    lua = _config('addAction(AllRule(), DropAction(), {name="one"})\n')
    run = lua.console_eval
    assert run('rmRule("nosuch")') == "Error: no rule matched 'nosuch'\n"
    assert run("rmRule(5)") == "Error: attempt to delete non-existing rule 5\n"
    assert run('rmResponseRule("one")') == "Error: no rule matched 'one'\n"
    assert run("mvRule(0, 2)") == (
        "Error: attempt to move rules from/to invalid index (0 to 2, with 1 rule)\n"
    )
    assert run('print(pcall(rmRule, "nosuch"))') == "Error: no rule matched 'nosuch'\ntrue\tnil\n"
    assert run("rmRule(nil)") == "Error: rmRule: expected a rule's number, name or UUID, got nil"
    assert run("rmRule(true)") == (
        "Error: rmRule: expected a rule's number, name or UUID, got true"
    )
    assert run('rmRule("one")') == ""
    assert run("mvRule(0, 0)") == (
        "Error: attempt to move rules from/to invalid index (0 to 0, with 0 rules)\n"
    )


def test_mv_rule_moves_as_dnsdists() -> None:
    """``mvRule(from, to)``: before the rule numbered ``to`` before the move, or last
    when ``to`` is the count (the orders dnsdist 1.7.3 gives, from a, b, c)."""
    lua = _config(
        'for _, n in ipairs({"a", "b", "c"}) do addAction(AllRule(), DropAction(), {name=n}) end'
    )
    orders = []
    for source, destination in ((0, 2), (0, 3), (2, 0), (1, 1)):
        assert lua.console_eval(f"mvRule({source}, {destination})") == ""
        orders.append("".join(rule.name for rule in lua.api.config.chains.queries.rules))
    assert orders == ["bac", "acb", "bac", "bac"]


def test_help_writes_parameters_as_dnsdists_documentation() -> None:
    """``help()`` shows each function's parameters the way dnsdist's documentation
    writes them, never Python's (``rest...``, ``func``, ``[a], [b]``): every function it
    lists has its line in ``SIGNATURES``."""
    run = _config("").console_eval
    assert run('help("newServer")') == "newServer(server_string | server_table)\n"
    assert run('help("LogAction")') == (
        "LogAction([filename [, binary [, append [, buffered [, verboseOnly "
        "[, includeTimestamp]]]]]])\n"
    )
    assert run('help("addAction")') == "addAction(DNSrule, action [, options])\n"
    lines = run("help()").splitlines()[:-1]  # the last line says what is not listed
    assert len(lines) > 150
    for line in lines:
        name = line.split("(", 1)[0]
        assert line.startswith(SIGNATURES[name] + ":") or line == SIGNATURES[name], line
        assert "..." not in line.split(":", 1)[0], line


def test_without_a_key_test_crypto_says_why() -> None:
    assert _config("").console_eval("testCrypto()") == (
        "Crypto failed: Invalid encryption key of size 0, use setKey() to set a valid key\n"
    )


# --- the server, on the wire ----------------------------------------------------------------


async def test_commands_over_the_wire(start_console: StartConsole) -> None:
    _, address = await start_console(KEYED)
    replies = await session(address, "1+2", "print('x')", "nosuch()", "showServers()")
    assert replies[0] == b"3\n"
    assert replies[1] == b"x\n"
    assert replies[2] is not None and replies[2].startswith(
        b'Error: [string "return nosuch()"]:1: '
    )
    assert replies[3] is not None and b"192.0.2.1:53" in replies[3] and b"b1" in replies[3]


async def test_an_unencrypted_empty_message_is_acknowledged(start_console: StartConsole) -> None:
    _, address = await start_console(KEYED)
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake()
        await client.send(frame(b""))
        assert await client.receive(4) == b"\x00\x00\x00\x00"
        assert await client.command("2+2") == b"4\n"  # the nonces did not move


async def test_each_command_runs_in_the_current_configuration(
    start_console: StartConsole,
) -> None:
    host, address = await start_console(KEYED)
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake()
        assert await client.command("answer") == b""
        newer = _config("answer = 42")  # a reload puts the new configuration's evaluator
        host.config.lua_eval = newer.console_eval
        assert await client.command("answer") == b"42\n"


async def test_without_a_key_every_connection_is_refused(
    start_console: StartConsole, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, address = await start_console("")
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.closed_by_server()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("no key has been set with 'setKey()'" in w for w in warnings)  # at start
    assert any("dropped because we don't have a valid key" in w for w in warnings)


async def test_a_wrong_key_is_closed_and_the_console_goes_on(
    start_console: StartConsole, caplog: pytest.LogCaptureFixture
) -> None:
    _, address = await start_console(KEYED)
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake(OTHER_KEY)
        assert await client.command("") is None
    assert any("setKey() is correct" in r.getMessage() for r in caplog.records)
    assert await session(address, "1+2") == [b"3\n"]


async def test_outside_the_console_acl_is_closed_at_once(
    start_console: StartConsole, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, address = await start_console(KEYED + 'setConsoleACL("10.0.0.0/8")\n')
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.closed_by_server()
    assert any("dropped because of ACL" in r.getMessage() for r in caplog.records)


async def test_the_acl_set_from_the_console_applies_to_new_connections(
    start_console: StartConsole,
) -> None:
    _, address = await start_console(KEYED)
    assert await session(address, 'setConsoleACL("10.0.0.0/8")', "1+2") == [b"", b"3\n"]
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.closed_by_server()


async def test_the_connection_bound(start_console: StartConsole) -> None:
    _, address = await start_console(KEYED + "setConsoleMaximumConcurrentConnections(1)\n")
    first = await WireClient.open(address)
    async with first.stream:
        assert await first.handshake()
        assert await first.command("1") == b"1\n"  # registered, surely
        second = await WireClient.open(address)
        async with second.stream:
            assert await second.closed_by_server()
        assert await first.command("2") == b"2\n"


async def test_an_oversized_message_is_refused(start_console: StartConsole) -> None:
    _, address = await start_console(KEYED)
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake()
        await client.send((MAX_COMMAND + 1).to_bytes(4, "big") + bytes(1000))
        assert await client.closed_by_server()
    assert await session(address, "1+2") == [b"3\n"]


async def test_output_over_the_bound_is_an_error_message(start_console: StartConsole) -> None:
    _, address = await start_console(KEYED + "setConsoleOutputMaxMsgSize(100)\n")
    [reply] = await session(address, "string.rep('x', 200)")
    assert reply is not None and reply.startswith(b"Error: the output is 217 bytes")


async def test_a_silent_or_stalled_client_is_closed_on_the_frame_timeout(
    start_console: StartConsole, autojump_clock: trio.abc.Clock
) -> None:
    _, address = await start_console(KEYED)
    # Nothing at all: no nonce.
    client = await WireClient.open(address)
    async with client.stream:
        start = trio.current_time()
        assert await client.receive(1) is None
        assert FRAME_TIMEOUT <= trio.current_time() - start < FRAME_TIMEOUT + 1
    # Half a message.
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake()
        await client.send((100).to_bytes(4, "big") + bytes(10))
        start = trio.current_time()
        assert await client.receive(1) is None
        assert FRAME_TIMEOUT <= trio.current_time() - start < FRAME_TIMEOUT + 1


async def test_an_idle_session_stays_open(
    start_console: StartConsole, autojump_clock: trio.abc.Clock
) -> None:
    _, address = await start_console(KEYED)
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake()
        assert await client.command("") == b""  # what clients send first: proves the key
        await trio.sleep(30 * FRAME_TIMEOUT)  # idle far beyond the bound within a message
        assert await client.command("1+2") == b"3\n"


async def test_a_client_that_never_proves_the_key_is_closed(
    start_console: StartConsole, autojump_clock: trio.abc.Clock
) -> None:
    """A nonce, then nothing (or only unencrypted empty messages, which prove nothing):
    closed FRAME_TIMEOUT after connecting, so such clients cannot hold every place."""
    _, address = await start_console(KEYED + "setConsoleMaximumConcurrentConnections(2)\n")
    silent = await WireClient.open(address)
    chatty = await WireClient.open(address)
    async with silent.stream, chatty.stream:
        start = trio.current_time()
        assert await silent.handshake() and await chatty.handshake()
        refused = await WireClient.open(address)
        async with refused.stream:
            assert not await refused.handshake()  # both places taken
        for _ in range(int(FRAME_TIMEOUT) - 1):
            assert await chatty.send(frame(b""))
            assert await chatty.receive(4) == bytes(4)  # acknowledged, as dnsdist does
            await trio.sleep(1)
        assert await silent.receive(1) is None and await chatty.receive(1) is None
        assert FRAME_TIMEOUT <= trio.current_time() - start < FRAME_TIMEOUT + 1
    assert await session(address, "1+2") == [b"3\n"]


async def test_a_slow_drip_before_the_key_is_proven_is_closed_in_time(
    start_console: StartConsole, autojump_clock: trio.abc.Clock
) -> None:
    """Nonce late, then a message a byte at a time: still FRAME_TIMEOUT from connecting."""
    _, address = await start_console(KEYED)
    client = await WireClient.open(address)
    async with client.stream:
        start = trio.current_time()
        await trio.sleep(FRAME_TIMEOUT - 1)
        assert await client.handshake()
        await trio.sleep(0.5)
        assert await client.send(b"\x00")
        assert await client.receive(1) is None
        assert FRAME_TIMEOUT <= trio.current_time() - start < FRAME_TIMEOUT + 1


GARBAGE = st.one_of(
    st.binary(max_size=300),
    # A nonce, then frames of the right length holding anything.
    st.builds(
        lambda nonce, boxes: nonce + b"".join(frame(b) for b in boxes),
        st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES),
        st.lists(st.binary(max_size=80), max_size=4),
    ),
    # The same, cut anywhere.
    st.builds(
        lambda nonce, box, cut: (nonce + frame(box))[:cut],
        st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES),
        st.binary(max_size=80),
        st.integers(0, 120),
    ),
)


async def test_garbage_never_stops_the_console(
    start_console: StartConsole, caplog: pytest.LogCaptureFixture
) -> None:
    _, address = await start_console(KEYED)

    async def send_then_check(data: bytes) -> None:
        client = await WireClient.open(address)
        await client.send(data)
        await client.aclose()
        assert await session(address, "1+2") == [b"3\n"]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=GARBAGE)
    def garbage(data: bytes) -> None:
        trio.from_thread.run(send_then_check, data)

    # hypothesis drives the examples from a worker thread; each talks to the console
    # running in this test's loop (as tests/test_fuzz.py does).
    await trio.to_thread.run_sync(garbage)
    unexpected = [r for r in caplog.records if r.name == "triodist.console" and r.exc_info]
    assert not unexpected, unexpected[0].getMessage()


# --- inside a DNS server ------------------------------------------------------------------


async def test_bad_console_clients_do_not_stop_dns(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    port = free_port()
    t = await start_triodist(
        f'newServer{{address="$BACKEND", healthCheckMode="up"}}\n'
        f'controlSocket("127.0.0.1:{port}")\nsetKey("{KEY_B64}")\n'
    )
    address = ("127.0.0.1", port)
    client = await WireClient.open(address)
    async with client.stream:
        assert await client.handshake(OTHER_KEY)
        assert await client.command("") is None
    errors = await session(address, "nosuch()", "error('x')")
    assert all(e is not None and e.startswith(b"Error: ") for e in errors), errors
    assert records(await t.ask("www.example.org.")) == WWW
    [servers] = await session(address, "showServers()")
    assert servers is not None and hostport(auth).encode() in servers


# --- the command line -----------------------------------------------------------------------


async def triodist(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "triodist", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=subprocess_env(),
    )


async def start_process(nursery: trio.Nursery, argv: list[str], log: Path) -> trio.Process:
    """A server process owned by ``nursery`` (cancelling it terminates the process)."""
    with log.open("wb") as out:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=ROOT,
                env=subprocess_env(),
            )
        )
    return process


async def wait_listening(process: trio.Process, address: Address, log: Path) -> None:
    """Until ``address`` accepts TCP connections (a process has no event to wait on)."""
    with trio.fail_after(10):
        while True:
            if process.returncode is not None:
                output = await trio.Path(log).read_text()
                raise AssertionError(f"{process.args!r} exited:\n{output}")
            try:
                stream = await trio.open_tcp_stream(*address)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def test_serve_then_console_from_the_command_line(tmp_path: Path, auth: AuthServer) -> None:
    dns_port, console_port = free_port(), free_port()
    config = tmp_path / "rules.lua"
    config.write_text(
        f'setLocal("127.0.0.1:{dns_port}")\nnewServer("{hostport(auth)}")\n'
        f'controlSocket("127.0.0.1:{console_port}")\nsetKey("{KEY_B64}")\n'
    )
    async with trio.open_nursery() as nursery:
        log = tmp_path / "serve.log"
        process = await start_process(
            nursery, [sys.executable, "-m", "triodist", "serve", "--config", str(config)], log
        )
        await wait_listening(process, ("127.0.0.1", console_port), log)

        async def console(command: str) -> str:
            result = await triodist("console", "-C", str(config), "-e", command)
            assert result.returncode == 0, result.stderr
            return result.stdout.decode()

        assert hostport(auth) in await console("showServers()")
        assert await console("1+2") == "3\n"
        assert await console("print('x')") == "x\n"
        failed = await triodist("console", "-C", str(config), "-e", "nosuch()")
        assert failed.returncode == 3  # a Lua error: the command failed
        assert failed.stdout.startswith(b'Error: [string "return nosuch()"]:1:')
        reply = await udp_query(("127.0.0.1", dns_port), query("www.example.org."))
        assert records(reply) == WWW  # still serving
        # Lines from stdin, up to "quit"; -c and -k instead of the configuration.
        result = await triodist(
            "console",
            "-c",
            f"127.0.0.1:{console_port}",
            "-k",
            KEY_B64,
            stdin=b"1+2\n\nprint('a')\nquit\nprint('after quit')\n",
        )
        assert (result.returncode, result.stdout) == (0, b"3\na\n"), result.stderr
        nursery.cancel_scope.cancel()
    assert "Accepting control connections on 127.0.0.1" in await trio.Path(log).read_text()


async def test_console_exit_status_help_and_version(tmp_path: Path, auth: AuthServer) -> None:
    """``triodist console``: a command that fails (a Lua error) exits 3, commands piped in
    go on after one and exit 3 at the end; ``reloadConfig()`` that returns false is no
    failure (exit 0, as ``dnsdist -c``); ``showVersion()`` and ``help()`` answer. (Each
    ``triodist`` run costs a second of start-up: few of them, for the test's guard.)"""
    dns_port, console_port = free_port(), free_port()
    config = tmp_path / "rules.lua"
    good = (
        f'setLocal("127.0.0.1:{dns_port}")\nnewServer("{hostport(auth)}")\n'
        f'controlSocket("127.0.0.1:{console_port}")\nsetKey("{KEY_B64}")\n'
    )
    config.write_text(good)
    async with trio.open_nursery() as nursery:
        log = tmp_path / "serve.log"
        process = await start_process(
            nursery, [sys.executable, "-m", "triodist", "serve", "--config", str(config)], log
        )
        await wait_listening(process, ("127.0.0.1", console_port), log)
        where = ["console", "-c", f"127.0.0.1:{console_port}", "-k", KEY_B64]

        failed = await triodist(*where, "-e", "getPool(''):nosuch()")
        assert failed.returncode == 3, failed
        assert b"attempt to call" in failed.stdout and b"nosuch" in failed.stdout
        assert b"has no attribute" not in failed.stdout  # no Python in the message
        printed = await triodist(*where, "-e", "print('Error: only text')")
        assert (printed.returncode, printed.stdout) == (0, b"Error: only text\n")

        # Piped in: the session goes on after a failed command, and the exit status says.
        piped = await triodist(
            *where, stdin=b"1 +\nshowVersion()\nhelp('newServer')\nnosuch()\nprint('after')\n"
        )
        assert piped.returncode == 3
        lines = piped.stdout.decode().splitlines()
        # A line that does not parse: Lua's message, no trailing ": " (dnsdist's has one).
        assert lines[0] == "Error: [string \"1 +\"]:1: unexpected symbol near '1'"
        assert lines[1] == f"triodist {__version__}"
        assert lines[2] == "newServer(server_string | server_table)"
        assert lines[3].startswith("Error: ")
        assert lines[4:] == ["after"]

        config.write_text(good + "this is not Lua\n")
        reload = await triodist(*where, "-e", "reloadConfig()")
        assert reload.returncode == 0, reload  # false is an answer, not a failure
        assert b"Reloading the configuration failed" in reload.stdout
        assert reload.stdout.endswith(b"false\n")
        nursery.cancel_scope.cancel()


async def test_console_client_failures(tmp_path: Path, start_console: StartConsole) -> None:
    _, address = await start_console(KEYED)
    where = f"{address[0]}:{address[1]}"
    other = base64.b64encode(OTHER_KEY).decode()
    wrong = await triodist("console", "-c", where, "-k", other, "-e", "1+2")
    assert wrong.returncode == 1
    assert b"key mismatch" in wrong.stderr and wrong.stdout == b""
    no_key = await triodist("console", "-c", where, "-e", "1+2")
    assert no_key.returncode == 1 and b"setKey()" in no_key.stderr
    nobody = await triodist("console", "-c", f"127.0.0.1:{free_port()}", "-k", KEY_B64, "-e", "1")
    assert nobody.returncode == 1 and b"Unable to use the console" in nobody.stderr
    bad = await triodist("console", "-c", where, "-k", "short", "-e", "1")
    assert bad.returncode == 2 and b"Base64" in bad.stderr


async def test_a_bad_key_in_the_configuration_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "rules.lua"
    config.write_text('controlSocket("127.0.0.1:5199")\n\nsetKey("c2hvcnQ=")\n')
    result = await triodist("check-config", "--config", str(config))
    assert result.returncode == 0  # dnsdist goes on; --strict fails
    assert f"{config}:3: setKey: the key must be 32 bytes".encode() in result.stderr


async def test_a_console_address_in_use_stops_serve(tmp_path: Path) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "rules.lua"
        config.write_text(f'controlSocket("127.0.0.1:{port}")\nsetKey("{KEY_B64}")\n')
        result = await triodist("serve", "--config", str(config), "-l", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert (
        f"Unable to start: [Errno {errno.EADDRINUSE}] Unable to bind to control socket on "
        f"127.0.0.1:{port}: " in result.stderr.decode()
    ), result.stderr


# --- against the real dnsdist ---------------------------------------------------------------


@needs_dnsdist
async def test_dnsdist_client_against_triodist(
    tmp_path: Path, start_triodist: StartTriodist
) -> None:
    dnsdist = require_dnsdist()
    port = free_port()
    t = await start_triodist(
        f'newServer{{address="$BACKEND", name="backend-a", healthCheckMode="up"}}\n'
        f'controlSocket("127.0.0.1:{port}")\nsetKey("{KEY_B64}")\n'
    )
    empty = tmp_path / "client.conf"
    empty.write_text("")

    async def dnsdist_c(command: str, key: str = KEY_B64) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [dnsdist, "-c", "-C", str(empty), "-k", key, "-e", command, f"127.0.0.1:{port}"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    shown = await dnsdist_c("showServers()")
    assert b"backend-a" in shown.stdout, shown
    assert (await dnsdist_c("1+2")).stdout == b"3\n"
    assert (await dnsdist_c("print('x')")).stdout == b"x\n"
    assert (await dnsdist_c("nosuch()")).stdout.startswith(b'Error: [string "return nosuch()"]:1: ')
    wrong = await dnsdist_c("1+2", base64.b64encode(OTHER_KEY).decode())
    assert b"key mismatch" in wrong.stdout + wrong.stderr
    assert records(await t.ask("www.example.org.")) == WWW


@needs_dnsdist
async def test_triodist_client_against_dnsdist(tmp_path: Path, auth: AuthServer) -> None:
    dnsdist = require_dnsdist()
    dns_port, console_port = free_port(), free_port()
    config = tmp_path / "dnsdist.conf"
    config.write_text(
        f'setLocal("127.0.0.1:{dns_port}")\n'
        f'newServer{{address="{hostport(auth)}", name="backend-a"}}\n'
        f'controlSocket("127.0.0.1:{console_port}")\nsetKey("{KEY_B64}")\n'
    )
    async with trio.open_nursery() as nursery:
        log = tmp_path / "dnsdist.log"
        argv = [dnsdist, "--supervised", "--disable-syslog", "-C", str(config)]
        process = await start_process(nursery, argv, log)
        await wait_listening(process, ("127.0.0.1", console_port), log)
        shown = await triodist("console", "-C", str(config), "-e", "showServers()")
        assert shown.returncode == 0, shown.stderr
        assert b"backend-a" in shown.stdout and hostport(auth).encode() in shown.stdout
        sum_ = await triodist("console", "-C", str(config), "-e", "1+2")
        assert sum_.stdout == b"3\n"
        error = await triodist("console", "-C", str(config), "-e", "nosuch()")
        assert error.stdout.startswith(b'Error: [string "return nosuch()"]:1: ')
        wrong = await triodist(
            "console",
            "-c",
            f"127.0.0.1:{console_port}",
            "-k",
            base64.b64encode(OTHER_KEY).decode(),
            "-e",
            "1+2",
        )
        assert wrong.returncode == 1 and b"key mismatch" in wrong.stderr
        nursery.cancel_scope.cancel()
