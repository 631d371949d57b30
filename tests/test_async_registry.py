"""The registry of held objects on its own, and the layout of what it holds; and, end to
end, that a held query whose task is cancelled (its TCP client gone) leaves nothing held.

Under the autojump clock, time moves only when every task waits, and straight to the next
deadline: a timeout that fires at its deadline ends its wait at exactly that time.
"""

from __future__ import annotations

import io
import socket
import struct

import dns.message
import pytest
import trio
import trio.testing
from conftest import StartTriodist, accounted, frame, query, until

from triodist.asyncproc.registry import AsyncRegistry
from triodist.testing.backend import AuthServer
from triodist.wire.message import DNSQuestion, DNSResponse


def question(n: int) -> DNSQuestion:
    msg = dns.message.make_query(f"q{n}.example.org.", "A")
    msg.id = n
    return DNSQuestion(msg.to_wire(), ("192.0.2.1", 4000 + n), ("127.0.0.1", 53))


async def test_staggered_timeouts_fire_at_their_deadlines(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = AsyncRegistry()
    timeouts_ms = [500, 1, 250, 37.5, 250, 300_000, 0.25, 1999]
    ended: dict[int, tuple[float, float, str]] = {}

    async def wait(n: int, dq: DNSQuestion) -> None:
        deadline = dq.suspension.deadline
        ending = await registry.wait_for_ending(dq)
        ended[n] = (deadline, trio.current_time(), ending)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n, timeout_ms in enumerate(timeouts_ms):
            dq = question(n)
            assert registry.suspend(dq, 7, n, timeout_ms)
            nursery.start_soon(wait, n, dq)
            # Suspended at different times, too: the deadline counts from suspend().
            await trio.sleep(0.010)
    for n, timeout_ms in enumerate(timeouts_ms):
        deadline, woke, ending = ended[n]
        assert deadline == pytest.approx(start + n * 0.010 + timeout_ms / 1000, abs=1e-9)
        assert woke == pytest.approx(deadline, abs=1e-9)
        assert ending == "go on"
    assert registry.stats["async-timeouts"] == len(timeouts_ms)
    assert not registry.held and registry.taken == 0


async def test_a_resume_ends_the_wait_at_once_and_leaves_the_other_deadlines(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = AsyncRegistry()
    registry.timeout_policy = "servfail"
    woke: dict[int, tuple[float, str]] = {}
    start = trio.current_time()

    async def wait(n: int, dq: DNSQuestion) -> None:
        ending = await registry.wait_for_ending(dq)
        woke[n] = (trio.current_time() - start, ending)

    async with trio.open_nursery() as nursery:
        for n in range(4):
            dq = question(n)
            assert registry.suspend(dq, 0, n, 1000 * (n + 1))
            nursery.start_soon(wait, n, dq)
        await trio.sleep(0.5)
        assert registry.take(0, 1).resume()
        assert registry.take(0, 2).drop()
    assert woke[1] == (pytest.approx(0.5), "go on")
    assert woke[2] == (pytest.approx(0.5), "drop")
    assert woke[0] == (pytest.approx(1.0), "servfail")
    assert woke[3] == (pytest.approx(4.0), "servfail")
    assert registry.stats["async-resumed"] == registry.stats["async-dropped"] == 1
    assert registry.stats["async-timeouts"] == 2


async def test_a_taken_key_is_still_in_use_until_its_object_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = AsyncRegistry()
    first, second = question(1), question(2)
    assert registry.suspend(first, 3, 9, 1000)
    taken = registry.take(3, 9)
    assert registry.taken == 1 and not registry.held
    # The key is taken, not free: a second object under it would be lost to its taker.
    assert not registry.suspend(second, 3, 9, 1000)
    assert registry.stats["async-collisions"] == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.wait_for_ending, first)
        await trio.sleep(0.1)
        assert taken.resume()
    assert registry.taken == 0
    assert registry.suspend(second, 3, 9, 1000)
    registry.abandon(second)
    assert not registry.held


async def test_a_cancelled_wait_takes_its_object_out_of_the_registry(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A held query's task may be cancelled long before its deadline (its TCP connection
    # failed, the grace period ended). Its entry must go all the same: one left behind
    # would stay for good, its key in use and counted against setMaxSuspended.
    registry = AsyncRegistry()
    registry.max_suspended = 2
    held_dq, taken_dq = question(1), question(2)
    assert registry.suspend(held_dq, 0, 1, 60_000)
    assert registry.suspend(taken_dq, 0, 2, 60_000)
    taken = registry.take(0, 2)  # by getAsynchronousObject: out of ``held``, still waiting
    assert not registry.suspend(question(3), 0, 3, 60_000)  # full
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.wait_for_ending, held_dq)
        nursery.start_soon(registry.wait_for_ending, taken_dq)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start < 60  # cancelled, not timed out
    assert not registry.held and registry.taken == 0 and registry.waiting() == 0
    assert held_dq.suspension is None and taken_dq.suspension is None
    assert not taken.resume()  # it ended: its taker can no longer resume it
    # The room is free again, and so are the keys: two are held, a third is over the bound.
    assert registry.suspend(question(4), 0, 1, 60_000)
    assert registry.suspend(question(5), 0, 2, 60_000)
    assert not registry.suspend(question(6), 0, 6, 60_000)
    assert registry.stats["async-over-bound"] == 2
    assert registry.stats["async-collisions"] == 0


#: Every query is held for a minute; at most two at once.
HOLD_FOR_A_MINUTE = """
newServer{address="$BACKEND", healthCheckMode="up"}
function hold(dq)
  dq:suspend(0, dq.dh:getID(), 60000) -- over the bound: not held, and on it goes
  return DNSAction.Allow
end
addAction(AllRule(), LuaAction(hold))
setMaxSuspended(2)
-- Room for the answers of several queries in flight on one connection, so that its
-- reader goes on reading (and sees the reset) while they are held.
setMaxTCPUnsentBytes(1000000)
"""


def with_id(name: str, query_id: int) -> dns.message.Message:
    msg = query(name)
    msg.id = query_id
    return msg


async def test_a_tcp_client_that_resets_its_connection_leaves_nothing_held(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    """The same, end to end: a reset connection cancels the tasks of its queries in flight,
    held ones included, long before their deadline."""
    t = await start_triodist(HOLD_FOR_A_MINUTE)
    registry = t.server.config.async_registry
    stream = await trio.open_tcp_stream(*t.address)
    await stream.send_all(frame(with_id("www.example.org.", 1).to_wire()))
    await stream.send_all(frame(with_id("mail.example.org.", 2).to_wire()))
    await until(lambda: set(registry.held) == {(0, 1), (0, 2)})
    assert registry.waiting() == registry.max_suspended  # full
    # The client goes away with a reset (SO_LINGER 0), not an orderly close: the
    # connection's reader fails, and with it the tasks of its queries.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    left = await until(lambda: registry.waiting() == 0, timeout=1.0)
    assert left < 1.0  # not by their deadline, a minute away
    t.lua.api.out = io.StringIO()
    t.lua.api.showSuspended()
    assert "0 held (at most 2)" in t.lua.api.out.getvalue()
    # Both were counted once, as dropped, and the registry has room for two again: new
    # queries, under the same IDs, are held rather than refused as over the bound.
    await accounted(t)
    assert t.stats["received"] == t.stats["dropped"] == 2
    async with trio.open_nursery() as nursery:
        for query_id in (1, 2):
            nursery.start_soon(t.udp, with_id("www.example.org.", query_id))
        await until(lambda: set(registry.held) == {(0, 1), (0, 2)})
        assert t.stats["async-over-bound"] == 0
        for query_id in (1, 2):
            assert t.lua.api.getAsynchronousObject(0, query_id).resume()
    await accounted(t)
    assert t.stats["answered"] == 2


async def test_a_question_has_no_instance_dict_and_no_tags_until_one_is_set() -> None:
    dq = question(1)
    assert not hasattr(dq, "__dict__")
    assert dq.getTag("x") == "" and dict(dq.getTagArray()) == {}
    dq.unsetTag("x")
    assert dq._tags is None  # reading made nothing
    dq.setTag("x", 1)
    assert dq.getTag("x") == "1" and dq.tags == {"x": "1"}
    # dnsdist's members can be set, others cannot (as in dnsdist).
    dq.skipCache = True
    with pytest.raises(AttributeError):
        dq.skipcache = True  # type: ignore[attr-defined]
    # The header is a view on the bytes, made on each use.
    dq.dh.setRD(False)
    assert not dq.dh.getRD() and dq.data[2] & 0x01 == 0


async def test_a_response_has_everything_the_query_had_but_its_bytes() -> None:
    dq = question(1)
    dq.setTag("k", "v")
    for name, value in [
        ("pool", "p"),
        ("skipCache", True),
        ("useECS", True),
        ("ecsOverride", True),
        ("ecsPrefixLength", 24),
        ("size", 1232),
        ("delay_ms", 5),
        ("rule_fired", "r"),
        ("protocol", "DoH"),
    ]:
        setattr(dq, name, value)
    reply = dns.message.make_response(dns.message.from_wire(bytes(dq.data)))
    dr = DNSResponse.from_query(dq, reply.to_wire())
    for name in DNSQuestion.__slots__:
        if name not in ("data", "_qname_obj"):
            assert getattr(dr, name) == getattr(dq, name), name
    assert dr.tags is dq.tags
    assert dr.data == reply.to_wire() and dr.is_response
    assert not hasattr(dr, "__dict__")
