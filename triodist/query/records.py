"""What the query path tells the operator's tools about each query, as an interface of
its own: the pipeline calls a ``QueryRecorder`` and knows nothing of who listens.

In a server the recorder is the console's ring buffers (``triodist.ops.rings.Rings``),
which keep the last queries and responses and hand each on to the per-query lines of
``serve -v`` (``triodist.ops.querylog``); the server hands it to the pipeline. A pipeline
made on its own (a test, a benchmark of the rules) records nothing.

Imports nothing above triodist.query (backends and wire, for the types it names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from triodist.backends.server import Server
    from triodist.wire.message import DNSQuestion


class QueryRecorder(Protocol):
    """Told of every query as it arrives, and of every backend's reply or its silence.
    Called on the query path: each call must cost little and never wait."""

    def query_received(self, dq: DNSQuestion) -> None:
        """A query reached the pipeline (whatever becomes of it)."""

    def backend_answered(self, dq: DNSQuestion, server: Server, reply: bytes, now: float) -> None:
        """``server``'s ``reply`` to ``dq`` arrived at ``now`` (trio's clock)."""

    def backend_timed_out(self, dq: DNSQuestion, server: Server, now: float) -> None:
        """``server`` did not answer ``dq`` in time."""


class NoRecords:
    """The recorder of a pipeline that nobody reads: records nothing."""

    __slots__ = ()

    def query_received(self, dq: DNSQuestion) -> None:
        pass

    def backend_answered(self, dq: DNSQuestion, server: Server, reply: bytes, now: float) -> None:
        pass

    def backend_timed_out(self, dq: DNSQuestion, server: Server, now: float) -> None:
        pass
