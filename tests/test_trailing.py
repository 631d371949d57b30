"""Trailing data: bytes after a DNS message, in queries and in answers.

triodist takes such queries as dnsdist 1.7.3 does: it forwards them with their trailing
data, passes a backend's trailing data back, keys the packet cache on it, and lets rules
read it (``dq:getTrailingData()``), replace or remove it (``dq:setTrailingData(s)``) and
match on it (``TrailingDataRule()``). Each behaviour here was checked against dnsdist
1.7.3 by sending it the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from conftest import StartTriodist, frame, read_frame, udp_silent, until

from triodist.rules.trailing import TrailingDataRule
from triodist.wire.message import DNSQuestion
from triodist.wire.walk import message_end

_U16 = struct.Struct("!H")


def wire(name: str, *, edns: bool = False) -> bytes:
    return dns.message.make_query(name, "A", use_edns=0 if edns else False).to_wire()


# --- where the message ends ------------------------------------------------------------------


def test_message_end_is_the_end_of_the_last_record() -> None:
    plain = wire("a.example.")
    with_opt = wire("a.example.", edns=True)
    assert message_end(plain) == len(plain)
    assert message_end(with_opt) == len(with_opt)
    assert message_end(with_opt + b"\x00tail") == len(with_opt)


def test_a_message_that_cannot_be_walked_has_no_trailing_data() -> None:
    query = bytearray(wire("a.example.", edns=True))
    # An additional record more than the message holds: the walk runs off the end,
    # and the whole packet counts as the message (dnsdist's getDNSPacketLength).
    query[11] += 1
    assert message_end(query + b"junk") == len(query) + 4
    assert message_end(b"\x00" * 5) == 5


# --- the query's methods and the selector, without sockets -------------------------------------


def question(data: bytes, *, tcp: bool = False) -> DNSQuestion:
    return DNSQuestion(data, ("192.0.2.1", 5300), ("127.0.0.1", 53), tcp=tcp, now=0.0)


def test_get_and_set_trailing_data() -> None:
    base = wire("t.example.", edns=True)
    dq = question(base + b"\x00\xffold")
    assert dq.getTrailingData() == b"\x00\xffold"
    assert TrailingDataRule().matches(dq)
    # Lua strings come as latin-1 text: every byte value survives.
    assert dq.setTrailingData("new\x00\xb0")
    assert bytes(dq.data) == base + b"new\x00\xb0"
    assert dq.setTrailingData("")
    assert bytes(dq.data) == base
    assert dq.getTrailingData() == b""
    assert not TrailingDataRule().matches(dq)
    assert str(TrailingDataRule()) == "trailing data"


@pytest.mark.parametrize(("tcp", "room"), [(False, 4096), (True, 65535)])
def test_set_trailing_data_is_bounded(tcp: bool, room: int) -> None:
    base = wire("room.example.")
    dq = question(base + b"xyz", tcp=tcp)
    assert not dq.setTrailingData(b"A" * (room - len(base) + 1))
    # Refused, and the old trailing data gone all the same, as in dnsdist.
    assert bytes(dq.data) == base
    assert dq.setTrailingData(b"A" * (room - len(base)))
    assert len(dq.data) == room


# --- on the wire -------------------------------------------------------------------------


@dataclass
class RawBackend:
    """A backend that keeps the exact bytes of each query it gets and answers one A
    record, followed by ``suffix``."""

    address: tuple[str, int] = ("127.0.0.1", 0)
    suffix: bytes = b""
    received: list[tuple[str, bytes]] = field(default_factory=list)

    def answer(self, data: bytes, transport: str) -> bytes:
        self.received.append((transport, data))
        query = dns.message.from_wire(data, ignore_trailing=True)
        reply = dns.message.make_response(query)
        name = query.question[0].name
        reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.7"))
        return reply.to_wire() + self.suffix

    def got(self, name: str) -> list[tuple[str, bytes]]:
        """What reached this backend for ``name``, each without its ID (triodist
        forwards a query under an ID of its own)."""
        wanted = dns.name.from_text(name).to_wire()
        assert wanted is not None
        return [(t, d[2:]) for t, d in self.received if wanted.lower() in d.lower()]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.address = ("127.0.0.1", port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._udp, udp)
            nursery.start_soon(trio.serve_listeners, self._tcp, listeners)
            task_status.started()

    async def _udp(self, sock: trio.socket.SocketType) -> None:
        with sock:
            while True:
                data, peer = await sock.recvfrom(65535)
                await sock.sendto(self.answer(data, "udp"), peer)

    async def _tcp(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            while (data := await read_frame(stream, buffer)) is not None:
                await stream.send_all(frame(self.answer(data, "tcp")))


@pytest.fixture
async def raw_backend(nursery: trio.Nursery) -> AsyncIterator[RawBackend]:
    backend = RawBackend(suffix=b"BACKEND-TAIL")
    await nursery.start(backend.serve)
    yield backend


async def udp_raw(address: tuple[str, int], data: bytes) -> bytes | None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(data)
        with trio.move_on_after(2):
            return await sock.recv(65535)
    return None


async def tcp_raw(address: tuple[str, int], data: bytes) -> bytes | None:
    with trio.move_on_after(2):
        async with await trio.open_tcp_stream(*address) as stream:
            await stream.send_all(frame(data))
            return await read_frame(stream, bytearray())
    return None


async def both(address: tuple[str, int], data: bytes) -> list[bytes | None]:
    return [await udp_raw(address, data), await tcp_raw(address, data)]


CONFIG = """
newServer{address="%s"}
function echo(dq)
    return DNSAction.Spoof, "x-" .. dq:getTrailingData() .. ".echo.example."
