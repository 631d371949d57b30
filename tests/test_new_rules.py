"""Selectors on a message's shape, actions that set something on a query, rules set as a
whole, and two of dnsdist's settings: end to end, on loopback, against the fake backend.

* ``RecordsCountRule`` / ``RecordsTypeCountRule``: the header's counts, and the records of
  a type in a section (a hostile count that promises more records than there are counts
  those that are there); ``QNameLabelsCountRule``, ``QNameWireLengthRule`` match names
  *outside* their bounds; ``DSTPortRule`` the listener's port.
* ``SetDisableValidationAction``: the backend sees CD, the client gets its own flags back,
  from a backend or from a rule's answer; the rules go on after it.
* ``SetTempFailureCacheTTLAction`` and ``dq.tempFailureTTL``: how long this query's
  SERVFAIL stays cached.
* ``newRuleAction`` and ``setRules``: the query rules replaced at once, at run time.
* ``setDropEmptyQueries(true)``: a query with no question gets nothing (TCP: closed).
* dnsdist's own check-config lines for a refused weight, and ``no-policy`` in dumpStats.
"""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
import trio.testing
from conftest import StartTriodist, accounted, frame, query, read_frame, udp_silent, until
from test_cli import triodist_cli, write

from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import LuaConfig
from triodist.rules.actions import DropAction
from triodist.testing.backend import AuthServer


def reached(auth: AuthServer, name: str) -> list[dns.message.Message]:
    """The queries for ``name`` that reached the backend."""
    return [r.message for r in auth.queries_for(name)]


