"""Every selector and action of a ``rules.lua``, end to end.

Each test loads a small configuration the way ``triodist serve`` does, starts
triodist on a loopback port in front of an ``AuthServer`` backend (the
``example.org.`` zone) and sends real queries over UDP and TCP.  What the client
gets back, and what the backend received, are what dnsdist 1.7.3 gives for the
same configuration (or, for the actions dnsdist added later, what its
documentation says).

Rate limits and delays run under ``autojump_clock``: virtual time, no wall time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
import trio
import trio.testing
from conftest import (
    CLOSED_UNANSWERED,
    StartTriodist,
    hostport,
    query,
    records,
    tcp_session,
    ttls,
    udp_query,
)

from triodist.testing.backend import AuthServer

MakeAuth = Callable[..., Awaitable[AuthServer]]

NOERROR = dns.rcode.NOERROR
NXDOMAIN = dns.rcode.NXDOMAIN
REFUSED = dns.rcode.REFUSED
SERVFAIL = dns.rcode.SERVFAIL

WWW = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}


def rcode(reply: dns.message.Message | None) -> int:
    assert reply is not None, "no reply"
    return int(reply.rcode())


def spoofed(reply: dns.message.Message | None, name: str, *addresses: str) -> bool:
    """The reply is a NOERROR answer holding exactly these A/AAAA records."""
    if reply is None or reply.rcode() != NOERROR:
        return False
    want = {f"{name} {'AAAA' if ':' in a else 'A'} {a}" for a in addresses}
    return records(reply) == want


# --- selectors ---------------------------------------------------------------------------


async def test_all_rule_matches_every_query(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(AllRule(), SpoofAction("192.0.2.200"))
        """
    )
    for name in ("www.example.org.", "anything.example.net.", "."):
        assert spoofed(await t.ask(name), name, "192.0.2.200")
        assert spoofed(await t.ask(name, tcp=True), name, "192.0.2.200")
    assert len(auth.received) == 0  # nothing reached the backend
    assert t.server.config.chains.queries.rules[0].matches == 6


