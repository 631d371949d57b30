"""One measured run: a fresh proxy, warmed if the scenario says so, loaded by dnsperf.

Around the dnsperf run the benchmark reads the proxy's and the backend's CPU time
(/proc/PID/stat) and the backend's query counter, so that a run reports, besides dnsperf's
figures, the proxy's CPU time per answered query, how busy each core was, and how many
answers came from the cache.  Every run starts its own proxy process, so runs do not share
a cache and a cache-miss run never meets a name cached by an earlier run.

A latency run (:class:`LightLoad`) is the same with another load: the fresh proxy is first
sent a warm-up file, then dnsperf sends at a fixed light rate (``-Q``) in verbose mode
(``-v``), and the percentiles come from every answer's latency.  It is kept apart from the
throughput runs because printing a line per query costs dnsperf CPU time, which at full
load is taken from the load core and lowers the queries per second measured.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import dnsperf
from .backend import Knot
from .component import ASYNC_TIMEOUT_MS, Component, async_figures, start_component
from .dnsperf import DnsperfResult, LoadOptions
from .procs import Pinning, ProcessSet, Running, core_busy, core_times, cpu_seconds, cpu_split
from .proxies import Proxy, start_proxy
from .scenarios import Expect, Scenario

DIRECT = "knotd-direct"  # the target name of a baseline run straight to the backend

#: Above this share of one core, the load side (dnsperf and knotd) may be what limits a run.
LOAD_CORE_BUSY = 0.90
#: Above this share of a pinned core used by programs other than the benchmark's, the
#: machine was not quiet enough for the figures to be compared with another run's.
OTHER_WORK = 0.10


@dataclass(frozen=True)
class LightLoad:
    """How latency is measured: dnsperf at a fixed rate, every answer's latency (``-v``)."""

    options: LoadOptions  # with ``rate`` set
    #: Sent to a fresh proxy before measuring, a few queries at a time, so that the first
    #: measured queries do not meet code never run yet (names in no other query file).
    warmup_file: Path
    warmup_lines: int

    @property
    def rate(self) -> int:
        return self.options.rate or 0

    def argv(self) -> list[str]:
        return [*self.options.argv(), "-v"]


