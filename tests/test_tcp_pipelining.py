"""Queries pipelined to a TCP backend (``newServer{maxInFlight=N}``): up to N at once on
one connection, their answers matched by ID in whatever order they come; and what a
backend that misbehaves on such a connection costs (nothing beyond its own queries).

The backend is ``ScriptedTCPBackend`` on loopback: each test's script says when and in
what order it answers."""

from __future__ import annotations

import dns.message
import trio
from conftest import StartTriodist, Triodist, accounted, records, tcp_pipelined, until
from conftest import query as make_query
from scripted_tcp_backend import BackendConnection, ScriptedTCPBackend, answer

WWW = "www.example.org. 60 IN A 192.0.2.1"


def backend_line(backend: ScriptedTCPBackend, options: str = "") -> str:
    # No health checks: they would open connections of their own.
    return (
        f'newServer{{address="{backend.address}", tcpOnly=true, healthCheckMode="up"'
        f"{options}}}\n"
    )


async def answer_in_reverse_after_a_pause(conn: BackendConnection) -> None:
    """Gather queries until none comes for 0.2 s, then answer them last first."""
    while True:
        held: list[dns.message.Message] = []
        closed = False
        while True:
            with trio.move_on_after(0.2) as pause:
                got = await conn.read_query()
            if pause.cancelled_caught:
                break
            if got is None:
                closed = True
                break
            held.append(got)
        for q in reversed(held):
            await conn.send(answer(q, f"{q.question[0].name} 60 IN A 192.0.2.1"))
        if closed:
            return


async def ask_udp_at_once(t: Triodist, names: list[str]) -> dict[str, dns.message.Message]:
    """The names asked at the same time, each by a UDP client of its own (the backend is
    tcpOnly: each goes to it over TCP); the replies, by name."""
    replies: dict[str, dns.message.Message] = {}

    async def ask(name: str) -> None:
        reply = await t.ask(name, timeout=5)
        if reply is not None:
            replies[name] = reply

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(ask, name)
    return replies


async def test_pipelined_queries_share_one_connection_and_come_back_in_any_order(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    backend = ScriptedTCPBackend(answer_in_reverse_after_a_pause)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend, ", maxInFlight=4"))
    names = [f"q{i}.example.org." for i in range(4)]
    replies = await ask_udp_at_once(t, names)
    # Each client got the answer to its own question, though they came last first.
    assert {name: records(r) for name, r in replies.items()} == {
        name: {f"{name} A 192.0.2.1"} for name in names
    }
    # One connection carried all four at once.
    assert len(backend.connections) == 1
    assert backend.connections[0].most_unanswered == 4
    await accounted(t)
    assert t.stats["responses"] == 4 and t.stats["downstream-timeouts"] == 0


async def test_queries_from_several_clients_with_the_same_id_share_a_connection(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Each query has an ID of the connection's own towards the backend: two clients' IDs
    may be the same, the backend must not see the same ID twice at once."""
    seen_ids: list[int] = []

    async def record_ids(conn: BackendConnection) -> None:
        held = []
        while len(held) < 3:
            got = await conn.read_query()
            if got is None:
                return
            seen_ids.append(got.id)
            held.append(got)
        for q in reversed(held):
            await conn.send(answer(q, f"{q.question[0].name} 60 IN A 192.0.2.1"))
        await conn.read_query()

    backend = ScriptedTCPBackend(record_ids)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend, ", maxInFlight=3"))
    replies: dict[str, dns.message.Message] = {}

    async def ask(name: str) -> None:
        q = make_query(name)
        q.id = 4242  # every client the same
        reply = await t.udp(q, timeout=5)
        assert reply is not None and reply.id == 4242
        replies[name] = reply

    async with trio.open_nursery() as clients:
        for name in ("a.example.org.", "b.example.org.", "c.example.org."):
            clients.start_soon(ask, name)
    assert len(replies) == 3 and len(backend.connections) == 1
    assert len(set(seen_ids)) == 3


async def test_no_connection_carries_more_than_max_in_flight(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    backend = ScriptedTCPBackend(answer_in_reverse_after_a_pause)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend, ", maxInFlight=3"))
    names = [f"q{i}.example.org." for i in range(7)]
    replies = await ask_udp_at_once(t, names)
    assert sorted(replies) == sorted(names)
    most = [conn.most_unanswered for conn in backend.connections]
    # Three connections for seven queries at once: 3 + 3 + 1.
    assert sorted(most) == [1, 3, 3]


async def test_pipelined_queries_from_one_tcp_client(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A client pipelining over TCP (its listener's maxInFlight) to a pipelining backend:
    one connection on each side."""
    backend = ScriptedTCPBackend(answer_in_reverse_after_a_pause)
    await backend.start(nursery)
    t = await start_triodist(
        backend_line(backend, ", maxInFlight=5").replace("tcpOnly=true, ", "")
    )
    msgs = [make_query(f"p{i}.example.org.") for i in range(5)]
    replies = await tcp_pipelined(t.address, msgs, timeout=10)
    assert {r.question[0].name.to_text() for r in replies.values()} == {
        m.question[0].name.to_text() for m in msgs
    }
    assert all(replies[m.id].question == m.question for m in msgs)
    assert len(backend.connections) == 1


async def test_a_backend_closing_after_each_answer_gets_the_others_sent_again(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A backend that answers one query per connection and closes it (as many do): the
    queries that were pipelined behind go out again on new connections."""

    async def one_answer_then_close(conn: BackendConnection) -> None:
        first = await conn.read_query()
        await trio.sleep(0.1)  # the others arrive meanwhile
        if first is not None:
            await conn.send(answer(first, f"{first.question[0].name} 60 IN A 192.0.2.1"))

    backend = ScriptedTCPBackend(one_answer_then_close)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend, ", maxInFlight=4"))
    names = [f"q{i}.example.org." for i in range(4)]
    replies = await ask_udp_at_once(t, names)
    assert sorted(replies) == sorted(names)
    assert len(backend.connections) == 4
    await accounted(t)
    assert t.stats["downstream-timeouts"] == 0
    # Only the last is still open, kept idle (until a query finds it closed and retries).
    server = t.server.servers[0]
    assert server.tcp_connections == len(server.life.tcp_pool.idle) == 1


async def test_an_unknown_id_or_a_short_reply_gives_the_connection_up(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A reply with an ID nobody has on the connection, or one shorter than a header: the
    queries on that connection get no answer (as dnsdist gives them up), the connection is
    closed, and the next queries go on a new one."""
    garbage = iter([b"\x12\x34" + bytes(10), b"\x00\x00\x81"])

    async def misbehave_then_answer(conn: BackendConnection) -> None:
        got = await conn.read_query()
        if got is None:
            return
        if conn.number < 2:
            await conn.send_raw(next(garbage))
            await conn.read_query()  # until triodist closes it
            return
        await conn.send(answer(got, WWW))
        await conn.read_query()

    backend = ScriptedTCPBackend(misbehave_then_answer)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend, ", maxInFlight=4"))
    server = t.server.servers[0]
    for _ in range(2):
        assert await t.ask("www.example.org.", timeout=1) is None
    await until(lambda: backend.closed == 2)
    assert server.tcp_connections == 0
    assert t.stats["downstream-timeouts"] == 2
    # The server goes on: the next query is answered on a new connection.
    assert records(await t.ask("www.example.org.", timeout=1)) == {"www.example.org. A 192.0.2.1"}
    await accounted(t)