async def test_qname_rule_exact_and_case_insensitive(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(QNameRule("www.example.org"), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert rcode(await t.ask("www.example.org.")) == REFUSED
    assert rcode(await t.ask("WwW.ExAmPle.ORG.")) == REFUSED
    assert rcode(await t.ask("www.example.org.", tcp=True)) == REFUSED
    # Neither a subdomain nor a parent matches.
    sub = await t.ask("a.www.example.org.")
    assert rcode(sub) == NXDOMAIN
    assert records(await t.ask("example.org.")) == {"example.org. A 192.0.2.1"}
    assert len(auth.received) == 2


async def test_qname_suffix_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(QNameSuffixRule({"blocked.example.org", "example.com"}),
                  RCodeAction(DNSRCode.NXDOMAIN))
        addAction(QNameSuffixRule("single.example.org"), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert rcode(await t.ask("blocked.example.org.")) == NXDOMAIN
    assert rcode(await t.ask("deep.down.blocked.example.org.")) == NXDOMAIN
    assert rcode(await t.ask("www.example.com.")) == NXDOMAIN
    assert rcode(await t.ask("x.single.example.org.", tcp=True)) == REFUSED
    # "notblocked.example.org" is not under "blocked.example.org": label boundaries count.
    assert rcode(await t.ask("notblocked.example.org.")) == NXDOMAIN  # from the backend
    assert records(await t.ask("www.example.org.")) == WWW


async def test_suffix_match_node_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        local smn = newSuffixMatchNode()
        smn:add("ads.example.org")
        smn:add(newDNSName("tracker.example.net"))
        addAction(SuffixMatchNodeRule(smn), SpoofAction("0.0.0.0"))
        """
    )
    assert spoofed(await t.ask("ads.example.org."), "ads.example.org.", "0.0.0.0")
    assert spoofed(await t.ask("x.ads.example.org."), "x.ads.example.org.", "0.0.0.0")
    assert spoofed(
        await t.ask("a.tracker.example.net.", tcp=True), "a.tracker.example.net.", "0.0.0.0"
    )
    assert records(await t.ask("www.example.org.")) == WWW


async def test_qname_set_rule_matches_exact_names_only(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        local names = newDNSNameSet()
        names:add(newDNSName("www.example.org"))
        names:add(newDNSName("mail.example.org"))
        addAction(QNameSetRule(names), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert rcode(await t.ask("www.example.org.")) == REFUSED
    assert rcode(await t.ask("MAIL.example.org.", tcp=True)) == REFUSED
    assert rcode(await t.ask("sub.www.example.org.")) == NXDOMAIN
    assert records(await t.ask("ns1.example.org.")) == {"ns1.example.org. A 192.0.2.53"}


async def test_qtype_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(QTypeRule(DNSQType.AAAA), RCodeAction(DNSRCode.REFUSED))
        addAction(QTypeRule("TXT"), SpoofAction("192.0.2.1"))
        """
    )
    assert rcode(await t.ask("www.example.org.", "AAAA")) == REFUSED
    assert records(await t.ask("www.example.org.", "A")) == WWW
    # A TXT query matches QTypeRule("TXT"), but SpoofAction has nothing of type TXT
    # to answer with, so the query goes on to the backend (as in dnsdist).
    assert records(await t.ask("txt.example.org.", "TXT")) == {'txt.example.org. TXT "hello world"'}


async def test_qclass_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(QClassRule(DNSClass.CHAOS), RCodeAction(DNSRCode.REFUSED, {aa=true}))
        """
    )
    chaos = await t.udp(query("version.bind.", "TXT", rdclass="CH"))
    assert rcode(chaos) == REFUSED
    assert chaos is not None and chaos.flags & dns.flags.AA
    assert records(await t.ask("www.example.org.")) == WWW


async def test_netmask_group_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        local local_clients = newNMG()
        local_clients:addMask("127.0.0.0/8")
        local elsewhere = newNMG()
        elsewhere:addMask("192.0.2.0/24")
        addAction(AndRule{QNameRule("a.example.org"), NetmaskGroupRule(elsewhere)},
                  RCodeAction(DNSRCode.REFUSED))
        addAction(AndRule{QNameRule("a.example.org"), NetmaskGroupRule(local_clients)},
                  SpoofAction("192.0.2.1"))
        -- src=false: the destination address (where triodist listens) is matched
        addAction(AndRule{QNameRule("b.example.org"), NetmaskGroupRule(local_clients, false)},
                  SpoofAction("192.0.2.2"))
        """
    )
    assert spoofed(await t.ask("a.example.org."), "a.example.org.", "192.0.2.1")
    assert spoofed(await t.ask("a.example.org.", tcp=True), "a.example.org.", "192.0.2.1")
    assert spoofed(await t.ask("b.example.org."), "b.example.org.", "192.0.2.2")


async def test_regex_rule(start_triodist: StartTriodist) -> None:
    # As in dnsdist, the regex sees the name without its final dot, in any case.
    t = await start_triodist(
        r"""
        newServer("$BACKEND")
        addAction(RegexRule("^ads?[0-9]*\\.example\\.org$"), RCodeAction(DNSRCode.NXDOMAIN))
        addAction(RegexRule("\\.org\\.$"), RCodeAction(DNSRCode.REFUSED))
        """
    )
    for name in ("ad.example.org.", "ads.example.org.", "ads42.example.org.", "AD7.EXAMPLE.org."):
        reply = await t.ask(name)
        assert rcode(reply) == NXDOMAIN
        assert reply is not None and not reply.flags & dns.flags.AA  # ours, not the backend's
    assert records(await t.ask("www.example.org.")) == WWW
    assert rcode(await t.ask("x.ads.example.org.")) == NXDOMAIN  # from the backend...
    rules = t.server.config.chains.queries.rules
    assert [rule.matches for rule in rules] == [4, 0]  # ...the rule did not match


async def test_and_or_not_rules(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(AndRule{QTypeRule(DNSQType.AAAA), QNameSuffixRule("example.org")},
                  RCodeAction(DNSRCode.REFUSED))
        addAction(OrRule{QNameRule("one.example.net"), QNameRule("two.example.net")},
                  SpoofAction("192.0.2.12"))
        addAction(NotRule(QNameSuffixRule({"example.org", "example.net"})),
                  RCodeAction(DNSRCode.NXDOMAIN))
        """
    )
    assert rcode(await t.ask("www.example.org.", "AAAA")) == REFUSED
    assert records(await t.ask("www.example.org.", "A")) == WWW  # And: only one part matches
    assert spoofed(await t.ask("one.example.net."), "one.example.net.", "192.0.2.12")
    assert spoofed(await t.ask("two.example.net.", tcp=True), "two.example.net.", "192.0.2.12")
    three = await t.ask("three.example.net.")
    assert rcode(three) == REFUSED  # not ours: the backend refuses names outside its zone
    outside = await t.ask("www.example.com.")
    assert rcode(outside) == NXDOMAIN


async def test_empty_and_or_rules_match_as_dnsdists_and_are_warned_of(
    start_triodist: StartTriodist, caplog: pytest.LogCaptureFixture
) -> None:
    """``OrRule({})`` (``{nil}`` is ``{}`` in Lua) matches no query and ``AndRule({})``
    every query, as in dnsdist 1.7.3, which accepts both; each is warned of."""
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(OrRule({nil}), RCodeAction(DNSRCode.REFUSED))
        addAction(AndRule({}), SpoofAction("192.0.2.12"))
        """
    )
    assert spoofed(await t.ask("www.example.org."), "www.example.org.", "192.0.2.12")
    assert spoofed(await t.ask("a.example.net.", tcp=True), "a.example.net.", "192.0.2.12")
    assert [rule.matches for rule in t.server.config.chains.queries.rules] == [0, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    said = "no selector given (an empty table; {nil} is one in Lua): the rule matches"
    assert f"OrRule: {said} no query" in warnings
    assert f"AndRule: {said} every query" in warnings


async def test_tag_rule_and_set_tag_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(QNameSuffixRule("example.org"), SetTagAction("zone", "org"))
        addAction(QNameRule("www.example.org"), SetTagAction("www", ""))
        addAction(TagRule("zone", "net"), RCodeAction(DNSRCode.SERVFAIL))
        addAction(AndRule{TagRule("zone", "org"), TagRule("www")}, SpoofAction("192.0.2.80"))
        addAction(TagRule("zone"), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert spoofed(await t.ask("www.example.org."), "www.example.org.", "192.0.2.80")
    assert rcode(await t.ask("mail.example.org.", tcp=True)) == REFUSED  # tag set, other value
    assert rcode(await t.ask("www.example.net.")) == REFUSED  # no tag: the backend refuses
    assert t.server.config.chains.queries.rules[2].matches == 0


async def test_rd_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(NotRule(RDRule()), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert rcode(await t.udp(query("www.example.org.", rd=False))) == REFUSED
    assert rcode(await t.tcp(query("www.example.org.", rd=False))) == REFUSED
    assert records(await t.udp(query("www.example.org.", rd=True))) == WWW


async def test_opcode_rule(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(OpcodeRule(DNSOpcode.Notify), RCodeAction(DNSRCode.NOTIMP))
        """
    )
    notify = query("example.org.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    reply = await t.udp(notify)
    assert rcode(reply) == dns.rcode.NOTIMP
    assert reply is not None and reply.opcode() == dns.opcode.NOTIFY
    assert len(auth.received) == 0
    assert records(await t.ask("www.example.org.")) == WWW


async def test_tcp_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(TCPRule(true), SpoofAction("192.0.2.6"))
        addAction(TCPRule(false), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert spoofed(await t.ask("www.example.org.", tcp=True), "www.example.org.", "192.0.2.6")
    assert rcode(await t.ask("www.example.org.")) == REFUSED


async def test_max_qps_ip_rule_limits_each_client(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        addAction(MaxQPSIPRule(2), RCodeAction(DNSRCode.REFUSED))
        addAction(AllRule(), SpoofAction("192.0.2.2"))
        """
    )
    # Two a second pass, the third is over the limit...
    got = [rcode(await t.ask("www.example.org.")) for _ in range(3)]
    assert got == [NOERROR, NOERROR, REFUSED]
    assert rcode(await t.ask("www.example.org.", tcp=True)) == REFUSED
    # ... and a second later the bucket is full again.
    await trio.sleep(1.0)
    got = [rcode(await t.ask("www.example.org.")) for _ in range(3)]
    assert got == [NOERROR, NOERROR, REFUSED]
    await trio.sleep(0.5)  # half a second: one more query's worth
    got = [rcode(await t.ask("www.example.org.")) for _ in range(2)]
    assert got == [NOERROR, REFUSED]


async def test_max_qps_rule_matches_while_under_the_limit(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    # As in dnsdist: MaxQPSRule matches the traffic within the rate, so
    # NotRule(MaxQPSRule(n)) is the way to act on the excess.
    t = await start_triodist(
        """
        addAction(AndRule{QNameRule("under.example.org"), MaxQPSRule(2)}, SpoofAction("192.0.2.2"))
        addAction(QNameRule("under.example.org"), RCodeAction(DNSRCode.REFUSED))
        addAction(AndRule{QNameRule("over.example.org"), NotRule(MaxQPSRule(3))},
                  RCodeAction(DNSRCode.REFUSED))
        addAction(QNameRule("over.example.org"), SpoofAction("192.0.2.3"))
        """
    )
    got = [rcode(await t.ask("under.example.org.")) for _ in range(3)]
    assert got == [NOERROR, NOERROR, REFUSED]
    got = [rcode(await t.ask("over.example.org.")) for _ in range(4)]
    assert got == [NOERROR, NOERROR, NOERROR, REFUSED]
    await trio.sleep(1.0)
    assert rcode(await t.ask("under.example.org.")) == NOERROR
    assert rcode(await t.ask("over.example.org.")) == NOERROR


async def test_lua_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(LuaRule(function(dq)
            return dq.qname:toString():find("^lua%.") ~= nil and dq.qtype == DNSQType.A
        end), SpoofAction("192.0.2.77"))
        """
    )
    assert spoofed(await t.ask("lua.example.org."), "lua.example.org.", "192.0.2.77")
    assert spoofed(await t.ask("lua.example.org.", tcp=True), "lua.example.org.", "192.0.2.77")
    assert rcode(await t.ask("lua.example.org.", "MX")) == NXDOMAIN  # the backend's answer
    assert records(await t.ask("www.example.org.")) == WWW


async def test_string_and_table_instead_of_a_selector(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("blocked.example.org", RCodeAction(DNSRCode.NXDOMAIN))
        addAction({"one.example.net", "two.example.net."}, SpoofAction("192.0.2.50"))
        addAction({"127.0.0.1/32"}, RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert rcode(await t.ask("x.blocked.example.org.")) == NXDOMAIN  # a suffix
    assert spoofed(await t.ask("a.two.example.net."), "a.two.example.net.", "192.0.2.50")
    # Everything else comes from 127.0.0.1: the netmask table matches it.
    assert rcode(await t.ask("www.example.org.")) == REFUSED
    assert rcode(await t.ask("www.example.org.", tcp=True)) == REFUSED


# --- query actions -----------------------------------------------------------------------


async def test_pool_action_routes_to_the_pool_and_stops(
    start_triodist: StartTriodist, make_auth: MakeAuth, auth: AuthServer
) -> None:
    other = await make_auth(name="other")
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        newServer{{address="{hostport(other)}", pool="other"}}
        addAction("whoami.example.org", PoolAction("other"))
        addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))
        """
    )
    for tcp in (False, True):
        reply = await t.ask("whoami.example.org.", "TXT", tcp=tcp)
        assert records(reply) == {'whoami.example.org. TXT "other"'}
    assert rcode(await t.ask("www.example.org.")) == REFUSED
    assert len(auth.received) == 0
    assert len(other.received) == 2


async def test_pool_action_without_stop_goes_on_with_the_rules(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    other = await make_auth(name="other")
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        newServer{{address="{hostport(other)}", pool="other"}}
        addAction("whoami.example.org", PoolAction("other", false))
        addAction(QTypeRule(DNSQType.A), RCodeAction(DNSRCode.REFUSED))
        """
    )
    reply = await t.ask("whoami.example.org.", "TXT")
    assert records(reply) == {'whoami.example.org. TXT "other"'}
    assert rcode(await t.ask("whoami.example.org.", "A")) == REFUSED  # the next rule ran
    assert len(other.received) == 1


async def test_pool_with_no_server_and_no_servfail_setting_drops(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(AllRule(), PoolAction("empty"))
        """
    )
    assert await t.ask("www.example.org.") is None
    assert t.stats["no-policy"] == 1


async def test_drop_action(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("drop.example.org", DropAction())
        """
    )
    assert await t.ask("drop.example.org.") is None
    # Over TCP nothing is sent and the connection is closed, as dnsdist closes it.
    assert await tcp_session(t.address, [query("drop.example.org.")]) == CLOSED_UNANSWERED
    assert t.stats["rule-drop"] == 2
    assert len(auth.received) == 0
    assert records(await t.ask("www.example.org.")) == WWW


async def test_allow_action_ends_the_rules(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", AllowAction())
        addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert records(await t.ask("www.example.org.")) == WWW
    assert records(await t.ask("www.example.org.", tcp=True)) == WWW
    assert rcode(await t.ask("mail.example.org.")) == REFUSED


async def test_none_action_counts_and_goes_on(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(AllRule(), NoneAction())
        addAction(AllRule(), SpoofAction("192.0.2.4"))
        """
    )
    assert spoofed(await t.ask("www.example.org."), "www.example.org.", "192.0.2.4")
    assert [r.matches for r in t.server.config.chains.queries.rules] == [1, 1]


async def test_rcode_action_flags(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("nx.example.org", RCodeAction(DNSRCode.NXDOMAIN))
        addAction("aa.example.org", RCodeAction(DNSRCode.REFUSED, {aa=true, ra=false}))
        """
    )
    # As dnsdist: QR set, RA copied from RD, AA and AD clear, no records.
    nx = await t.ask("nx.example.org.")
    assert rcode(nx) == NXDOMAIN
    assert nx is not None
    assert nx.flags & (dns.flags.QR | dns.flags.RD | dns.flags.RA | dns.flags.AA) == (
        dns.flags.QR | dns.flags.RD | dns.flags.RA
    )
    assert nx.answer == [] and nx.authority == []
    nx_tcp = await t.tcp(query("nx.example.org.", rd=False))
    assert rcode(nx_tcp) == NXDOMAIN
    assert nx_tcp is not None and not nx_tcp.flags & (dns.flags.RD | dns.flags.RA)
    aa = await t.ask("aa.example.org.")
    assert rcode(aa) == REFUSED
    assert aa is not None and aa.flags & dns.flags.AA and not aa.flags & dns.flags.RA
    assert len(auth.received) == 0


async def test_spoof_action_one_and_several_addresses(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("one.example.net", SpoofAction("192.0.2.101"))
        addAction("many.example.net",
                  SpoofAction({"192.0.2.102", "192.0.2.103", "2001:db8::102"}, {ttl=300}))
        addAction("six.example.org", SpoofAction("2001:db8::6"))
        """
    )
    one = await t.ask("one.example.net.")
    assert spoofed(one, "one.example.net.", "192.0.2.101")
    assert one is not None and one.answer[0].ttl == 60
    assert one.flags & dns.flags.RA and not one.flags & dns.flags.AA
    many_a = await t.ask("many.example.net.")
    assert spoofed(many_a, "many.example.net.", "192.0.2.102", "192.0.2.103")
    assert ttls(many_a) == {"many.example.net. A": 300}
    many_aaaa = await t.ask("many.example.net.", "AAAA", tcp=True)
    assert spoofed(many_aaaa, "many.example.net.", "2001:db8::102")
    six = await t.ask("six.example.org.", "AAAA")
    assert spoofed(six, "six.example.org.", "2001:db8::6")
    # Nothing to spoof for an A query: the query goes on to the backend (as dnsdist).
    six_a = await t.ask("six.example.org.", "A")
    assert rcode(six_a) == NXDOMAIN
    assert six_a is not None and six_a.flags & dns.flags.AA


async def test_spoof_cname_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("alias.example.net", SpoofCNAMEAction("www.example.org"))
        """
    )
    for rdtype, tcp in (("A", False), ("AAAA", True), ("MX", False)):
        reply = await t.ask("alias.example.net.", rdtype, tcp=tcp)
        assert rcode(reply) == NOERROR
        assert records(reply) == {"alias.example.net. CNAME www.example.org."}


async def test_spoof_raw_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        r"""
        newServer("$BACKEND")
        addAction(AndRule{QNameRule("raw.example.net"), QTypeRule(DNSQType.TXT)},
                  SpoofRawAction("\005hello"))
        addAction(AndRule{QNameRule("raws.example.net"), QTypeRule(DNSQType.TXT)},
                  SpoofRawAction({"\003one", "\003two"}, {ttl=10}))
        """
    )
    reply = await t.ask("raw.example.net.", "TXT")
    assert records(reply) == {'raw.example.net. TXT "hello"'}
    several = await t.ask("raws.example.net.", "TXT", tcp=True)
    assert records(several) == {'raws.example.net. TXT "one"', 'raws.example.net. TXT "two"'}
    assert ttls(several) == {"raws.example.net. TXT": 10}


async def test_tc_action_truncates_udp_only(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(AllRule(), TCAction())
        """
    )
    udp = await t.ask("www.example.org.")
    assert rcode(udp) == NOERROR
    assert udp is not None and udp.flags & dns.flags.TC and udp.answer == []
    assert len(auth.received) == 0
    tcp = await t.ask("www.example.org.", tcp=True)
    assert records(tcp) == WWW
    assert tcp is not None and not tcp.flags & dns.flags.TC


async def test_delay_action_delays_udp_answers_only(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("slow.example.org", DelayAction(300))
        addAction("slow.example.org", SpoofAction("192.0.2.30"))
        addAction("slowfwd.example.org", DelayAction(200))
        """
    )
    start = trio.current_time()
    reply = await t.ask("slow.example.org.")
    assert trio.current_time() - start == pytest.approx(0.3, abs=0.01)
    assert spoofed(reply, "slow.example.org.", "192.0.2.30")  # the rules went on
    start = trio.current_time()
    reply = await t.ask("slowfwd.example.org.")
    assert trio.current_time() - start == pytest.approx(0.2, abs=0.01)
    assert rcode(reply) == NXDOMAIN
    start = trio.current_time()
    reply = await t.ask("slow.example.org.", tcp=True)
    assert trio.current_time() - start < 0.01
    assert spoofed(reply, "slow.example.org.", "192.0.2.30")


async def test_delay_action_delays_cache_hits_too(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    # A cache hit is answered without waiting for a backend, but a DelayAction still
    # holds its answer (as dnsdist sends every answer with the query's delay).
    t = await start_triodist(
        """
        newServer("$BACKEND")
        getPool(""):setCache(newPacketCache(100))
        addAction("www.example.org", DelayAction(250))
        """
    )
    for _ in range(2):  # a miss, then a hit
        start = trio.current_time()
        reply = await t.ask("www.example.org.")
        assert trio.current_time() - start == pytest.approx(0.25, abs=0.01)
        assert records(reply) == WWW
    assert t.stats["cache-hits"] == 1


async def test_log_action_writes_dnsdist_lines(
    start_triodist: StartTriodist, tmp_path: Path
) -> None:
    log = tmp_path / "queries.log"
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        addAction(AllRule(), LogAction("{log}", false, true, false))
        """
    )
    www = query("www.example.org.")
    assert records(await t.udp(www)) == WWW  # LogAction lets the query go on
    mail = query("mail.example.org.", "AAAA")
    assert rcode(await t.tcp(mail)) == NOERROR
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Packet from 127.0.0.1:")
    assert lines[0].endswith(f" for www.example.org. A with id {www.id}")
    assert lines[1].endswith(f" for mail.example.org. AAAA with id {mail.id}")


async def test_set_no_recurse_action(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", SetNoRecurseAction())
        """
    )
    for tcp in (False, True):
        reply = await t.ask("www.example.org.", tcp=tcp)
        assert records(reply) == WWW
        # The backend got RD=0; the client gets its own RD back, as dnsdist does.
        assert not auth.received[-1].message.flags & dns.flags.RD
        assert auth.received[-1].transport == ("tcp" if tcp else "udp")
        assert reply is not None and reply.flags & dns.flags.RD
    await t.ask("mail.example.org.")
    assert auth.received[-1].message.flags & dns.flags.RD


async def test_set_skip_cache_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", SetSkipCacheAction())
        addAction(AndRule{LuaRule(function(dq) return dq.skipCache end),
                          QNameRule("www.example.org")},
                  SetTagAction("skipped", "yes"))
        addResponseAction(TagRule("skipped", "yes"), SetMaxTTLResponseAction(7))
        """
    )
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 7}
    assert ttls(await t.ask("mail.example.org.")) == {"mail.example.org. A": 3600}


async def test_qps_action_lets_through_then_drops(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    # dnsdist: within the rate QPSAction lets the next rules decide, above it drops.
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", QPSAction(2))
        addAction("www.example.org", RCodeAction(DNSRCode.REFUSED))
        """
    )
    assert rcode(await t.ask("www.example.org.", timeout=0.1)) == REFUSED
    assert rcode(await t.ask("www.example.org.", timeout=0.1)) == REFUSED
    assert await t.ask("www.example.org.", timeout=0.1) is None
    assert t.stats["rule-drop"] == 1
    await trio.sleep(1)
    assert rcode(await t.ask("www.example.org.", timeout=0.1)) == REFUSED
    assert len(auth.received) == 0


async def test_lua_action_verdicts_with_and_without_a_string(
    start_triodist: StartTriodist, make_auth: MakeAuth, autojump_clock: trio.testing.MockClock
) -> None:
    other = await make_auth(name="other")
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        newServer{{address="{hostport(other)}", pool="other"}}
        addAction("pool.example.org", LuaAction(function(dq) return DNSAction.Pool, "other" end))
        addAction("whoami.example.org", LuaAction(function(dq) return DNSAction.Pool, "other" end))
        addAction("spoof.example.org",
                  LuaAction(function(dq) return DNSAction.Spoof, "192.0.2.66" end))
        addAction("delay.example.org", LuaAction(function(dq) return DNSAction.Delay, "150" end))
        addAction("delay.example.org", SpoofAction("192.0.2.3"))
        addAction("nx.example.org", LuaAction(function(dq) return DNSAction.Nxdomain end))
        addAction("refused.example.org", LuaAction(function(dq) return DNSAction.Refused end))
        addAction("drop.example.org", LuaAction(function(dq) return DNSAction.Drop end))
        addAction("trunc.example.org", LuaAction(function(dq) return DNSAction.Truncate end))
        addAction("norec.example.org", LuaAction(function(dq) return DNSAction.NoRecurse end))
        addAction("allow.example.org", LuaAction(function(dq) return DNSAction.Allow end))
        addAction(AllRule(), LuaAction(function(dq) return DNSAction.None end))
        addAction("allow.example.org", RCodeAction(DNSRCode.REFUSED))
        addAction("none.example.org", RCodeAction(DNSRCode.NOTIMP))
        """
    )
    assert records(await t.ask("whoami.example.org.", "TXT")) == {'whoami.example.org. TXT "other"'}
    assert spoofed(await t.ask("spoof.example.org."), "spoof.example.org.", "192.0.2.66")
    start = trio.current_time()
    delayed = await t.ask("delay.example.org.")
    assert trio.current_time() - start == pytest.approx(0.15, abs=0.01)
    assert spoofed(delayed, "delay.example.org.", "192.0.2.3")
    nx = await t.ask("nx.example.org.")
    assert rcode(nx) == NXDOMAIN and nx is not None and not nx.flags & dns.flags.AA
    assert rcode(await t.ask("refused.example.org.", tcp=True)) == REFUSED
    assert await t.ask("drop.example.org.", timeout=0.5) is None
    trunc = await t.ask("trunc.example.org.")
    assert trunc is not None and trunc.flags & dns.flags.TC
    norec = await t.ask("norec.example.org.")
    assert rcode(norec) == NXDOMAIN  # forwarded, from the backend
    assert len(other.received) == 1
    allowed = await t.ask("allow.example.org.")
    assert rcode(allowed) == NXDOMAIN and allowed is not None and allowed.flags & dns.flags.AA
    assert rcode(await t.ask("none.example.org.")) == dns.rcode.NOTIMP


async def test_lua_action_can_edit_the_query(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", LuaAction(function(dq)
            dq.dh:setRD(false)
            dq.dh:setCD(true)
            return DNSAction.None
        end))
        """
    )
    reply = await t.ask("www.example.org.")
    assert records(reply) == WWW
    got = auth.received[-1].message.flags
    assert not got & dns.flags.RD and got & dns.flags.CD
    # dnsdist gives the client back its own RD and CD.
    assert reply is not None and reply.flags & dns.flags.RD and not reply.flags & dns.flags.CD


async def test_continue_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", ContinueAction(LuaAction(function(dq)
            dq:setTag("seen", "1")
            return DNSAction.Drop
        end)))
        addAction(TagRule("seen", "1"), SpoofAction("192.0.2.61"))
        """
    )
    # The wrapped action ran (the tag is set) but its Drop was overridden.
    assert spoofed(await t.ask("www.example.org."), "www.example.org.", "192.0.2.61")
    assert records(await t.ask("mail.example.org.")) == {"mail.example.org. A 192.0.2.25"}


