"""Held queries: memory per held query, and how late their timeouts fire.

    python -m bench.async_memory [--held 100000]                 # resident size
    python -m bench.async_memory --held 100000 --heap            # Python heap (tracemalloc)
    python -m bench.async_memory --held 10000 --breakdown        # where the bytes go
    python -m bench.async_memory --held 100000 --timeouts        # timeout lateness
    python -m bench.async_memory --held 150000 --timeouts --rate 2500 --timeout-ms 40000
                                                                 # ... in a steady state

A triodist server runs in this process with a rule that suspends every query under a key
of its own (a counter, so that more than 65,536 can be held); one client socket sends N
queries in bursts of 100, each burst once the previous one is suspended, so that no
datagram is lost. The bound on held queries (``setMaxSuspended``) and on UDP queries in
flight (``Settings.max_udp_in_flight``, which has no configuration function) are raised to
N for the run.

- Memory (the default): once all N are held, the process's resident size (or, with
  ``--heap``, the Python heap as tracemalloc sees it) is compared with what it was before
  the first query. Then every query is answered (``setRCode`` + ``resume``), so the run
  also checks that all N come back.
- ``--breakdown``: tracemalloc snapshots before and after, compared and grouped by file and
  line; the sizes (``sys.getsizeof``) of the parts of one held query: its task and
  coroutine frames, the cancel scope, the Event, the registry entry, the DNSQuestion; and
  how many objects the garbage collector tracks per held query.
- ``--timeouts``: the queries are sent at ``--rate`` a second and nothing resumes them;
  each is suspended for ``--timeout-ms`` (by default long enough for all N to be held at
  once when the first deadline comes), so the deadlines come at the rate the queries came.
  The timeout policy is ``servfail``, so a timed-out query is answered at once. For each
  one: how long after its deadline its task woke (the server's view) and how long after
  its deadline the client had the answer (the user's view), with the real clock (median,
  99th percentile, maximum); and the garbage collections meanwhile, since a full one stops
  everything. With a timeout shorter than the sending takes, queries arrive and time out
  at once (a steady state); ``--gc-freeze`` then shows what ``gc.freeze()`` once a second
  changes.

Loopback only; bounded by --held and by time limits on every wait.
"""

from __future__ import annotations

import argparse
import gc
import linecache
import os
import socket
import struct
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from triodist.asyncproc.registry import Ending, HeldState
from triodist.cli import load, tune_garbage_collector
from triodist.config.runtime import LuaConfig
from triodist.server import DNSServer
from triodist.testing.backend import AuthServer

# Keys from a counter: the DNS ID alone repeats past 65,536 queries.
CONFIG = """
newServer{address="%(backend)s", healthCheckMode="up"}
setMaxSuspended(%(bound)d)
setAsyncTimeoutPolicy("%(policy)s")
local count = 0
function hold(dq)
  dq:suspend(math.floor(count / 65536), count %% 65536, %(timeout)s)
  count = count + 1
  return DNSAction.Allow
end
addAction(AllRule(), LuaAction(hold))
"""

BURST = 100
#: The registry's method a held query's task waits in; ``--timeouts`` wraps it to time the
#: wake-ups.
WAIT_METHOD = "wait_for_ending"


