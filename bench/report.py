"""Medians over runs, the results table, and the Markdown and JSON result files.

A target's figures come from two kinds of runs: throughput runs (as fast as it answers:
qps, CPU per query, average latency under that load) and a latency run (a fixed light rate,
every answer's latency: p50, p99, p99.9).  A target with only a latency run (the backend
measured directly in a scenario without a throughput baseline) shows "-" for the rest.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .measure import DIRECT, Measurement
from .scenarios import LATENCY_WARMUP_NAMES, Scenario

REFERENCE = "dnsdist"  # the ratio column is triodist / REFERENCE
SUBJECT = "triodist"


@dataclass(frozen=True)
class Summary:
    """The median of each figure over one target's runs in one scenario."""

    scenario: str
    target: str
    runs: int
    qps: float
    lost_ratio: float
    latency_avg: float
    latency_max: float
    latency_p99: float | None
    cpu_us_per_query: float | None
    proxy_core_busy: float | None
    load_core_busy: float
    cache_hit_ratio: float | None
    notes: tuple[str, ...]
    #: The async scenario: the external component's CPU time per answer (median), and the
    #: asynchronous-processing counters summed over the runs.
    component_cpu_us_per_query: float | None = None
    async_counters: dict[str, int] | None = None
    #: Median at full load, when the throughput runs measured percentiles (dnsperf -v with
    #: ``--latency-at-load``, or dnsperf 2.11's histogram); seconds, like ``latency_p99``.
    latency_p50: float | None = None
    #: The latency run at a light fixed rate (queries per second): every answer's latency,
    #: in µs; None where it was not run.
    light_rate: int | None = None
    light_p50_us: float | None = None
    light_p90_us: float | None = None
    light_p99_us: float | None = None
    light_p999_us: float | None = None
    light_max_us: float | None = None
    light_answers: int | None = None
    light_lost: int | None = None
    #: The proxy's CPU time per answer at the light rate (higher than at full load: each
    #: query wakes the proxy up on its own).
    light_cpu_us_per_query: float | None = None
    light_cache_hit_ratio: float | None = None

    @property
    def throughput_measured(self) -> bool:
        return self.runs > 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(
    scenario: str,
    target: str,
    runs: Sequence[Measurement],
    latency_runs: Sequence[Measurement] = (),
) -> Summary:
    """The medians of ``target``'s throughput runs and of its latency runs (usually one)."""

    def med(get: Callable[[Measurement], float | None]) -> float | None:
        return _median([get(m) for m in runs])

    def light(get: Callable[[Measurement], float | None]) -> float | None:
        return _median([get(m) for m in latency_runs])

    notes: list[str] = []
    for m in [*runs, *latency_runs]:
        for note in m.notes:
            line = f"{m.label}: {note}"
            if line not in notes:
                notes.append(line)
    answers = light(lambda m: (m.result.per_query or {}).get("answers"))
    lost = light(lambda m: m.result.lost)
    return Summary(
        scenario=scenario,
        target=target,
        runs=len(runs),
        qps=med(lambda m: m.result.qps) or 0.0,
        lost_ratio=med(lambda m: m.result.lost_ratio) or 0.0,
        latency_avg=med(lambda m: m.result.latency_avg) or 0.0,
        latency_max=med(lambda m: m.result.latency_max) or 0.0,
        latency_p99=med(lambda m: m.result.percentiles.get("p99")),
        cpu_us_per_query=med(lambda m: m.cpu_us_per_query),
        proxy_core_busy=med(lambda m: m.proxy_core_busy),
        load_core_busy=med(lambda m: m.load_core_busy) or 0.0,
        cache_hit_ratio=med(lambda m: m.cache_hit_ratio),
        notes=tuple(notes),
        component_cpu_us_per_query=med(lambda m: m.component_cpu_us_per_query),
        async_counters=_summed([m.async_counters for m in runs]),
        latency_p50=med(lambda m: m.result.percentiles.get("p50")),
        light_rate=latency_runs[0].rate if latency_runs else None,
        light_p50_us=light(lambda m: m.latency_us("p50")),
        light_p90_us=light(lambda m: m.latency_us("p90")),
        light_p99_us=light(lambda m: m.latency_us("p99")),
        light_p999_us=light(lambda m: m.latency_us("p99.9")),
        light_max_us=light(lambda m: (m.result.per_query or {}).get("max_us")),
        light_answers=None if answers is None else round(answers),
        light_lost=None if lost is None else round(lost),
        light_cpu_us_per_query=light(lambda m: m.cpu_us_per_query),
        light_cache_hit_ratio=light(lambda m: m.cache_hit_ratio),
    )


