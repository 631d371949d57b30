"""Rate limiting on Trio's clock (so a mock clock drives it in tests).

``TokenBucket`` is one rate for everything it is asked about (``MaxQPSRule``,
``QPSAction``, a backend's ``qps``).  ``SourceRates`` is one rate per client network
(``MaxQPSIPRule``): a table keyed by source addresses, which anyone can spoof, so it
is built to cost O(1) per query whatever it holds and never to hold more than its
bound (bench/reliability.md, "Per-source tables").

Imports nothing of triodist.
"""

from __future__ import annotations

import logging
import math
import struct
from collections import deque
from collections.abc import Callable
from socket import AF_INET, AF_INET6, inet_pton

import trio

log = logging.getLogger("triodist.ratelimit")


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


# --- per-source tables ---------------------------------------------------------------------

_V4_MAPPED = bytes(10) + b"\xff\xff"
# An unpack is cheaper than int.from_bytes (no keyword, no byte order to look up).
_U32: Callable[[bytes], tuple[int]] = struct.Struct("!I").unpack


def source_key(host: str, v4_shift: int, v6_shift: int) -> int:
    """The client network of the address ``host`` (text, as the socket gave it) as an int:
    the address without its last ``v4_shift`` (IPv4) or ``v6_shift`` (IPv6) bits.

    IPv4 keys are >= 0 and IPv6 keys < 0 (the bitwise complement), so the two families
    never share a key.  An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a
    dual-stack socket reports for an IPv4 client) is its IPv4 address: under a /64 all
    of IPv4 would otherwise be one client.  ``inet_pton`` and an unpack cost a tenth
    of an ``ipaddress`` object, and an int key is the smallest there is."""
    if ":" not in host:
        return _U32(inet_pton(AF_INET, host))[0] >> v4_shift
    packed = inet_pton(AF_INET6, host.partition("%")[0])
    if packed[:12] == _V4_MAPPED:
        return _U32(packed[12:])[0] >> v4_shift
    return ~(int.from_bytes(packed, "big") >> v6_shift)


#: New sources forget at most this many idle entries each, from the oldest end.
EXPIRY_SLICE = 2
#: Entries seen again since their last turn at the oldest end are passed over at most
#: this many times before one is evicted anyway.
SECOND_CHANCES = 4


class SourceRates:
    """``rate`` per second with ``burst`` in reserve, for each key (a client network).

    Resource handling: the table holds at most ``max_entries`` keys.  Each key costs one
    float and the int itself in a dict, and a slot in a deque that keeps the keys in the
    order they came (~120 bytes a key; ``bench/per_source.py`` measures it), and every
    operation is O(1) whatever the table holds:

    * The rate is GCRA, the token bucket kept as a single time: ``due``, when the
      key's bucket is full again.  A query fits while ``due - now`` is at most the
      burst less one query's worth; it moves ``due`` one query's worth on.  This gives
      exactly ``TokenBucket``'s verdicts.
    * A key whose bucket is full again is the same as no key at all, so forgetting it
      changes no verdict.  Each new key forgets up to ``EXPIRY_SLICE`` entries at the
      oldest end that have been full for ``expiration`` seconds (so idle for at least
      that long): never a walk over the table.
    * Over the bound the oldest entry goes, with CLOCK's second chance: a key seen
      again since it was last at the oldest end goes back to the new end instead (at
      most ``SECOND_CHANCES`` times), so a flood of new sources, each seen once,
      evicts itself rather than the client that keeps coming back and is being
      limited.  Evictions are counted (``evictions``), and those that forgot a bucket
      not yet full, which gives that source its burst again, separately
      (``evictions_not_full``: the bound is too small for the traffic).
    * The keys are spread over ``shards`` tables (``key % shards``): Python rebuilds a
      dict in one go now and then as keys come and go, and a shard bounds that pause
      to its own size (under 1 ms for 10,000 entries, against ~13 ms for 100,000).

    Times are stored relative to the first one seen, plus one second, so that all are
    positive and the sign of a stored time carries CLOCK's bit: positive for a key seen
    since it was last at the oldest end, negative for one that was not.
    """

    __slots__ = (
        "_epoch",
        "_interval",
        "_order",
        "_shard_max",
        "_tolerance",
        "_values",
        "burst",
        "evictions",
        "evictions_not_full",
        "expiration",
        "expired",
        "max_entries",
        "name",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        expiration: float = 300.0,
        max_entries: int = 100_000,
        shards: int = 10,
        name: str = "per-source rate",
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None and burst > 0 else rate)
        self.expiration = max(0.0, float(expiration))
        self.max_entries = max(1, int(max_entries))
        #: What the log calls the table when it first evicts.
        self.name = name
        count = max(1, min(int(shards), self.max_entries))
        self._shard_max = self.max_entries // count
        self._values: tuple[dict[int, float], ...] = tuple({} for _ in range(count))
        self._order: tuple[deque[int], ...] = tuple(deque() for _ in range(count))
        if self.rate > 0.0 and self.burst >= 1.0:
            self._interval = 1.0 / self.rate
            self._tolerance = (self.burst - 1.0) / self.rate
        else:
            # A bucket that can never hold a whole query (as TokenBucket's never does).
            self._interval = math.inf
            self._tolerance = -math.inf
        self._epoch: float | None = None
        self.evictions = 0
        self.evictions_not_full = 0
        self.expired = 0

    def __len__(self) -> int:
        return sum(len(values) for values in self._values)

    def take(self, key: int, now: float) -> bool:
        """One query from ``key`` at ``now``: whether it is within the rate."""
        epoch = self._epoch
        if epoch is None:
            epoch = self._epoch = now - 1.0
        now -= epoch
        shard = key % len(self._values)
        values = self._values[shard]
        stored = values.get(key)
        if stored is None:
            self._admit(shard, now)
            self._order[shard].append(key)
            if self._tolerance >= 0.0:  # a new key's bucket is full
                values[key] = -(now + self._interval)
                return True
            values[key] = -now
            return False
        due = stored if stored > 0.0 else -stored
        if due - now <= self._tolerance:
            values[key] = (due if due > now else now) + self._interval
            return True
        if stored < 0.0:
            values[key] = due  # seen again: its second chance
        return False

    def _admit(self, shard: int, now: float) -> None:
        """Make room in ``shard`` for one more key, in O(1)."""
        values = self._values[shard]
        order = self._order[shard]
        # Idle entries go from the oldest end, a slice at a time: a full walk here would
        # let each spoofed source cost as much as the table is long.
        for _ in range(EXPIRY_SLICE):
            if not order:
                break
            stored = values[order[0]]
            if abs(stored) + self.expiration > now:
                break
            del values[order.popleft()]
            self.expired += 1
        if len(values) < self._shard_max:
            return
        chance = 0
        while True:
            oldest = order.popleft()
            stored = values[oldest]
            if stored < 0.0 or chance == SECOND_CHANCES:
                break
            values[oldest] = -stored
            order.append(oldest)
            chance += 1
        del values[oldest]
        if not self.evictions:
            log.warning(
                "%s: the table is full (%d entries); the sources seen least recently are "
                "forgotten from now on",
                self.name,
                self.max_entries,
            )
        self.evictions += 1
        if abs(stored) > now:
            self.evictions_not_full += 1

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self),
            "maxEntries": self.max_entries,
            "evictions": self.evictions,
            "evictionsNotFull": self.evictions_not_full,
            "expired": self.expired,
        }
