"""What a step of a query's life comes to, and how a query that waits goes on.

The pipeline runs a query synchronously as far as it goes without waiting. Each step
returns an ``Outcome``: the bytes to send back, ``None`` to send nothing (a drop), or a
``Wait``: the one thing the query must wait for (a backend's reply, the end of a
suspension, a delay) and the step that follows it. A query that must wait gets a task of
its own, which runs ``answer_after_waits``: await, take the next step, until there is an
answer.

A rule chain comes to a decision (``QueryDecision``, ``ResponseDecision``), unless an
action suspended the object: the chain stops there (``Suspended``), and goes on from that
rule once the suspension ends.

Imports nothing above triodist.query (rules, asyncproc and the wire format below it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

from triodist.asyncproc.registry import AsyncRegistry, Ending, Held
from triodist.rules.chain import Rules
from triodist.wire.message import DNSQuestion, DNSResponse


class QueryDecision(StrEnum):
    """What the query rules decided. Its words are the ones ``run_query_rules`` has
    always returned (callers compare them with strings)."""

    DROP = "drop"
    #: A rule answered the query (``dq.data`` is the answer): the self-answered path.
    ANSWER = "answer"
    #: On to the packet cache and a backend.
    FORWARD = "forward"


class ResponseDecision(StrEnum):
    """What the response rules decided."""

    SEND = "send"
    DROP = "drop"


class Wait:
    """What a query must wait for before it can go on: ``wait()`` is awaited in the
    query's own task (a backend's reply, a suspension's end, a delay), then ``then``
    is called with what it returned, synchronously, and gives the next outcome."""

    __slots__ = ("then", "wait")

    def __init__(self, wait: Callable[[], Awaitable[Any]], then: Callable[[Any], Outcome]) -> None:
        self.wait = wait
        self.then = then


#: Where a query stands after the synchronous part of a step: the bytes to send, ``None``
#: to send nothing (a drop), or what it must wait for.
Outcome = bytes | bytearray | None | Wait

#: What a rule chain comes to after its final rule, given the object and the chain's
#: decision (a ``QueryDecision`` for queries, a ``ResponseDecision`` for responses).
Then = Callable[[Any, Any], Outcome]


async def answer_after_waits(outcome: Outcome) -> bytes | bytearray | None:
    """The task of a query that waits: await what it waits for, take the next step, until
    there is an answer (or nothing to send)."""
    while isinstance(outcome, Wait):
        outcome = outcome.then(await outcome.wait())
    return outcome


class Resumer(Protocol):
    """Who takes a suspended chain up again: the pipeline."""

    async_registry: AsyncRegistry

    def query_resumed(self, step: Suspended, ending: Ending) -> Outcome: ...

    def response_resumed(self, step: Suspended, ending: Ending) -> Outcome: ...


class Suspended:
    """A rule chain stopped by an action that suspended the object: which rule, and
    the action's verdict, applied once the object is resumed; and, for the ``Wait``
    made of its two methods, the object, its rules and what comes after them. One
    object rather than two partials: a held query keeps it as long as it is held.

    ``rules`` is the chain's tuple as the object entered it (``RuleChain``): the
    object resumes after rule ``at`` of the chain it started in, whatever edits
    (``clearRules``, ``mvRule``, a reload) put in the chain's place meanwhile."""

    __slots__ = ("action", "at", "extra", "obj", "pipeline", "rules", "then")

    def __init__(self, at: int, action: int, extra: str) -> None:
        self.at = at
        self.action = action
        self.extra = extra
        # Set by the chain that waits on it (the pipeline's ``_query_chain``,
        # ``_response_chain``).
        self.obj: DNSQuestion
        self.pipeline: Resumer
        self.rules: Rules
        self.then: Then

    def wait(self) -> Awaitable[Ending]:
        """The end of the suspension (``AsyncRegistry.wait_for_ending``), or of the call of
        an action that awaits in the query's own task (a Python action, which sets
        ``action`` and ``extra`` to its function's verdict: ``rules/pyactions.py``)."""
        suspension = self.obj.suspension
        if type(suspension) is not Held:
            return suspension.run(self)  # type: ignore[no-any-return]
        return self.pipeline.async_registry.wait_for_ending(self.obj)

    def resumed(self, ending: Ending) -> Outcome:
        """The rule chain goes on, from the suspending action's verdict."""
        if isinstance(self.obj, DNSResponse):
            return self.pipeline.response_resumed(self, ending)
        return self.pipeline.query_resumed(self, ending)
