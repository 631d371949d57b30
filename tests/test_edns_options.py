"""EDNS options and EDNS rules: ``dq:getEDNSOptions()`` gives dnsdist's option objects
(``count()``, ``getValues()``) by code; ``EDNSOptionRule``, ``EDNSVersionRule`` and
``ERCodeRule`` select on the OPT record; ``SetEDNSOptionAction`` gives the query an
option on its way to the backend.

End to end over loopback with the configuration a user writes, and the option reader
alone on hostile bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from conftest import StartTriodist, accounted

from triodist.config.runtime import load_config
from triodist.testing.backend import AuthServer
from triodist.wire.ednsoptions import edns_options
from triodist.wire.message import DNSQuestion

COOKIE = dns.edns.COOKIE
ECS = dns.edns.ECS


def cookie(client: bytes, server: bytes = b"") -> dns.edns.GenericOption:
    return dns.edns.GenericOption(COOKIE, client + server)


def subnet(address: str, prefix: int) -> dns.edns.ECSOption:
    return dns.edns.ECSOption(address, prefix)


def with_options(name: str, *options: dns.edns.Option, version: int = 0) -> dns.message.Message:
    return dns.message.make_query(name, "A", use_edns=version, payload=1232, options=list(options))


# A Lua rule that tells what it read by the address it spoofs: 10.<count of cookies>.<length
# of the first cookie>.<length of the ECS option>, or 10.0.0.1 when the table is empty.
READER = """
newServer{address="$BACKEND"}
function read(dq)
  local options = dq:getEDNSOptions()
  if next(options) == nil then return DNSAction.Spoof, "10.0.0.1" end
  local cookies, ecs = options[EDNSOptionCode.COOKIE], options[EDNSOptionCode.ECS]
  local count, first, ecslen = 0, 0, 0
  if cookies ~= nil then
    count = cookies:count()
    first = cookies:getValues()[1]:len()
    if #cookies:getValues() ~= count then return DNSAction.Spoof, "10.9.9.9" end
  end
  if ecs ~= nil then ecslen = ecs:getValues()[1]:len() end
  -- pairs walks the same table: every code seen once.
  local codes = 0
  for code, option in pairs(options) do codes = codes + 1 end
  if options[EDNSOptionCode.NSID] ~= nil or codes < 1 then return DNSAction.Spoof, "10.9.9.8" end
  return DNSAction.Spoof, "10." .. count .. "." .. first .. "." .. ecslen
end
addAction(AllRule(), LuaAction(read))
"""


async def spoofed(t: object, msg: dns.message.Message, transport: str) -> str:
    reply = await getattr(t, transport)(msg)
    assert reply is not None
    (rrset,) = reply.answer
    (rdata,) = rrset
    return str(rdata.address)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_lua_rule_reads_the_options(
    transport: str, start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(READER)
    cases = [
        (dns.message.make_query("plain.example.org.", "A"), "10.0.0.1"),
        (with_options("empty.example.org."), "10.0.0.1"),
        (with_options("one.example.org.", cookie(b"c" * 8)), "10.1.8.0"),
        (with_options("server.example.org.", cookie(b"c" * 8, b"s" * 16)), "10.1.24.0"),
        # IPv4 /24: family (2) + prefixes (2) + 3 address bytes.
        (with_options("ecs.example.org.", subnet("192.0.2.0", 24)), "10.0.0.7"),
        (
            with_options(
                "two.example.org.",
                cookie(b"a" * 8),
                subnet("2001:db8::", 56),
                cookie(b"b" * 8, b"x" * 8),
            ),
            "10.2.8.11",
        ),
    ]
    for query, expected in cases:
        assert await spoofed(t, query, transport) == expected, query.question[0].name
    assert not auth.received  # every one answered by the rule
    await accounted(t)


def test_the_options_of_a_query_from_python() -> None:
    query = with_options("x.example.org.", cookie(b"a" * 8), cookie(b"b" * 8, b"c" * 8))
    dq = DNSQuestion(query.to_wire(), ("192.0.2.1", 5300), ("127.0.0.1", 53), now=0.0)
    options = dq.getEDNSOptions()
    assert list(options) == [COOKIE]
    assert options[COOKIE].count() == 2
    values = options[COOKIE].getValues()
    assert (values[1], values[2], values[3], values[0]) == (
        b"a" * 8,
        b"b" * 8 + b"c" * 8,
        None,
        None,
    )
    assert len(values) == 2
    assert options[ECS] is None  # nil in Lua, not an error


def _opt_query(rdata: bytes, *, owner: bytes = b"\x00") -> bytes:
    """A query for example.org. A with one OPT record holding ``rdata`` as its options."""
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 1)
    question = b"\x07example\x03org\x00" + struct.pack("!HH", 1, 1)
    opt = owner + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata
    return header + question + opt


def test_hostile_options_give_what_could_be_read() -> None:
    good = struct.pack("!HH", COOKIE, 8) + b"k" * 8
    # An option whose length runs past the record: the one before it is kept.
    runs_past = good + struct.pack("!HH", ECS, 200) + b"x" * 4
    data = _opt_query(runs_past)
    options = edns_options(data, len(data) - (11 + len(runs_past)))
    assert {code: view.values for code, view in options.items()} == {COOKIE: [b"k" * 8]}
    # Three stray bytes after a whole option: not an option.
    data = _opt_query(good + b"\x00\x0a\x00")
    options = edns_options(data, len(data) - (11 + len(good) + 3))
    assert {code: view.count() for code, view in options.items()} == {COOKIE: 1}
    # An OPT record whose data runs past the message: no OPT record at all.
    data = _opt_query(good)[:-3]
    assert edns_options(data, 29) == {}
    # Too short for a header: nothing.
    assert edns_options(b"\x00\x01", 12) == {}


async def test_option_version_and_extended_rcode_rules(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        newServer{address="$BACKEND"}
        addAction(EDNSOptionRule(EDNSOptionCode.COOKIE), DropAction())
        addAction(EDNSVersionRule(0), ERCodeAction(DNSRCode.BADVERS))
        -- NOERROR with an OPT record (no extended rcode bits): dropped; without: sent.
        addResponseAction(ERCodeRule(DNSRCode.NOERROR), DropResponseAction())
        """
    )
    for transport in ("udp", "tcp"):
        ask = getattr(t, transport)
        before = len(auth.received)
        assert await ask(with_options("www.example.org.", cookie(b"c" * 8)), timeout=0.5) is None
        assert len(auth.received) == before  # dropped by the query rule, not on its way back
        badvers = await ask(with_options("www.example.org.", version=1))
        assert badvers is not None
        assert badvers.rcode() == dns.rcode.BADVERS
        # EDNS 0 without a cookie reaches the backend, whose NOERROR answer (with its OPT
        # record) the response rule drops; a query without EDNS gets its answer.
        assert await ask(with_options("www.example.org."), timeout=0.5) is None
        plain = await ask(dns.message.make_query("www.example.org.", "A"))
        assert plain is not None
        assert plain.rcode() == dns.rcode.NOERROR
        assert plain.answer


