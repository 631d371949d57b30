"""A burst of held queries through the example filter, with the example's own timeout.

    python -m bench.async_burst [--burst 1000] [--runs 10] [--timeout-ms 500] [--no-save]

What ``tests/test_async_burst.py`` checks with a doubled timeout, measured as a user runs
it: ``examples/async-filter.lua`` in triodist (``python -m triodist serve``), every query
suspended and sent to ``examples/async_filter.py`` in its own process, whose verdicts
resume it.  For each run, fresh processes:

- a backend in its own process (``--backend PORT``, the test's: raw bytes, every query
  answered NOERROR with one A record, so that a query that went on unfiltered shows);
- the filter, with two rules: ``block blocked.wild.example.org`` (REFUSED) and ``nxdomain
  nx.wild.example.org``; a name under neither is allowed;
- triodist, on the example's configuration with its sockets in a private temporary
  directory, the backend's address, the timeout asked for (``--timeout-ms``, the
  example's 500 by default), ``setUDPSocketBufferSizes(4194304, 0)`` (the burst must
  reach it whole) and a console (``controlSocket``, ``setKey``) for its counters;

then, once triodist answers a probe through the filter, ``--burst`` queries (a third of
each kind) are sent from one UDP socket with nothing read in between, and every answer is
read until all are in or the timeout plus 3 s have passed.  Recorded per run: answers,
wrong verdicts (a blocked or NXDOMAIN name answered NOERROR went on unfiltered: it failed
open), triodist's ``async-*`` counters over the burst (``dumpStats()`` at the console,
before and after), each query's latency (from its own send to its answer: its wait in
triodist's receive buffer, its hold, and the way to the backend and back), for the allowed
names the time to their arrival at the backend (which stamps it: the hold is within it)
and from there to the client, the burst's length (first query sent to last answer), the
CPU time of triodist, the filter and the backend over the burst
(/proc/PID/stat), and the CPU time the machine spent on anything else meanwhile
(/proc/stat), since the figures hold only on a machine not busy otherwise.

dnsdist 1.7.3 is checked, not measured, unless it can run the example: the asynchronous
API (``dq:suspend``, ``newNetworkEndpoint``, ``newNetworkListener``,
``getAsynchronousObject``) came in dnsdist 1.8.  The check runs ``dnsdist --check-config``
on the same configuration, looks the functions up in its Lua, and asks a running dnsdist
whether a query object has ``suspend``.

Nothing is pinned: the processes share the machine's cores, as they would in use.  Every
wait is bounded, everything started stops with the run (SIGTERM, SIGKILL after 5 s), and
only loopback is used.  Unless ``--no-save``, the results go to
``bench/results/<date>-async-burst.json`` and a short ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import dns.message
import dns.name
import dns.query
import dns.rcode

from triodist.ops.console.settings import new_key
from triodist.testing.backend import answer_with_one_a
from triodist.wire.walk import question_end

from .procs import (
    BenchError,
    ProcessSet,
    Running,
    core_times,
    cpu_seconds,
    free_port,
    wait_until_answering,
)
from .tools import DNSDIST, find, load_average, machine, versions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "async-filter.lua"
FILTER = ROOT / "examples" / "async_filter.py"
RESULTS = Path(__file__).resolve().parent / "results"

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: triodist's UDP receive buffer (setUDPSocketBufferSizes), as in the test: the kernel
#: counts each datagram's bookkeeping, so the default 208 KiB holds 256 of these
#: queries and the rest of a burst of 1,000 would be lost before triodist reads them.
RECV_BUFFER = 4 << 20

RULES = """\
block blocked.wild.example.org
nxdomain nx.wild.example.org
"""

#: The kind of name -> the rcode of its verdict.  The backend answers every name NOERROR.
KINDS = {
    "blocked": dns.rcode.REFUSED,
    "nx": dns.rcode.NXDOMAIN,
    "allowed": dns.rcode.NOERROR,
}

#: Allowed by the filter, answered by the backend: answering it, triodist has its
#: endpoint, its listener and the filter working.
PROBE_NAME = "probe.wild.example.org."

#: triodist's counters read at the console, before and after each burst.
COUNTERS = (
    "received",
    "async-suspended",
    "async-resumed",
    "async-timeouts",
    "async-send-queued",
    "async-send-overflows",
    "async-send-failures",
    "frontend-overload-drops",
    "udp-send-errors",
)

#: The filter's counters, from the line it prints as it stops.
FILTER_COUNTERS = ("received", "allow", "refuse", "nxdomain", "queued", "unsent")

#: The bounds of the waits around a run, in seconds.
START_TIMEOUT = 20.0
CONSOLE_TIMEOUT = 20.0
DRAIN_MARGIN = 3.0  # after the suspension timeout, for the last answers
#: A burst starts once the cores were busy less than this share of a second (or once
#: ``--quiet-wait`` seconds have passed).
QUIET_SHARE = 0.05


# --- the backend (its own process) -----------------------------------------------------

#: The most arrival times a backend keeps (one per name; a run asks ``--burst`` names).
MAX_ARRIVALS = 100_000


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve_backend(port: int, arrivals_path: Path) -> int:
    """Answer every query on 127.0.0.1:``port`` until stopped (SIGTERM), or until the
    benchmark that started it is gone (it then has a new parent: nothing else would stop
    it); then write when each name first arrived (``time.monotonic()``, the system's
    monotonic clock, which the benchmark's process reads too) to ``arrivals_path``."""
    parent = os.getppid()
    arrivals: dict[bytes, float] = {}
    signal.signal(signal.SIGTERM, _stop)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # A whole burst of resumed queries arrives at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind(("127.0.0.1", port))
            sock.settimeout(1.0)
            while os.getppid() == parent:
                try:
                    data, peer = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                now = time.monotonic()
                answer = answer_with_one_a(data)
                if answer is None:
                    continue  # not a query: nothing to answer
                sock.sendto(answer, peer)
                if len(arrivals) < MAX_ARRIVALS:
                    arrivals.setdefault(data[12 : question_end(data) - 4], now)
    finally:
        # Names are made text only now: the burst is over.
        named = {dns.name.from_wire(wire, 0)[0].to_text(): at for wire, at in arrivals.items()}
        arrivals_path.write_text(json.dumps(named))
    return 0


# --- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    """What one burst gave."""

    run: int
    sent: int
    answered: int = 0
    unanswered: int = 0
    #: Blocked or NXDOMAIN names answered NOERROR: they went on unfiltered.
    failed_open: int = 0
    #: Any answer whose rcode is not its name's verdict (the failed-open ones included).
    wrong: int = 0
    wrong_examples: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: The allowed names only (the others are answered by triodist, unless they failed
    #: open): from the query sent to its arrival at the backend, which bounds its hold from
    #: above, and from there to the answer at the client.
    to_backend_ms: dict[str, float] = field(default_factory=dict)
    backend_to_client_ms: dict[str, float] = field(default_factory=dict)
    #: From the first query sent to the last answer received.
    burst_ms: float = 0.0
    #: How long sending the burst took (nothing is read meanwhile).
    send_ms: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    filter_counters: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: The wall time the CPU times above were read over: the burst sent to its last answer.
    window_s: float = 0.0
    load_average: list[float] = field(default_factory=list)
    #: How busy the machine's cores were in the second before the burst, and how long
    #: the run waited for that.
    busy_before: float = 0.0
    quiet_wait_s: float = 0.0


def example_config(
    directory: Path, listen: int, backend: int, timeout_ms: int, console: int, key: str
) -> str:
    """The example's configuration, rewritten as the test rewrites it (and checked to
    still be the example it was written for), with a console for the counters."""
    text = EXAMPLE.read_text()
    replaced = (
        text.replace("/tmp/triodist-async/", f"{directory}/")
        .replace('setLocal("127.0.0.1:5300")', f'setLocal("127.0.0.1:{listen}")')
        .replace('"127.0.0.1:5301"', f'"127.0.0.1:{backend}"')
        .replace("local timeoutMs = 500", f"local timeoutMs = {timeout_ms}")
    )
    code = [line for line in replaced.splitlines() if not line.lstrip().startswith("--")]
    expected = {
        str(directory): 2,
        f'setLocal("127.0.0.1:{listen}")': 1,
        f'"127.0.0.1:{backend}"': 1,
        f"local timeoutMs = {timeout_ms}": 1,
    }
    for needle, count in expected.items():
        if sum(needle in line for line in code) != count:
            raise BenchError(f"{EXAMPLE} changed: expected {count} line(s) with {needle!r}")
    return (
        replaced
        + f"\nsetUDPSocketBufferSizes({RECV_BUFFER}, 0)\n"
        + f'controlSocket("127.0.0.1:{console}")\n'
        + f'setKey("{key}")\n'
    )


def child_environment() -> None:
    """The programs started run this tree's triodist, whatever copy is installed: the
    filter's script, run by path, would otherwise import an installed one."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def commit() -> str:
    """The checkout's commit, and whether files differ from it (the tree measured)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if changed else head


def console_stats(port: int, key: str) -> dict[str, int]:
    """triodist's counters, from ``dumpStats()`` at its console (``triodist console``)."""
    argv = [sys.executable, "-m", "triodist", "console", "-c", f"127.0.0.1:{port}"]
    argv += ["-k", key, "-e", "dumpStats()"]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=CONSOLE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the console did not answer within {CONSOLE_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"the console failed ({done.returncode}): {done.stderr.strip()}")
    return {name: int(value) for name, value in re.findall(r"(\S+)\s+(\d+)", done.stdout)}


def wait_for_line(running: Running, text: str, timeout: float = START_TIMEOUT) -> None:
    """Until ``text`` is in the process's output (the filter prints it once it listens)."""
    deadline = time.monotonic() + timeout
    while text not in running.log_tail():
        if not running.alive():
            raise BenchError(f"{running.name} exited:\n{running.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{running.name}: no '{text}' within {timeout:g} s")
        time.sleep(0.02)


def burst_queries(size: int) -> tuple[list[bytes], dict[int, tuple[str, int]]]:
    """``size`` queries, IDs 0 to size-1, the kinds in turn; and each ID's name and rcode."""
    if not 0 < size <= 65536:
        raise BenchError(f"--burst: 1 to 65536 queries (one DNS ID each), not {size}")
    kinds = list(KINDS)
    wires: list[bytes] = []
    expected: dict[int, tuple[str, int]] = {}
    for query_id in range(size):
        kind = kinds[query_id % len(kinds)]
        name = f"q{query_id}.{kind}.wild.example.org."
        message = dns.message.make_query(name, "A")
        message.id = query_id
        wires.append(message.to_wire())
        expected[query_id] = (name, KINDS[kind])
    return wires, expected


@dataclass
class Received:
    """The burst as the client saw it: each query's send time, each first answer's."""

    sent_at: list[float]
    answers: dict[int, bytes]
    answered_at: dict[int, float]
    ended_at: float


def send_burst(address: tuple[str, int], wires: list[bytes], wait: float) -> Received:
    """Send every query at once, then read answers until all are in or ``wait`` seconds
    after the first was sent."""
    answers: dict[int, bytes] = {}
    answered_at: dict[int, float] = {}
    sent_at: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        # The answers arrive as fast as triodist sends them; none may be lost here.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        client.connect(address)
        clock = time.monotonic  # the clock the backend stamps arrivals with
        for wire in wires:  # nothing read in between: the burst arrives whole
            sent_at.append(clock())
            client.send(wire)
        deadline = sent_at[0] + wait
        while len(answers) < len(wires):
            remaining = deadline - clock()
            if remaining <= 0:
                break
            client.settimeout(remaining)
            try:
                data = client.recv(65535)
            except TimeoutError:
                break
            now = clock()
            query_id = int.from_bytes(data[:2], "big")
            if len(data) >= 12 and query_id < len(wires) and query_id not in answers:
                answers[query_id] = data
                answered_at[query_id] = now
        ended_at = clock()
    return Received(sent_at, answers, answered_at, ended_at)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def busy_seconds() -> float:
    """The machine's CPU time spent running processes since boot, all cores."""
    return sum(busy for busy, _total in core_times().values()) / _CLOCK_TICKS


def wait_for_quiet(longest: float, share: float = QUIET_SHARE) -> float:
    """Until the machine's cores were busy less than ``share`` of a second, for at most
    ``longest`` seconds; the share of the last second.  Others may use the machine: a burst
    measured while they do measures them too."""
    deadline = time.monotonic() + longest
    while True:
        before = core_times()
        time.sleep(1.0)
        after = core_times()
        busy = sum(after[core][0] - before[core][0] for core in after if core in before)
        total = sum(after[core][1] - before[core][1] for core in after if core in before)
        measured = busy / total if total else 0.0
        if measured < share or time.monotonic() >= deadline:
            return round(measured, 3)


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000, 1)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and the largest, in milliseconds."""
    if not seconds:
        return {}
    ordered = sorted(seconds)
    return {
        "p50": milliseconds(statistics.median(ordered)),
        "p99": milliseconds(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]),
        "max": milliseconds(ordered[-1]),
    }


def judge(
    result: Run,
    received: Received,
    expected: dict[int, tuple[str, int]],
    arrivals: dict[str, float],
) -> None:
    """Answers, verdicts and latencies into ``result``."""
    result.answered = len(received.answers)
    result.unanswered = result.sent - result.answered
    for query_id, data in sorted(received.answers.items()):
        name, rcode = expected[query_id]
        reply = dns.message.from_wire(data)
        got = reply.rcode()
        if got != rcode or reply.question[0].name.to_text() != name:
            result.wrong += 1
            if len(result.wrong_examples) < 5:
                result.wrong_examples.append(f"{name} {dns.rcode.to_text(got)}")
        if got == dns.rcode.NOERROR and rcode != dns.rcode.NOERROR:
            result.failed_open += 1
    sent_at, answered_at = received.sent_at, received.answered_at
    result.latency_ms = percentiles([at - sent_at[i] for i, at in answered_at.items()])
    allowed = [
        (i, arrivals[name])
        for i, (name, rcode) in expected.items()
        if rcode == dns.rcode.NOERROR and name in arrivals
    ]
    result.to_backend_ms = percentiles([at - sent_at[i] for i, at in allowed])
    result.backend_to_client_ms = percentiles(
        [answered_at[i] - at for i, at in allowed if i in answered_at]
    )
    if answered_at:
        result.burst_ms = milliseconds(max(received.answered_at.values()) - received.sent_at[0])
    result.send_ms = milliseconds(received.sent_at[-1] - received.sent_at[0])


def filter_counters(running: Running) -> dict[str, int]:
    """The counters the filter printed as it stopped: ``async_filter: received=N ...``."""
    found = re.findall(r"^async_filter: (received=.*)$", running.log_tail(), re.MULTILINE)
    if not found:
        return {}
    fields = dict(item.split("=", 1) for item in found[-1].split())
    return {name: int(fields[name]) for name in FILTER_COUNTERS if name in fields}


def one_run(number: int, burst: int, timeout_ms: int, quiet_wait: float, workdir: Path) -> Run:
    """A burst through fresh processes, which are all stopped when it returns."""
    directory = workdir / f"run{number}"
    directory.mkdir()
    sockets = directory / "async"  # created private (0700) by whichever program starts first
    rules = directory / "filter.rules"
    rules.write_text(RULES)
    key = new_key()
    listen, backend_port, console = free_port(), free_port(), free_port()
    conf = directory / "async-filter.lua"
    conf.write_text(example_config(sockets, listen, backend_port, timeout_ms, console, key))
    wires, expected = burst_queries(burst)
    result = Run(run=number, sent=burst)
    arrivals_path = directory / "arrivals.json"
    with ProcessSet() as procs:
        backend_argv = [sys.executable, "-m", "bench.async_burst", "--backend", str(backend_port)]
        backend_argv += ["--arrivals", str(arrivals_path)]
        backend = procs.start("backend", backend_argv, log_path=directory / "backend.log")
        wait_until_answering(backend, "127.0.0.1", backend_port, PROBE_NAME, START_TIMEOUT)
        filter_argv = [sys.executable, str(FILTER), "--listen", str(sockets / "filter.sock")]
        filter_argv += ["--reply", str(sockets / "triodist.sock"), "--rules", str(rules)]
        filter_process = procs.start(
            "async_filter.py", filter_argv, log_path=directory / "filter.log"
        )
        wait_for_line(filter_process, "listening on")
        triodist = procs.start(
            "triodist",
            [sys.executable, "-m", "triodist", "serve", "--config", str(conf)],
            log_path=directory / "triodist.log",
        )
        wait_until_answering(triodist, "127.0.0.1", listen, PROBE_NAME, START_TIMEOUT)
        before = console_stats(console, key)
        waiting = time.monotonic()
        result.busy_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else 0.0
        result.quiet_wait_s = round(time.monotonic() - waiting, 1)
        processes = {"triodist": triodist, "filter": filter_process, "backend": backend}
        cpu_before = {name: cpu_seconds(p.pid) for name, p in processes.items()}
        machine_before, own_before = busy_seconds(), own_cpu()
        received = send_burst(("127.0.0.1", listen), wires, timeout_ms / 1000 + DRAIN_MARGIN)
        cpu_after = {name: cpu_seconds(p.pid) for name, p in processes.items()}
        machine_after, own_after = busy_seconds(), own_cpu()
        after = console_stats(console, key)
        result.load_average = [round(x, 2) for x in load_average()]
        procs.stop(triodist)
        procs.stop(filter_process)
        result.filter_counters = filter_counters(filter_process)
        procs.stop(backend)
    try:
        arrivals: dict[str, float] = json.loads(arrivals_path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"the backend's arrival times: {exc}") from None
    result.counters = {name: after.get(name, 0) - before.get(name, 0) for name in COUNTERS}
    result.cpu_s = {name: round(cpu_after[name] - cpu_before[name], 3) for name in processes}
    result.cpu_s["client"] = round(own_after - own_before, 3)
    # Whatever else ran meanwhile (other programs on the machine), roughly: the clock
    # ticks of all cores, less this benchmark's processes.
    ours = sum(result.cpu_s.values())
    result.cpu_s["others"] = round(max(0.0, machine_after - machine_before - ours), 2)
    result.window_s = round(received.ended_at - received.sent_at[0], 3)
    judge(result, received, expected, arrivals)
    return result


# --- dnsdist ----------------------------------------------------------------------------

ASYNC_FUNCTIONS = ("newNetworkEndpoint", "newNetworkListener", "getAsynchronousObject")

#: Answers 192.0.2.2 when a query object has ``suspend``, 192.0.2.1 when it has not, and
#: 192.0.2.3 when it has no ``qname`` either (the check itself would then be wrong).
SUSPEND_PROBE = """\
setSecurityPollSuffix("")
setLocal("127.0.0.1:{port}")
addAction(AllRule(), LuaAction(function(dq)
  local function has(member)
    local ok, value = pcall(function() return dq[member] end)
    return ok and value ~= nil
  end
  if not has("qname") then return DNSAction.Spoof, "192.0.2.3" end
  if has("suspend") then return DNSAction.Spoof, "192.0.2.2" end
  return DNSAction.Spoof, "192.0.2.1"
end))
"""


def check_dnsdist(path: str, version: str, config: str, workdir: Path) -> dict[str, object]:
    """Whether dnsdist can run the example: its check of the configuration, the
    asynchronous functions in its Lua, and ``suspend`` on a query object."""
    directory = workdir / "dnsdist"
    directory.mkdir()
    conf = directory / "async-filter.lua"
    conf.write_text('setSecurityPollSuffix("")\n' + config)
    checked = subprocess.run(
        [path, "--check-config", "-C", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    output = (checked.stdout + checked.stderr).strip()
    lookup = directory / "functions.lua"
    lookup.write_text(
        'setSecurityPollSuffix("")\n'
        + "".join(f'print("{name}", type({name}))\n' for name in ASYNC_FUNCTIONS)
    )
    looked = subprocess.run(
        [path, "--check-config", "-C", str(lookup)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    types = dict(re.findall(r"^(\w+)\s+(\w+)$", looked.stdout, re.MULTILINE))
    port = free_port()
    probe_conf = directory / "suspend.lua"
    probe_conf.write_text(SUSPEND_PROBE.format(port=port))
    with ProcessSet() as procs:
        running = procs.start(
            "dnsdist",
            [path, "--supervised", "--disable-syslog", "-C", str(probe_conf)],
            log_path=directory / "dnsdist.log",
        )
        wait_until_answering(running, "127.0.0.1", port, PROBE_NAME, START_TIMEOUT)
        reply = dns.query.udp(
            dns.message.make_query(PROBE_NAME, "A"), "127.0.0.1", port=port, timeout=5
        )
    addresses = [item.to_text() for rrset in reply.answer for item in rrset]
    has_suspend = {"192.0.2.2": True, "192.0.2.1": False}.get("".join(addresses))
    missing = [name for name in ASYNC_FUNCTIONS if types.get(name, "nil") == "nil"]
    if has_suspend is False:
        missing.insert(0, "dq:suspend")
    can_run = checked.returncode == 0 and not missing and has_suspend is True
    first_error = next((line for line in output.splitlines() if "rror" in line), output[:200])
    if can_run:
        verdict = (
            f"{version} has the asynchronous API; this benchmark does not run the burst "
            "through dnsdist yet (no comparison)"
        )
    else:
        verdict = (
            f"{version} cannot run this scenario: it has no {', '.join(missing) or '?'} "
            f"(the asynchronous API came in dnsdist 1.8), and its --check-config of the "
            f"example stops with: {first_error}.  No comparison is made."
        )
    return {
        "version": version,
        "check_config_status": checked.returncode,
        "check_config_output": output.splitlines()[:5],
        "functions": {name: types.get(name, "?") for name in ASYNC_FUNCTIONS},
        "query_has_suspend": has_suspend,
        "can_run_the_example": can_run,
        "verdict": verdict,
    }


# --- the report -------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    # The median of an even count is the mean of two: rounded, as the figures are.
    median = round(statistics.median(values), 3)
    return {"min": min(values), "median": median, "max": max(values)}


def summarise(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Minimum, median and maximum over the runs of each figure."""
    columns: dict[str, list[float]] = {
        "latency_max_ms": [r.latency_ms.get("max", 0.0) for r in runs],
        "latency_p50_ms": [r.latency_ms.get("p50", 0.0) for r in runs],
        "to_backend_max_ms": [r.to_backend_ms.get("max", 0.0) for r in runs],
        "backend_to_client_max_ms": [r.backend_to_client_ms.get("max", 0.0) for r in runs],
        "burst_ms": [r.burst_ms for r in runs],
        "unanswered": [r.unanswered for r in runs],
        "failed_open": [r.failed_open for r in runs],
        "wrong": [r.wrong for r in runs],
    }
    for name in ("async-timeouts", "async-resumed", "async-send-queued", "received"):
        columns[name] = [r.counters.get(name, 0) for r in runs]
    for name in ("queued", "unsent"):
        columns[f"filter-{name}"] = [r.filter_counters.get(name, 0) for r in runs]
    for name in ("triodist", "filter", "backend", "client", "others"):
        columns[f"cpu_{name}_s"] = [r.cpu_s.get(name, 0.0) for r in runs]
    return {name: spread(values) for name, values in columns.items()}


def markdown(report: dict[str, object], runs: list[Run]) -> str:
    settings = report["settings"]
    machine_info = report["machine"]
    summary = report["summary"]
    dnsdist = report["dnsdist"]
    found = report["versions"]
    assert isinstance(found, dict)
    assert isinstance(settings, dict) and isinstance(machine_info, dict)
    assert isinstance(summary, dict) and isinstance(dnsdist, dict)

    def row(name: str, label: str) -> str:
        s = summary[name]
        return f"| {label} | {s['min']:g} | {s['median']:g} | {s['max']:g} |"

    lines = [
        f"# A burst of {settings['burst']} held queries, timeout {settings['timeout_ms']} ms",
        "",
        f"`{report['command']}` ({report['date']}, commit {found['commit']}): "
        f"{settings['runs']} runs, each with fresh "
        "processes: triodist on `examples/async-filter.lua`, `examples/async_filter.py`, a "
        "raw-bytes backend; the burst sent from one UDP socket at once.",
        "",
        f"Machine: {machine_info['cpus']} cores ({machine_info['cpu_model']}), Linux "
        f"{machine_info['kernel']}, {machine_info['python']}, net.unix.max_dgram_qlen "
        f"{machine_info['net.unix.max_dgram_qlen']}, net.core.rmem_max "
        f"{machine_info['net.core.rmem_max']}; nothing pinned.",
        "",
        f"Each burst started once the cores had been less than {settings['quiet_share']:.0%} "
        f'busy for a second (or after {settings["quiet_wait_s"]:g} s of waiting). "Others" '
        "is the CPU time the rest of the machine used during the burst (/proc/stat, less "
        "this benchmark's processes): other programs on the machine, which the figures "
        "include when it is not near 0.",
        "",
        "| over the runs | min | median | max |",
        "|---|---:|---:|---:|",
        row("latency_max_ms", "last answer's latency (ms): waiting to be read, held, answered"),
        row("latency_p50_ms", "p50 latency (ms)"),
        row("to_backend_max_ms", "allowed names, sent to at the backend, longest (ms)"),
        row("backend_to_client_max_ms", "allowed names, backend to client, longest (ms)"),
        row("burst_ms", "first query sent to last answer (ms)"),
        row("unanswered", "unanswered"),
        row("failed_open", "failed open (blocked or NXDOMAIN answered NOERROR)"),
        row("async-timeouts", "async-timeouts"),
        row("async-resumed", "async-resumed"),
        row("async-send-queued", "async-send-queued (triodist to filter)"),
        row("filter-queued", "filter's queued (filter to triodist)"),
        row("cpu_triodist_s", "triodist CPU (s)"),
        row("cpu_filter_s", "filter CPU (s)"),
        row("cpu_backend_s", "backend CPU (s)"),
        row("cpu_others_s", "CPU of other programs meanwhile (s)"),
        "",
        "| run | answered | failed open | timeouts | last (ms) | p50 (ms) | at the backend (ms) "
        "| triodist CPU (s) | filter CPU (s) | others (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.run} | {r.answered}/{r.sent} | {r.failed_open} | "
            f"{r.counters.get('async-timeouts', 0)} | {r.latency_ms.get('max', 0):g} | "
            f"{r.latency_ms.get('p50', 0):g} | {r.to_backend_ms.get('max', 0):g} | "
            f"{r.cpu_s.get('triodist', 0):g} | "
            f"{r.cpu_s.get('filter', 0):g} | {r.cpu_s.get('others', 0):g} |"
        )
    lines += ["", f"dnsdist: {dnsdist['verdict']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.async_burst", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--burst", type=int, default=1000, help="queries at once (1000)")
    parser.add_argument("--runs", type=int, default=10, help="bursts, each fresh (10)")
    parser.add_argument(
        "--timeout-ms", type=int, default=500, help="the suspension timeout (500, the example's)"
    )
    parser.add_argument(
        "--no-save", action="store_true", help="print only, write nothing to bench/results"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        metavar="SECONDS",
        # argparse formats help with %: the percent sign is doubled.
        help=f"before each burst, wait up to this long for a second with the cores busy "
        f"less than {QUIET_SHARE:.0%}% (60; 0: do not wait)",
    )
    parser.add_argument("--backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--arrivals", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backend is not None:
        if args.arrivals is None:
            parser.error("--backend needs --arrivals")
        return serve_backend(args.backend, args.arrivals)
    if args.runs < 1 or args.timeout_ms < 1:
        parser.error("--runs and --timeout-ms must be at least 1")
    words = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "bench.async_burst", *words])
    child_environment()
    dnsdist_path = find(DNSDIST)
    found = versions({"dnsdist": dnsdist_path} if dnsdist_path else {})
    found["commit"] = commit()
    machine_info = machine() | {
        "python": found["python"],
        "net.unix.max_dgram_qlen": int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text()),
        "net.core.rmem_max": int(Path("/proc/sys/net/core/rmem_max").read_text()),
    }
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="triodist-burst-") as tmp:
            workdir = Path(tmp)
            for number in range(1, args.runs + 1):
                result = one_run(number, args.burst, args.timeout_ms, args.quiet_wait, workdir)
                runs.append(result)
                print(
                    f"run {number}: {result.answered}/{result.sent} answered, "
                    f"{result.failed_open} failed open, {result.wrong} wrong, "
                    f"{result.counters['async-timeouts']} timeouts; last answer "
                    f"{result.latency_ms.get('max', 0):g} ms, p50 "
                    f"{result.latency_ms.get('p50', 0):g} ms, allowed at the backend by "
                    f"{result.to_backend_ms.get('max', 0):g} ms; CPU triodist "
                    f"{result.cpu_s['triodist']:g} s, filter {result.cpu_s['filter']:g} s, "
                    f"others {result.cpu_s['others']:g} s (busy before: {result.busy_before:.0%})",
                    flush=True,
                )
            if dnsdist_path:
                config = example_config(
                    workdir / "dnsdist-async",
                    free_port(),
                    free_port(),
                    args.timeout_ms,
                    free_port(),
                    new_key(),
                )
                dnsdist = check_dnsdist(dnsdist_path, found["dnsdist"], config, workdir)
            else:
                dnsdist = {"verdict": "dnsdist is not installed: no comparison"}
    except BenchError as exc:
        print(f"async_burst: {exc}", file=sys.stderr)
        return 2
    print(f"dnsdist: {dnsdist['verdict']}")
    report: dict[str, object] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info,
        "versions": found,
        "settings": {
            "burst": args.burst,
            "runs": args.runs,
            "timeout_ms": args.timeout_ms,
            "quiet_wait_s": args.quiet_wait,
            "quiet_share": QUIET_SHARE,
            "udp_receive_buffer": RECV_BUFFER,
            "rules": RULES.splitlines(),
            "names": "q<ID>.<kind>.wild.example.org. A, kinds in turn: " + ", ".join(KINDS),
        },
        "summary": summarise(runs),
        "runs": [asdict(r) for r in runs],
        "dnsdist": dnsdist,
    }
    text = json.dumps(report, indent=2)
    if args.no_save:
        print(text)
    else:
        stem = RESULTS / f"{report['date']}-async-burst"
        stem.with_suffix(".json").write_text(text + "\n")
        stem.with_suffix(".md").write_text(markdown(report, runs))
        print(f"written: {stem}.json, {stem}.md")
    failed = [r.run for r in runs if r.unanswered or r.wrong or r.counters["async-timeouts"]]
    if failed:
        print(f"runs with a query unanswered, timed out or wrongly answered: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
