"""``triodist serve --workers N``: worker processes sharing the listening addresses.

The real command line in a subprocess (as ``test_cli.py``), real sockets on loopback,
real time.  The kernel spreads queries over the workers by a hash of their addresses and
ports, so the tests send each query from a socket of its own (a new source port) and
expect every worker to have answered some.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import trio
from conftest import free_port, query, records, tcp_query, udp_query
from helpers import subprocess_env
from test_cli import ROOT, triodist_cli, write

from triodist.asyncproc import unixpaths as network
from triodist.asyncproc.unixpaths import unix_path
from triodist.workers import Supervisor

SPOOF = 'addAction(AllRule(), SpoofAction("192.0.2.7"))\n'
SPOOFED = {"www.example.org. A 192.0.2.7"}
TRIODIST = (sys.executable, "-m", "triodist")
QUERIES = 32  # from as many source ports: all on one worker of 2 has odds of 2**-31


class Workers:
    """A ``triodist serve --workers N`` parent process, its output going to files."""

    def __init__(self, process: trio.Process, port: int, err: Path) -> None:
        self.process = process
        self.address = ("127.0.0.1", port)
        self.err = err

    def log(self) -> str:
        return self.err.read_text()

    async def wait_listening(self) -> None:
        while "workers listening" not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"triodist exited: {self.log()}")
            await trio.sleep(0.05)

    def pids(self) -> dict[int, int]:
        """Worker index → pid, from the parent's log."""
        found = re.findall(r"Started worker (\d+) \(pid (\d+)\)", self.log())
        return {int(index): int(pid) for index, pid in found}

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            return await self.process.wait()


async def start_workers(tmp_path: Path, count: int, *args: str, port: int = 0) -> Workers:
    port = port or free_port()
    err = tmp_path / "stderr.txt"
    with (tmp_path / "stdout.txt").open("wb") as stdout, err.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*TRIODIST, "serve", "-l", f"127.0.0.1:{port}", "--workers", str(count), *args],
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
            env=subprocess_env(),
        )
    return Workers(process, port, err)


def worker_command(config: Path, port: int) -> Callable[[int, int], list[str]]:
    """A worker's command line, as the parent of ``--workers`` builds it."""

    def command(index: int, fd: int) -> list[str]:
        listen = ["--config", str(config), "-l", f"127.0.0.1:{port}"]
        return [*TRIODIST, "serve", *listen, "--worker-index", str(index), "--control-fd", str(fd)]

    return command


def queries_per_worker(log: str) -> dict[int, int]:
    """The parent's last words: "Queries per worker: 0: 17, 1: 15"."""
    line = re.search(r"Queries per worker: (.*)", log)
    assert line is not None, log
    return {int(i): int(n) for i, n in re.findall(r"(\d+): (\d+)", line.group(1))}


async def test_workers_answer_udp_and_tcp_and_share_the_load(tmp_path: Path) -> None:
    config = write(tmp_path / "rules.lua", SPOOF)
    workers = await start_workers(tmp_path, 2, "--config", str(config))
    try:
        await workers.wait_listening()
        assert len(workers.pids()) == 2
        for _ in range(QUERIES):
            assert records(await udp_query(workers.address, query("www.example.org."))) == SPOOFED
        for _ in range(4):
            assert records(await tcp_query(workers.address, query("www.example.org."))) == SPOOFED
        returncode = await workers.stop()
    finally:
        if workers.process.returncode is None:
            workers.process.kill()
    log = workers.log()
    assert returncode == 0, log
    assert log.count("Stopped") == 2  # each worker, after its grace period
    per_worker = queries_per_worker(log)
    assert sum(per_worker.values()) == QUERIES + 4
    assert all(per_worker[i] > 0 for i in (0, 1)), per_worker
    assert f"queries {QUERIES + 4}" in log  # the counters summed by the parent


