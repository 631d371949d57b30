"""The backend: knotd, authoritative for ``bench.test``, in a temporary directory.

knotd answers every ``<anything>.bench.test A`` from a wildcard (TTL 3600) with one worker
per protocol, pinned with dnsperf on the load core.  Its per-protocol request counters
(``mod-stats``) tell how many queries reached it, which is how the benchmark checks that a
cache-hit run really hits and a cache-miss run really misses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .procs import BenchError, Pinning, ProcessSet, Running, free_port, wait_until_answering

CONFIGS = Path(__file__).parent / "configs"
ZONE = "bench.test"
PROBE_NAME = "probe.bench.test."

_COUNTER = re.compile(r"^mod-stats\.request-protocol\[(\w+)\]\s*=\s*(\d+)\s*$", re.MULTILINE)


@dataclass
class Knot:
    """A running knotd and what is needed to query its counters."""

    host: str
    port: int
    conf: Path
    knotc: str
    running: Running

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def queries_received(self) -> int:
        """Queries received so far, all protocols (UDP and TCP, IPv4 and IPv6)."""
        argv = [self.knotc, "-c", str(self.conf), "stats", "mod-stats.request-protocol"]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"reading knotd's counters failed: {exc}") from exc
        if done.returncode != 0:
            why = done.stderr.strip() or done.stdout.strip()
            raise BenchError(f"reading knotd's counters failed: {why}")
        return sum(int(n) for _, n in _COUNTER.findall(done.stdout))


def start_knot(
    processes: ProcessSet,
    pinning: Pinning,
    workdir: Path,
    *,
    knotd: str,
    knotc: str,
    host: str = "127.0.0.1",
) -> Knot:
    """Write knotd's configuration and zone under ``workdir``, start it, wait for answers."""
    base = workdir / "knot"
    rundir, storage, zonedir = base / "run", base / "db", base / "zones"
    for directory in (rundir, storage, zonedir):
        directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONFIGS / f"{ZONE}.zone", zonedir / f"{ZONE}.zone")
    port = free_port(host)
    conf = base / "knot.conf"
    conf.write_text(
        Template((CONFIGS / "knot.conf").read_text()).substitute(
            RUNDIR=rundir, STORAGE=storage, ZONEDIR=zonedir, ADDRESS=host, PORT=port
        )
    )
    running = processes.start(
        "knotd", pinning.load([knotd, "-c", str(conf)]), log_path=base / "knotd.log"
    )
    wait_until_answering(running, host, port, PROBE_NAME)
    return Knot(host, port, conf, knotc, running)
