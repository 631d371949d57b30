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
