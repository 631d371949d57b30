"""A PNG bar chart of one invocation: queries per second and CPU µs per query, per scenario.

Written next to the result files, ``results/<date>-<scenario>+<scenario>....png``: for each
scenario run, triodist's bar beside dnsdist's (a scenario for triodist only has its one bar).
When the latency runs were made, a third panel gives the p50 latency at the light rate,
knotd-direct's bar first (what a proxy adds is the difference), with each target's p99 as a
tick above its bar.  It needs matplotlib, an optional dependency (``pip install
'.[bench]'``); without it the harness says so and writes the tables only.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .measure import DIRECT
from .report import REFERENCE, SUBJECT, Summary

MISSING = "no chart: pip install '.[bench]'"
PROXIES = (REFERENCE, SUBJECT)  # left to right within a scenario
COLOURS = {DIRECT: "#d9d9d9", REFERENCE: "#9e9e9e", SUBJECT: "#1f77b4"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def chart_name(date: str, scenarios: Sequence[str]) -> str:
    return f"{date}-{'+'.join(scenarios)}.png"


def write(
    path: Path,
    summaries: dict[str, list[Summary]],
    title: str,
    subtitle: str,
) -> Path:
    """Draw the chart of ``summaries`` (scenario -> its summaries) into ``path``.

    Raises ImportError when matplotlib is missing (check :func:`available` first).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    scenarios = [name for name, found in summaries.items() if _by_proxy(found)]
    width = 0.38
    latency = any(s.light_p50_us is not None for found in summaries.values() for s in found)
    panels_count = 3 if latency else 2
    figure_width = max(3.75 * panels_count, 1.1 * panels_count * len(scenarios) + 3.0)
    figure, axes = plt.subplots(1, panels_count, figsize=(figure_width, 4.6))
    panels = (
        (axes[0], "queries per second (higher is better)", lambda s: s.qps, "{:,.0f}"),
        (
            axes[1],
            "proxy CPU µs per query (lower is better)",
            lambda s: s.cpu_us_per_query,
            "{:.1f}",
        ),
    )
    for ax, label, get, fmt in panels:
        for offset, proxy in ((-width / 2, REFERENCE), (width / 2, SUBJECT)):
            xs, values = [], []
            for x, name in enumerate(scenarios):
                s = _by_proxy(summaries[name]).get(proxy)
                value = get(s) if s is not None else None
                if value is not None:
                    xs.append(x + offset)
                    values.append(value)
            if not xs:
                continue
            bars = ax.bar(xs, values, width, label=proxy, color=COLOURS[proxy])
            ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=7, padding=2)
        ax.set_title(label, fontsize=10)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.set_xticks(range(len(scenarios)), scenarios)
        ax.margins(y=0.15)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False, fontsize=8)
    if latency:
        _latency_panel(axes[2], summaries, scenarios)
    figure.suptitle(title, fontsize=11)
    # Wrapped to the figure's width (about 16 characters of 7-point text per inch).
    lines = textwrap.wrap(subtitle, int(figure_width * 16))
    figure.text(0.5, 0.01, "\n".join(lines), ha="center", va="bottom", fontsize=7, color="#555")
    figure.tight_layout(rect=(0, 0.035 * len(lines) + 0.01, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _by_proxy(found: Sequence[Summary]) -> dict[str, Summary]:
    return {s.target: s for s in found if s.target in PROXIES}


def _latency_panel(ax: Any, summaries: dict[str, list[Summary]], scenarios: list[str]) -> None:
    """p50 at the light rate per target (bars, labelled) and p99 (a tick above each bar)."""
    from matplotlib.ticker import StrMethodFormatter

    targets = (DIRECT, REFERENCE, SUBJECT)
    width = 0.27
    rate = next((s.light_rate for found in summaries.values() for s in found if s.light_rate), None)
    ticks_labelled = False
    for index, target in enumerate(targets):
        offset = (index - 1) * width
        xs, p50s, p99s = [], [], []
        for x, name in enumerate(scenarios):
            s = next((s for s in summaries[name] if s.target == target), None)
            if s is None or s.light_p50_us is None:
                continue
            xs.append(x + offset)
            p50s.append(s.light_p50_us)
            p99s.append(s.light_p99_us)
        if not xs:
            continue
        bars = ax.bar(xs, p50s, width, label=target, color=COLOURS[target])
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in p50s], fontsize=7, padding=2)
        shown = [(x, v) for x, v in zip(xs, p99s, strict=True) if v is not None]
        if shown:
            ax.plot(
                [x for x, _ in shown],
                [v for _, v in shown],
                linestyle="none",
                marker="_",
                markersize=12,
                color="black",
                label=None if ticks_labelled else "p99",
            )
            ticks_labelled = True
    at = f" at {rate:,} qps" if rate else ""
    ax.set_title(
        f"latency{at}, µs (lower is better)\nbars: p50; ticks: p99; log scale", fontsize=10
    )
    # Logarithmic: a p99 can be ten times the p50 or more (one slow wake-up in a hundred),
    # and on a linear scale it would flatten the p50 bars, the figure of the goal.
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.margins(y=0.15)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="best")
