"""Processes: starting them pinned to a core, waiting until they answer DNS, stopping them.

Every process the benchmark starts goes through a :class:`ProcessSet`, a context manager
whose exit stops what is still running (SIGTERM, then SIGKILL after a grace period), whether
the block ends normally, by an exception or by Ctrl-C.  Children are detached from the
terminal's process group, so that a Ctrl-C on the terminal reaches the benchmark only, and
the benchmark stops them in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query
import dns.rcode

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


class BenchError(Exception):
    """Something the benchmark needs failed; the message says what, for the user."""


class StartupError(BenchError):
    """A process exited, or did not answer, before the benchmark could use it."""


@dataclass(frozen=True)
class Pinning:
    """Which core the load side (dnsperf and the backend) and the proxy run on.

    ``None`` cores mean no pinning (a single core, or no ``taskset``).
    """

    load_core: int | None
    proxy_core: int | None
    taskset: str | None

    @classmethod
    def choose(cls, taskset: str | None, enabled: bool = True) -> Pinning:
        cores = sorted(os.sched_getaffinity(0))
        if not enabled or taskset is None or len(cores) < 2:
            return cls(None, None, None)
        return cls(cores[0], cores[1], taskset)

    @property
    def active(self) -> bool:
        return self.taskset is not None

    def load(self, argv: Sequence[str]) -> list[str]:
        return self._wrap(self.load_core, argv)

    def proxy(self, argv: Sequence[str]) -> list[str]:
        return self._wrap(self.proxy_core, argv)

    def _wrap(self, core: int | None, argv: Sequence[str]) -> list[str]:
        # taskset execs the program: the PID we get is the program's own.
        if self.taskset is None or core is None:
            return list(argv)
        return [self.taskset, "-c", str(core), *argv]

    def describe(self) -> str:
        if not self.active:
            cores = len(os.sched_getaffinity(0))
            why = "fewer than 2 usable cores" if cores < 2 else "taskset not found or disabled"
            return f"no pinning ({why}): every process shares all {cores} core(s)"
        return (
            f"dnsperf and knotd pinned to core {self.load_core}, "
            f"the proxy under test to core {self.proxy_core} (taskset)"
        )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc/PID/stat."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime / _CLOCK_TICKS, stime / _CLOCK_TICKS


CoreTimes = dict[int, tuple[int, int]]  # core -> (busy ticks, total ticks)


def core_times() -> CoreTimes:
    """Busy and total time of each core since boot, from /proc/stat (in clock ticks)."""
    times: CoreTimes = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
            # Interrupt time is left out of "busy": the kernel charges it to no process, and
            # most of it here is loopback packet delivery, the benchmark's own traffic.
            # Steal (another virtual machine on the same host) counts as busy.
            busy = user + nice + system + steal
            times[int(name[3:])] = (busy, busy + idle + iowait + irq + softirq)
    return times


def core_busy(before: CoreTimes, after: CoreTimes, core: int | None) -> float | None:
    """The share of ``core`` busy running processes (any, ours or not) between two samples."""
    if core is None or core not in before or core not in after:
        return None
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return busy / total if total > 0 else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (proxies listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise BenchError(f"no free port on {host}")


@dataclass
class Running:
    """A started process and the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ProcessSet:
    """The processes started by the benchmark; leaving the ``with`` block stops them all."""

    def __init__(self) -> None:
        self._running: list[Running] = []

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], *, log_path: Path) -> Running:
        """Start ``argv`` with its standard output and error going to ``log_path``."""
        with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = Running(name, popen, log_path)
        self._running.append(running)
        return running

    def stop(self, running: Running, grace: float = STOP_GRACE) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit status."""
        popen = running.popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait()
        # Forgotten only once it has exited: if the wait above is interrupted (Ctrl-C),
        # stop_all still finds it.
        self._running.remove(running)
        return popen.returncode

    def stop_all(self) -> None:
        try:
            # Newest first: the proxies before the backend they talk to.
            while self._running:
                self.stop(self._running[-1])
        finally:
            # Anything left here means stopping was interrupted (a second Ctrl-C, say):
            # kill the rest at once rather than leave it running.
            for running in self._running:
                with contextlib.suppress(ProcessLookupError):
                    running.popen.kill()
            for running in self._running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.popen.wait(timeout=STOP_GRACE)
            self._running.clear()


def probe(host: str, port: int, qname: str, timeout: float = 0.5) -> bool:
    """True if ``host:port`` answers an A query for ``qname`` with NOERROR."""
    query = dns.message.make_query(qname, "A")
    try:
        reply = dns.query.udp(query, host, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return False
    return reply.rcode() == dns.rcode.NOERROR


def wait_until_answering(
    running: Running, host: str, port: int, qname: str, timeout: float = 15.0
) -> None:
    """Poll until the process answers ``qname`` over UDP; :class:`StartupError` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running.alive():
            raise StartupError(
                f"{running.name} exited with status {running.popen.returncode} before "
                f"answering on {host}:{port}\n--- its output ---\n{running.log_tail()}"
            )
        if probe(host, port, qname):
            return
        time.sleep(0.1)
    raise StartupError(
        f"{running.name} did not answer on {host}:{port} within {timeout:.0f} s\n"
        f"--- its output ---\n{running.log_tail()}"
    )
