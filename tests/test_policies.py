"""Server policies and pools: which backend a query goes to.

The big statistical samples call the policies directly (thousands of names in
milliseconds), with fixed seeds, fixed hash perturbations and stated
tolerances; the wiring (configuration → pipeline → backend) is checked end to
end with two ``AuthServer`` backends on loopback.  Reference values marked
"dnsdist 1.7.3" are what that version chose for the same names, weights,
server ids and perturbation.
"""

from __future__ import annotations

import io
import random
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import dns.message
import dns.rcode
import pytest
import trio
from conftest import StartTriodist, hostport, query, records, whoami

from triodist.backends.pools import (
    PolicySettings,
    Pool,
    ServerPolicy,
    builtin_policies,
    burtle_ci,
    select_server,
)
from triodist.backends.server import Server
from triodist.cache.packetcache import PacketCache
from triodist.config.api import ConfigAPI
from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import LuaConfig
from triodist.rules.selectors import PoolAvailableRule
from triodist.testing.backend import AuthServer
from triodist.wire.message import DNSQuestion

MakeAuth = Callable[..., Awaitable[AuthServer]]


def dq(name: str, qtype: str = "A") -> DNSQuestion:
    wire = dns.message.make_query(name, qtype).to_wire()
    return DNSQuestion(wire, ("192.0.2.200", 5353), ("127.0.0.1", 53))


def servers(*weights: int, orders: Sequence[int] = ()) -> list[Server]:
    """Servers s0, s1, ... with these weights (and orders), all up."""
    made = []
    for i, weight in enumerate(weights):
        order = orders[i] if orders else 1
        made.append(Server(f"192.0.2.{i + 1}", name=f"s{i}", weight=weight, order=order))
    return made


def policies(perturbation: int = 1234, seed: int = 7) -> dict[str, ServerPolicy]:
    return builtin_policies(PolicySettings(hash_perturbation=perturbation, rng=random.Random(seed)))


def spread(policy: ServerPolicy, pool: list[Server], names: Sequence[str]) -> Counter[str]:
    chosen = Counter[str]()
    for name in names:
        server = policy.choose(pool, dq(name))
        chosen[server.name if server else "-"] += 1
    return chosen


NAMES = [f"host{i}.zone{i % 17}.example." for i in range(3000)]


# --- the hash ----------------------------------------------------------------------------


def test_name_hash_is_dnsdists() -> None:
    # DNSName:hash() in dnsdist 1.7.3, over the wire name.
    expected = {
        "www.example.org": 608811838,
        "A.b.C": 4074008190,
        "x": 2700808934,
        "averyveryverylongname.with.many.labels.example.com": 3120687974,
        "Mixed.CASE.example.NET": 1613358370,
    }
    for name, value in expected.items():
        assert burtle_ci(dns.name.from_text(name).to_wire()) == value
    assert burtle_ci(b"\x03WWW\x00", 9) == burtle_ci(b"\x03www\x00", 9) != burtle_ci(b"\x03www\x00")


async def test_whashed_and_chashed_choose_what_dnsdist_chooses() -> None:
    # dnsdist 1.7.3: setWHashedPertubation(4242); weights 1, 3, 2; ids as below.
    pool = servers(1, 3, 2)
    pool[0].id = "11111111-2222-3333-4444-555555555555"  # type: ignore[attr-defined]
    pool[1].id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"  # type: ignore[attr-defined]
    pool[2].id = "01234567-89ab-cdef-0123-456789abcdef"  # type: ignore[attr-defined]
    reference = {  # name: (whashed, chashed), servers numbered from 1 as in the reference run
        "host-0.test.": (3, 2),
        "n25.Example4.ORG.": (2, 2),
        "n50.Example1.ORG.": (2, 2),
        "host-593925.test.": (3, 3),
        "n100.Example2.ORG.": (2, 3),
        "host-1187850.test.": (2, 2),
        "n200.Example4.ORG.": (1, 3),
        "host-1781775.test.": (1, 3),
        "n250.Example5.ORG.": (2, 1),
        "n275.Example2.ORG.": (2, 3),
    }
    p = policies(perturbation=4242)
    for name, (wh, ch) in reference.items():
        assert p["whashed"].choose(pool, dq(name)) is pool[wh - 1], name
        assert p["chashed"].choose(pool, dq(name)) is pool[ch - 1], name


