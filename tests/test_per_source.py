"""Tables kept per client address: bounded, O(1) per query, and hard to game by spoofing.

Source addresses cost an attacker nothing over UDP, so a table keyed on them must cost
the same whatever it holds (no walk over it for a new source), stay small per source,
and, when full, forget the sources that came once before the client it is limiting.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import tracemalloc
from collections.abc import Callable
from types import FrameType
from typing import Any

import dns.message
import dns.rcode
import trio
import trio.testing
from conftest import StartTriodist, query

from triodist.rules.matchers import IPAddress, NetmaskGroup
from triodist.rules.selectors import MaxQPSIPRule
from triodist.wire.message import DNSQuestion

WIRE = query("www.example.org.").to_wire()


def _question(host: str) -> DNSQuestion:
    return DNSQuestion(WIRE, (host, 5300), ("127.0.0.1", 53))


def _v4(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _v6(n: int) -> str:
    # One /64 per source: the rule's default IPv6 mask.
    return f"2001:db8:{n >> 16 & 0xFFFF:x}:{n & 0xFFFF:x}::1"


def _lines_run(call: Callable[[], Any]) -> int:
    """How many lines of Python ``call`` runs: a count of the work done in Python,
    which does not depend on the machine's speed or load (a walk over a table shows
    as one line or more per entry)."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


async def test_a_new_source_costs_the_same_whatever_the_table_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # (The mock clock stands still: no bucket fills up during the measure.)
    def cost_of_a_new_source(bound: int) -> tuple[int, MaxQPSIPRule]:
        rule = MaxQPSIPRule(10, max_entries=bound)
        dq = _question(_v4(0))
        # Fill the table to its bound, each source seen twice: every entry then has a
        # second chance to be given before one can go, the most work eviction does.
        for n in range(bound + 1):  # one over: the first eviction (and its warning)
            dq.remote = (_v4(n), 5300)
            rule.matches(dq)
            rule.matches(dq)
        dq.remote = (_v4(bound + 1), 5300)
        return _lines_run(lambda: rule.matches(dq)), rule

    small, _ = cost_of_a_new_source(1_000)
    large, rule = cost_of_a_new_source(20_000)
    assert large == small, (small, large)
    assert large < 100
    assert rule.getStats()["entries"] == 20_000
    assert rule.getStats()["evictions"] == 2


async def test_each_source_costs_at_most_200_bytes() -> None:
    bound = 100_000
    for family, address in (("IPv4", _v4), ("IPv6", _v6)):
        rule = MaxQPSIPRule(10, max_entries=bound)
        dq = _question(address(0))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            # Past the bound, so that the table's steady state (evictions) is measured too.
            for n in range(bound + bound // 5):
                dq.remote = (address(n), 5300)
                rule.matches(dq)
            per_source = (tracemalloc.get_traced_memory()[0] - before) / bound
        finally:
            tracemalloc.stop()
        assert per_source <= 200, f"{family}: {per_source:.0f} bytes per source"
        assert rule.getStats()["entries"] == bound


async def test_sources_are_grouped_by_their_masks() -> None:
    rule = MaxQPSIPRule(1, 24, 48)
    dq = _question("192.0.2.1")
    assert not rule.matches(dq)
    for host in ("192.0.2.200", "::ffff:192.0.2.7"):  # same /24 (mapped too)
        dq.remote = (host, 5300)
        assert rule.matches(dq)
    dq.remote = ("192.0.3.1", 5300)
    assert not rule.matches(dq)
    dq.remote = ("2001:db8:1:2::1", 5300)
    assert not rule.matches(dq)
    dq.remote = ("2001:db8:1:ffff::1%eth0", 5300)  # same /48
    assert rule.matches(dq)
    # ::c000:201 is 192.0.2.1 as an integer: another family all the same.
    whole = MaxQPSIPRule(1, 32, 128)
    dq.remote = ("192.0.2.1", 5300)
    assert not whole.matches(dq)
    dq.remote = ("::c000:201", 5300)
    assert not whole.matches(dq)
    assert whole.matches(dq)


async def test_idle_sources_expire_a_few_at_each_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rule = MaxQPSIPRule(10, expiration=300)
    dq = _question(_v4(0))
    for n in range(100):
        dq.remote = (_v4(n), 5300)
        rule.matches(dq)
    await trio.sleep(301)
    for n in range(100, 150):  # each new source forgets two idle ones
        dq.remote = (_v4(n), 5300)
        rule.matches(dq)
    stats = rule.getStats()
    assert stats["expired"] == 100
    assert stats["entries"] == 50
    assert stats["evictions"] == 0


async def test_a_flood_of_spoofed_sources_does_not_free_a_limited_client(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    # A table of 100 (the ninth argument, triodist's own), one query per 100 s each.
    t = await start_triodist(
        """
        limiter = MaxQPSIPRule(0.01, 32, 64, 1, 300, 60, 10, 10, 100)
        addAction(limiter, RCodeAction(DNSRCode.REFUSED))
        addAction(AllRule(), SpoofAction("192.0.2.2"))
        """
    )

    async def ask_from(source: str) -> int:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind((source, 0))
            await sock.connect(t.address)
            await sock.send(WIRE)
            with trio.fail_after(2):
                return dns.message.from_wire(await sock.recv(65535)).rcode()

    client = "127.0.0.1"
    assert await ask_from(client) == dns.rcode.NOERROR
    assert await ask_from(client) == dns.rcode.REFUSED
    # 1,000 sources, each new and each let through once, ten times the table's size;
    # the limited client keeps asking and stays limited all along.
    refused = 0
    for n in range(1_000):
        assert await ask_from(f"127.1.{n >> 8}.{n & 255}") == dns.rcode.NOERROR
        if n % 5 == 4:
            refused += await ask_from(client) == dns.rcode.REFUSED
    assert refused == 200
    stats = t.lua.lua.eval("limiter:getStats()")  # as the console would read them
    assert stats["entries"] <= 100
    assert stats["evictions"] >= 900


def test_a_full_acl_memo_forgets_one_verdict_per_new_client() -> None:
    acl = NetmaskGroup(["10.0.0.0/8"])
    acl.MAX_VERDICTS = 100
    parsed: list[str] = []

    def parse(host: str) -> IPAddress:
        parsed.append(host)
        return ipaddress.ip_address(host)

    for n in range(100):
        assert acl.match_host(_v4(n), parse)
    # Past the bound, each new client costs one verdict (the oldest), not all of them:
    # the clients seen lately still find theirs.
    for n in range(100, 150):
        assert acl.match_host(_v4(n), parse)
    parsed.clear()
    for n in range(50, 150):
        assert acl.match_host(_v4(n), parse)
    assert parsed == []
    assert acl.verdicts_evicted == 50
