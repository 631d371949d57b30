"""The ring buffers: the last queries and responses, bounded, for the console's top-N."""

from __future__ import annotations

import re
from functools import partial

from conftest import StartTriodist, hostport, records

from triodist.cli import load
from triodist.ops.rings import name_of
from triodist.reload import Reloader
from triodist.testing.backend import AuthServer

CONFIG = """
setACL({"127.0.0.0/8"})
newServer{address="$BACKEND", name="b1", healthCheckMode="up"}
addAction("spoofed.example.", SpoofAction("192.0.2.1"))
setRingBuffersSize(%d)
"""


def rows(text: str) -> list[tuple[str, int]]:
    """``topQueries()``-style output: (name, count) per line, "Rest" last."""
    return [
        (name, int(count)) for name, count in re.findall(r"^\s*\d+\s+(\S+)\s+(\d+)", text, re.M)
    ]


async def test_top_queries_clients_and_responses(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CONFIG % 100)
    for _ in range(3):
        assert records(await t.ask("www.example.org."))
    assert records(await t.ask("mail.example.org."))
    assert records(await t.ask("spoofed.example."))
    run = t.lua.console_eval
    assert rows(run("topQueries()")) == [
        ("www.example.org.", 3),
        ("mail.example.org.", 1),
        ("spoofed.example.", 1),
        ("Rest", 0),
    ]
    assert rows(run("topQueries(1, 2)")) == [("example.org.", 4), ("Rest", 1)]
    assert rows(run("topClients()")) == [("127.0.0.1", 5), ("Rest", 0)]
    # Responses are the backend's replies (the spoofed one is not).
    assert rows(run("topResponses()")) == [
        ("www.example.org.", 3),
        ("mail.example.org.", 1),
        ("Rest", 0),
    ]
    assert run("showResponseLatency()").startswith("Average response latency: ")
    assert run("#getResponseRing()") == "4\n"
    assert run("getResponseRing()[1].rcode") == "0\n"
    assert rows(run("topSlow(10, 60000)")) == [("Rest", 0)]


async def test_timeouts_are_in_the_response_ring(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    auth.modes["silent.example.org."] = "silent"
    t = await start_triodist(
        CONFIG.replace('healthCheckMode="up"', 'healthCheckMode="up", udpTimeout=0.2') % 100
    )
    assert await t.ask("silent.example.org.", timeout=1) is None
    run = t.lua.console_eval
    assert run("getSlowResponses(10, 0, nil, true)[1][1]") == "silent.example.org.\n"
    assert run("showResponseLatency()") == "No traffic yet.\n"


async def test_the_rings_are_bounded_and_kept_over_a_reload(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(CONFIG % 5)
    for index in range(20):
        await t.ask(f"n{index}.example.org.")
    rings = t.server.config.rings
    assert len(rings.queries) == 5 and len(rings.responses) == 5
    assert [name_of(q[2]) for q in rings.queries] == [f"n{i}.example.org." for i in range(15, 20)]
    # A reload keeps the rings (the running server's), with the new size.
    reloader = Reloader(t.server, partial(load, str(t.config_path), [], ["127.0.0.1:0"]), t.lua)
    t.config_path.write_text((CONFIG % 3).replace("$BACKEND", hostport(auth)))
    assert reloader.reload() is None
    assert t.server.config.rings is rings and len(rings.queries) == 3
    assert (
        rows(reloader.current.lua.eval("1") and reloader.current.console_eval("topQueries(1)"))[0][
            1
        ]
        == 1
    )
    await t.ask("www.example.org.")
    assert rings.queries[-1][2] == b"\x03www\x07example\x03org\x00"