async def test_a_reply_to_another_question_gets_no_answer_and_no_retry(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A reply with the query's ID but another question (or a header-only NOERROR), then
    the backend closes: the client gets no answer, as from dnsdist, and the query is not
    sent again (a second connection would hand the client whatever that one says)."""
    unrelated = make_query("other.example.org.", "TXT")

    async def wrong_question_then_close(conn: BackendConnection) -> None:
        got = await conn.read_query()
        if got is None:
            return
        if conn.number == 0:
            wrong = dns.message.make_response(unrelated)
            wrong.id = got.id
            await conn.send(wrong)
        else:
            header_only = answer(got)
            header_only.question = []
            await conn.send(header_only)

    backend = ScriptedTCPBackend(wrong_question_then_close)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend))
    for _ in range(2):
        assert await t.ask("www.example.org.", timeout=2) is None
    assert len(backend.connections) == 2
    assert t.stats["downstream-timeouts"] == 2
    await accounted(t)


async def test_a_query_past_its_deadline_leaves_the_others_answered(
    start_triodist: StartTriodist, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """One query the backend never answers times out on its own; the others on the same
    connection are answered, and the connection, owing only that reply, is closed once
    nobody waits on it: nothing is left behind."""
    release = trio.Event()

    async def silent_for_one(conn: BackendConnection) -> None:
        held = []
        while True:
            got = await conn.read_query()
            if got is None:
                return
            if str(got.question[0].name).startswith("silent"):
                continue
            held.append(got)
            if len(held) == 2:
                await release.wait()
                for q in held:
                    await conn.send(answer(q, f"{q.question[0].name} 60 IN A 192.0.2.1"))

    backend = ScriptedTCPBackend(silent_for_one)
    await backend.start(nursery)
    t = await start_triodist(backend_line(backend, ", maxInFlight=3"))
    server = t.server.servers[0]
    results: dict[str, dns.message.Message | None] = {}

    async def ask(name: str) -> None:
        results[name] = await t.ask(name, timeout=60)

    async with trio.open_nursery() as clients:
        clients.start_soon(ask, "silent.example.org.")
        # The others 20 s later, on the same connection: the silent query's deadline (the
        # backend's TCP timeout, 30 s) passes while they wait for their answers.
        await trio.sleep(20)
        for name in ("a.example.org.", "b.example.org."):
            clients.start_soon(ask, name)
        await until(lambda: t.stats["downstream-timeouts"] == 1, timeout=20, step=0.01)
        release.set()
    assert results["silent.example.org."] is None
    assert records(results["a.example.org."]) == {"a.example.org. A 192.0.2.1"}
    assert records(results["b.example.org."]) == {"b.example.org. A 192.0.2.1"}
    assert len(backend.connections) == 1
    await until(lambda: server.tcp_connections == 0)
    await until(lambda: backend.closed == 1)
    await accounted(t)

