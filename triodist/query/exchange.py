"""Who the pipeline asks for a backend's reply, when it is not the server's own sockets.

A running server sends a forwarded query on the chosen ``Server``'s UDP or TCP side
(``backends/udp.py``, ``backends/tcp.py``). Something that runs a configuration with no
backend to talk to (``triodist replay``: a capture's queries on a mock clock) gives the
pipeline a ``BackendExchange`` instead: the pipeline still lets the pool and its policy
choose the server, then hands the query to the exchange, and waits for what it returns as
it would for the server's reply. A server has none (``Pipeline.exchange`` is None), and
its path costs one test of that attribute per forwarded query.

Imports nothing above triodist.query (backends and wire, for the types it names).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from triodist.backends.exchange import NotSent
    from triodist.backends.server import Server
    from triodist.wire.message import DNSQuestion


class BackendExchange(Protocol):
    """Sends queries to servers in place of their sockets."""

    def send(
        self, server: Server, dq: DNSQuestion
    ) -> Callable[[], Awaitable[bytes | NotSent | None]]:
        """``dq`` goes to ``server`` (chosen by its pool's policy), now, synchronously;
        what is returned is awaited in the query's own task and gives the reply: its
        bytes (with the query's ID and question), ``None`` when the server did not answer
        in time, or ``NotSent``. Called on the query path: it must not wait."""
        ...
