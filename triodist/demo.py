"""``triodist demo``: the whole path on loopback, with nothing to install or configure.

One Trio run holds three things in one nursery: a small authoritative server
(the backend, ``AuthServer``), triodist itself on a free loopback port with the
built-in configuration below, and a client that sends a handful of queries and
prints what happened to each: the rule that fired, the answer, the latency.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import dns.message
import dns.rcode
import dns.rdatatype
import trio

from .authserver import AuthServer
from .config.runtime import LuaConfig
from .server import DNSServer, Listen

DEMO_CONFIG = """\
-- The demo's rules.lua: dnsdist syntax, run by triodist.
newServer{address="{{BACKEND}}", name="auth", udpTimeout=1}
newServer{address="{{BACKEND}}", name="auth-special", pool="special"}

addAction(QNameRule("blocked.example.org."), RCodeAction(DNSRCode.NXDOMAIN), {name="block list"})
addAction("ads.example.org.", DropAction(), {name="drop ads"})
addAction(QNameSuffixRule("spoofed.example.org."), SpoofAction({"192.0.2.53", "2001:db8::53"}),
          {name="spoof"})
addAction(AndRule{QTypeRule(DNSQType.ANY), TCPRule(false)}, TCAction(), {name="ANY over TCP"})
addAction("special.example.org.", PoolAction("special"), {name="special pool"})
addAction(LuaRule(function(dq) return dq.qname:toString():find("^lua%.") ~= nil end),
          LuaAction(function(dq) return DNSAction.Spoof, "192.0.2.99" end), {name="Lua spoof"})
addResponseAction(AllRule(), SetMaxTTLResponseAction(300), {name="cap TTL 300"})
"""

# (name, type, over TCP)
DEMO_QUERIES: list[tuple[str, str, bool]] = [
    ("www.example.org.", "A", False),
    ("www.example.org.", "AAAA", True),
    ("example.org.", "MX", False),
    ("blocked.example.org.", "A", False),
    ("ads.example.org.", "A", False),
    ("a.spoofed.example.org.", "A", False),
    ("a.spoofed.example.org.", "AAAA", False),
    ("example.org.", "ANY", False),
    ("x.special.example.org.", "A", False),
    ("lua.example.org.", "A", False),
    ("nothere.example.org.", "A", False),
]


@dataclass
class Row:
    query: str
    transport: str
    rule: str
    answer: str
    latency_ms: float | None


async def _ask(
    addr: tuple[str, int], name: str, qtype: str, tcp: bool
) -> dns.message.Message | None:
    query = dns.message.make_query(name, qtype)
    wire = query.to_wire()
    if tcp:
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            await stream.send_all(len(wire).to_bytes(2, "big") + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                chunk = await stream.receive_some(65535)
                if not chunk:
                    return None
                data += chunk
            return dns.message.from_wire(data[2:])
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.sendto(wire, addr)
        return dns.message.from_wire(await sock.recv(65535))


def _summary(reply: dns.message.Message | None) -> str:
    if reply is None:
        return "(no answer: dropped)"
    rcode = dns.rcode.to_text(reply.rcode())
    flags = " TC" if reply.flags & 0x0200 else ""
    records = [
        f"{dns.rdatatype.to_text(rrset.rdtype)} {rd} ttl={rrset.ttl}"
        for rrset in reply.answer
        for rd in rrset
    ]
    return f"{rcode}{flags}" + (": " + ", ".join(records) if records else "")


async def run_queries(server: DNSServer, addr: tuple[str, int]) -> list[Row]:
    """Send the demo queries one by one; find the rule that fired from the match counters."""
    chains = server.config.chains
    rules = [*chains.queries.rules, *chains.responses.rules]
    rows = []
    for name, qtype, tcp in DEMO_QUERIES:
        before = [rule.matches for rule in rules]
        start = trio.current_time()
        reply = None
        with trio.move_on_after(1.5) as scope:
            reply = await _ask(addr, name, qtype, tcp)
        latency = None if scope.cancelled_caught else (trio.current_time() - start) * 1000
        fired = [
            r.name or str(r.action) for r, b in zip(rules, before, strict=True) if r.matches > b
        ]
        rows.append(
            Row(
                f"{name} {qtype}",
                "TCP" if tcp else "UDP",
                ", ".join(fired) or "(none: forwarded)",
                _summary(reply),
                latency,
            )
        )
    return rows


def print_table(rows: list[Row], out: TextIO) -> None:
    headers = ("Query", "Via", "Rule(s) that fired", "Answer", "Latency")
    cells = [
        (
            r.query,
            r.transport,
            r.rule,
            r.answer,
            "-" if r.latency_ms is None else f"{r.latency_ms:.1f} ms",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)), file=out)


async def demo(out: TextIO) -> int:
    backend = AuthServer()
    async with trio.open_nursery() as nursery:
        bhost, bport = await nursery.start(backend.serve, "127.0.0.1", 0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "demo-rules.lua"
            config_text = DEMO_CONFIG.replace("{{BACKEND}}", f"{bhost}:{bport}")
            path.write_text(config_text)
            lua = LuaConfig()
            lua.run_file(path)
        config = lua.api.config
        config.listens[:] = [Listen("127.0.0.1:0")]
        server = DNSServer(config)
        bound = await nursery.start(server.run)
        addr = bound[0]
        print(
            f"triodist demo: backend on {bhost}:{bport}, triodist on {addr[0]}:{addr[1]}\n",
            file=out,
        )
        print("Configuration:\n", file=out)
        for config_line in config_text.splitlines():
            print("    " + config_line, file=out)
        print(file=out)
        rows = await run_queries(server, addr)
        print_table(rows, out)
        stats = server.stats
        print(
            f"\n{stats['queries']} queries, {stats['responses']} answered by the backend, "
            f"{stats['self-answered']} answered by rules, {stats['rule-drop']} dropped.",
            file=out,
        )
        server.request_shutdown()
        await server.wait_stopped()
        nursery.cancel_scope.cancel()
    return 0


def run_demo() -> int:
    # The table is the output; the server's own INFO lines would only interleave with it.
    logging.getLogger("triodist").setLevel(logging.WARNING)
    return trio.run(demo, sys.stdout)
