"""Rate limiting on Trio's clock (so a mock clock drives it in tests)."""

from __future__ import annotations

import trio


class TokenBucket:
    """A rate of ``rate`` per second with ``burst`` in reserve, on Trio's clock."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None and burst > 0 else rate)
        self.tokens = self.burst
        self.last = trio.current_time()

    def take(self) -> bool:
        """Take one token if there is one; return whether there was."""
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