@dataclass
class Measurement:
    """One run of one target (a proxy, or the backend directly) in one scenario.

    A throughput run loads the target as fast as it answers; a latency run (``rate`` set)
    sends at that fixed light rate and measures every answer's latency.
    """

    target: str
    run: int
    result: DnsperfResult
    query_file_lines: int
    proxy_cpu_seconds: float | None
    backend_cpu_seconds: float
    backend_queries: int
    proxy_exit_status: int | None = None
    #: How busy each pinned core was with anything at all (ours and other programs'):
    #: the difference from our own processes' share is other work on the machine.
    load_core_total_busy: float | None = None
    proxy_core_total_busy: float | None = None
    #: The async scenario's external component: its CPU time during the run (it shares the
    #: load core) and the counters of both sides (``component.async_figures``).
    component_cpu_seconds: float | None = None
    async_counters: dict[str, int | None] | None = None
    notes: list[str] = field(default_factory=list)
    #: A latency run's fixed rate (dnsperf -Q); None for a throughput run.
    rate: int | None = None
    #: The system (kernel) part of ``proxy_cpu_seconds``.
    proxy_system_cpu_seconds: float | None = None

    @property
    def is_latency_run(self) -> bool:
        return self.rate is not None

    @property
    def label(self) -> str:
        return "latency run" if self.is_latency_run else f"run {self.run}"

    def latency_us(self, key: str) -> float | None:
        """A percentile ("p50", "p99", "p99.9") of the run, in µs, if it was measured."""
        exact = (self.result.per_query or {}).get(f"{key}_us")
        if exact is not None:
            return exact
        seconds = self.result.percentiles.get(key)
        return None if seconds is None else round(seconds * 1e6, 1)

    @property
    def seconds(self) -> float:
        return self.result.run_time or 1e-9

    @property
    def cpu_us_per_query(self) -> float | None:
        if self.proxy_cpu_seconds is None or not self.result.completed:
            return None
        return self.proxy_cpu_seconds / self.result.completed * 1e6

    @property
    def system_cpu_us_per_query(self) -> float | None:
        """The kernel's part of ``cpu_us_per_query`` (sockets, loopback delivery)."""
        if self.proxy_system_cpu_seconds is None or not self.result.completed:
            return None
        return self.proxy_system_cpu_seconds / self.result.completed * 1e6

    @property
    def proxy_core_busy(self) -> float | None:
        """The proxy's CPU time over the run's wall time: 1.0 is one core fully used."""
        if self.proxy_cpu_seconds is None:
            return None
        return self.proxy_cpu_seconds / (self.result.wall_seconds or self.seconds)

    @property
    def load_core_busy(self) -> float:
        """dnsperf's and knotd's CPU time (and the async component's) over dnsperf's
        lifetime (they share one core)."""
        wall = self.result.wall_seconds or self.seconds
        ours = self.result.cpu_seconds + self.backend_cpu_seconds
        return (ours + (self.component_cpu_seconds or 0.0)) / wall

    @property
    def component_cpu_us_per_query(self) -> float | None:
        if self.component_cpu_seconds is None or not self.result.completed:
            return None
        return self.component_cpu_seconds / self.result.completed * 1e6

    @property
    def cache_hit_ratio(self) -> float | None:
        """Answers that did not reach the backend, over answers; None for direct runs."""
        if self.target == DIRECT or not self.result.completed:
            return None
        forwarded = min(self.backend_queries, self.result.completed)
        return 1.0 - forwarded / self.result.completed

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "run": self.run,
            "rate": self.rate,
            "dnsperf": self.result.as_dict(),
            "query_file_lines": self.query_file_lines,
            "proxy_cpu_seconds": self.proxy_cpu_seconds,
            "backend_cpu_seconds": self.backend_cpu_seconds,
            "backend_queries": self.backend_queries,
            "proxy_exit_status": self.proxy_exit_status,
            "cpu_us_per_query": self.cpu_us_per_query,
            "system_cpu_us_per_query": self.system_cpu_us_per_query,
            "proxy_core_busy": self.proxy_core_busy,
            "load_core_busy": self.load_core_busy,
            "cache_hit_ratio": self.cache_hit_ratio,
            "load_core_total_busy": self.load_core_total_busy,
            "proxy_core_total_busy": self.proxy_core_total_busy,
            "component_cpu_seconds": self.component_cpu_seconds,
            "component_cpu_us_per_query": self.component_cpu_us_per_query,
            "async": self.async_counters,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Bench:
    """What every run of a benchmark shares: processes, pinning, backend, load, programs."""

    processes: ProcessSet
    pinning: Pinning
    knot: Knot
    options: LoadOptions
    paths: dict[str, str]
    histogram: bool
    workdir: Path
    #: dnsperf -v in the throughput runs too (``--latency-at-load``): percentiles at full
    #: load, at the price of dnsperf's CPU time for a line per query.
    verbose_at_load: bool = False

    def _dnsperf(
        self,
        scenario: Scenario,
        port: int,
        query_file: Path,
        label: str,
        light: LightLoad | None = None,
    ) -> tuple[DnsperfResult, float | None, float | None]:
        """A measured dnsperf run, and how busy the load and proxy cores were meanwhile."""
        before = core_times()
        result = dnsperf.run(
            self.paths["dnsperf"],
            self.processes,
            self.pinning,
            host="127.0.0.1",
            port=port,
            query_file=query_file,
            options=light.options if light is not None else self.options,
            log_path=self.workdir / f"{label}.dnsperf.log",
            transport=scenario.transport,
            histogram=self.histogram and light is None,
            verbose=light is not None or self.verbose_at_load,
        )
        after = core_times()
        return (
            result,
            core_busy(before, after, self.pinning.load_core),
            core_busy(before, after, self.pinning.proxy_core),
        )


