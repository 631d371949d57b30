"""dnsdist compatibility of the configuration surface.

* every configuration in ``examples/`` passes ``triodist check-config`` (the real
  command line), and ``check-config`` binds nothing and contacts no backend;
* every dnsdist function and option that real configurations use often (three
  files or more out of the 105 counted in ``tests/data/``) is known to triodist;
* a name dnsdist does not have is an error naming it, with file and line;
* ``docs/reference/configuration.md`` and ``ConfigAPI.functions()`` agree, and triodist
  registers no global name that dnsdist does not have.
"""

from __future__ import annotations

import csv
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from helpers import subprocess_env

from triodist.backends.pools import Pool
from triodist.backends.server import Server
from triodist.config.api import ConfigAPI
from triodist.config.bindings import listeners, servers
from triodist.config.bindings.args import ConfigError
from triodist.config.bindings.notyet import Anything
from triodist.config.dnsdist_names import (
    DNSDIST_CONSTANT_TABLES,
    DNSDIST_GLOBALS,
    DNSDIST_USER_HOOKS,
    TRIODIST_GLOBALS,
)
from triodist.config.runtime import LUPA, LuaConfig, load_config
from triodist.config.unsupported import QUIET_TUNABLES
from triodist.query.pipeline import Pipeline
from triodist.rules.actionbase import QueryAction, ResponseActionBase
from triodist.rules.matchers import DNSNameSet, NetmaskGroup, SuffixMatchNode
from triodist.rules.selectors import Selector
from triodist.wire.address import ComboAddress
from triodist.wire.message import DNSQuestion, DNSResponse
from triodist.wire.names import DNSName

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.lua"))
DOC = ROOT / "docs" / "reference" / "configuration.md"
DATA = Path(__file__).resolve().parent / "data"
MIN_FILES = 3  # "used by 3 or more of the 105 configurations"

# Functions the Lua runtime provides itself, rather than ConfigAPI.functions().
RUNTIME_FUNCTIONS = {"includeDirectory"}


# --- helpers ---------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triodist", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=120,
    )


def is_placeholder(value: Any) -> bool:
    """A not-yet-supported dnsdist name: it loads with (or without) a warning, and does nothing."""
    return isinstance(value, Anything) or "_not_yet" in getattr(value, "__qualname__", "")


def implemented() -> set[str]:
    fns = ConfigAPI().functions()
    return {name for name, value in fns.items() if not is_placeholder(value)} | RUNTIME_FUNCTIONS


def placeholders() -> set[str]:
    fns = ConfigAPI().functions()
    return {name for name, value in fns.items() if is_placeholder(value)} - RUNTIME_FUNCTIONS


def expected_status(name: str) -> str:
    if name in implemented():
        return "supported"
    return "quiet" if name in QUIET_TUNABLES else "warns"


def load(code: str, tmp_path: Path, name: str = "rules.lua") -> LuaConfig:
    path = tmp_path / name
    path.write_text(code)
    return load_config(path)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_placeholder_detection_still_works() -> None:
    # The tests below tell implemented functions from placeholders; make sure they still can.
    fns = ConfigAPI().functions()
    assert is_placeholder(fns["webserver"])
    assert is_placeholder(fns["setMaxTCPQueuedConnections"])
    assert not is_placeholder(fns["newServer"])
    assert not is_placeholder(fns["AllRule"])
    assert not is_placeholder(fns["roundrobin"])


# --- examples/ -------------------------------------------------------------------------


