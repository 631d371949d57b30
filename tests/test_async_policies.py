"""Asynchronous processing as a user tests it: the pytest plugin's ``triodist`` fixture,
with a fake component on the configuration's own endpoint and listener.

The configuration is dnsdist's regression scenario for the feature, in our words: each
query (and each response) goes to a component, which answers "<id> <verdict>" on
triodist's listening socket according to the query name; the Lua callback resumes,
refuses, drops or rewrites the held object. Over UDP and TCP; timeouts, the fail-closed
policies and a component's delay under the autojump clock. The socket paths are written
as in production (``/run/triodist/...``): the plugin moves them into the test's directory.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio
from conftest import CLOSED_UNANSWERED, tcp_session

from triodist.testing import FakeComponent
from triodist.testing.launcher import Proxy, Triodist

RESPONDER = "/run/triodist/responder.sock"
LISTENER = "/run/triodist/triodist.sock"

CONFIG = """
newServer{address="192.0.2.1:53", name="resolver1", pool={"", "cache"}}
newServer{address="192.0.2.2:53", name="tcp-resolver", pool="tcp-only", tcpOnly=true}
getPool("cache"):setCache(newPacketCache(100))

local asyncID = 0
local filteringTagName = "filtering"
local filteringTagValue = "pass"

function gotAsyncResponse(endpointID, message, from)
  local parts = {}
  for part in message:gmatch("%S+") do table.insert(parts, part) end
  if #parts ~= 2 then return end
  local ok, obj = pcall(getAsynchronousObject, asyncID, tonumber(parts[1]))
  if not ok then return end
  local verdict = parts[2]
  if verdict == "accept" then
    obj:getDQ():setTag(filteringTagName, filteringTagValue)
    obj:resume()
  elseif verdict == "refuse" then
    obj:setRCode(DNSRCode.REFUSED, true)
    obj:resume()
  elseif verdict == "drop" then
    obj:drop()
  elseif verdict == "custom" then
    -- A custom answer: the held message with QR and RD set, RA and rcode YXDOMAIN (6).
    local dq = obj:getDQ()
    local content = dq:getContent()
    dq:setContent(content:sub(1, 2) .. string.char(0x81, 0x86) .. content:sub(5))
    obj:resume()
  end
end

responder = newNetworkEndpoint("/run/triodist/responder.sock")
local listener = newNetworkListener()
listener:addUnixListeningEndpoint("/run/triodist/triodist.sock", 0, gotAsyncResponse)
listener:start()

function passQueryToAsyncFilter(dq)
  local buffer = dq:getContent()
  dq:suspend(asyncID, dq.dh:getID(), $TIMEOUT)
  responder:send(buffer)
  return DNSAction.Allow
end

function passResponseToAsyncFilter(dr)
  local buffer = dr:getContent()
  dr:suspend(asyncID, dr.dh:getID(), $TIMEOUT)
  responder:send(buffer)
  return DNSResponseAction.Allow
end