def rss_kib() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def make_queries(count: int) -> list[bytes]:
    """Query ``n`` asks for ``q<n>.example.org A`` (RD set, no EDNS): its number is in its
    first label. Written directly (dnspython would take 100 µs a query)."""
    wires = []
    for n in range(count):
        label = b"q%d" % n
        wires.append(
            struct.pack("!HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 0)
            + bytes([len(label)])
            + label
            + b"\x07example\x03org\x00\x00\x01\x00\x01"
        )
    return wires


def query_number(name: bytes | bytearray) -> int:
    """The number of query ``q<n>.example.org``, from its name in wire format."""
    return int(name[2 : 1 + name[0]])


class Run:
    """A server holding the queries it is sent, and a client socket connected to it."""

    def __init__(self, lua: LuaConfig, server: DNSServer, client: socket.socket) -> None:
        self.lua = lua
        self.server = server
        self.registry = lua.api.config.async_registry
        self.client = client

    def lua_kib(self) -> float:
        return float(self.lua.lua.eval('collectgarbage("count")'))

    async def hold(self, wires: list[bytes], limit: float, rate: float = 0) -> None:
        """Send ``wires`` in bursts of ``BURST``, each once the previous one is suspended.
        With a ``rate``: in bursts of a millisecond's worth, ``rate`` queries a second,
        and at most ``BURST`` not yet suspended; after a pause of the process (a garbage
        collection) only 5 ms worth of the queries due meanwhile are sent at once, so
        that the deadlines stay as evenly spread as the arrivals."""
        stats = self.registry.stats
        base = stats["async-suspended"]
        burst, behind = (max(1, round(rate / 1000)), BURST) if rate else (BURST, 0)
        due = trio.current_time()
        with trio.fail_after(limit):
            for start in range(0, len(wires), burst):
                if rate:
                    await trio.sleep_until(due)
                    due = max(due, trio.current_time() - 0.005) + burst / rate
                for wire in wires[start : start + burst]:
                    while True:
                        try:
                            self.client.send(wire)
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(self.client)
                # The datagrams are on their way through the kernel: nothing to wait on but
                # time.
                sent = min(start + burst, len(wires))
                while stats["async-suspended"] - base < sent - behind:  # noqa: ASYNC110
                    await trio.sleep(0.001)


@asynccontextmanager
async def serving(held: int, hold_ms: str, policy: str) -> AsyncIterator[Run]:
    """A server that holds every query for ``hold_ms`` (a Lua expression)."""
    async with trio.open_nursery() as nursery:
        backend = AuthServer(history=10)
        await nursery.start(backend.serve, "127.0.0.1", 0)
        assert backend.address is not None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rules.lua"
            path.write_text(
                CONFIG
                % {
                    "backend": f"{backend.address[0]}:{backend.address[1]}",
                    "bound": held + 10,
                    "policy": policy,
                    "timeout": hold_ms,
                }
            )
            lua = load(str(path), [], ["127.0.0.1:0"])
        # The garbage collector as ``triodist serve`` sets it.
        tune_garbage_collector()
        # Every held UDP query is a query in flight: the bound must let N of them in.
        lua.api.config.settings.max_udp_in_flight = held + 10
        server = DNSServer(lua.api.config)
        (address,) = await nursery.start(server.run)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        client.connect(address)
        client.setblocking(False)
        try:
            yield Run(lua, server, client)
        finally:
            client.close()
            server.request_shutdown()
            with trio.move_on_after(10):
                await server.wait_stopped()
            nursery.cancel_scope.cancel()


async def receive_all(
    sock: socket.socket, count: int, on_answer: Callable[[bytes, float], None]
) -> int:
    """Read answers until ``count`` have come; each goes to ``on_answer`` with the time it
    was read. Cancelled by the caller's time limit."""
    received = 0
    while received < count:
        await trio.lowlevel.wait_readable(sock)
        while received < count:
            try:
                wire = sock.recv(65535)
            except BlockingIOError:
                break
            on_answer(wire, trio.current_time())
            received += 1
    return received


async def resume_all(run: Run, held: int) -> int:
    """Answer every held query (REFUSED, by ``setRCode`` then ``resume``): how many came
    back to the client."""
    answered = 0

    def count(wire: bytes, when: float) -> None:
        nonlocal answered
        answered += 1

    async with trio.open_nursery() as inner:

        async def receive() -> None:
            with trio.move_on_after(60):
                await receive_all(run.client, held, count)
            inner.cancel_scope.cancel()

        inner.start_soon(receive)
        registry = run.registry
        for n, (async_id, query_id) in enumerate(list(registry.held)):
            # Answered by the resume itself, so the slow Python test backend does not
            # decide how many come back.
            obj = registry.take(async_id, query_id)
            obj.setRCode(5, False)
            obj.resume()
            if n % BURST == BURST - 1:
                await trio.sleep(0.002)
    return answered


async def measure_memory(held: int, trace: bool) -> dict[str, float]:
    async with serving(held, "600000", "continue") as run:
        wires = make_queries(held)
        gc.collect()
        if trace:
            tracemalloc.start()
        heap_before = tracemalloc.get_traced_memory()[0]
        rss_before = rss_kib()
        lua_before = run.lua_kib()
        started = time.monotonic()
        await run.hold(wires, limit=held / 1000 + 30)
        fill = time.monotonic() - started
        gc.collect()
        heap_after = tracemalloc.get_traced_memory()[0]
        rss_after = rss_kib()
        lua_after = run.lua_kib()
        tracemalloc.stop()
        answered = await resume_all(run, held)
    return {
        "held": held,
        "fill_seconds": fill,
        "heap_bytes_per_query": (heap_after - heap_before) / held,
        "rss_kib_growth": rss_after - rss_before,
        "rss_bytes_per_query": (rss_after - rss_before) * 1024 / held,
        "lua_bytes_per_query": (lua_after - lua_before) * 1024 / held,
        "answered": answered,
    }


# --- --breakdown -----------------------------------------------------------------------


def tracked_by_type() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("site-packages/", "/triodist/", "/bench/"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    text = linecache.getline(frame.filename, frame.lineno).strip()
    return f"{name}:{frame.lineno}  {text[:60]}"


def _sizes(run: Run) -> list[tuple[str, int]]:
    """``sys.getsizeof`` of the parts of one held query (one that has been held for a
    while: its task waits in ``Event.wait``)."""
    from triodist.asyncproc.registry import Held

    held: Held = next(iter(run.registry.held.values()))
    dq: Any = held.obj
    event = held.event
    (task,) = event._tasks
    parts: list[tuple[str, int]] = []
    size = sys.getsizeof
    parts.append(("Task object", size(task)))
    coro: Any = task.coro
    depth = 0
    while hasattr(coro, "cr_code") or hasattr(coro, "gi_code"):
        code = coro.cr_code if hasattr(coro, "cr_code") else coro.gi_code
        parts.append((f"  frame {depth}: {code.co_qualname}", size(coro)))
        coro = coro.cr_await if hasattr(coro, "cr_await") else coro.gi_yieldfrom
        depth += 1
    parts.append(("Task context (contextvars)", size(task.context)))
    abort = task._abort_func
    if abort is not None:
        closure = sum(size(cell) for cell in (abort.__closure__ or ()))
        parts.append(("Event.wait's abort_fn closure (function + cells)", size(abort) + closure))
    status = task._cancel_status
    scope = status._scope
    parts.append(("CancelScope", size(scope)))
    parts.append(("CancelStatus", size(status)))
    parts.append(("  its _children set", size(status._children)))
    parts.append(("  its _tasks set", size(status._tasks)))
    parts.append(("deadline heap entry (tuple + id)", size((0.0, 0, None)) + size(id(scope))))
    parts.append(("trio.Event", size(event)))
    parts.append(("  its _tasks set", size(event._tasks)))
    parts.append(("Held", size(held)))
    parts.append(("  key tuple", size(held.key)))
    parts.append(("  deadline, since (floats)", size(held.deadline) + size(held.since)))
    parts.append(("registry dict, per entry", size(run.registry.held) // len(run.registry.held)))
    parts.append(("DNSQuestion", size(dq)))
    if hasattr(dq, "__dict__"):
        # (Reading __dict__ makes the instance dict exist: only after measuring.)
        parts.append(("  its instance dict", size(dq.__dict__)))
    parts.append(("  data (bytearray)", size(dq.data)))
    parts.append(("  qname_wire (bytes)", size(dq.qname_wire)))
    tags = dq.__dict__.get("tags") if hasattr(dq, "__dict__") else getattr(dq, "_tags", None)
    if tags is not None:
        parts.append(("  tags dict", size(tags)))
    parts.append(("  remote (tuple + str + int)", size(dq.remote) + sum(map(size, dq.remote))))
    return parts


async def breakdown(held: int, top: int) -> None:
    async with serving(held + 1, "600000", "continue") as run:
        wires = make_queries(held + 1)
        # One query first, so that what is made once (code, caches, lists' growth) is
        # not counted.
        await run.hold(wires[:1], limit=10)
        gc.collect()
        tracked_before = tracked_by_type()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        lua_before = run.lua_kib()
        await run.hold(wires[1:], limit=held / 1000 + 30)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lua_after = run.lua_kib()
        tracked = tracked_by_type()
        tracked.subtract(tracked_before)
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
        total = sum(stat.size_diff for stat in diff)
        print(f"{held:,} more queries held; per held query:")
        print(f"{'bytes':>8} {'blocks':>6}  allocated at")
        shown = 0
        for stat in diff[:top]:
            where = _where(stat.traceback[0])
            print(f"{stat.size_diff / held:8.1f} {stat.count_diff / held:6.2f}  {where}")
            shown += stat.size_diff
        print(f"{(total - shown) / held:8.1f} {'':6}  (the other lines)")
        print(f"{total / held:8.1f} {'':6}  Python heap in all (tracemalloc)")
        print(f"{(lua_after - lua_before) * 1024 / held:8.1f} {'':6}  Lua heap (collectgarbage)")
        print()
        print("sys.getsizeof of the parts of one held query:")
        for name, size in _sizes(run):
            print(f"{size:8d}  {name}")
        print()
        count = sum(tracked.values())
        print(f"objects the garbage collector tracks, per held query: {count / held:.1f}")
        print(
            "  "
            + ", ".join(
                f"{name} {n / held:.2f}" for name, n in tracked.most_common() if n >= held / 2
            )
        )
        del before, after, diff
        started = time.perf_counter()
        gc.collect()
        print(f"a full collection now takes {(time.perf_counter() - started) * 1000:.0f} ms")
        answered = await resume_all(run, held + 1)
        print(f"\n{answered:,} of {held + 1:,} answered after resume")


# --- --timeouts ------------------------------------------------------------------------


class GCWatch:
    """The cyclic garbage collector's runs while it is installed: (generation, start,
    seconds), start on trio's clock. A full collection stops everything, timers included,
    for as long as it takes to visit every object the collector tracks."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, float, float]] = []
        self._start = 0.0

    def __enter__(self) -> GCWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._start = now
        else:
            # trio's clock is perf_counter plus an offset.
            offset = trio.current_time() - time.perf_counter()
            self.runs.append((info["generation"], self._start + offset, now - self._start))

    def summary(self, since: float, until: float = float("inf")) -> str:
        parts = []
        for generation in (0, 1, 2):
            times = [d for g, t, d in self.runs if g == generation and since <= t < until]
            if times:
                parts.append(f"gen{generation} {len(times):,}x, longest {max(times) * 1000:.1f} ms")
        return "; ".join(parts) or "none"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def freeze_every_second() -> None:
    """``gc.freeze()`` once a second: what has lived a second (the held queries) is left
    out of every later collection, so that no collection visits all of them."""
    while True:
        await trio.sleep(1)
        gc.freeze()


async def measure_timeouts(
    held: int, timeout_ms: int, rate: float, freeze: bool = False
) -> dict[str, Any]:
    """``held`` queries sent at ``rate`` a second, each suspended for ``timeout_ms``: the
    deadlines come at the rate the queries came, and from ``timeout_ms`` on, queries
    arrive and time out at once."""
    async with serving(held, str(timeout_ms), "servfail") as run:
        registry = run.registry
        wires = make_queries(held)
        deadlines: dict[int, float] = {}
        woke: list[float] = []
        seen: list[float] = []
        peak = 0
        # The query's task waits in this method; the wrapper below stands in for it on this
        # registry. Looked up on the class, so that a rename fails here rather than leaving
        # an instance attribute that nothing calls.
        if not callable(getattr(type(registry), WAIT_METHOD, None)):
            raise RuntimeError(
                f"{type(registry).__name__}.{WAIT_METHOD} is gone: the timing hook would never "
                "run; point WAIT_METHOD at the method a held query's task waits in"
            )
        wait: Callable[[Any], Awaitable[Ending]] = getattr(registry, WAIT_METHOD)

        async def timed_wait(obj: Any) -> Ending:
            # The bench's own wrapper around the registry's wait: notes the deadline, and
            # when the task woke after it.
            nonlocal peak
            peak = max(peak, len(registry.held))
            held_entry = obj.suspension
            deadlines[query_number(obj.qname_wire)] = held_entry.deadline
            ending = await wait(obj)
            if held_entry.state is HeldState.TIMED_OUT:
                woke.append(trio.current_time() - held_entry.deadline)
            return ending

        setattr(registry, WAIT_METHOD, timed_wait)

        def answered(wire: bytes, when: float) -> None:
            deadline = deadlines.get(query_number(wire[12:]))
            if deadline is not None:
                seen.append(when - deadline)

        started = trio.current_time()
        sending = held / rate
        with GCWatch() as collections:
            async with trio.open_nursery() as inner:

                async def receive() -> None:
                    with trio.move_on_after(timeout_ms / 1000 + 2 * sending + 30):
                        await receive_all(run.client, held, answered)
                    inner.cancel_scope.cancel()

                inner.start_soon(receive)
                if freeze:
                    inner.start_soon(freeze_every_second)
                await run.hold(wires, limit=2 * sending + 30, rate=rate)
                sent = trio.current_time()
        stats = dict(registry.stats)
        if stats.get("async-timeouts", 0) and not deadlines:
            # Queries timed out without passing through the wrapper: the figures would be
            # empty rather than wrong, so say so instead of printing "none".
            raise RuntimeError(
                f"the timing hook never ran: held queries no longer wait in "
                f"{type(registry).__name__}.{WAIT_METHOD}"
            )
        first_deadline = min(deadlines.values(), default=0.0)
    gc.unfreeze()
    return {
        "peak_held": peak,
        "sending_seconds": sent - started,
        "timeouts": stats.get("async-timeouts", 0),
        "woke": woke,
        "seen": seen,
        "gc_before": collections.summary(started, first_deadline),
        "gc_timeouts": collections.summary(first_deadline),
    }


def _ms(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 0.5) * 1000:.2f} ms, p99 {percentile(values, 0.99) * 1000:.2f}"
        f" ms, max {max(values) * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--held", type=int, default=100_000, help="queries to hold (default: 100,000)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--heap",
        action="store_true",
        help="measure the Python heap with tracemalloc (which inflates the resident size)",
    )
    mode.add_argument(
        "--breakdown",
        action="store_true",
        help="tracemalloc snapshots compared by file:line, and the sizes of the parts",
    )
    mode.add_argument(
        "--timeouts",
        action="store_true",
        help="let every held query time out; how late after its deadline each one went on",
    )
    parser.add_argument("--top", type=int, default=40, help="lines shown by --breakdown")
    parser.add_argument(
        "--timeout-ms",
        type=int,
        default=None,
        help="with --timeouts, each query's timeout (default: twice as long as sending them "
        "all takes, plus 2 s, so that all are held at once when the first deadline comes)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=5000,
        help="with --timeouts, queries sent a second (default: 5000)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="with --timeouts, gc.freeze() every second, so that no garbage collection "
        "visits all the held queries",
    )
    args = parser.parse_args()
    if args.held < 1:
        parser.error("--held must be at least 1")
    if args.breakdown:
        trio.run(breakdown, args.held, args.top)
        return
    if args.timeouts:
        if args.rate <= 0:
            parser.error("--rate must be above 0")
        if args.timeout_ms is None:
            # Longer than sending them all takes (with room for the process's own pauses).
            args.timeout_ms = int(args.held / args.rate * 2000) + 2000
        result = trio.run(measure_timeouts, args.held, args.timeout_ms, args.rate, args.gc_freeze)
        print(
            f"{args.held:,} queries sent at {args.rate:,.0f} a second (in "
            f"{result['sending_seconds']:.1f} s), each suspended for {args.timeout_ms:,} ms: "
            f"{result['peak_held']:,} held at once, {result['timeouts']:,} timed out"
        )
        woke, seen = result["woke"], result["seen"]
        print(f"  task woke after its deadline:     {_ms(woke)} ({len(woke):,})")
        print(f"  client had the answer after it:   {_ms(seen)} ({len(seen):,})")
        print(f"  garbage collections before:       {result['gc_before']}")
        print(f"  garbage collections in timeouts:  {result['gc_timeouts']}")
        return
    result = trio.run(measure_memory, args.held, args.heap)
    what = (
        f"{result['heap_bytes_per_query']:,.0f} bytes of Python heap per held query (tracemalloc)"
        if args.heap
        else f"resident size +{result['rss_kib_growth']:,.0f} KiB, "
        f"{result['rss_bytes_per_query']:,.0f} bytes per held query "
        f"(of which Lua heap {result['lua_bytes_per_query']:,.0f})"
    )
    print(
        f"{args.held:,} queries held at once (sent in {result['fill_seconds']:.1f} s): {what}; "
        f"{result['answered']:,.0f} of {args.held:,} answered after resume"
    )


if __name__ == "__main__":
    main()
