"""One measured run: a fresh proxy, warmed if the scenario says so, loaded by dnsperf.

Around the dnsperf run the benchmark reads the proxy's and the backend's CPU time
(/proc/PID/stat) and the backend's query counter, so that a run reports, besides dnsperf's
figures, the proxy's CPU time per answered query, how busy each core was, and how many
answers came from the cache.  Every run starts its own proxy process, so runs do not share
a cache and a cache-miss run never meets a name cached by an earlier run.
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
from .procs import Pinning, ProcessSet, Running, core_busy, core_times, cpu_seconds
from .proxies import Proxy, start_proxy
from .scenarios import Expect, Scenario

DIRECT = "knotd-direct"  # the target name of a baseline run straight to the backend

#: Above this share of one core, the load side (dnsperf and knotd) may be what limits a run.
LOAD_CORE_BUSY = 0.90
#: Above this share of a pinned core used by programs other than the benchmark's, the
#: machine was not quiet enough for the figures to be compared with another run's.
OTHER_WORK = 0.10


@dataclass
class Measurement:
    """One run of one target (a proxy, or the backend directly) in one scenario."""

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

    @property
    def seconds(self) -> float:
        return self.result.run_time or 1e-9

    @property
    def cpu_us_per_query(self) -> float | None:
        if self.proxy_cpu_seconds is None or not self.result.completed:
            return None
        return self.proxy_cpu_seconds / self.result.completed * 1e6

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
            "dnsperf": self.result.as_dict(),
            "query_file_lines": self.query_file_lines,
            "proxy_cpu_seconds": self.proxy_cpu_seconds,
            "backend_cpu_seconds": self.backend_cpu_seconds,
            "backend_queries": self.backend_queries,
            "proxy_exit_status": self.proxy_exit_status,
            "cpu_us_per_query": self.cpu_us_per_query,
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

    def _dnsperf(
        self, scenario: Scenario, port: int, query_file: Path, label: str
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
            options=self.options,
            log_path=self.workdir / f"{label}.dnsperf.log",
            transport=scenario.transport,
            histogram=self.histogram,
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
) -> Measurement:
    label = f"{scenario.name}-{proxy.name}-{run}"
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
        if scenario.warm:
            warm = dnsperf.run(
                bench.paths["dnsperf"],
                bench.processes,
                bench.pinning,
                host=started.host,
                port=started.port,
                query_file=query_file,
                options=bench.options,
                log_path=bench.workdir / f"{label}.warm.log",
                transport=scenario.transport,
                warm=True,
            )
            if warm.completed != query_lines:
                notes.append(f"warm-up answered {warm.completed} of {query_lines} queries")
        pid = started.running.pid
        proxy_cpu = cpu_seconds(pid)
        knot_cpu = cpu_seconds(bench.knot.running.pid)
        knot_queries = bench.knot.queries_received()
        if component is not None:
            component_cpu = cpu_seconds(component.running.pid)
        result, load_total, proxy_total = bench._dnsperf(scenario, started.port, query_file, label)
        proxy_cpu = cpu_seconds(pid) - proxy_cpu
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
    bench: Bench, scenario: Scenario, query_file: Path, query_lines: int, run: int
) -> Measurement:
    """dnsperf straight to knotd: the most the load core allows through a proxy on misses."""
    knot_cpu = cpu_seconds(bench.knot.running.pid)
    knot_queries = bench.knot.queries_received()
    result, load_total, _ = bench._dnsperf(
        scenario, bench.knot.port, query_file, f"{scenario.name}-direct-{run}"
    )
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
