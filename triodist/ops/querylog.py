"""The per-query lines of ``serve -v`` (``setVerbose(true)``), in dnsdist -v's words.

Every query gets one line when it arrives, whatever becomes of it (answered by a rule
or the cache, dropped, held, forwarded); one a backend answers gets dnsdist's second
line, with the backend and the time it took:

    Got query for www.example.org|A from 127.0.0.1:59979
    Got answer from 127.0.0.1:5301, relayed to 127.0.0.1:59979, took 878 usec

(dnsdist writes the first line when the query leaves for a backend, with ", relayed to"
it; triodist writes it on arrival, so that a query a rule answers or drops is seen too.)

The lines are written at DEBUG on the ``triodist.queries`` logger: without ``-v`` a
query pays one ``isEnabledFor`` test, and no name is turned into text. The query path
reaches these through the rings (``rings.py``), its recorder.

Imports nothing above triodist.ops (backends and wire, for the types it names).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.rdatatype

if TYPE_CHECKING:
    from triodist.backends.server import Server
    from triodist.wire.message import DNSQuestion

log = logging.getLogger("triodist.queries")


def _client(dq: DNSQuestion) -> str:
    host, port = dq.remote[0], dq.remote[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _question(dq: DNSQuestion) -> str:
    try:
        name = dns.name.from_wire(dq.qname_wire, 0)[0].to_text(omit_final_dot=True) or "."
    except dns.exception.DNSException:  # kept by the parser, refused by dnspython
        name = repr(dq.qname_wire)
    return f"{name}|{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(dq.qtype))}"


def query_received(dq: DNSQuestion) -> None:
    """One line for every query the pipeline sees."""
    if log.isEnabledFor(logging.DEBUG):
        tcp = f" (TCP, {len(dq.data)} bytes)" if dq.tcp else ""
        log.debug("Got query for %s from %s%s", _question(dq), _client(dq), tcp)


def answer_received(dq: DNSQuestion, server: Server, size: int, usec: int) -> None:
    """A backend's answer to ``dq``, on its way back to the client."""
    if log.isEnabledFor(logging.DEBUG):
        tcp = f" (TCP, {size} bytes)" if dq.tcp else ""
        log.debug(
            "Got answer from %s, relayed to %s%s, took %d usec",
            server.address.toStringWithPort(),
            _client(dq),
            tcp,
            usec,
        )
