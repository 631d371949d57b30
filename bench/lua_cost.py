"""What a Lua rule costs per query, piece by piece (the figures of bench/lua-cost.md).

    python -m bench.lua_cost                   # every item, timed (about 30 s)
    python -m bench.lua_cost --quick           # fewer and shorter repeats (about 10 s)
    python -m bench.lua_cost --only rule       # the items whose name starts with "rule"
    python -m bench.lua_cost --instructions    # instructions per item under valgrind:
                                               # deterministic, unlike the times (about 6 min)
    python -m bench.lua_cost --server          # instructions per query of a whole server,
                                               # no-cache against lua (about 2 min)
    python -m bench.lua_cost --server --functions   # the same under callgrind, with the
                                               # share of a few functions (about 5 min)

The items run in this process, inside ``trio.run`` as the server's code does, against the
same Lua function as the benchmark's ``lua`` scenario (``function(dq) return DNSAction.None,
"" end``).  A time is the best of several repeats of a loop, minus the loop's own cost (the
``loop`` item); the machine this runs on is shared, and the best repeat is the one least
disturbed.  ``--instructions`` runs each item's loop under ``valgrind --tool=cachegrind``
twice, with two iteration counts, and divides the difference in instructions by the
difference in iterations: start-up costs cancel out and the count does not depend on what
else the machine does.

Items called "as before" call the Lua function the way triodist did before
``triodist/rules/luaview.py``: with the ``DNSQuestion`` itself as the argument and the
result read by ``lua_verdict`` (``OldLuaAction`` below is that code).

``--server`` starts knotd (the benchmark's backend) and the proxy under cachegrind with the
``no-cache`` and ``lua`` configurations of ``bench/configs``, sends it a fixed number of
queries from one loopback socket (20 in flight), twice (``--queries`` and five times that),
and reports instructions per query.  With ``--functions`` the proxy runs under callgrind
instead, and the inclusive instructions per query of a few functions are shown as well
(``FUNCTIONS``): Python's garbage collector, the GIL, ``EnumType.__getattr__``, Lua.

Loopback only.  Every loop has a fixed number of iterations and every wait a time limit.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import trio

from triodist.config.api import ConfigAPI
from triodist.config.runtime import LUPA, LuaConfig
from triodist.query.pipeline import Pipeline
from triodist.rules.actionbase import QueryAction, lua_verdict
from triodist.rules.verdicts import Action, Verdict
from triodist.wire.message import DNSQuestion

ROOT = Path(__file__).resolve().parent.parent
RULE = 'function(dq) return DNSAction.None, "" end'
WIRE = dns.message.make_query("h1.bench.test.", "A").to_wire()
REMOTE, LOCAL = ("127.0.0.1", 53000), ("127.0.0.1", 53)
IN_FLIGHT = 100  # queries kept alive at once in the "kept" items, as dnsperf -q 100
GARBAGE = 60  # objects tracked by the garbage collector made per query in the "kept" items


class OldLuaAction(QueryAction):
    """LuaAction as it was before the views: the query itself is the argument."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def __call__(self, dq: DNSQuestion) -> Verdict:
        return lua_verdict(self.func(dq), Action.None_)


class Plain:
    """A Python object with nothing in it."""


def new_dq() -> DNSQuestion:
    return DNSQuestion(WIRE, REMOTE, LOCAL)


# --- the items ------------------------------------------------------------------------
#
# Each item is made by a function that returns what one iteration runs (a callable of no
# argument); items are made inside trio.run, one at a time, with a fresh Lua state.


def _lua(**options: Any) -> Any:
    return LUPA.LuaRuntime(**options) if options else LuaConfig().lua


def _pipeline(
    conf: str, replace: Callable[[Any, LuaConfig], Any] | None = None, lua_setting: str = ""
) -> Pipeline:
    lua = LuaConfig(ConfigAPI())
    lua.run_string(conf, "lua_cost")
    if lua_setting:
        lua.lua.execute(lua_setting)
    cfg = lua.api.config
    if replace is not None:
        for rule in cfg.chains.queries.rules:
            rule.action = replace(rule.action, lua)
    # The configuration's rings, as the server hands them over: every query is recorded.
    return Pipeline(cfg.chains, cfg.routing, cfg.settings, cfg.async_registry, recorder=cfg.rings)


