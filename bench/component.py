"""The external component of the ``async`` scenario, seen from the harness.

For each run the responder (:mod:`bench.async_responder`) starts pinned with dnsperf and
knotd on the load core, before the proxy, on a socket in the run's temporary directory; the
proxy's configuration gets the two socket paths (``$RESPONDER``: where triodist sends held
queries; ``$LISTENER``: where the responder answers). After the run the harness asks the
configuration for its counters (a ``counters`` datagram on triodist's listening socket; the
answer is a line in the proxy's log) and reads the responder's own counters, printed when it
stops. triodist's ``async-*`` statistics live in the server process only (there is no console
or web server to read them from), so the configuration keeps its own: the figures below.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .async_responder import parse_counters
from .procs import Pinning, ProcessSet, Running, StartupError

_PROXY_COUNTERS = re.compile(r"async-bench counters: (.*)")
COUNTER_WAIT = 3.0  # seconds for the configuration's answer to show in the log
#: The timeout async.triodist.lua gives every held query (milliseconds).
ASYNC_TIMEOUT_MS = 1000


@dataclass
class Component:
    running: Running
    listen: Path  # the responder's socket
    reply: Path  # triodist's listening socket

    def substitutions(self) -> dict[str, str]:
        return {"RESPONDER": str(self.listen), "LISTENER": str(self.reply)}

    def proxy_counters(self, proxy: Running) -> dict[str, int] | None:
        """Ask the configuration for its counters; None if it did not answer in time."""
        seen = len(_PROXY_COUNTERS.findall(proxy.log_tail(10**7)))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b"counters", str(self.reply))
            except OSError:
                return None
        deadline = time.monotonic() + COUNTER_WAIT
        while time.monotonic() < deadline:
            found = _PROXY_COUNTERS.findall(proxy.log_tail(10**7))
            if len(found) > seen:
                pairs = (item.split("=") for item in found[-1].split())
                return {name: int(value) for name, value in pairs}
            time.sleep(0.05)
        return None

    def responder_counters(self) -> dict[str, int] | None:
        """The responder's counters, once it has been stopped."""
        return parse_counters(self.running.log_tail(10**6))


def start_component(
    processes: ProcessSet, pinning: Pinning, workdir: Path, label: str, *, timeout: float = 10.0
) -> Component:
    listen = workdir / f"{label}.responder.sock"
    reply = workdir / f"{label}.triodist.sock"
    argv = [sys.executable, "-m", "bench.async_responder", "--listen", str(listen)]
    argv += ["--reply", str(reply), "--realtime"]
    running = processes.start(
        "async-responder", pinning.load(argv), log_path=workdir / f"{label}.responder.log"
    )
    deadline = time.monotonic() + timeout
    while not listen.exists():
        if not running.alive() or time.monotonic() > deadline:
            processes.stop(running)
            raise StartupError(
                f"the async responder did not bind {listen}\n--- its output ---\n"
                f"{running.log_tail()}"
            )
        time.sleep(0.02)
    return Component(running, listen, reply)


def async_figures(
    proxy: dict[str, int] | None, responder: dict[str, int] | None
) -> dict[str, int | None]:
    """One run's asynchronous-processing figures (None where a side did not report).

    ``timeouts`` is what the server counts as ``async-timeouts``: held queries never resumed
    (they went on when their 1000 ms were over). The counters cover the proxy's whole life,
    i.e. the measured run plus the start-up probe query or two.
    """
    p = proxy or {}
    r = responder or {}
    suspended, resumed = p.get("suspended"), p.get("resumed")
    return {
        "suspended": suspended,
        "not_suspended": p.get("not-suspended"),
        "triodist_unsent": p.get("unsent"),
        "responder_received": r.get("received"),
        "responder_full": r.get("full"),
        "responder_unsent": r.get("unsent"),
        "responder_backlog": r.get("backlog"),
        "resumed": resumed,
        "late": p.get("late"),
        "timeouts": None if suspended is None or resumed is None else suspended - resumed,
    }
