"""EDNS Client Subnet, end to end on loopback: what a backend with ``useClientSubnet`` is
sent, what the client gets back, the rules and settings that steer it, the packet cache
(a subnet in the key, answers of scope zero shared), and hostile bytes on both sides.

The backend here keeps the bytes of every query it is sent and answers each with one A
record; told to, it echoes the query's ECS option with a scope of its choosing, or sends
an answer whose owner name is a compression pointer that points forward (which no reader
can follow). A second client is a socket bound to 127.0.0.2: its address, so its subnet,
differs from the first one's.
"""

from __future__ import annotations

import socket
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rrset
import pytest
import trio
from conftest import StartTriodist, Triodist, accounted, frame, free_port, read_frame, until

from triodist.cli import load
from triodist.config.bindings.args import ConfigError
from triodist.wire.edns import read_options

ECS = 8
COOKIE = 10
NAME = "www.example.org."


class SubnetBackend:
    """A UDP and TCP backend on one port that records what it is sent."""

    def __init__(self) -> None:
        self.queries: list[bytes] = []
        #: Echo the query's ECS option with this scope (None: answer without EDNS).
        self.scope: int | None = None
        self.broken = False
        self.address: tuple[str, int] = ("127.0.0.1", 0)

    def reply(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        if not query.question[0].name.is_subdomain(dns.name.from_text("root-servers.net.")):
            self.queries.append(data)  # not triodist's health checks
        response = dns.message.make_response(query)
        response.use_edns(False)
        option = next((o for o in query.options if o.otype == ECS), None)
        if self.scope is not None and isinstance(option, dns.edns.ECSOption):
            echoed = dns.edns.ECSOption(option.address, option.srclen, self.scope)
            response.use_edns(0, payload=1232, options=[echoed])
        response.answer.append(
            dns.rrset.from_text(query.question[0].name, 300, "IN", "A", "192.0.2.1")
        )
        wire = bytearray(response.to_wire())
        if self.broken:
            # The answer's owner (a pointer back to the question) made to point forward.
            owner = 12 + len(query.question[0].name.to_wire()) + 4
            wire[owner : owner + 2] = b"\xc3\xff"
        return bytes(wire)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        port = free_port()
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", port))
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.address = ("127.0.0.1", port)
        with udp:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._udp, udp)
                nursery.start_soon(trio.serve_listeners, self._tcp, listeners)
                task_status.started()

    async def _udp(self, sock: trio.socket.SocketType) -> None:
        while True:
            data, addr = await sock.recvfrom(65535)
            await sock.sendto(self.reply(data), addr)

    async def _tcp(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            while (data := await read_frame(stream, buffer)) is not None:
                await stream.send_all(frame(self.reply(data)))

    def last(self) -> dns.message.Message:
        return dns.message.from_wire(self.queries[-1])


@pytest.fixture
async def backend(nursery: trio.Nursery) -> SubnetBackend:
    server = SubnetBackend()
    await nursery.start(server.serve)
    return server


def subnets(message: dns.message.Message) -> list[tuple[str, int, int]]:
    return [
        (o.address, o.srclen, o.scopelen)
        for o in message.options
        if isinstance(o, dns.edns.ECSOption)
    ]


async def from_address(
    source: str, address: tuple[str, int], msg: dns.message.Message
) -> dns.message.Message | None:
    """One query over UDP from ``source`` (another loopback address: another client)."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((source, 0))
        await sock.sendto(msg.to_wire(), address)
        with trio.move_on_after(2):
            return dns.message.from_wire(await sock.recv(65535))
    return None


async def start_with(start_triodist: StartTriodist, backend: SubnetBackend, lua: str) -> Triodist:
    host, port = backend.address
    return await start_triodist(lua.replace("$SUBNET_BACKEND", f"{host}:{port}"))


SERVER = 'newServer{address="$SUBNET_BACKEND", useClientSubnet=true}\n'


async def test_a_query_without_edns_gets_an_opt_record_the_answer_loses(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(start_triodist, backend, SERVER)
    for ask in (t.udp, t.tcp):
        query = dns.message.make_query(NAME, "A")
        answer = await ask(query)
        assert answer is not None and answer.answer
        sent = backend.last()
        # dnsdist's defaults: the client's address cut to 24 bits, payload size 512.
        assert sent.edns == 0 and sent.payload == 512
        assert subnets(sent) == [("127.0.0.0", 24, 0)]
        assert answer.edns == -1  # the OPT record triodist added is not the client's


async def test_source_prefix_and_the_client_options_kept_in_order(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(start_triodist, backend, "setECSSourcePrefixV4(32)\n" + SERVER)
    backend.scope = 32
    cookie = dns.edns.GenericOption(COOKIE, b"c" * 8)
    query = dns.message.make_query(NAME, "A", use_edns=0, payload=1400, options=[cookie])
    answer = await t.udp(query)
    assert answer is not None
    options = read_options(backend.queries[-1])
    assert options is not None
    assert [code for code, _ in options] == [COOKIE, ECS]
    assert subnets(backend.last()) == [("127.0.0.1", 32, 0)]
    assert backend.last().payload == 1400
    # The client had EDNS: it keeps an OPT record, without the option it did not send.
    assert answer.edns == 0 and subnets(answer) == []


async def test_a_client_subnet_is_kept_unless_overridden(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(
        start_triodist,
        backend,
        SERVER + 'addAction("override.example.org.", SetECSOverrideAction(true))\n',
    )
    backend.scope = 24
    own = dns.edns.ECSOption("198.51.100.0", 24)
    for name, expected in (
        (NAME, ("198.51.100.0", 24, 0)),
        ("override.example.org.", ("127.0.0.0", 24, 0)),
    ):
        answer = await t.tcp(dns.message.make_query(name, "A", use_edns=0, options=[own]))
        assert answer is not None
        assert subnets(backend.last()) == [expected]
        # The option was the client's: its answer keeps the backend's.
        assert subnets(answer) == [(expected[0], 24, 24)]


async def test_set_ecs_override_replaces_in_place(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(start_triodist, backend, "setECSOverride(true)\n" + SERVER)
    options = [
        dns.edns.GenericOption(COOKIE, b"a" * 8),
        dns.edns.ECSOption("198.51.100.0", 24),
        dns.edns.GenericOption(65001, b"z"),
    ]
    await t.udp(dns.message.make_query(NAME, "A", use_edns=0, options=options))
    sent = read_options(backend.queries[-1])
    assert sent is not None and [code for code, _ in sent] == [COOKIE, ECS, 65001]
    assert subnets(backend.last()) == [("127.0.0.0", 24, 0)]


async def test_rules_and_lua_steer_the_subnet(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(
        start_triodist,
        backend,
        SERVER
        + 'addAction("off.example.org.", SetDisableECSAction())\n'
        + 'addAction("set.example.org.", SetECSAction("203.0.113.77/28"))\n'
        + 'addAction("len.example.org.", SetECSPrefixLengthAction(16, 48))\n'
        + "function lua_off(dq) dq.useECS = false return DNSAction.None, '' end\n"
        + "function lua_len(dq) dq.ecsPrefixLength = 8 return DNSAction.None, '' end\n"
        + 'addAction("luaoff.example.org.", LuaAction(lua_off))\n'
        + 'addAction("lualen.example.org.", LuaAction(lua_len))\n',
    )
    expected = {
        "off.example.org.": [],
        "luaoff.example.org.": [],
        "set.example.org.": [("203.0.113.64", 28, 0)],
        "len.example.org.": [("127.0.0.0", 16, 0)],
        "lualen.example.org.": [("127.0.0.0", 8, 0)],
    }
    for name, wanted in expected.items():
        assert await t.udp(dns.message.make_query(name, "A")) is not None
        assert subnets(backend.last()) == wanted, name
        if not wanted:
            assert backend.last().edns == -1
    assert [str(r.action) for r in t.lua.api.config.chains.queries.rules[:3]] == [
        "disable ECS",
        "set ECS to 203.0.113.64/28",
        "set ECS prefix length to 16/48",
    ]


async def test_a_backend_answer_that_cannot_be_read_is_dropped(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(start_triodist, backend, SERVER)
    backend.broken = True
    assert await t.udp(dns.message.make_query(NAME, "A"), timeout=0.5) is None
    assert await t.tcp(dns.message.make_query(NAME, "A"), timeout=0.5) is None
    assert t.stats["ecs-broken-answers"] == 2
    backend.broken = False
    assert await t.udp(dns.message.make_query(NAME, "A")) is not None
    await accounted(t)


async def test_a_hostile_opt_record_drops_the_query_not_the_server(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    t = await start_with(start_triodist, backend, SERVER)
    wire = bytearray(dns.message.make_query(NAME, "A", use_edns=0).to_wire())
    # An option header whose length runs past the OPT record: rdlen 4, option length 9.
    wire[-2:] = b"\x00\x04"
    wire += b"\x00\x0a\x00\x09"
    assert await t.udp(bytes(wire), timeout=0.5) is None
    assert t.stats["ecs-add-failures"] == 1
    assert backend.queries == []
    assert await t.udp(dns.message.make_query(NAME, "A")) is not None
    await accounted(t)


CACHED = (
    "pc = newPacketCache(100, {parseECS=%s})\n"
    'getPool(""):setCache(pc)\n'
    "setECSSourcePrefixV4(32)\n"
    'newServer{address="$SUBNET_BACKEND", useClientSubnet=true%s}\n'
)


@pytest.mark.parametrize(
    ("parse_ecs", "server_options", "scope", "shared"),
    [
        ("true", "", 0, True),  # scope zero: good for every client
        ("true", "", 32, False),  # scoped to the first client's subnet
        ("false", "", 0, False),  # no ECS parsing: no zero-scope lookup
        ("true", ", disableZeroScope=true", 0, False),
    ],
)
async def test_the_cache_keys_on_the_subnet_and_shares_scope_zero_answers(
    start_triodist: StartTriodist,
    backend: SubnetBackend,
    parse_ecs: str,
    server_options: str,
    scope: int,
    shared: bool,
) -> None:
    t = await start_with(start_triodist, backend, CACHED % (parse_ecs, server_options))
    backend.scope = scope
    query = dns.message.make_query(NAME, "A")
    first = await from_address("127.0.0.1", t.address, query)
    assert first is not None and first.edns == -1
    assert subnets(backend.last()) == [("127.0.0.1", 32, 0)]
    # The first client again: a hit, whatever the scope.
    assert await from_address("127.0.0.1", t.address, query) is not None
    assert len(backend.queries) == 1
    # Another client: shared only when the answer's scope was zero.
    second = await from_address("127.0.0.2", t.address, query)
    assert second is not None and second.answer == first.answer and second.edns == -1
    assert len(backend.queries) == (1 if shared else 2)
    if not shared:
        assert subnets(backend.last()) == [("127.0.0.2", 32, 0)]


@pytest.mark.parametrize("pool_ecs", [True, False])
async def test_with_no_server_up_the_pool_says_whether_ecs_finds_the_cached_answer(
    start_triodist: StartTriodist, backend: SubnetBackend, pool_ecs: bool
) -> None:
    lua = 'pc = newPacketCache(100)\ngetPool(""):setCache(pc)\n' + SERVER
    if pool_ecs:
        lua += 'getPool(""):setECS(true)\n'
    t = await start_with(start_triodist, backend, lua)
    query = dns.message.make_query(NAME, "A")
    assert await t.udp(query) is not None
    t.lua.api.config.routing.servers[0].setDown()
    await until(lambda: not t.lua.api.config.routing.servers[0].is_up)
    again = await t.udp(query, timeout=0.5)
    assert (again is not None) is pool_ecs
    assert len(backend.queries) == 1


def test_bad_values_are_configuration_errors(tmp_path: Path) -> None:
    for text in (
        "setECSSourcePrefixV4(33)",
        "setECSSourcePrefixV6(-1)",
        'setECSOverride("yes")',
        'newServer{address="192.0.2.1", useClientSubnet="yes"}',
        'SetECSAction("not a netmask")',
        "SetECSPrefixLengthAction(24, 129)",
    ):
        path = tmp_path / "bad.lua"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=r"bad\.lua:1"):
            load(str(path), [], ["127.0.0.1:0"])


async def test_a_scope_zero_hit_keeps_the_cached_flags_as_dnsdist(
    start_triodist: StartTriodist, backend: SubnetBackend
) -> None:
    """dnsdist's own test (test_Caching.py, TestCachingScopeZero) expects it: a rule that
    clears RD makes a second client's query the first one's, and the answer it is given
    from the scope-zero entry keeps RD clear, though the client set it."""
    t = await start_with(
        start_triodist,
        backend,
        CACHED % ("true", "") + "addAction(RDRule(), SetNoRecurseAction())\n",
    )
    backend.scope = 0
    first = dns.message.make_query(NAME, "A")
    first.flags &= ~dns.flags.RD
    answer = await from_address("127.0.0.1", t.address, first)
    assert answer is not None and not answer.flags & dns.flags.RD
    second = dns.message.make_query(NAME, "A")  # RD set
    answer = await from_address("127.0.0.2", t.address, second)
    assert answer is not None and answer.answer
    assert len(backend.queries) == 1
    assert not answer.flags & dns.flags.RD
