"""The tutorial's quick start (docs/tutorial/first-rules.md), run as written: its rules.lua
and its commands, through the real command line (``python -m triodist`` for ``triodist``),
with its queries.

Only the port numbers are changed (5300 to 5303 become free ones), so that the test
runs beside others; everything else is taken from the tutorial itself, so that the test
fails when the tutorial stops working.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import trio
from conftest import free_port, query, records, tcp_query, udp_query
from helpers import subprocess_env
from test_console import wait_listening

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "docs" / "tutorial" / "first-rules.md"


def quick_start() -> tuple[str, list[str], list[str]]:
    """The quick start's rules.lua, its commands and its dig lines."""
    text = README.read_text()
    section = text.split("## Quick start with a real rules.lua", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    lua = next(body for kind, body in blocks if kind == "lua")
    shell = [body for kind, body in blocks if kind == "sh"]
    commands = [line.split("#", 1)[0].strip() for line in shell[0].splitlines()]
    digs = [line.split("#", 1)[0].strip() for line in shell[1].splitlines()]
    return lua, [c for c in commands if c], [d for d in digs if d]


async def test_the_quick_start_works_as_written(tmp_path: Path) -> None:
    lua, commands, digs = quick_start()
    ports = {str(port): str(free_port()) for port in range(5300, 5304)}

    def local(text: str) -> str:
        return re.sub(r"\b530[0-3]\b", lambda m: ports[m.group(0)], text)

    (tmp_path / "rules.lua").write_text(local(lua))
    check, backends, serve = (shlex.split(local(command)) for command in commands)
    assert check[:2] == ["triodist", "check-config"]
    assert backends[:3] == ["triodist", "demo", "--backend"] and backends[-1] == "&"
    assert serve[:2] == ["triodist", "serve"]

    # The comment after check-config is what it prints.
    result = await trio.run_process(
        [sys.executable, "-m", "triodist", *check[1:]],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    readme_check = next(
        line for line in README.read_text().splitlines() if line.startswith("triodist check")
    )
    expected = readme_check.split("#", 1)[1].strip()
    assert result.stdout.decode().strip() == expected

    address = ("127.0.0.1", int(ports["5300"]))
    async with trio.open_nursery() as nursery:
        backend_log, serve_log = tmp_path / "backends.log", tmp_path / "serve.log"
        demo = await start_in(nursery, tmp_path, backends[1:-1], backend_log)
        for port in ("5301", "5302", "5303"):
            await wait_listening(demo, ("127.0.0.1", int(ports[port])), backend_log)
        server = await start_in(nursery, tmp_path, serve[1:], serve_log)
        await wait_listening(server, address, serve_log)
        await wait_backends_up(address)

        # The dig lines ask the server the tutorial starts, these questions.
        asked = [shlex.split(dig) for dig in digs]
        assert all(dig[:4] == ["dig", "@127.0.0.1", "-p", "5300"] for dig in asked)
        assert [dig[4:] for dig in asked] == [
            ["www.example.org"],
            ["ads.example"],
            ["example.org", "ANY"],
        ]
        www = await udp_query(address, query("www.example.org."))
        assert www is not None and www.rcode() == dns.rcode.NOERROR
        assert records(www) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
        ads = await udp_query(address, query("ads.example."))
        assert ads is not None and ads.rcode() == dns.rcode.REFUSED
        truncated = await udp_query(address, query("example.org.", "ANY"))
        assert truncated is not None and truncated.flags & dns.flags.TC
        over_tcp = await tcp_query(address, query("example.org.", "ANY"))
        assert over_tcp is not None and not over_tcp.flags & dns.flags.TC
        assert over_tcp.rcode() == dns.rcode.NOERROR
        server.send_signal(signal.SIGTERM)
        demo.send_signal(signal.SIGTERM)
    assert server.returncode == 0 and demo.returncode == 0
    assert "Serving example.org. on 127.0.0.1:" in backend_log.read_text()


async def start_in(nursery: trio.Nursery, cwd: Path, args: list[str], log: Path) -> trio.Process:
    """``triodist ARGS`` run from ``cwd``, owned by ``nursery``, its output in ``log``."""
    with log.open("wb") as out:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-m", "triodist", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=cwd,
                env=subprocess_env(),
            )
        )
    return process


async def wait_backends_up(address: tuple[str, int]) -> None:
    """Until the server forwards: its first health checks may still be under way."""
    with trio.fail_after(10):
        while True:
            reply = await udp_query(address, query("www.example.org."), timeout=0.5)
            if reply is not None and reply.rcode() == dns.rcode.NOERROR:
                return
            await trio.sleep(0.05)
