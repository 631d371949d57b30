"""``statNodeRespRing(visitor [, seconds])``: the response ring as a tree of names, each
visited once, children before their parent and the nameless root last, with its own
counts and those of its subtree (dnsdist's ``StatNode``)."""

from __future__ import annotations

import dns.name
import trio
from conftest import StartTriodist

from triodist.ops.rings import TIMED_OUT, ResponseEntry
from triodist.ops.statnode import Stat, StatNode, response_tree
from triodist.testing.backend import AuthServer


def entry(name: str, rcode: int, when: float = 10.0, size: int = 100) -> ResponseEntry:
    wire = dns.name.from_text(name).to_wire()
    usec = TIMED_OUT if rcode < 0 else 1000
    return ResponseEntry(when, "192.0.2.1", wire, 1, max(rcode, 0), usec, size, "b")


def visited(root: StatNode) -> list[tuple[str, int, int, int, int, int, int, int]]:
    """(fullname, labels, own queries, noerrors, nxdomains, servfails, drops, subtree's
    queries) for each node, in the order visited."""
    seen: list[tuple[str, int, int, int, int, int, int, int]] = []

    def visitor(node: StatNode, own: Stat, subtree: Stat) -> None:
        seen.append(
            (
                node.fullname,
                node.labelsCount,
                own.queries,
                own.noerrors,
                own.nxdomains,
                own.servfails,
                own.drops,
                subtree.queries,
            )
        )

    root.visit(visitor)
    return seen


def test_names_and_their_parents_children_first_in_order_without_case() -> None:
    root = response_tree(
        [
            entry("www.Example.org.", 0),
            entry("WWW.example.ORG.", 3),
            entry("b.example.org.", 2),
            entry("a.example.org.", -1),
            entry("example.net.", 0),
        ],
        now=20.0,
    )
    assert visited(root) == [
        ("example.net.", 2, 1, 1, 0, 0, 0, 1),
        ("net.", 1, 0, 0, 0, 0, 0, 1),
        ("a.Example.org.", 3, 1, 0, 0, 0, 1, 1),
        ("b.Example.org.", 3, 1, 0, 0, 1, 0, 1),
        # The case first seen is kept, in the names under it too.
        ("www.Example.org.", 3, 2, 1, 1, 0, 0, 2),
        ("Example.org.", 2, 0, 0, 0, 0, 0, 4),
        ("org.", 1, 0, 0, 0, 0, 0, 4),
        ("", 0, 0, 0, 0, 0, 0, 5),
    ]
    assert root.numChildren() == 2


def test_bytes_add_up_and_the_root_name_counts_nothing() -> None:
    root = response_tree([entry("x.org.", 0, size=10), entry("org.", 0, size=5), entry(".", 0)], 20)
    totals: dict[str, int] = {}
    root.visit(lambda node, own, subtree: totals.__setitem__(node.fullname, subtree.bytes))
    assert totals == {"x.org.": 10, "org.": 15, "": 15}


def test_seconds_keeps_the_recent_responses_and_the_future_is_never_counted() -> None:
    entries = [entry("old.org.", 0, when=1.0), entry("new.org.", 0, when=9.0)]
    names = [e[0] for e in visited(response_tree(entries, now=10.0, seconds=5))]
    assert names == ["new.org.", "org.", ""]
    names = [e[0] for e in visited(response_tree(entries, now=10.0))]
    assert names == ["new.org.", "old.org.", "org.", ""]
    names = [e[0] for e in visited(response_tree(entries, now=5.0))]
    assert names == ["old.org.", "org.", ""]


COLLECT = """
seen = {}
function collect(node, own, subtree)
  table.insert(seen, node.fullname .. " " .. node.labelsCount .. " " .. node:numChildren()
    .. " " .. own.queries .. "/" .. own.noerrors .. "/" .. own.nxdomains
    .. " " .. subtree.queries .. " " .. subtree.bytes)
end
"""


async def test_from_the_console_with_and_without_seconds(
    start_triodist: StartTriodist, auth: AuthServer, autojump_clock: trio.abc.Clock
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\n' + COLLECT)
    www = await t.ask("www.example.org.")
    nx = await t.ask("nope.example.org.")
    assert www is not None and nx is not None
    sizes = len(www.to_wire()) + len(nx.to_wire())

    def run(call: str) -> list[str]:
        t.lua.console_eval("seen = {}")
        assert t.lua.console_eval(call) == ""
        return t.lua.console_eval("return table.concat(seen, ',')").rstrip("\n").split(",")

    expected = [
        "nope.example.org. 3 0 1/0/1 1 " + str(len(nx.to_wire())),
        "www.example.org. 3 0 1/1/0 1 " + str(len(www.to_wire())),
        f"example.org. 2 2 0/0/0 2 {sizes}",
        f"org. 1 1 0/0/0 2 {sizes}",
        f" 0 1 0/0/0 2 {sizes}",
    ]
    assert run("statNodeRespRing(collect)") == expected
    await trio.sleep(5)
    assert run("statNodeRespRing(collect, 0)") == expected
    assert run("statNodeRespRing(collect, 10)") == expected
    assert run("statNodeRespRing(collect, 4)") == [" 0 0 0/0/0 0 0"]
    assert "statNodeRespRing: expected a number >= 0, got -1" in t.lua.console_eval(
        "statNodeRespRing(collect, -1)"
    )
