"""Memory per held query: N queries suspended at once, measured in one process.

    python -m bench.async_memory [--held 10000]

A triodist server runs in this process with a rule that suspends every query; one client
socket sends N queries with distinct IDs, in paced bursts so that no datagram is lost;
once all N are held, the process's resident size (or, with --heap, the Python heap as
tracemalloc sees it) is compared with what it was before the first query. Then every query
is answered (``setRCode`` + ``resume``), so the run also checks that all N come back.
Loopback only; bounded by --held.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import tempfile
import tracemalloc
from pathlib import Path

import dns.message
import trio

from triodist.authserver import AuthServer
from triodist.cli import load
from triodist.server import DNSServer

CONFIG = """
newServer{address="%s", healthCheckMode="up"}
setMaxSuspended(%d)
function hold(dq)
  dq:suspend(0, dq.dh:getID(), 600000)
  return DNSAction.Allow
end
addAction(AllRule(), LuaAction(hold))
"""


def rss_kib() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(held: int, trace: bool) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        backend = AuthServer(history=10)
        await nursery.start(backend.serve, "127.0.0.1", 0)
        assert backend.address is not None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rules.lua"
            path.write_text(CONFIG % (f"{backend.address[0]}:{backend.address[1]}", held + 10))
            lua = load(str(path), [], ["127.0.0.1:0"])
        server = DNSServer(lua.api.config)
        registry = lua.api.config.async_registry
        (address,) = await nursery.start(server.run)
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        await client.connect(address)
        wires = []
        for qid in range(held):
            msg = dns.message.make_query(f"q{qid}.example.org.", "A")
            msg.id = qid
            wires.append(msg.to_wire())
        gc.collect()
        if trace:
            tracemalloc.start()
        heap_before = tracemalloc.get_traced_memory()[0]
        rss_before = rss_kib()
        for start in range(0, held, 100):
            for wire in wires[start : start + 100]:
                await client.send(wire)
            # The datagrams are on their way through the kernel: nothing to wait on but time.
            while len(registry.held) < min(start + 100, held):  # noqa: ASYNC110
                await trio.sleep(0.001)
        gc.collect()
        heap_after = tracemalloc.get_traced_memory()[0]
        rss_after = rss_kib()
        tracemalloc.stop()
        answered = 0
        all_answered = trio.Event()

        async def receive() -> None:
            nonlocal answered
            while answered < held:
                await client.recv(65535)
                answered += 1
            all_answered.set()

        async with trio.open_nursery() as inner:
            inner.start_soon(receive)
            for count, (async_id, query_id) in enumerate(list(registry.held)):
                # Answered by the resume itself (REFUSED), so the slow Python test backend
                # does not decide how many come back.
                obj = registry.take(async_id, query_id)
                obj.setRCode(5, False)
                obj.resume()
                if count % 100 == 99:
                    await trio.sleep(0.002)
            with trio.move_on_after(30):
                await all_answered.wait()
            inner.cancel_scope.cancel()
        client.close()
        server.request_shutdown()
        await server.wait_stopped()
        nursery.cancel_scope.cancel()
    return {
        "held": held,
        "heap_bytes_per_query": (heap_after - heap_before) / held,
        "rss_kib_growth": rss_after - rss_before,
        "rss_bytes_per_query": (rss_after - rss_before) * 1024 / held,
        "answered": answered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=10_000, help="queries held at once")
    parser.add_argument(
        "--heap",
        action="store_true",
        help="measure the Python heap with tracemalloc (which inflates the resident size)",
    )
    args = parser.parse_args()
    result = trio.run(run, args.held, args.heap)
    what = (
        f"{result['heap_bytes_per_query']:,.0f} bytes of Python heap per held query (tracemalloc)"
        if args.heap
        else f"resident size +{result['rss_kib_growth']:,.0f} KiB, "
        f"{result['rss_bytes_per_query']:,.0f} bytes per held query"
    )
    print(
        f"{args.held:,} queries held at once: {what}; "
        f"{result['answered']:,.0f} of {args.held:,} answered after resume"
    )


if __name__ == "__main__":
    main()
