"""dnsdist's ring buffers: the last queries and responses, for the console to look at.

Every query the rules see goes into the query ring, and every backend's reply (or its
timeout) into the response ring; each ring keeps the last ``setRingBuffersSize`` entries
(10,000 by default, as dnsdist) and forgets the oldest, so it never grows. An entry is a
plain tuple with the question name as it came on the wire: recording one costs a tuple
and an append, and names are only decoded when a console command reads the rings
(``topQueries``, ``topClients``, ``topResponses``, ``getSlowResponses``,
``getResponseRing``, ``showResponseLatency``).

The rings are what the query path records into (``triodist.query.records.QueryRecorder``):
the server hands them to its pipeline, and they hand each query and answer on to the
per-query lines of ``serve -v`` (``querylog.py``).

Imports nothing above triodist.ops (the query layer's interface it implements, and below).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

import dns.name

from triodist.ops import querylog

if TYPE_CHECKING:
    from triodist.backends.server import Server
    from triodist.wire.message import DNSQuestion

#: dnsdist's default number of entries per ring.
DEFAULT_SIZE = 10_000

#: The latency recorded for a query whose backend never answered.
TIMED_OUT = -1


class QueryEntry(NamedTuple):
    when: float
    client: str
    qname_wire: bytes
    qtype: int
    size: int
    tcp: bool


class ResponseEntry(NamedTuple):
    when: float
    client: str
    qname_wire: bytes
    qtype: int
    rcode: int
    #: Microseconds from the query's arrival to the reply; ``TIMED_OUT`` for none.
    usec: int
    size: int
    backend: str


#: dnsdist's latency bins: (upper bound in microseconds, counter), the last one open.
LATENCY_BINS = (
    (1_000, "latency0-1"),
    (10_000, "latency1-10"),
    (50_000, "latency10-50"),
    (100_000, "latency50-100"),
    (1_000_000, "latency100-1000"),
)

#: dnsdist's moving averages of the latency: (counter, weight).
LATENCY_AVERAGES = (
    ("latency-avg100", 100.0),
    ("latency-avg1000", 1000.0),
    ("latency-avg10000", 10000.0),
    ("latency-avg1000000", 1000000.0),
)


class Rings:
    """The two rings, bounded by ``size`` entries each: a ``QueryRecorder``.

    As it records, it also counts what dnsdist's ``dumpStats()`` shows of them into
    ``counts`` (the server's counters, once the server hands them over): ``rdqueries``,
    and for each backend answer the ``latency-*`` bins, sum and count; the moving
    averages, which are not counts, are kept in ``averages``."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.queries: deque[tuple[float, str, bytes, int, int, bool]] = deque(maxlen=size)
        self.responses: deque[tuple[float, str, bytes, int, int, int, int, str]] = deque(
            maxlen=size
        )
        self.counts: Counter[str] = Counter()
        self.averages: dict[str, float] = {name: 0.0 for name, _ in LATENCY_AVERAGES}

    @property
    def size(self) -> int:
        return self.queries.maxlen or 0

    def resize(self, size: int) -> None:
        """A new bound, keeping the newest entries that fit (a reload that changed it)."""
        if size != self.size:
            self.queries = deque(self.queries, maxlen=size)
            self.responses = deque(self.responses, maxlen=size)

    # --- recorded by the query path (the QueryRecorder interface) -------------------------

    def query_received(self, dq: DNSQuestion) -> None:
        self.queries.append(
            (dq.query_time, dq.remote[0], dq.qname_wire, dq.qtype, len(dq.data), dq.tcp)
        )
        if dq.orig_flags & 0x0100:  # RD, as the client sent it
            self.counts["rdqueries"] += 1
        querylog.query_received(dq)  # serve -v

    def backend_answered(self, dq: DNSQuestion, server: Server, reply: bytes, now: float) -> None:
        usec = int((now - dq.query_time) * 1_000_000)
        querylog.answer_received(dq, server, len(reply), usec)  # serve -v
        self._latency(usec)
        self.responses.append(
            (
                now,
                dq.remote[0],
                dq.qname_wire,
                dq.qtype,
                reply[3] & 0x0F,
                usec,
                len(reply),
                server.name,
            )
        )

    def backend_timed_out(self, dq: DNSQuestion, server: Server, now: float) -> None:
        self.responses.append(
            (now, dq.remote[0], dq.qname_wire, dq.qtype, 0, TIMED_OUT, 0, server.name)
        )

    def _latency(self, usec: int) -> None:
        """dnsdist's latency figures for one backend answer."""
        counts = self.counts
        for bound, name in LATENCY_BINS:
            if usec < bound:
                counts[name] += 1
                break
        else:
            counts["latency-slow"] += 1
        counts["latency-sum"] += usec // 1000
        counts["latency-count"] += 1
        averages = self.averages
        for name, weight in LATENCY_AVERAGES:
            averages[name] = (weight - 1) * averages[name] / weight + usec / weight

    # --- read by the console ----------------------------------------------------------------

    def query_entries(self) -> list[QueryEntry]:
        return [QueryEntry(*entry) for entry in self.queries]

    def response_entries(self) -> list[ResponseEntry]:
        return [ResponseEntry(*entry) for entry in self.responses]


def name_of(wire: bytes, labels: int | None = None) -> str:
    """The name in text, lower case (as dnsdist shows them), its last ``labels`` only."""
    name = dns.name.from_wire(wire, 0)[0]
    if labels is not None and labels >= 0 and len(name.labels) > labels + 1:
        name = dns.name.Name(name.labels[-(labels + 1) :])
    return name.to_text().lower()


def top(counts: Counter[str], n: int) -> list[tuple[str, int, float]]:
    """dnsdist's top-N lists: (what, count, percent) for the ``n`` most frequent, then
    ("Rest", the others' count, their percent)."""
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = [(what, count, 100.0 * count / total) for what, count in ranked[:n]]
    rest = sum(count for _, count in ranked[n:])
    shown.append(("Rest", rest, 100.0 * rest / total if total else 100.0))
    return shown


def count_names(entries: Iterable[tuple[bytes, int]], labels: int | None) -> Counter[str]:
    """Occurrences of each name; ``entries`` are (name on the wire, anything)."""
    by_wire: Counter[bytes] = Counter(wire for wire, _ in entries)
    counts: Counter[str] = Counter()
    for wire, count in by_wire.items():
        counts[name_of(wire, labels)] += count
    return counts


def format_top(rows: list[tuple[str, int, float]]) -> str:
    return "".join(
        f"{index:4d}  {what:<40} {count:4d} {percent:4.1f}%\n"
        for index, (what, count, percent) in enumerate(rows, 1)
    )


def latency_histogram(responses: Iterable[ResponseEntry]) -> str:
    """``showResponseLatency()``: the average, then a histogram in bins doubling from
    0.1 ms, as dnsdist draws it."""
    bins = [100.0 * 2**i for i in range(15)]
    histogram = dict.fromkeys(bins, 0)
    total = 0.0
    size = 0
    for entry in responses:
        if entry.usec == TIMED_OUT:
            continue
        size += 1
        total += entry.usec
        slot = next((b for b in bins if entry.usec <= b), bins[-1])
        histogram[slot] += 1
    if not size:
        return "No traffic yet.\n"
    lines = [f"Average response latency: {0.001 * total / size:.2f} ms\n", f"{'ms':>7}\t\n"]
    highest = max(histogram.values())
    for limit, count in histogram.items():
        stars = int(70.0 * count / highest)
        mark = "*"
        if stars == 0 and count:
            stars, mark = 1, (":" if 70.0 * count / highest > 0.5 else ".")
        lines.append(f"{limit / 1000:7.2f}\t{mark * stars}\n")
    return "".join(lines)


#: Picks the responses a ``getGenResponses``-style query counts.
ResponseFilter = Callable[[ResponseEntry], bool]
