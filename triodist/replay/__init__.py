"""``triodist replay``: what a configuration would do with the queries of a capture.

``capture`` reads the capture (pcap or pcapng) into its queries and their answers,
``run`` replays them through a configuration in-process on a mock clock, ``report``
says what became of them (or, against a second configuration, what changed). The
command line (``triodist.cli``) joins them in ``main``, here.
"""

from __future__ import annotations

# Only the defaults the command line shows live here: ``triodist.cli`` imports this package
# for every command, and the replay's modules (dpkt, Trio's mock clock) only when it runs.

#: The most queries read from one capture (``--max-queries``); the rest are counted.
DEFAULT_MAX_QUERIES = 1_000_000
#: Differing queries listed in the text report (all of them go to JSON).
DEFAULT_LISTED = 50


def count(text: str) -> int:
    """A command-line count: a whole number, 0 or more (argparse's ``type``)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def port(text: str) -> int:
    """A command-line port: 1 to 65535 (argparse's ``type``)."""
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(text)
    return value
