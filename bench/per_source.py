"""What a per-source table costs: MaxQPSIPRule's bytes per source and time per query.

    python -m bench.per_source                    # 100,000 sources (about 20 s)
    python -m bench.per_source --sources 1000000  # a larger table (about 3 min)

Source addresses can be spoofed, so ``MaxQPSIPRule``'s table (``ratelimit.SourceRates``)
must stay small per source and cost the same per query whatever it holds.  This fills a
rule's table to its bound (``--sources``) with distinct sources, one query each, and then
measures, in this process and inside ``trio.run`` as the server runs rules:

* bytes per source: what ``tracemalloc`` sees the table grow by, over the bound, after one
  more fifth of the bound in new sources (so evictions are in the steady state), for IPv4
  (/32) and IPv6 (/64) sources;
* the time per query of a source already in the table (``hit``), of a new source when the
  table is full (``new, full``: an eviction each) and of a source over its rate
  (``limited``): the best of five loops of ``--queries`` queries;
* the slowest single new-source query of a run of ``--sources`` of them, in CPU time with
  the garbage collector off: the pause when Python rebuilds one shard's dict, with the
  rule's ten shards and with one (``shards=1``, the whole table rebuilt at once);
* lines of Python run for one new source with a full table, at a tenth of the bound and at
  the bound: deterministic, and the same for both when the cost does not grow with the table.

The log's warning that a table is full is silenced: it comes once per table.

Times depend on the machine and its load; the lines and the bytes do not.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import tracemalloc
from collections.abc import Callable
from types import FrameType
from typing import Any

import dns.message
import trio

from triodist.rules.selectors import MaxQPSIPRule
from triodist.wire.message import DNSQuestion

WIRE = dns.message.make_query("www.example.org.", "A").to_wire()


def v4(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def v6(n: int) -> str:
    return f"2001:db8:{n >> 16 & 0xFFFF:x}:{n & 0xFFFF:x}::1"


def fill(rule: MaxQPSIPRule, address: Callable[[int], str], start: int, count: int) -> None:
    dq = DNSQuestion(WIRE, (address(start), 5300), ("127.0.0.1", 53))
    for n in range(start, start + count):
        dq.remote = (address(n), 5300)
        rule.matches(dq)


def bytes_per_source(bound: int, address: Callable[[int], str]) -> float:
    rule = MaxQPSIPRule(10, max_entries=bound)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill(rule, address, 0, bound + bound // 5)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / len(rule.table)


def per_query(rule: MaxQPSIPRule, hosts: list[str], repeats: int = 5) -> float:
    """The best of ``repeats`` loops over ``hosts``, in µs per query."""
    dq = DNSQuestion(WIRE, (hosts[0], 5300), ("127.0.0.1", 53))
    remotes = [(host, 5300) for host in hosts]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for remote in remotes:
            dq.remote = remote
            rule.matches(dq)
        best = min(best, time.perf_counter() - start)
    return best / len(hosts) * 1e6


def slowest_new_source(bound: int, shards: int = 10) -> tuple[float, float]:
    """(median, slowest) time of one new-source query, µs, over ``bound`` of them."""
    rule = MaxQPSIPRule(10, max_entries=bound, shards=shards)
    fill(rule, v4, 0, bound)
    dq = DNSQuestion(WIRE, (v4(0), 5300), ("127.0.0.1", 53))
    remotes = [(v4(n), 5300) for n in range(bound, 2 * bound)]
    times: list[float] = []
    # CPU time of this thread: the machine's other processes do not count in it (a
    # wall clock would show the scheduler's slices, not the table's cost).
    clock = time.thread_time
    gc.disable()
    try:
        for remote in remotes:
            dq.remote = remote
            start = clock()
            rule.matches(dq)
            times.append(clock() - start)
    finally:
        gc.enable()
    times.sort()
    return times[len(times) // 2] * 1e6, times[-1] * 1e6


def lines_for_a_new_source(bound: int) -> int:
    # A rate so slow that no bucket is full again before the end, however long the
    # filling takes: each eviction then takes the same branches.
    rule = MaxQPSIPRule(0.0001, max_entries=bound)
    fill(rule, v4, 0, bound + 1)
    dq = DNSQuestion(WIRE, (v4(bound + 1), 5300), ("127.0.0.1", 53))
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += event == "line"
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        rule.matches(dq)
    finally:
        sys.settrace(previous)
    return count


async def main(sources: int, queries: int) -> None:
    print(f"MaxQPSIPRule, a table of {sources:,} sources")
    for family, address in (("IPv4 /32", v4), ("IPv6 /64", v6)):
        print(f"  bytes per source, {family}: {bytes_per_source(sources, address):.0f}")

    rule = MaxQPSIPRule(10, max_entries=sources)
    fill(rule, v4, 0, sources)
    step = max(1, sources // queries)
    known = [v4(n) for n in range(0, sources, step)][:queries]
    print(f"  hit (a known source):        {per_query(rule, known):.2f} µs a query")
    fresh = [v4(n) for n in range(sources, sources + 5 * queries)]
    # Five loops of new sources: each loop's sources are new to the table (best of 5).
    best = min(per_query(rule, fresh[i * queries : (i + 1) * queries], 1) for i in range(5))
    print(f"  new source, table full:      {best:.2f} µs a query (an eviction each)")
    limited = MaxQPSIPRule(1)
    print(f"  limited (over its rate):     {per_query(limited, [v4(1)] * queries):.2f} µs a query")
    for shards in (10, 1):
        median, slowest = slowest_new_source(sources, shards)
        print(
            f"  new sources one by one, {shards:2d} shard{'s' if shards > 1 else ' '}: "
            f"median {median:.2f} µs, slowest {slowest / 1000:.2f} ms (CPU)"
        )
    small, large = lines_for_a_new_source(sources // 10), lines_for_a_new_source(sources)
    print(
        f"  lines of Python, new source: {small} at {sources // 10:,} entries, "
        f"{large} at {sources:,}"
    )


def cli() -> None:
    logging.getLogger("triodist.util.ratelimit").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=int, default=100_000, help="the table's bound")
    parser.add_argument("--queries", type=int, default=20_000, help="queries per timed loop")
    args = parser.parse_args()
    trio.run(main, args.sources, args.queries)


if __name__ == "__main__":
    cli()
