"""The packet cache in a running triodist: real sockets on loopback, a fake backend.

The cache's own rules (TTL arithmetic, keys, eviction) are tested directly in
``test_cache.py``; here is what a user sees from outside: hits never reach the backend,
answers keep the client's ID and case, TTLs age with the clock, stale answers flow when
every backend is down, and the cache rule chains run where dnsdist runs them.
"""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest
import trio
import trio.testing
from conftest import StartTriodist, query, records, ttls

from triodist.cache.packetcache import PacketCache
from triodist.cli import main
from triodist.testing.backend import AuthServer

# The backend is not health-checked here: the tests move the clock by hand, and a check
# in flight across a jump would time out and mark the backend down.
CACHE = (
    'newServer{address="$BACKEND", healthCheckMode="up"}\n'
    'pc = newPacketCache(100)\ngetPool(""):setCache(pc)\n'
)


HEALTH_CHECK = dns.name.from_text("a.root-servers.net.")


def reached(auth: AuthServer, transport: str = "udp") -> int:
    """Queries that reached the backend over ``transport``, health checks left out."""
    return sum(1 for r in auth.received if r.transport == transport and r.qname != HEALTH_CHECK)


def _cache(t: object) -> PacketCache:
    cache = t.lua.api.config.routing.pools[""].cache  # type: ignore[attr-defined]
    assert isinstance(cache, PacketCache)
    return cache


async def test_a_hit_never_reaches_the_backend(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CACHE)
    first = await t.ask("www.example.org.")
    second = await t.ask("www.example.org.")
    assert first is not None and second is not None
    assert (
        records(second)
        == records(first)
        == {
            "www.example.org. A 192.0.2.10",
            "www.example.org. A 192.0.2.11",
        }
    )
    assert reached(auth) == 1
    assert t.stats["cache-misses"] == 1 and t.stats["cache-hits"] == 1
    assert len(_cache(t)) == 1


async def test_no_cache_means_every_query_is_forwarded(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}')
    for _ in range(3):
        assert await t.ask("www.example.org.") is not None
    assert reached(auth) == 3


async def test_the_answer_carries_the_clients_id_and_case(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CACHE)
    assert await t.ask("www.example.org.") is not None
    msg = query("WwW.eXaMpLe.OrG.")
    msg.id = 4242
    reply = await t.udp(msg)
    assert reply is not None and reply.id == 4242
    assert reached(auth) == 1  # the different case was a hit
    assert reply.question[0].name.to_text() == "WwW.eXaMpLe.OrG."
    # The answer's owner names point at the question, so they read in the client's case too.
    assert {r.lower() for r in records(reply)} == {
        "www.example.org. a 192.0.2.10",
        "www.example.org. a 192.0.2.11",
    }


async def test_ttls_age_with_the_clock(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(CACHE)
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 3600}
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 5}
    mock_clock.jump(3)
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 3597}
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 2}
    mock_clock.jump(3)  # short's answer expired: asked again, fresh TTL
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 5}
    assert reached(auth) == 3


async def test_dont_age_keeps_the_ttl(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        CACHE.replace("newPacketCache(100)", "newPacketCache(100, {dontAge=true})")
    )
    assert await t.ask("www.example.org.") is not None
    mock_clock.jump(100)
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 3600}
    assert reached(auth) == 1


def _variants() -> list[dns.message.Message]:
    """The same question asked in ways that must not share a cache entry."""
    plain = query("www.example.org.")
    no_rd = query("www.example.org.", rd=False)
    cd = query("www.example.org.")
    cd.flags |= dns.flags.CD
    edns = query("www.example.org.", edns=True)
    do = dns.message.make_query("www.example.org.", "A", want_dnssec=True)
    ecs1 = dns.message.make_query(
        "www.example.org.", "A", use_edns=0, options=[dns.edns.ECSOption("192.0.2.0", 24)]
    )
    ecs2 = dns.message.make_query(
        "www.example.org.", "A", use_edns=0, options=[dns.edns.ECSOption("198.51.100.0", 24)]
    )
    return [plain, no_rd, cd, edns, do, ecs1, ecs2]


async def test_rd_cd_do_ecs_are_different_keys(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CACHE)
    variants = _variants()
    for msg in variants:
        assert await t.udp(msg) is not None
    assert reached(auth) == len(variants)
    assert len(_cache(t)) == len(variants)
    # ... and each of them is now a hit, with its own flags back.
    for msg in _variants():
        reply = await t.udp(msg)
        assert reply is not None
        assert bool(reply.flags & dns.flags.RD) == bool(msg.flags & dns.flags.RD)
        assert bool(reply.flags & dns.flags.CD) == bool(msg.flags & dns.flags.CD)
    assert reached(auth) == len(variants)


