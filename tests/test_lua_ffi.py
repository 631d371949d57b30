"""dnsdist's C interface for LuaJIT's FFI, end to end: ``LuaFFIAction``, ``LuaFFIRule``,
``LuaFFIResponseAction``, the FFI server policies and the ``dnsdist_ffi_*`` functions,
and what happens when a configuration misuses them (a Lua error that fails the rule,
never the server).

Each test starts triodist on loopback in front of ``AuthServer`` backends and sends real
queries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.edns
import dns.rcode
import pytest
from conftest import StartTriodist, hostport, query, records, whoami

from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import load_config
from triodist.testing.backend import AuthServer

MakeAuth = Callable[..., Awaitable[AuthServer]]

HEAD = """
newServer{address="$BACKEND"}
local ffi = require("ffi")
local C = ffi.C

-- Answers with the text Lua made, as a Spoof verdict's addresses.
local function answer(dq, text)
  local buf = ffi.new("char[?]", #text + 1)
  ffi.copy(buf, text)
  C.dnsdist_ffi_dnsquestion_set_result(dq, buf, #text)
  return DNSAction.Spoof
end
"""


async def test_ffi_action_spoofs_raw_records(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        HEAD
        + """
addAction("raw.example.org.", LuaFFIAction(function(dq)
  if C.dnsdist_ffi_dnsquestion_get_qtype(dq) ~= DNSQType.TXT then return DNSAction.None end
  local values = ffi.new("dnsdist_ffi_raw_value_t[2]")
  local one, two = "\\004a,bc", "\\002de"
  values[0].value, values[0].size = one, #one
  values[1].value, values[1].size = two, #two
  C.dnsdist_ffi_dnsquestion_spoof_raw(dq, values, 2)
  return DNSAction.HeaderModify
end))
"""
    )
    for tcp in (False, True):
        reply = await t.ask("raw.example.org.", "TXT", tcp=tcp)
        assert records(reply) == {'raw.example.org. TXT "a,bc"', 'raw.example.org. TXT "de"'}
    # DNSAction.None: on to the backend.
    reply = await t.ask("raw.example.org.", "A")
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert auth.udp_queries == 1


async def test_ffi_action_reads_the_query(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        HEAD
        + """
local function qname_of(dq)
  local name = ffi.new("const char *[1]")
  local size = ffi.new("size_t[1]")
  C.dnsdist_ffi_dnsquestion_get_qname_raw(dq, name, size)
  return name, size
end
-- Collections, then new buffers of the name's size, which would take its memory were it
-- freed: the buffers handed out live until the FFI call ends.
local function churn()
  for _ = 1, 3 do collectgarbage("collect") end
  local filler = {}
  for i = 1, 5000 do filler[i] = ffi.new("char[?]", 19, ("z"):rep(18)) end
end
addAction("read.example.org.", LuaFFIAction(function(dq)
  local name, size = qname_of(dq)
  churn()
  local wire = ffi.string(name[0], size[0])
  local addr = ffi.new("const void *[1]")
  local addrsize = ffi.new("size_t[1]")
  C.dnsdist_ffi_dnsquestion_get_masked_remoteaddr(dq, addr, addrsize, 8)
  local masked = ffi.string(addr[0], addrsize[0])
  local tcp = C.dnsdist_ffi_dnsquestion_get_tcp(dq) and 1 or 0
  if wire ~= "\\004read\\007example\\003org\\000" then return answer(dq, "192.0.2.200") end
  return answer(dq, "192.0.2." .. #wire .. ",192.0.2." .. masked:byte(1) .. ",192.0.2." ..
    (masked:byte(2) + 10 * tcp))
end))
"""
    )
    reply = await t.ask("read.example.org.", "A")
    # 4read7example3org0: 18 bytes; 127.0.0.1 masked to /8: 127.0.0.0.
    assert records(reply) == {
        "read.example.org. A 192.0.2.18",
        "read.example.org. A 192.0.2.127",
        "read.example.org. A 192.0.2.0",
    }
    reply = await t.ask("read.example.org.", "A", tcp=True)
    assert "read.example.org. A 192.0.2.10" in records(reply)


async def test_ffi_action_gets_the_edns_options_by_code(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        HEAD
        + """
addAction("edns.example.org.", LuaFFIAction(function(dq)
  local out = ffi.new("const dnsdist_ffi_ednsoption_t *[1]")
  local n = tonumber(C.dnsdist_ffi_dnsquestion_get_edns_options(dq, out))
  if n == 0 then return answer(dq, "192.0.2.100") end
  local parts = {}
  for i = 0, n - 1 do
    local o = out[0][i]
    local first = o.len > 0 and ffi.cast("const uint8_t *", o.data)[0] or 0
    parts[#parts + 1] = "192.0.2." .. (o.optionCode % 256) .. ",192.0.2." .. (100 + o.len) ..
      ",192.0." .. (i + 10) .. "." .. first
  end
  return answer(dq, table.concat(parts, ","))
end))
"""
    )
    reply = await t.ask("edns.example.org.", "A")
    assert records(reply) == {"edns.example.org. A 192.0.2.100"}
    # Two cookies (code 10) around an ECS option (code 8): given back by code, the two
    # cookies in the order they came.
    msg = query("edns.example.org.", "A", edns=True)
    msg.use_edns(
        0,
        options=[
            dns.edns.GenericOption(10, b"\x07" + b"c" * 7),
            dns.edns.GenericOption(8, b"\x00\x01\x18\x00\xc0\x00\x02"),
            dns.edns.GenericOption(10, b"\x09" + b"d" * 15),
        ],
    )
    reply = await t.udp(msg)
    assert records(reply) == {
        f"edns.example.org. A {a}"
        for a in (
            "192.0.2.8",
            "192.0.2.107",
            "192.0.10.0",
            "192.0.2.10",
            "192.0.2.108",
            "192.0.11.7",
            "192.0.2.116",
            "192.0.12.9",
        )
    }


async def test_ffi_tags_ttl_and_rcode(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(
        HEAD
        + """
addAction(AllRule(), LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_set_tag(dq, "seen", "yes")
  return DNSAction.None
end))
addAction("tag.example.org.", LuaFFIAction(function(dq)
  local missing = C.dnsdist_ffi_dnsquestion_get_tag(dq, "nothing")
  local seen = ffi.string(C.dnsdist_ffi_dnsquestion_get_tag(dq, "seen"))
  local tags = ffi.new("const dnsdist_ffi_tag_t *[1]")
  local n = tonumber(C.dnsdist_ffi_dnsquestion_get_tag_array(dq, tags))
  if missing == nil and seen == "yes" and n == 1 and ffi.string(tags[0][0].name) == "seen" then
    return answer(dq, "192.0.2.1")
  end
  return answer(dq, "192.0.2.2")
end))
addAction("ttl.example.org.", LuaFFIAction(function(dq)
  local before = C.dnsdist_ffi_dnsquestion_is_temp_failure_ttl_set(dq)
  C.dnsdist_ffi_dnsquestion_set_temp_failure_ttl(dq, 42)
  local ttl = C.dnsdist_ffi_dnsquestion_get_temp_failure_ttl(dq)
  C.dnsdist_ffi_dnsquestion_unset_temp_failure_ttl(dq)
  local after = C.dnsdist_ffi_dnsquestion_is_temp_failure_ttl_set(dq)
  if not before and ttl == 42 and not after then return answer(dq, "192.0.2.42") end
  return answer(dq, "192.0.2.43")
end))
addAction("rcode.example.org.", LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_set_rcode(dq, DNSRCode.REFUSED)
  return DNSAction.HeaderModify
end))
addAction(LuaFFIRule(function(dq)
  return C.dnsdist_ffi_dnsquestion_get_qtype(dq) == DNSQType.MX
end), RCodeAction(DNSRCode.NOTIMP))
addResponseAction(AllRule(), LuaFFIResponseAction(function(dr)
  if C.dnsdist_ffi_dnsquestion_get_qtype(dr) == DNSQType.TXT then
    return DNSResponseAction.Drop
  end
  return DNSResponseAction.None
end))
"""
    )
    assert records(await t.ask("tag.example.org.", "A")) == {"tag.example.org. A 192.0.2.1"}
    assert records(await t.ask("ttl.example.org.", "A")) == {"ttl.example.org. A 192.0.2.42"}
    reply = await t.ask("rcode.example.org.", "A")
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    reply = await t.ask("www.example.org.", "MX")
    assert reply is not None and reply.rcode() == dns.rcode.NOTIMP
    assert await t.ask("www.example.org.", "TXT", timeout=0.5) is None
    assert records(await t.ask("www.example.org.", "A")) == {
        "www.example.org. A 192.0.2.10",
        "www.example.org. A 192.0.2.11",
    }
    assert auth.udp_queries == 2


MISUSE = (
    HEAD
    + """
kept = nil
addAction("keep.example.org.", LuaFFIAction(function(dq)
  kept = dq
  return DNSAction.None
end))
addAction("later.example.org.", LuaAction(function(dq)
  C.dnsdist_ffi_dnsquestion_get_qtype(kept)
  return DNSAction.None
end))
addAction("null.example.org.", LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_get_qname_raw(dq, nil, nil)
  return DNSAction.None
end))
addAction("notdq.example.org.", LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_get_qtype({})
  return DNSAction.None
end))
addAction("toomany.example.org.", LuaFFIAction(function(dq)
  local values = ffi.new("dnsdist_ffi_raw_value_t[1]")
  C.dnsdist_ffi_dnsquestion_spoof_raw(dq, values, 1000000)
  return DNSAction.HeaderModify
end))
addAction("missing.example.org.", LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_get_header(dq)
  return DNSAction.None
end))
addAction("nil.example.org.", LuaFFIAction(function(dq) end))
"""
)


@pytest.mark.parametrize(
    ("label", "error"),
    [
        ("keep", "expected the dq given to the LuaFFI function running now"),
        ("null", "dnsdist_ffi_dnsquestion_get_qname_raw: expected a pointer"),
        ("notdq", "dnsdist_ffi_dnsquestion_get_qtype: expected the dq"),
        ("toomany", "count 1000000 is larger than the array (1)"),
        ("missing", "dnsdist_ffi_dnsquestion_get_header: not supported by triodist"),
        ("nil", "returned nil, not a number"),
    ],
)
async def test_misuse_fails_the_rule_not_the_server(
    start_triodist: StartTriodist, caplog: pytest.LogCaptureFixture, label: str, error: str
) -> None:
    t = await start_triodist(MISUSE)
    first = "later" if label == "keep" else label
    if label == "keep":
        # Kept during one query's call; used in another call, outside any FFI call.
        await t.ask("keep.example.org.", "A")
    reply = await t.ask(f"{first}.example.org.", "A")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert t.stats["rule-errors"] == 1
    assert error in caplog.text
    # The next query is answered as usual.
    assert records(await t.ask("www.example.org.", "A")) == {
        "www.example.org. A 192.0.2.10",
        "www.example.org. A 192.0.2.11",
    }


POLICY = """
newServer{address="$A", name="a"}
newServer{address="$B", name="b"}
local ffi = require("ffi")
local C = ffi.C
"""


async def test_ffi_policy_chooses_by_index(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a, b = await make_auth(name="backend-a"), await make_auth(name="backend-b")
    t = await start_triodist(
        (
            POLICY
            + """
