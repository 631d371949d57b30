"""The server's counters as a Lua table: ``getStatisticsCounters()``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from triodist.config.bindings.base import Binding, lua_function

#: The counters dnsdist 1.7.3's ``getStatisticsCounters()`` has: a configuration that
#: reads one (``getStatisticsCounters()['queries']``) finds a number, 0 where triodist
#: does not count it.
DNSDIST_COUNTERS = (
    "acl-drops",
    "cache-hits",
    "cache-misses",
    "doh-query-pipe-full",
    "doh-response-pipe-full",
    "downstream-send-errors",
    "downstream-timeouts",
    "dyn-blocked",
    "empty-queries",
    "frontend-noerror",
    "frontend-nxdomain",
    "frontend-servfail",
    "latency-count",
    "latency-slow",
    "latency-sum",
    "latency0-1",
    "latency1-10",
    "latency10-50",
    "latency100-1000",
    "latency50-100",
    "no-policy",
    "noncompliant-queries",
    "noncompliant-responses",
    "outgoing-doh-query-pipe-full",
    "proxy-protocol-invalid",
    "queries",
    "rdqueries",
    "responses",
    "rule-drop",
    "rule-nxdomain",
    "rule-refused",
    "rule-servfail",
    "rule-truncated",
    "security-status",
    "self-answered",
    "servfail-responses",
    "tcp-cross-protocol-query-pipe-full",
    "tcp-cross-protocol-response-pipe-full",
    "tcp-query-pipe-full",
    "trunc-failures",
)


class StatisticsBindings(Binding):
    """The counters of the server a configuration runs in, for Lua to read."""

    @lua_function
    def getStatisticsCounters(self) -> dict[str, int]:
        """The server's counters by name, as they are now (dnsdist's, and triodist's own)."""
        counters = dict.fromkeys(DNSDIST_COUNTERS, 0)
        counters.update((name, int(value)) for name, value in (self.config.stats or {}).items())
        return counters