end
function replace(dq)
    if not dq:setTrailingData("NEW") then return DNSAction.ServFail, "" end
    return DNSAction.None, ""
end
function remove(dq)
    dq:setTrailingData("")
    return DNSAction.None, ""
end
function response_tail(dr)
    dr:setTrailingData("R" .. dr:getTrailingData())
    return DNSResponseAction.None, ""
end
addAction("echo.example.", LuaAction(echo))
addAction("replaced.example.", LuaAction(replace))
addAction("replaced.example.", LuaAction(echo))
addAction("removed.example.", LuaAction(remove))
addAction(AndRule{QNameRule("dropped.example."), TrailingDataRule()}, DropAction())
addAction("refused.example.", RCodeAction(DNSRCode.REFUSED))
addAction("truncated.example.", TCAction())
addResponseAction("response.example.", LuaResponseAction(response_tail))
"""


async def test_trailing_data_goes_to_the_backend_and_back(
    start_triodist: StartTriodist, raw_backend: RawBackend
) -> None:
    t = await start_triodist(CONFIG % "%s:%d" % raw_backend.address)
    query = wire("pass.example.", edns=True) + b"\x00CLIENT"
    for answer in await both(t.address, query):
        assert answer is not None
        assert answer.endswith(b"BACKEND-TAIL")
        assert dns.message.from_wire(answer, ignore_trailing=True).answer
    assert [d for _, d in raw_backend.got("pass.example.")] == [query[2:], query[2:]]
    assert [t for t, _ in raw_backend.got("pass.example.")] == ["udp", "tcp"]


async def test_rules_read_replace_and_remove_trailing_data(
    start_triodist: StartTriodist, raw_backend: RawBackend
) -> None:
    t = await start_triodist(CONFIG % "%s:%d" % raw_backend.address)
    for answer in await both(t.address, wire("echo.example.") + b"hello"):
        assert answer is not None
        (cname,) = dns.message.from_wire(answer).answer
        assert cname.rdtype == dns.rdatatype.CNAME
        assert cname[0].target.to_text() == "x-hello.echo.example."
    # Replaced first, then read by the next rule.
    for answer in await both(t.address, wire("replaced.example.") + b"old"):
        assert answer is not None
        assert dns.message.from_wire(answer).answer[0][0].target.labels[0] == b"x-NEW"
    # Removed before it is forwarded: the backend gets the bare message.
    removed = wire("removed.example.")
    for answer in await both(t.address, removed + b"gone"):
        assert answer is not None
    assert [d for _, d in raw_backend.got("removed.example.")] == [removed[2:], removed[2:]]
    # A response rule sees (and changes) the backend's trailing data.
    for answer in await both(t.address, wire("response.example.")):
        assert answer is not None and answer.endswith(b"RBACKEND-TAIL")


async def test_trailing_data_rule_and_self_made_answers(
    start_triodist: StartTriodist, raw_backend: RawBackend
) -> None:
    t = await start_triodist(CONFIG % "%s:%d" % raw_backend.address)
    plain = wire("dropped.example.")
    for answer in await both(t.address, plain):
        assert answer is not None  # no trailing data: the rule does not match
    assert await udp_silent(t.address, plain + b"x")
    assert await tcp_raw(t.address, plain + b"x") is None
    # An rcode or TC answer is the query with its header changed: its trailing data
    # comes back with it, as from dnsdist.
    for name, rcode, tc in (
        ("refused.example.", dns.rcode.REFUSED, False),
        ("truncated.example.", dns.rcode.NOERROR, True),
    ):
        query = wire(name) + b"TAIL"
        answer = await udp_raw(t.address, query)
        assert answer is not None and answer.endswith(b"TAIL")
        assert len(answer) == len(query)
        message = dns.message.from_wire(answer, ignore_trailing=True)
        assert message.rcode() == rcode
        assert bool(message.flags & dns.flags.TC) == tc


async def test_udp_queries_up_to_4368_bytes_are_taken_whole(
    start_triodist: StartTriodist, raw_backend: RawBackend
) -> None:
    t = await start_triodist(CONFIG % "%s:%d" % raw_backend.address)
    base = wire("big.example.")
    largest = base + b"A" * (4368 - len(base))
    assert await udp_raw(t.address, largest) is not None
    assert [d for _, d in raw_backend.got("big.example.")] == [largest[2:]]
    before = t.stats["non-compliant-queries"]
    # One byte more: dropped and counted, never cut down and forwarded.
    assert await udp_silent(t.address, largest + b"A")
    await until(lambda: t.stats["non-compliant-queries"] == before + 1)
    assert len(raw_backend.got("big.example.")) == 1


async def test_the_cache_keys_on_trailing_data(
    start_triodist: StartTriodist, raw_backend: RawBackend
) -> None:
    t = await start_triodist(
        (CONFIG % "%s:%d" % raw_backend.address) + 'getPool(""):setCache(newPacketCache(100))\n'
    )
    query = wire("cached.example.")
    first = await udp_raw(t.address, query + b"one")
    again = await udp_raw(t.address, query + b"one")
    other = await udp_raw(t.address, query + b"two")
    assert first is not None and again is not None and other is not None
    # The same trailing data hits (the backend's trailing data kept in the entry);
    # other trailing data is another entry.
    assert again == first and again.endswith(b"BACKEND-TAIL")
    assert [d[len(query) - 2 :] for _, d in raw_backend.got("cached.example.")] == [
        b"one",
        b"two",
    ]
    assert t.stats["cache-hits"] == 1