async def test_worker_paths_and_endpoints_are_per_worker(tmp_path: Path) -> None:
    """``{worker}`` in a listening path gives each worker its socket; in an endpoint's
    path, each worker talks to its own peer."""
    seen = {i: tmp_path / f"seen-{i}.sock" for i in (0, 1)}

    def sockets() -> set[str]:
        return {p.name for p in tmp_path.iterdir() if p.name.startswith("listen-")}

    config = write(
        tmp_path / "rules.lua",
        f"""
        local listener = newNetworkListener()
        listener:addUnixListeningEndpoint("{tmp_path}/listen-{{worker}}.sock", 1,
            function(id, message, from) end)
        listener:start()
        local seen = newNetworkEndpoint("{tmp_path}/seen-{{worker}}.sock")
        addAction(AllRule(), LuaAction(function(dq)
            seen:send(dq.qname:toString())
            return DNSAction.None, ""
        end))
        {SPOOF}
        """,
    )
    peers = {i: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for i in seen}
    received = dict.fromkeys(seen, 0)

    def drain() -> None:
        # After each query: a unix datagram queue holds few datagrams, and an endpoint's
        # send() returns false (the datagram is lost) when it is full.
        for i, peer in peers.items():
            while True:
                try:
                    assert peer.recv(512) == b"www.example.org."
                except BlockingIOError:
                    break
                received[i] += 1

    try:
        for i, peer in peers.items():
            peer.bind(str(seen[i]))
            peer.setblocking(False)
        workers = await start_workers(tmp_path, 2, "--config", str(config))
        try:
            await workers.wait_listening()
            assert sockets() == {"listen-0.sock", "listen-1.sock"}
            for _ in range(QUERIES):
                reply = await udp_query(workers.address, query("www.example.org."))
                assert records(reply) == SPOOFED
                drain()
            assert await workers.stop() == 0
        finally:
            if workers.process.returncode is None:
                workers.process.kill()
        assert received == queries_per_worker(workers.log())
        assert received[0] > 0 and received[1] > 0
    finally:
        for peer in peers.values():
            peer.close()
    assert sockets() == set()  # each worker removed its own


async def test_a_config_error_is_reported_once_and_nothing_starts(tmp_path: Path) -> None:
    config = write(
        tmp_path / "rules.lua", 'newServer("192.0.2.1")\naddAction(AllRule() DropAction())\n'
    )
    result = await triodist_cli(
        "serve", "--workers", "2", "--config", str(config), "-l", f"127.0.0.1:{free_port()}"
    )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if "Error in configuration" in line]
    assert len(errors) == 1, stderr
    assert f"{config}:2:" in errors[0]
    assert "Started worker" not in stderr


async def test_port_0_cannot_be_shared(tmp_path: Path) -> None:
    result = await triodist_cli("serve", "--workers", "2", "-l", "127.0.0.1:0", "192.0.2.1")
    assert result.returncode == 2
    assert "127.0.0.1:0" in result.stderr.decode() and "port" in result.stderr.decode()
    assert "Started worker" not in result.stderr.decode()
    assert (await triodist_cli("serve", "--workers", "0", "192.0.2.1")).returncode == 2


async def test_workers_that_cannot_bind_stop_the_parent(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))  # no SO_REUSEPORT: nobody else may bind it
        workers = await start_workers(tmp_path, 2, "192.0.2.1", port=port)
        with trio.fail_after(8):
            returncode = await workers.process.wait()
    log = workers.log()
    assert returncode == 1, log
    assert "failed to start" in log and "Unable to start" in log
    assert f"Unable to bind to UDP socket on 127.0.0.1:{port}: Address already in use" in log
    assert "All 2 workers listening" not in log


async def test_a_worker_that_dies_stops_them_all(tmp_path: Path) -> None:
    workers = await start_workers(tmp_path, 2, "192.0.2.1")
    try:
        await workers.wait_listening()
        pid = workers.pids()[1]
        # Not SIGTERM: a worker stopping by itself is "unexpected" just the same, but a
        # kill is what a crash looks like.
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(8):
            returncode = await workers.process.wait()
    finally:
        if workers.process.returncode is None:
            workers.process.kill()
    log = workers.log()
    assert returncode == 1, log
    assert f"Worker 1 (pid {pid}) died (killed by SIGKILL): stopping all workers" in log
    assert "[worker 0] Stopped" in log  # the other one was stopped, gracefully


async def test_counters_can_be_asked_while_running(tmp_path: Path) -> None:
    """What a console will sum: each worker's counters, over its control socket."""
    port = free_port()
    command = worker_command(write(tmp_path / "rules.lua", SPOOF), port)
    supervisor = Supervisor(command, 2)
    code: list[int] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            code.append(await supervisor.run())

        nursery.start_soon(run)
        await supervisor.all_ready.wait()
        for _ in range(QUERIES):
            assert await udp_query(("127.0.0.1", port), query("www.example.org.")) is not None
        counters = await supervisor.counters()
        assert len(counters) == 2
        assert sum(c["queries"] for c in counters) == QUERIES
        total, answered = await supervisor.summed()
        assert answered == 2
        assert total["queries"] == QUERIES and total["answered"] == QUERIES
        supervisor.request_stop()
    assert code == [0]


