"""The registry of held objects on its own, and the layout of what it holds.

Under the autojump clock, time moves only when every task waits, and straight to the next
deadline: a timeout that fires at its deadline ends its wait at exactly that time.
"""

from __future__ import annotations

import dns.message
import pytest
import trio
import trio.testing

from triodist.asyncproc.registry import AsyncRegistry
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
