"""The external programs the benchmark needs, their versions, and the machine it runs on.

Nothing is installed here: a missing program is reported with the Debian package that
provides it, and the benchmark stops before starting anything.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    """An external program: its name on PATH and the Debian package that provides it."""

    program: str
    package: str
    purpose: str


DNSPERF = Tool("dnsperf", "dnsperf", "the load generator")
DNSDIST = Tool("dnsdist", "dnsdist", "the reference proxy")
KNOTD = Tool("knotd", "knot", "the backend (authoritative server)")
KNOTC = Tool("knotc", "knot", "reading the backend's query counters")
TASKSET = Tool("taskset", "util-linux", "pinning processes to cores")


class MissingTools(Exception):
    """Some programs are missing; the message says which package provides each."""


def find(tool: Tool) -> str | None:
    # knotd lives in /usr/sbin, which is not on every user's PATH.
    extra = os.pathsep.join(["/usr/sbin", "/sbin"])
    return shutil.which(tool.program, path=os.environ.get("PATH", "") + os.pathsep + extra)


def require(tools: Iterable[Tool]) -> dict[str, str]:
    """The path of each tool, or :class:`MissingTools` naming the ``apt-get install`` needed."""
    paths: dict[str, str] = {}
    missing: list[Tool] = []
    for tool in tools:
        path = find(tool)
        if path is None:
            missing.append(tool)
        else:
            paths[tool.program] = path
    if missing:
        lines = [f"  {t.program}: {t.purpose} (Debian package {t.package})" for t in missing]
        packages = " ".join(sorted({t.package for t in missing}))
        raise MissingTools(
            "missing programs:\n"
            + "\n".join(lines)
            + f"\ninstall them with:  apt-get install {packages}"
        )
    return paths


def _first_line(argv: list[str], pattern: str = "") -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip() and (not pattern or re.search(pattern, line)):
            return line.strip()
    return "unknown"


def versions(paths: dict[str, str]) -> dict[str, str]:
    """The version line of each program, as it prints it."""
    found: dict[str, str] = {
        "python": "Python " + sys.version.split()[0],
        "triodist": _first_line([sys.executable, "-m", "triodist", "--version"]),
    }
    if "dnsperf" in paths:
        # dnsperf has no --version; its help ends with "Version x.y.z".
        line = _first_line([paths["dnsperf"], "-h"], r"^Version")
        found["dnsperf"] = "dnsperf " + line.removeprefix("Version").strip()
    if "dnsdist" in paths:
        found["dnsdist"] = _first_line([paths["dnsdist"], "--version"])
    if "knotd" in paths:
        found["knotd"] = _first_line([paths["knotd"], "--version"])
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def machine() -> dict[str, object]:
    """What the figures depend on: cores, CPU model, kernel, and how busy the machine was."""
    return {
        "cpus": os.cpu_count() or 1,
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in load_average()],
    }
