"""Queries to a backend over UDP: the pool of sockets (``newServer``'s ``sockets``) and
the query IDs, in turn or at random (``setRandomizedOutgoingSockets``,
``setRandomizedIdsOverUDP``), as the backend sees them over real sockets.

An off-path attacker who wants a forged reply accepted must guess the source port and
the query ID of a query in flight; with one socket and consecutive IDs both are known
after one look. The backend here records the source address and the ID of every query it
receives.
"""

from __future__ import annotations

import itertools
import logging
from functools import partial

import dns.message
import pytest
import trio
from conftest import StartTriodist, hostport, query, records, udp_query

from triodist.backends.exchange import NotSent
from triodist.backends.life import PendingQuery
from triodist.backends.server import Server
from triodist.cli import load
from triodist.reload import Reloader
from triodist.testing.backend import AuthServer

QUERIES = 200

BASE = """
setACL({"127.0.0.0/8"})
%s
newServer{address="$BACKEND", healthCheckMode="up"%s}
"""


async def _ask_all_at_once(address: tuple[str, int]) -> list[dns.message.Message | None]:
    """QUERIES queries sent together, all in flight at once behind a slow backend."""
    replies: list[dns.message.Message | None] = [None] * QUERIES

    async def ask(i: int) -> None:
        replies[i] = await udp_query(address, query(f"q{i}.wild.example.org."), timeout=5)

    async with trio.open_nursery() as nursery:
        for i in range(QUERIES):
            nursery.start_soon(ask, i)
    return replies


def _successive(values: list[int], same: bool = True) -> int:
    """How many values follow the one before (the same one; or, with ``same=False``,
    the one after it, modulo 2**16)."""
    step = 0 if same else 1
    return sum((b - a) & 0xFFFF == step for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    ("settings", "options", "sockets", "random_sockets", "random_ids"),
    [
        pytest.param("", "", 1, False, False, id="defaults"),
        pytest.param("", ", sockets=4", 4, False, False, id="four-sockets-in-turn"),
        pytest.param(
            "setRandomizedIdsOverUDP(true)", "", 1, False, True, id="random-ids-one-socket"
        ),
        pytest.param(
            "setRandomizedIdsOverUDP(true)\nsetRandomizedOutgoingSockets(true)",
            ", sockets=4",
            4,
            True,
            True,
            id="random-ids-and-sockets",
        ),
    ],
)
async def test_what_the_backend_sees(
    start_triodist: StartTriodist,
    auth: AuthServer,
    autojump_clock: trio.testing.MockClock,
    settings: str,
    options: str,
    sockets: int,
    random_sockets: bool,
    random_ids: bool,
) -> None:
    t = await start_triodist(BASE % (settings, options))
    # Every query stays in flight until all are sent: IDs must not repeat on a socket.
    auth.mode, auth.delay = "slow", 0.5
    replies = await _ask_all_at_once(t.address)

    assert all(
        records(r) == {f"q{i}.wild.example.org. A 192.0.2.99"} for i, r in enumerate(replies)
    )
    seen = [r for r in auth.received if r.transport == "udp"]
    assert len(seen) == QUERIES
    ports = [r.peer[1] for r in seen]
    ids = [r.message.id for r in seen]
    assert len(set(ports)) == sockets
    # No (source port, ID) twice among queries in flight at the same time.
    assert len(set(zip(ports, ids, strict=True))) == QUERIES
    if sockets > 1 and random_sockets:
        # Drawn at random: the next query leaves from the same port about one time in four.
        assert _successive(ports) > QUERIES // 20
    elif sockets > 1:
        # In turn, as dnsdist does: never twice in a row, and the same port every 4th.
        assert _successive(ports) == 0
        assert all(ports[i] == ports[i - sockets] for i in range(sockets, QUERIES))
    if random_ids:
        # One pair of successive IDs in 65,536 follows by chance; far fewer than half.
        assert _successive(ids, same=False) <= 5
    else:
        assert _successive(ids, same=False) == QUERIES - 1


class _Recorder:
    """A stand-in for a connected UDP socket: records the ID of each datagram sent."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def send(self, data: bytes) -> int:
        self.ids.append(int.from_bytes(data[:2], "big"))
        return len(data)


async def test_random_ids_are_never_reused_while_in_flight_even_with_the_table_full() -> None:
    # All 65,535 IDs a backend may have in flight taken: the free list takes over from the
    # random draws, each ID once, and the ones that come free are the only ones given out.
    server = Server("192.0.2.1:53", randomize_ids=True)
    sent = _Recorder()
    server._use_sockets([sent])  # type: ignore[list-item]
    wire = query("example.org.").to_wire()
    pending = [server.send_udp(wire, len(wire)) for _ in range(65_535)]
    assert all(isinstance(p, PendingQuery) for p in pending)
    assert len(set(sent.ids)) == 65_535
    assert server._free_ids[0] is not None  # draws stopped finding free IDs: the list took over
    assert server.send_udp(wire, len(wire)) is NotSent.OVERLOADED  # setMaxUDPOutstanding's bound
    assert server.drops == 1

    freed = pending[1000:1100]
    for p in freed:
        assert isinstance(p, PendingQuery)
        server._end_wait(p, None)  # as at its deadline
    before = len(sent.ids)
    again = [server.send_udp(wire, len(wire)) for _ in freed]
    assert all(isinstance(p, PendingQuery) for p in again)
    never_sent = set(range(65_536)) - set(sent.ids[:65_535])  # the one left free
    given = sent.ids[before:]
    assert len(set(given)) == len(freed)
    assert set(given) <= {p.key & 0xFFFF for p in freed if isinstance(p, PendingQuery)} | never_sent

    for p in [*pending, *again]:
        if isinstance(p, PendingQuery):
            server._end_wait(p, None)
    assert server.outstanding == 0
    assert server._free_ids == [None]  # idle again: the list (128 KiB) is given back


async def test_reload_keeps_the_sockets_and_takes_the_new_settings(
    start_triodist: StartTriodist,
    auth: AuthServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = await start_triodist(
        BASE % ("setRandomizedIdsOverUDP(true)\nsetRandomizedOutgoingSockets(true)", ", sockets=2")
    )
    server = t.server.servers[0]
    ports = {s.getsockname()[1] for s in server._socks}
    assert len(ports) == 2

    # The same server with three sockets and the settings off: it keeps its two sockets
    # (queries may be in flight on them), says so, and takes the settings.
    t.config_path.write_text((BASE % ("", ", sockets=3")).replace("$BACKEND", hostport(auth)))
    reloader = Reloader(t.server, partial(load, str(t.config_path), [], ["127.0.0.1:0"]), t.lua)
    with caplog.at_level(logging.WARNING):
        assert reloader.reload() is None
    running = t.server.servers[0]
    assert running.same_backend(server) and running.life is server.life
    assert {s.getsockname()[1] for s in running._socks} == ports
    assert "keeps its 2 UDP socket(s): sockets=3 applies when it is started again" in caplog.text
    assert not running.randomize_ids and not running.randomize_sockets

    auth.received.clear()
    for i in range(8):
        assert records(await t.ask(f"r{i}.wild.example.org."))
    seen = [r for r in auth.received if r.transport == "udp"]
    assert {r.peer[1] for r in seen} == ports
    assert _successive([r.peer[1] for r in seen]) == 0  # in turn again
    assert _successive([r.message.id for r in seen], same=False) == 7  # consecutive again