def measure_proxy(
    bench: Bench,
    proxy: Proxy,
    scenario: Scenario,
    query_file: Path,
    query_lines: int,
    run: int,
    light: LightLoad | None = None,
) -> Measurement:
    """A throughput run of ``proxy`` or, with ``light``, a latency run."""
    label = f"{scenario.name}-{proxy.name}-{'latency' if light else run}"
    component: Component | None = None
    if scenario.component:
        component = start_component(bench.processes, bench.pinning, bench.workdir, label)
    started = start_proxy(
        bench.processes,
        bench.pinning,
        proxy,
        scenario,
        backend=bench.knot.address,
        workdir=bench.workdir,
        label=label,
        paths=bench.paths,
        extra=component.substitutions() if component else None,
    )
    status: int | None = None
    component_cpu: float | None = None
    proxy_counters: dict[str, int] | None = None
    try:
        notes: list[str] = []

        def warm_up(path: Path, lines: int, log_name: str) -> None:
            """Send ``path`` once (``-n 1``) before measuring; note what went unanswered."""
            warm = dnsperf.run(
                bench.paths["dnsperf"],
                bench.processes,
                bench.pinning,
                host=started.host,
                port=started.port,
                query_file=path,
                options=bench.options,
                log_path=bench.workdir / f"{label}.{log_name}.log",
                transport=scenario.transport,
                warm=True,
            )
            if warm.completed != lines:
                notes.append(f"warm-up answered {warm.completed} of {lines} queries")

        if light is not None:
            warm_up(light.warmup_file, light.warmup_lines, "warm-up")
        if scenario.warm:
            warm_up(query_file, query_lines, "warm")
        pid = started.running.pid
        proxy_cpu = cpu_seconds(pid)
        proxy_system = cpu_split(pid)[1]
        knot_cpu = cpu_seconds(bench.knot.running.pid)
        knot_queries = bench.knot.queries_received()
        if component is not None:
            component_cpu = cpu_seconds(component.running.pid)
        result, load_total, proxy_total = bench._dnsperf(
            scenario, started.port, query_file, label, light
        )
        proxy_cpu = cpu_seconds(pid) - proxy_cpu
        proxy_system = cpu_split(pid)[1] - proxy_system
        knot_cpu = cpu_seconds(bench.knot.running.pid) - knot_cpu
        knot_queries = bench.knot.queries_received() - knot_queries
        if component is not None:
            component_cpu = cpu_seconds(component.running.pid) - (component_cpu or 0.0)
            proxy_counters = _settled_counters(component, started.running)
    finally:
        status = bench.processes.stop(started.running)
        if component is not None:
            bench.processes.stop(component.running)
    measurement = Measurement(
        proxy.name,
        run,
        result,
        query_lines,
        proxy_cpu,
        knot_cpu,
        knot_queries,
        proxy_exit_status=status,
        load_core_total_busy=load_total,
        proxy_core_total_busy=proxy_total,
        component_cpu_seconds=component_cpu,
        notes=notes,
        rate=light.rate if light is not None else None,
        proxy_system_cpu_seconds=proxy_system,
    )
    if component is not None:
        measurement.async_counters = async_figures(proxy_counters, component.responder_counters())
    measurement.notes.extend(check(measurement, scenario))
    return measurement


def _settled_counters(component: Component, proxy: Running) -> dict[str, int] | None:
    """The configuration's counters once no query is held any more.

    dnsperf has already waited for late answers; a query still held now (its answer lost)
    ends at its timeout, so if the counters show one, they are read again after it.
    """
    counters = component.proxy_counters(proxy)
    if counters is not None and counters["suspended"] > counters["resumed"]:
        time.sleep(ASYNC_TIMEOUT_MS / 1000 + 0.2)
        counters = component.proxy_counters(proxy) or counters
    return counters


def measure_direct(
    bench: Bench,
    scenario: Scenario,
    query_file: Path,
    query_lines: int,
    run: int,
    light: LightLoad | None = None,
) -> Measurement:
    """dnsperf straight to knotd: the most the load core allows through a proxy on misses,
    or, with ``light``, the backend's own latency, which a proxy's is compared with."""
    knot_cpu = cpu_seconds(bench.knot.running.pid)
    knot_queries = bench.knot.queries_received()
    label = f"{scenario.name}-direct-{'latency' if light else run}"
    result, load_total, _ = bench._dnsperf(scenario, bench.knot.port, query_file, label, light)
    knot_cpu = cpu_seconds(bench.knot.running.pid) - knot_cpu
    knot_queries = bench.knot.queries_received() - knot_queries
    measurement = Measurement(
        DIRECT,
        run,
        result,
        query_lines,
        None,
        knot_cpu,
        knot_queries,
        load_core_total_busy=load_total,
        rate=light.rate if light is not None else None,
    )
    measurement.notes.extend(check(measurement, scenario))
    return measurement