# --- response actions --------------------------------------------------------------------


async def test_allow_response_action_ends_the_response_rules(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("www.example.org", AllowResponseAction())
        addResponseAction(AllRule(), DropResponseAction())
        """
    )
    assert records(await t.ask("www.example.org.")) == WWW
    assert records(await t.ask("www.example.org.", tcp=True)) == WWW


async def test_drop_response_action(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("www.example.org", DropResponseAction())
        """
    )
    assert await t.ask("www.example.org.") is None
    assert await tcp_session(t.address, [query("www.example.org.")]) == CLOSED_UNANSWERED
    assert len(auth.received) == 2  # the backend was asked; its answer was dropped
    assert records(await t.ask("mail.example.org.")) == {"mail.example.org. A 192.0.2.25"}


async def test_delay_response_action(
    start_triodist: StartTriodist, autojump_clock: trio.testing.MockClock
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("www.example.org", DelayResponseAction(250))
        """
    )
    start = trio.current_time()
    assert records(await t.ask("www.example.org.")) == WWW
    assert trio.current_time() - start == pytest.approx(0.25, abs=0.01)
    start = trio.current_time()
    assert records(await t.ask("www.example.org.", tcp=True)) == WWW  # UDP only
    assert trio.current_time() - start < 0.01


async def test_log_response_action(start_triodist: StartTriodist, tmp_path: Path) -> None:
    log = tmp_path / "responses.log"
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        addResponseAction(AllRule(), LogResponseAction("{log}", true, false))
        """
    )
    www = query("www.example.org.")
    nope = query("nope.example.org.")
    assert records(await t.udp(www)) == WWW
    assert rcode(await t.tcp(nope)) == NXDOMAIN
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Answer to 127.0.0.1:")
    assert lines[0].endswith(f" for www.example.org. A (No Error) with id {www.id}")
    assert lines[1].endswith(f" for nope.example.org. A (Non-Existent domain) with id {nope.id}")


