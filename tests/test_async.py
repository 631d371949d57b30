"""Asynchronous processing, end to end: queries and responses suspended by a rule and
resumed, dropped, answered or timed out from outside, over UDP and TCP.

Here the outside is the test itself (``getAsynchronousObject`` from Python); the same
scenarios driven by an external component over unix sockets are in
``test_async_policies.py`` (the fail-closed timeout policies only there) and
``test_async_component.py``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio
import trio.testing
from conftest import (
    StartTriodist,
    TCPOutcome,
    Triodist,
    query,
    records,
    tcp_session,
    until,
)

from triodist.testing.backend import AuthServer

SUSPEND_QUERIES = """
newServer{address="$BACKEND"}
function hold(dq)
  dq:suspend(0, dq.dh:getID(), 500)
  return DNSAction.Allow
end
addAction(AllRule(), LuaAction(hold))
"""

SUSPEND_RESPONSES = """
newServer{address="$BACKEND"}
function hold(dr)
  dr:suspend(1, dr.dh:getID(), 500)
  return DNSResponseAction.Allow
end
addResponseAction(AllRule(), LuaResponseAction(hold))
"""


async def held(t: Triodist, key: tuple[int, int]) -> None:
    """Wait until ``key`` is suspended (a real socket hop: a few ms at most)."""
    await until(lambda: key in t.server.config.async_registry.held)


async def ask_in_background(
    nursery: trio.Nursery, t: Triodist, msg: dns.message.Message, tcp: bool = False
) -> Callable[[], dns.message.Message | None]:
    """Send ``msg`` from a task of its own; a function giving the reply once it is in."""
    box: list[dns.message.Message | None] = []
    done = trio.Event()

    async def run() -> None:
        box.append(await (t.tcp if tcp else t.udp)(msg))
        done.set()

    nursery.start_soon(run)

    def result() -> dns.message.Message | None:
        assert done.is_set(), "no reply yet"
        return box[0]

    result.done = done  # type: ignore[attr-defined]
    return result


async def reply_of(result: Callable[[], dns.message.Message | None]) -> dns.message.Message | None:
    await result.done.wait()  # type: ignore[attr-defined]
    return result()


def msg_with_id(name: str, qid: int, rdtype: str = "A") -> dns.message.Message:
    msg = query(name, rdtype)
    msg.id = qid
    return msg


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_resume_goes_on_to_the_backend(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery, tcp: bool
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1001), tcp)
    await held(t, (0, 1001))
    assert auth.queries_for("www.example.org.") == []  # held: the backend has not seen it
    obj = t.lua.api.getAsynchronousObject(0, 1001)
    obj.getDQ().setTag("filtering", "pass")
    assert obj.resume() is True
    assert obj.resume() is False  # already gone on
    reply = await reply_of(result)
    assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert t.stats["async-suspended"] == 1 and t.stats["async-resumed"] == 1


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_set_rcode_answers_without_the_backend(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery, tcp: bool
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1002), tcp)
    await held(t, (0, 1002))
    obj = t.lua.api.getAsynchronousObject(0, 1002)
    assert obj.setRCode(dns.rcode.REFUSED, True) is True
    assert obj.resume() is True
    reply = await reply_of(result)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    assert reply.flags & dns.flags.QR and reply.id == 1002
    assert auth.queries_for("www.example.org.") == []


async def test_drop_over_udp_sends_nothing(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1003))
    await held(t, (0, 1003))
    obj = t.lua.api.getAsynchronousObject(0, 1003)
    assert obj.drop() is True and obj.resume() is False
    assert await reply_of(result) is None
    assert auth.queries_for("www.example.org.") == []
    assert t.stats["async-dropped"] == 1


async def test_drop_over_tcp_closes_after_the_other_pipelined_answers(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_QUERIES.replace("AllRule()", 'QNameRule("hold.example.org.")'))
    msgs = [msg_with_id("hold.example.org.", 7), msg_with_id("www.example.org.", 8)]
    outcomes: list[TCPOutcome] = []

    async def pipeline() -> None:
        # Waits less than the server's idle timeout (2 s), which would also close it.
        outcomes.append(await tcp_session(t.address, msgs, timeout=1.0))

    nursery.start_soon(pipeline)
    await held(t, (0, 7))
    t.lua.api.getAsynchronousObject(0, 7).drop()
    await until(lambda: bool(outcomes))
    (outcome,) = outcomes
    # The dropped one got nothing, the other its answer, and then the connection closed.
    assert set(outcome.replies) == {8} and outcome.closed, outcome


async def test_timeout_continues_unchanged(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    start = trio.current_time()
    reply = await t.ask("www.example.org.")
    assert records(reply) == {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}
    assert 0.5 <= trio.current_time() - start < 0.6
    assert t.stats["async-timeouts"] == 1
    assert not t.server.config.async_registry.held


async def test_a_taken_object_still_times_out(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    # getAsynchronousObject takes it out of the registry; if nothing resumes it, its
    # deadline still does (nothing is silently lost).
    t = await start_triodist(SUSPEND_QUERIES)
    taken = []

    async def take() -> None:
        await held(t, (0, 1004))
        taken.append(t.lua.api.getAsynchronousObject(0, 1004))

    async with trio.open_nursery() as inner:
        inner.start_soon(take)
        reply = await t.udp(msg_with_id("www.example.org.", 1004), timeout=2)
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert taken and taken[0].resume() is False
    assert t.server.config.async_registry.taken == 0


async def test_responses_are_suspended_too(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_RESPONSES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1005))
    await held(t, (1, 1005))
    assert len(auth.queries_for("www.example.org.")) == 1  # asked, answer held
    obj = t.lua.api.getAsynchronousObject(1, 1005)
    obj.setRCode(dns.rcode.NXDOMAIN, True)
    obj.resume()
    reply = await reply_of(result)
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer


async def test_cached_answers_and_cache_hit_responses(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        'getPool(""):setCache(newPacketCache(100))\n'
        "function hold(dr) dr:suspend(2, dr.dh:getID(), 500) return DNSResponseAction.Allow end\n"
        "addCacheHitResponseAction(AllRule(), LuaResponseAction(hold))\n"
    )
    assert await t.ask("www.example.org.") is not None  # a miss: cached, not held
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1006))
    await held(t, (2, 1006))
    assert t.lua.api.getAsynchronousObject(2, 1006).resume()
    reply = await reply_of(result)
    assert records(reply) >= {"www.example.org. A 192.0.2.10"}
    assert len(auth.queries_for("www.example.org.")) == 1


async def test_a_collision_goes_on_unsuspended(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    first = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1007))
    await held(t, (0, 1007))
    # The same key again: not suspended, answered at once; the first is still held.
    second = await t.udp(msg_with_id("mail.example.org.", 1007))
    assert records(second) == {"mail.example.org. A 192.0.2.25"}
    assert t.stats["async-collisions"] == 1
    assert t.lua.api.getAsynchronousObject(0, 1007).resume()
    assert records(await reply_of(first)) >= {"www.example.org. A 192.0.2.10"}


async def test_over_the_bound_suspend_returns_false(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(
        SUSPEND_QUERIES.replace(
            "  dq:suspend(0, dq.dh:getID(), 500)\n",
            "  if not dq:suspend(0, dq.dh:getID(), 500) then dq:setTag('held', 'no') end\n",
        )
        + "setMaxSuspended(2)\n"
    )
    results = [
        await ask_in_background(nursery, t, msg_with_id("www.example.org.", 2000 + i))
        for i in range(2)
    ]
    await held(t, (0, 2000))
    await held(t, (0, 2001))
    third = await t.udp(msg_with_id("mail.example.org.", 2002))
    assert records(third) == {"mail.example.org. A 192.0.2.25"}  # went on, unheld
    assert t.stats["async-over-bound"] == 1
    for i in range(2):
        t.lua.api.getAsynchronousObject(0, 2000 + i).resume()
        assert await reply_of(results[i]) is not None


async def test_hundreds_resumed_out_of_order_each_get_their_own_answer(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SUSPEND_QUERIES.replace(", 500)", ", 10000)"))
    names = ["www", "mail", "ns1", "txt"]
    replies: dict[int, dns.message.Message | None] = {}
    ids = list(range(3000, 3300))

    async def ask(qid: int) -> None:
        name = names[qid % 4]
        rdtype = "TXT" if name == "txt" else "A"
        replies[qid] = await t.udp(msg_with_id(f"{name}.example.org.", qid, rdtype), timeout=12)

    async with trio.open_nursery() as inner:
        for qid in ids:
            inner.start_soon(ask, qid)
            if qid % 50 == 0:
                # Paced: a burst of 300 datagrams overflows a socket, so each 50 go once
                # the server has read those before.
                started = qid - ids[0] + 1
                await until(lambda: t.stats["received"] >= started)  # noqa: B023
        await until(lambda: len(t.server.config.async_registry.held) == len(ids))
        order = ids[:]
        random.Random(4).shuffle(order)
        for count, qid in enumerate(order):
            assert t.lua.api.getAsynchronousObject(0, qid).resume()
            if count % 50 == 49:
                # Paced: the next 50 go once these have their answers, so that no socket on
                # the way (the backend's, triodist's) sees more than 50 at once.
                answered = count + 1
                await until(lambda: len(replies) >= answered, timeout=10)  # noqa: B023
    for qid in ids:
        reply = replies[qid]
        assert reply is not None and reply.id == qid
        assert reply.question[0].name.to_text() == f"{names[qid % 4]}.example.org."
        assert reply.answer
    assert t.stats["async-resumed"] == len(ids)


async def test_bad_suspend_arguments_are_rule_errors(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        SUSPEND_QUERIES.replace("dq:suspend(0, dq.dh:getID(), 500)", "dq:suspend(0, 70000, 500)")
    )
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert t.stats["rule-errors"] == 1
    assert not t.server.config.async_registry.held


async def test_get_asynchronous_object_names_a_missing_key(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    with pytest.raises(LookupError, match="asyncID 0 and queryID 42"):
        t.lua.api.getAsynchronousObject(0, 42)


async def test_show_suspended_lists_what_is_held(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1008))
    await held(t, (0, 1008))
    t.lua.api.out = io.StringIO()
    t.lua.api.showSuspended()
    text = t.lua.api.out.getvalue()
    assert "1008" in text and "www.example.org" in text
    t.lua.api.getAsynchronousObject(0, 1008).resume()
    assert await reply_of(result) is not None


async def test_self_answered_responses_are_suspended_too(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        "addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))\n"
        "function hold(dr) dr:suspend(3, dr.dh:getID(), 500) return DNSResponseAction.None end\n"
        "addSelfAnsweredResponseAction(AllRule(), LuaResponseAction(hold))\n"
        "addSelfAnsweredResponseAction(AllRule(), SetTagResponseAction('after', 'yes'))\n"
    )
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1009))
    await held(t, (3, 1009))
    assert t.server.config.chains.self_answered.rules[1].matches == 0  # paused before it
    assert t.lua.api.getAsynchronousObject(3, 1009).resume()
    reply = await reply_of(result)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    # None: the chain went on with the next rule after the resume.
    assert t.server.config.chains.self_answered.rules[1].matches == 1


async def test_set_rcode_copies_rd_into_ra_and_rejects_bad_rcodes(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_QUERIES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1010))
    await held(t, (0, 1010))
    obj = t.lua.api.getAsynchronousObject(0, 1010)
    with pytest.raises(ValueError, match="rcode from 0 to 15"):
        obj.setRCode(16, True)
    obj.setRCode(dns.rcode.REFUSED, True)
    obj.resume()
    reply = await reply_of(result)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    assert reply.flags & dns.flags.RA and reply.flags & dns.flags.RD
    assert not reply.flags & (dns.flags.AA | dns.flags.AD)


async def test_only_actions_can_suspend(start_triodist: StartTriodist, auth: AuthServer) -> None:
    # A selector or a policy that calls suspend gets false: nothing would wait for it.
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        "held_by_rule = 'unset'\n"
        "addAction(LuaRule(function(dq) held_by_rule = tostring(dq:suspend(0, 1, 500)) "
        "return false end), DropAction())\n"
        'setServerPolicyLua("p", function(servers, dq) dq:suspend(0, 2, 500) return 1 end)\n'
    )
    assert await t.ask("www.example.org.") is not None
    assert t.lua.lua.eval("held_by_rule") == "false"
    assert not t.server.config.async_registry.held


async def test_timeouts_beyond_an_hour_are_refused(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SUSPEND_QUERIES.replace(", 500)", ", math.huge)"))
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    assert not t.server.config.async_registry.held


async def test_held_queries_go_on_at_shutdown(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    t = await start_triodist(SUSPEND_QUERIES.replace(", 500)", ", 60000)"))
    results = [
        await ask_in_background(nursery, t, msg_with_id("www.example.org.", 1011)),
        await ask_in_background(nursery, t, msg_with_id("mail.example.org.", 1012), tcp=True),
    ]
    await held(t, (0, 1011))
    await held(t, (0, 1012))
    t.server.request_shutdown()  # the grace period answers them: fail-open, to the backend
    for result in results:
        reply = await reply_of(result)
        assert reply is not None and reply.rcode() == dns.rcode.NOERROR and reply.answer
    assert t.stats["async-timeouts"] == 2


# --- a held query and a changing configuration ----------------------------------------------
#
# A held query or response keeps the rule chain it entered (a tuple that edits replace,
# never change), so whatever the console or maintenance() do while it waits, it goes on
# after the rule that held it, in that chain. A query that arrives after the edit meets
# the edited chain.

HOLD = """
newServer{address="$BACKEND"}
function hold(dq)
  dq:suspend(0, dq.dh:getID(), 5000)
  return DNSAction.None -- on with the next rule, once resumed
