"""Running dnsperf and reading the statistics it prints at the end of a run.

dnsperf stops sending at the time limit (``-l``) and then waits for the queries still in
flight, up to its timeout (``-t``); a query with no answer by then is counted as lost.  So
"lost" means really unanswered, not merely cut off by the end of the run.

Latency percentiles come from dnsperf's verbose mode (``-v``), which prints one line per
answer with its latency, to the microsecond::

    > NOERROR h42.bench.test A 0.000145

(the answer's RCODE, the query file's line, seconds), ``> T <line>`` for a query that timed
out and ``> I <line>`` for one still in flight when dnsperf was interrupted.  dnsperf 2.10
prints no latency histogram, and ``-v`` works in every version.  The output is read line by
line into a histogram of whole microseconds (:class:`Latencies`), exact and small whatever
the number of queries; the log file then keeps everything but those lines.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import resource
import subprocess
import time
from collections import Counter, deque
from collections.abc import Iterable
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
    rate: int | None = None  # -Q: queries per second at most (None: as fast as answered)

    def argv(self) -> list[str]:
        argv = [
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
        if self.rate is not None:
            argv += ["-Q", str(self.rate)]
        return argv


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
    #: Latency percentiles ("p99" -> seconds): from the per-query latencies of a verbose
    #: run (``-v``), else from dnsperf's histogram (2.11+, ``-O latency-histogram``).
    percentiles: dict[str, float] = field(default_factory=dict)
    #: A verbose run's per-query figures (:meth:`Latencies.summary`); None otherwise.
    per_query: dict[str, float] | None = None
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

# dnsperf -v: "> RCODE <query line> S.UUUUUU" per answer (the query line is the data file's,
# spaces and all), "> T <query line>" per timeout, "> I <query line>" per query interrupted.
_ANSWER = re.compile(r"^> (\S+) (.+) (\d+)\.(\d{6})$")
_UNANSWERED = re.compile(r"^> ([TI]) ")
#: Lines of dnsperf's output other than the per-query ones kept for parsing and in the log
#: (its statistics are the last twenty or so; warnings could be many).
KEPT_LINES = 2000


def percentile_key(pct: float) -> str:
    return f"p{pct:g}"


@dataclass
class Latencies:
    """Per-query latencies from dnsperf -v: a histogram of whole microseconds.

    dnsperf measures and prints microseconds, so the histogram loses nothing, and its size
    is the number of distinct values (hundreds), not the number of queries.
    """

    counts: Counter[int] = field(default_factory=Counter)
    rcodes: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    interrupted: int = 0
    #: Lines that started like a per-query line but did not parse.
    unparsed: int = 0

    def add_line(self, line: str) -> bool:
        """Count one line of dnsperf's output; False if it is not a per-query line."""
        if not line.startswith("> "):
            return False
        line = line.rstrip("\r\n")
        answer = _ANSWER.match(line)
        if answer is not None and answer.group(1) not in ("T", "I"):
            self.counts[int(answer.group(3)) * 1_000_000 + int(answer.group(4))] += 1
            self.rcodes[answer.group(1)] += 1
            return True
        unanswered = _UNANSWERED.match(line)
        if unanswered is not None:
            if unanswered.group(1) == "T":
                self.timeouts += 1
            else:
                self.interrupted += 1
            return True
        self.unparsed += 1
        return True

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def percentile(self, pct: float) -> int | None:
        """The nearest-rank percentile in µs: the smallest latency that at least ``pct`` %
        of the answers do not exceed (None with no answer)."""
        total = self.count
        if not total:
            return None
        wanted = max(1, math.ceil(total * pct / 100.0 - 1e-9))
        seen = 0
        for micros in sorted(self.counts):
            seen += self.counts[micros]
            if seen >= wanted:
                return micros
        return max(self.counts)  # not reached: seen ends at total >= wanted

    def percentiles(self) -> dict[str, float]:
        """Percentile name ("p50") -> seconds, for :data:`PERCENTILES` (none without answers)."""
        found = {percentile_key(p): self.percentile(p) for p in PERCENTILES}
        return {k: v / 1e6 for k, v in found.items() if v is not None}

    def summary(self) -> dict[str, float]:
        """Answers, timeouts and the latency figures in µs, for the result files."""
        total = self.count
        figures: dict[str, float] = {
            "answers": total,
            "timeouts": self.timeouts,
            "interrupted": self.interrupted,
            "unparsed": self.unparsed,
        }
        if total:
            figures["min_us"] = min(self.counts)
            figures["mean_us"] = round(sum(k * n for k, n in self.counts.items()) / total, 1)
            for pct in PERCENTILES:
                figures[f"{percentile_key(pct)}_us"] = self.percentile(pct) or 0
            figures["max_us"] = max(self.counts)
        return figures


def read_output(lines: Iterable[str]) -> tuple[str, Latencies]:
    """Split dnsperf's output into its per-query latencies and the rest (as text).

    Reads one line at a time: a verbose run's millions of lines are never held at once.  Of
    the other lines the last :data:`KEPT_LINES` are kept, which always include the
    statistics at the end.
    """
    latencies = Latencies()
    kept: deque[str] = deque(maxlen=KEPT_LINES)
    for line in lines:
        if not latencies.add_line(line):
            kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept), latencies


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
    verbose: bool = False,
) -> DnsperfResult:
    """Run dnsperf once against ``host:port`` and return its statistics.

    With ``warm``, send the query file once, a few queries at a time, and stop: that is
    how a cache is filled before a measured run.  With ``verbose`` (``-v``), the
    percentiles come from the latency of every answer, and the log file is rewritten
    without the per-query lines once they are counted.
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
    if verbose:
        argv += ["-v"]
    started = time.monotonic()
    running = processes.start("dnsperf", pinning.load(argv), log_path=log_path)
    # The run stops by itself: the time limit, plus the wait for late answers, plus slack.
    limit = (0.0 if warm else options.duration) + options.timeout + 30.0
    try:
        status, usage = _wait(running.popen, limit)
    finally:
        processes.stop(running)
    with open(log_path, encoding="utf-8", errors="replace") as log:
        output, latencies = read_output(log)
    if verbose:
        # A full-load verbose run writes tens of megabytes: the per-query lines are counted.
        log_path.write_text(output, encoding="utf-8")
    if status != 0:
        raise DnsperfError(f"dnsperf exited with status {status}:\n{output[-2000:]}")
    result = parse(output)
    if verbose:
        result = dataclasses.replace(
            result, percentiles=latencies.percentiles(), per_query=latencies.summary()
        )
    return dataclasses.replace(
        result,
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
