"""How long ``triodist replay`` takes on a capture of 100,000 queries.

    python -m bench.replay [--queries 100000] [--runs 3] [--keep DIR] [--no-save]

Generates, in a temporary directory (or ``--keep DIR``), a pcap of ``--queries`` DNS
queries over a minute of traffic (``make_capture``): 3,000 clients (one in ten over
IPv6), 5,000 names asked with a skewed popularity (a few names often, most rarely), one
query in twenty over TCP, one client in a hundred sending ten times the others' rate, and
the answers to three queries in ten in the capture; and a configuration (``CONFIG``)
with what a real one has: a block list, a per-client rate limit, a pool for some names,
a packet cache, two servers in the default pool. Then times the command a user runs,
``python -m triodist replay --config rules.lua capture.pcap --json``, in a child process
(reading the capture, loading the configuration, the replay, the report), ``--runs``
times, and checks the report: every query accounted for, and each kind of outcome seen.

Unless ``--no-save``, the result goes to ``bench/results/<date>-replay.txt``: the command,
the machine, each run's time and the queries per second of the median run.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dpkt

from .tools import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

CLIENTS = 3000
NAMES = 5000
SECONDS = 60.0

CONFIG = """\
newServer{address="192.0.2.1:53", name="resolver1"}
newServer{address="192.0.2.2:53", name="resolver2"}
newServer{address="192.0.2.3:53", name="internal", pool="internal"}
setACL({"0.0.0.0/0", "::/0"})
blocked = newSuffixMatchNode()
for i = 0, 99 do blocked:add("name" .. (i * 50 + 7) .. ".example.com.") end
addAction(SuffixMatchNodeRule(blocked), RCodeAction(DNSRCode.REFUSED), {name="blocklist"})
addAction(MaxQPSIPRule(20), DropAction(), {name="rate-limit"})
addAction(QNameSuffixRule("corp.example.com."), PoolAction("internal"), {name="internal"})
addAction(QTypeRule(DNSQType.ANY), TCAction(), {name="any-over-tcp"})
getPool(""):setCache(newPacketCache(10000))
"""

_SERVER_V4 = ipaddress.ip_address("10.53.0.1").packed
_SERVER_V6 = ipaddress.ip_address("fd00::53").packed
_MAC = b"\x02\x00\x00\x00\x00\x01"


def _name(index: int) -> bytes:
    """The wire form of name ``index``: one in twenty under corp.example.com."""
    labels = [f"name{index}".encode()]
    labels += [b"corp", b"example", b"com"] if index % 20 == 7 else [b"example", b"com"]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def _frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, tcp: bool) -> bytes:
    if tcp:
        segment = dpkt.tcp.TCP(
            sport=sport, dport=dport, seq=1, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
        )
        segment.data = struct.pack("!H", len(payload)) + payload
        proto = dpkt.ip.IP_PROTO_TCP
    else:
        segment = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
        segment.ulen = 8 + len(payload)
        proto = dpkt.ip.IP_PROTO_UDP
    ip: dpkt.Packet
    if len(src) == 4:
        ip = dpkt.ip.IP(src=src, dst=dst, p=proto, data=segment, ttl=64)
        ip.len = len(bytes(ip))
        ethertype = 0x0800
    else:
        ip = dpkt.ip6.IP6(src=src, dst=dst, nxt=proto, hlim=64, data=segment)
        ip.plen = len(bytes(segment))
        ip.extension_hdrs = {}
        ethertype = 0x86DD
    return bytes(dpkt.ethernet.Ethernet(src=_MAC, dst=_MAC, type=ethertype, data=bytes(ip)))


def make_capture(path: Path, queries: int, seconds: float = SECONDS, seed: int = 17) -> None:
    """A pcap of ``queries`` queries over ``seconds``, as the module's documentation says."""
    rng = random.Random(seed)
    clients = []
    for index in range(CLIENTS):
        if index % 10 == 9:
            clients.append(ipaddress.ip_address(f"fd00::{index + 1:x}").packed)
        else:
            clients.append(ipaddress.ip_address(f"10.{index // 250}.{index % 250}.1").packed)
    # One client in a hundred is ten times busier than the others.
    weights = [10 if i % 100 == 0 else 1 for i in range(CLIENTS)]
    names = [_name(i) for i in range(NAMES)]
    picks = rng.choices(range(CLIENTS), weights=weights, k=queries)
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=1)
        step = seconds / queries
        for number in range(queries):
            at = 1_700_000_000 + number * step
            client = clients[picks[number]]
            server = _SERVER_V6 if len(client) == 16 else _SERVER_V4
            port = 1024 + (number * 7919) % 60000
            name = names[min(int(rng.paretovariate(1.2)) - 1, NAMES - 1) * 7 % NAMES]
            qtype = 255 if number % 500 == 3 else (28 if number % 3 == 0 else 1)
            qid = number & 0xFFFF
            question = name + struct.pack("!HH", qtype, 1)
            query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
            tcp = number % 20 == 11
            writer.writepkt(_frame(client, server, port, 53, query, tcp), ts=at)
            if number % 10 < 3:
                answer = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
                if qtype == 28:
                    answer += (
                        b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 300, 16) + bytes(15) + b"\x01"
                    )
                else:
                    answer += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + b"\xc0\x00\x02\x01"
                writer.writepkt(_frame(server, client, 53, port, answer, tcp), ts=at + 0.004)