addAction(QNameSuffixRule("tcp-only.async.example.org."), PoolAction("tcp-only", false))
addAction(QNameSuffixRule("cache.async.example.org."), PoolAction("cache", false))
addAction(AllRule(), LuaAction(passQueryToAsyncFilter))
addCacheHitResponseAction(AllRule(), LuaResponseAction(passResponseToAsyncFilter))
addResponseAction(AllRule(), LuaResponseAction(passResponseToAsyncFilter))
"""


def verdict_for(msg: dns.message.Message) -> str | None:
    """What the component says for a query (QR clear) or a response (QR set)."""
    name = msg.question[0].name.to_text()
    is_response = bool(msg.flags & dns.flags.QR)
    for prefix in ("accept-then-refuse", "accept-then-drop", "accept-then-custom"):
        if name.startswith(prefix):
            return prefix.rsplit("-", 1)[1] if is_response else "accept"
    if name.startswith("timeout-then-accept"):
        return "accept" if is_response else None
    if name.startswith("accept-then-timeout"):
        return None if is_response else "accept"
    for verdict in ("accept", "refuse", "drop", "custom"):
        if name.startswith(verdict):
            return verdict
    return None  # "timeout..." and anything else: no answer


def component(raw: bytes) -> bytes | None:
    """The component's answer to one datagram: the held message, in DNS wire format,
    whose ID is the key it is held under."""
    msg = dns.message.from_wire(raw)
    verdict = verdict_for(msg)
    return None if verdict is None else f"{msg.id} {verdict}".encode()


async def start(
    triodist: Triodist,
    hold_ms: int,
    answer: FakeComponent | None = None,
    **settings: object,
) -> Proxy:
    # Every name of the scenarios is missing from the tables: the backends say NXDOMAIN.
    return await triodist.start(
        CONFIG.replace("$TIMEOUT", str(hold_ms)),
        backends={"resolver1": {}, "tcp-resolver": {}},
        components={RESPONDER: answer or component},
        **settings,
    )


def reached(proxy: Proxy, name: str) -> set[str]:
    """The transports over which ``name`` reached a backend (either one)."""
    return {
        query.transport
        for backend in ("resolver1", "tcp-resolver")
        for query in proxy.backend(backend).server.received
        if query.qname is not None and query.qname.to_text() == name
    }


SCENARIOS = [
    # name prefix, expected rcode (None: no answer), whether the backend is asked
    ("accept", dns.rcode.NXDOMAIN, True),
    ("refuse", dns.rcode.REFUSED, False),
    ("drop", None, False),
    ("custom", dns.rcode.YXDOMAIN, False),
    ("accept-then-refuse", dns.rcode.REFUSED, True),
    ("accept-then-drop", None, True),
    ("accept-then-custom", dns.rcode.YXDOMAIN, True),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("suffix", ["async.example.org.", "tcp-only.async.example.org."])
@pytest.mark.parametrize(("prefix", "rcode", "asked"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
async def test_verdicts(
    triodist: Triodist,
    prefix: str,
    rcode: int | None,
    asked: bool,
    suffix: str,
    transport: str,
) -> None:
    proxy = await start(triodist, 2000)
    name = f"{prefix}.{suffix}"
    msg = dns.message.make_query(name, "A", id=4242)
    if rcode is None and transport == "tcp":
        # A drop over TCP closes the connection (within the time, shorter than the hold's
        # 2 s and the server's idle timeout, so neither can be what closed it).
        assert await tcp_session(proxy.address, [msg], timeout=1.5) == CLOSED_UNANSWERED
        reply = None
    else:
        reply = await proxy.query(name, over=transport, timeout=1.5, id=4242)  # type: ignore[arg-type]
    if rcode is None:
        assert reply is None
    else:
        assert reply is not None and reply.rcode() == rcode and reply.id == 4242
        assert reply.question[0].name.to_text() == name
    transports = reached(proxy, name)
    assert bool(transports) == asked
    if asked:
        assert transports == {"tcp" if (transport == "tcp" or "tcp-only" in suffix) else "udp"}
    # The component saw the query, and the response too when the backend answered.
    assert len(proxy.component(RESPONDER).received) == (2 if asked else 1)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_timeouts_go_on_unchanged(
    triodist: Triodist, autojump_clock: trio.abc.Clock, transport: str
) -> None:
    proxy = await start(triodist, 500)
    wall = time.monotonic()
    for prefix, held_twice in (
        ("timeout", True),
        ("timeout-then-accept", False),
        ("accept-then-timeout", False),
    ):
        name = f"{prefix}.async.example.org."
        began = trio.current_time()
        reply = await proxy.query(name, over=transport, timeout=5)  # type: ignore[arg-type]
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN, prefix
        waited = trio.current_time() - began
        # The query, the response or both waited their 500 ms.
        assert (1.0 if held_twice else 0.5) <= waited < (1.0 if held_twice else 0.5) + 0.4
    assert proxy.counters()["async-timeouts"] == 4
    assert not proxy.server.config.async_registry.held  # nothing left behind
    assert time.monotonic() - wall < 5  # 2 s of timeouts, in virtual time


@pytest.mark.parametrize(("policy", "rcode"), [("drop", None), ("servfail", dns.rcode.SERVFAIL)])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_fail_closed_timeout_policies(
    triodist: Triodist,
    autojump_clock: trio.abc.Clock,
    policy: str,
    rcode: int | None,
    transport: str,
) -> None:
    config = CONFIG.replace("$TIMEOUT", "500") + f'setAsyncTimeoutPolicy("{policy}")\n'
    proxy = await triodist.start(
        config,
        backends={"resolver1": {}, "tcp-resolver": {}},
        components={RESPONDER: component},
    )
    began = trio.current_time()
    reply = await proxy.query("timeout.async.example.org.", over=transport, timeout=5)  # type: ignore[arg-type]
    if rcode is None:
        assert reply is None
    else:
        assert reply is not None and reply.rcode() == rcode
        assert trio.current_time() - began < 0.9
    assert reached(proxy, "timeout.async.example.org.") == set()
    assert proxy.counters()["async-timeouts"] == 1
    assert not proxy.server.config.async_registry.held
    # A verdict in time is unaffected by the policy.
    reply = await proxy.query("refuse.async.example.org.", over=transport)  # type: ignore[arg-type]
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED


async def test_a_component_that_never_answers_means_the_timeout_then_the_backend(
    triodist: Triodist, autojump_clock: trio.abc.Clock
) -> None:
    silent = FakeComponent(lambda raw: None)
    proxy = await start(triodist, 500, silent)
    began = trio.current_time()
    reply = await proxy.query("refuse.async.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN  # fail-open
    assert 1.0 <= trio.current_time() - began < 1.4  # the query's 500 ms, the response's
    assert len(silent.received) == 2 and silent.sent == 0
    assert reached(proxy, "refuse.async.example.org.") == {"udp"}


@pytest.mark.parametrize(("delay", "rcode"), [(0.3, dns.rcode.REFUSED), (0.7, dns.rcode.NXDOMAIN)])
async def test_a_components_delay_is_waited_on_the_mock_clock(
    triodist: Triodist, autojump_clock: trio.abc.Clock, delay: float, rcode: int
) -> None:
    # 300 ms is within the 500 ms the query is held for; 700 ms is not (fail-open). Only
    # queries are held here: a late verdict must not meet the response under the same key.
    queries_only = CONFIG.replace("$TIMEOUT", "500").split("addCacheHitResponseAction")[0]
    proxy = await triodist.start(
        queries_only,
        backends={"resolver1": {}, "tcp-resolver": {}},
        components={RESPONDER: FakeComponent(component, delay=delay)},
    )
    wall, began = time.monotonic(), trio.current_time()
    reply = await proxy.query("refuse.async.example.org.")
    assert reply is not None and reply.rcode() == rcode
    assert abs(trio.current_time() - began - min(delay, 0.5)) < 0.05
    assert proxy.counters()["async-timeouts"] == (1 if delay > 0.5 else 0)
    assert time.monotonic() - wall < 5


async def test_many_held_queries_each_get_their_own_verdict(triodist: Triodist) -> None:
    proxy = await start(triodist, 2000, FakeComponent(component, delay=0.05))
    names = [
        f"{verdict}-{i}.async.example.org." for i in range(100) for verdict in ("refuse", "accept")
    ]
    replies: dict[str, dns.message.Message | None] = {}

    async def ask(name: str, number: int) -> None:
        # IDs of their own: the ID is the key a query is held under.
        replies[name] = await proxy.query(name, timeout=3, id=number)

    async with trio.open_nursery() as nursery:
        for number, name in enumerate(names):
            nursery.start_soon(ask, name, number)
    for name in names:
        reply = replies[name]
        assert reply is not None
        want = dns.rcode.REFUSED if name.startswith("refuse") else dns.rcode.NXDOMAIN
        assert reply.rcode() == want, name


async def test_the_sockets_are_in_the_tests_directory(triodist: Triodist, tmp_path: Path) -> None:
    proxy = await start(triodist, 2000)
    for written in (RESPONDER, LISTENER):
        used = proxy.socket_path(written)
        assert stat.S_ISSOCK(os.stat(used).st_mode)
        assert Path(used).is_relative_to(tmp_path) and used.endswith(written)
        assert os.stat(os.path.dirname(used)).st_mode & 0o077 == 0  # private, as sockets need


async def test_a_long_test_directory_puts_the_sockets_in_a_short_one_removed_at_the_end(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True, mode=0o700)
    launcher = Triodist(nursery, deep)
    proxy = await launcher.start(
        CONFIG.replace("$TIMEOUT", "2000"),
        backends={"resolver1": {}, "tcp-resolver": {}},
        components={RESPONDER: component},
    )
    try:
        used = proxy.socket_path(LISTENER)
        assert len(used.encode()) <= 107 and used.endswith(LISTENER)
        assert not Path(used).is_relative_to(deep)
        reply = await proxy.query("refuse.async.example.org.")
        assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    finally:
        await launcher.aclose()
    assert not os.path.exists(used)  # noqa: ASYNC240 - a stat, once
    assert proxy.sockets.short is None


async def test_a_component_for_a_path_the_configuration_does_not_use_is_an_error(
    triodist: Triodist,
) -> None:
    with pytest.raises(
        KeyError, match=r"'/run/nope\.sock'.*known: '/run/triodist/responder\.sock'"
    ):
        await triodist.start(
            CONFIG.replace("$TIMEOUT", "500"),
            backends={"resolver1": {}, "tcp-resolver": {}},
            components={"/run/nope.sock": component},
        )


TWO_LISTENERS = """
newServer{address="192.0.2.1:53", name="resolver1"}
filter = newNetworkEndpoint("/run/f.sock")
local function verdict(endpointID, message, from)
  local obj = getAsynchronousObject(endpointID, tonumber(message))
  obj:setRCode(DNSRCode.REFUSED, true)
  obj:resume()
