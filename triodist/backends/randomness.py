"""Random numbers for what an outsider must not predict: query IDs, source sockets.

They come from the operating system's generator (``os.urandom``), not from ``random``'s
Mersenne Twister, whose state can be recovered from enough of its outputs: whoever sees
our query IDs (those of queries, and of health checks) must not learn the next ones.

Imports nothing of triodist: the UDP side and the health checks both draw from here.
"""

from __future__ import annotations

import os


class SecureRandom:
    """Numbers from ``os.urandom``, read 4 KiB at a time: one system call per 1,024 draws
    instead of one per draw (a query sent and its reply matched cost about 2 µs more with
    random IDs from ``random.SystemRandom`` than with consecutive ones; under 0.5 µs more
    so)."""

    __slots__ = ("_next", "_words")

    def __init__(self) -> None:
        self._words = memoryview(b"").cast("I")
        self._next = 0
        # A forked child must not draw the numbers its parent draws.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._words = memoryview(b"").cast("I")

    def u32(self) -> int:
        index = self._next
        if index >= len(self._words):
            self._words = memoryview(os.urandom(4096)).cast("I")
            index = 0
        self._next = index + 1
        return int(self._words[index])

    def u16(self) -> int:
        return self.u32() >> 16

    def below(self, n: int) -> int:
        """A number from 0 to n - 1 (n up to 65,536: the bias is under 2**-16)."""
        return (self.u32() * n) >> 32


#: The process's one generator. Read through ``u16`` and ``below``, which look it up at
#: each call (a test may stand another in its place).
_RANDOM = SecureRandom()


def u16() -> int:
    """A random 16-bit number (a query ID)."""
    return _RANDOM.u16()


def below(n: int) -> int:
    """A random number from 0 to n - 1 (n up to 65,536)."""
    return _RANDOM.below(n)
