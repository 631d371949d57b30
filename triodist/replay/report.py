"""What a replay tells: a summary table for a reader, JSON for a program, one JSON line per
query on request; with a second configuration, only the queries whose outcome differs,
counted by rule and by change.

An outcome, for comparing two configurations, is what the client would see and why:
the outcome's kind and cause (``by``: the rule, the pool and server...), the rcode
sent and the TC flag. Two replays of one capture are compared query by query.

Imports nothing above triodist.replay.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import dns.name
import dns.rcode
import dns.rdatatype

from triodist.replay import DEFAULT_LISTED
from triodist.replay.capture import CaptureStats
from triodist.replay.run import Result, rule_label
from triodist.wire.walk import question_end

#: The capture's counters the text report names when they are not zero.
_SKIPPED = (
    ("undecodable-packets", "undecodable packets"),
    ("unsupported-link-type", "packets of an unsupported link type"),
    ("not-ip", "packets not IP"),
    ("ip-fragments", "IP fragments"),
    ("not-udp-or-tcp", "packets neither UDP nor TCP"),
    ("other-ports", "packets to or from other ports"),
    ("not-dns", "payloads not DNS"),
    ("responses-without-query", "responses to no query in the capture"),
    ("queries-over-max", "queries over --max-queries"),
    ("responses-after-max", "responses once --max-queries was reached"),
    ("capture-cut-short", "capture cut short"),
    ("tcp-flows-over-bound", "TCP flows pushed out with part of a message (too many at once)"),
    ("tcp-flow-bytes-over-bound", "TCP flows over their byte bound"),
    ("tcp-out-of-order-over-bound", "TCP segments out of order over the bound"),
    ("tcp-messages-cut-short", "TCP messages cut short"),
    ("tcp-flows-left-incomplete", "TCP flows left with a partial message"),
)


@dataclass
class Replay:
    """One configuration's replay of a capture."""

    config: str
    results: list[Result]
    counters: Counter[str]


def key(result: Result) -> tuple[str, str, int | None, bool]:
    """What is compared between two configurations."""
    return (result.outcome, result.by, result.answer_rcode, result.truncated)


def rcode_text(rcode: int | None) -> str | None:
    return None if rcode is None else dns.rcode.to_text(dns.rcode.Rcode.make(rcode))


def decided_by_rule(result: Result) -> str | None:
    """The rule that decided the outcome, if a rule did."""
    return rule_label(result.decided) if result.decided is not None else None


def query_fields(result: Result, first: float) -> dict[str, Any]:
    """One query's line of JSON: the query, then what became of it."""
    return {**query_part(result, first), **outcome_fields(result)}


def query_part(result: Result, first: float) -> dict[str, Any]:
    """The query itself: when (from the first query), who, what."""
    query = result.query
    data = query.data
    end = question_end(data)
    try:
        name = dns.name.from_wire(data, 12)[0].to_text()
        qtype = dns.rdatatype.to_text(
            dns.rdatatype.RdataType.make(data[end - 4] << 8 | data[end - 3])
        )
    except Exception:  # the capture reader walked the question; a name may still be odd
        name, qtype = "?", "?"
    return {
        "index": query.index,
        "time": round(query.time - first, 6),
        "client": query.client,
        "port": query.client_port,
        "transport": "tcp" if query.tcp else "udp",
        "name": name,
        "type": qtype,
        "id": data[0] << 8 | data[1],
    }


def outcome_fields(result: Result) -> dict[str, Any]:
    return {
        "outcome": result.outcome,
        "by": result.by,
        "rcode": rcode_text(result.answer_rcode),
        "truncated": result.truncated,
        "suspension": result.suspension or None,
        "captured_answer": result.query.answer is not None,
    }


def summary(results: Iterable[Result]) -> list[tuple[str, str, int]]:
    """(outcome, by, queries), the most frequent first."""
    counts = Counter((r.outcome, r.by) for r in results)
    return [(o, b, n) for (o, b), n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]


def differences(new: Replay, current: Replay) -> list[tuple[Result, Result]]:
    """The queries whose outcome differs: (under new, under current)."""
    return [(n, c) for n, c in zip(new.results, current.results, strict=True) if key(n) != key(c)]


def capture_fields(path: str, stats: CaptureStats) -> dict[str, Any]:
    return {
        "file": path,
        "counts": dict(sorted(stats.counts.items())),
        "duration": round(stats.last - stats.first, 6),
    }


def json_report(
    out: TextIO,
    capture: dict[str, Any],
    new: Replay,
    current: Replay | None,
    elapsed: float,
) -> None:
    """The whole report as one JSON document."""
    document: dict[str, Any] = {
        "capture": capture,
        "queries": len(new.results),
        "elapsed": round(elapsed, 3),
        "config": new.config,
        "summary": [{"outcome": o, "by": b, "queries": n} for o, b, n in summary(new.results)],
        "counters": dict(sorted(new.counters.items())),
    }
    if current is not None:
        first = new.results[0].query.time if new.results else 0.0
        changed = differences(new, current)
        document["against"] = current.config
        document["against_summary"] = [
            {"outcome": o, "by": b, "queries": n} for o, b, n in summary(current.results)
        ]
        document["against_counters"] = dict(sorted(current.counters.items()))
        document["differences"] = len(changed)
        document["by_rule"] = [
            {"rule": rule, "new": n, "against": c} for rule, n, c in by_rule(changed)
        ]
        document["changes"] = [
            {"against": list(a), "new": list(b), "queries": n} for a, b, n in changes(changed)
        ]
        document["queries_differing"] = [
            {**query_part(n, first), "new": outcome_fields(n), "against": outcome_fields(c)}
            for n, c in changed
        ]
    json.dump(document, out, indent=1)
    out.write("\n")