async def test_a_late_reply_is_not_taken_for_the_next(tmp_path: Path) -> None:
    """A command a worker answers after the parent gave up on it: its reply is not the
    next command's. And an output bigger than a control message arrives cut, not lost."""
    port = free_port()
    command = worker_command(write(tmp_path / "rules.lua", SPOOF), port)
    supervisor = Supervisor(command, 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await supervisor.all_ready.wait()
        slow = "local t = os.clock() + 0.5 while os.clock() < t do end return 'slow'"
        assert await supervisor.evaluate(slow, patience=0.1) == []
        assert await supervisor.evaluate("return 'next'") == [(0, "next\n")]
        # Characters that JSON writes as six bytes each, far over a control message.
        [(_, big)] = await supervisor.evaluate("return string.rep('\\1', 200000)")
        assert big.endswith("[output cut]\n") and big.startswith("\x01" * 1000)
        supervisor.request_stop()


def test_worker_placeholder_in_paths() -> None:
    assert unix_path("/run/triodist/filter-{worker}.sock", "f") == b"/run/triodist/filter-0.sock"
    assert unix_path("\0triodist-{worker}", "f") == b"\0triodist-0"
    try:
        network.set_worker_index(3)
        assert unix_path(b"/tmp/{worker}/x-{worker}", "f") == b"/tmp/3/x-3"
    finally:
        network.set_worker_index(0)


async def test_sighup_to_the_parent_reloads_every_worker(tmp_path: Path) -> None:
    config = write(tmp_path / "rules.lua", SPOOF)
    workers = await start_workers(tmp_path, 2, "--config", str(config))
    try:
        await workers.wait_listening()
        write(config, 'addAction(AllRule(), SpoofAction("192.0.2.8"))\n')
        workers.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while workers.log().count("Configuration reloaded") < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
        for _ in range(QUERIES):  # whichever worker answers, it answers with the new rules
            reply = await udp_query(workers.address, query("www.example.org."))
            assert records(reply) == {"www.example.org. A 192.0.2.8"}
        returncode = await workers.stop()
    finally:
        if workers.process.returncode is None:
            workers.process.kill()
    log = workers.log()
    assert returncode == 0, log
    assert "[worker 0] Configuration reloaded" in log and "[worker 1] Configuration reloaded" in log


async def test_the_console_of_a_set_of_workers(tmp_path: Path) -> None:
    import base64

    from test_console import triodist as triodist_cli_run

    key = base64.b64encode(bytes(range(32))).decode()
    console_port = free_port()
    config = write(
        tmp_path / "rules.lua",
        SPOOF + f'controlSocket("127.0.0.1:{console_port}")\nsetKey("{key}")\n',
    )
    workers = await start_workers(tmp_path, 2, "--config", str(config))

    async def console(command: str) -> str:
        result = await triodist_cli_run("console", "-C", str(config), "-e", command)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()

    try:
        await workers.wait_listening()
        for _ in range(QUERIES):
            assert records(await udp_query(workers.address, query("www.example.org."))) == SPOOFED
        # The parent serves the console (the workers do not bind it): the counters are
        # the sum over the workers.
        stats = dict(re.findall(r"(\S+)\s+(\d+)", await console("dumpStats()")))
        assert int(stats["queries"]) == QUERIES
        # Any other command runs in every worker; the same output is shown once.
        assert await console("1+2") == "3\n"
        # reloadConfig() reloads every worker.
        write(config, SPOOF.replace("192.0.2.7", "192.0.2.9") + config.read_text()[len(SPOOF) :])
        assert await console("reloadConfig()") == "true\n"
        for _ in range(8):
            reply = await udp_query(workers.address, query("www.example.org."))
            assert records(reply) == {"www.example.org. A 192.0.2.9"}

        # The console's own settings follow the configuration too: a new key in the file,
        # then SIGHUP, and the console (the parent's) wants the new key.
        new_key = base64.b64encode(bytes(range(1, 33))).decode()
        write(config, config.read_text().replace(key, new_key))
        workers.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while workers.log().count("Configuration reloaded") < 4:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert await console("1+3") == "4\n"  # the client reads the new key from the file
        old = write(
            tmp_path / "old.lua", f'controlSocket("127.0.0.1:{console_port}")\nsetKey("{key}")\n'
        )
        refused = await triodist_cli_run("console", "-C", str(old), "-e", "1+3")
        assert refused.returncode != 0
        # setKey typed at the console changes the console's key.
        assert await console(f'setKey("{key}")') == ""
        assert (await triodist_cli_run("console", "-C", str(old), "-e", "1+5")).stdout == b"6\n"
        returncode = await workers.stop()
    finally:
        if workers.process.returncode is None:
            workers.process.kill()
    log = workers.log()
    assert returncode == 0, log
    assert log.count("Configuration reloaded") == 4
    assert "address" not in log.split("All 2 workers listening")[-1]  # no false warnings
