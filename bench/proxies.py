"""The proxies under test: how each is started on a scenario's configuration.

Both run in the foreground with their output in a log file, listen on their own loopback
port and forward to the same backend.  dnsdist runs with ``--supervised`` (foreground, no
console) and ``--disable-syslog``; the configurations define no console either.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .procs import (
    Pinning,
    ProcessSet,
    Running,
    StartupError,
    free_port,
    wait_until_answering,
)
from .scenarios import Scenario
from .tools import DNSDIST, Tool

PROBE_NAME = "probe.bench.test."  # in the zone, never in a query file
START_ATTEMPTS = 3


@dataclass(frozen=True)
class Proxy:
    """A proxy: its name (also the suffix of its configuration templates), the programs it
    needs, and its command line given a configuration file and the programs' paths."""

    name: str
    tools: tuple[Tool, ...]
    command: Callable[[Path, dict[str, str]], list[str]]

    def argv(self, conf: Path, paths: dict[str, str]) -> list[str]:
        return self.command(conf, paths)


def _dnsdist(conf: Path, paths: dict[str, str]) -> list[str]:
    return [paths["dnsdist"], "--supervised", "--disable-syslog", "-C", str(conf)]


def _triodist(conf: Path, paths: dict[str, str]) -> list[str]:
    # The interpreter running the benchmark, so that the working tree's triodist is measured.
    return [sys.executable, "-m", "triodist", "serve", "--config", str(conf)]


DNSDIST_PROXY = Proxy("dnsdist", (DNSDIST,), _dnsdist)
TRIODIST_PROXY = Proxy("triodist", (), _triodist)
PROXIES: dict[str, Proxy] = {p.name: p for p in (DNSDIST_PROXY, TRIODIST_PROXY)}


@dataclass
class StartedProxy:
    proxy: Proxy
    running: Running
    host: str
    port: int
    conf: Path


def render_config(
    scenario: Scenario,
    proxy: Proxy,
    listen: str,
    backend: str,
    extra: dict[str, str] | None = None,
) -> str:
    template = Template(scenario.config_path(proxy.name).read_text())
    # safe_substitute: a '$' elsewhere in Lua code is left alone.
    return template.safe_substitute(extra or {}, LISTEN=listen, BACKEND=backend)


def start_proxy(
    processes: ProcessSet,
    pinning: Pinning,
    proxy: Proxy,
    scenario: Scenario,
    *,
    backend: str,
    workdir: Path,
    label: str,
    paths: dict[str, str],
    host: str = "127.0.0.1",
    extra: dict[str, str] | None = None,
) -> StartedProxy:
    """Start ``proxy`` on ``scenario``'s configuration and wait until it answers.

    A port taken between choosing it and binding it (another program on the machine) is
    retried on another port.  ``extra`` fills in more placeholders (the async scenario's
    socket paths).
    """
    error: StartupError | None = None
    for attempt in range(START_ATTEMPTS):
        port = free_port(host)
        conf = workdir / f"{label}-{attempt}.lua"
        conf.write_text(render_config(scenario, proxy, f"{host}:{port}", backend, extra))
        running = processes.start(
            proxy.name,
            pinning.proxy(proxy.argv(conf, paths)),
            log_path=workdir / f"{label}-{attempt}.log",
        )
        try:
            wait_until_answering(running, host, port, PROBE_NAME)
        except StartupError as exc:
            processes.stop(running)
            if "in use" not in running.log_tail().lower():
                raise
            error = exc
            continue
        return StartedProxy(proxy, running, host, port, conf)
    assert error is not None
    raise error