# --- weighted policies ---------------------------------------------------------------------


async def test_wrandom_spreads_in_proportion_to_weight() -> None:
    pool = servers(1, 3)
    chosen = spread(policies(seed=11)["wrandom"], pool, NAMES[:4000] + NAMES[:1000])
    share = chosen["s1"] / sum(chosen.values())
    assert abs(share - 0.75) <= 0.05, chosen  # 4000 draws: 0.05 is about 7 standard deviations


async def test_whashed_spreads_by_weight_and_sticks_to_a_name() -> None:
    pool = servers(1, 3)
    whashed = policies()["whashed"]
    chosen = spread(whashed, pool, NAMES)
    assert abs(chosen["s1"] / len(NAMES) - 0.75) <= 0.05, chosen
    for name in NAMES[:50]:
        first = whashed.choose(pool, dq(name))
        assert whashed.choose(pool, dq(name)) is first
        assert whashed.choose(pool, dq(name.upper())) is first  # the hash ignores case


async def test_whashed_changes_with_the_perturbation() -> None:
    pool = servers(1, 1)
    before = [policies(perturbation=1)["whashed"].choose(pool, dq(n)) for n in NAMES[:400]]
    after = [policies(perturbation=2)["whashed"].choose(pool, dq(n)) for n in NAMES[:400]]
    again = [policies(perturbation=1)["whashed"].choose(pool, dq(n)) for n in NAMES[:400]]
    moved = sum(a is not b for a, b in zip(before, after, strict=True))
    assert 120 <= moved <= 280  # about half of the names change server (independent hashes)
    assert again == before


async def test_chashed_spreads_sticks_and_follows_the_perturbation() -> None:
    pool = servers(1000, 1000)
    chashed = policies()["chashed"]
    chosen = spread(chashed, pool, NAMES)
    assert abs(chosen["s0"] / len(NAMES) - 0.5) <= 0.08, chosen
    assert all(
        chashed.choose(pool, dq(n.upper())) is chashed.choose(pool, dq(n)) for n in NAMES[:50]
    )
    other = policies(perturbation=99)["chashed"]
    moved = sum(chashed.choose(pool, dq(n)) is not other.choose(pool, dq(n)) for n in NAMES[:400])
    assert moved >= 100


async def test_chashed_moves_only_the_names_next_to_a_new_servers_points() -> None:
    pool = servers(100, 100, 100, 100)
    chashed = policies()["chashed"]
    before = {n: chashed.choose(pool, dq(n)) for n in NAMES}
    bigger = [*pool, Server("192.0.2.50", name="new", weight=100)]
    after = {n: chashed.choose(bigger, dq(n)) for n in NAMES}
    moved = [n for n in NAMES if after[n] is not before[n]]
    # Ideally 1/5 of the names move, all of them to the new server.
    assert 0.1 <= len(moved) / len(NAMES) <= 0.3, len(moved)
    assert {after[n].name for n in moved} == {"new"}  # type: ignore[union-attr]
    # Taking a server out moves only its own names.
    smaller = pool[1:]
    for name in NAMES:
        if before[name] is not pool[0]:
            assert chashed.choose(smaller, dq(name)) is before[name]


async def test_bounded_load_passes_over_a_server_with_more_than_its_share() -> None:
    settings = PolicySettings(hash_perturbation=5, rng=random.Random(3))
    p = builtin_policies(settings)
    pool = servers(1, 1)
    pool[0].outstanding = 10  # target per weight: (1 + 10) / 2 * 1.5 = 8.25
    assert {p["wrandom"].choose(pool, dq(n)) for n in NAMES[:200]} == set(pool)
    settings.weighted_balancing_factor = 1.5
    settings.consistent_hash_balancing_factor = 1.5
    for name in ("wrandom", "whashed", "chashed"):
        assert {p[name].choose(pool, dq(n)) for n in NAMES[:200]} == {pool[1]}, name


# --- ordered policies ----------------------------------------------------------------------