def _summed(counters: Sequence[dict[str, int | None] | None]) -> dict[str, int] | None:
    present = [c for c in counters if c is not None]
    if not present:
        return None
    keys = dict.fromkeys(k for c in present for k in c)
    # The backlog is a high-water mark: its largest value, not a sum.
    return {
        k: (max if k == "responder_backlog" else sum)(c.get(k) or 0 for c in present) for k in keys
    }


def ratio(summaries: Sequence[Summary], get: Callable[[Summary], float | None]) -> float | None:
    """``get(triodist) / get(dnsdist)`` within one scenario, if both were measured."""
    by_target = {s.target: s for s in summaries}
    if SUBJECT not in by_target or REFERENCE not in by_target:
        return None
    ours, theirs = get(by_target[SUBJECT]), get(by_target[REFERENCE])
    if ours is None or not theirs:
        return None
    return ours / theirs


def comparison(summaries: Sequence[Summary], reference: Summary | None) -> dict[str, object] | None:
    """triodist in this scenario against triodist in the scenario it is compared with."""
    subject = next((s for s in summaries if s.target == SUBJECT), None)
    if subject is None or reference is None:
        return None
    cpu = (
        subject.cpu_us_per_query / reference.cpu_us_per_query
        if subject.cpu_us_per_query and reference.cpu_us_per_query
        else None
    )
    return {
        "scenario": subject.scenario,
        "compared_with": reference.scenario,
        "qps": subject.qps,
        "qps_compared": reference.qps,
        "qps_ratio": subject.qps / reference.qps if reference.qps else None,
        "cpu_us_per_query": subject.cpu_us_per_query,
        "cpu_us_per_query_compared": reference.cpu_us_per_query,
        "cpu_ratio": cpu,
        "cpu_us_added": (
            subject.cpu_us_per_query - reference.cpu_us_per_query
            if subject.cpu_us_per_query is not None and reference.cpu_us_per_query is not None
            else None
        ),
    }


def comparison_text(c: dict[str, object]) -> str:
    def f(key: str, fmt: str) -> str:
        value = c[key]
        return "-" if value is None else format(value, fmt)

    return (
        f"triodist {c['scenario']} / {c['compared_with']} (same invocation): "
        f"qps {f('qps', ',.0f')} / {f('qps_compared', ',.0f')} = {f('qps_ratio', '.3f')}; "
        f"CPU µs/query {f('cpu_us_per_query', '.1f')} / {f('cpu_us_per_query_compared', '.1f')}"
        f" = {f('cpu_ratio', '.2f')} ({f('cpu_us_added', '+.1f')} µs per query)"
    )


# --- the table ---------------------------------------------------------------------------


def added_us(
    summaries: Sequence[Summary], s: Summary, get: Callable[[Summary], float | None]
) -> float | None:
    """``get(s) - get(knotd-direct)``: the latency a proxy adds over querying the backend
    directly (negative when it answers faster, from its cache); None for the backend."""
    direct = next((x for x in summaries if x.target == DIRECT), None)
    if direct is None or s.target == DIRECT:
        return None
    ours, theirs = get(s), get(direct)
    return None if ours is None or theirs is None else ours - theirs


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


Cell = Callable[[Summary, Sequence[Summary]], str]


@dataclass(frozen=True)
class Column:
    header: str
    cell: Cell
    #: Whether the column is shown for these summaries (None: always).
    shown: Callable[[Sequence[Summary]], bool] | None = None


def _throughput(cell: Callable[[Summary], str]) -> Cell:
    """A throughput figure: "-" for a target measured in a latency run only."""
    return lambda s, _: cell(s) if s.throughput_measured else "-"


def _ratio_cell(get: Callable[[Summary], float | None], fmt: str) -> Cell:
    return lambda s, all_: _num(ratio(all_, get), fmt) if s.target == SUBJECT else ""


