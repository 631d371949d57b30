"""Asynchronous processing: a query or response held while something outside decides.

``dq:suspend(asyncID, queryID, timeoutMs)`` registers the object under its key and returns
true. The action that called it returns its verdict as usual; the pipeline sees that the
object is suspended and, in the query's own task, waits for it::

    with trio.move_on_at(held.deadline):
        await held.event.wait()

(``AsyncRegistry.wait_for_ending``). ``AsynchronousObject:resume()`` and ``:drop()`` set the
event; the deadline expiring
cancels the wait (fail-open by default: the object continues unchanged). Either way the
rule chain goes on from where it paused, with the suspending action's verdict.

Nothing can leak: a held object is always awaited by a task that belongs to a nursery and
has a deadline, and the registry is bounded (over the bound ``suspend`` returns false and
the query goes on). ``getAsynchronousObject`` takes an object out of the registry, but its
deadline still holds: if the taker never resumes nor drops it, the timeout resumes it.

Imports nothing above triodist.asyncproc (the wire format and util below it).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from enum import StrEnum
from typing import Any, Literal, Protocol

import trio

from triodist.util.ratelog import RateLimitedLog
from triodist.wire.build import make_rcode_answer
from triodist.wire.header import set_response_header
from triodist.wire.message import DNSQuestion

log = logging.getLogger("triodist.async")

TimeoutPolicy = Literal["continue", "servfail", "drop"]

DEFAULT_MAX_SUSPENDED = 10_000


class HeldState(StrEnum):
    """Where a held object stands (the state column of ``showSuspended()``)."""

    #: In the registry, under its key.
    HELD = "held"
    #: Taken out by ``getAsynchronousObject``; its deadline still holds.
    TAKEN = "taken"
    # How it ended: one of these, once.
    RESUMED = "resumed"
    DROPPED = "dropped"
    TIMED_OUT = "timed-out"
    #: Let go without a wait (the rule that suspended it failed, or the frontend had no
    #: room for a query that waits).
    ABANDONED = "abandoned"


#: The states in which the object is still waiting (not ended).
WAITING = frozenset({HeldState.HELD, HeldState.TAKEN})


class Ending(StrEnum):
    """What the query's task does once a suspension ended (``wait_for_ending``), the
    timeout policy applied."""

    #: Go on with the suspending action's verdict (resumed, or timed out failing open).
    GO_ON = "go on"
    DROP = "drop"
    #: Answer SERVFAIL (timed out, ``setAsyncTimeoutPolicy("servfail")``).
    SERVFAIL = "servfail"


class Held:
    """One suspended object and how it ends."""

    __slots__ = ("deadline", "event", "key", "obj", "since", "state")

    def __init__(
        self, key: tuple[int, int], obj: DNSQuestion, since: float, deadline: float
    ) -> None:
        self.key = key
        self.obj = obj
        self.event = trio.Event()
        self.deadline = deadline
        self.since = since
        self.state = HeldState.HELD


class AwaitingCall(Protocol):
    """A query or response waiting, in its own task, for an action that awaits (a Python
    action's function: ``rules/pyactions.py``). It holds no key; the registry bounds how
    many wait and ends them at shutdown."""

    def expire(self) -> None:
        """End the wait as if its deadline had passed."""


class AsyncRegistry:
    """The suspended objects of one server, by ``(asyncID, queryID)``, and their counters."""

    def __init__(self, stats: Counter[str] | None = None) -> None:
        self.held: dict[tuple[int, int], Held] = {}
        self.max_suspended = DEFAULT_MAX_SUSPENDED
        self.timeout_policy: TimeoutPolicy = "continue"
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.errors = RateLimitedLog(log)
        #: Objects taken by getAsynchronousObject and not yet ended, by key (still
        #: counted against the bound: they are alive and waiting; and their keys are
        #: still in use).
        self.taken_objects: dict[tuple[int, int], Held] = {}
        #: Objects waiting in an action that awaits (a Python action): counted against
        #: the same bound as the held ones, and ended with them at shutdown.
        self.awaiting: set[AwaitingCall] = set()

    @property
    def taken(self) -> int:
        return len(self.taken_objects)

    # --- called from rules ----------------------------------------------------------------

    def suspend(self, obj: DNSQuestion, async_id: Any, query_id: Any, timeout_ms: Any) -> bool:
        key = (_id(async_id, "asyncID", "suspend"), _id(query_id, "queryID", "suspend"))
        timeout = _timeout(timeout_ms)
        if obj.suspension is not None:
            return False  # already held: one suspension at a time
        if key in self.held or key in self.taken_objects:
            self.stats["async-collisions"] += 1
            # A client chooses its query ID, and so how often this happens: once a minute
            # per asyncID, the count of the others with it.
            self.errors.warning(
                f"collision {key[0]}",
                f"A query is already suspended with asyncID {key[0]} and queryID {key[1]}: "
                f"{obj.describe()} goes on without being suspended",
            )
            return False
        if self.waiting() >= self.max_suspended:
            self.stats["async-over-bound"] += 1
            return False
        now = trio.current_time()
        held = Held(key, obj, now, now + timeout / 1000)
        self.held[key] = held
        obj.suspension = held
        self.stats["async-suspended"] += 1
        return True

    def waiting(self) -> int:
        """How many objects wait now, against ``max_suspended``: held, taken, awaiting."""
        return len(self.held) + len(self.taken_objects) + len(self.awaiting)

    def add_awaiting(self, call: AwaitingCall) -> bool:
        """Count ``call`` as waiting; false (and nothing counted) at the bound."""
        if self.waiting() >= self.max_suspended:
            return False
        self.awaiting.add(call)
        return True

    # --- called from the query's task -----------------------------------------------------

    async def wait_for_ending(self, obj: DNSQuestion) -> Ending:
        """Wait until ``obj`` is resumed, dropped or times out; what the caller must do,
        the timeout policy applied: go on with the action's verdict, drop, or answer
        SERVFAIL.

        The wait is here rather than in a coroutine of its own that this one would await:
        every coroutine frame in the chain of a held query is about 200 bytes, 20 MB with
        100,000 held."""
        held: Held = obj.suspension
        try:
            with trio.move_on_at(held.deadline):
                await held.event.wait()
        finally:
            obj.suspension = None
            if held.state in WAITING:
                # The deadline (or the task was cancelled): forget it, count it.
                self._forget(held)
                held.state = HeldState.TIMED_OUT
                self.stats["async-timeouts"] += 1
        if held.state is HeldState.RESUMED:
            return Ending.GO_ON
        if held.state is HeldState.DROPPED:
            return Ending.DROP
        return self.after_timeout()

    def after_timeout(self) -> Ending:
        """What an object whose deadline passed does: the timeout policy decides."""
        if self.timeout_policy == "drop":
            return Ending.DROP
        if self.timeout_policy == "servfail":
            return Ending.SERVFAIL
        return Ending.GO_ON

    def expire_all(self) -> int:
        """End every held object as if its deadline had passed (at shutdown, so that the
        held queries are answered, by the timeout policy, within the grace period); and
        the waits of the awaiting actions, whose tasks then take them out."""
        ending = [*self.held.values(), *self.taken_objects.values()]
        for held in ending:
            self._forget(held)
            held.state = HeldState.TIMED_OUT
            self.stats["async-timeouts"] += 1
            held.event.set()
        calls = list(self.awaiting)
        for call in calls:
            call.expire()
        return len(ending) + len(calls)

    def abandon(self, obj: DNSQuestion) -> None:
        """Forget ``obj``'s suspension without waiting (the rule that suspended it failed)."""
        held = obj.suspension
        obj.suspension = None
        if held is not None and not isinstance(held, Held):
            self.awaiting.discard(held)  # an awaiting action's call that never ran
        elif held is not None and held.state in WAITING:
            self._forget(held)
            held.state = HeldState.ABANDONED
            self.stats["async-abandoned"] += 1
            held.event.set()

    # --- called from Lua (getAsynchronousObject and the object's methods) ----------------

    def take(self, async_id: Any, query_id: Any) -> AsynchronousObject:
        function = "getAsynchronousObject"
        key = (_id(async_id, "asyncID", function), _id(query_id, "queryID", function))
        held = self.held.pop(key, None)
        if held is None:
            raise LookupError(
                f"getAsynchronousObject: no suspended object with asyncID {key[0]} and "
                f"queryID {key[1]} (never suspended, already taken, or timed out)"
            )
        held.state = HeldState.TAKEN
        self.taken_objects[key] = held
        return AsynchronousObject(self, held)

    def resume(self, held: Held) -> bool:
        """``AsynchronousObject:resume()``: the object goes on; false if it already ended."""
        return self._end(held, HeldState.RESUMED, "async-resumed")

    def drop(self, held: Held) -> bool:
        """``AsynchronousObject:drop()``: the object is dropped; false if it already ended."""
        return self._end(held, HeldState.DROPPED, "async-dropped")

    def _end(self, held: Held, state: HeldState, counter: str) -> bool:
        if held.state not in WAITING:
            return False
        self._forget(held)
        held.state = state
        self.stats[counter] += 1
        held.event.set()
        return True

    def _forget(self, held: Held) -> None:
        """Take ``held`` out of the registry, where its state says it is."""
        if held.state is HeldState.HELD:
            if self.held.get(held.key) is held:
                del self.held[held.key]
        elif held.state is HeldState.TAKEN and self.taken_objects.get(held.key) is held:
            del self.taken_objects[held.key]

    # --- inspection -----------------------------------------------------------------------

    def show(self) -> str:
        """``showSuspended()``: what is held now."""
        now = trio.current_time()
        lines = [f"{'asyncID':>7} {'queryID':>7} {'age ms':>8} {'left ms':>8}  {'state':<5}  query"]
        everything = [*self.held.values(), *self.taken_objects.values()]
        for held in sorted(everything, key=lambda h: h.key):
            async_id, query_id = held.key
            lines.append(
                f"{async_id:>7} {query_id:>7} {(now - held.since) * 1000:>8.0f} "
                f"{(held.deadline - now) * 1000:>8.0f}  {held.state:<5}  {held.obj.describe()}"
            )
        counters = ", ".join(
            f"{name} {self.stats[f'async-{name}']}"
            for name in (
                "suspended",
                "resumed",
                "dropped",
                "timeouts",
                "collisions",
                "over-bound",
                "abandoned",
                "foreign-drops",  # counted by the network listeners (listener.py)
                "send-queued",  # and these three by the network endpoints
                "send-overflows",
                "send-failures",
            )
        )
        waiting = f"{len(everything)} held"
        if self.awaiting:
            waiting += f", {len(self.awaiting)} in Python actions"
        lines.append(f"{waiting} (at most {self.max_suspended}); {counters}")
        return "\n".join(lines)


class AsynchronousObject:
    """What ``getAsynchronousObject`` returns: dnsdist's ``AsynchronousObject``."""

    __slots__ = ("_held", "_registry")

    def __init__(self, registry: AsyncRegistry, held: Held) -> None:
        self._registry = registry
        self._held = held

    def getDQ(self) -> DNSQuestion:
        return self._held.obj

    def getDR(self) -> DNSQuestion:
        return self._held.obj

    def resume(self) -> bool:
        """Continue where the object paused; false if it already went on."""
        return self._registry.resume(self._held)

    def drop(self) -> bool:
        """Send nothing (UDP) or close the connection (TCP); false if it already went on."""
        return self._registry.drop(self._held)

    def setRCode(self, rcode: Any, clear_records: Any = False) -> bool:
        """Turn the held packet into an answer with ``rcode`` (then ``resume()`` it)."""
        if self._held.state not in WAITING:
            return False
        answer_with_rcode(self._held.obj, rcode, clear_records=bool(clear_records))
        return True

    def __str__(self) -> str:
        async_id, query_id = self._held.key
        return f"AsynchronousObject({async_id}, {query_id})"


def answer_with_rcode(obj: DNSQuestion, rcode: Any, *, clear_records: bool) -> None:
    """dnsdist's setRCode on a held object: an answer with ``rcode`` (QR set, RA copied
    from RD, AA and AD cleared), its records removed when asked, EDNS kept."""
    if isinstance(rcode, bool) or not isinstance(rcode, int | float) or not 0 <= rcode <= 15:
        raise ValueError(f"setRCode: expected an rcode from 0 to 15, got {rcode!r}")
    make_rcode_answer(obj, int(rcode), clear_records=clear_records)
    set_response_header(obj.data, ra_from_rd=True)


def _id(value: Any, what: str, function: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
        or not 0 <= value <= 0xFFFF
    ):
        raise ValueError(f"{function}: {what} must be an integer from 0 to 65535, got {value!r}")
    return int(value)


#: The longest a suspension may last (an hour): every wait has a deadline that comes.
MAX_TIMEOUT_MS = 3_600_000


def _timeout(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_TIMEOUT_MS
    ):
        raise ValueError(
            f"suspend: the timeout must be a number of ms above 0 and at most "
            f"{MAX_TIMEOUT_MS}, got {value!r}"
        )
    return float(value)
