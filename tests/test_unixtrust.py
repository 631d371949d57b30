"""Local users and the asynchronous sockets: only this user and root are heard or told.

The verdicts that resume held queries come over unix datagram sockets, so another local
user must not be able to send them (to triodist or to the example filter), to receive
triodist's queries in the filter's place, or to own a socket's directory.  Each test runs
over real sockets; "another user" is ``nobody`` (65534), whose datagrams come from a child
process that drops root's privileges, so those tests need root (CI runs as root) and are
skipped otherwise.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest
import trio
from conftest import StartTriodist, records, until
from helpers import abstract_name

from triodist.asyncproc import socketfiles as network
from triodist.asyncproc.endpoint import NetworkEndpoint
from triodist.asyncproc.listener import NetworkListener
from triodist.config.api import ConfigAPI
from triodist.config.bindings.args import ConfigError
from triodist.config.bindings.inspection import format_stats
from triodist.config.runtime import LuaConfig
from triodist.system.unixtrust import UnsafePathError, check_directory, trust_user, unsafe_directory
from triodist.testing import component as asyncfilter

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="sending as another user (and chown) needs root"
)

#: The start of a child process that becomes ``nobody`` (the interpreter may not be
#: readable by that user, so it starts as root and drops, as a service would).
AS_NOBODY = (
    "import os, socket, sys, time\n"
    f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
    f"assert os.getuid() == os.geteuid() == {NOBODY}\n"
)


async def send_as_nobody(address: bytes, *messages: bytes) -> None:
    """Send ``messages`` to the unix datagram socket ``address`` from user nobody."""
    code = AS_NOBODY + (
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "for m in sys.argv[2:]:\n"
        "    s.sendto(bytes.fromhex(m), bytes.fromhex(sys.argv[1]))\n"
    )
    await trio.run_process(
        [sys.executable, "-c", code, address.hex(), *(m.hex() for m in messages)],
        capture_stderr=True,
    )


def lua_abstract(name: bytes) -> str:
    """An abstract name as a Lua string literal's contents."""
    return "\\0" + name[1:].decode()


# --- the listener: every datagram comes from this user or root ------------------------------

HELD = """
newServer('$BACKEND')
component = newNetworkEndpoint('COMPONENT')
function verdict(endpointID, message, from)
  local id, what = message:match("^(%d+) (%a+)$")
  local ok, obj = pcall(getAsynchronousObject, 0, tonumber(id))
  if not ok then return end
  if what == "refuse" then obj:setRCode(DNSRCode.REFUSED, true) end
  obj:resume()
end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint('LISTENER', 0, verdict)
listener:start()
addAction(AllRule(), LuaAction(function(dq)
  local id = dq.dh:getID()
  if dq:suspend(0, id, 5000) then component:send(tostring(id)) end
  return DNSAction.Allow
end))
"""


