"""The real command line, as a user runs it: ``python -m triodist ...`` in a subprocess.

Configuration checks and their errors (exit code, file and line), the version,
``serve`` answering on the address given with ``-l``, and a SIGTERM that lets
the query in flight finish.  These tests use real time.
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import trio
from conftest import free_port, hostport, query, records, udp_query
from helpers import subprocess_env

import triodist
from triodist.config.runtime import engine_version
from triodist.testing.backend import AuthServer

ROOT = Path(__file__).resolve().parent.parent
WWW = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}

MakeAuth = Callable[..., Awaitable[AuthServer]]


async def triodist_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m triodist ARGS`` to completion; its exit code and output."""
    return await trio.run_process(
        [sys.executable, "-m", "triodist", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=subprocess_env(),
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- check-config ----------------------------------------------------------------------------


async def test_check_config_ok(tmp_path: Path) -> None:
    config = write(
        tmp_path / "rules.lua",
        """
        setLocal("127.0.0.1:5300")
        newServer{address="192.0.2.1:53", pool="abuse"}
        newServer("192.0.2.2")
        addAction(QNameSuffixRule("ads.example.org"), DropAction())
        addAction(AllRule(), PoolAction("abuse"))
        """,
    )
    for args in (
        ["check-config", "--config", str(config)],
        ["serve", "--config", str(config), "--check-config"],
    ):
        result = await triodist_cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().strip() == f"Configuration '{config}' OK!"


async def test_check_config_does_not_contact_backends_or_bind(tmp_path: Path) -> None:
    port = free_port()
    config = write(
        tmp_path / "rules.lua",
        f'setLocal("127.0.0.1:{port}")\nnewServer("127.0.0.1:{port}")\n',
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))  # serving would fail: the port is taken
        result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr


async def test_check_config_ends_with_what_is_ignored(tmp_path: Path) -> None:
    """A file that asks for what triodist does not support yet still loads (exit 0), but
    the last line says so, by name, instead of dnsdist's "OK!"."""
    config = write(
        tmp_path / "rules.lua",
        """
        newServer{address="192.0.2.1", tls="openssl"}
        addAction(AllRule(), DnstapLogAction("id", newFrameStreamUnixLogger("/nowhere")))
        addAction(QTypeRule(DNSQType.ANY), TCAction())
        addResponseAction(HTTPPathRule("/dns-query"), DropResponseAction())
        """,
    )
    for args in (
        ["check-config", "--config", str(config)],
        ["serve", "--config", str(config), "--check-config"],
    ):
        result = await triodist_cli(*args)
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert "OK!" not in out
        last = out.splitlines()[-1]
        assert last.startswith(f"Configuration '{config}' loads, but triodist ignores 4 things")
        for name in (
            "addAction rule(s) using DnstapLogAction",
            "addResponseAction rule(s) using HTTPPathRule",
            "newFrameStreamUnixLogger",
            "newServer option(s) 'tls'",
        ):
            assert name in last


async def _config_error(tmp_path: Path, text: str, *args: str) -> str:
    """Check a configuration that must fail; the line that says why."""
    config = write(tmp_path / "rules.lua", text)
    result = await triodist_cli(*(args or ("check-config", "--config", str(config))))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert b"OK!" not in result.stdout
    errors = [
        line for line in result.stderr.decode().splitlines() if "Error in configuration" in line
    ]
    assert len(errors) == 1, result.stderr
    return errors[0]


async def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    line = await _config_error(
        tmp_path,
        'newServer("192.0.2.1")\naddAction(AllRule() DropAction())\n',
    )
    assert f"{tmp_path / 'rules.lua'}:2:" in line
    assert "DropAction" in line  # Lua says what it found


async def test_serve_exits_1_on_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "rules.lua"
    line = await _config_error(
        tmp_path,
        'newServer("192.0.2.1")\naddAction(AllRule() DropAction())\n',
        "serve",
        "--config",
        str(config),
        "-l",
        f"127.0.0.1:{free_port()}",
    )
    assert f"{config}:2:" in line


async def test_misspelled_function_is_named(tmp_path: Path) -> None:
    line = await _config_error(
        tmp_path,
        '-- a comment\nnewServerr{address="192.0.2.1"}\n',
    )
    assert f"{tmp_path / 'rules.lua'}:2:" in line
    assert "newServerr" in line


async def test_python_side_errors_name_file_and_line(tmp_path: Path) -> None:
    line = await _config_error(tmp_path, 'setLocal("127.0.0.1:5300")\n\nnewServer{name="x"}\n')
    assert f"{tmp_path / 'rules.lua'}:3:" in line
    assert "newServer" in line and "address" in line

    line = await _config_error(
        tmp_path,
        'newServer("192.0.2.1")\naddAction(AllRule(), DropResponseAction())\n',
    )
    assert f"{tmp_path / 'rules.lua'}:2:" in line
    assert "addAction" in line and "DropResponseAction" in line

    # An address that does not parse is logged and skipped, as dnsdist does: see
    # tests/test_config_goes_on.py.


async def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    write(conf_d / "10-servers.conf", 'newServer("192.0.2.1")\n')
    write(conf_d / "20-rules.conf", "addAction(AllRule(), DropAction())\nnoSuchFunction()\n")
    write(conf_d / "ignored.txt", "this is not Lua\n")
    line = await _config_error(
        tmp_path, f'setLocal("127.0.0.1:5300")\nincludeDirectory("{conf_d}")\n'
    )
    assert f"{conf_d / '20-rules.conf'}:2:" in line
    assert "noSuchFunction" in line

    (conf_d / "20-rules.conf").unlink()
    config = tmp_path / "rules.lua"
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr


async def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.lua"
    result = await triodist_cli("check-config", "--config", str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr.decode()


async def test_version() -> None:
    result = await triodist_cli("-V")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert triodist.__version__ in out
    assert engine_version() in out
    assert "LuaJIT" in out or "Lua 5.4" in out


async def test_serve_takes_dash_V_as_dnsdist_does() -> None:
    for args in (["serve", "-V"], ["serve", "--version"], ["-V", "serve"]):
        result = await triodist_cli(*args)
        assert result.returncode == 0, result.stderr
        version = f"triodist {triodist.__version__} (Lua: {engine_version()})\n"
        assert result.stdout.decode() == version


# --- serve -----------------------------------------------------------------------------------


class Served:
    """A ``triodist serve`` subprocess, its output going to files."""

    def __init__(self, process: trio.Process, port: int, out: Path, err: Path) -> None:
        self.process = process
        self.address = ("127.0.0.1", port)
        self.out = out
        self.err = err

    async def wait_answering(self) -> dns.message.Message:
        """Poll until the server answers (it needs a moment to start)."""
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"triodist exited: {self.err.read_text()}")
            try:
                reply = await udp_query(self.address, query("www.example.org."), timeout=0.1)
            except ConnectionRefusedError:  # not listening yet: ICMP port unreachable
                await trio.sleep(0.05)
                continue
            # Only once this server says it listens: until then an answer on the port can
            # only be from something else that briefly had it (a port is free only when asked).
            if reply is not None and "Listening on" in self.err.read_text():
                return reply
            await trio.sleep(0.05)


async def start_serve(tmp_path: Path, *args: str, open_files: int | None = None) -> Served:
    """``triodist serve`` in a subprocess; ``open_files``: its ``ulimit -n`` (soft and hard)."""
    port = free_port()
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "triodist", "serve", "-l", f"127.0.0.1:{port}", *args],
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
            env=subprocess_env(),
            preexec_fn=limit_open_files,
        )
    return Served(process, port, out, err)