def run_once(config: Path, capture: Path) -> tuple[float, dict[str, object]]:
    """One ``triodist replay`` run: its wall time and its JSON report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "triodist", "replay", "--config", str(config)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, str(capture), "--json"], capture_output=True, env=env, check=False, cwd=ROOT
    )
    if done.returncode != 0:  # what went wrong, not only that it did
        raise SystemExit(f"replay exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return time.perf_counter() - started, json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep", type=Path, help="write the capture and config here, and keep them"
    )
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        where = args.keep or Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        capture, config = where / "capture.pcap", where / "rules.lua"
        config.write_text(CONFIG)
        made = time.perf_counter()
        make_capture(capture, args.queries)
        print(f"capture of {args.queries:,} queries made in {time.perf_counter() - made:.1f} s")
        runs = []
        report: dict[str, object] = {}
        for run in range(args.runs):
            took, report = run_once(config, capture)
            runs.append(took)
            print(f"run {run + 1}: {took:.2f} s")
    assert report["queries"] == args.queries, report["queries"]
    summary = report["summary"]
    assert isinstance(summary, list)
    assert sum(int(entry["queries"]) for entry in summary) == args.queries
    outcomes = sorted({str(entry["outcome"]) for entry in summary})
    median = statistics.median(runs)
    lines = [
        f"# python -m bench.replay --queries {args.queries} --runs {args.runs}, {date.today()}",
        "# the command timed: python -m triodist replay --config rules.lua capture.pcap --json",
        f"# machine: {json.dumps(machine())}",
        f"queries: {args.queries:,} over {SECONDS:.0f} s of traffic, {CLIENTS:,} clients, "
        f"{NAMES:,} names, 30% with their answer in the capture, 5% over TCP",
        f"runs (wall time, s): {', '.join(f'{r:.2f}' for r in runs)}",
        f"median: {median:.2f} s, {args.queries / median:,.0f} queries per second "
        "(reading the capture, loading the configuration, the replay and the report)",
        f"replay alone (the report's elapsed, last run): {report['elapsed']} s",
        f"every run under a minute: {'yes' if max(runs) < 60 else 'NO'}",
        f"outcomes seen: {', '.join(outcomes)}",
        f"load average after: {' '.join(f'{x:.2f}' for x in load_average())}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if not args.no_save:
        path = RESULTS / f"{date.today()}-replay.txt"
        path.write_text(text)
        print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