def _run_rules(pipe: Pipeline) -> Callable[[DNSQuestion], Any]:
    run = pipe.run_query_rules

    def rules(dq: DNSQuestion) -> Any:
        outcome = run(dq)
        if hasattr(outcome, "send"):  # a coroutine: a version whose rules are awaited
            try:
                outcome.send(None)
            except StopIteration as done:
                return done.value
        return outcome

    return rules


LUA_RULE = f"addAction(AllRule(), LuaAction({RULE}))"


def _old(action: Any, lua: LuaConfig) -> Any:
    return OldLuaAction(action.func)


def _old_finalised(action: Any, lua: LuaConfig) -> Any:
    # As before, but the userdata's finaliser (lupa's __gc) runs as soon as the call
    # returns: lupa forgets the query then instead of when Lua's collector gets to it.
    release = lua.lua.execute(
        "local gc = getmetatable(python.none).__gc\n"
        "return function(f) return function(dq) local a, b = f(dq) gc(dq) return a, b end end"
    )
    return OldLuaAction(release(action.func))


def item_loop() -> Callable[[], Any]:
    return lambda: None


def item_make_dq() -> Callable[[], Any]:
    return new_dq


def item_call_no_argument() -> Callable[[], Any]:
    f = _lua().eval("function() end")
    return lambda: f()


def item_call_int() -> Callable[[], Any]:
    f = _lua().eval(RULE)
    return lambda: f(1)


def item_call_same_object() -> Callable[[], Any]:
    f, obj = _lua().eval(RULE), Plain()
    return lambda: f(obj)


def item_call_same_dq() -> Callable[[], Any]:
    f, dq = _lua().eval(RULE), new_dq()
    return lambda: f(dq)


def item_call_new_object() -> Callable[[], Any]:
    f = _lua().eval(RULE)
    return lambda: f(Plain())


def item_call_new_dq() -> Callable[[], Any]:
    f = _lua().eval(RULE)
    return lambda: f(new_dq())


def item_call_bound() -> Callable[[], Any]:
    from triodist.rules.luaview import view_of

    lua = _lua()
    view = view_of(new_dq())
    g = lua.execute("local f, dq = ... return function() return f(dq) end", lua.eval(RULE), view)
    return lambda: g()


def item_call_one_result() -> Callable[[], Any]:
    g = _lua().eval("function() return DNSAction.None end")
    return lambda: g()


def item_call_string_latin1() -> Callable[[], Any]:
    g = _lua(encoding="latin-1").eval('function() return 3, "192.0.2.1" end')
    return lambda: g()


def item_call_string_bytes() -> Callable[[], Any]:
    g = _lua(encoding=None).eval('function() return 3, "192.0.2.1" end')
    return lambda: g()


def item_call_unpack_tuples_off() -> Callable[[], Any]:
    f = _lua(encoding="latin-1", unpack_returned_tuples=False).eval(
        RULE.replace("DNSAction.None", "10")
    )
    return lambda: f(1)


def item_call_idle_thread() -> Callable[[], Any]:
    f = _lua().eval(RULE)
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    return lambda: f(1)


class _Busy:
    """One iteration of call.int while another thread runs Python code; close() stops it."""

    def __init__(self) -> None:
        self.f = _lua().eval(RULE)
        self.running = True
        threading.Thread(target=self._spin, daemon=True).start()

    def _spin(self) -> None:
        n = 0
        while self.running:
            n += 1

    def __call__(self) -> Any:
        return self.f(1)

    def close(self) -> None:
        self.running = False


def item_call_busy_thread() -> Callable[[], Any]:
    return _Busy()


def item_verdict_before() -> Callable[[], Any]:
    result = (10, "")
    return lambda: lua_verdict(result, Action.None_)