@needs_root
async def test_another_users_verdict_does_not_answer_a_held_query(
    start_triodist: StartTriodist, nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The case: a listener on an abstract name, which has no file and so no
    # permissions; another user sends "refuse" for a real client's held query.
    name = abstract_name().encode()
    component = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    component.bind(str(tmp_path / "component.sock"))
    t = await start_triodist(
        HELD.replace("COMPONENT", str(tmp_path / "component.sock")).replace(
            "LISTENER", lua_abstract(name)
        )
    )
    answers: list[dns.message.Message | None] = []
    answered = trio.Event()

    async def client() -> None:
        answers.append(await t.ask("www.example.org", timeout=10))
        answered.set()

    nursery.start_soon(client)
    with component:
        await trio.lowlevel.wait_readable(component)
        query_id = component.recv(100)  # the query is held under this ID
    await send_as_nobody(name, query_id + b" refuse")
    await until(lambda: t.stats["async-foreign-drops"] == 1 or answered.is_set())
    # The component (this user) lets it through: the backend's answer, not REFUSED.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as own:
        own.sendto(query_id + b" allow", name)
    await answered.wait()
    (reply,) = answers
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR, reply
    assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert t.stats["async-foreign-drops"] == 1
    assert t.stats["async-resumed"] == 1


COUNTING = """
newServer('$BACKEND')
seen = {}
function got(endpointID, message, from) seen[#seen + 1] = message end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint('LISTENER', 0, got)
listener:start()
"""


@needs_root
@pytest.mark.parametrize("where", ["abstract", "path"])
async def test_datagrams_from_another_user_are_dropped_counted_and_logged_once(
    start_triodist: StartTriodist,
    shared_dir: Path,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    if where == "abstract":
        address = abstract_name().encode()
        lua_path = lua_abstract(address)
    else:
        # A socket file someone made world-writable: the credentials still decide.
        address = os.fsencode(shared_dir / "triodist.sock")
        lua_path = os.fsdecode(address)
    t = await start_triodist(COUNTING.replace("LISTENER", lua_path))
    if where == "path":
        os.chmod(address, 0o666)
    await send_as_nobody(address, *(b"refuse %d" % i for i in range(50)))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as own:
        own.sendto(b"mine", address)
    seen = t.lua.lua.globals().seen
    await until(lambda: "mine" in list(seen.values()))
    assert list(seen.values()) == ["mine"]
    assert t.stats["async-foreign-drops"] == 50
    (listener,) = t.server.config.network_listeners
    assert listener.endpoints[0].foreign == 50
    assert listener.endpoints[0].received == 1
    warnings = [r.getMessage() for r in caplog.records if "by another user" in r.getMessage()]
    assert len(warnings) == 1, warnings  # one line for the burst, not one per datagram
    assert "uid 65534 (nobody)" in warnings[0], warnings
    # Who may send, each named once (running as root: not "uid 0 (root) and root").
    assert "only root may send to it" in warnings[0], warnings
    # dumpStats shows it (the configuration's counters are the running server's).
    shown = format_stats(t.server.config.stats or {})
    assert re.search(r"async-foreign-drops\s+50\b", shown), shown
    assert "foreign-drops 50" in t.server.config.async_registry.show()  # showSuspended()


# --- directories ------------------------------------------------------------------------------


async def test_a_missing_socket_directory_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private" / "triodist.sock"
    listener = NetworkListener()
    listener.addUnixListeningEndpoint(str(path), 0, print)
    listener.start()
    assert not path.parent.exists(), "recording the configuration creates nothing"
    before = os.umask(0)  # the loosest umask: the directory must not inherit it
    try:
        listener.open()
    finally:
        os.umask(before)
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        listener.close()


async def test_directories_others_may_write_are_refused_sticky_ancestors_are_not(
    tmp_path: Path,
) -> None:
    def refused(directory: Path) -> str:
        listener = NetworkListener()
        with pytest.raises(ValueError, match="unsafe directory") as info:
            listener.addUnixListeningEndpoint(str(directory / "x.sock"), 0, print)
        return str(info.value)

    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    message = refused(open_dir)
    assert f"'{open_dir}'" in message and "mode 0777" in message, message
    assert "other users may write to it" in message

    # Sticky is no excuse for the socket's own directory: another user could take the
    # socket's name before the server binds it.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert "mode 1777" in refused(sticky)

    # As a directory above it (as /tmp is), sticky is fine: nobody else can rename or
    # remove the private directory this user made in it.
    private = sticky / "private"
    private.mkdir(mode=0o700)
    assert unsafe_directory(os.fsencode(private)) is None
    NetworkListener().addUnixListeningEndpoint(str(private / "x.sock"), 0, print)

    # A directory above it that others may write to and is not sticky: refused.
    (open_dir / "private").mkdir(mode=0o700)
    message = refused(open_dir / "private")
    assert f"'{open_dir}' (holding" in message and "not sticky" in message, message

    # A missing socket directory is judged by where it would be created.
    refused(open_dir / "missing")

    # At start-up as well: a directory made unsafe after the configuration ran.
    later = tmp_path / "later"
    later.mkdir(mode=0o700)
    listener = NetworkListener()
    listener.addUnixListeningEndpoint(str(later / "x.sock"), 0, print)
    listener.start()
    later.chmod(0o770)
    with pytest.raises(OSError, match=r"Error binding Unix socket to path '.*later/x\.sock'"):
        listener.open()
    assert not (later / "x.sock").exists()


@needs_root
async def test_a_directory_another_user_owns_is_refused_everywhere(
    tmp_path: Path, shared_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The case: another user made the directory first (the example's is in /tmp).
    theirs = shared_dir / "triodist-async"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)

    # check-config, the real command line: the error names the path, the owner and mode.
    config = tmp_path / "rules.lua"
    config.write_text(
        "local l = newNetworkListener()\n"
        f"l:addUnixListeningEndpoint('{theirs}/triodist.sock', 0, print)\n"
        "l:start()\n"
    )
    result = await trio.run_process(
        [sys.executable, "-m", "triodist", "check-config", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert f"{config}:2: " in stderr, stderr
    assert f"'{theirs}' is owned by uid 65534 (nobody), mode 0700" in stderr, stderr

    # From Lua, a configuration error.
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        LuaConfig(ConfigAPI()).run_string(config.read_text(), "rules.lua")

    # The endpoint: a component's socket in that directory is never sent to, even one
    # this user bound there (the directory's owner could swap it at any time).
    component = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    component.bind(str(theirs / "filter.sock"))
    with component:
        endpoint = NetworkEndpoint(str(theirs / "filter.sock"))
        assert not endpoint.isValid()
        assert endpoint.send(b"query") is False
        assert endpoint.send(b"query") is False
        component.setblocking(False)
        with pytest.raises(BlockingIOError):
            component.recv(100)
        endpoint.close()
    refusals = [m for m in caplog.messages if "refused, nothing is sent" in m]
    assert len(refusals) == 1, refusals  # logged once, not at every send
    assert "owned by uid 65534 (nobody)" in refusals[0]

    # The example filter refuses it for its own socket and for triodist's.
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        asyncfilter.bind_datagram_socket(theirs / "f.sock")
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        asyncfilter.prepare_reply_path(theirs / "triodist.sock")
    filter_cli = await trio.run_process(
        [
            sys.executable,
            str(ROOT / "examples" / "async_filter.py"),
            "--listen",
            str(tmp_path / "filter" / "filter.sock"),
            "--reply",
            str(theirs / "triodist.sock"),
            "--rules",
            str(ROOT / "examples" / "async-filter.rules"),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert filter_cli.returncode == 1
    assert b"owned by uid 65534 (nobody)" in filter_cli.stderr, filter_cli.stderr


@needs_root
async def test_the_user_a_server_becomes_is_its_own(tmp_path: Path) -> None:
    # serve -u USER: a directory of USER's is accepted, a missing one is created for USER
    # (who must reach and remove the socket once the server runs as USER).
    theirs = tmp_path / "run"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    config = tmp_path / "rules.lua"
    config.write_text(
        "local l = newNetworkListener()\n"
        f"l:addUnixListeningEndpoint('{theirs}/triodist.sock', 0, print)\n"
        "l:start()\n"
    )

    async def check(*options: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [
                sys.executable,
                "-m",
                "triodist",
                "serve",
                "--check-config",
                "-C",
                str(config),
                *options,
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    refused, accepted = await check(), await check("-u", "nobody", "-g", "nogroup")
    assert refused.returncode == 1 and b"owned by uid 65534 (nobody)" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr

    trust_user(NOBODY)
    try:
        listener = NetworkListener()
        listener.addUnixListeningEndpoint(str(tmp_path / "new" / "x.sock"), 0, print)
        listener.start()
        listener.open()
        info = (tmp_path / "new").stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY, 0o700)
        listener.close()
    finally:
        trust_user(None)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        check_directory(os.fsencode(tmp_path / "new"))


def _home_of_nobody(tmp_path: Path) -> Path:
    """A directory of nobody's (serve -u nobody trusts it) in root's private tmp_path."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    return home


def _roots(tmp_path: Path) -> Path:
    """A directory of root's that nobody must never get: the stand-in for /etc."""
    target = tmp_path / "etc"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    return target


@needs_root
async def test_a_directory_swapped_for_a_link_while_created_is_not_given_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve -u nobody, a socket directory to create in nobody's home: nobody removes the
    # new directory and puts a link to root's in its place between mkdir and the chown.
    home, target = _home_of_nobody(tmp_path), _roots(tmp_path)
    created = home / "run"
    real_mkdir = os.mkdir

    def mkdir_then_swap(*args: Any, **kwargs: Any) -> None:
        real_mkdir(*args, **kwargs)
        if created.is_dir() and not created.is_symlink():
            created.rmdir()
            created.symlink_to(target)
            os.lchown(created, NOBODY, NOBODY)

    monkeypatch.setattr(os, "mkdir", mkdir_then_swap)
    trust_user(NOBODY)
    listener = NetworkListener()
    try:
        listener.addUnixListeningEndpoint(str(created / "x.sock"), 0, print)
        listener.start()
        with pytest.raises(OSError, match="changed while it was opened"):
            listener.open()
    finally:
        trust_user(None)
        listener.close()
    info = target.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o755)
    assert not (target / "x.sock").exists()


@needs_root
async def test_a_socket_directory_redirected_after_its_check_is_not_acted_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve -u nobody, a socket directory of nobody's: once it is checked, nobody renames
    # it and puts a link to root's directory in its place.  Root must neither remove the
    # (stale) socket file of that name there nor bind a new one there.
    home, target = _home_of_nobody(tmp_path), _roots(tmp_path)
    run = home / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(os.fsencode(target / "x.sock"))
    stale.close()  # a socket file nobody listens on: what a stale one looks like
    # A second name keeps its inode in use, so that a new file cannot take its number.
    os.link(target / "x.sock", tmp_path / "kept")
    before = (target / "x.sock").lstat().st_ino
    real_open = network.open_private_directory

    def open_then_swap(directory: bytes) -> int:
        fd = real_open(directory)
        run.rename(home / "run.old")
        run.symlink_to(target)
        os.lchown(run, NOBODY, NOBODY)
        return fd

    monkeypatch.setattr(network, "open_private_directory", open_then_swap)
    trust_user(NOBODY)
    listener = NetworkListener()
    try:
        listener.addUnixListeningEndpoint(str(run / "x.sock"), 0, print)
        listener.start()
        listener.open()
        assert (target / "x.sock").lstat().st_ino == before, "root's file was replaced"
        assert stat.S_ISSOCK((home / "run.old" / "x.sock").lstat().st_mode)
    finally:
        trust_user(None)
        listener.close()
    assert (target / "x.sock").lstat().st_ino == before, "root's file was removed"
    assert not (home / "run.old" / "x.sock").exists(), "ours is removed where it was made"


@needs_root
async def test_a_symbolic_link_another_user_owns_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(private)
    check_directory(os.fsencode(link))  # this user's link to this user's directory
    os.lchown(link, NOBODY, NOBODY)  # its owner could point it anywhere
    with pytest.raises(UnsafePathError, match="symbolic link owned by uid 65534"):
        check_directory(os.fsencode(link))


# --- the endpoint: never sends to another user's socket ---------------------------------------


@needs_root
async def test_an_endpoint_never_sends_to_another_users_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Any user may bind an abstract name first and wait for the queries.
    name = abstract_name().encode()
    squatter = AS_NOBODY + (
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.bind(bytes.fromhex(sys.argv[1]))\n"
        "print('bound', flush=True)\n"
        "sys.stdin.read()\n"  # until the test is done
        "s.setblocking(False)\n"
        "n = 0\n"
        "try:\n"
        "    while True: s.recv(100); n += 1\n"
        "except BlockingIOError: pass\n"
        "print(n, flush=True)\n"
    )
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, "-c", squatter, name.hex()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
        assert process.stdin is not None and process.stdout is not None
        assert (await process.stdout.receive_some(100)).strip() == b"bound"
        endpoint = NetworkEndpoint(name)
        assert not endpoint.isValid()
        assert [endpoint.send(b"a query") for _ in range(3)] == [False] * 3
        await process.stdin.aclose()  # the squatter counts what it got, and exits
        received = b""
        while chunk := await process.stdout.receive_some(100):
            received += chunk
        assert received.strip() == b"0", "the other user's socket got a query"
    refusals = [m for m in caplog.messages if "refused, nothing is sent" in m]
    assert len(refusals) == 1, refusals
    assert "belongs to uid 65534 (nobody)" in refusals[0]

    # Once it is gone and this user binds the name, the endpoint reaches it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ours:
        ours.bind(name)
        assert endpoint.isValid()
        assert endpoint.send(b"a query")
        assert ours.recv(100) == b"a query"
    endpoint.close()


# --- the example filter ----------------------------------------------------------------------


@needs_root
async def test_the_example_filter_answers_only_this_user(
    nursery: trio.Nursery, shared_dir: Path
) -> None:
    listen_path = shared_dir / "filter.sock"
    reply_path = shared_dir / "triodist.sock"
    listen = asyncfilter.bind_datagram_socket(listen_path)
    listen_path.chmod(0o666)  # reachable by anyone: the credentials still decide
    stats: Counter[str] = Counter()
    rules = asyncfilter.parse_rules("block ads.example.org\n")
    triodist = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    triodist.bind(str(reply_path))
    with listen, triodist:
        nursery.start_soon(asyncfilter.serve, listen, reply_path, rules, stats)
        query = dns.message.make_query("ads.example.org", "A")
        query.id = 7
        await send_as_nobody(os.fsencode(listen_path), query.to_wire())
        await until(lambda: stats["received"] == 1)
        assert stats["foreign"] == 1 and stats["refuse"] == 0
        query.id = 8
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as own:
            own.sendto(query.to_wire(), str(listen_path))
        await trio.lowlevel.wait_readable(triodist)
        assert triodist.recv(100) == b"8 refuse"  # the only verdict sent
        assert stats["foreign"] == 1 and stats["refuse"] == 1
        nursery.cancel_scope.cancel()
