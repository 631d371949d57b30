"""``dumpStats()`` shows every counter dnsdist 1.7.3's does, in its layout, with
triodist's own after them; ``rdqueries`` and the ``latency-*`` figures count."""

from __future__ import annotations

import dns.flags
from conftest import StartTriodist, query

from triodist.config.bindings.inspection import format_stats
from triodist.testing.backend import AuthServer

#: The names dnsdist 1.7.3's dumpStats() prints (read from its console).
_DNSDIST_1_7_3 = """
acl-drops cache-hits cache-misses cpu-iowait cpu-steal cpu-sys-msec cpu-user-msec
doh-query-pipe-full doh-response-pipe-full downstream-send-errors downstream-timeouts
dyn-block-nmg-size dyn-blocked empty-queries fd-usage frontend-noerror frontend-nxdomain
frontend-servfail latency-avg100 latency-avg1000 latency-avg10000 latency-avg1000000
latency-count latency-slow latency-sum latency0-1 latency1-10 latency10-50 latency100-1000
latency50-100 no-policy noncompliant-queries noncompliant-responses
outgoing-doh-query-pipe-full proxy-protocol-invalid queries rdqueries real-memory-usage
responses rule-drop rule-nxdomain rule-refused rule-servfail rule-truncated security-status
self-answered servfail-responses special-memory-usage tcp-cross-protocol-query-pipe-full
tcp-cross-protocol-response-pipe-full tcp-listen-overflows tcp-query-pipe-full
trunc-failures udp-in-csum-errors udp-in-errors udp-noport-errors udp-recvbuf-errors
udp-sndbuf-errors udp6-in-csum-errors udp6-in-errors udp6-noport-errors
udp6-recvbuf-errors udp6-sndbuf-errors uptime
"""
DNSDIST_1_7_3 = _DNSDIST_1_7_3.split()


def parse(output: str) -> dict[str, str]:
    """Name and value pairs, read as a script reads dnsdist's output (split on blanks)."""
    words = output.split()
    return dict(zip(words[0::2], words[1::2], strict=True))


async def test_every_dnsdist_counter_is_shown_and_rd_and_latency_count(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\naddAction("spoof.example.", SpoofAction("192.0.2.9"))\n'
    )
    assert await t.ask("www.example.org.") is not None
    assert await t.ask("www.example.org.", tcp=True) is not None
    no_rd = query("mail.example.org.")
    no_rd.flags &= ~dns.flags.RD
    assert await t.udp(no_rd) is not None
    assert await t.ask("spoof.example.") is not None  # answered without a backend
    stats = parse(t.lua.console_eval("dumpStats()"))
    assert set(DNSDIST_1_7_3) <= set(stats)
    assert stats["queries"] == "4"
    assert stats["rdqueries"] == "3"
    # Three backend answers: each in one latency bin, in the count and the averages.
    assert stats["latency-count"] == "3"
    bins = ("latency0-1", "latency1-10", "latency10-50", "latency50-100", "latency100-1000")
    assert sum(int(stats[b]) for b in (*bins, "latency-slow")) == 3
    assert float(stats["latency-avg100"]) > 0.0
    assert stats["self-answered"] == "1"
    # The process's own figures, read from the system.
    assert int(stats["fd-usage"]) > 0 and int(stats["real-memory-usage"]) > 0
    # triodist's own counters follow.
    assert stats["received"] == "4" and stats["answered"] == "4"


def test_the_layout_is_dnsdists() -> None:
    output = format_stats({"queries": 12, "empty-queries": 1}, {"latency-avg100": 2.25})
    lines = output.splitlines()
    lefts: list[str] = []
    rights: list[str] = []
    for line in lines:
        # The right column starts at column 51, after the left entry and a space.
        left, right = line[:51], line[51:]
        assert left.endswith(" ") and right and not right.startswith(" ")
        if left.strip():
            lefts.append(left.rstrip(" "))
        rights.append(right)
    entries = lefts + rights
    # Sorted by name, down the left column then the right; the left column holds the
    # first half, rounded down.
    names = [entry.split("\t")[0].rstrip() for entry in entries]
    assert names == sorted(names)
    assert len(lefts) == len(names) // 2
    for entry in entries:
        name, value = entry.split("\t")
        assert len(name) == 35 or len(name.rstrip()) > 35
        assert len(value) >= 11 and value == value.rjust(11)
    by_name = {e.split("\t")[0].rstrip(): e.split("\t")[1] for e in entries}
    assert by_name["queries"] == "         12"
    assert by_name["empty-queries"] == "          1"
    assert by_name["latency-avg100"] == "          2.2"
    assert by_name["latency-avg1000"] == "          0.0"
    assert by_name["noncompliant-queries"] == "          0"