def item_enum_member() -> Callable[[], Any]:
    return lambda: Action.None_


def item_rule_none() -> Callable[[], Any]:
    rules = _run_rules(_pipeline(""))
    return lambda: rules(new_dq())


def item_rule_none_action() -> Callable[[], Any]:
    rules = _run_rules(_pipeline("addAction(AllRule(), NoneAction())"))
    return lambda: rules(new_dq())


def item_rule_lua_action() -> Callable[[], Any]:
    rules = _run_rules(_pipeline(LUA_RULE))
    return lambda: rules(new_dq())


def item_rule_lua_action_before() -> Callable[[], Any]:
    rules = _run_rules(_pipeline(LUA_RULE, _old))
    return lambda: rules(new_dq())


def item_rule_lua_rule() -> Callable[[], Any]:
    rules = _run_rules(_pipeline("addAction(LuaRule(function(dq) return false end), DropAction())"))
    return lambda: rules(new_dq())


def _kept(
    conf: str, replace: Callable[[Any, LuaConfig], Any] | None = None, lua_setting: str = ""
) -> Callable[[], Any]:
    """Queries as a server has them: IN_FLIGHT alive at once, each with GARBAGE objects
    tracked by the garbage collector (its task, frames, ...), then dropped."""
    rules = _run_rules(_pipeline(conf, replace, lua_setting))
    ring: collections.deque[Any] = collections.deque(maxlen=IN_FLIGHT)

    def one() -> None:
        dq = new_dq()
        rules(dq)
        ring.append((dq, [{} for _ in range(GARBAGE)]))

    return one


def item_kept_none() -> Callable[[], Any]:
    return _kept("")


def item_kept_lua_action() -> Callable[[], Any]:
    return _kept(LUA_RULE)


def item_kept_lua_action_before() -> Callable[[], Any]:
    return _kept(LUA_RULE, _old)


def item_kept_lua_action_before_gc_off() -> Callable[[], Any]:
    one = _kept(LUA_RULE, _old)
    gc.disable()
    return one


def item_kept_lua_action_before_lua_pause_100() -> Callable[[], Any]:
    return _kept(LUA_RULE, _old, "collectgarbage('setpause', 100)")


def item_kept_lua_action_before_lua_gc_stopped() -> Callable[[], Any]:
    return _kept(LUA_RULE, _old, "collectgarbage('stop')")


def item_kept_lua_action_before_finalised() -> Callable[[], Any]:
    return _kept(LUA_RULE, _old_finalised)


def _reading(body: str, old: bool) -> Callable[[], Any]:
    lua = LuaConfig(ConfigAPI())
    lua.run_string(f"action = LuaAction(function(dq) {body} return DNSAction.None end)", "x")
    action = lua.lua.globals().action
    if old:
        action = OldLuaAction(action.func)
    return lambda: action(new_dq())


def item_read_nothing() -> Callable[[], Any]:
    return _reading("", False)


def item_read_qtype() -> Callable[[], Any]:
    return _reading("local t = dq.qtype", False)


def item_read_qname() -> Callable[[], Any]:
    return _reading("local n = dq.qname:toString()", False)


def item_read_tag() -> Callable[[], Any]:
    return _reading('local t = dq:getTag("a")', False)


def item_read_header() -> Callable[[], Any]:
    return _reading("local rd = dq.dh:getRD()", False)


def item_read_nothing_before() -> Callable[[], Any]:
    return _reading("", True)


def item_read_qtype_before() -> Callable[[], Any]:
    return _reading("local t = dq.qtype", True)


def item_read_qname_before() -> Callable[[], Any]:
    return _reading("local n = dq.qname:toString()", True)


def item_read_tag_before() -> Callable[[], Any]:
    return _reading('local t = dq:getTag("a")', True)


def item_read_header_before() -> Callable[[], Any]:
    return _reading("local rd = dq.dh:getRD()", True)


