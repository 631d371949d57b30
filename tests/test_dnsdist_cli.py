"""dnsdist's command line given to ``triodist`` (no subcommand), in a subprocess.

A unit file or a test harness written for dnsdist starts triodist by changing the
binary's name only: ``--supervised -C conf -l ADDR --acl MASK``, ``--check-config`` whose
whole output (standard output and error together) is dnsdist's one line, ``-c``/``-k``/
``-e`` against a running server, ``-V``, backend addresses as arguments, and dnsdist's
handling of an option it does not know.  These tests use real time and loopback.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from conftest import free_port, hostport, query, records, udp_query
from helpers import ROOT, subprocess_env
from test_console import wait_listening

import triodist
from triodist.config.runtime import engine_version
from triodist.testing.backend import AuthServer

WWW = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
KEY = base64.b64encode(bytes(range(100, 132))).decode()


async def run(*args: str, merged: bool = False) -> subprocess.CompletedProcess[bytes]:
    """``python -m triodist ARGS`` to completion; ``merged``: standard error into standard
    output, as dnsdist's regression harness reads ``--check-config``."""
    where_errors: dict[str, object] = (
        {"stderr": subprocess.STDOUT} if merged else {"capture_stderr": True}
    )
    return await trio.run_process(
        [sys.executable, "-m", "triodist", *args],
        capture_stdout=True,
        **where_errors,
        check=False,
        cwd=ROOT,
        env=subprocess_env(),
    )


@asynccontextmanager
async def running(log: Path, *args: str) -> AsyncIterator[trio.Process]:
    """``triodist ARGS`` as a server, its output in ``log``; SIGTERM at the end, and it
    must exit 0 as a stopped server does."""
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "triodist", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=subprocess_env(),
        )
    try:
        yield process
    finally:
        process.terminate()
        with trio.fail_after(10):
            status = await process.wait()
    assert status == 0, await trio.Path(log).read_text()