end
function holdResponse(dr)
  dr:suspend(0, dr.dh:getID(), 5000)
  return DNSResponseAction.None
end
function servfail(dr) return DNSResponseAction.ServFail end
"""

CACHE = 'getPool(""):setCache(newPacketCache(100))\n'

#: Per chain: its infix in dnsdist's function names, the rule after the one that holds
#: and the rcode it gives, and what leads there (a cache; self-answered: a spoof).
CHAINS = {
    "query": ("", "RCodeAction(DNSRCode.REFUSED)", dns.rcode.REFUSED, ""),
    "cache-miss": ("CacheMiss", "RCodeAction(DNSRCode.REFUSED)", dns.rcode.REFUSED, CACHE),
    "response": ("Response", "LuaResponseAction(servfail)", dns.rcode.SERVFAIL, ""),
    "cache-inserted": (
        "CacheInsertedResponse",
        "LuaResponseAction(servfail)",
        dns.rcode.SERVFAIL,
        CACHE,
    ),
    "cache-hit": ("CacheHitResponse", "LuaResponseAction(servfail)", dns.rcode.SERVFAIL, CACHE),
    "self-answered": (
        "SelfAnsweredResponse",
        "LuaResponseAction(servfail)",
        dns.rcode.SERVFAIL,
        'addAction(AllRule(), SpoofAction("192.0.2.99"))\n',
    ),
}


@pytest.mark.parametrize("chain", list(CHAINS))
async def test_a_held_object_goes_on_in_the_chain_it_started_in_when_the_chain_is_cleared(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery, chain: str
) -> None:
    infix, after, rcode, lead = CHAINS[chain]
    response = chain not in ("query", "cache-miss")
    hold = "LuaResponseAction(holdResponse)" if response else "LuaAction(hold)"
    t = await start_triodist(
        HOLD
        + lead
        + f"add{infix}Action(AllRule(), {hold})\n"
        + f"add{infix}Action(AllRule(), {after})\n"
    )
    if chain == "cache-hit":  # a first answer into the cache: the next one is a hit
        assert await t.ask("www.example.org.") is not None
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 4001))
    await held(t, (0, 4001))
    assert t.lua.console_eval(f"clear{infix}Rules()") == ""
    assert t.lua.api.getAsynchronousObject(0, 4001).resume()
    reply = await reply_of(result)
    # The rule after the one that held it, in the chain it started in.
    assert reply is not None and reply.rcode() == rcode, reply
    assert t.stats["rule-errors"] == 0
    # A new query meets the cleared chain: nothing holds it, nothing changes its answer.
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert t.stats["async-suspended"] == 1


async def test_clear_rules_while_a_query_is_held_lets_it_go_on_to_the_backend(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    # The rule that held it said Allow: resumed, the query goes to the backend, as it would
    # have without the edit (it once looked its rule up in the emptied list: IndexError).
    t = await start_triodist(SUSPEND_QUERIES)
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 4002))
    await held(t, (0, 4002))
    assert t.lua.console_eval("clearRules()") == ""
    assert t.lua.api.getAsynchronousObject(0, 4002).resume()
    assert records(await reply_of(result)) == {
        "www.example.org. A 192.0.2.10",
        "www.example.org. A 192.0.2.11",
    }
    assert t.stats["rule-errors"] == 0


async def test_a_refusing_rule_moved_to_the_top_while_a_query_is_held_still_refuses_it(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    # The filter holds a query once (a tag says it did). Moving the rule that refuses the
    # name from after it to the top must not let the held query slip past both rules to
    # the backend: it resumes after the filter in its own chain, and meets the refusal.
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        "function hold(dq)\n"
        '  if dq:getTag("held") ~= "" then return DNSAction.None end\n'
        '  dq:setTag("held", "yes")\n'
        "  dq:suspend(0, dq.dh:getID(), 5000)\n"
        "  return DNSAction.None\n"
        "end\n"
        "addAction(AllRule(), LuaAction(hold))\n"
        'addAction(QNameRule("blocked.example.org."), RCodeAction(DNSRCode.REFUSED))\n'
    )
    result = await ask_in_background(nursery, t, msg_with_id("blocked.example.org.", 4003))
    await held(t, (0, 4003))
    assert t.lua.console_eval("mvRuleToTop()") == ""
    assert t.lua.api.getAsynchronousObject(0, 4003).resume()
    reply = await reply_of(result)
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED, reply
    assert auth.queries_for("blocked.example.org.") == []
    # A new query meets the moved rule first: refused at once, never held.
    reply = await t.udp(msg_with_id("blocked.example.org.", 4004))
    assert reply is not None and reply.rcode() == dns.rcode.REFUSED
    assert t.stats["async-suspended"] == 1


async def test_a_query_held_on_a_cache_miss_fills_the_cache_it_missed_in(
    start_triodist: StartTriodist, auth: AuthServer, nursery: trio.Nursery
) -> None:
    # The cache's key was made by the cache looked up; a new cache set on the pool while
    # the query is held (it may make its keys differently) never gets that key.
    t = await start_triodist(HOLD + CACHE + "addCacheMissAction(AllRule(), LuaAction(hold))\n")
    first = t.lua.lua.eval('getPool(""):getCache()')
    result = await ask_in_background(nursery, t, msg_with_id("www.example.org.", 4005))
    await held(t, (0, 4005))
    edit = 'getPool(""):setCache(newPacketCache(100, {skipOptions={10}}))'
    assert t.lua.console_eval(edit) == ""
    second = t.lua.lua.eval('getPool(""):getCache()')
    assert second is not first
    assert t.lua.api.getAsynchronousObject(0, 4005).resume()
    reply = await reply_of(result)
    assert reply is not None and reply.rcode() == dns.rcode.NOERROR
    assert (first.getEntriesCount(), second.getEntriesCount()) == (1, 0)
