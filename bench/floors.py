"""The floors under triodist's figures: what Trio, the interpreter and the kernel cost alone.

    python -m bench.floors [--only task|echo|paths] [--duration 5] [--out FILE]

- ``task``: CPU per Trio task that is spawned, parks (``wait_task_rescheduled``), is woken
  and exits, 64 at a time: the least a query that waits in its own task costs.
- ``echo``: a trivial Trio UDP echo (wait until readable, drain with non-blocking
  ``recvfrom``, flip QR, ``sendto``) in its own process, driven by dnsperf at 2,000 and at
  20,000 queries a second and as fast as it answers; its user and system CPU per query
  from /proc. The light rate
  shows a run-loop wake-up per query; the system time is the kernel's share of a datagram
  in and out, with nothing of triodist.
- ``paths``: triodist's own forwarding and cache-hit paths with the sockets replaced by
  stubs (``UDPFrontend._received`` to the answer, the backend's reply delivered by hand):
  the Python cost per query, Trio's scheduling of the waiting task included.

Each prints a line and the whole is printed as JSON (and written with ``--out``). The echo
needs dnsperf (Debian package dnsperf) and pins itself and dnsperf to two cores with
taskset when it can. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import outcome
import trio
import trio.testing

from .procs import Pinning, cpu_split
from .tools import DNSPERF, TASKSET, MissingTools, find, require

ECHO = """
import socket, sys, trio
async def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0)); s.setblocking(False)
    print(s.getsockname()[1], flush=True)
    while True:
        await trio.lowlevel.wait_readable(s)
        for _ in range(64):
            try:
                data, addr = s.recvfrom(4096)
            except BlockingIOError:
                break
            reply = bytearray(data); reply[2] |= 0x80
            s.sendto(reply, addr)
