"""Running dnsperf and reading the statistics it prints at the end of a run.

dnsperf stops sending at the time limit (``-l``) and then waits for the queries still in
flight, up to its timeout (``-t``); a query with no answer by then is counted as lost.  So
"lost" means really unanswered, not merely cut off by the end of the run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .procs import BenchError, Pinning, ProcessSet


class DnsperfError(BenchError):
    """dnsperf failed or printed no statistics."""


@dataclass(frozen=True)
class LoadOptions:
    """How dnsperf loads the server: the same for every proxy and scenario of a run."""

    duration: float = 10.0  # -l: seconds of sending
    clients: int = 1  # -c: client sockets
    threads: int = 1  # -T: sending/receiving thread pairs
    outstanding: int = 100  # -q: queries in flight at most
    timeout: float = 1.0  # -t: an answer later than this is a lost query

    def argv(self) -> list[str]:
        return [
            "-l",
            f"{self.duration:g}",
            "-c",
            str(self.clients),
            "-T",
            str(self.threads),
            "-q",
            str(self.outstanding),
            "-t",
            f"{self.timeout:g}",
        ]


@dataclass(frozen=True)
class DnsperfResult:
    """One dnsperf run's statistics, as dnsperf printed them (latencies in seconds)."""

    sent: int
    completed: int
    lost: int
    qps: float
    run_time: float
    latency_avg: float
    latency_min: float
    latency_max: float
    latency_stddev: float | None
    rcodes: dict[str, int] = field(default_factory=dict)
    #: Latency percentiles ("p99" -> seconds) when dnsperf prints a histogram (2.11+).
    percentiles: dict[str, float] = field(default_factory=dict)
    #: CPU time dnsperf itself used (user + system), to see whether the load side saturated.
    cpu_seconds: float = 0.0
    #: dnsperf's lifetime, from start to exit (its run time plus start-up and the wait for
    #: late answers).
    wall_seconds: float = 0.0

    @property
    def lost_ratio(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_INT = r"(\d+)"
_NUM = r"([0-9.]+(?:[eE][-+]?\d+)?)"
_FIELDS = {
    "sent": re.compile(rf"Queries sent:\s+{_INT}"),
    "completed": re.compile(rf"Queries completed:\s+{_INT}"),
    "lost": re.compile(rf"Queries lost:\s+{_INT}"),
    "qps": re.compile(rf"Queries per second:\s+{_NUM}"),
    "run_time": re.compile(rf"Run time \(s\):\s+{_NUM}"),
}
_LATENCY = re.compile(rf"Average Latency \(s\):\s+{_NUM}\s+\(min\s+{_NUM},\s+max\s+{_NUM}\)")
_STDDEV = re.compile(rf"Latency StdDev \(s\):\s+{_NUM}")
_RCODES = re.compile(r"Response codes:\s+(.*)")
_RCODE_ITEM = re.compile(r"([A-Z][A-Z0-9]*)\s+(\d+)\s+\(")
# dnsperf 2.11 and later print a latency histogram with "-O latency-histogram": a header
# line, then one "  low - high:  count" line per non-empty bucket (seconds).
_HISTOGRAM_HEAD = re.compile(r"Latency bucket \(s\):\s+answer count")
_BUCKET = re.compile(rf"^\s+{_NUM}\s+-\s+{_NUM}:\s+{_INT}\s*$")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def supports_histogram(dnsperf: str) -> bool:
    """Whether this dnsperf accepts ``-O latency-histogram`` (2.11 and later)."""
    try:
        done = subprocess.run(
            [dnsperf, "-H"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "latency-histogram" in done.stdout + done.stderr


def percentiles(output: str) -> dict[str, float]:
    """Latency percentiles from dnsperf's histogram, if it printed one ("p99" -> seconds).

    Each percentile is the upper bound of the bucket that reaches it: a bound, not an
    interpolation (the buckets are about 3 % wide).
    """
    lines = output.splitlines()
    buckets: list[tuple[float, int]] = []
    for index, line in enumerate(lines):
        if _HISTOGRAM_HEAD.search(line):
            for bucket_line in lines[index + 1 :]:
                match = _BUCKET.match(bucket_line)
                if match is None:
                    break
                buckets.append((float(match.group(2)), int(match.group(3))))
            break
    total = sum(count for _, count in buckets)
    if not total:
        return {}
    found: dict[str, float] = {}
    for pct in PERCENTILES:
        wanted = total * pct / 100.0
        seen = 0
        for high, count in sorted(buckets):
            seen += count
            if seen >= wanted:
                found[f"p{pct:g}"] = high
                break
    return found


def parse(output: str) -> DnsperfResult:
    """The statistics from dnsperf's output; :class:`DnsperfError` if they are missing."""
    values: dict[str, str] = {}
    for name, pattern in _FIELDS.items():
        match = pattern.search(output)
        if match is None:
            raise DnsperfError(f"no '{name}' in dnsperf's output:\n{output[-2000:]}")
        values[name] = match.group(1)
    latency = _LATENCY.search(output)
    stddev = _STDDEV.search(output)
    rcodes: dict[str, int] = {}
    rcode_line = _RCODES.search(output)
    if rcode_line is not None:
        rcodes = {code: int(n) for code, n in _RCODE_ITEM.findall(rcode_line.group(1))}
    return DnsperfResult(
        sent=int(values["sent"]),
        completed=int(values["completed"]),
        lost=int(values["lost"]),
        qps=float(values["qps"]),
        run_time=float(values["run_time"]),
        # With no answer at all dnsperf prints no latency line.
        latency_avg=float(latency.group(1)) if latency else 0.0,
        latency_min=float(latency.group(2)) if latency else 0.0,
        latency_max=float(latency.group(3)) if latency else 0.0,
        latency_stddev=float(stddev.group(1)) if stddev else None,
        rcodes=rcodes,
        percentiles=percentiles(output),
    )


def run(
    dnsperf: str,
    processes: ProcessSet,
    pinning: Pinning,
    *,
    host: str,
    port: int,
    query_file: Path,
    options: LoadOptions,
    log_path: Path,
    transport: str = "udp",
    warm: bool = False,
    histogram: bool = False,
) -> DnsperfResult:
    """Run dnsperf once against ``host:port`` and return its statistics.

    With ``warm``, send the query file once, a few queries at a time, and stop: that is
    how a cache is filled before a measured run.
    """
    argv = [dnsperf, "-m", transport, "-s", host, "-p", str(port), "-d", str(query_file)]
    if warm:
        argv += ["-n", "1", "-c", "1", "-T", "1", "-q", "10", "-t", "2"]
    else:
        argv += options.argv()
    # Per-query timeout messages would flood the log when a proxy drops queries.
    argv += ["-O", "suppress=timeouts"]
    if histogram:
        argv += ["-O", "latency-histogram"]
    started = time.monotonic()
    running = processes.start("dnsperf", pinning.load(argv), log_path=log_path)
    # The run stops by itself: the time limit, plus the wait for late answers, plus slack.
    limit = (0.0 if warm else options.duration) + options.timeout + 30.0
    try:
        status, usage = _wait(running.popen, limit)
    finally:
        processes.stop(running)
    output = log_path.read_text(errors="replace")
    if status != 0:
        raise DnsperfError(f"dnsperf exited with status {status}:\n{output[-2000:]}")
    return dataclasses.replace(
        parse(output),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=time.monotonic() - started,
    )


def _wait(popen: subprocess.Popen[bytes], limit: float) -> tuple[int, resource.struct_rusage]:
    """Wait for dnsperf to exit (at most ``limit`` seconds); its status and resource usage.

    ``os.wait4`` reaps the process and returns its own CPU time; Popen is then told the
    status so that it does not wait again.
    """
    deadline = time.monotonic() + limit
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid == popen.pid:
            popen.returncode = os.waitstatus_to_exitcode(status)
            return popen.returncode, usage
        if time.monotonic() > deadline:
            raise DnsperfError(f"dnsperf still running after {limit:.0f} s")
        time.sleep(0.02)