async def test_least_outstanding_by_outstanding_then_order_then_latency() -> None:
    a, b, c = servers(1, 1, 1, orders=(2, 1, 1))
    least = policies()["leastOutstanding"]
    a.outstanding, b.outstanding, c.outstanding = 0, 3, 3
    assert least.choose([a, b, c], dq("x.")) is a
    a.outstanding = 3
    b.latency_us, c.latency_us = 900.0, 200.0
    assert least.choose([a, b, c], dq("x.")) is c  # order 1 beats a; then lower latency
    c.latency_us = 1000.0
    assert least.choose([a, b, c], dq("x.")) is b
    b.setDown()
    c.setDown()
    assert least.choose([a, b, c], dq("x.")) is a
    a.setDown()
    assert least.choose([a, b, c], dq("x.")) is None


async def test_first_available_honours_order_and_qps(autojump_clock: trio.abc.Clock) -> None:
    low, high = servers(1, 1, orders=(1, 2))
    low.qps = 10
    pool = Pool("", [high, low])  # given in the wrong order: the pool sorts by order
    first = policies()["firstAvailable"]
    assert [select_server(pool, first, dq("x.")) for _ in range(10)] == [low] * 10
    assert select_server(pool, first, dq("x.")) is high  # low is over its 10 qps
    await trio.sleep(1)
    assert select_server(pool, first, dq("x.")) is low
    # Every server over its limit: leastOutstanding among those up.
    high.qps = 1
    for _ in range(20):
        select_server(pool, first, dq("x."))
    low.outstanding = 2
    assert select_server(pool, first, dq("x.")) is high


async def test_roundrobin_cycles_among_up_servers_and_its_no_server_fallback() -> None:
    settings = PolicySettings()
    rr = builtin_policies(settings)["roundrobin"]
    pool = servers(1, 1, 1)
    pool[1].setDown()
    picks = [rr.choose(pool, dq("x.")) for _ in range(6)]
    assert picks == [pool[0], pool[2]] * 3
    for server in pool:
        server.setDown()
    # As dnsdist: with none up, roundrobin still picks among all of them...
    assert {id(rr.choose(pool, dq("x."))) for _ in range(6)} == {id(s) for s in pool}
    # ... unless setRoundRobinFailOnNoServer(true).
    settings.roundrobin_fail_on_no_server = True
    assert rr.choose(pool, dq("x.")) is None


async def test_builtin_policies_never_choose_a_server_that_is_down() -> None:
    pool = servers(5, 1, 5, orders=(1, 2, 1))
    pool[0].setDown()
    pool[2].setDown()
    for name, policy in policies().items():
        assert {policy.choose(pool, dq(n)) for n in NAMES[:100]} == {pool[1]}, name
        if name != "roundrobin":
            pool[1].setDown()
            assert policy.choose(pool, dq("x.")) is None, name
            pool[1].setAuto()


async def test_ordered_wrand_untag_uses_lowest_order_minus_tagged_servers() -> None:
    a, b, c = servers(1, 1, 1, orders=(1, 1, 2))
    policy = policies()["orderedWrandUntag"]
    assert {policy.choose([a, b, c], dq(n)) for n in NAMES[:100]} == {a, b}
    query_ = dq("x.")
    query_.setTag(a.getNameWithAddr(), "1")
    assert {policy.choose([a, b, c], query_) for _ in range(50)} == {b}
    query_.setTag(b.getNameWithAddr(), "1")
    assert policy.choose([a, b, c], query_) is c


# --- pools ----------------------------------------------------------------------------------


def test_pool_membership_follows_the_servers_at_once() -> None:
    api = ConfigAPI()
    a = api.newServer({"address": "192.0.2.1", "name": "a", "pool": ["p", "q"], "order": 3})
    b = api.newServer({"address": "192.0.2.2", "name": "b", "pool": "p"})
    c = api.newServer({"address": "192.0.2.3", "name": "c"})
    p = api.getPool("p")
    assert p.servers == [b, a]  # in order
    assert api.getPoolServers("q") == [a]
    assert api.getPoolServers("") == [c]
    c.addPool("p")
    a.rmPool("p")
    assert p.servers == [b, c]
    api.rmServer("b")
    assert p.servers == [c]
    assert api.getPool("new").servers == [] and "new" in api.config.routing.pools
    with pytest.raises(ConfigError, match="no pool named 'nope'"):
        api.getPoolServers("nope")
    # A number names a pool as Lua writes it: dnsdist's getPool(5) is the pool "5".
    assert api.getPool(5) is api.getPool("5") and api.getPoolServers(5) == []
    assert api.getPool(2.5) is api.getPool("2.5")