async def test_udp_and_tcp_are_different_keys(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CACHE)
    assert await t.ask("www.example.org.") is not None
    assert await t.ask("www.example.org.", tcp=True) is not None
    assert await t.ask("www.example.org.", tcp=True) is not None
    assert (reached(auth), reached(auth, "tcp")) == (1, 1)


async def test_collisions_are_rechecked(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(CACHE)
    cache = _cache(t)
    cache.hash_function = lambda ident: 7  # every question on one key
    www = await t.ask("www.example.org.")
    mail = await t.ask("mail.example.org.")
    assert records(www) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert records(mail) == {"mail.example.org. A 192.0.2.25"}
    # The second question was never served the first one's answer, whichever is kept.
    for _ in range(2):
        assert records(await t.ask("mail.example.org.")) == {"mail.example.org. A 192.0.2.25"}
        assert records(await t.ask("www.example.org.")) == {
            "www.example.org. A 192.0.2.10",
            "www.example.org. A 192.0.2.11",
        }
    stats = cache.getStats()
    assert stats["lookupCollisions"] >= 2
    assert stats["insertCollisions"] >= 1


async def test_a_full_cache_evicts(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(CACHE.replace("newPacketCache(100)", "newPacketCache(2)"))
    for name in ("www", "mail", "txt", "ns1"):
        assert await t.ask(f"{name}.example.org.", "TXT" if name == "txt" else "A") is not None
        assert len(_cache(t)) <= 2
    assert len(_cache(t)) == 2
    before = reached(auth)
    assert await t.ask("ns1.example.org.") is not None  # the newest is kept
    assert reached(auth) == before


async def test_truncated_answers_are_not_cached(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CACHE)
    auth.mode = "truncate"
    for _ in range(2):
        reply = await t.ask("www.example.org.")
        assert reply is not None and reply.flags & dns.flags.TC
    assert reached(auth) == 2
    assert len(_cache(t)) == 0


async def test_servfail_is_cached_for_the_temporary_failure_ttl(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        CACHE.replace("newPacketCache(100)", "newPacketCache(100, {temporaryFailureTTL=30})")
    )
    auth.mode = "servfail"
    for _ in range(2):
        reply = await t.ask("www.example.org.")
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert reached(auth) == 1
    auth.mode = "answer"
    mock_clock.jump(31)
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert reached(auth) == 2


async def test_negative_answers_are_kept_for_their_soa_ttl(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    # The backend sends the SOA with TTL 300 (its MINIMUM; the rule that picks the smaller of
    # SOA TTL and MINIMUM is tested in test_cache.py): kept 300 s, its TTL ages.
    t = await start_triodist(CACHE)
    for _ in range(2):
        reply = await t.ask("nothing-here.example.org.")
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert reached(auth) == 1
    mock_clock.jump(100)
    reply = await t.ask("nothing-here.example.org.")
    assert reply is not None and [r.ttl for r in reply.authority] == [200]
    mock_clock.jump(201)
    assert await t.ask("nothing-here.example.org.") is not None
    assert reached(auth) == 2


async def test_max_negative_ttl_caps_negative_answers(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        CACHE.replace("newPacketCache(100)", "newPacketCache(100, {maxNegativeTTL=60})")
    )
    assert await t.ask("nothing-here.example.org.") is not None
    mock_clock.jump(59)
    assert await t.ask("nothing-here.example.org.") is not None
    assert reached(auth) == 1
    mock_clock.jump(2)
    assert await t.ask("nothing-here.example.org.") is not None
    assert reached(auth) == 2


async def test_stale_answers_flow_when_every_backend_is_down(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        CACHE.replace("newPacketCache(100)", "newPacketCache(100, {staleTTL=42})")
        + "setStaleCacheEntriesTTL(60)\nsetServFailWhenNoServer(true)\n"
    )
    assert await t.ask("short.example.org.") is not None
    mock_clock.jump(35)  # the 5 s answer expired 30 s ago
    t.lua.api.getServer(0).setDown()
    reply = await t.ask("short.example.org.")
    assert ttls(reply) == {"short.example.org. A": 42}
    assert reached(auth) == 1
    mock_clock.jump(40)  # beyond the stale window: nothing to serve, no server
    reply = await t.ask("short.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    # A backend that is up again is asked, stale or not.
    t.lua.api.getServer(0).setUp()
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 5}
    assert reached(auth) == 2


async def test_expired_entries_are_not_served_while_a_backend_is_up(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(CACHE + "setStaleCacheEntriesTTL(600)\n")
    assert await t.ask("short.example.org.") is not None
    mock_clock.jump(10)
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 5}
    assert reached(auth) == 2


async def test_skip_cache_actions(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        CACHE
        + 'addAction(QNameRule("www.example.org."), SetSkipCacheAction())\n'
        + 'addResponseAction(QNameRule("mail.example.org."), SetSkipCacheResponseAction())\n'
    )
    for _ in range(2):
        assert await t.ask("www.example.org.") is not None
        assert await t.ask("mail.example.org.") is not None
        assert await t.ask("ns1.example.org.") is not None
    assert len(auth.queries_for("www.example.org.")) == 2
    assert len(auth.queries_for("mail.example.org.")) == 2
    assert len(auth.queries_for("ns1.example.org.")) == 1


async def test_cache_rule_chains(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        CACHE
        + 'addCacheHitResponseAction(AllRule(), SetTagResponseAction("hit", "yes"))\n'
        + 'addCacheHitResponseAction(QNameRule("mail.example.org."), DropResponseAction())\n'
        + 'addCacheMissAction(QNameRule("txt.example.org."), RCodeAction(DNSRCode.REFUSED))\n'
        + "addCacheInsertedResponseAction(AllRule(), LimitTTLResponseAction(0, 10))\n"
    )
    # Cache-inserted rules change what this client gets, not what the cache keeps.
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 10}
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 3600}
    # Cache-hit rules run on hits only.
    assert await t.ask("mail.example.org.") is not None
    assert await t.ask("mail.example.org.", timeout=0.5) is None
    # Cache-miss rules run on misses, before the backend.
    reply = await t.ask("txt.example.org.", "TXT")
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    assert auth.queries_for("txt.example.org.") == []
    rules = t.server.config.chains
    assert [r.matches for r in rules.cache_hit.rules] == [2, 1]
    assert [r.matches for r in rules.cache_miss.rules] == [1]
    assert [r.matches for r in rules.cache_inserted.rules] == [2]


async def test_cache_methods_from_lua(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    t = await start_triodist(CACHE)
    for name in ("www", "mail", "ns1"):
        assert await t.ask(f"{name}.example.org.") is not None
    dump = tmp_path / "cache.dump"
    run = t.lua.lua.execute
    run(f'getPool(""):getCache():dump("{dump}")')
    text = dump.read_text()
    assert "www.example.org" in text and "mail.example.org" in text
    assert run('return getPool(""):getCache():getStats()["entries"]') == 3
    run('pc:expungeByName(newDNSName("www.example.org."))')
    assert len(_cache(t)) == 2
    run('pc:expungeByName(newDNSName("example.org."), DNSQType.ANY, true)')
    assert len(_cache(t)) == 0
    assert await t.ask("www.example.org.") is not None
    assert len(auth.queries_for("www.example.org.")) == 2


def test_newpacketcache_errors_name_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.lua"
    path.write_text('newServer{address="127.0.0.1:5300"}\n\npc = newPacketCache(10, {maxTTl=5})\n')
    assert main(["check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3:" in err and "maxTTl" in err


async def test_expired_entries_are_cleaned_periodically(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(CACHE + "setCacheCleaningDelay(30)\n")
    assert await t.ask("short.example.org.") is not None  # TTL 5
    assert await t.ask("www.example.org.") is not None  # TTL 3600
    assert len(_cache(t)) == 2
    mock_clock.jump(31)
    await trio.testing.wait_all_tasks_blocked()
    assert len(_cache(t)) == 1


async def test_keep_stale_data_survives_cleaning_while_all_backends_are_down(
    start_triodist: StartTriodist, auth: AuthServer, mock_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        CACHE.replace("newPacketCache(100)", "newPacketCache(100, {keepStaleData=true})")
        + "setCacheCleaningDelay(30)\nsetStaleCacheEntriesTTL(3600)\n"
    )
    assert await t.ask("short.example.org.") is not None
    t.lua.api.getServer(0).setDown()
    mock_clock.jump(31)
    await trio.testing.wait_all_tasks_blocked()
    assert len(_cache(t)) == 1
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 60}
    t.lua.api.getServer(0).setUp()
    mock_clock.jump(31)
    await trio.testing.wait_all_tasks_blocked()
    assert len(_cache(t)) == 0


async def test_stale_answers_when_the_health_checks_find_every_backend_dead(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND", checkInterval=1, maxCheckFailures=2, checkTimeout=100}\n'
        'pc = newPacketCache(100, {staleTTL=42})\ngetPool(""):setCache(pc)\n'
        "setStaleCacheEntriesTTL(600)\nsetServFailWhenNoServer(true)\n"
    )
    assert ttls(await t.ask("short.example.org.")) == {"short.example.org. A": 5}
    # The backend dies: no more answers, health checks included.
    auth.mode = "silent"
    auth.modes["a.root-servers.net."] = "silent"
    await trio.sleep(3)  # two failed checks, one per second
    assert not t.lua.api.getServer(0).isUp()
    await trio.sleep(7)  # the 5 s answer has expired
    reply = await t.ask("short.example.org.")
    assert ttls(reply) == {"short.example.org. A": 42}
    # A name never cached has nothing to fall back on.
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert reached(auth) == 1