setServerPolicyLuaFFI("second-up", function(list, dq)
  local n = tonumber(C.dnsdist_ffi_servers_list_get_count(list))
  local server = ffi.new("const dnsdist_ffi_server_t *[1]")
  for i = n - 1, 0, -1 do
    C.dnsdist_ffi_servers_list_get_server(list, i, server)
    if C.dnsdist_ffi_server_is_up(server[0])
       and ffi.string(C.dnsdist_ffi_server_get_name(server[0])) == "b" then
      return i
    end
  end
  return 0
end)
"""
        )
        .replace("$A", hostport(a))
        .replace("$B", hostport(b))
    )
    assert [await whoami(t) for _ in range(3)] == ["backend-b"] * 3
    t.lua.api.config.routing.servers[1].setDown()
    assert await whoami(t) == "backend-a"


async def test_ffi_per_thread_policy_runs_its_code(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a, b = await make_auth(name="backend-a"), await make_auth(name="backend-b")
    t = await start_triodist(
        (
            POLICY
            + """
counter = 100 -- the code's own counter is another
setServerPolicyLuaFFIPerThread("rr", [[
  local ffi = require("ffi")
  local C = ffi.C
  counter = 0
  return function(list, dq)
    counter = counter + 1
    return counter % tonumber(C.dnsdist_ffi_servers_list_get_count(list))
  end
]])
"""
        )
        .replace("$A", hostport(a))
        .replace("$B", hostport(b))
    )
    seen = [await whoami(t, tcp=n % 2 == 0) for n in range(4)]
    assert seen == ["backend-b", "backend-a", "backend-b", "backend-a"]
    assert t.lua.lua.eval("counter") == 100


async def test_ffi_policy_out_of_range_is_no_server(
    start_triodist: StartTriodist, caplog: pytest.LogCaptureFixture
) -> None:
    t = await start_triodist(
        "newServer{address='$BACKEND'}\nsetServFailWhenNoServer(true)\n"
        'setServerPolicyLuaFFI("far", function(list, dq) return 7 end)\n'
    )
    reply = await t.ask("www.example.org.", "A")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert "Server policy 'far' returned 7, not the index of one of the 1 servers" in caplog.text


def test_per_thread_code_that_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    path = tmp_path / "rules.lua"
    # A rule's: logged with file and line, the configuration goes on, the rule fails.
    path.write_text('addAction(AllRule(), LuaFFIPerThreadAction("return 5"))\n')
    lua = load_config(path)
    assert lua.api.errors == [
        f"{path}:1: LuaFFIPerThreadAction: the code returned number, not a function"
    ]
    assert len(lua.api.config.chains.queries.rules) == 1
    # A policy's stops the configuration, as in dnsdist.
    path.write_text('setServerPolicyLuaFFIPerThread("broken", "return function(")\n')
    with pytest.raises(ConfigError, match=r"rules.lua:1: setServerPolicyLuaFFIPerThread: .*eof"):
        load_config(path)


def test_ffi_functions_need_a_function(tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text("addAction(AllRule(), LuaFFIAction(5))\n")
    with pytest.raises(ConfigError, match=r"rules.lua:1: LuaFFIAction: expected a function"):
        load_config(path)


def test_other_names_are_luajits_own(tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(
        'local ffi = require("ffi")\n'
        'ffi.cdef("int abs(int);")\n'
        "magnitude = ffi.C.abs(-7)\n"
        "arch = ffi.arch\n"
        'size = ffi.sizeof("dnsdist_ffi_ednsoption_t")\n'
    )
    lua = load_config(path)
    assert lua.lua.eval("magnitude") == 7
    assert lua.lua.eval("arch") in ("x64", "arm64")
    assert lua.lua.eval("size") == 16


def test_a_misused_function_is_an_error_at_the_callers_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(
        'local ffi = require("ffi")\n'
        "local values = ffi.new('dnsdist_ffi_raw_value_t[1]')\n"
        "ffi.C.dnsdist_ffi_dnsquestion_get_qtype({})\n"
    )
    with pytest.raises(
        ConfigError, match=r"rules.lua:3: dnsdist_ffi_dnsquestion_get_qtype: expected the dq"
    ):
        load_config(path)