def test_pool_cache_and_string() -> None:
    pool = ConfigAPI().getPool("abuse")
    cache = PacketCache(10)
    pool.setCache(cache)
    assert pool.getCache() is cache and pool.cache is cache
    with pytest.raises(TypeError, match="expected a packet cache"):
        pool.setCache("not a cache")
    assert pool.cache is cache
    pool.unsetCache()
    assert pool.getCache() is None
    assert pool.toString() == 'ServerPool "abuse"'


def test_servers_are_numbered_by_order_and_found_by_name() -> None:
    api = ConfigAPI()
    late = api.newServer({"address": "192.0.2.1", "name": "late", "order": 2})
    early = api.newServer({"address": "192.0.2.2", "name": "early", "order": 1})
    assert api.getServer(0) is early and api.getServer(1) is late
    assert api.getServer("late") is late and api.getServers() == [early, late]
    with pytest.raises(ConfigError, match="no server number 2"):
        api.getServer(2)
    with pytest.raises(ConfigError, match="no server named 'nope'"):
        api.rmServer("nope")
    api.rmServer(0)
    assert api.getServers() == [late]
    api.rmServer(late)
    assert api.getServers() == []


def test_get_servers_and_pool_servers_are_lua_arrays(tmp_path: Path) -> None:
    lua, _ = run(
        'newServer{address="192.0.2.1", name="late", order=2}\n'
        'newServer{address="192.0.2.2", name="early"}\n'
        'n, first, inpool = #getServers(), getServers()[1]:getName(), #getPoolServers("")\n',
        tmp_path,
    )
    assert (lua.lua.eval("n"), lua.lua.eval("first"), lua.lua.eval("inpool")) == (2, "early", 2)


async def test_pool_available_and_outstanding_rules() -> None:
    api = ConfigAPI()
    a = api.newServer({"address": "192.0.2.1", "pool": "p"})
    b = api.newServer({"address": "192.0.2.2", "pool": "p"})
    available = api.PoolAvailableRule("p")
    busy = api.PoolOutstandingRule("p", 5)
    assert isinstance(available, PoolAvailableRule)
    assert available.matches(dq("x.")) and not busy.matches(dq("x."))
    a.setDown()
    assert available.matches(dq("x."))
    b.setDown()
    assert not available.matches(dq("x."))
    assert not api.PoolAvailableRule("nowhere").matches(dq("x."))
    b.setUp()
    a.outstanding, b.outstanding = 3, 2
    assert not busy.matches(dq("x."))  # 5 is not over 5
    b.outstanding = 3
    assert busy.matches(dq("x."))
    assert str(available) == "pool 'p' is available"
    assert str(busy) == "pool 'p' outstanding > 5"
    # A pool named only by a server (addPool) is seen too.
    a.addPool("late")
    assert not api.PoolAvailableRule("late").matches(dq("x."))
    a.setAuto()
    assert api.PoolAvailableRule("late").matches(dq("x."))


# --- configurations ----------------------------------------------------------------------


def run(code: str, tmp_path: Path) -> tuple[LuaConfig, str]:
    """Run ``code`` as a rules.lua; the configuration and what it printed."""
    lua = LuaConfig()
    lua.api.out = io.StringIO()
    path = tmp_path / "rules.lua"
    path.write_text(code)
    lua.run_file(path)
    assert isinstance(lua.api.out, io.StringIO)
    return lua, lua.api.out.getvalue()


SHOW = """
newServer{address="192.0.2.1", name="a", order=2, weight=3, pool={"p1","p2"}, qps=10}
newServer{address="192.0.2.2", name="b"}
newServer{address="[2001:db8::1]:5300", pool="p1"}
newServer{address="192.0.2.77:5353", name="averyveryveryverylongservername", weight=12, order=3}
getServer(0):setDown()
getServer(1):setUp()
setPoolServerPolicyLua("last", function(servers, dq) return servers[1] end, "p1")
setServerPolicy(chashed)
getPool("empty")
"""