async def test_lua_response_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("www.example.org", LuaResponseAction(function(dr)
            dr.dh:setAA(false)
            return DNSResponseAction.None
        end))
        addResponseAction("mail.example.org", LuaResponseAction(function(dr)
            return DNSResponseAction.ServFail
        end))
        addResponseAction("ns1.example.org", LuaResponseAction(function(dr)
            return DNSResponseAction.Drop
        end))
        """
    )
    www = await t.ask("www.example.org.")
    assert records(www) == WWW
    assert www is not None and not www.flags & dns.flags.AA
    assert rcode(await t.ask("mail.example.org.", tcp=True)) == SERVFAIL
    assert await t.ask("ns1.example.org.", timeout=0.3) is None


async def test_set_tag_response_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("www.example.org", SetTagAction("from-query", "q"))
        addResponseAction("mail.example.org", SetTagResponseAction("from-response", "r"))
        addResponseAction(TagRule("from-query", "q"), SetMaxTTLResponseAction(11))
        addResponseAction(TagRule("from-response", "r"), SetMaxTTLResponseAction(22))
        """
    )
    # Tags set on the query are seen by the response rules, as are tags set by them.
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 11}
    assert ttls(await t.ask("mail.example.org.", tcp=True)) == {"mail.example.org. A": 22}
    assert ttls(await t.ask("ns1.example.org.")) == {"ns1.example.org. A": 3600}


