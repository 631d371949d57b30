"""Routing to backends (tcpOnly, policies) and the bounds that drop instead of queueing."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio
import trio.testing
from conftest import (
    CLOSED_UNANSWERED,
    StartTriodist,
    hostport,
    query,
    records,
    tcp_session,
    until,
    whoami,
)

from triodist.config.runtime import ConfigError, load_config
from triodist.frontends.tcp import client_key
from triodist.testing.backend import AuthServer

MakeAuth = Callable[..., Awaitable[AuthServer]]


async def test_tcp_only_server_gets_udp_clients_over_tcp(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND", tcpOnly=true}')
    reply = await t.ask("www.example.org.")
    assert reply is not None and reply.rcode() == 0
    assert auth.udp_queries == 0
    assert auth.tcp_queries == 1


async def test_roundrobin_alternates(start_triodist: StartTriodist, make_auth: MakeAuth) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}"}}\nnewServer{{address="{hostport(b)}"}}\n'
        "setServerPolicy(roundrobin)\n"
    )
    seen = [await whoami(t) for _ in range(6)]
    assert Counter(seen) == Counter({"a": 3, "b": 3})
    assert all(x != y for x, y in itertools.pairwise(seen))


async def test_first_available_prefers_lowest_order(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", order=2}}\n'
        f'newServer{{address="{hostport(b)}", order=1}}\n'
        "setServerPolicy(firstAvailable)\n"
    )
    assert {await whoami(t) for _ in range(5)} == {"b"}
    # Servers are numbered by order, as dnsdist numbers them: b (order 1) is server 0.
    t.lua.api.getServer(0).setDown()
    assert {await whoami(t) for _ in range(5)} == {"a"}


async def test_whashed_is_stable_per_name(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}"}}\nnewServer{{address="{hostport(b)}"}}\n'
        "setServerPolicy(whashed)\n"
    )
    servers = t.lua.api.getServers()
    used = set()
    for index in range(12):
        before = [s.getQueries() for s in servers]
        for _ in range(3):
            assert await t.ask(f"n{index}.wild.example.org.") is not None
        deltas = [s.getQueries() - b for s, b in zip(servers, before, strict=True)]
        # The same name always goes to the same backend.
        assert sorted(deltas) == [0, 3]
        used.add(deltas.index(3))
    # And twelve names do not all land on one backend.
    assert used == {0, 1}


async def test_wrandom_respects_weights(start_triodist: StartTriodist, make_auth: MakeAuth) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", weight=1}}\n'
        f'newServer{{address="{hostport(b)}", weight=9}}\n'
        "setServerPolicy(wrandom)\n"
    )
    seen = Counter([await whoami(t) for _ in range(200)])
    # Expected 20/180; the bounds are far beyond any plausible random deviation.
    assert 2 <= seen["a"] <= 60 and seen["b"] >= 140


async def test_least_outstanding_avoids_a_busy_server(
    start_triodist: StartTriodist, make_auth: MakeAuth, autojump_clock: trio.abc.Clock
) -> None:
    slow = await make_auth(name="slow", mode="slow", delay=5.0)
    fast = await make_auth(name="fast")
    t = await start_triodist(
        f'newServer{{address="{hostport(slow)}", udpTimeout=10, order=1}}\n'
        f'newServer{{address="{hostport(fast)}", udpTimeout=10, order=2}}\n'
    )
    async with trio.open_nursery() as nursery:
        # The first query goes to the slow server (lowest order) and stays outstanding...
        nursery.start_soon(partial(t.ask, "www.example.org.", timeout=20.0))
        await until(lambda: slow.udp_queries > 0)
        # ...so the next ones go to the server with nothing in flight.
        assert {await whoami(t) for _ in range(3)} == {"fast"}


async def test_udp_in_flight_bound_drops_and_counts(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.mode = "slow"
    auth.delay = 1.0
    t = await start_triodist('newServer{address="$BACKEND", udpTimeout=5}')
    t.server.config.settings.max_udp_in_flight = 2
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(partial(t.ask, "www.example.org.", timeout=3.0))
    assert t.stats["frontend-overload-drops"] == 3
    assert auth.udp_queries == 2


async def test_tcp_connection_bound_refuses_extra_connections(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\nsetMaxTCPConnectionsPerClient(1)')
    connections = t.server.tcp_connections
    first = await trio.open_tcp_stream(*t.address)
    async with first:
        # Once the first connection is counted, a second one is turned away: closed.
        await until(lambda: connections.per_client[client_key("127.0.0.1")] == 1)
        assert await tcp_session(t.address, [query("www.example.org.")]) == CLOSED_UNANSWERED
        assert t.stats["tcp-overload-drops"] == 1
    await until(lambda: connections.per_client[client_key("127.0.0.1")] == 0)
    reply = await t.ask("www.example.org.", tcp=True)
    assert reply is not None and reply.flags & dns.flags.QR


async def test_servers_added_and_removed_while_running(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(f'newServer{{address="{hostport(a)}", name="a"}}\n')
    api = t.lua.api
    # As from maintenance() or a console: the new server gets its socket and its checks.
    server_b = api.newServer({"address": hostport(b), "name": "b"})
    api.getServer("a").setDown()
    assert [await whoami(t) for _ in range(3)] == ["b"] * 3
    await trio.testing.wait_all_tasks_blocked()
    assert b.health_checks, "the added server is health-checked"
    api.getServer("a").setUp()
    api.rmServer(server_b)
    await trio.testing.wait_all_tasks_blocked()
    assert not server_b._socks  # its reply loop ended and closed the sockets
    assert [await whoami(t) for _ in range(3)] == ["a"] * 3


async def test_wrandom_spreads_by_weight_over_real_sockets(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", weight=1}}\n'
        f'newServer{{address="{hostport(b)}", weight=3}}\n'
        "setServerPolicy(wrandom)\n"
    )
    t.lua.api.policy_settings.rng.seed(20261122)  # a fixed seed: the same run every time
    seen = Counter([await whoami(t) for _ in range(400)])
    # Expected 100 / 300; the tolerance (±40) is about 4.6 standard deviations.
    assert abs(seen["a"] - 100) <= 40, seen
    assert seen["a"] + seen["b"] == 400


async def test_tcp_connections_to_a_backend_are_reused(
    start_triodist: StartTriodist, make_auth: MakeAuth, autojump_clock: trio.abc.Clock
) -> None:
    a = await make_auth(name="a", tcp_idle_timeout=0.3)
    # No health checks: they would open connections of their own.
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", tcpOnly=true, healthCheckMode="up"}}\n'
    )
    for _ in range(3):
        assert await whoami(t) == "a"
    assert a.tcp_connections == 1  # one connection carried all three
    # Idle beyond the backend's idle timeout (virtual time), it closes the connection:
    # the next query goes on a new one.
    await trio.sleep(0.5)
    assert await whoami(t) == "a"
    assert a.tcp_connections == 2
    assert t.stats["downstream-timeouts"] == 0


async def test_backend_timeouts_fire_at_each_querys_own_deadline(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    # Queries to a silent name wait udpTimeout (1 s) from their own sending, while an
    # answered query in between is not held up by them.
    auth.modes["silent.example.org."] = "silent"
    t = await start_triodist('newServer{address="$BACKEND", udpTimeout=1}')
    server = t.lua.api.getServer(0)
    base = trio.current_time()
    ended: list[float] = []

    async def watch_timeouts() -> None:
        # The client cannot tell a dropped query from a late one: read the counter.
        while len(ended) < 3:
            if t.stats["downstream-timeouts"] > len(ended):
                ended.append(round(trio.current_time() - base, 2))
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_timeouts)
        for after in (0.0, 0.3, 0.6):
            await trio.sleep_until(base + after)
            nursery.start_soon(partial(t.ask, "silent.example.org.", timeout=3.0))
        start = trio.current_time()
        reply = await t.ask("www.example.org.")
        assert reply is not None and trio.current_time() - start < 0.01
    # Each waited its own udpTimeout from its sending (the client's 3 s timeout is far
    # later), and each is counted once.
    assert ended == [1.0, 1.3, 1.6]
    assert t.stats["downstream-timeouts"] == 3
    assert server.getDrops() == 3 and server.getOutstanding() == 0


async def test_removing_a_backend_wakes_the_queries_waiting_for_it(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.modes["silent.example.org."] = "silent"
    t = await start_triodist('newServer{address="$BACKEND", udpTimeout=30}')
    server = t.lua.api.getServer(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.ask, "silent.example.org.", timeout=60.0))
        await until(lambda: server.getOutstanding() == 1)
        start = trio.current_time()
        t.lua.api.rmServer(server)
        await trio.testing.wait_all_tasks_blocked()
        # Woken at once with no reply (not 29 s later): dropped and counted.
        assert server.getOutstanding() == 0
        assert t.stats["downstream-timeouts"] == 1
        assert trio.current_time() - start < 0.01
        nursery.cancel_scope.cancel()


def test_backend_replies_match_the_question_or_are_bare_errors() -> None:
    from triodist.backends.exchange import reply_matches

    query = dns.message.make_query("www.example.org.", "A")
    wire = query.to_wire()
    end = len(wire) - 0  # no EDNS: the question runs to the end
    question = wire[12:end].lower()
    reply = dns.message.make_response(query)
    assert reply_matches(reply.to_wire(), question)
    shouted = dns.message.make_response(dns.message.make_query("WWW.Example.ORG.", "A"))
    assert reply_matches(shouted.to_wire(), question)  # 0x20 case is fine
    other = dns.message.make_response(dns.message.make_query("evil.example.org.", "A"))
    assert not reply_matches(other.to_wire(), question)
    for rcode, accepted in (
        (dns.rcode.FORMERR, True),
        (dns.rcode.REFUSED, True),
        (dns.rcode.NOERROR, False),
        (dns.rcode.NXDOMAIN, False),
    ):
        bare = dns.message.make_response(query)
        bare.set_rcode(rcode)
        bare.question = []
        assert reply_matches(bare.to_wire(), question) is accepted, rcode


async def test_over_the_udp_in_flight_bound_answers_that_need_no_wait_still_go_out(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.mode = "slow"
    auth.delay = 1.0
    t = await start_triodist(
        'newServer{address="$BACKEND", udpTimeout=5}\n'
        "setMaxUDPInFlight(2)\n"
        'addAction("spoofed.example.", SpoofAction("192.0.2.99"))\n'
    )
    answers: list[dns.message.Message | None] = []

    async def ask(name: str) -> None:
        answers.append(await t.ask(name, timeout=3.0))

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(ask, "www.example.org.")
        await until(lambda: auth.udp_queries >= 2)
        # Two queries wait for the slow backend: the bound is reached.
        spoofed = await t.ask("spoofed.example.", timeout=0.5)
        assert records(spoofed) == {"spoofed.example. A 192.0.2.99"}
        assert await t.ask("other.example.org.", timeout=0.5) is None
        assert t.stats["frontend-overload-drops"] == 1
    assert all(a is not None and a.flags & dns.flags.QR for a in answers)
    assert auth.udp_queries == 2  # the dropped query never reached the backend


async def test_max_udp_outstanding_bounds_each_backend(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    auth.mode = "slow"
    auth.delay = 1.0
    t = await start_triodist('setMaxUDPOutstanding(1)\nnewServer{address="$BACKEND", udpTimeout=5}')
    server = t.server.config.routing.servers[0]
    assert server.max_outstanding == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(t.ask, "www.example.org.", timeout=3.0))
        await until(lambda: auth.udp_queries >= 1)
        assert await t.ask("two.example.org.", timeout=0.5) is None
    assert auth.udp_queries == 1
    assert server.drops == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("setMaxUDPOutstanding(0)", "setMaxUDPOutstanding: expected 1 to 65535"),
        ("setMaxUDPOutstanding(70000)", "setMaxUDPOutstanding: expected 1 to 65535"),
        ("setMaxUDPInFlight(0)", "setMaxUDPInFlight: expected at least 1"),
        ('setMaxUDPInFlight("many")', "setMaxUDPInFlight: expected a number"),
    ],
)
def test_limits_refuse_bad_values_with_file_and_line(
    tmp_path: Path, call: str, message: str
) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(f"-- limits\n{call}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "rules.lua:2" in str(info.value)