async def test_ercoderule_on_a_backends_badvers(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    # The test backend answers BADVERS to EDNS versions above 0: an extended rcode (16)
    # whose header bits are NOERROR's.
    t = await start_triodist(
        """
        newServer{address="$BACKEND"}
        addResponseAction(ERCodeRule(DNSRCode.BADVERS), DropResponseAction())
        """
    )
    assert await t.udp(with_options("www.example.org.", version=1), timeout=0.5) is None
    answered = await t.udp(with_options("www.example.org."))
    assert answered is not None
    assert answered.rcode() == dns.rcode.NOERROR
    assert len(auth.received) == 2


async def test_set_edns_option_action(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        """
        newServer{address="$BACKEND"}
        addAction("set.example.org.",
                  SetEDNSOptionAction(EDNSOptionCode.COOKIE, "0123456789abcdef"))
        """
    )
    for transport in ("udp", "tcp"):
        ask = getattr(t, transport)
        # No EDNS: the query gets an OPT record (payload 512) holding the option alone.
        reply = await ask(dns.message.make_query("set.example.org.", "A"))
        assert reply is not None
        sent = auth.received[-1].message
        assert (sent.edns, sent.payload) == (0, 512)
        assert [(o.otype, o.to_wire()) for o in sent.options] == [(COOKIE, b"0123456789abcdef")]
        # The backend answered with EDNS; the client, who sent none, gets none.
        assert reply.edns == -1
        # An option of the same code is replaced, the others kept, the new one last.
        query = with_options(
            "set.example.org.", cookie(b"old-one!"), subnet("192.0.2.0", 24), cookie(b"old-two!")
        )
        query.ednsflags |= dns.flags.DO
        reply = await ask(query)
        assert reply is not None
        sent = auth.received[-1].message
        assert [o.otype for o in sent.options] == [ECS, COOKIE]
        assert sent.options[1].to_wire() == b"0123456789abcdef"
        assert (sent.payload, bool(sent.ednsflags & dns.flags.DO)) == (1232, True)
        assert reply.edns == 0  # the client's own OPT record: its answer keeps one
    # Other names are left alone.
    await t.udp(dns.message.make_query("www.example.org.", "A"))
    assert auth.received[-1].message.edns == -1


def test_descriptions_and_bad_arguments(tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(
        """
        addAction(EDNSOptionRule(8), DropAction())
        addAction(EDNSVersionRule(0), ERCodeAction(DNSRCode.BADVERS))
        addAction(AllRule(), SetEDNSOptionAction(10, "x"))
        addAction(AllRule(), NegativeAndSOAAction(true, "auth.", 42, "m", "r", 1, 2, 3, 4, 5))
        addAction(AllRule(), NegativeAndSOAAction(false, "auth.", 42, "m", "r", 1, 2, 3, 4, 5))
        addResponseAction(ERCodeRule(DNSRCode.BADVERS), DropResponseAction())
        addResponseAction(ERCodeRule(3), DropResponseAction())
        """
    )
    config = load_config(path).api.config
    queries = [(str(r.selector), str(r.action)) for r in config.chains.queries.rules]
    assert queries == [
        ("ednsoptcode==8", "drop"),
        ("ednsversion>0", "set ercode Bad OPT Version / TSIG Signature Failure"),
        ("All", "add EDNS Option (code=10)"),
        ("All", "NXD  with SOA"),
        ("All", "NODATA with SOA"),
    ]
    responses = [str(r.selector) for r in config.chains.responses.rules]
    assert responses == [
        "ercode==Bad OPT Version / TSIG Signature Failure",
        "ercode==Non-Existent domain",
    ]
    for line, message in (
        ("EDNSOptionRule(65536)", "EDNSOptionRule: expected an EDNS option code"),
        ("EDNSVersionRule(-1)", "EDNSVersionRule: expected an EDNS version"),
        ("ERCodeRule('x')", "ERCodeRule: expected an rcode"),
        ("ERCodeAction(4096)", "ERCodeAction: expected an rcode"),
        ("SetEDNSOptionAction(10, nil)", "SetEDNSOptionAction: expected a string, got nil"),
        ("NegativeAndSOAAction(1, 'a.', 1, 'm', 'r', 1, 2, 3, 4, 5)", "expected true or false"),
    ):
        path.write_text(f"\nlocal x = {line}\n")
        with pytest.raises(Exception, match=rf"rules\.lua:2: .*{message}"):
            load_config(path)