def _at_load(all_: Sequence[Summary]) -> bool:
    return any(s.latency_p50 is not None or s.latency_p99 is not None for s in all_)


def _light(all_: Sequence[Summary]) -> bool:
    return any(s.light_p50_us is not None for s in all_)


def _ms(value: float | None) -> str:
    return _num(None if value is None else value * 1e3, ".3f")


COLUMNS = (
    Column("scenario", lambda s, _: s.scenario),
    Column("proxy", lambda s, _: s.target),
    Column("qps", _throughput(lambda s: f"{s.qps:,.0f}")),
    Column("lost %", _throughput(lambda s: _pct(s.lost_ratio, 2))),
    Column("avg latency ms", _throughput(lambda s: f"{s.latency_avg * 1e3:.3f}")),
    Column("max latency ms", _throughput(lambda s: f"{s.latency_max * 1e3:.2f}")),
    Column("p50 ms at load", _throughput(lambda s: _ms(s.latency_p50)), _at_load),
    Column("p99 ms at load", _throughput(lambda s: _ms(s.latency_p99)), _at_load),
    Column("CPU µs/query", lambda s, _: _num(s.cpu_us_per_query, ".1f")),
    Column("proxy core", lambda s, _: _pct(s.proxy_core_busy)),
    Column("load core", _throughput(lambda s: _pct(s.load_core_busy))),
    Column("cache hits", lambda s, _: _pct(s.cache_hit_ratio, 1)),
    Column("qps t/d", _ratio_cell(lambda s: s.qps, ".3f")),
    Column("CPU/query t/d", _ratio_cell(lambda s: s.cpu_us_per_query, ".2f")),
    Column("p50 µs", lambda s, _: _num(s.light_p50_us, ",.0f"), _light),
    Column("p99 µs", lambda s, _: _num(s.light_p99_us, ",.0f"), _light),
    Column(
        "added p50 µs",
        lambda s, all_: _num(added_us(all_, s, lambda x: x.light_p50_us), "+,.0f"),
        _light,
    ),
)


def _columns(summaries: Sequence[Summary]) -> list[Column]:
    return [c for c in COLUMNS if c.shown is None or c.shown(summaries)]


def headers(summaries: Sequence[Summary]) -> list[str]:
    return [c.header for c in _columns(summaries)]


def rows(summaries: Sequence[Summary]) -> list[list[str]]:
    columns = _columns(summaries)
    return [[c.cell(s, summaries) for c in columns] for s in summaries]


def latency_legend(summaries: Sequence[Summary]) -> str | None:
    """What the latency columns are, for under the table (None without them)."""
    rate = next((s.light_rate for s in summaries if s.light_rate), None)
    if rate is None:
        return None
    text = (
        f"Latency columns: p50 / p99 µs are percentiles of every answer's latency at a light "
        f"{rate:,} queries per second, in a separate run (dnsperf -Q -v) on a fresh proxy; "
        f"added p50 is the proxy's p50 minus {DIRECT}'s, the latency it adds over querying "
        "the backend directly"
    )
    if _at_load(summaries):
        text += "; p50 / p99 ms at load come from the throughput runs (dnsperf -v)"
    return text


def text_table(table: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(r[i]) for r in [headers, *table]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        cells_widths = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in cells_widths)

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, table)])


def markdown_table(
    headers: Sequence[str], table: Sequence[Sequence[str]], text_columns: int = 2
) -> str:
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(cells) + " |" for cells in table]
    return "\n".join(out)


def run_rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    """One line per measured run, in the order they ran."""
    table = []
    for m in measurements:
        r = m.result
        table.append(
            [
                str(m.run),
                m.target,
                f"{r.qps:,.0f}",
                f"{r.sent:,}",
                f"{r.lost:,}",
                f"{r.latency_avg * 1e3:.3f}",
                _num(m.cpu_us_per_query, ".1f"),
                _pct(m.proxy_core_busy),
                _pct(m.load_core_busy),
                f"{m.backend_queries:,}",
            ]
        )
    return table


ASYNC_HEADERS = (
    "run",
    "suspended",
    "not suspended",
    "not sent to component",
    "sends refused (triodist queue full)",
    "most answers kept",
    "answers unsent",
    "resumed",
    "late answers",
    "timeouts",
    "component CPU µs/query",
)