async def test_tc_response_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("www.example.org", TCResponseAction())
        """
    )
    reply = await t.ask("www.example.org.")
    assert rcode(reply) == NOERROR
    assert reply is not None and reply.flags & dns.flags.TC and reply.answer == []


async def test_ttl_response_actions(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("www.example.org", SetMaxTTLResponseAction(300))
        addResponseAction("short.example.org", SetMinTTLResponseAction(100))
        addResponseAction(QNameSuffixRule({"long.example.org", "mail.example.org"}),
                          LimitTTLResponseAction(10, 600))
        addResponseAction("multi.example.org", LimitTTLResponseAction(10, 600, {DNSQType.AAAA}))
        """
    )
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 300}
    assert ttls(await t.ask("short.example.org.", tcp=True)) == {"short.example.org. A": 100}
    assert ttls(await t.ask("long.example.org.")) == {"long.example.org. A": 600}
    assert ttls(await t.ask("mail.example.org.")) == {"mail.example.org. A": 600}
    # Minimum and maximum both apply; SetMaxTTL leaves low TTLs alone.
    multi = await t.ask("multi.example.org.", "ANY", tcp=True)
    assert ttls(multi) == {
        "multi.example.org. A": 3600,
        "multi.example.org. AAAA": 600,
        "multi.example.org. TXT": 3600,
    }
    # The SOA of a negative answer is a record like any other.
    nx = await t.ask("www.example.org.", "MX")
    assert nx is not None and [r.ttl for r in nx.authority] == [300]


