"""The counters ``dumpStats()`` shows: dnsdist 1.7.3's full list, and triodist's own.

dnsdist's ``dumpStats()`` always shows the same 64 names; a tool (or a test) that reads
its output finds each of them. triodist shows each of them too, with:

- the server's own counter of that name where triodist counts the same thing
  (``queries``, ``cache-hits``, ``rule-drop``, ...), ``rdqueries`` and the ``latency-*``
  figures included (``rings.py`` counts those as it records each query and answer);
- triodist's counter of another name for the same thing (``noncompliant-queries`` is
  triodist's ``non-compliant-queries``);
- the process's and the system's figures, read as dnsdist reads them on Linux: CPU time
  (``getrusage``), memory and open files (``/proc/self``), the kernel's UDP and TCP error
  counters (``/proc/net/snmp``, ``snmp6``, ``netstat``), the host's I/O wait and steal
  time (``/proc/stat``), the uptime;
- 0 for what triodist does not have (DNS over HTTPS pipes, dynamic blocks, the security
  poll) or does not count yet (``frontend-*``, ``noncompliant-responses``,
  ``rule-truncated``, ``trunc-failures``).

Then triodist's own counters follow in the same sorted columns (``received``,
``answered``, ``dropped``, ``async-*``, ...): ``docs/reference/counters.md``.

Imports nothing above triodist.ops.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from pathlib import Path

#: dnsdist 1.7.3's ``dumpStats()`` names (``g_stats.entries``), all shown.
DNSDIST_STATS = (
    "acl-drops",
    "cache-hits",
    "cache-misses",
    "cpu-iowait",
    "cpu-steal",
    "cpu-sys-msec",
    "cpu-user-msec",
    "doh-query-pipe-full",
    "doh-response-pipe-full",
    "downstream-send-errors",
    "downstream-timeouts",
    "dyn-block-nmg-size",
    "dyn-blocked",
    "empty-queries",
    "fd-usage",
    "frontend-noerror",
    "frontend-nxdomain",
    "frontend-servfail",
    "latency-avg100",
    "latency-avg1000",
    "latency-avg10000",
    "latency-avg1000000",
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
    "real-memory-usage",
    "responses",
    "rule-drop",
    "rule-nxdomain",
    "rule-refused",
    "rule-servfail",
    "rule-truncated",
    "security-status",
    "self-answered",
    "servfail-responses",
    "special-memory-usage",
    "tcp-cross-protocol-query-pipe-full",
    "tcp-cross-protocol-response-pipe-full",
    "tcp-listen-overflows",
    "tcp-query-pipe-full",
    "trunc-failures",
    "udp-in-csum-errors",
    "udp-in-errors",
    "udp-noport-errors",
    "udp-recvbuf-errors",
    "udp-sndbuf-errors",
    "udp6-in-csum-errors",
    "udp6-in-errors",
    "udp6-noport-errors",
    "udp6-recvbuf-errors",
    "udp6-sndbuf-errors",
    "uptime",
)

#: dnsdist's name -> triodist's counter of the same meaning under its own name.
ALIASES = {"noncompliant-queries": "non-compliant-queries"}

#: dnsdist's figures of the moment (the process's, the kernel's, the averages) rather
#: than counts: its ``getStatisticsCounters()`` leaves them out.
_GAUGE_PREFIXES = ("cpu-", "udp-", "udp6-", "latency-avg")
_GAUGES = frozenset(
    {"dyn-block-nmg-size", "fd-usage", "real-memory-usage", "special-memory-usage"}
    | {"tcp-listen-overflows", "uptime"}
)
#: The names dnsdist 1.7.3's ``getStatisticsCounters()`` has.
DNSDIST_COUNTERS = tuple(
    name for name in DNSDIST_STATS if name not in _GAUGES and not name.startswith(_GAUGE_PREFIXES)
)

#: The moving averages of the latency, shown with one decimal as dnsdist shows them.
AVERAGES = ("latency-avg100", "latency-avg1000", "latency-avg10000", "latency-avg1000000")

#: When this process started serving figures (the module is loaded as the server starts).
_STARTED = time.monotonic()

# The kernel's counters as dnsdist names them: (file, line prefix, field) per name.
_KERNEL = {
    "udp-in-errors": ("/proc/net/snmp", "Udp:", "InErrors"),
    "udp-noport-errors": ("/proc/net/snmp", "Udp:", "NoPorts"),
    "udp-recvbuf-errors": ("/proc/net/snmp", "Udp:", "RcvbufErrors"),
    "udp-sndbuf-errors": ("/proc/net/snmp", "Udp:", "SndbufErrors"),
    "udp-in-csum-errors": ("/proc/net/snmp", "Udp:", "InCsumErrors"),
    "tcp-listen-overflows": ("/proc/net/netstat", "TcpExt:", "ListenOverflows"),
}
_KERNEL6 = {
    "udp6-in-errors": "Udp6InErrors",
    "udp6-noport-errors": "Udp6NoPorts",
    "udp6-recvbuf-errors": "Udp6RcvbufErrors",
    "udp6-sndbuf-errors": "Udp6SndbufErrors",
    "udp6-in-csum-errors": "Udp6InCsumErrors",
}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _table(text: str, prefix: str) -> dict[str, int]:
    """A /proc/net/snmp-style pair of lines (names, then values) starting with ``prefix``."""
    lines = [line.split() for line in text.splitlines() if line.startswith(prefix)]
    if len(lines) < 2:
        return {}
    names, values = lines[0][1:], lines[1][1:]
    return {name: int(value) for name, value in zip(names, values, strict=False)}


def system_figures() -> dict[str, int]:
    """The process's and the system's figures of dnsdist's list (0 where they cannot be
    read: another system, a container without /proc)."""
    figures: dict[str, int] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures["cpu-user-msec"] = int(usage.ru_utime * 1000)
    figures["cpu-sys-msec"] = int(usage.ru_stime * 1000)
    statm = _read("/proc/self/statm").split()
    figures["real-memory-usage"] = int(statm[1]) * os.sysconf("SC_PAGE_SIZE") if statm else 0
    figures["special-memory-usage"] = sum(
        int(line.split()[1]) * 1024
        for line in _read("/proc/self/smaps").splitlines()
        if line.startswith("Private_Dirty:")
    )
    try:
        figures["fd-usage"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        figures["fd-usage"] = 0
    cpu = next(
        (line.split() for line in _read("/proc/stat").splitlines() if line.startswith("cpu ")), []
    )
    figures["cpu-iowait"] = int(cpu[5]) if len(cpu) > 5 else 0
    figures["cpu-steal"] = int(cpu[8]) if len(cpu) > 8 else 0
    tables: dict[tuple[str, str], dict[str, int]] = {}
    for name, (path, prefix, field) in _KERNEL.items():
        if (path, prefix) not in tables:
            tables[path, prefix] = _table(_read(path), prefix)
        figures[name] = tables[path, prefix].get(field, 0)
    snmp6 = dict(
        (parts[0], int(parts[1]))
        for parts in (line.split() for line in _read("/proc/net/snmp6").splitlines())
        if len(parts) == 2 and parts[1].isdigit()
    )
    for name, field in _KERNEL6.items():
        figures[name] = snmp6.get(field, 0)
    figures["uptime"] = int(time.monotonic() - _STARTED)
    return figures


def dumpstats_values(
    counters: Mapping[str, int], averages: Mapping[str, float] | None = None
) -> dict[str, int | float]:
    """Every counter ``dumpStats()`` shows, by name: dnsdist's list (see the module's
    docstring), then those of ``counters`` (the server's) that are triodist's own."""
    shown: dict[str, int | float] = dict.fromkeys(DNSDIST_STATS, 0)
    for name in AVERAGES:
        shown[name] = float((averages or {}).get(name, 0.0))
    shown.update(system_figures())
    for name, value in counters.items():
        if name not in AVERAGES:
            shown[name] = value
    for dnsdist_name, own in ALIASES.items():
        shown[dnsdist_name] = counters.get(dnsdist_name, 0) + counters.get(own, 0)
    return shown


def statistics_counters(counters: Mapping[str, int]) -> dict[str, int]:
    """``getStatisticsCounters()``: dnsdist's counters (0 where triodist does not count
    one; its name for one triodist names otherwise), then the server's own."""
    shown = dict.fromkeys(DNSDIST_COUNTERS, 0)
    shown.update((name, int(value)) for name, value in counters.items())
    for dnsdist_name, own in ALIASES.items():
        shown[dnsdist_name] = counters.get(dnsdist_name, 0) + counters.get(own, 0)
    return shown