def test_show_servers_and_pools_print_dnsdists_tables(tmp_path: Path) -> None:
    # The layout of dnsdist 1.7.3 for the same configuration (where its health checks had
    # not marked the unreachable auto servers down yet).
    _, out = run(SHOW + "showServers()\nshowPools()\nshowServerPolicy()\n", tmp_path)
    assert out.splitlines() == [
        "#   Name                 Address                       State     Qps    Qlim Ord Wt"
        "    Queries   Drops Drate   Lat Outstanding Pools",
        "0   b                    192.0.2.2:53                   DOWN     0.0       0   1  1"
        "          0       0   0.0   0.0           0 ",
        "1   [2001:db8::1]:5300   [2001:db8::1]:5300               UP     0.0       0   1  1"
        "          0       0   0.0   0.0           0 p1",
        "2   a                    192.0.2.1:53                     up     0.0      10   2  3"
        "          0       0   0.0   0.0           0 p1 p2",
        "3   averyveryveryverylon 192.0.2.77:5353                  up     0.0       0   3 12"
        "          0       0   0.0   0.0           0 ",
        "All                                                              0.0                "
        "         0       0                         ",
        "Name                                    Cache         ServerPolicy Servers",
        "                                                           chashed b 192.0.2.2:53, "
        "averyveryveryverylongservername 192.0.2.77:5353",
        "empty                                                      chashed ",
        "p1                                                            last "
        "[2001:db8::1]:5300 [2001:db8::1]:5300, a 192.0.2.1:53",
        "p2                                                         chashed a 192.0.2.1:53",
        "chashed",
    ]


def test_show_servers_with_uuids_keeps_dnsdists_columns(tmp_path: Path) -> None:
    _, out = run(
        'newServer{address="192.0.2.2", name="b"}\nshowServers({showUUIDs=true})\n', tmp_path
    )
    header, row, _ = out.splitlines()
    assert header.startswith("#   UUID" + " " * 33 + "Name                 Address")
    assert row.index("192.0.2.2:53") == header.index("Address") == 62


def test_policies_are_lua_values(tmp_path: Path) -> None:
    lua, out = run(
        'newServer("192.0.2.1")\n'
        'mine = newServerPolicy("mine", function(servers, dq) return nil end)\n'
        "setServerPolicy(chashed)\nsetPoolServerPolicy(mine, 'x')\n"
        "showServerPolicy()\nshowPoolServerPolicy('x')\nshowPoolServerPolicy('')\n",
        tmp_path,
    )
    assert out.splitlines() == ["chashed", "mine", "chashed"]
    shown = lua.lua.eval(
        "{tostring(chashed), whashed:toString(), roundrobin.name, tostring(wrandom.isLua),"
        " tostring(mine), tostring(mine.isLua)}"
    )
    assert list(shown.values()) == [
        'ServerPolicy "chashed"',
        'ServerPolicy "whashed"',
        "roundrobin",
        "false",
        'ServerPolicy (Lua) "mine"',
        "true",
    ]
    assert lua.api.config.routing.policy is lua.api.policies["chashed"]
    assert lua.api.config.routing.pools["x"].policy is lua.lua.globals().mine


