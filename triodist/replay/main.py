"""``triodist replay --config new.lua [--against current.lua] traffic.pcap``: read the
capture, replay it through each configuration, report.

Exit status: 0 when the replay ran (whatever the outcomes, and whether or not the two
configurations differ: the report says how), 1 when a configuration or the capture
could not be read (as ``serve`` and ``check-config`` for a configuration), 2 for a
command line that is wrong (argparse's own).

Imports nothing above triodist.replay (the configuration's errors, for their text).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from triodist.config.bindings.args import ConfigError
from triodist.replay import DEFAULT_LISTED, DEFAULT_MAX_QUERIES
from triodist.replay.capture import CaptureError, CaptureReader
from triodist.replay.report import (
    Replay,
    capture_fields,
    json_report,
    text_report,
    write_lines,
)
from triodist.replay.run import Runner

if TYPE_CHECKING:
    from triodist.config.runtime import LuaConfig


@dataclass
class ReplayOptions:
    """What the command line asks of a replay."""

    config: str
    capture: str
    against: str | None = None
    port: int = 53
    max_queries: int = DEFAULT_MAX_QUERIES
    json: bool = False
    #: A file for one JSON line per query (under ``config``), or None.
    lines: str | None = None
    listed: int = DEFAULT_LISTED


def replay_main(options: ReplayOptions, load: Callable[[str], LuaConfig]) -> int:
    """Run a replay as the command line asked; ``load`` runs a configuration file as
    ``serve`` does. The report goes to stdout, errors to stderr."""
    reader = CaptureReader(options.port, options.max_queries)
    try:
        queries = reader.read(Path(options.capture))
    except CaptureError as exc:
        print(f"Unable to replay: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Unable to replay: {options.capture}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    configs = [options.config] + ([options.against] if options.against else [])
    loaded: list[LuaConfig] = []
    for path in configs:
        try:
            loaded.append(load(path))
        except ConfigError as exc:
            print(f"Error in configuration: {exc}", file=sys.stderr)
            return 1
    started = time.perf_counter()  # the report says how long the replay took
    replays = []
    for path, lua in zip(configs, loaded, strict=True):
        runner = Runner(lua)
        replays.append(Replay(path, runner.run(queries), runner.stats))
    elapsed = time.perf_counter() - started
    new, current = replays[0], (replays[1] if len(replays) > 1 else None)
    if options.lines:
        try:
            with open(options.lines, "w") as out:
                write_lines(out, new)
        except OSError as exc:
            print(f"Unable to write {options.lines}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if options.json:
        capture = capture_fields(options.capture, reader.stats)
        json_report(sys.stdout, capture, new, current, elapsed)
    else:
        text_report(
            sys.stdout, options.capture, reader.stats, new, current, elapsed, options.listed
        )
    return 0