async def test_clear_record_types_response_action(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addResponseAction("multi.example.org", ClearRecordTypesResponseAction(DNSQType.AAAA))
        addResponseAction("www.example.org",
                          ClearRecordTypesResponseAction({DNSQType.A, DNSQType.TXT}))
        """
    )
    multi = await t.ask("multi.example.org.", "ANY", tcp=True)
    assert records(multi) == {"multi.example.org. A 192.0.2.20", 'multi.example.org. TXT "multi"'}
    www = await t.ask("www.example.org.")
    assert rcode(www) == NOERROR and records(www) == set()


async def test_self_answered_response_rules_see_only_self_answered(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("spoof.example.org", SpoofAction("192.0.2.1"))
        addAction("nx.example.org", RCodeAction(DNSRCode.NXDOMAIN))
        addSelfAnsweredResponseAction(AllRule(), SetMaxTTLResponseAction(5))
        addSelfAnsweredResponseAction("nx.example.org", DropResponseAction())
        addResponseAction(AllRule(), SetMaxTTLResponseAction(50))
        """
    )
    assert ttls(await t.ask("spoof.example.org.")) == {"spoof.example.org. A": 5}
    assert ttls(await t.ask("spoof.example.org.", tcp=True)) == {"spoof.example.org. A": 5}
    assert ttls(await t.ask("www.example.org.")) == {"www.example.org. A": 50}
    assert await t.ask("nx.example.org.", timeout=0.3) is None