trio.run(main)
"""


def _tune_gc() -> None:
    # As ``triodist serve`` sets the collector (triodist/cli.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _task_floor(rounds: int = 3, count: int = 64_000) -> float:
    parked: list[trio.lowlevel.Task] = []

    async def one() -> None:
        parked.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)

    best = float("inf")
    async with trio.open_nursery() as nursery:
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(count // 64):
                for _ in range(64):
                    nursery.start_soon(one, name="floor")
                await trio.testing.wait_all_tasks_blocked()
                for task in parked:
                    trio.lowlevel.reschedule(task, outcome.Value(None))
                parked.clear()
                await trio.testing.wait_all_tasks_blocked()
            best = min(best, (time.process_time() - started) / count * 1e6)
    return best


def _echo_floor(duration: float) -> dict[str, Any]:
    paths = require([DNSPERF])
    pinning = Pinning.choose(find(TASKSET))
    results: dict[str, Any] = {"pinning": pinning.describe()}
    with tempfile.TemporaryDirectory(prefix="triodist-floors-") as tmp:
        names = Path(tmp) / "names.txt"
        names.write_text("".join(f"f{n}.bench.test A\n" for n in range(1000)))
        echo = subprocess.Popen(
            pinning.proxy([sys.executable, "-c", ECHO]), stdout=subprocess.PIPE, text=True
        )
        try:
            assert echo.stdout is not None
            port = int(echo.stdout.readline())
            for rate in (2_000, 20_000, 0):  # 0: as fast as it answers
                user0, sys0 = cpu_split(echo.pid)
                run = subprocess.run(
                    pinning.load(
                        [
                            paths["dnsperf"],
                            "-s",
                            "127.0.0.1",
                            "-p",
                            str(port),
                            "-d",
                            str(names),
                            "-l",
                            str(duration),
                            "-q",
                            "100",
                            *(["-Q", str(rate)] if rate else []),
                        ]
                    ),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                user1, sys1 = cpu_split(echo.pid)
                completed = next(
                    int(line.split()[2])
                    for line in run.stdout.splitlines()
                    if "Queries completed" in line
                )
                results[f"{rate}" if rate else "full"] = {
                    "answered": completed,
                    "qps": round(completed / duration),
                    "user_us_per_query": round((user1 - user0) / completed * 1e6, 1),
                    "system_us_per_query": round((sys1 - sys0) / completed * 1e6, 1),
                }
        finally:
            echo.kill()
            echo.wait()
    return results


def _pipeline(config: str) -> tuple[Any, Any, Any, Any]:
    from triodist.cli import load
    from triodist.frontends.udp import UDPFrontend
    from triodist.query.pipeline import Pipeline

    class Stub:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", 53)

        def sendto(self, data: bytes, addr: object) -> int:
            return len(data)

        def send(self, data: bytes) -> int:
            self.sent.append(bytes(data))
            return len(data)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "floors.lua"
        path.write_text(config)
        lua = load(str(path), [], [])
    cfg = lua.api.config
    # The configuration's rings, as the server hands them over: every query is recorded.
    pipeline = Pipeline(
        cfg.chains, cfg.routing, cfg.settings, cfg.async_registry, recorder=cfg.rings
    )
    frontend = UDPFrontend(Stub(), pipeline, cfg.acl, Counter(), cfg.settings)  # type: ignore[arg-type]
    server = cfg.routing.servers[0]
    backend = Stub()
    server._use_sockets([backend])  # type: ignore[list-item]
    return frontend, server, backend, cfg


def _queries() -> tuple[list[bytes], dict[bytes, bytes]]:
    queries, answers = [], {}
    for n in range(100):
        query = dns.message.make_query(f"n{n}.bench.test", "A")
        response = dns.message.make_response(query)
        response.answer.append(
            dns.rrset.from_text(f"n{n}.bench.test.", 3600, "IN", "A", "192.0.2.1")
        )
        wire = query.to_wire()
        queries.append(wire)
        answers[wire[12:]] = response.to_wire()
    return queries, answers


BASE = 'setACL({"127.0.0.0/8"})\nnewServer{address="127.0.0.1:1", healthCheckMode="up"}\n'


async def _forwarding_path(count: int = 64_000, batch: int = 64) -> float:
    frontend, server, backend, _cfg = _pipeline(BASE)
    queries, answers = _queries()
    client = ("127.0.0.1", 40000)
    best = float("inf")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server._expire_loop)
        for _ in range(3):
            started = time.process_time()
            for _ in range(count // batch):
                now = trio.current_time()
                for n in range(batch):
                    frontend._received(queries[n], client, nursery, now)
                await trio.testing.wait_all_tasks_blocked()
                for packet in backend.sent:
                    reply = bytearray(answers[packet[12:]])
                    reply[0:2] = packet[0:2]
                    server._deliver(0, bytes(reply))  # socket 0's reply
                backend.sent.clear()
                await trio.testing.wait_all_tasks_blocked()
            best = min(best, (time.process_time() - started) / count * 1e6)
        nursery.cancel_scope.cancel()
    return best


async def _cache_hit_path(count: int = 100_000) -> float:
    cached = BASE + 'getPool(""):setCache(newPacketCache(10000))\n'
    frontend, _server, _backend, _cfg = _pipeline(cached)
    cache = frontend.pipeline.routing.pools[""].cache
    queries, answers = _queries()
    for wire in queries:
        key = cache.make_key(wire, len(wire), False)
        cache.insert(key, answers[wire[12:]], trio.current_time())
    client = ("127.0.0.1", 40000)
    best = float("inf")
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            started = time.process_time()
            for start in range(0, count, 64):
                now = trio.current_time()
                for n in range(start, start + 64):
                    frontend._received(queries[n % 100], client, nursery, now)
            best = min(best, (time.process_time() - started) / count * 1e6)
    return best


#: Queries per round of the async path: a unix datagram socket queues at most
#: net.unix.max_dgram_qlen (10 by default) datagrams, and the stub component reads
#: only between rounds.
ASYNC_BATCH = 8


#: The steps of one round of the async path, timed apart.
ASYNC_PHASES = (
    "received: rules, suspend, send to the component",
    "tasks start and park on their Event",
    "component's answers: Lua callback, getAsynchronousObject, resume",
    "tasks wake, leave the cancel scope, send to the backend, park",
    "backend's replies matched",
    "tasks end, answers sent",
)


async def _async_path(count: int = 64_000) -> dict[str, float]:
    """The async scenario's path (``bench/configs/async.triodist.lua``): every query is
    suspended by a Lua rule and sent to the component over a real unix socket; the
    component's answers are handed to the listener's Lua callback by hand (what its
    receive loop does), which resumes the query; then the backend's reply as above.
    In rounds of ``ASYNC_BATCH`` queries: compare with the forwarding path in rounds of
    the same size."""
    import socket

    from triodist.asyncproc.unixpaths import set_worker_index

    set_worker_index(0)
    with tempfile.TemporaryDirectory() as tmp:
        component = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        component.bind(f"{tmp}/component")
        component.setblocking(False)
        component.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        config = (Path(__file__).parent / "configs" / "async.triodist.lua").read_text()
        config = (
            config.replace("$LISTEN", "127.0.0.1:53")
            .replace("$BACKEND", "127.0.0.1:1")
            .replace("$RESPONDER", f"{tmp}/component")
            .replace("$LISTENER", f"{tmp}/listener")
        )
        frontend, server, backend, cfg = _pipeline(config)
        # What the listener's receive loop does with each datagram.
        listener = cfg.network_listeners[0]
        endpoint = listener.endpoints[0]
        queries, answers = _queries()
        client = ("127.0.0.1", 40000)
        best = float("inf")
        best_phases: list[float] = []
        clock = time.process_time
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._expire_loop)
            # As the server does: the Lua collector is taken over before the first query.
            cfg.lua_collector.take_over()
            nursery.start_soon(cfg.lua_collector.run)
            for _ in range(3):
                phases = [0.0] * len(ASYNC_PHASES)
                started = clock()
                for _ in range(count // ASYNC_BATCH):
                    marks = [clock()]
                    now = trio.current_time()
                    for n in range(ASYNC_BATCH):
                        frontend._received(queries[n], client, nursery, now)
                    marks.append(clock())
                    await trio.testing.wait_all_tasks_blocked()
                    marks.append(clock())
                    while True:
                        try:
                            message = component.recv(4096)
                        except BlockingIOError:
                            break
                        query_id = message[0] << 8 | message[1]
                        listener._deliver(endpoint, f"{query_id} accept".encode(), b"")
                    marks.append(clock())
                    await trio.testing.wait_all_tasks_blocked()
                    marks.append(clock())
                    for packet in backend.sent:
                        reply = bytearray(answers[packet[12:]])
                        reply[0:2] = packet[0:2]
                        server._deliver(0, bytes(reply))  # socket 0's reply
                    backend.sent.clear()
                    marks.append(clock())
                    await trio.testing.wait_all_tasks_blocked()
                    marks.append(clock())
                    for i in range(len(phases)):
                        phases[i] += marks[i + 1] - marks[i]
                total = (clock() - started) / count * 1e6
                if total < best:
                    best, best_phases = total, [p / count * 1e6 for p in phases]
            nursery.cancel_scope.cancel()
        component.close()
    return {"total": round(best, 2)} | {
        name: round(us, 2) for name, us in zip(ASYNC_PHASES, best_phases, strict=True)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floors", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", choices=["task", "echo", "paths"], action="append")
    parser.add_argument(
        "--duration", type=float, default=5, help="seconds per echo run (default 5)"
    )
    parser.add_argument("--out", type=Path, help="also write the results (JSON) to this file")
    args = parser.parse_args(argv)
    wanted = set(args.only or ["task", "echo", "paths"])
    results: dict[str, Any] = {}
    _tune_gc()
    if "task" in wanted:
        results["task_us"] = round(trio.run(_task_floor), 2)
        print(f"a Trio task (spawn, park, wake, exit): {results['task_us']} µs", flush=True)
    if "paths" in wanted:
        results["forwarding_path_us"] = round(trio.run(_forwarding_path), 2)
        print(f"forwarding path, sockets stubbed: {results['forwarding_path_us']} µs", flush=True)
        results["cache_hit_path_us"] = round(trio.run(_cache_hit_path), 2)
        print(f"cache-hit path, sockets stubbed: {results['cache_hit_path_us']} µs", flush=True)
        results["forwarding_path_batch8_us"] = round(
            trio.run(_forwarding_path, 64_000, ASYNC_BATCH), 2
        )
        results["async_path_us"] = trio.run(_async_path)
        print(
            f"async path, sockets stubbed: {results['async_path_us']['total']} µs (forwarding "
            f"in rounds of {ASYNC_BATCH}: {results['forwarding_path_batch8_us']} µs)",
            flush=True,
        )
    if "echo" in wanted:
        try:
            results["echo"] = _echo_floor(args.duration)
        except MissingTools as exc:
            print(exc, file=sys.stderr)
            return 2
        for rate in ("2000", "20000", "full"):
            r = results["echo"][rate]
            print(
                f"Trio UDP echo at {rate} ({r['qps']:,} q/s): {r['user_us_per_query']} µs user + "
                f"{r['system_us_per_query']} µs system per query",
                flush=True,
            )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