end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint("/run/a.sock", 0, verdict)
listener:addUnixListeningEndpoint("/run/b.sock", 1, verdict)
listener:start()
addAction(AllRule(), LuaAction(function(dq)
  dq:suspend(1, dq.dh:getID(), 500)
  filter:send(dq:getContent())
  return DNSAction.Allow
end))
"""


async def test_with_several_listening_endpoints_the_component_names_the_one(
    triodist: Triodist, autojump_clock: trio.abc.Clock
) -> None:
    def answer(raw: bytes) -> bytes:
        return str(dns.message.from_wire(raw).id).encode()

    with pytest.raises(ValueError, match=r"several paths.*reply_to"):
        await triodist.start(
            TWO_LISTENERS, backends={"resolver1": {}}, components={"/run/f.sock": answer}
        )
    with pytest.raises(KeyError, match=r"'/run/c\.sock'.*known: '/run/a\.sock', '/run/b\.sock'"):
        await triodist.start(
            TWO_LISTENERS,
            backends={"resolver1": {}},
            components={"/run/f.sock": FakeComponent(answer, reply_to="/run/c.sock")},
        )
    # Held under asyncID 1: only the endpoint whose ID is 1 finds it.
    for reply_to, rcode in (
        ("/run/b.sock", dns.rcode.REFUSED),
        ("/run/a.sock", dns.rcode.NXDOMAIN),
    ):
        proxy = await triodist.start(
            TWO_LISTENERS,
            backends={"resolver1": {}},
            components={"/run/f.sock": FakeComponent(answer, reply_to=reply_to)},
        )
        reply = await proxy.query("www.example.org.")
        assert reply is not None and reply.rcode() == rcode, reply_to


async def test_an_endpoint_without_a_component_is_said_in_the_output(
    triodist: Triodist, autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = await triodist.start(
        CONFIG.replace("$TIMEOUT", "500"), backends={"resolver1": {}, "tcp-resolver": {}}
    )
    assert (
        "newNetworkEndpoint('/run/triodist/responder.sock') is not in components="
        in capsys.readouterr().out
    )
    reply = await proxy.query("refuse.async.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN  # timed out: fail-open


ABSTRACT = """
newServer{address="192.0.2.1:53", name="resolver1"}
filter = newNetworkEndpoint("\\0triodist-filter")
local function verdict(endpointID, message, from)
  local obj = getAsynchronousObject(0, tonumber(message))
  obj:setRCode(DNSRCode.REFUSED, true)
  obj:resume()