def check(m: Measurement, scenario: Scenario | None) -> list[str]:
    """What makes a run's figures mean something else than the scenario intends."""
    notes: list[str] = []
    r = m.result
    others = {code: n for code, n in r.rcodes.items() if code != "NOERROR"}
    if others:
        notes.append(
            "answers other than NOERROR: " + ", ".join(f"{c} {n}" for c, n in others.items())
        )
    if scenario is not None and scenario.expect is Expect.MISSES and r.sent > m.query_file_lines:
        notes.append(
            f"query file exhausted ({r.sent} sent, {m.query_file_lines} names): some repeats hit"
        )
    hits = m.cache_hit_ratio
    if scenario is not None and hits is not None:
        if scenario.expect is Expect.HITS and hits < 0.99:
            notes.append(f"only {hits:.1%} of answers came from the cache (expected all)")
        elif scenario.expect is not Expect.HITS and hits > 0.01:
            notes.append(f"{hits:.1%} of answers did not reach the backend (expected none)")
    if m.is_latency_run:
        notes.extend(_check_latency(m))
    if m.load_core_busy >= LOAD_CORE_BUSY:
        notes.append(
            f"load core {m.load_core_busy:.0%} busy (dnsperf + knotd): the load side may be "
            "the limit, not the proxy"
        )
    for core, ours, total in (
        ("load", m.load_core_busy, m.load_core_total_busy),
        ("proxy", m.proxy_core_busy, m.proxy_core_total_busy),
    ):
        if ours is not None and total is not None and total - ours >= OTHER_WORK:
            notes.append(
                f"other processes used about {total - ours:.0%} of the {core} core during the run"
            )
    # dnsdist does not catch SIGTERM: dying of it is its normal way to stop.
    if m.proxy_exit_status not in (None, 0, -signal.SIGTERM):
        notes.append(f"proxy exited with status {m.proxy_exit_status}")
    a = m.async_counters
    if a is not None:
        missing = [k for k in ("suspended", "responder_received") if a.get(k) is None]
        if missing:
            notes.append("async counters missing (" + ", ".join(missing) + ")")
        lost_on_the_way = {
            "queries not suspended (collision or bound)": a.get("not_suspended"),
            "held queries not sent to the component (its queue full)": a.get("triodist_unsent"),
            "answers the component could not send": a.get("responder_unsent"),
            "held queries that reached their timeout": a.get("timeouts"),
        }
        for what, count in lost_on_the_way.items():
            if count:
                notes.append(f"{count} {what}")
    return notes


#: A latency run that sent fewer queries per second than this share of its rate was slowed
#: by something (the load core, or answers slower than -q queries in flight allow).
RATE_SHORTFALL = 0.95


def _check_latency(m: Measurement) -> list[str]:
    """What makes a latency run's percentiles mean less than they seem to."""
    notes: list[str] = []
    r = m.result
    rate = m.rate or 0
    if r.lost:
        notes.append(f"{r.lost} queries unanswered within the timeout, left out of the percentiles")
    sent_rate = r.sent / r.run_time if r.run_time else 0.0
    if rate and sent_rate < rate * RATE_SHORTFALL:
        notes.append(f"dnsperf sent {sent_rate:,.0f} queries per second, not the {rate:,} asked")
    per_query = r.per_query or {}
    if per_query.get("answers", 0) != r.completed:
        notes.append(
            f"dnsperf -v printed {per_query.get('answers', 0):,.0f} latencies for "
            f"{r.completed:,} answers"
        )
    if per_query.get("unparsed"):
        notes.append(f"{per_query['unparsed']:.0f} per-query lines of dnsperf -v not understood")
    return notes