ITEMS: dict[str, tuple[str, Callable[[], Callable[[], Any]]]] = {
    name[len("item_") :].replace("_", "."): (str(fn.__doc__ or ""), fn)
    for name, fn in list(globals().items())
    if name.startswith("item_") and callable(fn)
}

DESCRIPTIONS = {
    "loop": "the measuring loop itself (subtracted from the others)",
    "make.dq": "DNSQuestion(...) from a query's bytes",
    "call.no.argument": "a Lua function: no argument, no result",
    "call.int": "the rule's function, an int argument",
    "call.same.object": "the rule's function, the same Python object every call",
    "call.same.dq": "the rule's function, the same DNSQuestion every call",
    "call.new.object": "the rule's function, a new Python object every call (with making it)",
    "call.new.dq": "the rule's function, a new DNSQuestion every call (with making it)",
    "call.bound": "the rule's function through a closure holding the view (how it is now)",
    "call.one.result": "a function returning one value (DNSAction.None)",
    "call.string.latin1": 'a function returning 3, "192.0.2.1", strings as latin-1 text',
    "call.string.bytes": 'a function returning 3, "192.0.2.1", strings as bytes',
    "call.unpack.tuples.off": "call.int in a LuaRuntime with unpack_returned_tuples=False",
    "call.idle.thread": "call.int with another thread alive (waiting on an Event)",
    "call.busy.thread": "call.int with another thread running Python code (mean of 2000)",
    "verdict.before": "lua_verdict((10, ''), Action.None_), as LuaAction read a result",
    "enum.member": "reading Action.None_ (an IntEnum member)",
    "rule.none": "new query, query rules run, no rule",
    "rule.none.action": "... one rule: AllRule() -> NoneAction()",
    "rule.lua.action": "... one rule: AllRule() -> LuaAction(rule's function)",
    "rule.lua.action.before": "... the same, LuaAction as before",
    "rule.lua.rule": "... one rule: LuaRule(function(dq) return false end) -> DropAction()",
    "kept.none": "a query kept alive as a server does (100 in flight), no rule",
    "kept.lua.action": "... with the LuaAction",
    "kept.lua.action.before": "... with the LuaAction as before",
    "kept.lua.action.before.gc.off": "... as before, Python's garbage collector off",
    "kept.lua.action.before.lua.pause.100": "... as before, collectgarbage('setpause', 100)",
    "kept.lua.action.before.lua.gc.stopped": "... as before, collectgarbage('stop')",
    "kept.lua.action.before.finalised": "... as before, lupa's finaliser run after each call",
    "read.nothing": "LuaAction on a new query, reading nothing",
    "read.qtype": "... reading dq.qtype",
    "read.qname": "... dq.qname:toString()",
    "read.tag": '... dq:getTag("a")',
    "read.header": "... dq.dh:getRD()",
    "read.nothing.before": "LuaAction as before on a new query, reading nothing",
    "read.qtype.before": "... reading dq.qtype",
    "read.qname.before": "... dq.qname:toString()",
    "read.tag.before": '... dq:getTag("a")',
    "read.header.before": "... dq.dh:getRD()",
}


#: Items timed as a mean over a fixed number of calls, and items that mean nothing under
#: valgrind (which runs one thread at a time).
SLOW = {"call.busy.thread"}
TIMES_ONLY = {"call.busy.thread"}

# --- timing ---------------------------------------------------------------------------


