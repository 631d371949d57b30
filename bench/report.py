"""Medians over runs, the results table, and the Markdown and JSON result files."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .measure import DIRECT, Measurement
from .scenarios import Scenario

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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(scenario: str, target: str, runs: Sequence[Measurement]) -> Summary:
    def med(get: Callable[[Measurement], float | None]) -> float | None:
        return _median([get(m) for m in runs])

    notes: list[str] = []
    for m in runs:
        for note in m.notes:
            line = f"run {m.run}: {note}"
            if line not in notes:
                notes.append(line)
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

HEADERS = (
    "scenario",
    "proxy",
    "qps",
    "lost %",
    "avg latency ms",
    "max latency ms",
    "CPU µs/query",
    "proxy core",
    "load core",
    "cache hits",
    "qps t/d",
    "CPU/query t/d",
)


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def rows(summaries: Sequence[Summary]) -> list[list[str]]:
    qps_ratio = ratio(summaries, lambda s: s.qps)
    cpu_ratio = ratio(summaries, lambda s: s.cpu_us_per_query)
    table: list[list[str]] = []
    for s in summaries:
        table.append(
            [
                s.scenario,
                s.target,
                f"{s.qps:,.0f}",
                _pct(s.lost_ratio, 2),
                f"{s.latency_avg * 1e3:.3f}",
                f"{s.latency_max * 1e3:.2f}",
                _num(s.cpu_us_per_query, ".1f"),
                _pct(s.proxy_core_busy),
                _pct(s.load_core_busy),
                _pct(s.cache_hit_ratio, 1),
                _num(qps_ratio, ".3f") if s.target == SUBJECT else "",
                _num(cpu_ratio, ".2f") if s.target == SUBJECT else "",
            ]
        )
    return table


def text_table(table: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    widths = [max(len(r[i]) for r in [headers, *table]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        cells_widths = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in cells_widths)

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, table)])


def markdown_table(headers: Sequence[str], table: Sequence[Sequence[str]]) -> str:
    align = ["---" if i < 2 else "---:" for i in range(len(headers))]
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
            "runs": [m.as_dict() for m in self.measurements],
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
            markdown_table(HEADERS, rows(self.summaries)),
            "",
        ]
        if any(x.target == DIRECT for x in self.summaries):
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
