"""The external component of the ``async`` scenario: answers every held query at once.

    python -m bench.async_responder --listen PATH --reply PATH     # what the scenario runs
    python -m bench.async_responder --measure [--count 200000]     # its own rate, once

triodist sends one datagram per suspended query (the query with its ID field replaced by the
queryID it is held under); this program reads it and sends ``"<id> accept"`` to triodist's
listening socket, the id being the datagram's first two bytes. No DNS parsing, no decision:
the least an external component can do, so that what the scenario measures is triodist's
suspending and resuming, not the component.

It is a plain loop on ``poll``. A unix datagram socket queues only
``net.unix.max_dgram_qlen`` unread datagrams (10 by default), in both directions, and with
dnsperf's 100 queries in flight both queues fill. So the program never waits on a send: it
drains its own queue (up to 64 datagrams per wake-up; a full queue here would make
triodist's ``send()`` fail and that query wait for its timeout), then sends the answers it
has; when triodist's queue is full (EAGAIN, counted as ``full``) the rest are kept, in order,
and sent when the socket is writable again (the most kept at once is ``backlog``). An answer
that cannot be sent at all (triodist's socket gone) is counted as ``unsent``; its query
waits for its timeout.
On SIGTERM or SIGINT it removes its socket and prints its counters as one JSON line.

With ``--measure`` it starts itself as a child (pinned to the first core, as in the scenario,
when ``taskset`` and two cores are available), plays triodist's part from this process on the
second core with at most 8 datagrams in flight, and prints the rate and the child's CPU time
per datagram: the rate the component allows on a core of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import FrameType

COUNTERS_PREFIX = "async-responder counters: "
_PEER_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN)


class Stop(Exception):
    """SIGTERM or SIGINT: leave the loop, print the counters."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def serve(listen: Path, reply: Path, batch: int = 64) -> dict[str, int]:
    counters = {"received": 0, "answered": 0, "full": 0, "unsent": 0, "short": 0, "backlog": 0}
    listen.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(listen))
    sock.setblocking(False)
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    out.setblocking(False)
    connected = False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    waiting_to_send = False
    pending: deque[bytes] = deque()
    recv, send = sock.recv, out.send
    try:
        while True:
            poller.poll()
            # Drain our queue first (triodist's sends fail when it is full), a batch at a time.
            for _ in range(batch):
                try:
                    data = recv(512)
                except BlockingIOError:
                    break
                counters["received"] += 1
                if len(data) < 2:
                    counters["short"] += 1
                    continue
                pending.append(b"%d accept" % (data[0] << 8 | data[1]))
            if not connected and pending:
                try:
                    out.connect(str(reply))
                    connected = True
                except OSError:
                    counters["unsent"] += len(pending)
                    pending.clear()
            # Then send what is pending; triodist's queue full: keep the rest for later.
            while pending:
                try:
                    send(pending[0])
                except BlockingIOError:
                    counters["full"] += 1
                    break
                except OSError as exc:
                    counters["unsent"] += 1
                    if exc.errno in _PEER_GONE:
                        connected = False  # triodist restarted: connect again next time
                        counters["unsent"] += len(pending) - 1
                        pending.clear()
                        break
                else:
                    counters["answered"] += 1
                pending.popleft()
            counters["backlog"] = max(counters["backlog"], len(pending))
            if pending and not waiting_to_send:
                poller.register(out, select.POLLOUT)
                waiting_to_send = True
            elif not pending and waiting_to_send:
                poller.unregister(out)
                waiting_to_send = False
    except Stop:
        pass
    finally:
        sock.close()
        out.close()
        listen.unlink(missing_ok=True)
    return counters


def parse_counters(log: str) -> dict[str, int] | None:
    """The counters printed at exit, from the program's output."""
    for line in reversed(log.splitlines()):
        if line.startswith(COUNTERS_PREFIX):
            return json.loads(line[len(COUNTERS_PREFIX) :])
    return None


def measure(count: int, window: int = 8) -> dict[str, float]:
    """The component's rate with triodist's part played by this process."""
    cores = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    pinned = taskset is not None and len(cores) >= 2
    with tempfile.TemporaryDirectory(prefix="triodist-responder-") as tmp:
        listen, reply = Path(tmp) / "responder.sock", Path(tmp) / "triodist.sock"
        mine = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        mine.bind(str(reply))
        argv = [sys.executable, "-m", "bench.async_responder", "--listen", str(listen)]
        argv += ["--reply", str(reply)]
        if pinned:
            assert taskset is not None
            argv = [taskset, "-c", str(cores[0]), *argv]
            os.sched_setaffinity(0, {cores[1]})
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            to = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            deadline = time.monotonic() + 10
            while True:
                try:
                    to.connect(str(listen))
                    break
                except OSError:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise RuntimeError("the responder did not start") from None
                    time.sleep(0.05)
            mine.settimeout(1.0)
            payload = bytes(30)  # about a query's size: two id bytes and a short question
            cpu_before = _cpu_seconds(child.pid)
            started = time.perf_counter()
            sent = received = 0
            while received < count:
                while sent < count and sent - received < window:
                    to.send(payload)
                    sent += 1
                try:
                    mine.recv(64)
                except TimeoutError:
                    break  # a lost datagram: stop rather than wait for it
                received += 1
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds(child.pid) - cpu_before
        finally:
            child.send_signal(signal.SIGTERM)
            output, _ = child.communicate(timeout=5)
    counters = parse_counters(output) or {}
    return {
        "datagrams": received,
        "seconds": elapsed,
        "rate": received / elapsed,
        "responder_cpu_us_per_datagram": cpu / max(received, 1) * 1e6,
        "full": counters.get("full", -1),
        "unsent": counters.get("unsent", -1),
        "pinned": pinned,
    }


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.async_responder", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--listen", type=Path, help="the socket triodist sends held queries to")
    parser.add_argument("--reply", type=Path, help="triodist's listening socket")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run under SCHED_FIFO (priority 1) if allowed, so that it preempts the load "
        "generator sharing its core as soon as a datagram arrives",
    )
    parser.add_argument("--measure", action="store_true", help="measure this program's rate")
    parser.add_argument("--count", type=int, default=200_000, help="datagrams for --measure")
    args = parser.parse_args(argv)
    if args.measure:
        r = measure(args.count)
        where = "pinned to core 0, sender on core 1" if r["pinned"] else "not pinned"
        print(
            f"async responder: {r['datagrams']:,} datagrams in {r['seconds']:.2f} s, "
            f"{r['rate']:,.0f} answers/s with 8 in flight ({where}); "
            f"{r['responder_cpu_us_per_datagram']:.1f} µs of CPU per datagram "
            f"(at most about {1e6 / max(r['responder_cpu_us_per_datagram'], 0.01):,.0f}/s "
            f"on a core of its own); queue full {r['full']}, unsent {r['unsent']}"
        )
        return 0
    if args.listen is None or args.reply is None:
        parser.error("--listen and --reply are needed (or --measure)")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            print("async responder: SCHED_FIFO priority 1", flush=True)
        except OSError as exc:
            print(f"async responder: SCHED_FIFO refused ({exc.strerror})", flush=True)
    counters = serve(args.listen, args.reply)
    with contextlib.suppress(BrokenPipeError):
        print(COUNTERS_PREFIX + json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
