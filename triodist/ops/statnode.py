"""``statNodeRespRing``: the response ring as a tree of names, each node with its counts.

Every backend answer (or timeout) in the response ring is counted at the node of its
question name, and the tree holds a node for each of the name's parents too, down from
the top-level domain (``www.example.com.``, ``example.com.``, ``com.``). The console's
visitor is then called once per node, the children before their parent (each level in
name order, without case) and the nameless root last, with the node, the node's own
counts and the counts of the node and everything under it, as dnsdist's ``StatNode``
does.

The tree is made for one call and dropped after it; its size is bounded by the ring's
(``setRingBuffersSize``) times the labels of a name.

Imports nothing above triodist.ops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import dns.name

from triodist.ops.rings import TIMED_OUT, ResponseEntry

# dnsdist compares labels without ASCII case only (not Latin-1's other letters).
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


class Stat:
    """The counts of a node, under dnsdist's names (what the visitor reads)."""

    __slots__ = ("bytes", "drops", "noerrors", "nxdomains", "queries", "servfails")

    def __init__(self) -> None:
        self.queries = 0
        self.noerrors = 0
        self.nxdomains = 0
        self.servfails = 0
        self.drops = 0
        self.bytes = 0

    def count(self, rcode: int, size: int) -> None:
        """One answer with ``rcode`` (-1: none came, a drop) of ``size`` bytes."""
        self.queries += 1
        self.bytes += size
        if rcode < 0:
            self.drops += 1
        elif rcode == 0:
            self.noerrors += 1
        elif rcode == 2:
            self.servfails += 1
        elif rcode == 3:
            self.nxdomains += 1

    def add(self, other: Stat) -> None:
        self.queries += other.queries
        self.noerrors += other.noerrors
        self.nxdomains += other.nxdomains
        self.servfails += other.servfails
        self.drops += other.drops
        self.bytes += other.bytes


class StatNode:
    """One name of the tree: ``fullname`` (``"example.com."``; the root's is ``""``),
    ``labelsCount`` and ``numChildren()``, as the visitor reads them in dnsdist."""

    __slots__ = ("children", "fullname", "labelsCount", "name", "stat")

    def __init__(self, name: str = "", fullname: str = "", labels: int = 0) -> None:
        self.name = name
        self.fullname = fullname
        self.labelsCount = labels
        self.stat = Stat()
        #: The children by their label without ASCII case.
        self.children: dict[bytes, StatNode] = {}

    def numChildren(self) -> int:
        return len(self.children)

    def submit(self, labels: tuple[bytes, ...], rcode: int, size: int) -> None:
        """Count an answer for the name of ``labels`` (the root's empty label left out),
        making the nodes on the way down from the top-level domain. The case kept is
        the first one seen, as dnsdist keeps it."""
        if not labels:
            return  # the root name: dnsdist counts nothing for it
        node = self
        for depth, label in enumerate(reversed(labels), 1):
            key = label.translate(_ASCII_LOWER)
            child = node.children.get(key)
            if child is None:
                # Raw label bytes, joined by dots unescaped, as dnsdist builds fullname;
                # Latin-1 gives Lua the bytes as they are.
                text = label.decode("latin-1")
                child = node.children[key] = StatNode(text, f"{text}.{node.fullname}", depth)
            node = child
        node.stat.count(rcode, size)

    def visit(self, visitor: Callable[[StatNode, Stat, Stat], Any]) -> Stat:
        """Call ``visitor(node, own counts, counts with everything under it)`` for this
        node's subtree, children first (in name order without case), this node last;
        return the subtree's counts."""
        total = Stat()
        total.add(self.stat)
        for _, child in sorted(self.children.items()):
            total.add(child.visit(visitor))
        visitor(self, self.stat, total)
        return total


def response_tree(entries: Iterable[ResponseEntry], now: float, seconds: int = 0) -> StatNode:
    """The tree of the responses in ``entries`` (the response ring) up to ``now``, those of
    the last ``seconds`` only when it is not 0. A backend that never answered counts as a
    drop."""
    cutoff = now - seconds
    root = StatNode()
    for entry in entries:
        if entry.when > now or (seconds and entry.when < cutoff):
            continue
        rcode = -1 if entry.usec == TIMED_OUT else entry.rcode
        labels = dns.name.from_wire(entry.qname_wire, 0)[0].labels[:-1]
        root.submit(labels, rcode, entry.size)
    return root
