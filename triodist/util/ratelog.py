"""Logging an error that may repeat at the query rate: one line per distinct error per
interval, with the count of the repeats, and its detail (traceback) at DEBUG with it.

A broken rule fails on every query: logged each time, it would fill the log at full rate
and hide everything else. Imports nothing of triodist's.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import trio

#: How often one distinct error is written out at most.
INTERVAL = 60.0
#: How many distinct errors are remembered; the one seen least recently goes first.
MAX_KEYS = 1000


def _now() -> float:
    # Trio's clock inside a run (so a mock clock drives it in tests), else the monotonic one.
    try:
        return trio.current_time()
    except RuntimeError:
        return time.monotonic()


class RateLimitedLog:
    """Write ``message`` once per ``interval`` for each ``key``; the repeats in between are
    counted and said with the next line written for that key.

    Bounded: at most ``max_keys`` keys are remembered (O(1) per call)."""

    def __init__(
        self, logger: logging.Logger, interval: float = INTERVAL, max_keys: int = MAX_KEYS
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        #: key -> [time the last line was written, repeats not written since]
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def log(
        self,
        level: int,
        key: str,
        message: str,
        *,
        exc: BaseException | None = None,
    ) -> bool:
        """Log ``message`` at ``level`` unless ``key`` was written less than ``interval``
        ago; whether it was written. ``exc``'s traceback goes to DEBUG with each line
        written: at the query rate, the detail would flood the log as the lines would."""
        now = _now()
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            if now - seen[0] < self.interval:
                seen[1] += 1
                return False
            repeats = int(seen[1])
            seen[0], seen[1] = now, 0
            if repeats:
                message = f"{message} (and {repeats} more like it since the last one)"
        else:
            if len(self._seen) >= self.max_keys:
                self._seen.popitem(last=False)
            self._seen[key] = [now, 0]
        self.logger.log(level, "%s", message)
        if exc is not None and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s", message, exc_info=exc)
        return True

    def unexpected(self, where: str, doing: str, exc: BaseException) -> bool:
        """An error nobody expected (a bug) at ``where`` while ``doing`` something: once
        a minute per place and kind of error, the traceback at DEBUG."""
        text = str(exc).strip()
        first = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        return self.error(f"{where} {first}", f"Unexpected error {doing}: {first}", exc=exc)

    def warning(self, key: str, message: str, *, exc: BaseException | None = None) -> bool:
        return self.log(logging.WARNING, key, message, exc=exc)

    def error(self, key: str, message: str, *, exc: BaseException | None = None) -> bool:
        return self.log(logging.ERROR, key, message, exc=exc)
