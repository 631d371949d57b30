"""``triodist demo``: the whole path on loopback, with nothing to install or configure.

One Trio run holds four things in one nursery: a small authoritative server
(the backend, ``AuthServer``), an external filter for asynchronous processing
(``triodist.testing.component``, on unix sockets in a temporary directory), triodist
itself on a free loopback port with the built-in configuration below, and a
client that sends a handful of queries and prints what happened to each: the
rule that fired (and, for a suspended query, how it ended), the answer, the
latency.

The top layer, beside the command line that runs it: it may import the configuration,
the server and everything below them, and ``triodist.testing`` (the backend and the
filter), which no module of the server's layers imports.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import dns.message
import dns.rcode
import dns.rdatatype
import trio

from triodist.config.runtime import LuaConfig
from triodist.server import DNSServer, Listen
from triodist.testing import component as asyncfilter
from triodist.testing.backend import DEFAULT_ZONE, AuthServer
from triodist.wire.address import split_host_port

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

-- Asynchronous processing: a query under async.example.org. is held (300 ms at most) while
-- the filter decides; the filter's answer "<queryID> <verdict>" resumes, refuses or drops it.
local filter = newNetworkEndpoint("{{FILTER}}")
local nextID = 0
addAction(QNameSuffixRule("async.example.org."), LuaAction(function(dq)
  local queryID = nextID
  nextID = (nextID + 1) % 65536
  if not dq:suspend(0, queryID, 300) then return DNSAction.None end
  -- The query goes to the filter with its ID replaced by the queryID it is held under.
  filter:send(string.char(math.floor(queryID / 256), queryID % 256) .. dq:getContent():sub(3))
  return DNSAction.Allow  -- once resumed: no further rule, on to the backend
end), {name="async filter"})
local function gotVerdict(endpointID, message, from)
  local id, verdict = message:match("^(%d+) (%a+)$")
  local ok, held = pcall(getAsynchronousObject, 0, tonumber(id))
  if not ok then return end  -- too late: the query timed out already
  if verdict == "drop" then held:drop() return end
  if verdict == "refuse" then held:setRCode(DNSRCode.REFUSED, true) end
  if verdict == "nxdomain" then held:setRCode(DNSRCode.NXDOMAIN, true) end
  held:resume()
end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint("{{LISTENER}}", 0, gotVerdict)
listener:start()

addResponseAction(AllRule(), SetMaxTTLResponseAction(300), {name="cap TTL 300"})
"""

# The filter's rules: see triodist.testing.component. Other names under async.example.org.
# are allowed.
DEMO_FILTER_RULES = """\
allow   www.async.example.org.
block   ads.async.example.org.       # REFUSED
drop    tracker.async.example.org.
ignore  slow.async.example.org.      # no answer: triodist's 300 ms timeout decides
"""

# The backend's zone: the built-in one, and names under async.example.org.
DEMO_ZONE = DEFAULT_ZONE + "*.async  IN A     192.0.2.80\n"

ARROW = "→"

# How a held query ended, from the filter's verdict.
_RESUMED = {"allow": "resumed", "refuse": "refused", "nxdomain": "NXDOMAIN"}

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
    ("www.async.example.org.", "A", False),
    ("ads.async.example.org.", "A", False),
    ("tracker.async.example.org.", "A", False),
    ("slow.async.example.org.", "A", False),
]

#: How long the client waits for an answer the server has not dropped.
_WAIT = 1.5


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


def _dropped(stats: Counter[str]) -> int:
    """Queries the server has dropped, by a rule or by the filter."""
    return stats["rule-drop"] + stats["async-dropped"]


async def _ask_unless_dropped(
    server: DNSServer, addr: tuple[str, int], name: str, qtype: str, tcp: bool
) -> dns.message.Message | None:
    """The reply, or ``None`` as soon as the server has dropped the query (or after _WAIT)."""
    reply = None
    dropped = _dropped(server.stats)
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            nonlocal reply
            reply = await _ask(addr, name, qtype, tcp)
            nursery.cancel_scope.cancel()

        nursery.start_soon(ask)
        with trio.move_on_after(_WAIT):
            # The server's counters have no event to wait on: poll them.
            while _dropped(server.stats) == dropped:  # noqa: ASYNC110
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    return reply


def _async_outcome(stats: Counter[str], filtered: Counter[str]) -> str:
    """How a held query ended, from the changes in the server's and the filter's counters."""
    if stats["async-timeouts"]:
        return f"suspended {ARROW} timed out (fail-open)"
    if stats["async-dropped"]:
        return f"suspended {ARROW} dropped"
    if stats["async-resumed"]:
        verdict = next((v for v in _RESUMED if filtered[v]), "allow")
        return f"suspended {ARROW} {_RESUMED[verdict]}"
    return "suspended"


