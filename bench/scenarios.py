"""The scenarios: what is measured, each as a name, two configurations and a query file.

A scenario names a configuration template per proxy (files in ``bench/configs/``, where
``$LISTEN`` and ``$BACKEND`` are filled in) and a query file in dnsperf's format
(``name type`` per line), generated into the run's temporary directory.  The two
configurations must ask for the same behaviour; they differ only where the two programs
differ.

To add a scenario: write ``<config>.dnsdist.lua`` and ``<config>.triodist.lua`` and add a
:class:`Scenario` to :data:`SCENARIOS`.  A scenario dnsdist cannot run (``async``: dnsdist
1.7.3 has no asynchronous processing) lists only triodist in ``proxies`` and names the
scenario it is compared with in ``compare_with``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"

#: How many cache-miss queries a second of load may need at most: more than any proxy on
#: one core answers (loopback, one dnsperf thread), so no name is sent twice in one run.
MISS_NAMES_PER_SECOND = 200_000
MISS_NAMES_MIN = 2_000_000
HIT_NAMES = 100
FORWARD_NAMES = 1_000


class Expect(Enum):
    """What the packet cache should do with the measured queries (checked after each run)."""

    HITS = "every measured query is answered from the cache"
    MISSES = "every query misses the cache and goes to the backend"
    NO_CACHE = "no cache configured: every query goes to the backend"


@dataclass(frozen=True)
class QueryFile:
    """A generated query file: a description for the report and a writer."""

    description: str
    #: Writes the file and returns its number of queries; gets the run's duration (seconds).
    write: Callable[[Path, float], int]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    config: str  # template base name: configs/<config>.<proxy>.lua
    queries: QueryFile
    expect: Expect
    #: Send the query file once before measuring (fills the cache).
    warm: bool = False
    #: Also measure dnsperf straight against the backend: the ceiling the load core allows.
    baseline: bool = False
    #: dnsperf's transport (-m): "udp", or "tcp" (the proxies then forward over TCP too).
    transport: str = "udp"
    #: The proxies the scenario applies to (each has a configuration file).
    proxies: tuple[str, ...] = ("dnsdist", "triodist")
    #: Another scenario whose triodist figures this one is compared with (run first, in the
    #: same invocation), for a scenario dnsdist cannot run.
    compare_with: str | None = None
    #: Run the external component of asynchronous processing (bench/async_responder.py)
    #: next to the proxy; the configuration gets $RESPONDER and $LISTENER.
    component: bool = False

    def config_path(self, proxy: str) -> Path:
        return CONFIGS / f"{self.config}.{proxy}.lua"


def _write_lines(path: Path, names: range, template: str) -> int:
    # Written in chunks: two million lines in one join would hold ~40 MB at once.
    chunk = 100_000
    with open(path, "w", encoding="ascii") as f:
        for start in range(names.start, names.stop, chunk):
            stop = min(start + chunk, names.stop)
            f.write("".join(template.format(n) for n in range(start, stop)))
    return len(names)


def _hit_names(path: Path, duration: float) -> int:
    return _write_lines(path, range(HIT_NAMES), "h{}.bench.test A\n")


def _unique_names(path: Path, duration: float) -> int:
    count = max(MISS_NAMES_MIN, math.ceil(duration * MISS_NAMES_PER_SECOND))
    return _write_lines(path, range(count), "q{}.bench.test A\n")


#: Names of the warm-up before a latency run: in no other query file, so that they neither
#: fill the cache with a name a cache-miss run measures nor count as a cache-hit run's hits.
LATENCY_WARMUP_NAMES = 1_000


def write_latency_warmup(path: Path) -> int:
    """The warm-up file sent to a fresh proxy before its latency run."""
    return _write_lines(path, range(LATENCY_WARMUP_NAMES), "w{}.bench.test A\n")


HIT_QUERIES = QueryFile(f"{HIT_NAMES} names `h<N>.bench.test A`, sent over and over", _hit_names)


def _forward_names(path: Path, duration: float) -> int:
    return _write_lines(path, range(FORWARD_NAMES), "f{}.bench.test A\n")


FORWARD_QUERIES = QueryFile(
    f"{FORWARD_NAMES:,} distinct names `f<N>.bench.test A`, sent over and over", _forward_names
)
MISS_QUERIES = QueryFile(
    f"unique names `q<N>.bench.test A`, at least {MISS_NAMES_MIN:,} "
    f"({MISS_NAMES_PER_SECOND:,} per second of run), none sent twice",
    _unique_names,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "cache-hit",
            "packet cache, every measured query answered from it (warmed first)",
            config="cache",
            queries=HIT_QUERIES,
            expect=Expect.HITS,
            warm=True,
        ),
        Scenario(
            "cache-miss",
            "packet cache configured, every query a miss forwarded to the backend",
            config="cache",
            queries=MISS_QUERIES,
            expect=Expect.MISSES,
            baseline=True,
        ),
        Scenario(
            "no-cache",
            "plain forwarding, no cache, 1,000 distinct names",
            config="forward",
            queries=FORWARD_QUERIES,
            expect=Expect.NO_CACHE,
        ),
        Scenario(
            "lua",
            "no-cache plus a Lua rule on every query that does nothing "
            "(`addAction(AllRule(), LuaAction(...))` returning `DNSAction.None`)",
            config="lua",
            queries=FORWARD_QUERIES,
            expect=Expect.NO_CACHE,
        ),
        Scenario(
            "tcp",
            "no-cache over TCP: dnsperf's queries on one TCP connection, forwarded to the "
            "backend over TCP",
            config="forward",
            queries=FORWARD_QUERIES,
            expect=Expect.NO_CACHE,
            transport="tcp",
        ),
        Scenario(
            "async",
            "no-cache with every query suspended, sent to an external component over a unix "
            "datagram socket and resumed when it answers (triodist only: dnsdist 1.7.3 has no "
            "asynchronous processing; compared with no-cache)",
            config="async",
            queries=FORWARD_QUERIES,
            expect=Expect.NO_CACHE,
            proxies=("triodist",),
            compare_with="no-cache",
            component=True,
        ),
    ]
}

DEFAULT_SCENARIOS = ("no-cache", "cache-hit", "cache-miss", "lua", "tcp", "async")
