"""Where dnsdist logs an error in a configuration and goes on, triodist does too.

Each error is logged with the file and line of the call, what failed is skipped, and the
rest of the configuration loads and serves; ``check-config --strict`` fails on any of them.
Beyond dnsdist, a ``newServer`` host name is resolved when the configuration loads (at
start and at each reload) with a warning naming what it resolved to.

Only names that resolve without the network are used: ``localhost`` (the hosts file) and
names under ``.invalid``, which never resolve (RFC 6761).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import dns.rcode
import pytest
import trio
from conftest import free_port, query, records, udp_query
from helpers import subprocess_env
from test_cli import triodist_cli

from triodist.config.bindings.base import MAX_ERRORS_KEPT
from triodist.config.hostnames import HostResolver, NotResolved, is_host_name
from triodist.config.runtime import LuaConfig
from triodist.testing.backend import AuthServer

ROOT = Path(__file__).resolve().parent.parent

#: (what the line is, the line, what its error says): each on line 2 of its file.
CASES = [
    (
        "missing includeDirectory",
        'includeDirectory("/nonexistent/conf.d")',
        "includeDirectory: the directory '/nonexistent/conf.d' does not exist",
    ),
    ("setKey not base64", 'setKey("not base64!")', "setKey: unable to decode 'not base64!'"),
    (
        "newServer host name that does not resolve",
        'newServer("pdns-recursor.invalid:53")',
        "newServer: the host name 'pdns-recursor.invalid' does not resolve",
    ),
    (
        "newServer template placeholder",
        'newServer{address="{{ IP }}"}',
        "newServer: invalid address '{{ IP }}'",
    ),
    ("newServer empty address", 'newServer{address=""}', "newServer: invalid address ''"),
    (
        "newServer port out of range",
        'newServer("192.0.2.1:70000")',
        "newServer: invalid address '192.0.2.1:70000'",
    ),
    (
        "unknown checkType",
        'newServer{address="192.0.2.1", checkType="BOGUS"}',
        "newServer: 'checkType': unknown value 'BOGUS'",
    ),
    (
        "newServer any address",
        'newServer("0.0.0.0")',
        "newServer: 0.0.0.0 is not a valid address for a backend",
    ),
    (
        "newServer weight below 1",
        'newServer{address="192.0.2.1", weight=-1}',
        "newServer: 'weight' must be at least 1, got -1",
    ),
    (
        "balancing factor below 1",
        "setWeightedBalancingFactor(0.5)",
        "Invalid value passed to setWeightedBalancingFactor()!",
    ),
]


@pytest.mark.parametrize(("line", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_check_config_logs_the_error_with_file_and_line_and_goes_on(
    tmp_path: Path, line: str, error: str
) -> None:
    config = tmp_path / "rules.lua"
    config.write_text(f'newServer("192.0.2.2")\n{line}\naddAction(AllRule(), DropAction())\n')
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"{config}:2: {error}" in result.stderr.decode()
    assert result.stdout.decode() == f"Configuration '{config}' OK!\n"

    strict = await triodist_cli("check-config", "--strict", "--config", str(config))
    assert strict.returncode == 1, strict.stderr
    assert f"{config}:2: {error}" in strict.stderr.decode()
    assert "fails --strict: 1 error(s) skipped" in strict.stderr.decode()
    assert b"OK!" not in strict.stdout


async def test_strict_passes_a_clean_file_and_fails_on_what_is_ignored(tmp_path: Path) -> None:
    clean = tmp_path / "clean.lua"
    clean.write_text('newServer("192.0.2.2")\n')
    result = await triodist_cli("check-config", "--strict", "--config", str(clean))
    assert (result.returncode, result.stdout.decode()) == (0, f"Configuration '{clean}' OK!\n")

    # An option triodist does not support yet: without --strict it loads (exit 0).
    ignored = tmp_path / "ignored.lua"
    ignored.write_text('newServer{address="192.0.2.2", nosuchoption=1}\n')
    assert (await triodist_cli("check-config", "--config", str(ignored))).returncode == 0
    strict = await triodist_cli("check-config", "--strict", "--config", str(ignored))
    assert strict.returncode == 1
    assert "0 error(s) skipped, 1 thing(s) ignored" in strict.stderr.decode()


async def test_a_host_name_resolves_with_a_warning_and_is_skipped_when_it_does_not(
    tmp_path: Path,
) -> None:
    config = tmp_path / "rules.lua"
    config.write_text('newServer("localhost:5353")\nnewServer("x.invalid")\nshowServers()\n')
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    assert (
        f"{config}:1: newServer: host name 'localhost' resolved to 127.0.0.1" in err
        and "using 127.0.0.1:5353" in err
    )
    assert f"{config}:2: newServer: the host name 'x.invalid' does not resolve" in err
    out = result.stdout.decode()
    # showServers(): the resolved server only.
    assert "127.0.0.1:5353" in out and "invalid" not in out
    strict = await triodist_cli("check-config", "--strict", "--config", str(config))
    assert strict.returncode == 1  # the name that did not resolve; the warning is no error


async def test_serve_goes_on_and_answers_through_a_backend_named_localhost(
    tmp_path: Path, auth: AuthServer
) -> None:
    """Every case in one file served: each error logged with its line, the backend named
    by ``localhost`` answers, the rule after the errors applies, and a reload resolves the
    name again."""
    assert auth.address is not None
    backend_port = auth.address[1]
    lines = [case[1] for case in CASES]
    config = tmp_path / "rules.lua"
    config.write_text(
        "\n".join(
            [
                f'newServer{{address="localhost:{backend_port}", checkType="BOGUS"}}',
                *lines,
                'addAction("blocked.example.org.", RCodeAction(DNSRCode.REFUSED))',
            ]
        )
        + "\n"
    )
    port = free_port()
    err_path = tmp_path / "stderr.txt"
    with err_path.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "triodist",
                "serve",
                "-C",
                str(config),
                "-l",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            env=subprocess_env(),
        )
    try:
        reply = None
        with trio.fail_after(20):
            while reply is None:
                if process.poll() is not None:
                    raise AssertionError(f"triodist exited: {err_path.read_text()}")
                try:
                    reply = await udp_query(("127.0.0.1", port), query("www.example.org."), 0.1)
                except ConnectionRefusedError:  # not listening yet
                    await trio.sleep(0.05)
        assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
        blocked = await udp_query(("127.0.0.1", port), query("blocked.example.org."))
        assert blocked is not None and blocked.rcode() == dns.rcode.REFUSED
        assert any(r.transport == "udp" for r in auth.received)

        resolved = f"{config}:1: newServer: host name 'localhost' resolved to 127.0.0.1"
        assert err_path.read_text().count(resolved) == 1
        process.send_signal(signal.SIGHUP)
        with trio.fail_after(20):
            # Another process writes the log: polled, as no event reaches this one.
            while err_path.read_text().count(resolved) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
        again = await udp_query(("127.0.0.1", port), query("www.example.org."))
        assert records(again) == records(reply)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
    log = err_path.read_text()
    # The checkType error names line 1, every other error its own line.
    assert f"{config}:1: newServer: 'checkType': unknown value 'BOGUS'" in log
    for number, (_, _, error) in enumerate(CASES, start=2):
        assert f"{config}:{number}: {error}" in log, (number, log)


def test_is_host_name_takes_names_not_addresses_nor_templates() -> None:
    assert is_host_name("pdns-recursor") and is_host_name("ns1.example.") and is_host_name("IP")
    for text in ("192.0.2.300", "{{ IP }}", "", "a..b", "-a", "a b", "x" * 64):
        assert not is_host_name(text), text


def test_resolution_reads_the_hosts_file_and_never_resolves_invalid(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n::1 backend\n192.0.2.53 backend Backend.Local  # two names\n")
    resolver = HostResolver(hosts_file=hosts, budget=0)
    assert resolver.resolve("backend") == ["192.0.2.53", "::1"]  # IPv4 first
    assert resolver.resolve("BACKEND.local.") == ["192.0.2.53"]
    assert resolver.resolve("localhost") == ["127.0.0.1", "::1"]  # RFC 6761, not in the file
    with pytest.raises(NotResolved, match=r"\.invalid never resolves"):
        resolver.resolve("backend.invalid")
    # A name the file lacks needs a query; with no time left it is refused without one.
    with pytest.raises(NotResolved, match="spent"):
        resolver.resolve("elsewhere")


def test_the_errors_kept_are_bounded_and_the_rest_counted(tmp_path: Path) -> None:
    lua = LuaConfig()
    lua.run_string(
        f'for i = 1, {MAX_ERRORS_KEPT + 5} do setKey("bad!") end\nnewServer("192.0.2.1")\n',
        str(tmp_path / "rules.lua"),
    )
    assert len(lua.api.errors) == MAX_ERRORS_KEPT
    assert lua.api.errors_not_kept == 5
    assert len(lua.api.config.routing.servers) == 1  # the file went on