def test_policy_tunables(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lua, _ = run(
        "setWHashedPertubation(77)\nsetRoundRobinFailOnNoServer(true)\n"
        "setWeightedBalancingFactor(1.5)\nsetConsistentHashingBalancingFactor(2)\n"
        "setWeightedBalancingFactor(0.5)\n",
        tmp_path,
    )
    settings = lua.api.policy_settings
    assert settings.hash_perturbation == 77 and settings.roundrobin_fail_on_no_server
    assert settings.weighted_balancing_factor == 1.5  # 0.5 refused, as dnsdist does
    assert settings.consistent_hash_balancing_factor == 2.0
    assert "Invalid value passed to setWeightedBalancingFactor()!" in caplog.text
    lua.run_string("setWHashedPerturbation(78)\nsetWeightedBalancingFactor(0)\n", "more.lua")
    assert settings.hash_perturbation == 78 and settings.weighted_balancing_factor == 0
    with pytest.raises(ConfigError, match=r"more\.lua:1:.*4294967295"):
        lua.run_string("setWHashedPertubation(-1)\n", "more.lua")


def test_ffi_policies_are_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # What they choose is tests/test_lua_ffi.py's; here, that they are the policies.
    lua, _ = run(
        "setServerPolicy(roundrobin)\n"
        'setServerPolicyLuaFFI("f", function(list, dq) return 0 end)\n'
        'setPoolServerPolicyLuaFFIPerThread("g", "return function() return 0 end", "p")\n',
        tmp_path,
    )
    routing = lua.api.config.routing
    assert (routing.policy.name, routing.policy.isFFI, routing.policy.isPerThread) == (
        "f",
        True,
        False,
    )
    assert (routing.pools["p"].policy.name, routing.pools["p"].policy.isPerThread) == ("g", True)
    assert "not supported" not in caplog.text


LUA_POLICIES = """
newServer{address="192.0.2.1", name="one"}
newServer{address="192.0.2.2", name="two"}
newServer{address="192.0.2.3", name="three", pool="other"}
getServer("one"):setDown()
seen = {}
function pick(servers, dq)
  seen[#seen + 1] = servers
  local wanted = dq.qname:toString()
  if wanted == "count." then return #servers end             -- an index (dnsdist 2.1)
  if wanted == "first." then return servers[1] end           -- a server (dnsdist <= 2.0)
  if wanted == "named." then
    for i = 1, #servers do
      if servers[i]:getName() == "two" then return servers[i] end
    end
  end
  if wanted == "zero." then return 0 end
  if wanted == "far." then return 3 end
  if wanted == "text." then return "two" end
  if wanted == "boom." then error("no luck") end
  if wanted == "builtin." then return leastOutstanding.policy(servers, dq) end
  return nil
end
setServerPolicyLua("pick", pick)
setPoolServerPolicy(roundrobin, "other")
"""


async def test_lua_policy_returns_a_server_or_an_index(tmp_path: Path) -> None:
    lua, _ = run(LUA_POLICIES, tmp_path)
    routing = lua.api.config.routing
    one, two = lua.api.getServer("one"), lua.api.getServer("two")
    main = routing.pool("")

    def pick(name: str) -> Server | None:
        return select_server(main, routing.policy, dq(name))

    assert pick("count.") is two
    assert pick("first.") is one  # the Lua policy sees (and may choose) a server that is down
    assert pick("named.") is two
    assert pick("builtin.") is two  # a built-in policy called from Lua skips the server down
    for name in ("zero.", "far.", "text.", "other."):
        assert pick(name) is None, name
    with pytest.raises(Exception, match="no luck"):
        pick("boom.")
    # The other pool has its own policy.
    assert select_server(routing.pool("other"), routing.policy, dq("count.")).name == "three"  # type: ignore[union-attr]


async def test_lua_policy_array_is_reused_while_the_pool_is_unchanged(tmp_path: Path) -> None:
    lua, _ = run(LUA_POLICIES, tmp_path)
    routing = lua.api.config.routing
    for _ in range(3):
        select_server(routing.pool(""), routing.policy, dq("count."))
    assert lua.lua.eval("seen[1] == seen[2] and seen[2] == seen[3] and #seen[1] == 2")
    lua.api.getServer("three").addPool("")
    assert select_server(routing.pool(""), routing.policy, dq("count.")).name == "three"  # type: ignore[union-attr]
    assert lua.lua.eval("seen[4] ~= seen[3] and #seen[4] == 3")
    # A policy that changes the array gets a fresh one next time.
    lua.run_string(
        "setServerPolicyLua('shrink', function(s, dq) table.remove(s); seen[#seen + 1] = s; "
        "return 1 end)\n",
        "more.lua",
    )
    for _ in range(2):
        select_server(routing.pool(""), routing.policy, dq("x."))
    assert lua.lua.eval("seen[5] ~= seen[6] and #seen[6] == 2")


def test_getserver_and_rmserver_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules\.lua:3: getServer: no server named 'nope'"):
        run('newServer("192.0.2.1")\n\ngetServer("nope"):setDown()\n', tmp_path)


async def test_check_config_reports_unknown_servers_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "rules.lua"
    config.write_text('newServer("192.0.2.1")\n\nrmServer(4)\n')
    result = await trio.run_process(
        [sys.executable, "-m", "triodist", "check-config", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if "Error" in line]
    assert len(errors) == 1 and f"{config}:3:" in errors[0] and "no server number 4" in errors[0]


# --- end to end ----------------------------------------------------------------------------


async def test_lua_policy_end_to_end(start_triodist: StartTriodist, make_auth: MakeAuth) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", name="a"}}\n'
        f'newServer{{address="{hostport(b)}", name="b"}}\n'
        "setServFailWhenNoServer(true)\n"
        "newServerPolicy('unused', function() end)\n"
        "setServerPolicy(newServerPolicy('by name', function(servers, dq)\n"
        "  local name = dq.qname:toString()\n"
        "  if name == 'www.example.org.' then return servers[2] end\n"
        "  if name == 'mail.example.org.' then return 1 end\n"
        "  if name == 'txt.example.org.' then error('policy failure') end\n"
        "  return nil\n"
        "end))\n"
    )
    assert records(await t.ask("www.example.org.")) >= {"www.example.org. A 192.0.2.10"}
    assert records(await t.ask("mail.example.org.")) == {"mail.example.org. A 192.0.2.25"}
    assert len(b.queries_for("www.example.org.")) == 1 and not a.queries_for("www.example.org.")
    assert len(a.queries_for("mail.example.org.")) == 1 and not b.queries_for("mail.example.org.")
    # No server (nil) and a failing policy: SERVFAIL, and the server goes on.
    for name in ("nothing.example.org.", "txt.example.org.", "txt.example.org."):
        reply = await t.ask(name, "TXT")
        assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert records(await t.ask("mail.example.org.")) == {"mail.example.org. A 192.0.2.25"}
    assert t.stats["no-policy"] == 3


async def test_lua_policy_per_pool_and_pool_action_that_goes_on(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", pool="p"}}\n'
        f'newServer{{address="{hostport(b)}", pool="p"}}\n'
        "setPoolServerPolicyLua('second', function(servers, dq) return 2 end, 'p')\n"
        # stop=false: the pool is set and the following rules still run.
        "addAction(AllRule(), PoolAction('p', false))\n"
        "addAction('mail.example.org.', RCodeAction(DNSRCode.REFUSED))\n"
    )
    for _ in range(3):
        assert records(await t.ask("www.example.org.")) >= {"www.example.org. A 192.0.2.10"}
    assert len(b.queries_for("www.example.org.")) == 3 and not a.queries_for("www.example.org.")
    reply = await t.ask("mail.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED


async def test_pool_available_rule_end_to_end(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    main = await make_auth(name="main")
    spare = await make_auth(name="spare")
    t = await start_triodist(
        f'newServer{{address="{hostport(main)}", pool="main"}}\n'
        f'newServer{{address="{hostport(spare)}", pool="spare"}}\n'
        "addAction(PoolAvailableRule('main'), PoolAction('main'))\n"
        "addAction(AllRule(), PoolAction('spare'))\n"
    )

    assert await whoami(t) == "main"
    t.lua.api.getServer(0).setDown()
    assert await whoami(t) == "spare"


async def test_chashed_and_perturbation_end_to_end(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", weight=100}}\n'
        f'newServer{{address="{hostport(b)}", weight=100}}\n'
        "setServerPolicy(chashed)\nsetWHashedPertubation(4242)\n"
    )
    assert t.lua.api.policy_settings.hash_perturbation == 4242
    names = [f"n{i}.wild.example.org." for i in range(16)]
    pool = t.lua.api.getPool("")
    policy = t.lua.api.config.routing.policy
    by_port = {a.address[1]: a, b.address[1]: b}  # type: ignore[index]
    for name in names:
        for _ in range(2):
            assert await t.ask(name) is not None
        chosen = policy.choose(pool.servers, dq(name))
        assert chosen is not None
        expected = by_port[chosen.address.port]
        other = b if expected is a else a
        assert len(expected.queries_for(name)) == 2 and not other.queries_for(name)
    assert a.queries_for(names[0]) or b.queries_for(names[0])
    assert all(s.queries > 0 for s in pool.servers)  # 16 names do not all go to one server


async def test_all_servers_down_drops_or_servfails(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer("$BACKEND")\nsetServerPolicy(whashed)\n')
    t.lua.api.getServer(0).setDown()
    assert await t.ask("www.example.org.", timeout=0.3) is None
    t.lua.api.setServFailWhenNoServer(True)
    reply = await t.udp(query("www.example.org."))
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert not auth.queries_for("www.example.org.")