async def test_serve_with_listen_address_and_upstream(tmp_path: Path, make_auth: MakeAuth) -> None:
    auth = await make_auth()
    served = await start_serve(tmp_path, hostport(auth))
    try:
        reply = await served.wait_answering()
        assert records(reply) == WWW
        assert reply.flags & dns.flags.AA
        # TCP on the same address.
        stream = await trio.open_tcp_stream(*served.address)
        async with stream:
            wire = query("mail.example.org.").to_wire()
            await stream.send_all(len(wire).to_bytes(2, "big") + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                chunk = await stream.receive_some(65536)
                assert chunk
                data += chunk
        assert records(dns.message.from_wire(data[2:])) == {"mail.example.org. A 192.0.2.25"}
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert await served.process.wait() == 0
    log = served.err.read_text()
    assert f"Listening on 127.0.0.1:{served.address[1]}" in log
    assert {r.transport for r in auth.received} == {"udp", "tcp"}


async def test_serve_verbose_writes_a_line_per_query(tmp_path: Path, make_auth: MakeAuth) -> None:
    """``serve -v``: every query has its line (dnsdist -v's "Got query for"), answered by a
    rule or not; one a backend answers has dnsdist's "Got answer from" line too."""
    auth = await make_auth()
    config = write(
        tmp_path / "rules.lua",
        'addAction("blocked.example.org.", RCodeAction(DNSRCode.REFUSED))\n',
    )
    served = await start_serve(tmp_path, "-v", "-C", str(config), hostport(auth))
    try:
        await served.wait_answering()
        reply = await udp_query(served.address, query("blocked.example.org."))
        assert reply is not None and reply.rcode() == dns.rcode.REFUSED
        reply = await udp_query(served.address, query("mail.example.org."))
        assert records(reply) == {"mail.example.org. A 192.0.2.25"}
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert await served.process.wait() == 0
    lines = served.err.read_text().splitlines()
    got = [line for line in lines if line.startswith("Got query for ")]
    assert got[-2].startswith("Got query for blocked.example.org|A from 127.0.0.1:")
    assert got[-1].startswith("Got query for mail.example.org|A from 127.0.0.1:")
    answers = [line for line in lines if line.startswith("Got answer from ")]
    assert answers[-1].startswith(f"Got answer from {hostport(auth)}, relayed to 127.0.0.1:")
    assert answers[-1].endswith(" usec")
    # A query line for each query the server counted, none more.
    queries = int(lines[-1].split("queries ", 1)[1].split(",")[0])
    assert len(got) == queries


async def test_sigterm_lets_the_query_in_flight_finish(tmp_path: Path, make_auth: MakeAuth) -> None:
    auth = await make_auth()
    config = write(tmp_path / "rules.lua", f'newServer("{hostport(auth)}")\n')
    served = await start_serve(tmp_path, "--config", str(config))
    try:
        await served.wait_answering()
        auth.mode = "slow"
        auth.delay = 0.3
        auth.reset_stats()
        reply: list[dns.message.Message | None] = []

        async def ask() -> None:
            reply.append(await udp_query(served.address, query("mail.example.org."), timeout=3))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            # The AuthServer has no event to wait on: poll until this query is there (by its
            # name: a late start-up probe for www may still arrive).
            while not auth.queries_for("mail.example.org."):  # noqa: ASYNC110
                await trio.sleep(0.01)
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                returncode = await served.process.wait()
    finally:
        if served.process.returncode is None:
            served.process.kill()
            await served.process.wait()
    assert returncode == 0, served.err.read_text()
    assert records(reply[0]) == {"mail.example.org. A 192.0.2.25"}
    assert reply[0] is not None and reply[0].rcode() == dns.rcode.NOERROR
    assert "Stopped" in served.err.read_text()


# --- demo ------------------------------------------------------------------------------------


async def triodist_demo(cwd: Path, **env: str) -> tuple[str, dict[str, str]]:
    """Run ``python -m triodist demo`` in ``cwd``; its output and its table, row by query."""
    result = await trio.run_process(
        [sys.executable, "-m", "triodist", "demo"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=cwd,
        env=subprocess_env() | env,
    )
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr, result.stderr
    out = result.stdout.decode(env.get("PYTHONIOENCODING", "utf-8"))
    rows = {}
    for line in out.splitlines():
        # "<name> <type>  UDP  <rule(s)>  <answer>  <latency>"
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0].endswith(".") and parts[2][:3] in ("UDP", "TCP"):
            rows[f"{parts[0]} {parts[1]}"] = line
    return out, rows


def latency_ms(row: str) -> float:
    value, unit = row.split()[-2:]
    assert unit == "ms", row
    return float(value)


async def test_demo_runs_from_anywhere(tmp_path: Path) -> None:
    temp = trio.Path(tmp_path / "tmp")  # where the demo keeps its configuration and sockets
    await temp.mkdir()
    with trio.fail_after(10):
        # Not from the project's directory.
        out, rows = await triodist_demo(tmp_path, TMPDIR=str(temp))
    assert "newServer{" in out and "addUnixListeningEndpoint" in out  # the configuration
    assert "www.example.org. A" in rows and "A 192.0.2.10" in rows["www.example.org. A"]
    assert "block list" in rows["blocked.example.org. A"]
    assert "(no answer: dropped)" in rows["ads.example.org. A"]
    assert "spoof" in rows["a.spoofed.example.org. A"]
    assert "queries," in out and "answered by the backend" in out
    assert list(await temp.iterdir()) == []  # nothing left behind


async def test_demo_shows_the_async_round_trip(tmp_path: Path) -> None:
    with trio.fail_after(10):
        out, rows = await triodist_demo(tmp_path)
    allowed = rows["www.async.example.org. A"]
    assert "async filter: suspended → resumed" in allowed
    assert "NOERROR: A 192.0.2.80" in allowed  # the backend's answer, once resumed
    assert latency_ms(allowed) < 300  # the filter's answer, not the timeout

    refused = rows["ads.async.example.org. A"]
    assert "async filter: suspended → refused" in refused
    assert "REFUSED" in refused
    assert latency_ms(refused) < 300

    dropped = rows["tracker.async.example.org. A"]
    assert "async filter: suspended → dropped" in dropped
    assert "(no answer: dropped)" in dropped

    # The filter leaves this one unanswered: after its 300 ms the query goes on (fail-open).
    timed_out = rows["slow.async.example.org. A"]
    assert "async filter: suspended → timed out (fail-open)" in timed_out
    assert "NOERROR: A 192.0.2.80" in timed_out
    assert latency_ms(timed_out) >= 300

    # A query the rule does not suspend says nothing of it.
    assert "suspended" not in rows["www.example.org. A"]
    assert (
        "Async: 4 suspended, 2 resumed, 1 dropped, 1 timed out, 0 collisions, 0 over the bound; "
        "the filter received 4 and answered 3." in out
    )
    assert "2 dropped." in out  # the DropAction and the filter's drop


async def test_demo_output_without_unicode(tmp_path: Path) -> None:
    _, rows = await triodist_demo(tmp_path, PYTHONIOENCODING="latin-1")
    assert "async filter: suspended -> refused" in rows["ads.async.example.org. A"]


def test_the_command_line_imports_the_replay_only_to_replay() -> None:
    # Every command (serve, console -e, check-config) starts a Python process: the capture
    # parser and Trio's mock clock (which imports pytest) would add ~0.3 s to each.
    code = "import sys, triodist.cli; print(sorted({'dpkt', 'trio.testing'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, check=True
    )
    assert result.stdout == b"[]\n", result.stderr