async def run_queries(
    server: DNSServer, addr: tuple[str, int], filter_stats: Counter[str] | None = None
) -> list[Row]:
    """Send the demo queries one by one; find the rule that fired from the match counters.

    A query rule that suspended the query is followed by how the query ended, found from the
    ``async-*`` counters and from the filter's own counters (``filter_stats``).
    """
    chains = server.config.chains
    query_rules = list(chains.queries.rules)
    rules = [*query_rules, *chains.responses.rules]
    filtered = filter_stats if filter_stats is not None else Counter[str]()
    rows = []
    for name, qtype, tcp in DEMO_QUERIES:
        before = [rule.matches for rule in rules]
        stats_before, filtered_before = server.stats.copy(), filtered.copy()
        start = trio.current_time()
        reply = await _ask_unless_dropped(server, addr, name, qtype, tcp)
        latency = None if reply is None else (trio.current_time() - start) * 1000
        fired = [
            r.name or str(r.action) for r, b in zip(rules, before, strict=True) if r.matches > b
        ]
        if server.stats["async-suspended"] > stats_before["async-suspended"]:
            # The suspending action returned Allow: it is the last query rule that fired.
            fired_queries = sum(r.matches > b for r, b in zip(query_rules, before, strict=False))
            outcome = _async_outcome(server.stats - stats_before, filtered - filtered_before)
            fired[fired_queries - 1] += f": {outcome}"
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


def _printable(text: str, out: TextIO) -> str:
    """``text``, with the arrow spelt "->" if ``out`` cannot encode it (a Latin-1 terminal)."""
    try:
        text.encode(out.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return text.replace(ARROW, "->")
    return text


def print_table(rows: list[Row], out: TextIO) -> None:
    headers = ("Query", "Via", "Rule(s) that fired", "Answer", "Latency")
    cells = [
        (
            r.query,
            r.transport,
            _printable(r.rule, out),
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
    backend = AuthServer(DEMO_ZONE)
    rules = asyncfilter.parse_rules(DEMO_FILTER_RULES, "demo filter rules")
    filter_stats: Counter[str] = Counter()
    with (
        tempfile.TemporaryDirectory(prefix="triodist-demo-") as tmp,
        asyncfilter.bind_datagram_socket(Path(tmp) / "filter.sock") as filter_socket,
    ):
        filter_path, listener_path = Path(tmp) / "filter.sock", Path(tmp) / "triodist.sock"
        async with trio.open_nursery() as nursery:
            bhost, bport = await nursery.start(backend.serve, "127.0.0.1", 0)
            nursery.start_soon(asyncfilter.serve, filter_socket, listener_path, rules, filter_stats)
            path = Path(tmp) / "demo-rules.lua"
            config_text = (
                DEMO_CONFIG.replace("{{BACKEND}}", f"{bhost}:{bport}")
                .replace("{{FILTER}}", str(filter_path))
                .replace("{{LISTENER}}", str(listener_path))
            )
            path.write_text(config_text)
            lua = LuaConfig()
            lua.run_file(path)
            config = lua.api.config
            config.listens[:] = [Listen("127.0.0.1:0")]
            server = DNSServer(config)
            bound = await nursery.start(server.run)
            addr = bound[0]
            print(
                f"triodist demo: backend on {bhost}:{bport}, triodist on {addr[0]}:{addr[1]}, "
                f"async filter on {filter_path}\n",
                file=out,
            )
            print("Configuration:\n", file=out)
            for config_line in config_text.splitlines():
                print("    " + config_line, file=out)
            print("\nThe async filter's rules (triodist.testing.component):\n", file=out)
            for rule_line in DEMO_FILTER_RULES.splitlines():
                print("    " + rule_line, file=out)
            print(file=out)
            rows = await run_queries(server, addr, filter_stats)
            print_table(rows, out)
            stats = server.stats
            print(
                f"\n{stats['queries']} queries, {stats['responses']} answered by the backend, "
                f"{stats['self-answered']} answered by rules, {_dropped(stats)} dropped.",
                file=out,
            )
            print(
                f"Async: {stats['async-suspended']} suspended, {stats['async-resumed']} resumed, "
                f"{stats['async-dropped']} dropped, {stats['async-timeouts']} timed out, "
                f"{stats['async-collisions']} collisions, {stats['async-over-bound']} over the "
                f"bound; the filter received {filter_stats['received']} and answered "
                f"{sum(filter_stats[v] for v in asyncfilter.VERDICTS)}.",
                file=out,
            )
            server.request_shutdown()
            await server.wait_stopped()
            nursery.cancel_scope.cancel()
    return 0


async def serve_backends(addresses: Sequence[tuple[str, int]], out: TextIO) -> int:
    """``triodist demo --backend ADDR...``: the demo's authoritative server (example.org.,
    UDP and TCP) on each address, until SIGINT or SIGTERM; a stand-in for real resolvers
    when trying a configuration (docs/tutorial/first-rules.md, "Quick start with a real
    rules.lua")."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for host, port in addresses:
                bound = await nursery.start(AuthServer(DEMO_ZONE).serve, host, port)
                print(f"Serving example.org. on {bound[0]}:{bound[1]}", file=out, flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0


def run_backends(addresses: Sequence[str]) -> int:
    try:
        parsed = [split_host_port(address, 53) for address in addresses]
    except ValueError as exc:
        print(f"Invalid address: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(serve_backends, parsed, sys.stdout)
    except* OSError as group:  # the address is in use, or not this host's
        for error in group.exceptions:
            print(f"Unable to start: {error}", file=sys.stderr)
    return 1


def run_demo() -> int:
    # The table is the output; the server's own INFO lines would only interleave with it.
    logging.getLogger("triodist").setLevel(logging.WARNING)
    return trio.run(demo, sys.stdout)
