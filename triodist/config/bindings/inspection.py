"""Reading the running server from Lua: its counters (``dumpStats``) and the rings of
recent queries and responses (``setRingBuffersSize``, ``topQueries``, ``topSlow``, ...).

Imports nothing above triodist.config.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import trio

from triodist.config.bindings.args import ConfigError, non_negative, whole
from triodist.config.bindings.base import Binding, lua_function
from triodist.ops import counters as counters_view
from triodist.ops import rings, statnode

#: The server's counters, shown by ``dumpStats()`` at 0 until they count something (as
#: dnsdist shows its fixed list).
STAT_NAMES = (
    "acl-drops",
    "answered",
    "async-foreign-drops",
    "async-resumed",
    "async-send-failures",
    "async-send-overflows",
    "async-send-queued",
    "async-suspended",
    "async-timeouts",
    "cache-hits",
    "cache-misses",
    "config-reload-failures",
    "config-reloads",
    "downstream-overload-drops",
    "downstream-send-errors",
    "downstream-timeouts",
    "dropped",
    "frontend-overload-drops",
    "no-policy",
    "non-compliant-queries",
    "queries",
    "received",
    "responses",
    "rule-drop",
    "self-answered",
    "tcp-overload-drops",
    "tcp-send-timeouts",
    "tcp-unsent-overflows",
    "truncated-udp-answers",
    "udp-send-errors",
)


def format_stats(counters: Mapping[str, int], averages: Mapping[str, float] | None = None) -> str:
    """dnsdist's ``dumpStats()`` layout: every counter of dnsdist's list and triodist's own
    (``ops/counters.py``), sorted by name, the first half (rounded down) in the left column
    and the rest in the right one, a name in 35 columns and its value in 11 after a tab;
    the latency averages (``averages``) with one decimal."""
    shown = counters_view.dumpstats_values(dict.fromkeys(STAT_NAMES, 0) | dict(counters), averages)
    entries = []
    for name, value in sorted(shown.items()):
        text = f"    {value:9.1f}" if isinstance(value, float) else str(value)
        entries.append(f"{name:<35}\t{text:>11}")
    half = len(entries) // 2
    left, right = entries[:half], entries[half:]
    lines = []
    for index in range(len(right)):
        line = (left[index] if index < len(left) else "") + " "
        lines.append(line.ljust(51) + right[index])
    return "".join(line + "\n" for line in lines)


class InspectionBindings(Binding):
    """The counters and the rings of the server a configuration runs in."""

    @lua_function
    def dumpStats(self) -> None:
        """The server's counters, in two columns as dnsdist prints them (with ``--workers``,
        the console shows their sum over the workers)."""
        averages = self.config.rings.averages
        print(format_stats(self.config.stats or {}, averages), end="", file=self.out)

    # --- the ring buffers (ops/rings.py) ---------------------------------------------------

    @lua_function
    def setRingBuffersSize(self, n: Any, shards: Any = None) -> None:
        """Entries kept in each ring (dnsdist's default 10,000; the shards are dnsdist's
        locking detail, accepted and ignored)."""
        self.config.rings.resize(whole(n, "setRingBuffersSize", 1))

    @lua_function
    def getTopQueries(self, n: Any = 10, labels: Any = None) -> list[list[Any]]:
        names = rings.count_names(((e[2], 0) for e in self.config.rings.queries), _labels(labels))
        return [list(row) for row in rings.top(names, whole(n, "getTopQueries", 0))]

    @lua_function
    def topQueries(self, n: Any = 10, labels: Any = None) -> None:
        """The most frequent names in the query ring, then the rest."""
        rows = [tuple(row) for row in self.getTopQueries(n, labels)]
        print(rings.format_top(rows), end="", file=self.out)

    @lua_function
    def topClients(self, n: Any = 10) -> None:
        """The clients that sent most of the queries in the ring, then the rest."""
        clients = Counter(entry[1] for entry in self.config.rings.queries)
        rows = rings.top(clients, whole(n, "topClients", 0))
        print(rings.format_top(rows), end="", file=self.out)

    def _top_responses(
        self, n: Any, labels: Any, keep: rings.ResponseFilter, function: str
    ) -> list[list[Any]]:
        entries = (
            (entry.qname_wire, 0) for entry in self.config.rings.response_entries() if keep(entry)
        )
        names = rings.count_names(entries, _labels(labels))
        return [list(row) for row in rings.top(names, whole(n, function, 0))]

    @lua_function
    def getTopResponses(self, n: Any = 10, kind: Any = 0, labels: Any = None) -> list[list[Any]]:
        rcode = whole(kind, "getTopResponses", 0)
        return self._top_responses(n, labels, lambda e: e.rcode == rcode, "getTopResponses")

    @lua_function
    def topResponses(self, n: Any = 10, kind: Any = 0, labels: Any = None) -> None:
        """The names most often answered with rcode ``kind`` (0: NOERROR) by the backends."""
        rows = [tuple(row) for row in self.getTopResponses(n, kind, labels)]
        print(rings.format_top(rows), end="", file=self.out)

    @lua_function
    def getSlowResponses(
        self, n: Any = 10, msec: Any = 0, labels: Any = None, timeouts: Any = False
    ) -> list[list[Any]]:
        limit = non_negative(msec, "getSlowResponses") * 1000

        def slow(entry: rings.ResponseEntry) -> bool:
            if timeouts:
                return entry.usec == rings.TIMED_OUT
            return entry.usec != rings.TIMED_OUT and entry.usec > limit

        return self._top_responses(n, labels, slow, "getSlowResponses")

    @lua_function
    def topSlow(self, n: Any = 10, msec: Any = 500, labels: Any = None) -> None:
        """The names whose backend replies took over ``msec`` (500) milliseconds."""
        rows = [tuple(row) for row in self.getSlowResponses(n, msec, labels)]
        print(rings.format_top(rows), end="", file=self.out)

    @lua_function
    def getResponseRing(self) -> list[dict[str, Any]]:
        return [
            {
                "name": rings.name_of(entry.qname_wire),
                "qtype": entry.qtype,
                "rcode": entry.rcode,
                "usec": entry.usec,
            }
            for entry in self.config.rings.response_entries()
        ]

    @lua_function
    def statNodeRespRing(self, visitor: Any, seconds: Any = None) -> None:
        """Call ``visitor(node, self, children)`` for each name of the response ring and
        each of its parents, children first and the nameless root last (``node.fullname``,
        ``node.labelsCount``, ``node:numChildren()``; ``queries``, ``noerrors``,
        ``nxdomains``, ``servfails``, ``drops`` and ``bytes`` in the two counts); with
        ``seconds`` (not 0), only the responses of the last ``seconds`` seconds."""
        if not callable(visitor):
            raise ConfigError("statNodeRespRing: expected a function as its first argument")
        since = 0 if seconds is None else whole(seconds, "statNodeRespRing", 0)
        tree = statnode.response_tree(self.config.rings.response_entries(), _now(), since)
        tree.visit(visitor)

    @lua_function
    def showResponseLatency(self) -> None:
        """The backends' response times in the ring: the average and a histogram."""
        histogram = rings.latency_histogram(self.config.rings.response_entries())
        print(histogram, end="", file=self.out)


def _now() -> float:
    """Trio's clock, which the rings record on; outside Trio (check-config) the rings
    are empty and any time will do."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def _labels(value: Any) -> int | None:
    """The ``labels`` argument of the top-N functions: how many of a name's last labels
    to count by (None: the whole name)."""
    return None if value is None else whole(value, "labels", 0)
