"""Attack soak: ordinary traffic with three attacks mixed in, against triodist and dnsdist.

    python -m bench.attack_soak [--duration 60] [--proxy triodist --proxy dnsdist]
                                [--attack non-readers --attack amplify --attack new-sources]
                                [--out F]

Each proxy runs as its own process, in turn, on the same configuration, in front of the same
test backend (``triodist.testing.backend`` in this process, whose zone has a ~58 KB answer for
``huge.example.org. TXT``). For ``--duration`` seconds:

- **a well-behaved client** asks ``www.example.org.`` over UDP 500 times a second from
  127.0.0.1, and over TCP 10 times a second (a connection each) from 127.0.0.2: the answers
  it gets and their latency (p50, p99, max) are the figures;
- **TCP clients that never read** (attack 1): 60 connections from 127.0.0.3-5 each pipeline
  50 queries for the 58 KB answer and read nothing; each is replaced by a new one every 5 s;
- **UDP amplification** (attack 3): 50 queries a second without EDNS (40 bytes, 512
  allowed) for the 58 KB answer, which the configuration fetches from a ``tcpOnly``
  backend; the largest answer received is the figure;
- **new sources** (attack 4): 2,000 queries a second, each from another 127.x.y.z address,
  against the ``MaxQPSIPRule(1000)`` that the configuration applies to every query (the
  well-behaved client stays under it).

The default pool has a packet cache that keeps answers up to 64 KiB, so the 58 KB answer
comes from the proxy's cache over TCP after the first: the backend, in this process, would
otherwise spend the load's CPU building it for every query a proxy reads from the clients
that never read (dnsdist reads all of their queries, triodist a few).

``--attack`` picks some of the three (all by default; ``none`` for the well-behaved client
alone), so that what each costs shows apart.
The proxy runs pinned to the last core and this process to the others (when there are two
or more). The proxy's resident size is read from /proc every 0.2 s (peak and end). Loopback
only, bounded by ``--duration``; needs dnsdist for the comparison (skipped when not
installed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.message
import trio

from triodist.testing.backend import DEFAULT_ZONE, AuthServer

from .procs import free_port

HUGE_ZONE = (
    DEFAULT_ZONE + "huge IN TXT " + " ".join(f'"{i:03d}-{"h" * 245}"' for i in range(230)) + "\n"
)

CONFIG = """
setLocal("127.0.0.1:{port}")
setACL({{"127.0.0.0/8"}})
setTCPSendTimeout(2)
setTCPRecvTimeout(2)
newServer{{address="127.0.0.1:{backend}", healthCheckMode="up"}}
newServer{{address="127.0.0.1:{backend}", name="tcp-only", pool="tcp-only", tcpOnly=true,
  healthCheckMode="up"}}