async def udp_raw(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` in one datagram; the bytes of the first datagram back."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(data)
        with trio.fail_after(5):
            return await sock.recv(65535)


def rcode(reply: dns.message.Message | None) -> int | None:
    return None if reply is None else reply.rcode()


# --- counting records ------------------------------------------------------------------------

COUNTS = """
newServer{address="$BACKEND", healthCheckMode="up"}
-- A query carrying authority records is refused as a form error.
addAction(RecordsCountRule(DNSSection.Authority, 1, 65535), RCodeAction(DNSRCode.FORMERR))
-- Two or three A records in the additional section: NOTIMP (OPT records do not count).
addAction(RecordsTypeCountRule(DNSSection.Additional, DNSQType.A, 2, 3),
          RCodeAction(DNSRCode.NOTIMP))
-- A TXT question: REFUSED (the question section counts its questions' types).
addAction(RecordsTypeCountRule(DNSSection.Question, DNSQType.TXT, 1, 1),
          RCodeAction(DNSRCode.REFUSED))
-- No answer record at all and no EDNS: tagged, then spoofed.
addAction(AndRule{RecordsCountRule(DNSSection.Answer, 0, 0),
                  RecordsCountRule(DNSSection.Additional, 0, 0)},
          SetTagAction("bare", "yes"))
addAction(TagRule("bare", "yes"), SpoofAction("192.0.2.77"))
"""


def with_additional_a(name: str, how_many: int, edns: bool = True) -> dns.message.Message:
    msg = query(name, edns=edns)
    for index in range(how_many):
        msg.additional.append(
            dns.rrset.from_text(f"glue{index}.example.org.", 60, "IN", "A", f"192.0.2.{index + 1}")
        )
    return msg


async def test_records_are_counted_per_section_and_per_type(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(COUNTS)
    with_ns = query("www.example.org.", edns=True)
    with_ns.authority.append(
        dns.rrset.from_text("example.org.", 60, "IN", "NS", "ns1.example.org.")
    )
    for send in (t.udp, t.tcp):
        assert rcode(await send(with_ns)) == dns.rcode.FORMERR
        assert rcode(await send(with_additional_a("www.example.org.", 2))) == dns.rcode.NOTIMP
        assert rcode(await send(with_additional_a("www.example.org.", 3))) == dns.rcode.NOTIMP
        # One or four A records (with the OPT) are outside 2..3: the backend answers.
        for count in (1, 4):
            reply = await send(with_additional_a("mail.example.org.", count))
            assert reply is not None and reply.rcode() == dns.rcode.NOERROR
            assert reply.flags & dns.flags.AA  # the backend's answer
        assert rcode(await send(query("txt.example.org.", "TXT", edns=True))) == dns.rcode.REFUSED
        # Two A records in the answer section are not in the additional one (which holds
        # one, and the OPT: two records, enough to be walked).
        in_answer = with_additional_a("mail.example.org.", 1)
        for index in range(2):
            in_answer.answer.append(
                dns.rrset.from_text("mail.example.org.", 60, "IN", "A", f"192.0.2.{index + 1}")
            )
        reply = await send(in_answer)
        assert reply is not None and reply.rcode() == dns.rcode.NOERROR
        # No EDNS, no record: the bare query is spoofed.
        bare = await send(query("www.example.org."))
        assert bare is not None and {str(rr) for rr in bare.answer} == {
            "www.example.org. 60 IN A 192.0.2.77"
        }
    assert len(reached(auth, "mail.example.org.")) == 6
    assert reached(auth, "txt.example.org.") == []
    await accounted(t)


async def test_a_count_that_promises_more_records_counts_those_present(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(COUNTS)
    # Two A records in the additional section, a header that announces five: the two are
    # counted (the walk stops at the missing third), so the rule matches.
    wire = bytearray(with_additional_a("www.example.org.", 2, edns=False).to_wire())
    struct.pack_into("!H", wire, 10, 5)
    # (The answer repeats the query's records, and its counts: read as bytes.)
    answer = await udp_raw(t.address, bytes(wire))
    assert answer[3] & 0x0F == dns.rcode.NOTIMP and answer[2] & 0x80
    # The same bytes, cut inside the second record: one is counted, the rule does not match
    # and the query goes on to the backend (which cannot read it, and says nothing).
    assert await udp_silent(t.address, bytes(wire[:-3]))
    await until(lambda: auth.malformed == 1)
    assert t.stats["rule-errors"] == 0


# --- question names and the port -------------------------------------------------------------


async def test_names_outside_the_label_and_length_bounds_match(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND", healthCheckMode="up"}\n'
        "addAction(QNameLabelsCountRule(2, 3), RCodeAction(DNSRCode.REFUSED))\n"
        # www.example.org. is 17 bytes on the wire, example.org. 13.
        "addAction(QNameWireLengthRule(13, 17), RCodeAction(DNSRCode.NOTIMP))\n"
    )
    for send in (t.udp, t.tcp):
        for name in ("org.", "a.www.example.org.", "."):
            assert rcode(await send(query(name, "NS"))) == dns.rcode.REFUSED, name
        # Three labels but 18 bytes: inside the label bounds, outside the length bounds.
        assert rcode(await send(query("www.example.orgg."))) == dns.rcode.NOTIMP
        for name in ("example.org.", "www.example.org.", "ns1.example.org."):
            reply = await send(query(name))
            assert reply is not None and reply.rcode() == dns.rcode.NOERROR, name
            assert reply.flags & dns.flags.AA


async def test_dst_port_rule_matches_the_listeners_port(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}\n')
    port = t.address[1]
    t.lua.console_eval(f"addAction(DSTPortRule({port + 1 if port < 65535 else 1}), DropAction())")
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    t.lua.console_eval(f"addAction(DSTPortRule({port}), RCodeAction(DNSRCode.REFUSED))")
    assert "dst port==" + str(port) in t.lua.console_eval("showRules()")
    for tcp in (False, True):
        assert rcode(await t.ask("www.example.org.", tcp=tcp)) == dns.rcode.REFUSED


# --- SetDisableValidationAction --------------------------------------------------------------


async def test_the_backend_sees_cd_and_the_client_gets_its_own_flags(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND", healthCheckMode="up"}\n'
        'addAction("cd.example.org.", SetDisableValidationAction())\n'
        # Not terminal: the next rule still runs, and answers.
        'addAction("spoofed.cd.example.org.", SpoofAction("192.0.2.9"))\n'
    )
    for send in (t.udp, t.tcp):
        auth.reset_stats()
        reply = await send(query("www.cd.example.org."))
        assert reply is not None and not reply.flags & dns.flags.CD
        (sent,) = reached(auth, "www.cd.example.org.")
        assert sent.flags & dns.flags.CD
        # A client that set CD itself keeps it.
        with_cd = query("www.cd.example.org.")
        with_cd.flags |= dns.flags.CD
        reply = await send(with_cd)
        assert reply is not None and reply.flags & dns.flags.CD
        # A rule's answer after the action: the client's flags, not the ones set for the
        # backend, and nothing reaches the backend.
        spoofed = await send(query("spoofed.cd.example.org.", rd=False))
        assert spoofed is not None and {str(rr) for rr in spoofed.answer} == {
            "spoofed.cd.example.org. 60 IN A 192.0.2.9"
        }
        assert spoofed.flags == dns.flags.QR
        assert reached(auth, "spoofed.cd.example.org.") == []
        # Other names untouched.
        auth.reset_stats()
        await send(query("www.example.org."))
        (other,) = reached(auth, "www.example.org.")
        assert not other.flags & dns.flags.CD


# --- the temporary failure TTL ---------------------------------------------------------------

TEMP_FAILURE = """
newServer{address="$BACKEND", healthCheckMode="up"}
pc = newPacketCache(100, {temporaryFailureTTL=60})
getPool(""):setCache(pc)
addAction("mail.example.org.", SetTempFailureCacheTTLAction(2))
function untouched(dq)
  if dq.tempFailureTTL ~= nil then return DNSAction.Spoof, "192.0.2.66" end
  dq.tempFailureTTL = 7
  if dq.tempFailureTTL ~= 7 then return DNSAction.Spoof, "192.0.2.67" end
  dq.tempFailureTTL = nil
  if dq.tempFailureTTL ~= nil then return DNSAction.Spoof, "192.0.2.68" end
  dq.tempFailureTTL = 5
  return DNSAction.None, ""
end
addAction("www.example.org.", LuaAction(untouched))
"""


@pytest.mark.parametrize(
    "response_rule",
    # With a response rule, the answer reaches the cache through a DNSResponse.
    ["", 'addResponseAction(AllRule(), SetTagResponseAction("seen", "yes"))\n'],
    ids=["no-response-rule", "response-rule"],
)
async def test_a_servfail_is_cached_for_the_ttl_the_rule_set(
    start_triodist: StartTriodist,
    auth: AuthServer,
    mock_clock: trio.testing.MockClock,
    response_rule: str,
) -> None:
    t = await start_triodist(TEMP_FAILURE + response_rule)
    auth.mode = "servfail"
    names = ("mail.example.org.", "www.example.org.", "long.example.org.")
    for name in names:
        for _ in range(2):
            assert rcode(await t.ask(name)) == dns.rcode.SERVFAIL
        assert len(reached(auth, name)) == 1  # the second from the cache
    auth.mode = "answer"
    mock_clock.jump(2.5)  # past the action's 2 s only
    assert rcode(await t.ask("mail.example.org.")) == dns.rcode.NOERROR
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.SERVFAIL
    mock_clock.jump(3)  # past the 5 s the Lua function left
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.NOERROR
    assert rcode(await t.ask("long.example.org.")) == dns.rcode.SERVFAIL  # 60 s still
    # A NOERROR answer keeps its own TTL whatever the action says.
    assert rcode(await t.ask("mail.example.org.")) == dns.rcode.NOERROR
    assert len(reached(auth, "mail.example.org.")) == 2


def test_temp_failure_ttl_takes_nil_or_seconds() -> None:
    from triodist.wire.message import DNSQuestion

    dq = DNSQuestion(
        query("www.example.org.").to_wire(), ("127.0.0.1", 1), ("127.0.0.1", 53), now=0.0
    )
    assert dq.tempFailureTTL is None
    dq.tempFailureTTL = 30
    assert dq.tempFailureTTL == 30
    for bad in (-1, 2**32, 1.5, "30", True):
        with pytest.raises(ValueError, match="tempFailureTTL"):
            dq.tempFailureTTL = bad
    dq.tempFailureTTL = None
    assert dq.tempFailureTTL is None


# --- newRuleAction and setRules --------------------------------------------------------------


async def test_set_rules_replaces_the_query_rules_at_once(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND", healthCheckMode="up"}\n'
        'addAction("www.example.org.", RCodeAction(DNSRCode.REFUSED))\n'
    )
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.REFUSED
    t.lua.console_eval(
        "setRules({"
        ' newRuleAction("mail.example.org.", SpoofAction("192.0.2.44"), {name="mail"}),'
        ' newRuleAction(AllRule(), RCodeAction(DNSRCode.NXDOMAIN), {uuid="u-1"}) })'
    )
    shown = t.lua.console_eval("showRules({showUUIDs=true})")
    assert "mail" in shown and "u-1" in shown and "refuse" not in shown.lower()
    mail = await t.ask("mail.example.org.", tcp=True)
    assert mail is not None and {str(rr) for rr in mail.answer} == {
        "mail.example.org. 60 IN A 192.0.2.44"
    }
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.NXDOMAIN
    # A table with something that is not a rule changes nothing.
    with pytest.raises(ConfigError, match="position 2"):
        t.lua.api.setRules([t.lua.api.newRuleAction("www.example.org.", DropAction()), 3])
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.NXDOMAIN
    # An empty table: no rule at all, the backend answers.
    t.lua.console_eval("setRules({})")
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR


async def test_new_rule_action_takes_query_actions_only(start_triodist: StartTriodist) -> None:
    t = await start_triodist('newServer{address="$BACKEND", healthCheckMode="up"}\n')
    out = t.lua.console_eval("newRuleAction(AllRule(), DropResponseAction())")
    assert "expected a query action" in out
    assert len(t.lua.api.config.chains.queries) == 0


# --- setDropEmptyQueries ---------------------------------------------------------------------

EMPTY = struct.pack("!HHHHHH", 0x0BAD, 0x0100, 0, 0, 0, 0)


async def test_drop_empty_queries_sends_nothing_and_closes_tcp(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\nsetDropEmptyQueries(true)\n')
    assert await udp_silent(t.address, EMPTY)
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        await stream.send_all(frame(EMPTY))
        with trio.fail_after(5):
            assert await read_frame(stream, bytearray()) is None  # closed, nothing sent
    await accounted(t)
    assert (t.stats["empty-queries"], t.stats["dropped"], t.stats["answered"]) == (2, 2, 0)
    # Off again at the console: answered NOTIMP.
    t.lua.console_eval("setDropEmptyQueries(false)")
    answer = await udp_raw(t.address, EMPTY)
    assert answer[3] & 0x0F == dns.rcode.NOTIMP


# --- configuration -----------------------------------------------------------------------


async def test_refused_weights_in_dnsdists_words_under_its_command_line(tmp_path: Path) -> None:
    config = write(
        tmp_path / "weights.lua",
        'newServer{address="127.0.0.1:5350", weight=-1}\n'
        'newServer{address="127.0.0.1:5351", weight=2147483648}\n',
    )
    as_dnsdist = await triodist_cli("--check-config", "-C", str(config))
    assert as_dnsdist.returncode == 0
    assert as_dnsdist.stderr.decode() == (
        "Error creating new server: downstream weight value must be greater than 0.\n"
        "Error creating new server: downstream weight value must be between 1 and 2147483647\n"
    )
    assert as_dnsdist.stdout.decode() == f"Configuration '{config}' OK!\n"
    # triodist's own check names the file and line.
    own = await triodist_cli("check-config", "--config", str(config))
    assert f"{config}:1: newServer: 'weight' must be at least 1" in own.stderr.decode()
    assert f"{config}:2: newServer: 'weight' must be at most 2147483647" in own.stderr.decode()


async def test_dump_stats_shows_no_policy_from_the_start(start_triodist: StartTriodist) -> None:
    t = await start_triodist('newServer{address="$BACKEND", pool="elsewhere"}\n')
    assert re.search(r"(^|\s)no-policy\s+0(\s|$)", t.lua.console_eval("dumpStats()"))
    assert await t.ask("www.example.org.") is None  # no server in the default pool
    await accounted(t)
    assert t.stats["no-policy"] == 1


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("RecordsCountRule(DNSSection.Answer, -1, 2)", "from 0 to 65535"),
        ("RecordsTypeCountRule(DNSSection.Answer, 'AAAAA', 0, 2)", "Unable to convert"),
        ("QNameLabelsCountRule(1.5, 3)", "whole number"),
        ("DSTPortRule(65536)", "from 0 to 65535"),
        ("SetTempFailureCacheTTLAction('soon')", "expected a TTL"),
    ],
)
def test_shape_rules_refuse_bad_arguments(tmp_path: Path, line: str, words: str) -> None:
    config = write(tmp_path / "bad.lua", f"addAction({line}, AllowAction())\n")
    with pytest.raises(ConfigError, match=f"bad.lua:1: .*{words}"):
        LuaConfig().run_file(config)