# --- rules management --------------------------------------------------------------------


async def test_show_rules_and_rm_rule(
    start_triodist: StartTriodist, capsys: pytest.CaptureFixture[str]
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction("a.example.org", RCodeAction(DNSRCode.REFUSED), {name="refuse-a"})
        addAction("b.example.org", SpoofAction("192.0.2.2"), {name="spoof-b"})
        addAction("c.example.org", DropAction(), {name="drop-c"})
        rmRule("drop-c")
        showRules()
        """
    )
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].split()[:4] == ["#", "Name", "Matches", "Rule"]
    assert len(shown) == 3
    assert shown[1].split()[:2] == ["0", "refuse-a"]
    assert "a.example.org." in shown[1] and "set rcode 5" in shown[1]
    assert shown[2].split()[:2] == ["1", "spoof-b"]
    assert "spoof in 192.0.2.2" in shown[2]

    assert rcode(await t.ask("a.example.org.")) == REFUSED
    assert rcode(await t.ask("c.example.org.")) == NXDOMAIN  # removed: forwarded
    # Rules can be removed while serving (as from dnsdist's console).
    t.lua.run_string("rmRule(0)\nshowRules({showUUIDs=true})", "console")
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 2 and "UUID" in shown[0] and "spoof-b" in shown[1]
    assert rcode(await t.ask("a.example.org.")) == NXDOMAIN
    assert spoofed(await t.ask("b.example.org."), "b.example.org.", "192.0.2.2")


async def test_rules_answer_with_many_clients_at_once(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(QTypeRule(DNSQType.AAAA), SpoofAction("2001:db8::1"))
        """
    )
    results: dict[int, dns.message.Message | None] = {}

    async def one(i: int) -> None:
        rdtype = "AAAA" if i % 2 else "A"
        results[i] = await udp_query(t.address, query("www.example.org.", rdtype))

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
    for i, reply in results.items():
        if i % 2:
            assert spoofed(reply, "www.example.org.", "2001:db8::1")
        else:
            assert records(reply) == WWW
    assert len(results) == 40


async def test_tag_array_reads_like_a_lua_table(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        "addAction(AllRule(), LuaAction(function(dq)\n"
        '  dq:setTag("a", "1"); dq:setTag("b", "2"); dq:unsetTag("a")\n'
        "  local t = dq:getTagArray()\n"
        "  local n = 0\n"
        "  for k, v in pairs(t) do n = n + 1 end\n"
        '  if t.a == nil and t.b == "2" and n == 1 then return DNSAction.Refused end\n'
        "  return DNSAction.Nxdomain\n"
        "end))\n"
    )
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
