"""A network listener's receive rate: what reading one datagram and checking its sender costs.

    python -m bench.listener_rate [--datagrams 300000] [--runs 5]

A :class:`~triodist.asyncproc.listener.NetworkListener` on an abstract name, with a callback
that only counts, runs in this process; another process of the same user sends it ``--datagrams``
small datagrams ("12345 allow", an async component's answer) as fast as the socket takes
them. Printed per run: datagrams a second (wall time, so the sender's pace and the
machine's load weigh in) and the listener's CPU time per datagram (this process only: the
figure to compare between two versions of the receive loop), then the median of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import trio

from triodist.asyncproc.listener import NetworkListener


async def one_run(count: int) -> tuple[float, float]:
    """(datagrams a second, CPU seconds per datagram) for ``count`` datagrams."""
    name = f"\0triodist-listener-rate-{os.getpid()}-{time.monotonic_ns()}"
    received = 0
    done = trio.Event()

    def callback(endpoint_id: int, message: bytes, sender: bytes) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    listener = NetworkListener()
    listener.addUnixListeningEndpoint(name, 0, callback)
    listener.start()
    sender = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.connect(bytes.fromhex(sys.argv[1]))\n"
        "m = b'12345 allow'\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    s.send(m)\n"  # blocking: waits while the listener's queue is full
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        wall, cpu = time.perf_counter(), time.process_time()
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", sender, name.encode("latin-1").hex(), str(count)]
        )
        await done.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await process.wait()
        nursery.cancel_scope.cancel()
    return count / wall, cpu / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datagrams", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates, costs = [], []
    for _ in range(args.runs):
        rate, cost = trio.run(one_run, args.datagrams)
        rates.append(rate)
        costs.append(cost)
        print(f"{rate:,.0f} datagrams/s, {cost * 1e6:.2f} µs CPU per datagram", flush=True)
    print(
        f"median: {statistics.median(rates):,.0f} datagrams/s, "
        f"{statistics.median(costs) * 1e6:.2f} µs CPU per datagram"
    )


if __name__ == "__main__":
    main()
