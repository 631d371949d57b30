"""Scaling with ``--workers``: the same load against 1 and N worker processes.

    python -m bench.scaling [--workers 2] [--clients 4 --clients 32] [--runs 3] [--duration 5]

knotd is the backend, triodist forwards with no cache (the no-cache scenario's
configuration and names), dnsperf loads it with ``-c C`` client sockets so that
``SO_REUSEPORT`` has several flows to spread over the workers. Nothing is pinned: the
workers, dnsperf and knotd share the machine's cores as they would on a host. Runs of the
two settings alternate (1, N, 1, N, ...) so that a change in the machine's load during the
run hits both alike; the medians are printed and written to
``bench/results/<date>-scaling.json``. Needs dnsperf and knot (Debian packages); loopback
only, bounded by ``--runs`` x settings x loads x ``--duration``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .backend import start_knot
from .dnsperf import LoadOptions
from .dnsperf import run as run_dnsperf
from .procs import BenchError, Pinning, ProcessSet, cpu_seconds, free_port, wait_until_answering
from .proxies import TRIODIST_PROXY, render_config
from .scenarios import SCENARIOS
from .tools import DNSPERF, KNOTC, KNOTD, MissingTools, require

PROBE_NAME = "probe.bench.test."
RESULTS = Path(__file__).parent / "results"


def _children_cpu(pid: int) -> float:
    """CPU seconds of a process and its direct children (the workers of ``--workers``)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # The fields after the command (in parentheses, which may hold spaces).
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                total += cpu_seconds(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="the N compared with 1")
    parser.add_argument("--clients", type=int, action="append", help="dnsperf -c (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", type=Path, help="where to write the results (JSON)")
    args = parser.parse_args(argv)
    loads = args.clients or [4, 32]
    try:
        paths = require([DNSPERF, KNOTD, KNOTC])
    except MissingTools as exc:
        print(f"python -m bench.scaling: {exc}", file=sys.stderr)
        return 2
    scenario = SCENARIOS["no-cache"]
    pinning = Pinning.choose(None, enabled=False)
    settings = [1, args.workers]
    qps: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="triodist-scaling-") as tmp,
            ProcessSet() as processes,
        ):
            workdir = Path(tmp)
            knot = start_knot(
                processes, pinning, workdir, knotd=paths["knotd"], knotc=paths["knotc"]
            )
            query_file = workdir / "names.queries"
            scenario.queries.write(query_file, args.duration)
            for run in range(args.runs):
                for workers in settings:
                    port = free_port()
                    conf = workdir / f"w{workers}-{run}.lua"
                    conf.write_text(
                        render_config(scenario, TRIODIST_PROXY, f"127.0.0.1:{port}", knot.address)
                    )
                    argv = [*TRIODIST_PROXY.argv(conf, paths), "--workers", str(workers)]
                    proxy = processes.start(
                        f"triodist-w{workers}", argv, log_path=workdir / f"w{workers}-{run}.log"
                    )
                    wait_until_answering(proxy, "127.0.0.1", port, PROBE_NAME)
                    for clients in loads:
                        key = f"workers={workers} clients={clients}"
                        before = _children_cpu(proxy.pid)
                        result = run_dnsperf(
                            paths["dnsperf"],
                            processes,
                            pinning,
                            host="127.0.0.1",
                            port=port,
                            query_file=query_file,
                            options=LoadOptions(duration=args.duration, clients=clients),
                            log_path=workdir / f"dnsperf-{workers}-{clients}-{run}.log",
                        )
                        used = _children_cpu(proxy.pid) - before
                        qps.setdefault(key, []).append(result.qps)
                        answered = max(result.qps * args.duration, 1.0)
                        cpu.setdefault(key, []).append(used / answered * 1e6)
                        print(f"  run {run + 1}: {key}: {result.qps:,.0f} qps", flush=True)
                    processes.stop(proxy)
    except BenchError as exc:
        print(f"python -m bench.scaling: {exc}", file=sys.stderr)
        return 1
    print()
    print("| setting | qps (median) | runs | proxy CPU µs/q (median) |")
    print("| --- | ---: | --- | ---: |")
    table = {}
    for key, values in qps.items():
        median = statistics.median(values)
        cpu_median = statistics.median(cpu[key])
        runs = " / ".join(f"{v:,.0f}" for v in values)
        print(f"| {key} | {median:,.0f} | {runs} | {cpu_median:.1f} |")
        table[key] = {"qps": values, "qps_median": median, "cpu_us_per_query": cpu[key]}
    out = args.out or RESULTS / f"{datetime.date.today().isoformat()}-scaling.json"
    out.write_text(
        json.dumps(
            {
                "command": "python -m bench.scaling " + " ".join(sys.argv[1:]),
                "cores": os.cpu_count(),
                "duration": args.duration,
                "results": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
