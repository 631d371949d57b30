"""Spoofing from Lua, end to end: ``dq:spoof`` with a table, ``DNSAction.SpoofRaw``
returned by a ``LuaAction``, and ``getStatisticsCounters()`` read by a rule.

Each test starts triodist on loopback in front of an ``AuthServer`` (the
``example.org.`` zone) and sends real queries; what comes back is what dnsdist 1.7.3
answers to the same configuration (``tests/differential/lua-spoof.lua`` compares the
two directly).
"""

from __future__ import annotations

import dns.flags
import dns.rcode
from conftest import StartTriodist, query, records, ttls

from triodist.testing.backend import AuthServer

NAME = "host.example.org."

# One rule per name, so that each test reads as one behaviour.
SPOOF_TABLE = """
newServer{address="$BACKEND"}
addAction("addrs.example.org.", LuaAction(function(dq)
  dq:spoof({newCA("192.0.2.1"), newCA("192.0.2.2"), newCA("2001:db8::1")})
  return DNSAction.HeaderModify
end))
addAction("raw.example.org.", LuaAction(function(dq)
  dq:spoof({"\\003one\\003two", "\\005three"})
  return DNSAction.HeaderModify
end))
addAction("raw-aa.example.org.", LuaAction(function(dq)
  dq.dh:setAA(true)
  dq:spoof({"\\192\\000\\002\\009"})
  return DNSAction.HeaderModify
end))
addAction("mixed.example.org.", LuaAction(function(dq)
  dq:spoof({newCA("192.0.2.1"), "\\192\\000\\002\\001"})
  return DNSAction.HeaderModify
end))
addAction("www.example.org.", LuaAction(function(dq)
  dq:spoof({})
  return DNSAction.HeaderModify
end))
"""


async def test_spoof_with_a_table_of_addresses_answers_those_of_the_query_type(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF_TABLE)
    for tcp in (False, True):
        reply = await t.ask("addrs.example.org.", "A", tcp=tcp)
        assert reply is not None and reply.rcode() == dns.rcode.NOERROR
        assert records(reply) == {
            "addrs.example.org. A 192.0.2.1",
            "addrs.example.org. A 192.0.2.2",
        }
        assert ttls(reply) == {"addrs.example.org. A": 60}
    reply = await t.ask("addrs.example.org.", "AAAA")
    assert records(reply) == {"addrs.example.org. AAAA 2001:db8::1"}
    # No address of the query's type: the query goes on to the backend, as in dnsdist.
    reply = await t.ask("addrs.example.org.", "MX")
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert auth.udp_queries == 1


async def test_spoof_with_an_empty_table_forwards(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF_TABLE)
    reply = await t.ask("www.example.org.", "A")
    assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert auth.udp_queries == 1


async def test_spoof_with_a_table_of_strings_answers_raw_rdata(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF_TABLE)
    msg = query("raw.example.org.", "TXT", edns=True)
    reply = await t.udp(msg)
    assert reply is not None
    assert records(reply) == {'raw.example.org. TXT "one" "two"', 'raw.example.org. TXT "three"'}
    # Raw answers go without the client's OPT record, as dnsdist sends them.
    assert reply.edns < 0
    assert not reply.flags & dns.flags.AA
    # A rule's AA stays.
    reply = await t.ask("raw-aa.example.org.", "A")
    assert reply is not None and reply.flags & dns.flags.AA
    assert records(reply) == {"raw-aa.example.org. A 192.0.2.9"}
    assert auth.udp_queries == 0


async def test_spoof_with_a_mixed_table_fails_the_rule(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF_TABLE)
    reply = await t.ask("mixed.example.org.", "A")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert t.stats["rule-errors"] == 1
    # The server goes on.
    assert records(await t.ask("addrs.example.org.", "A")) == {
        "addrs.example.org. A 192.0.2.1",
        "addrs.example.org. A 192.0.2.2",
    }


SPOOF_RAW = """
newServer{address="$BACKEND"}
addAction("two.example.org.", LuaAction(function(dq)
  return DNSAction.SpoofRaw, "\\192\\000\\002\\007,\\192\\000\\002\\008"
end))
addAction("srv.example.org.", LuaAction(function(dq)
  dq.dh:setAA(true)
  return DNSAction.SpoofRaw, "\\000\\001\\000\\002\\000\\053\\003srv\\007example\\003org\\000"
end))
addAction("www.example.org.", LuaAction(function(dq)
  return DNSAction.SpoofRaw, ""
end))
"""


async def test_spoofraw_returned_by_a_lua_action(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF_RAW)
    for tcp in (False, True):
        reply = await t.ask("two.example.org.", "A", tcp=tcp)
        assert reply is not None and reply.rcode() == dns.rcode.NOERROR
        assert records(reply) == {"two.example.org. A 192.0.2.7", "two.example.org. A 192.0.2.8"}
        assert ttls(reply) == {"two.example.org. A": 60}
        assert not reply.flags & dns.flags.AA
    reply = await t.ask("srv.example.org.", "SRV")
    assert reply is not None and reply.flags & dns.flags.AA
    assert records(reply) == {"srv.example.org. SRV 1 2 53 srv.example.org."}
    assert auth.udp_queries + auth.tcp_queries == 0


async def test_spoofraw_with_nothing_forwards(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF_RAW)
    reply = await t.ask("www.example.org.", "A")
    assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert auth.udp_queries == 1


STATISTICS = """
newServer{address="$BACKEND"}
addAction("stats.example.org.", LuaAction(function(dq)
  local counters = getStatisticsCounters()
  -- dnsdist's names are all there, those triodist does not count at 0.
  if counters["trunc-failures"] ~= 0 or counters["latency0-1"] ~= 0 then
    return DNSAction.Refused
  end
  return DNSAction.Spoof, "192.0.2." .. counters["queries"]
end))
"""


async def test_getstatisticscounters_reads_the_counters_as_they_are(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(STATISTICS)
    for n in (1, 2, 3):
        reply = await t.ask("stats.example.org.", "A", tcp=n == 2)
        assert records(reply) == {f"stats.example.org. A 192.0.2.{n}"}
    counters = t.lua.api.getStatisticsCounters()
    assert counters["queries"] == 3
    assert counters["self-answered"] == 3
