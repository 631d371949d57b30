"""``triodist replay``: what a configuration would do with the queries of a capture.

``capture`` reads the capture (pcap or pcapng) into its queries and their answers,
``run`` replays them through a configuration in-process on a mock clock, ``report``
says what became of them (or, against a second configuration, what changed). The
command line (``triodist.cli``) joins them in ``main``, here.
"""

from __future__ import annotations

from triodist.replay.main import replay_main as replay_main
