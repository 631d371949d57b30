"""``serve -u USER -g GROUP``: bind as root, then run as the user (dnsdist's ``--uid``/``--gid``).

The server is the real command line in a subprocess, listening on privileged ports of
loopback (below 1024: only root may bind them), so that binding before the drop is what
is tested. Those tests need root, as CI runs, and are skipped without it. Who the process
became is read from ``/proc/<pid>/status`` and asked on its console (the Lua there runs
``id -u``); the resolution of names and the refusals run anywhere.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import dns.message
import pytest
import trio
from conftest import free_port, hostport, query, records, udp_query, until
from helpers import subprocess_env

from triodist.cli import main
from triodist.system import privileges
from triodist.system.privileges import PrivilegeError, Target
from triodist.testing.backend import AuthServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
WWW = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}

USER = "nobody"
GROUP = "nogroup" if any(g.gr_name == "nogroup" for g in grp.getgrall()) else "nobody"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="binding a privileged port and changing user need root"
)


def _uid() -> int:
    return pwd.getpwnam(USER).pw_uid


def _gid() -> int:
    return grp.getgrnam(GROUP).gr_gid


def privileged_ports(count: int) -> list[int]:
    """``count`` ports below 1024 free for UDP and TCP on 127.0.0.1."""
    ports: list[int] = []
    for port in range(900, 1000):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind(("127.0.0.1", port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
            continue
        ports.append(port)
        if len(ports) == count:
            return ports
    pytest.skip("no free privileged port in 900-999 on 127.0.0.1")


def status(pid: int) -> dict[str, list[str]]:
    """``/proc/<pid>/status``: Uid (real, effective, saved, filesystem), Gid, Groups."""
    fields: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return fields


def assert_runs_as_the_user(pid: int) -> None:
    fields = status(pid)
    assert fields["Uid"] == [str(_uid())] * 4, fields["Uid"]
    assert fields["Gid"] == [str(_gid())] * 4, fields["Gid"]
    assert fields["Groups"] == [], fields["Groups"]  # supplementary groups cleared
    assert int(fields["CapEff"][0], 16) == 0


class Served:
    """``triodist serve`` in a subprocess, its output in ``log``."""

    def __init__(self, process: trio.Process, address: tuple[str, int], log: Path) -> None:
        self.process = process
        self.address = address
        self.log = log

    async def wait_answering(self) -> dns.message.Message:
        with trio.fail_after(10):
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"triodist exited:\n{self.log.read_text()}")
                try:
                    reply = await udp_query(self.address, query("www.example.org."), timeout=0.2)
                except ConnectionRefusedError:  # not listening yet: ICMP port unreachable
                    reply = None
                if reply is not None:
                    return reply
                await trio.sleep(0.05)

    def logged(self, text: str) -> bool:
        return text in self.log.read_text()

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            return await self.process.wait()


@pytest.fixture
async def serve() -> AsyncIterator[list[Served]]:
    """Started servers (see ``start``), killed if a test leaves one running."""
    started: list[Served] = []
    yield started
    for served in started:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()


async def start(started: list[Served], log: Path, port: int, *args: str) -> Served:
    """``triodist serve ARGS``, started as root with a supplementary group (as from a
    root shell), so that clearing them is seen."""
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "triodist", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=subprocess_env(),
            extra_groups=[0],
        )
    served = Served(process, ("127.0.0.1", port), log)
    started.append(served)
    return served


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (whichever of its threads started them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if status(int(entry.name)).get("PPid") == [str(pid)]:
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


async def console(port: int, command: str) -> str:
    """A command on the server's console, with the real console client."""
    argv = [sys.executable, "-m", "triodist", "console", "-c", f"127.0.0.1:{port}", "-k", KEY]
    result = await trio.run_process(
        [*argv, "-e", command],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def config_text(dns_port: int, console_port: int, auth: AuthServer, extra: str = "") -> str:
    return (
        f'setLocal("127.0.0.1:{dns_port}")\n'
        f'controlSocket("127.0.0.1:{console_port}")\nsetKey("{KEY}")\n'
        f'newServer("{hostport(auth)}")\n'
        'addAction(QNameSuffixRule("spoof.example."), SpoofAction({"192.0.2.1", "2001:db8::1"}))\n'
        + extra
    )


# --- the command line, as root --------------------------------------------------------------


@needs_root
async def test_serve_binds_privileged_ports_then_runs_as_the_user(
    serve: list[Served], shared_dir: Path, tmp_path: Path, auth: AuthServer
) -> None:
    dns_port, console_port = privileged_ports(2)
    config = shared_dir / "rules.lua"
    config.write_text(config_text(dns_port, console_port, auth))
    served = await start(
        serve, tmp_path / "serve.log", dns_port, "-C", str(config), "-u", USER, "-g", GROUP
    )
    # The DNS listener (UDP and TCP) and the console are on ports only root may bind.
    assert records(await served.wait_answering()) == WWW
    assert_runs_as_the_user(served.process.pid)
    # What a console command (or a rule) can do is what the user can do.
    assert await console(console_port, "io.popen('id -u'):read('*l')") == f"{_uid()}\n"
    status_line = "io.open('/proc/self/status'):read('*a'):match('Groups:[^\\n]*')"
    assert (await console(console_port, status_line)).split() == ["Groups:"]
    # A record type parsed for the first time after the drop (a spoofed AAAA) is
    # answered: what dnspython imports lazily was imported before it.
    for qtype, data in (("A", "192.0.2.1"), ("AAAA", "2001:db8::1")):
        reply = await udp_query(served.address, query("x.spoof.example.", qtype))
        assert records(reply) == {f"x.spoof.example. {qtype} {data}"}
    assert await served.stop() == 0
    log = served.log.read_text()
    assert f"Set effective group id to {_gid()}\nSet effective user id to {_uid()}\n" in log
    # Dropped after the console was bound and before the DNS listeners serve.
    assert log.index("Accepting control connections") < log.index("Set effective user id")
    assert log.index("Set effective user id") < log.index(f"Listening on 127.0.0.1:{dns_port}")


@needs_root
async def test_the_first_health_checks_run_as_the_user(
    serve: list[Served], shared_dir: Path, tmp_path: Path, auth: AuthServer
) -> None:
    # The first health checks (their checkFunction, the backends' replies) are the first
    # things read from the network: run as root, a checkFunction would run as root too.
    dns_port, console_port = privileged_ports(2)
    extra = (
        "function recordUser(qname, qtype, qclass, dh)\n"
        "  if firstCheckUser == nil then firstCheckUser = io.popen('id -u'):read('*l') end\n"
        "  return qname, qtype, qclass\n"
        "end\n"
        f'newServer{{address="{hostport(auth)}", name="checked", checkFunction=recordUser}}\n'
    )
    config = shared_dir / "rules.lua"
    config.write_text(config_text(dns_port, console_port, auth, extra))
    served = await start(
        serve, tmp_path / "serve.log", dns_port, "-C", str(config), "-u", USER, "-g", GROUP
    )
    await served.wait_answering()
    assert await console(console_port, "firstCheckUser") == f"{_uid()}\n"
    assert await served.stop() == 0
    log = served.log.read_text()
    assert log.index("Set effective user id") < log.index("Marking downstream"), log


@needs_root
async def test_a_reload_that_needs_a_privileged_bind_is_refused(
    serve: list[Served], shared_dir: Path, tmp_path: Path, auth: AuthServer
) -> None:
    dns_port, console_port, new_port = privileged_ports(3)
    if privileges.unprivileged_port_start() <= new_port:
        pytest.skip("ports below 1000 are not privileged here (ip_unprivileged_port_start)")
    config = shared_dir / "rules.lua"
    config.write_text(config_text(dns_port, console_port, auth))
    served = await start(
        serve, tmp_path / "serve.log", dns_port, "-C", str(config), "-u", USER, "-g", GROUP
    )
    await served.wait_answering()
    new_rule = 'addAction(QNameSuffixRule("new.example."), SpoofAction("192.0.2.99"))\n'
    config.write_text(
        config_text(dns_port, console_port, auth, f'addLocal("127.0.0.1:{new_port}")\n' + new_rule)
    )
    output = await console(console_port, "reloadConfig()")
    assert output == (
        f"Reloading the configuration failed, nothing changed: listening on 127.0.0.1:{new_port} "
        f"needs privileges dropped at start (the server runs as uid {_uid()} ({USER}), gid "
        f"{_gid()} ({GROUP}) since then, -u/-g; ports below 1024 need root): restart it to "
        "listen there\nfalse\n"
    )
    # The running configuration serves on, unchanged (the new rule is not in force).
    assert served.process.returncode is None
    assert records(await udp_query(served.address, query("www.new.example."))) == set()
    assert records(await udp_query(served.address, query("www.example.org."))) == WWW
    # SIGHUP says the same in the log.
    served.process.send_signal(signal.SIGHUP)
    await until(lambda: served.logged("needs privileges dropped at start"), 10, step=0.05)
    # A new socket path where only root may create files: refused too.
    listener = (
        "listener = newNetworkListener()\n"
        f'listener:addUnixListeningEndpoint("{shared_dir / "new.sock"}", 1, print)\n'
        "listener:start()\n"
    )
    config.write_text(config_text(dns_port, console_port, auth, listener + new_rule))
    output = await console(console_port, "reloadConfig()")
    assert output.startswith("Reloading the configuration failed, nothing changed: ")
    assert "no permission to create files in" in output and output.endswith("\nfalse\n")
    assert not (shared_dir / "new.sock").exists()
    assert records(await udp_query(served.address, query("www.new.example."))) == set()
    # The same change without the privileged address reloads.
    config.write_text(config_text(dns_port, console_port, auth, new_rule))
    assert await console(console_port, "reloadConfig()") == "true\n"
    reply = await udp_query(served.address, query("www.new.example."))
    assert records(reply) == {"www.new.example. A 192.0.2.99"}
    assert await served.stop() == 0


@needs_root
async def test_a_network_listener_socket_is_given_to_the_user(
    serve: list[Served], shared_dir: Path, tmp_path: Path, auth: AuthServer
) -> None:
    dns_port, console_port = privileged_ports(2)
    # The socket's directory is the user's (as a service manager's runtime directory):
    # the user can reach the socket and remove it.
    sockets = shared_dir / "run"
    sockets.mkdir(mode=0o700)
    os.chown(sockets, _uid(), _gid())
    path = sockets / "listener.sock"
    config = shared_dir / "rules.lua"
    listener = (
        "function received(id, message, from) got = message end\n"
        "listener = newNetworkListener()\n"
        f'listener:addUnixListeningEndpoint("{path}", 1, received)\n'
        "listener:start()\n"
    )
    config.write_text(config_text(dns_port, console_port, auth, listener))
    served = await start(
        serve, tmp_path / "serve.log", dns_port, "-C", str(config), "-u", USER, "-g", GROUP
    )
    await served.wait_answering()
    info = path.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (_uid(), _gid(), 0o600)
    # A component running as the user can send to it: the server itself, from its console.
    send = f"endpoint = newNetworkEndpoint('{path}'); return endpoint:send('hello')"
    assert await console(console_port, send) == "true\n"

    async def received() -> bool:
        return await console(console_port, "got") == "hello\n"

    await until(received, 10, step=0.05)
    assert await served.stop() == 0
    assert not path.exists()  # removed at shutdown, by the user


@needs_root
async def test_workers_bind_then_every_process_runs_as_the_user(
    serve: list[Served], shared_dir: Path, tmp_path: Path, auth: AuthServer
) -> None:
    dns_port, console_port = privileged_ports(2)
    config = shared_dir / "rules.lua"
    config.write_text(config_text(dns_port, console_port, auth))
    served = await start(
        serve,
        tmp_path / "serve.log",
        dns_port,
        "-C",
        str(config),
        "--workers",
        "2",
        "-u",
        USER,
        "-g",
        GROUP,
    )
    await served.wait_answering()
    await until(lambda: served.logged("All 2 workers listening"), 10, step=0.05)
    parent = served.process.pid
    workers = children(parent)
    assert len(workers) == 2
    # The parent drops once every worker listens: wait for it.
    await until(lambda: status(parent)["Uid"][0] != "0", 10, step=0.05)
    for pid in [parent, *workers]:
        assert_runs_as_the_user(pid)
    # Both workers bound the privileged address (SO_REUSEPORT) and answer.
    for _ in range(20):
        assert records(await udp_query(served.address, query("www.example.org."))) == WWW
    assert "queries" in await console(console_port, "dumpStats()")
    # The parent, now the user, can still stop its workers.
    assert await served.stop() == 0


# --- refusals, anywhere ---------------------------------------------------------------------


async def test_an_unknown_user_or_group_is_refused_before_anything_is_bound(
    tmp_path: Path,
) -> None:
    port = free_port()
    for args, message in (
        (["-u", "no-such-user-here"], "Unable to resolve user 'no-such-user-here'"),
        (["-g", "no-such-group-here"], "Unable to resolve group 'no-such-group-here'"),
    ):
        result = await trio.run_process(
            [sys.executable, "-m", "triodist", "serve", "-l", f"127.0.0.1:{port}", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=subprocess_env(),
        )
        assert result.returncode == 1
        err = result.stderr.decode()
        assert f"Unable to start: {message}: no such" in err, err
        assert "Listening on" not in err


def test_a_process_that_is_not_root_refuses_other_ids(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As dnsdist 1.7.3 would warn and serve on as it is; triodist does not start.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    assert main(["serve", "-l", f"127.0.0.1:{free_port()}", "-u", USER, "-g", GROUP]) == 1
    err = capsys.readouterr().err
    assert "Unable to start: -u/-g ask for uid" in err
    assert "only root can change its user or group (this process runs as uid 1000" in err
    # Asking for the ids it already has is nothing to do.
    assert privileges.resolve("1000", "1000") is None


def test_names_and_numbers() -> None:
    nobody = pwd.getpwnam(USER)
    if os.geteuid() == 0:
        # -u alone: the user's own group (dnsdist would keep root's group, 0).
        assert privileges.resolve(USER, None) == Target(
            nobody.pw_uid, nobody.pw_gid, USER, grp.getgrgid(nobody.pw_gid).gr_name
        )
        assert privileges.resolve(str(nobody.pw_uid), str(_gid())) == Target(
            nobody.pw_uid, _gid(), str(nobody.pw_uid), str(_gid())
        )
        unknown = next(uid for uid in range(40000, 50000) if not _known_uid(uid))
        with pytest.raises(PrivilegeError, match="give the group with -g"):
            privileges.resolve(str(unknown), None)
    for bad in ("-1", "4294967295", "1e3", "٣"):
        with pytest.raises(PrivilegeError, match="not a number"):
            privileges.resolve(bad, None)


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_a_drop_that_did_not_take_is_an_error() -> None:
    # Checked without dropping anything: this process is not who is asked for.
    me = Target(os.getuid() + 1, os.getgid(), "someone", "group")
    with pytest.raises(PrivilegeError, match="did not take"):
        privileges.verify(me)


def test_a_reload_may_keep_or_add_unprivileged_addresses_only() -> None:
    target = Target(65534, 65534, "nobody", "nogroup")
    start = privileges.unprivileged_port_start()
    if start <= 1:
        pytest.skip("every port is unprivileged here (ip_unprivileged_port_start)")
    kept = [("127.0.0.1", start - 1)]
    privileges.refuse_privileged_binds(kept, kept, target)  # bound already: fine
    privileges.refuse_privileged_binds(kept, [*kept, ("127.0.0.1", start)], target)
    privileges.refuse_privileged_binds(kept, [("127.0.0.1", 0)], target)
    with pytest.raises(PrivilegeError, match=r"listening on \[::1\]:53 needs privileges"):
        privileges.refuse_privileged_binds(kept, [("::1", 53)], target)