end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint("\\0triodist-verdicts", 0, verdict)
listener:start()
addAction(AllRule(), LuaAction(function(dq)
  dq:suspend(0, dq.dh:getID(), 500)
  filter:send(dq:getContent())
  return DNSAction.Allow
end))
"""


async def test_abstract_names_get_a_prefix_of_the_tests_own(triodist: Triodist) -> None:
    # Abstract names are shared by the whole machine: two runs of one test must not meet.
    def answer(raw: bytes) -> bytes:
        return str(dns.message.from_wire(raw).id).encode()

    proxy = await triodist.start(
        ABSTRACT, backends={"resolver1": {}}, components={"\0triodist-filter": answer}
    )
    for written in ("\0triodist-filter", "\0triodist-verdicts"):
        used = proxy.socket_path(written)
        assert used.startswith("\0triodist-") and used.endswith(written[1:]) and used != written
    reply = await proxy.query("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED


async def test_an_answer_too_long_for_a_datagram_fails_the_test(tmp_path: Path) -> None:
    too_long = FakeComponent(lambda raw: b"x" * (4 << 20))
    with pytest.RaisesGroup(
        pytest.RaisesExc(OSError, check=lambda e: e.errno == errno.EMSGSIZE),
        flatten_subgroups=True,
    ):
        async with trio.open_nursery() as nursery:
            launcher = Triodist(nursery, tmp_path)
            proxy = await start(launcher, 2000, too_long)
            await proxy.query("refuse.async.example.org.", timeout=1)
            await trio.sleep_forever()  # cancelled by the failure, if it has not come yet
    assert too_long.sent == 0