def async_rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    """The asynchronous-processing counters of each run (runs without them are left out)."""
    keys = (
        "suspended",
        "not_suspended",
        "triodist_unsent",
        "responder_full",
        "responder_backlog",
        "responder_unsent",
        "resumed",
        "late",
        "timeouts",
    )
    table = []
    for m in measurements:
        a = m.async_counters
        if a is None:
            continue
        cells = ["-" if a.get(k) is None else f"{a[k]:,}" for k in keys]
        table.append([str(m.run), *cells, _num(m.component_cpu_us_per_query, ".1f")])
    return table


RUN_HEADERS = (
    "run",
    "target",
    "qps",
    "sent",
    "lost",
    "avg latency ms",
    "CPU µs/query",
    "proxy core",
    "load core",
    "backend queries",
)


LATENCY_HEADERS = (
    "target",
    "sent/s",
    "answers",
    "lost",
    "p50 µs",
    "p90 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
    "added p50 µs",
    "added p99 µs",
    "CPU µs/query",
    "cache hits",
)


def latency_rows(latency_runs: Sequence[Measurement]) -> list[list[str]]:
    """One line per latency run: the percentiles, and what each adds over the backend's."""
    direct = next((m for m in latency_runs if m.target == DIRECT), None)

    def added(m: Measurement, key: str) -> str:
        if direct is None or m is direct:
            return "-"
        ours, theirs = m.latency_us(key), direct.latency_us(key)
        return "-" if ours is None or theirs is None else f"{ours - theirs:+,.0f}"

    table = []
    for m in latency_runs:
        r, q = m.result, m.result.per_query or {}
        table.append(
            [
                m.target,
                f"{r.sent / r.run_time:,.0f}" if r.run_time else "-",
                f"{q.get('answers', 0):,.0f}",
                f"{r.lost:,}",
                *(_num(m.latency_us(k), ",.0f") for k in ("p50", "p90", "p99", "p99.9")),
                _num(q.get("max_us"), ",.0f"),
                added(m, "p50"),
                added(m, "p99"),
                _num(m.cpu_us_per_query, ".1f"),
                _pct(m.cache_hit_ratio, 1),
            ]
        )
    return table


def latency_added(summaries: Sequence[Summary]) -> dict[str, dict[str, float | None]]:
    """Per proxy, the latency it adds at the light rate over the backend's (µs)."""
    return {
        s.target: {
            "p50": added_us(summaries, s, lambda x: x.light_p50_us),
            "p99": added_us(summaries, s, lambda x: x.light_p99_us),
            "p99.9": added_us(summaries, s, lambda x: x.light_p999_us),
        }
        for s in summaries
        if s.target != DIRECT and s.light_p50_us is not None
    }


# --- the files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the figures of a benchmark run depend on, written with every result."""

    date: str
    #: "smoke" for runs shorter or fewer than the defaults (checks that the harness works;
    #: not figures to quote), "full" otherwise.
    kind: str
    command: str
    load: str  # the dnsperf options
    pinning: str
    machine: dict[str, object]
    versions: dict[str, str]
    load_average_at_end: list[float]
    #: The latency runs' dnsperf options (fixed rate, -v); None when they were skipped.
    latency_load: str | None = None


def config_files(scenario: Scenario) -> list[str]:
    return [f"bench/configs/{scenario.config_path(p).name}" for p in scenario.proxies]


def describe(scenario: Scenario) -> dict[str, object]:
    return {
        "name": scenario.name,
        "description": scenario.description,
        "expect": scenario.expect.value,
        "queries": scenario.queries.description,
        "warmed": scenario.warm,
        "transport": scenario.transport,
        "configs": config_files(scenario),
        "proxies": list(scenario.proxies),
        "compare_with": scenario.compare_with,
    }