def _header_comment(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check_config(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    result = run_cli("check-config", "-C", relative)
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr
    # An example that relies on functions triodist does not have yet says so at the top,
    # and check-config's last line names what is ignored; the others load without a
    # single warning, and check-config says dnsdist's "OK!".
    header = _header_comment(path)
    assert header, f"{relative}: start with a comment that says what the example shows"
    warned = [
        line
        for line in result.stderr.splitlines()
        if "not supported" in line or "unknown option" in line or "ignored" in line
    ]
    last = result.stdout.splitlines()[-1]
    if "warning" not in header.lower():
        assert warned == []
        assert last == f"Configuration '{relative}' OK!"
    else:
        assert last.startswith(f"Configuration '{relative}' loads, but triodist ignores ")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_addresses_are_loopback_or_documentation(path: Path) -> None:
    text = path.read_text()
    for address in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text):
        assert address.startswith(("127.", "192.0.2.", "0.0.0.0")), (path.name, address)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 held in UDP and in TCP (listening) for the test's duration."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        udp.setblocking(False)
        tcp.setblocking(False)
        try:
            yield port
            # Nothing may have been sent to the held port either (no backend contact).
            with pytest.raises(BlockingIOError):
                udp.recvfrom(4096)
            with pytest.raises(BlockingIOError):
                tcp.accept()
        finally:
            udp.close()
            tcp.close()
        return
    pytest.fail("no free port found")


def test_check_config_binds_nothing_and_contacts_no_backend(held_port: int, tmp_path: Path) -> None:
    config = tmp_path / "busy.lua"
    config.write_text(
        f'setLocal("127.0.0.1:{held_port}")\n'
        f'addLocal("127.0.0.1:{held_port}", {{reusePort = false}})\n'
        f'newServer({{address = "127.0.0.1:{held_port}", name = "held"}})\n'
        f'newServer("127.0.0.1:{held_port}")\n'
        'addAction(AllRule(), PoolAction(""))\n'
    )
    result = run_cli("check-config", "-C", str(config))
    assert result.returncode == 0, result.stderr
    assert f"Configuration '{config}' OK!" in result.stdout.splitlines()


def test_serve_check_config_binds_nothing(held_port: int, tmp_path: Path) -> None:
    config = tmp_path / "busy.lua"
    config.write_text(f'setLocal("127.0.0.1:{held_port}")\n')
    result = run_cli("serve", "--check-config", "-C", str(config))
    assert result.returncode == 0, result.stderr
    assert f"Configuration '{config}' OK!" in result.stdout.splitlines()


# What some examples do to queries, checked without sockets: the rule chain alone.


def _outcome(lua: LuaConfig, name: str, rdtype: str, source: str = "127.0.0.1") -> Any:
    config = lua.api.config
    pipeline = Pipeline(config.chains, config.routing, config.settings)
    query = dns.message.make_query(name, rdtype)
    dq = DNSQuestion(query.to_wire(), (source, 40000), ("127.0.0.1", 5300))
    verdict = pipeline.run_query_rules(dq)
    assert isinstance(verdict, str), "these examples never suspend a query"
    answer = dns.message.from_wire(bytes(dq.data)) if verdict == "answer" else None
    return verdict, dq, answer


async def test_example_filtering_blocks_what_it_says() -> None:
    lua = load_config(ROOT / "examples" / "filtering.lua")
    assert _outcome(lua, "www.malware.example.", "A")[0] == "drop"
    _, _, answer = _outcome(lua, "ads.example.", "AAAA")
    assert answer is not None and answer.rcode() == dns.rcode.NXDOMAIN
    _, _, answer = _outcome(lua, "casino.example.", "A")
    assert answer is not None and [str(rr[0]) for rr in answer.answer] == ["192.0.2.80"]
    _, _, answer = _outcome(lua, "a.corp.example.", "A", source="192.0.2.200")
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    assert _outcome(lua, "a.corp.example.", "A", source="192.0.2.1")[0] == "forward"
    _, _, answer = _outcome(lua, "example.", "ANY")
    assert answer is not None and answer.flags & dns.flags.TC
    assert _outcome(lua, "www.example.", "A")[0] == "forward"


async def test_example_lua_actions_answer_and_route() -> None:
    lua = load_config(ROOT / "examples" / "lua-actions.lua")
    _, _, answer = _outcome(lua, "printer.home.example.", "A")
    assert answer is not None and [str(rr[0]) for rr in answer.answer] == ["192.0.2.40"]
    verdict, dq, _ = _outcome(lua, "www.example.", "A", source="192.0.2.130")
    assert verdict == "forward" and dq.pool == "lab"
    assert len(lua.api.config.chains.responses.rules) == 5


async def test_example_pools_routes_to_pools() -> None:
    lua = load_config(ROOT / "examples" / "pools.lua")
    routing = lua.api.config.routing
    assert {s.name for s in routing.pools["internal"].servers} == {"internal1", "internal2"}
    assert {s.name for s in routing.pools[""].servers} == {"general1", "general2"}
    assert (
        routing.pools["bulk"].policy is not None and routing.pools["bulk"].policy.name == "whashed"
    )
    verdict, dq, _ = _outcome(lua, "host.corp.example.", "A")
    assert (verdict, dq.pool) == ("forward", "internal")
    verdict, dq, _ = _outcome(lua, "www.example.", "A", source="192.0.2.200")
    assert (verdict, dq.pool) == ("forward", "abuse")


# --- what real configurations use --------------------------------------------------------


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


USAGE = [row for row in _rows("dnsdist-usage.tsv") if int(row["files"]) >= MIN_FILES]
OPTIONS = [row for row in _rows("dnsdist-options-usage.tsv") if int(row["files"]) >= MIN_FILES]

CERT = '"/etc/dnsdist/cert.pem", "/etc/dnsdist/key.pem"'

# One plausible use of each function (or method, through its object) in the usage table.
# "$DIR" is a directory holding one .conf file.
CALLS: dict[str, str] = {
    "newServer": 'newServer({address = "192.0.2.1:53", name = "resolver1"})',
    "addAction": "addAction(AllRule(), AllowAction())",
    "setLocal": 'setLocal("127.0.0.1:5300")',
    "setACL": 'setACL({"127.0.0.0/8", "192.0.2.0/24"})',
    "addLocal": 'addLocal("127.0.0.1:5301")',
    "setServerPolicy": "setServerPolicy(firstAvailable)",
    "AllRule": "addAction(AllRule(), NoneAction())",
    "PoolAction": 'addAction("abuse.example.", PoolAction("abuse"))',
    "webserver": 'webserver("127.0.0.1:8083")',
    "addDOHLocal": f'addDOHLocal("127.0.0.1:8443", {CERT}, "/dns-query")',
    "controlSocket": 'controlSocket("127.0.0.1:5199")',
    ":setCache": 'getPool(""):setCache(newPacketCache(10000))',
    "addACL": 'addACL("192.0.2.0/24")',
    "getPool": 'local pool = getPool("abuse")',
    "newPacketCache": "local pc = newPacketCache(10000, {maxTTL = 86400})",
    "DropAction": "addAction(QTypeRule(DNSQType.ANY), DropAction())",
    "setKey": 'setKey("MXNeLFWHUe4363BBKrY06cAsH8NWNb+Se2eXU5+Bb74=")',
    "addTLSLocal": f'addTLSLocal("127.0.0.1:8853", {CERT})',
    "setWebserverConfig": 'setWebserverConfig({password = "secret", apiKey = "key"})',
    "setSecurityPollSuffix": 'setSecurityPollSuffix("")',
    "AndRule": "addAction(AndRule({QTypeRule(DNSQType.A), RDRule()}), NoneAction())",
    "MaxQPSIPRule": "addAction(MaxQPSIPRule(10, 24, 48), DropAction())",
    "QTypeRule": 'addAction(QTypeRule("AAAA"), NoneAction())',
    ":add": (
        'local smn = newSuffixMatchNode(); smn:add("ads.example.");'
        ' smn:add(newDNSName("tracker.example."));'
        ' assert(smn:check(newDNSName("www.ads.example.")))'
        ' local set = newDNSNameSet(); set:add(newDNSName("a.example.")); assert(set:size() == 1)'
    ),
    "includeDirectory": 'includeDirectory("$DIR")',
    "newSuffixMatchNode": "local smn = newSuffixMatchNode()",
    "setVerboseHealthChecks": "setVerboseHealthChecks(true)",
    ":toString": (
        'assert(newDNSName("www.example"):toString() == "www.example.")'
        ' assert(newCA("192.0.2.1"):toString() == "192.0.2.1")'
        ' assert(AllRule():toString() ~= "")'
    ),
    "addResponseAction": "addResponseAction(AllRule(), SetMaxTTLResponseAction(3600))",
    "LuaAction": 'addAction(AllRule(), LuaAction(function(dq) return DNSAction.None, "" end))',
    "newDNSName": 'local name = newDNSName("example.")',
    "RegexRule": r'addAction(RegexRule("^ads?[0-9]*\\."), DropAction())',
    "setConsoleACL": 'setConsoleACL("127.0.0.1/32")',
    "setMaxTCPClientThreads": "setMaxTCPClientThreads(10)",
    "setMaxUDPOutstanding": "setMaxUDPOutstanding(65535)",
    "setVerbose": "setVerbose(false)",
    "SpoofAction": 'addAction("blocked.example.", SpoofAction({"192.0.2.1", "192.0.2.2"}))',
    "SuffixMatchNodeRule": (
        'local smn = newSuffixMatchNode(); smn:add("example.");'
        " addAction(SuffixMatchNodeRule(smn, true), DropAction())"
    ),
    "RCodeAction": 'addAction("example.", RCodeAction(DNSRCode.REFUSED, {aa = true}))',
    "DelayAction": "addAction(MaxQPSIPRule(5), DelayAction(100))",
    ":apply": (
        "local dbr = dynBlockRulesGroup(); function maintenance() dbr:apply() end dbr:apply()"
    ),
    ":setQTypeRate": (
        'dynBlockRulesGroup():setQTypeRate(DNSQType.ANY, 5, 10, "Exceeded ANY rate", 60)'
    ),
    ":setQueryRate": 'dynBlockRulesGroup():setQueryRate(300, 10, "Exceeded query rate", 60)',
    "dynBlockRulesGroup": "local dbr = dynBlockRulesGroup()",
    "LogAction": 'addAction(AllRule(), LogAction("", false, false, true, true))',
    "QClassRule": "addAction(QClassRule(DNSClass.CHAOS), DropAction())",
    "QNameRule": 'addAction(QNameRule("version.bind."), DropAction())',
    "setMaxTCPQueriesPerConnection": "setMaxTCPQueriesPerConnection(100)",
    "setRingBuffersSize": "setRingBuffersSize(10000, 10)",
    ":addMask": (
        'local nmg = newNMG(); nmg:addMask("192.0.2.0/24"); assert(nmg:match(newCA("192.0.2.1")))'
    ),
    ":setRCodeRate": (
        'dynBlockRulesGroup():setRCodeRate(DNSRCode.NXDOMAIN, 50, 10, "Exceeded NXD rate", 60)'
    ),
    "addDOQLocal": f'addDOQLocal("127.0.0.1:853", {CERT})',
    "DnstapLogResponseAction": (
        "addResponseAction(AllRule(),"
        ' DnstapLogResponseAction("edge1", newFrameStreamUnixLogger("/run/dnstap.sock")))'
    ),
    "newNMG": "local nmg = newNMG()",
    "OpcodeRule": "addAction(OpcodeRule(DNSOpcode.Notify), RCodeAction(DNSRCode.REFUSED))",
    "RCodeRule": "addResponseAction(RCodeRule(DNSRCode.SERVFAIL), DropResponseAction())",
    "setECSSourcePrefixV4": "setECSSourcePrefixV4(24)",
    "setECSSourcePrefixV6": "setECSSourcePrefixV6(56)",
    "setMaxTCPConnectionsPerClient": "setMaxTCPConnectionsPerClient(10)",
    "TCAction": "addAction(AndRule({QTypeRule(DNSQType.ANY), TCPRule(false)}), TCAction())",
    ":setResponseByteRate": (
        'dynBlockRulesGroup():setResponseByteRate(100000, 10, "Exceeded resp BW rate", 60)'
    ),
    ":setResponsesMap": (
        'getDOHFrontend(0):setResponsesMap({newDOHResponseMapEntry("^/rfc$", 200, "RFC 8484")})'
    ),
    "addDOH3Local": f'addDOH3Local("127.0.0.1:443", {CERT})',
    "getDOHFrontend": "local doh = getDOHFrontend(0)",
    "infolog": 'infolog("configuration loaded")',
    "NetmaskGroupRule": 'addAction(NetmaskGroupRule({"192.0.2.0/24"}), PoolAction("abuse"))',
    "newDOHResponseMapEntry": 'local entry = newDOHResponseMapEntry("^/rfc$", 200, "RFC 8484")',
    "NotRule": 'addAction(NotRule(NetmaskGroupRule("127.0.0.0/8")), DropAction())',
    "OrRule": (
        "addAction(OrRule({QTypeRule(DNSQType.AXFR), QTypeRule(DNSQType.IXFR)}), DropAction())"
    ),
    "QNameSuffixRule": 'addAction(QNameSuffixRule({"example.", "example.net."}), DropAction())',
    "setMaxTCPConnectionDuration": "setMaxTCPConnectionDuration(30)",
    "setMaxTCPQueuedConnections": "setMaxTCPQueuedConnections(1000)",
    "TCPRule": "addAction(TCPRule(true), NoneAction())",
}


def _is_dnsdist_row(row: dict[str, str]) -> bool:
    # The table also counts a few calls that are not dnsdist's (luasocket, json).
    name = row["name"]
    if row["kind"] == "global":
        return True
    return name.startswith(":") and name not in (":send", ":receive", ":settimeout", ":close")


def test_usage_data_is_there() -> None:
    assert len(USAGE) >= 50
    assert len(OPTIONS) >= 30
    assert {"newServer", "addAction", "setLocal"} <= {row["name"] for row in USAGE}


@pytest.mark.parametrize(
    "row", [r for r in USAGE if _is_dnsdist_row(r)], ids=lambda r: f"{r['name']}-{r['files']}"
)
def test_function_used_by_real_configs_is_known(
    row: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = row["name"]
    assert name in CALLS, f"add a plausible call of {name} to CALLS"
    include = tmp_path / "conf.d"
    include.mkdir()
    (include / "10-backend.conf").write_text('newServer({address = "192.0.2.7", name = "inc"})\n')
    code = CALLS[name].replace("$DIR", str(include))
    caplog.set_level(logging.INFO)
    if row["kind"] == "global":
        assert name in DNSDIST_GLOBALS
        assert name in ConfigAPI().functions() or name in RUNTIME_FUNCTIONS
        assert re.search(rf"\b{re.escape(name)}\b", code), "the call must use the function"
    lua = load(code + "\n", tmp_path)
    warned = warnings_of(caplog)
    assert not [w for w in warned if "unknown option" in w]
    if row["kind"] != "global":
        return
    status = expected_status(name)
    if status == "supported":
        assert not [w for w in warned if w.startswith(f"{name}:")], warned
    elif status == "warns":
        assert f"{name}: not supported by triodist yet, ignored" in warned
    else:
        assert not [w for w in warned if w.startswith(f"{name}:")], warned
    if name == "includeDirectory":
        assert [s.name for s in lua.api.config.routing.servers] == ["inc"]


# Plausible values of the option keys in the usage table.
OPTION_VALUES = {
    "address": '"192.0.2.1"',
    "name": '"resolver1"',
    "pool": '"abuse"',
    "checkInterval": "5",
    "qps": "100",
    "subjectName": '"dns.example"',
    "tls": '"openssl"',
    "checkName": '"health.example."',
    "order": "2",
    "mustResolve": "true",
    "useClientSubnet": "true",
    "validateCertificates": "true",
    "weight": "10",
    "checkType": '"AAAA"',
    "dohPath": '"/dns-query"',
    "healthCheckMode": '"lazy"',
    "maxCheckFailures": "3",
    "retries": "2",
    "reusePort": "true",
    "doTCP": "false",
    "customResponseHeaders": '{["x-served-by"] = "edge1"}',
    "tcpFastOpenSize": "16",
    "tcpFastOpenQueueSize": "64",
    "minTLSVersion": '"tls1.2"',
    "provider": '"openssl"',
    "maxConcurrentTCPConnections": "100",
    "maxTTL": "86400",
    "minTTL": "0",
    "temporaryFailureTTL": "60",
    "staleTTL": "60",
    "dontAge": "false",
    "password": '"secret"',
    "apiKey": '"key"',
    "acl": '"127.0.0.1/32"',
    "statsRequireAuthentication": "false",
}

OPTION_CALLS = {
    "newServer": 'newServer({address = "192.0.2.1", %s})',
    "setLocal": 'setLocal("127.0.0.1:5300", {%s})',
    "addLocal": 'addLocal("127.0.0.1:5300", {%s})',
    "addDOHLocal": f'addDOHLocal("127.0.0.1:8443", {CERT}, "/dns-query", {{%s}})',
    "addTLSLocal": f'addTLSLocal("127.0.0.1:8853", {CERT}, {{%s}})',
    "newPacketCache": 'getPool(""):setCache(newPacketCache(10000, {%s}))',
    "setWebserverConfig": "setWebserverConfig({%s})",
}
# Options counted over every listener function are tried on each listener they apply to.
ANY_LISTENER = ("setLocal", "addLocal", "addTLSLocal", "addDOHLocal")
ENCRYPTED_ONLY = {
    "customResponseHeaders": ("addDOHLocal",),
    "minTLSVersion": ("addTLSLocal", "addDOHLocal"),
    "provider": ("addTLSLocal", "addDOHLocal"),
}


def _option_cases() -> list[tuple[str, str]]:
    cases = []
    for row in OPTIONS:
        if row["function"] == "ANY_LISTENER":
            functions = ENCRYPTED_ONLY.get(row["key"], ANY_LISTENER)
        else:
            functions = (row["function"],)
        cases += [(function, row["key"]) for function in functions]
    return sorted(set(cases))


OPTION_CASES = _option_cases()


@pytest.mark.parametrize(
    ("function", "key"), OPTION_CASES, ids=[f"{f}-{k}" for f, k in OPTION_CASES]
)
def test_option_used_by_real_configs_is_known(
    function: str, key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    if key == "(positional string form)":
        code = f'{function}("192.0.2.1")'
    elif key == "address":
        code = f'{function}({{address = "192.0.2.1"}})'
    else:
        assert key in OPTION_VALUES, f"add a plausible value of {function}'s {key} to OPTION_VALUES"
        code = OPTION_CALLS[function] % f"{key} = {OPTION_VALUES[key]}"
    lua = load(code + "\n", tmp_path)
    warned = warnings_of(caplog)
    assert not [w for w in warned if "unknown option" in w], warned
    config = lua.api.config
    if function == "newServer":
        server = config.routing.servers[-1]
        if key in servers.SERVER_LATER:
            assert any(
                w.startswith("newServer: option(s) not supported") and key in w for w in warned
            )
        else:
            assert key in servers.SERVER_KNOWN or key == "(positional string form)"
            assert not warned
        honoured = {
            "address": lambda s: s.address.toStringWithPort() == "192.0.2.1:53",
            "(positional string form)": lambda s: s.address.toStringWithPort() == "192.0.2.1:53",
            "name": lambda s: s.name == "resolver1",
            "pool": lambda s: s.pools == ["abuse"],
            "qps": lambda s: s.qps == 100,
            "order": lambda s: s.order == 2,
            "weight": lambda s: s.weight == 10,
        }
        if key in honoured:
            assert honoured[key](server)
    if function in ("setLocal", "addLocal"):
        listen = config.listens[-1]
        assert key in listeners.LISTEN_KNOWN
        if key == "reusePort":
            assert listen.reuse_port
        if key == "doTCP":
            assert not listen.tcp


# --- names dnsdist does not have ----------------------------------------------------------


@pytest.mark.parametrize("name", ["newServerr", "addActoin", "setLocall", "SpoofActoin"])
def test_unknown_name_is_an_error_with_file_and_line(name: str, tmp_path: Path) -> None:
    config = tmp_path / "typo.lua"
    config.write_text(
        'setLocal("127.0.0.1:5300")\n'
        'newServer({address = "192.0.2.1"})\n'
        f'{name}({{address = "192.0.2.2"}})\n'
        "addAction(AllRule(), DropAction())\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(config)
    message = str(error.value)
    assert f"{config}:3:" in message
    assert name in message
    result = run_cli("check-config", "-C", str(config))
    assert result.returncode == 1
    assert "OK!" not in result.stdout
    assert f"{config}:3:" in result.stderr and name in result.stderr


def test_unknown_name_inside_a_lua_function_is_reported_when_called(tmp_path: Path) -> None:
    config = tmp_path / "late.lua"
    config.write_text(
        "local function setup()\n  addActoin(AllRule(), DropAction())\nend\nsetup()\n"
    )
    with pytest.raises(ConfigError, match=rf"{re.escape(str(config))}:2:.*addActoin"):
        load_config(config)


def test_syntax_error_names_the_full_path_and_line(tmp_path: Path) -> None:
    deep = tmp_path / "a-rather-long-directory-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    config = deep / "rules.lua"
    config.write_text('setLocal("127.0.0.1:5300")\naddAction(AllRule(), DropAction()\n')
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert str(error.value).startswith(f"{config}:")
    result = run_cli("check-config", "-C", str(config))
    assert result.returncode == 1 and f"{config}:" in result.stderr


def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    include = tmp_path / "conf.d"
    include.mkdir()
    (include / "10-ok.conf").write_text('newServer("192.0.2.1")\n')
    (include / "20-typo.conf").write_text("\nnewServerr('192.0.2.2')\n")
    (include / "notes.txt").write_text("not Lua, not read\n")
    config = tmp_path / "rules.lua"
    config.write_text(f'includeDirectory("{include}")\n')
    with pytest.raises(
        ConfigError, match=rf"{re.escape(str(include / '20-typo.conf'))}:2:.*newServerr"
    ):
        load_config(config)


def test_not_yet_supported_rule_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    lua = load(
        "addAction(AndRule({ProbaRule(0.5), QTypeRule(DNSQType.A)}), DropAction())\n"
        'addAction(NotRule(HTTPPathRule("/dns-query")), DropAction())\n'
        "addAction(AllRule(), ContinueAction(SetMacAddrAction(65001)))\n"
        "addResponseAction(AllRule(),"
        ' DnstapLogResponseAction("x", newFrameStreamUnixLogger("/s")))\n'
        "addAction(QTypeRule(DNSQType.ANY), DropAction())\n",
        tmp_path,
    )
    chains = lua.api.config.chains
    assert [str(r.selector) for r in chains.queries.rules] == ["qtype==ANY"]
    assert chains.responses.rules == ()
    warned = warnings_of(caplog)
    for name in ("ProbaRule", "HTTPPathRule", "SetMacAddrAction"):
        assert f"addAction: rule using {name} ignored (not supported yet)" in warned
    assert (
        "addResponseAction: rule using DnstapLogResponseAction ignored (not supported yet)"
        in warned
    )


@pytest.mark.parametrize("policy", ["chashed", "orderedWrandUntag"])
def test_every_dnsdist_policy_can_be_set(
    policy: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    lua = load(
        f"setServerPolicy(roundrobin)\nsetServerPolicy({policy})\n"
        f'setPoolServerPolicy({policy}, "p")\n',
        tmp_path,
    )
    assert lua.api.config.routing.policy.name == policy
    policy_of_p = lua.api.config.routing.pools["p"].policy
    assert policy_of_p is not None and policy_of_p.name == policy
    assert not warnings_of(caplog)


def test_legacy_addlocal_dotcp_flag(tmp_path: Path) -> None:
    lua = load('addLocal("127.0.0.1:5300", false)\n', tmp_path)
    assert not lua.api.config.listens[-1].tcp


def test_mv_rule_to_top(tmp_path: Path) -> None:
    lua = load(
        'addAction("a.example.", DropAction())\naddAction("b.example.", DropAction())\n'
        "mvRuleToTop()\n"
        "addResponseAction(AllRule(), DropResponseAction())\n"
        "addResponseAction(AllRule(), AllowResponseAction())\nmvResponseRuleToTop()\n",
        tmp_path,
    )
    chains = lua.api.config.chains
    assert [str(r.selector) for r in chains.queries.rules] == [
        "qname in b.example.",
        "qname in a.example.",
    ]
    assert [str(r.action) for r in chains.responses.rules] == ["allow", "drop"]


# --- docs/reference/configuration.md and the code agree -------------------------------------

_ROW = re.compile(r"^\|([^|]*)\|([^|]*)\|")
_CODE = re.compile(r"`([^`]+)`")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _names_in(cell: str) -> set[str]:
    """Function names in backticks: `name`, `name(args)`; not `obj:method` or `dq.field`."""
    names = set()
    for code in _CODE.findall(cell):
        match = _IDENT.match(code)
        if match and code[match.end() : match.end() + 1] in ("", "("):
            names.add(match.group())
    return names


def parse_doc(text: str) -> dict[str, set[str]]:
    """Names by documented status: "supported" (table rows), "warns", "quiet" (paragraphs)."""
    found: dict[str, set[str]] = {"supported": set(), "warns": set(), "quiet": set()}
    for line in text.splitlines():
        row = _ROW.match(line)
        if row and "**supported**" in row.group(2):
            found["supported"] |= _names_in(row.group(1))
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        # The list ends with the first sentence; what follows may name other functions.
        listed = re.split(r"`\.(?:\s|$)", flat, maxsplit=1)[0] + "`"
        if flat.startswith("**Accepted and ignored with a warning**"):
            found["warns"] |= _names_in(listed)
        elif flat.startswith("**Accepted quietly**"):
            found["quiet"] |= _names_in(listed)
    return found


@pytest.fixture(scope="module")
def doc() -> dict[str, set[str]]:
    return parse_doc(DOC.read_text())


def test_doc_parses(doc: dict[str, set[str]]) -> None:
    assert {"newServer", "addAction", "SpoofAction", "includeDirectory", "newPacketCache"} <= doc[
        "supported"
    ]
    assert {"webserver", "dynBlockRulesGroup", "addDOHLocal"} <= doc["warns"]
    assert {"setMaxTCPQueuedConnections", "setRingBuffersLockRetries"} <= doc["quiet"]
    assert {"setRingBuffersSize", "topQueries", "showResponseLatency"} <= doc["supported"]


def test_documented_as_supported_is_implemented(doc: dict[str, set[str]]) -> None:
    missing = doc["supported"] - implemented()
    assert not missing, f"documented as supported but not implemented: {sorted(missing)}"


def test_implemented_is_documented_as_supported(doc: dict[str, set[str]]) -> None:
    missing = implemented() - doc["supported"]
    assert not missing, f"implemented but not documented as supported: {sorted(missing)}"


def test_doc_gives_each_name_one_status(doc: dict[str, set[str]]) -> None:
    statuses = list(doc)
    for i, first in enumerate(statuses):
        for second in statuses[i + 1 :]:
            both = doc[first] & doc[second]
            assert not both, f"documented as both {first} and {second}: {sorted(both)}"


def test_every_dnsdist_name_has_its_status_in_the_doc(doc: dict[str, set[str]]) -> None:
    documented = {name: status for status, names in doc.items() for name in names}
    wrong = {}
    for name in sorted(DNSDIST_GLOBALS - DNSDIST_USER_HOOKS):
        if documented.get(name) != expected_status(name):
            wrong[name] = (documented.get(name, "missing"), expected_status(name))
    assert not wrong, f"(documented, actual) status: {wrong}"


def test_doc_names_only_dnsdist_functions(doc: dict[str, set[str]]) -> None:
    for status, names in doc.items():
        known = DNSDIST_GLOBALS | TRIODIST_GLOBALS
        assert names <= known, (status, sorted(names - known))


def test_doc_names_every_option_triodist_knows() -> None:
    text = DOC.read_text()
    options = servers.SERVER_KNOWN | servers.SERVER_LATER | listeners.LISTEN_KNOWN
    missing = sorted(key for key in options if f"`{key}`" not in text)
    assert not missing, f"options not in docs/reference/configuration.md: {missing}"


# Which class a documented method belongs to, by the variable name the doc uses.
_OBJECTS: dict[str, type] = {
    "name": DNSName,
    "smn": SuffixMatchNode,
    "nmg": NetmaskGroup,
    "set": DNSNameSet,
    "ca": ComboAddress,
    "server": Server,
    "pool": Pool,
    "dq": DNSQuestion,
    "dr": DNSResponse,
    "rule": Selector,
    "action": QueryAction,
}


def _documented_methods(text: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(variable, method) pairs from table rows, and those from the "Not yet" paragraph."""
    present, absent = set(), set()
    for line in text.splitlines():
        if line.startswith("|"):
            for var, method in re.findall(r"`(\w+):(\w+)\(", line):
                present.add((var, method))
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith("Not yet"):
            absent |= set(re.findall(r"`(\w+):(\w+)", paragraph))
    return present, absent


def test_documented_methods_exist() -> None:
    present, absent = _documented_methods(DOC.read_text())
    assert len(present) > 40
    for var, method in sorted(present):
        assert var in _OBJECTS, f"unknown object variable {var!r} in the doc"
        assert callable(getattr(_OBJECTS[var], method, None)), f"{var}:{method}"
    assert callable(ResponseActionBase.toString)
    for var, method in sorted(absent):
        assert not hasattr(_OBJECTS[var], method), f"{var}:{method} exists: document it"


async def test_documented_question_fields_exist() -> None:
    text = DOC.read_text()
    fields = set(re.findall(r"`dq\.(\w+)`", text))
    assert {"qname", "qtype", "remoteaddr", "dh"} <= fields
    dq = DNSQuestion(
        dns.message.make_query("example.", "A").to_wire(), ("127.0.0.1", 1), ("127.0.0.1", 2)
    )
    for field in sorted(fields):
        assert hasattr(dq, field), field
    header = re.search(r"Header \(`dq\.dh`\):(.*?)\n\n", text, re.S)
    assert header is not None
    for method in re.findall(r"`(\w+)`", header.group(1)):
        assert callable(getattr(dq.dh, method, None)), method


# --- triodist invents no dnsdist names, but for the few it lists ---------------------------


def test_registered_functions_are_dnsdist_names() -> None:
    invented = set(ConfigAPI().functions()) - DNSDIST_GLOBALS
    assert invented == TRIODIST_GLOBALS, f"not dnsdist names: {sorted(invented)}"
    assert not TRIODIST_GLOBALS & DNSDIST_GLOBALS


def test_lua_globals_are_lua_or_dnsdist_names() -> None:
    bare = LUPA.LuaRuntime()
    lua_own = set(bare.globals().keys())
    config = LuaConfig()
    added = {str(k) for k in config.lua.globals()} - {str(k) for k in lua_own}
    invented = added - DNSDIST_GLOBALS - DNSDIST_CONSTANT_TABLES
    assert invented == TRIODIST_GLOBALS, f"globals dnsdist does not have: {sorted(invented)}"
    assert added >= RUNTIME_FUNCTIONS


# --- known gaps outside the configuration layer (remove the marker once fixed) ------------


def test_suffix_match_node_add_takes_a_table(tmp_path: Path) -> None:
    load(
        'local smn = newSuffixMatchNode(); smn:add({"a.example.", "b.example."})\n'
        'assert(smn:check("www.b.example."))\n',
        tmp_path,
    )


async def test_qps_action_drops_over_the_limit() -> None:
    lua = LuaConfig()
    lua.run_string("addAction(AllRule(), QPSAction(1))\n", "qps.lua")
    verdicts = [_outcome(lua, "www.example.", "A")[0] for _ in range(5)]
    assert verdicts[0] == "forward" and verdicts[-1] == "drop"


async def test_regex_rule_matches_the_name_without_final_dot() -> None:
    lua = LuaConfig()
    lua.run_string('addAction(RegexRule("example\\\\.com$"), DropAction())\n', "re.lua")
    assert _outcome(lua, "www.example.com.", "A")[0] == "drop"


def test_server_add_pool_moves_it_into_the_pool(tmp_path: Path) -> None:
    lua = load('newServer({address = "192.0.2.1", name = "s"}):addPool("extra")\n', tmp_path)
    assert [s.name for s in lua.api.config.routing.pool("extra").servers] == ["s"]