def conf(tmp_path: Path, text: str, name: str = "dnsdist_Test.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- --check-config ----------------------------------------------------------------------------


async def test_check_config_output_is_dnsdists_line_and_nothing_else(
    tmp_path: Path, auth: AuthServer
) -> None:
    # A configuration triodist runs whole, that logs informational lines when it loads.
    config = conf(
        tmp_path,
        f'newServer{{address="{hostport(auth)}"}}\n'
        'addAction("blocked.example.org.", RCodeAction(DNSRCode.REFUSED))\n'
        'setSecurityPollSuffix("")',
    )
    line = ["--supervised", "-C", config, "-l", f"127.0.0.1:{free_port()}"]
    for extra in ([], ["--acl", "127.0.0.1/32"], ["--disable-syslog", "--check-config"]):
        result = await run(*line, *extra, "--check-config", merged=True)
        assert result.returncode == 0
        assert result.stdout == f"Configuration '{config}' OK!\n".encode()
    # -v shows the configuration's own lines too, as dnsdist -v does.
    verbose = await run(*line, "-v", "--check-config", merged=True)
    assert verbose.returncode == 0
    assert b"Added downstream server" in verbose.stdout
    assert verbose.stdout.endswith(f"Configuration '{config}' OK!\n".encode())


async def test_check_config_still_reports_what_is_ignored_and_errors(tmp_path: Path) -> None:
    partial = conf(tmp_path, 'addAction(AllRule(), TeeAction("192.0.2.1"))\n', "partial.conf")
    result = await run("--supervised", "-C", partial, "--check-config")
    assert result.returncode == 0
    assert b"TeeAction: not supported by triodist yet" in result.stderr
    assert result.stdout.decode().startswith(f"Configuration '{partial}' loads, but triodist")

    broken = conf(tmp_path, "newServer('192.0.2.1')\nnewServerr()\n", "broken.conf")
    failed = await run("--supervised", "-C", broken, "--check-config")
    assert failed.returncode == 1
    assert f"{broken}:2: attempt to call global 'newServerr'".encode() in failed.stderr
    assert failed.stdout == b""


async def test_check_config_of_an_unreadable_file_goes_on_as_dnsdist(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.conf")
    result = await run("-C", missing, "--check-config", merged=True)
    assert result.returncode == 0
    assert (
        result.stdout
        == (
            f"Unable to read configuration from '{missing}'\nConfiguration '{missing}' OK!\n"
        ).encode()
    )


# --- serving ---------------------------------------------------------------------------------


async def test_the_harness_command_line_serves_with_its_acl(
    tmp_path: Path, auth: AuthServer
) -> None:
    config = conf(tmp_path, f'newServer{{address="{hostport(auth)}"}}\n')
    port = free_port()
    line = ["--supervised", "-C", config, "-l", f"127.0.0.1:{port}"]
    log = tmp_path / "allowed.log"
    # Comma-separated masks, and --acl repeated: 127.0.0.1 is in.
    async with running(
        log, *line, "--acl", "192.0.2.1/32,127.0.0.1/32", "--acl", "10.0.0.0/8"
    ) as p:
        await wait_listening(p, ("127.0.0.1", port), log)
        reply = await udp_query(("127.0.0.1", port), query("www.example.org."))
        assert records(reply) == WWW
    assert f"Listening on 127.0.0.1:{port}" in log.read_text()

    # --acl replaces dnsdist's default ACL (which has 127.0.0.0/8): a query from
    # 127.0.0.1 is dropped.
    port = free_port()
    line = ["--supervised", "-C", config, "-l", f"127.0.0.1:{port}"]
    log = tmp_path / "refused.log"
    async with running(log, *line, "--acl", "192.0.2.0/24") as p:
        await wait_listening(p, ("127.0.0.1", port), log)
        assert await udp_query(("127.0.0.1", port), query("www.example.org."), timeout=0.5) is None


async def test_backends_as_arguments_and_no_supervised(tmp_path: Path, auth: AuthServer) -> None:
    empty = conf(tmp_path, "-- nothing here: the command line says it all\n")
    port = free_port()
    log = tmp_path / "serve.log"
    # The options after the address, as getopt allows; no --supervised.
    async with running(log, "-C", empty, hostport(auth), "-l", f"127.0.0.1:{port}") as p:
        await wait_listening(p, ("127.0.0.1", port), log)
        reply = await udp_query(("127.0.0.1", port), query("www.example.org."))
        assert records(reply) == WWW
    text = log.read_text()
    assert f"Added downstream server {hostport(auth)}" in text
    assert "no console on its terminal" in text


async def test_console_client_against_a_running_server(tmp_path: Path, auth: AuthServer) -> None:
    console_port, port = free_port(), free_port()
    # The key comes from the server's own -k: the configuration has no setKey.
    config = conf(
        tmp_path,
        f'controlSocket("127.0.0.1:{console_port}")\nnewServer{{address="{hostport(auth)}"}}\n',
    )
    log = tmp_path / "serve.log"
    line = ["--supervised", "-C", config, "-l", f"127.0.0.1:{port}", "-k", KEY]
    async with running(log, *line) as p:
        await wait_listening(p, ("127.0.0.1", console_port), log)
        # dnsdist -c with the configuration: its controlSocket, and the key given.
        result = await run("-C", config, "-k", KEY, "-c", "-e", "1+2")
        assert (result.returncode, result.stdout) == (0, b"3\n"), result.stderr
        # The address as an argument, -e alone (it implies -c).
        where = f"127.0.0.1:{console_port}"
        result = await run("-k", KEY, "-C", "/nonexistent.conf", "-e", "showServers()", where)
        assert result.returncode == 0, result.stderr
        assert hostport(auth).encode() in result.stdout
        # A Lua error: the output says it, and the status is 0, as dnsdist -e's.
        failed = await run("-C", config, "-k", KEY, "-c", "-e", "nosuch()")
        assert failed.returncode == 0
        assert failed.stdout.startswith(b'Error: [string "return nosuch()"]:1:')
        # A wrong key: the console cannot be used.
        other = base64.b64encode(bytes(32)).decode()
        refused = await run("-C", config, "-k", other, "-c", "-e", "1+2")
        assert refused.returncode == 1
        bad = await run("-C", config, "-k", "not base64!", "-c", "-e", "1+2")
        assert bad.returncode == 1
        assert b"Unable to decode key 'not base64!'" in bad.stderr


# --- version, help, errors -------------------------------------------------------------------


async def test_version_where_it_stands() -> None:
    version = f"triodist {triodist.__version__} (Lua: {engine_version()})\n".encode()
    # -V acts where it stands: the -l without its argument after it is never read.
    for args in (["-V"], ["--version"], ["--supervised", "-V"], ["--vers"], ["-vV", "-l"]):
        result = await run(*args)
        assert (result.returncode, result.stdout) == (0, version), args
    helped = await run("--supervised", "--help")
    assert helped.returncode == 0
    assert b"--check-config" in helped.stdout and b"--acl" in helped.stdout


async def test_an_unknown_option_stops_as_dnsdist_does(tmp_path: Path) -> None:
    config = conf(tmp_path, "")
    cases = {
        "--no-such-option": b"triodist: unrecognized option '--no-such-option'\n",
        "-x": b"triodist: invalid option -- 'x'\n",
        "--c": b"triodist: option '--c' is ambiguous; possibilities: "
        b"'--check-config' '--client' '--config'\n",
        "--supervised=yes": b"triodist: option '--supervised' doesn't allow an argument\n",
    }
    for option, message in cases.items():
        result = await run("--supervised", "-C", config, option, "--check-config")
        assert result.returncode == 1, option
        assert result.stderr == message
        assert b"--check-config" in result.stdout  # the usage, on standard output
    missing = await run("--supervised", "-l")
    assert (missing.returncode, missing.stderr) == (
        1,
        b"triodist: option requires an argument -- 'l'\n",
    )
    bad_mask = await run("--supervised", "-C", config, "--acl", "bogus", "--check-config")
    assert (bad_mask.returncode, bad_mask.stderr) == (
        1,
        b"Unable to convert 'bogus' to a netmask\n",
    )


async def test_subcommands_are_still_subcommands(tmp_path: Path) -> None:
    config = conf(tmp_path, 'newServer("192.0.2.1")\n')
    result = await run("check-config", "-C", config, merged=True)
    assert (result.returncode, result.stdout) == (0, f"Configuration '{config}' OK!\n".encode())
    served = await run("serve", "--acl", "127.0.0.1/32")  # serve keeps its own options
    assert served.returncode == 2
    assert b"unrecognized arguments: --acl" in served.stderr