def by_rule(changed: Sequence[tuple[Result, Result]]) -> list[tuple[str, int, int]]:
    """(rule, differing queries it decided under new, under current), most first."""
    new: Counter[str] = Counter()
    old: Counter[str] = Counter()
    for n, c in changed:
        new[decided_by_rule(n) or "(no rule)"] += 1
        old[decided_by_rule(c) or "(no rule)"] += 1
    rules = sorted(set(new) | set(old), key=lambda r: (-(new[r] + old[r]), r))
    return [(rule, new[rule], old[rule]) for rule in rules]


def changes(
    changed: Sequence[tuple[Result, Result]],
) -> list[tuple[tuple[str, str], tuple[str, str], int]]:
    """(outcome under current, outcome under new, queries): each kind of change."""
    counts = Counter(((c.outcome, c.by), (n.outcome, n.by)) for n, c in changed)
    return [(a, b, n) for (a, b), n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]


def _table(out: TextIO, head: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns as wide as their widest cell; numbers on the right."""
    cells = [[str(c) for c in head], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    numeric = [bool(rows) and isinstance(rows[0][i], int | float) for i in range(len(head))]
    for row in cells:
        line = "  ".join(
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(row, widths, numeric, strict=True)
        )
        out.write("  " + line.rstrip() + "\n")


def _n(count: int, one: str, many: str = "") -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _outcome(result: Result) -> str:
    rcode = rcode_text(result.answer_rcode)
    text = f"{result.outcome} ({result.by})"
    if rcode is not None:
        text += f" {rcode}"
    if result.truncated:
        text += " TC"
    return text


def text_report(
    out: TextIO,
    capture_path: str,
    stats: CaptureStats,
    new: Replay,
    current: Replay | None,
    elapsed: float,
    listed: int = DEFAULT_LISTED,
) -> None:
    """The report a reader reads: what the capture held, then the summary table (or,
    with a second configuration, the differences)."""
    counts = stats.counts
    total = len(new.results)
    clients = len({r.query.client for r in new.results})
    against = f" and {current.config}" if current is not None else ""
    out.write(
        f"Replayed {_n(total, 'query', 'queries')} from {capture_path} "
        f"({stats.last - stats.first:.1f} s of traffic, {_n(clients, 'client')}) through "
        f"{new.config}{against} in {elapsed:.1f} s\n"
    )
    answered = sum(1 for r in new.results if r.query.answer is not None)
    if total == 0:
        answers = "no query to replay"
    elif answered == total:
        answers = "every query has its answer in the capture"
    elif answered == 0:
        answers = "no query has its answer in the capture: fake backends answer NOERROR"
    else:
        answers = (
            f"{answered:,} queries have their answer in the capture; fake backends answer "
            "the others NOERROR"
        )
    out.write(
        f"Capture: {_n(counts['packets'], 'packet')}, {_n(counts['queries'], 'query', 'queries')}"
        f", {_n(counts['responses'], 'response')}; {answers}\n"
    )
    skipped = [f"{counts[name]:,} {text}" for name, text in _SKIPPED if counts[name]]
    if skipped:
        out.write("Skipped: " + "; ".join(skipped) + "\n")
    if current is None:
        if total:
            _summary_table(out, new.results)
        return
    changed = differences(new, current)
    out.write(
        f"\n{len(changed):,} of {total:,} queries differ ({new.config} against {current.config})\n"
    )
    if not changed:
        return
    out.write("\nBy rule (the rule that decided, under each):\n")
    _table(out, ("rule", new.config, current.config), by_rule(changed))
    out.write("\nChanges:\n")
    _table(
        out,
        (f"under {current.config}", f"under {new.config}", "queries"),
        [(f"{a[0]} ({a[1]})", f"{b[0]} ({b[1]})", n) for a, b, n in changes(changed)],
    )
    first = new.results[0].query.time
    shown = changed[:listed]
    out.write(f"\nQueries that differ ({len(shown):,} of {len(changed):,}; --json for all):\n")
    rows = []
    for n, c in shown:
        fields = query_fields(n, first)
        rows.append(
            (
                f"{fields['time']:.3f}",
                f"{fields['client']}:{fields['port']}/{fields['transport']}",
                fields["name"],
                fields["type"],
                _outcome(c),
                _outcome(n),
            )
        )
    _table(out, ("time", "client", "name", "type", current.config, new.config), rows)


def _summary_table(out: TextIO, results: list[Result]) -> None:
    total = len(results) or 1
    out.write("\n")
    _table(
        out,
        ("outcome", "by", "queries", "%"),
        [(o, b, n, 100.0 * n / total) for o, b, n in summary(results)],
    )
    suspended = Counter(r.suspension for r in results if r.suspension)
    truncated = sum(1 for r in results if r.truncated)
    notes = []
    if suspended:
        ended = ", ".join(f"{n:,} {state}" for state, n in sorted(suspended.items()))
        notes.append(f"suspended: {sum(suspended.values()):,} ({ended})")
    if truncated:
        notes.append(f"answered with TC set: {truncated:,}")
    if notes:
        line = "; ".join(notes)
        out.write("\n" + line[0].upper() + line[1:] + "\n")


def write_lines(out: TextIO, replay: Replay) -> None:
    """One JSON line per query, in time order."""
    first = replay.results[0].query.time if replay.results else 0.0
    for result in replay.results:
        out.write(json.dumps(query_fields(result, first)) + "\n")