@dataclass(frozen=True)
class ScenarioReport:
    """Everything written for one scenario of one benchmark run."""

    scenario: Scenario
    summaries: list[Summary]
    measurements: list[Measurement]
    context: Context
    #: triodist's summary in the scenario this one is compared with (``compare_with``).
    reference: Summary | None = None
    #: The latency runs at a light fixed rate (each target's, and the backend's).
    latency_runs: Sequence[Measurement] = ()

    def to_json(self) -> str:
        document = {
            **asdict(self.context),
            "scenario": describe(self.scenario),
            "summary": [s.as_dict() for s in self.summaries],
            "ratios_triodist_over_dnsdist": {
                "qps": ratio(self.summaries, lambda s: s.qps),
                "cpu_us_per_query": ratio(self.summaries, lambda s: s.cpu_us_per_query),
            },
            "triodist_over_compared_scenario": comparison(self.summaries, self.reference),
            "latency_added_over_backend_us": latency_added(self.summaries),
            "runs": [m.as_dict() for m in self.measurements],
            "latency_runs": [m.as_dict() for m in self.latency_runs],
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        c, s, machine = self.context, self.scenario, self.context.machine
        configs = ", ".join(f"`{path}`" for path in config_files(s))
        title = f"# Benchmark `{s.name}`, {c.date}"
        if c.kind == "smoke":
            title += " (smoke run: a check of the harness, not figures to quote)"
        lines = [
            title,
            "",
            f"{s.description[0].upper()}{s.description[1:]}. Expected: {s.expect.value}.",
            "",
            f"- command: `{c.command}`",
            f"- load: dnsperf `{c.load}`",
            *([f"- latency runs: dnsperf `{c.latency_load}`"] if c.latency_load else []),
            f"- query file: {s.queries.description}",
            f"- configurations: {configs}",
            f"- pinning: {c.pinning}",
            f"- machine: {machine['cpus']} cores ({machine['cpu_model']}), "
            f"Linux {machine['kernel']}",
            f"- load average before / after: {machine['load_average_at_start']} / "
            f"{c.load_average_at_end}",
            "- versions: " + ", ".join(f"`{v}`" for v in c.versions.values()),
            "",
            "Medians over the runs:",
            "",
            markdown_table(headers(self.summaries), rows(self.summaries)),
            "",
        ]
        legend = latency_legend(self.summaries)
        if legend is not None:
            lines += [legend + ".", ""]
        if any(x.target == DIRECT and x.throughput_measured for x in self.summaries):
            lines += [
                f"`{DIRECT}` is dnsperf straight to the backend: the most the load core lets "
                "through a proxy when every query goes to the backend.",
                "",
            ]
        compared = comparison(self.summaries, self.reference)
        if compared is not None:
            lines += [comparison_text(compared) + ".", ""]
        elif s.compare_with:
            lines += [
                f"Not compared: `{s.compare_with}` was not run in the same invocation "
                f"(`--scenario {s.compare_with} --scenario {s.name}`).",
                "",
            ]
        lines += ["Every run:", "", markdown_table(RUN_HEADERS, run_rows(self.measurements)), ""]
        if self.latency_runs:
            rate = self.latency_runs[0].rate or 0
            lines += [
                f"Latency at {rate:,} queries per second, every answer's latency (dnsperf -v, "
                "to the microsecond; nearest-rank percentiles), each proxy a fresh one warmed "
                f"with {LATENCY_WARMUP_NAMES:,} other names first; added: minus `{DIRECT}`'s. "
                "CPU µs/query is the proxy's CPU time over this run per answer: at a light "
                "rate every query wakes the proxy on its own and its idle work counts too, so "
                "it is higher than at full load.",
                "",
                markdown_table(LATENCY_HEADERS, latency_rows(self.latency_runs), 1),
                "",
            ]
        asyncs = async_rows(self.measurements)
        if asyncs:
            lines += [
                "Asynchronous processing, every run (counters over the proxy's life: the run "
                "and its start-up probe; timeouts = suspended - resumed, the server's "
                "`async-timeouts`):",
                "",
                markdown_table(ASYNC_HEADERS, asyncs),
                "",
            ]
        notes = [f"- {x.target}, {n}" for x in self.summaries for n in x.notes]
        if notes:
            lines += ["Notes:", "", *notes, ""]
        return "\n".join(lines)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md, js = directory / f"{stem}.md", directory / f"{stem}.json"
        md.write_text(self.to_markdown(), encoding="utf-8")
        js.write_text(self.to_json(), encoding="utf-8")
        return md, js
