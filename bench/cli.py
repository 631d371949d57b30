"""``python -m bench``: the command line and the order of the runs.

For each scenario, each run starts every proxy in turn (the order alternates from run to
run, so that a drift in the machine's load weighs on both), and the figures reported are the
medians over the runs.  knotd is started once and serves every run.  Then, unless
``--no-latency``, one latency run per target at a light fixed rate: knotd directly, then each
proxy (a fresh one), whose difference is the latency the proxy adds.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from . import chart, dnsperf
from .backend import start_knot
from .dnsperf import LoadOptions
from .measure import DIRECT, Bench, LightLoad, Measurement, measure_direct, measure_proxy
from .procs import BenchError, Pinning, ProcessSet
from .proxies import PROXIES, Proxy
from .report import (
    ASYNC_HEADERS,
    SUBJECT,
    Context,
    ScenarioReport,
    Summary,
    async_rows,
    comparison,
    comparison_text,
    headers,
    latency_legend,
    rows,
    summarise,
    text_table,
)
from .scenarios import DEFAULT_SCENARIOS, SCENARIOS, Scenario, write_latency_warmup
from .tools import (
    DNSPERF,
    KNOTC,
    KNOTD,
    TASKSET,
    MissingTools,
    find,
    load_average,
    machine,
    require,
    versions,
)

RESULTS = Path(__file__).parent / "results"
DEFAULT_DURATION = 10.0
DEFAULT_RUNS = 3
STARTUP_ALLOWANCE = 2.0  # seconds per proxy run for starting, warming and stopping
#: The latency runs: light enough that a query rarely meets another in the proxy (one every
#: 500 µs), many enough answers for a p99.9 (10,000).
DEFAULT_LATENCY_RATE = 2000
DEFAULT_LATENCY_DURATION = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Queries per second of triodist and dnsdist, side by side, per scenario.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        help=f"seconds of load per run (default {DEFAULT_DURATION:g})",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=DEFAULT_RUNS,
        help=f"runs per proxy and scenario, medians reported (default {DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help=f"a scenario to run (repeatable; default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--only", choices=sorted(PROXIES), help="measure one proxy only (no ratio then)"
    )
    parser.add_argument(
        "--outstanding",
        type=int,
        default=100,
        help="queries in flight at most (dnsperf -q; default 100)",
    )
    parser.add_argument(
        "--clients", type=int, default=1, help="client sockets (dnsperf -c; default 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="dnsperf threads (dnsperf -T; default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        help="seconds after which a query counts as lost (dnsperf -t; default 1)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the run straight to the backend in the cache-miss scenario",
    )
    parser.add_argument(
        "--no-latency",
        action="store_true",
        help="skip the latency runs at a light fixed rate (the p50/p99 columns)",
    )
    parser.add_argument(
        "--latency-rate",
        type=int,
        default=DEFAULT_LATENCY_RATE,
        help=f"queries per second of the latency runs (dnsperf -Q; default {DEFAULT_LATENCY_RATE})",
    )
    parser.add_argument(
        "--latency-duration",
        type=float,
        default=DEFAULT_LATENCY_DURATION,
        help=f"seconds of each latency run (default {DEFAULT_LATENCY_DURATION:g})",
    )
    parser.add_argument(
        "--latency-at-load",
        action="store_true",
        help="also p50/p99 at full load: dnsperf -v in the throughput runs, which costs "
        "dnsperf CPU time and so can lower the qps measured when the load core is the limit",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"where result files go (default {RESULTS})"
    )
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turned into an exception so that the same cleanup runs as on Ctrl-C.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for scenario in SCENARIOS.values():
            default = " (default)" if scenario.name in DEFAULT_SCENARIOS else ""
            print(f"{scenario.name}{default}: {scenario.description}")
        return 0
    counts = (args.runs, args.outstanding, args.clients, args.threads, args.latency_rate)
    seconds = (args.duration, args.timeout, args.latency_duration)
    if min(seconds) <= 0 or min(counts) < 1:
        print("every number given must be positive", file=sys.stderr)
        return 2
    scenarios = _ordered([SCENARIOS[name] for name in (args.scenario or DEFAULT_SCENARIOS)])
    proxies = [PROXIES[args.only]] if args.only else [PROXIES["dnsdist"], PROXIES["triodist"]]
    if not any(_proxies_for(s, proxies) for s in scenarios):
        print(f"no scenario chosen applies to {args.only}", file=sys.stderr)
        return 2
    used = [p for p in proxies if any(p in _proxies_for(s, proxies) for s in scenarios)]

    needed = [DNSPERF, KNOTD, KNOTC, *(tool for p in used for tool in p.tools)]
    try:
        paths = require(needed)
    except MissingTools as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    taskset = find(TASKSET)
    if taskset is not None:
        paths["taskset"] = taskset
    pinning = Pinning.choose(taskset, enabled=not args.no_pin)
    options = LoadOptions(
        duration=args.duration,
        clients=args.clients,
        threads=args.threads,
        outstanding=args.outstanding,
        timeout=args.timeout,
    )

    signal.signal(signal.SIGTERM, _on_sigterm)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args, scenarios, proxies, paths, pinning, options, command)
    except KeyboardInterrupt:
        print("\ninterrupted: every process the benchmark started has been stopped")
        return 130
    except BenchError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 1


def _ordered(scenarios: Sequence[Scenario]) -> list[Scenario]:
    """The chosen scenarios, each one another is compared with moved before it."""
    first = [s for s in scenarios if s.name in {x.compare_with for x in scenarios}]
    return first + [s for s in scenarios if s not in first] if first else list(scenarios)


def _proxies_for(scenario: Scenario, proxies: Sequence[Proxy]) -> list[Proxy]:
    return [p for p in proxies if p.name in scenario.proxies]


def _estimate(
    scenarios: Sequence[Scenario], proxies: Sequence[Proxy], args: argparse.Namespace
) -> float:
    per_run = args.duration + STARTUP_ALLOWANCE
    total = 0.0
    for scenario in scenarios:
        here = len(_proxies_for(scenario, proxies))
        total += args.runs * here * per_run
        if scenario.baseline and not args.no_baseline:
            total += args.duration
        if not args.no_latency and here:
            total += here * (args.latency_duration + STARTUP_ALLOWANCE) + args.latency_duration
    return total


def _short(args: argparse.Namespace) -> bool:
    """A run shorter or with fewer repetitions than the defaults: a smoke run."""
    return (
        args.duration < DEFAULT_DURATION
        or args.runs < DEFAULT_RUNS
        or (not args.no_latency and args.latency_duration < DEFAULT_LATENCY_DURATION)
    )


def _run(
    args: argparse.Namespace,
    scenarios: Sequence[Scenario],
    proxies: Sequence[Proxy],
    paths: dict[str, str],
    pinning: Pinning,
    options: LoadOptions,
    command: str,
) -> int:
    found_versions = versions(paths)
    the_machine = machine()
    histogram = dnsperf.supports_histogram(paths["dnsperf"])
    load = " ".join(options.argv()) + (" -O latency-histogram" if histogram else "")
    if args.latency_at_load:
        load += " -v"
    # One client, one thread: a single stream of queries at the rate asked for.
    light_options = LoadOptions(
        duration=args.latency_duration,
        outstanding=args.outstanding,
        timeout=args.timeout,
        rate=args.latency_rate,
    )
    latency_load = None if args.no_latency else " ".join([*light_options.argv(), "-v"])
    print(f"triodist benchmark: {', '.join(s.name for s in scenarios)}")
    print(f"  proxies: {', '.join(p.name for p in proxies)}")
    print("  versions: " + "; ".join(found_versions.values()))
    print(f"  machine: {the_machine['cpus']} cores, {the_machine['cpu_model']}")
    print(f"  load average: {the_machine['load_average_at_start']}")
    print(f"  pinning: {pinning.describe()}")
    print(f"  dnsperf {load}")
    if latency_load is not None:
        print(f"  latency runs: dnsperf {latency_load}")
    print(f"  about {_estimate(scenarios, proxies, args):.0f} s")
    print()

    date = datetime.date.today().isoformat()
    stamp = _free_stamp(args.results, date, [s.name for s in scenarios])
    with (
        tempfile.TemporaryDirectory(prefix="triodist-bench-") as tmp,
        ProcessSet() as processes,  # leaves first: everything is stopped before tmp goes
    ):
        workdir = Path(tmp)
        knot = start_knot(processes, pinning, workdir, knotd=paths["knotd"], knotc=paths["knotc"])
        bench = Bench(
            processes,
            pinning,
            knot,
            options,
            paths,
            histogram,
            workdir,
            verbose_at_load=args.latency_at_load,
        )
        light: LightLoad | None = None
        if not args.no_latency:
            warmup = workdir / "latency-warm-up.queries"
            light = LightLoad(light_options, warmup, write_latency_warmup(warmup))
        done: dict[str, list[Summary]] = {}
        for scenario in scenarios:
            here = _proxies_for(scenario, proxies)
            if not here:
                print(f"  {scenario.name}: skipped (it is for {', '.join(scenario.proxies)} only)")
                print()
                continue
            skipped = [p.name for p in proxies if p not in here]
            if skipped:
                print(f"  {scenario.name}: {', '.join(skipped)} skipped (no configuration for it)")
            query_file = workdir / f"{scenario.name}.queries"
            lines = scenario.queries.write(query_file, args.duration)
            measurements: list[Measurement] = []
            for run in range(1, args.runs + 1):
                order = here if run % 2 else list(reversed(here))
                for proxy in order:
                    started = time.monotonic()
                    m = measure_proxy(bench, proxy, scenario, query_file, lines, run)
                    measurements.append(m)
                    _progress(scenario, m, time.monotonic() - started)
            if scenario.baseline and not args.no_baseline:
                m = measure_direct(bench, scenario, query_file, lines, 1)
                measurements.append(m)
                _progress(scenario, m, args.duration)
            latency_runs: list[Measurement] = []
            if light is not None:
                started = time.monotonic()
                m = measure_direct(bench, scenario, query_file, lines, 1, light)
                latency_runs.append(m)
                _progress(scenario, m, time.monotonic() - started)
                for proxy in here:
                    started = time.monotonic()
                    m = measure_proxy(bench, proxy, scenario, query_file, lines, 1, light)
                    latency_runs.append(m)
                    _progress(scenario, m, time.monotonic() - started)
            targets = [p.name for p in here] + (
                [DIRECT] if any(m.target == DIRECT for m in [*measurements, *latency_runs]) else []
            )
            summaries = [
                summarise(
                    scenario.name,
                    t,
                    [m for m in measurements if m.target == t],
                    [m for m in latency_runs if m.target == t],
                )
                for t in targets
            ]
            done[scenario.name] = summaries
            reference = None
            if scenario.compare_with:
                reference = next(
                    (s for s in done.get(scenario.compare_with, []) if s.target == SUBJECT), None
                )
            print()
            print(text_table(rows(summaries), headers(summaries)))
            legend = latency_legend(summaries)
            if legend is not None:
                print(f"  {legend}")
            compared = comparison(summaries, reference)
            if compared is not None:
                print(f"  {comparison_text(compared)}")
            elif scenario.compare_with:
                print(f"  not compared: run --scenario {scenario.compare_with} too")
            asyncs = async_rows(measurements)
            if asyncs:
                print()
                print(text_table(asyncs, ASYNC_HEADERS))
            for s in summaries:
                for note in s.notes:
                    print(f"  note: {s.target}, {note}")
            print()
            if not args.no_save:
                context = Context(
                    date=date,
                    kind="smoke" if _short(args) else "full",
                    command=command,
                    load=load,
                    pinning=pinning.describe(),
                    machine=the_machine,
                    versions=found_versions,
                    load_average_at_end=[round(x, 2) for x in load_average()],
                    latency_load=latency_load,
                )
                report = ScenarioReport(
                    scenario, summaries, measurements, context, reference, latency_runs
                )
                md, js = report.write(args.results, f"{stamp}-{scenario.name}")
                print(f"  written: {_shown(md)}, {_shown(js)}")
                print()
    if not args.no_save and done:
        _chart(args, done, date, stamp, the_machine, pinning, load)
    return 0


def _free_stamp(results: Path, date: str, names: list[str]) -> str:
    """The date, or ``<date>-2``, ``-3``...: a later run of the day never overwrites the
    result files of an earlier one."""
    stamp, n = date, 1
    while any((results / f"{stamp}-{name}.md").exists() for name in names):
        n += 1
        stamp = f"{date}-{n}"
    return stamp


def _chart(
    args: argparse.Namespace,
    done: dict[str, list[Summary]],
    date: str,
    stamp: str,
    the_machine: dict[str, object],
    pinning: Pinning,
    load: str,
) -> None:
    """The invocation's bar chart, next to the result files (if matplotlib is installed)."""
    if not chart.available():
        print(f"  {chart.MISSING}")
        return
    runs = f"{args.runs} run{'s' if args.runs > 1 else ''} of {args.duration:g} s, medians"
    title = f"triodist and dnsdist, {date}" + (" (short run)" if _short(args) else "")
    latency = (
        ""
        if args.no_latency
        else f"; latency: one run of {args.latency_duration:g} s at {args.latency_rate:,} qps, "
        "dnsperf -v"
    )
    subtitle = (
        f"{runs}; {the_machine['cpus']} cores, {the_machine['cpu_model']}; "
        f"{pinning.describe()}; dnsperf {load}{latency}"
    )
    path = args.results / chart.chart_name(stamp, list(done))
    chart.write(path, done, title, subtitle)
    print(f"  chart: {_shown(path)}")


def _progress(scenario: Scenario, m: Measurement, elapsed: float) -> None:
    r = m.result
    if m.is_latency_run:
        p = {k: m.latency_us(k) for k in ("p50", "p99", "p99.9")}
        shown = ", ".join(f"{k} {'-' if v is None else f'{v:.0f}'} µs" for k, v in p.items())
        print(
            f"  {scenario.name} latency {m.target}: {shown} at {m.rate:,} qps, "
            f"{r.lost} lost ({elapsed:.0f} s)",
            flush=True,
        )
        return
    cpu = "" if m.cpu_us_per_query is None else f", {m.cpu_us_per_query:.1f} µs CPU/query"
    if m.system_cpu_us_per_query is not None:
        cpu += f" ({m.system_cpu_us_per_query:.1f} system)"
    print(
        f"  {scenario.name} run {m.run} {m.target}: {r.qps:,.0f} qps, "
        f"{r.lost} lost, {r.latency_avg * 1e3:.2f} ms avg{cpu} ({elapsed:.0f} s)",
        flush=True,
    )


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