addAction(AndRule{{QNameRule("huge.example.org."), NotRule(TCPRule(true))}}, PoolAction("tcp-only"))
addAction(MaxQPSIPRule(1000), DropAction())
getPool(""):setCache(newPacketCache(10000, {{maximumEntrySize=65535}}))
"""

NON_READERS = 60
HOLD = 5.0  # seconds a non-reading connection is kept before it is replaced
GOOD_UDP_RATE = 500
AMPLIFY_RATE = 50
NEW_SOURCE_RATE = 2000


ATTACKS = ("non-readers", "amplify", "new-sources")


@dataclass
class Result:
    proxy: str
    duration: float
    attacks: list[str]
    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    rss_end_kib: int = 0
    good_udp_sent: int = 0
    good_udp_answered: int = 0
    good_tcp_sent: int = 0
    good_tcp_answered: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    tcp_latency_ms: dict[str, float] = field(default_factory=dict)
    non_reader_connections: int = 0
    amplification_queries: int = 0
    amplification_largest_answer: int = 0
    amplification_query_size: int = 0
    new_source_queries: int = 0
    alive_at_end: bool = False


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    return {
        "p50": round(statistics.median(values) * 1000, 3),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 3),
        "max": round(values[-1] * 1000, 3),
    }


async def _good_udp(address: tuple[str, int], until: float, result: Result) -> list[float]:
    latencies: list[float] = []
    sent_at: dict[int, float] = {}
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    await sock.connect(address)

    async def receive() -> None:
        while True:
            data = await sock.recv(65535)
            start = sent_at.pop(int.from_bytes(data[:2], "big"), None)
            if start is not None:
                latencies.append(time.monotonic() - start)
                result.good_udp_answered += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        qid = 0
        step = 0.01
        while trio.current_time() < until:
            for _ in range(GOOD_UDP_RATE // 100):
                qid = (qid + 1) % 65536
                msg = dns.message.make_query("www.example.org.", "A")
                msg.id = qid
                sent_at[qid] = time.monotonic()
                await sock.send(msg.to_wire())
                result.good_udp_sent += 1
            await trio.sleep(step)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    sock.close()
    return latencies


async def _good_tcp(address: tuple[str, int], until: float, result: Result) -> list[float]:
    latencies: list[float] = []
    while trio.current_time() < until:
        start = time.monotonic()
        result.good_tcp_sent += 1
        with trio.move_on_after(2):
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with sock:
                await sock.bind(("127.0.0.2", 0))
                await sock.connect(address)
                wire = dns.message.make_query("www.example.org.", "A").to_wire()
                await sock.send(len(wire).to_bytes(2, "big") + wire)
                data = b""
                while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                    chunk = await sock.recv(65535)
                    if not chunk:
                        break
                    data += chunk
                if len(data) >= 14:
                    latencies.append(time.monotonic() - start)
                    result.good_tcp_answered += 1
        await trio.sleep(0.1)
    return latencies


async def _non_readers(address: tuple[str, int], until: float, result: Result) -> None:
    wire = dns.message.make_query("huge.example.org.", "TXT").to_wire()
    batch = (len(wire).to_bytes(2, "big") + wire) * 50

    async def one(source: str) -> None:
        while trio.current_time() < until:
            with trio.move_on_at(until):
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    await sock.bind((source, 0))
                    try:
                        await sock.connect(address)
                        result.non_reader_connections += 1
                        await sock.send(batch)
                        # Never read. A proxy that gives up on the connection cannot tell
                        # this client so (its FIN waits behind the unread answers): the
                        # client opens a new one every HOLD seconds, as an attacker would.
                        await trio.sleep(HOLD)
                    except OSError:
                        await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        for n in range(NON_READERS):
            # Three addresses, 20 connections each: within triodist's default per-client
            # bound, so that all 60 are held at once (dnsdist has no such bound).
            nursery.start_soon(one, f"127.0.0.{3 + n % 3}")


async def _amplify(address: tuple[str, int], until: float, result: Result) -> None:
    wire = dns.message.make_query("huge.example.org.", "TXT").to_wire()
    result.amplification_query_size = len(wire)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.9", 0))

    async def receive() -> None:
        while True:
            data = await sock.recv(65535)
            result.amplification_largest_answer = max(
                result.amplification_largest_answer, len(data)
            )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        while trio.current_time() < until:
            for _ in range(AMPLIFY_RATE // 10):
                await sock.sendto(wire, address)
                result.amplification_queries += 1
            await trio.sleep(0.1)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    sock.close()


async def _new_sources(address: tuple[str, int], until: float, result: Result) -> None:
    wire = dns.message.make_query("www.example.org.", "A").to_wire()
    n = 0
    while trio.current_time() < until:
        for _ in range(NEW_SOURCE_RATE // 100):
            n += 1
            source = f"127.{64 + (n >> 16) % 64}.{(n >> 8) & 0xFF}.{n & 0xFF or 1}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                sock.sendto(wire, address)
            result.new_source_queries += 1
        await trio.sleep(0.01)


async def _watch(pid: int, until: float, result: Result) -> None:
    result.rss_start_kib = _rss_kib(pid)
    while trio.current_time() < until + 3:
        result.rss_peak_kib = max(result.rss_peak_kib, _rss_kib(pid))
        await trio.sleep(0.2)
    result.rss_end_kib = _rss_kib(pid)


def _cores() -> tuple[set[int], list[str]]:
    """This process's cores and the proxy's command prefix: the proxy on the last core."""
    cores = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if len(cores) < 2 or taskset is None:
        return set(cores), []
    return set(cores[:-1]), [taskset, "-c", str(cores[-1])]


def _command(proxy: str, conf: Path) -> list[str]:
    if proxy == "dnsdist":
        return ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]
    return [sys.executable, "-m", "triodist", "serve", "--config", str(conf)]


async def _wait_answering(address: tuple[str, int]) -> None:
    wire = dns.message.make_query("www.example.org.", "A").to_wire()
    with trio.fail_after(20):
        while True:
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                await sock.bind(("127.0.0.1", 0))
                await sock.sendto(wire, address)
                with trio.move_on_after(0.2):
                    await sock.recv(65535)
                    return


async def run_one(proxy: str, duration: float, attacks: list[str], workdir: Path) -> Result:
    result = Result(proxy, duration, attacks)
    load_cores, pin = _cores()
    async with trio.open_nursery() as nursery:
        backend = AuthServer(zone_text=HUGE_ZONE, history=10)
        await nursery.start(backend.serve, "127.0.0.1", 0)
        assert backend.address is not None
        port = free_port()
        conf = workdir / f"{proxy}.lua"
        conf.write_text(CONFIG.format(port=port, backend=backend.address[1]))
        log = (workdir / f"{proxy}.log").open("w")
        process = await trio.lowlevel.open_process(
            pin + _command(proxy, conf), stdout=log, stderr=subprocess.STDOUT
        )
        os.sched_setaffinity(0, load_cores)
        try:
            address = ("127.0.0.1", port)
            await _wait_answering(address)
            until = trio.current_time() + duration
            good: dict[str, list[float]] = {}

            async def good_udp() -> None:
                good["udp"] = await _good_udp(address, until, result)

            async def good_tcp() -> None:
                good["tcp"] = await _good_tcp(address, until, result)

            async with trio.open_nursery() as load:
                load.start_soon(_watch, process.pid, until, result)
                load.start_soon(good_udp)
                load.start_soon(good_tcp)
                if "non-readers" in attacks:
                    load.start_soon(_non_readers, address, until, result)
                if "amplify" in attacks:
                    load.start_soon(_amplify, address, until, result)
                if "new-sources" in attacks:
                    load.start_soon(_new_sources, address, until, result)
            result.latency_ms = _percentiles(good.get("udp", []))
            result.tcp_latency_ms = _percentiles(good.get("tcp", []))
            result.alive_at_end = process.poll() is None
        finally:
            process.terminate()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            log.close()
        nursery.cancel_scope.cancel()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--proxy", action="append", choices=["triodist", "dnsdist"])
    # "none": the well-behaved client alone, the baseline the attacks' cost is read against.
    parser.add_argument("--attack", action="append", choices=[*ATTACKS, "none"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    proxies = args.proxy or ["triodist", "dnsdist"]
    attacks = [a for a in args.attack or ATTACKS if a != "none"]
    if "dnsdist" in proxies and shutil.which("dnsdist") is None:
        print("dnsdist is not installed: triodist only", file=sys.stderr)
        proxies = [p for p in proxies if p != "dnsdist"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for proxy in proxies:
            result = trio.run(run_one, proxy, args.duration, attacks, Path(tmp))
            results.append(result)
            print(json.dumps(asdict(result), indent=2), flush=True)
    report = {
        "machine": {"cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")},
        "results": [asdict(r) for r in results],
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