def _loop(op: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        op()
    return time.perf_counter() - start


def _gc_counter() -> tuple[list[int], Callable[[str, dict[str, int]], None]]:
    counts = [0, 0, 0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    return counts, callback


async def _time_items(names: list[str], quick: bool) -> None:
    repeats, budget = (3, 0.1) if quick else (7, 0.25)
    base = None
    print(f"{'item':<42} {'µs':>8}  {'gc 0/1/2 per 1000':>18}  what")
    for name in ["loop", *names]:
        op = ITEMS[name][1]()
        if name in SLOW:
            # Not the best of several repeats: the thread's effect comes and goes, and
            # the mean over a fixed number of calls is what a server would see.
            await trio.sleep(0.05)
            n, repeats_here = 2000, 1
        else:
            for _ in range(200):
                op()  # warm up: first uses, Lua's JIT
            n, repeats_here = 1000, repeats
            while _loop(op, n) < budget / 5 and n < 10_000_000:
                n *= 2
        counts, callback = _gc_counter()
        gc.callbacks.append(callback)
        best = min(_loop(op, n) for _ in range(repeats_here)) / n * 1e6
        gc.callbacks.remove(callback)
        gc.enable()
        if base is None:
            base = best
        if name == "loop" and name not in names:
            continue
        shown = best if name == "loop" else best - base
        per_k = "/".join(f"{c * 1000 / (n * repeats_here):.1f}" for c in counts)
        print(f"{name:<42} {shown:8.3f}  {per_k:>18}  {DESCRIPTIONS.get(name, '')}")
        getattr(op, "close", lambda: None)()
        del op
        gc.collect()


# --- instruction counts ---------------------------------------------------------------


def _valgrind_ir(argv: list[str], out: Path, env: dict[str, str] | None = None) -> int:
    subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
            *argv,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
        env=env,
    )
    match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no summary in {out}")
    return int(match.group(1))


def _instructions(names: list[str], small: int, large: int) -> None:
    print(f"{'item':<42} {'instructions':>12}  what")
    with tempfile.TemporaryDirectory() as tmp:
        counts: dict[str, float] = {}
        for name in ["loop", *names]:
            irs = []
            for n in (small, large):
                out = Path(tmp) / f"{name}.{n}"
                argv = [sys.executable, "-m", "bench.lua_cost", "--run-item", name, str(n)]
                irs.append(_valgrind_ir(argv, out, dict(os.environ, PYTHONPATH=str(ROOT))))
            counts[name] = (irs[1] - irs[0]) / (large - small)
            if name == "loop" and name not in names:
                continue
            shown = counts[name] - (0 if name == "loop" else counts["loop"])
            print(f"{name:<42} {shown:12,.0f}  {DESCRIPTIONS.get(name, '')}", flush=True)


async def _run_item(name: str, n: int) -> None:
    op = ITEMS[name][1]()
    for _ in range(200):
        op()
    _loop(op, n)


# --- a whole server under valgrind ------------------------------------------------------


#: With --functions: the C functions whose inclusive instructions are shown per query.
FUNCTIONS = {
    "gc_collect_main": "Python's cyclic garbage collector",
    "slot_tp_getattr_hook": "a class's __getattr__ (EnumType's, for IntEnum members)",
    "PyEval_SaveThread": "GIL released",
    "PyEval_RestoreThread": "GIL taken back",
    "lua_pcall": "Lua code, lupa's protected call",
}


def _server(queries: int, functions: bool) -> None:
    from .backend import start_knot
    from .procs import Pinning, ProcessSet, free_port, wait_until_answering
    from .proxies import TRIODIST_PROXY, render_config
    from .scenarios import SCENARIOS
    from .tools import KNOTC, KNOTD, require

    paths = require([KNOTD, KNOTC])
    # The proxy runs this tree's triodist, not an installed one.
    os.environ["PYTHONPATH"] = str(ROOT)
    tool = "callgrind" if functions else "cachegrind"
    options = [] if functions else ["--cache-sim=no"]
    print(f"instructions per query of the proxy, {queries:,} and {5 * queries:,} queries")
    with tempfile.TemporaryDirectory() as tmp, ProcessSet() as processes:
        work = Path(tmp)
        knot = start_knot(
            processes,
            Pinning.choose(None, enabled=False),
            work,
            knotd=paths["knotd"],
            knotc=paths["knotc"],
        )
        results: dict[str, dict[str, float]] = {}
        for scenario in ("no-cache", "lua"):
            counts = []
            for count in (queries, 5 * queries):
                port = free_port()
                conf = work / f"{scenario}.lua"
                conf.write_text(
                    render_config(
                        SCENARIOS[scenario], TRIODIST_PROXY, f"127.0.0.1:{port}", knot.address
                    )
                )
                out = work / f"{scenario}.{count}.out"
                argv = [
                    "valgrind", f"--tool={tool}", *options, f"--{tool}-out-file={out}",
                    sys.executable, "-m", "triodist", "serve", "--config", str(conf),
                ]  # fmt: skip
                running = processes.start("proxy", argv, log_path=work / f"{scenario}.log")
                wait_until_answering(running, "127.0.0.1", port, "probe.bench.test.", 300)
                answered = _send(port, count)
                os.kill(running.pid, signal.SIGTERM)
                running.popen.wait(timeout=300)
                counts.append((_counts(out, functions), answered))
            (small, n_small), (large, n_large) = counts
            results[scenario] = {
                key: (large.get(key, 0) - small.get(key, 0)) / (n_large - n_small) for key in large
            }
            print(f"  {scenario:<9} {results[scenario]['total']:12,.0f}", flush=True)
        added = results["lua"]["total"] - results["no-cache"]["total"]
        print(f"  {'lua - no-cache':<9} {added:12,.0f}")
        if functions:
            print(f"\n  {'of which (inclusive)':<24} {'no-cache':>9} {'lua':>9} {'diff':>9}")
            for name, what in FUNCTIONS.items():
                a, b = results["no-cache"].get(name, 0), results["lua"].get(name, 0)
                print(f"  {name:<24} {a:9,.0f} {b:9,.0f} {b - a:+9,.0f}  {what}")


def _counts(out: Path, functions: bool) -> dict[str, int]:
    """The run's total instructions and, with ``functions``, FUNCTIONS' inclusive ones."""
    text = out.read_text()
    match = re.search(r"^summary:\s+(\d+)", text, re.MULTILINE)
    if match is None:
        match = re.search(r"^totals:\s+(\d+)", text, re.MULTILINE)
    assert match, out
    counts = {"total": int(match.group(1))}
    if functions:
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        for line in annotated.splitlines():
            found = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*?:(\w+)\s+\[", line)
            if found and found.group(2) in FUNCTIONS and found.group(2) not in counts:
                counts[found.group(2)] = int(found.group(1).replace(",", ""))
    return counts


def _send(port: int, count: int, window: int = 20) -> int:
    """Send ``count`` queries (100 names, over and over), ``window`` in flight; answers."""
    names = [dns.message.make_query(f"h{i}.bench.test.", "A").to_wire() for i in range(100)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sent = answered = 0
    try:
        while answered < count:
            while sent < count and sent - answered < window:
                wire = bytearray(names[sent % 100])
                struct.pack_into("!H", wire, 0, sent & 0xFFFF)
                sock.send(wire)
                sent += 1
            try:
                sock.recv(4096)
            except TimeoutError:
                break  # lost: counted out
            answered += 1
    finally:
        sock.close()
    return answered


# --- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter repeats")
    parser.add_argument("--only", action="append", default=[], help="items starting so")
    parser.add_argument("--instructions", action="store_true", help="count, under valgrind")
    parser.add_argument("--server", action="store_true", help="a whole server, under valgrind")
    parser.add_argument("--queries", type=int, default=4000, help="--server: queries (x1, x5)")
    parser.add_argument(
        "--functions", action="store_true", help="--server: under callgrind, by function"
    )
    parser.add_argument("--list", action="store_true", help="the items")
    parser.add_argument("--run-item", nargs=2, metavar=("ITEM", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_item:
        trio.run(_run_item, args.run_item[0], int(args.run_item[1]))
        return
    names = [n for n in ITEMS if n != "loop" and (not args.only or n.startswith(tuple(args.only)))]
    if args.list:
        for name in ITEMS:
            print(f"{name:<42} {DESCRIPTIONS.get(name, '')}")
        return
    if args.server:
        _server(args.queries, args.functions)
    elif args.instructions:
        _instructions([n for n in names if n not in TIMES_ONLY], 2_000, 12_000)
    else:
        trio.run(_time_items, names, args.quick)


if __name__ == "__main__":
    main()
