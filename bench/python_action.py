"""What a Python action costs per query, beside a Lua action that decides the same.

    python -m bench.python_action [--queries 20000] [--burst 200] [--rounds 3]

One process: a triodist server on loopback whose one rule answers every query REFUSED,
written three ways: a ``LuaAction`` returning ``DNSAction.Refused`` (answered from the
receive loop, no task), a ``PythonAction`` whose function returns ``Verdict.REFUSED`` at
once, and one whose function first awaits ``trio.sleep(0)`` (a checkpoint, as any real
lookup has at least one). A client socket in the same process sends the queries in bursts of
``--burst``, each once every answer of the previous one is in. For each way: queries a
second and CPU microseconds per query, the best of ``--rounds`` runs. The CPU is the
process's, the client's included: compare the rows with each other, not with other
benchmarks.

Loopback only; every wait has a time limit.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import trio

from triodist.cli import load
from triodist.server import DNSServer

WAYS = {
    "lua": "addAction(AllRule(), LuaAction(function(dq) return DNSAction.Refused end))",
    "python": 'addAction(AllRule(), PythonAction("bench_actions:refuse", 1000))',
    "python-await": 'addAction(AllRule(), PythonAction("bench_actions:refuse_after", 1000))',
}

MODULE = """
import trio
from triodist.rules import Verdict

async def refuse(dq):
    return Verdict.REFUSED

async def refuse_after(dq):
    await trio.sleep(0)
    return Verdict.REFUSED
"""


async def measure(rule: str, queries: int, burst: int) -> tuple[float, float]:
    """Queries a second and CPU µs per query for one way of writing the rule."""
    wires = [
        dns.message.make_query(f"q{n}.example.org.", "A", id=n % 65536).to_wire()
        for n in range(burst)
    ]
    async with trio.open_nursery() as nursery:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "bench_actions.py").write_text(MODULE)
            path = Path(tmp) / "rules.lua"
            path.write_text('newServer{address="192.0.2.1:53"}\n' + rule + "\n")
            lua = load(str(path), [], ["127.0.0.1:0"])
        server = DNSServer(lua.api.config)
        (address,) = await nursery.start(server.run)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        client.connect(address)
        client.setblocking(False)
        try:
            with trio.fail_after(120):
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(queries // burst):
                    for wire in wires:
                        client.send(wire)
                    received = 0
                    while received < burst:
                        await trio.lowlevel.wait_readable(client)
                        while received < burst:
                            try:
                                answer = client.recv(65535)
                            except BlockingIOError:
                                break
                            assert answer[3] & 0x0F == 5, "not REFUSED"
                            received += 1
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            client.close()
            server.request_shutdown()
            with trio.move_on_after(10):
                await server.wait_stopped()
            nursery.cancel_scope.cancel()
    done = queries // burst * burst
    return done / wall, cpu / done * 1e6


async def main(args: argparse.Namespace) -> None:
    print(f"{args.queries} queries in bursts of {args.burst}, best of {args.rounds} runs")
    print(f"{'rule':<14} {'queries/s':>10} {'CPU µs/query':>13}")
    for name, rule in WAYS.items():
        runs = [await measure(rule, args.queries, args.burst) for _ in range(args.rounds)]
        rate = max(r for r, _ in runs)
        cpu = min(c for _, c in runs)
        print(f"{name:<14} {rate:>10,.0f} {cpu:>13.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    sys.exit(trio.run(main, parser.parse_args()))
