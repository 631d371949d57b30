"""Reading a query's question from its bytes: the name (parsed only when it must be),
the type, the class and where the question ends; :class:`MalformedQuery` when the bytes
are not a query triodist can route.

Imports nothing above triodist.wire.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.name

from triodist.wire.walk import HEADER_LEN, plain_name_end

_U16 = struct.Struct("!H")
_TYPE_CLASS = struct.Struct("!HH")


class MalformedQuery(ValueError):
    """The bytes are not a DNS query we can route (too short, bad name, no question)."""


def parse_question(data: bytes | bytearray) -> tuple[dns.name.Name, int, int, int]:
    """Return (qname, qtype, qclass, offset just past the question) of a query."""
    wire, qname, qtype, qclass, end = read_question(data)
    if qname is None:
        qname = dns.name.from_wire(wire, 0)[0]
    return qname, qtype, qclass, end


def read_question(
    data: bytes | bytearray,
) -> tuple[bytes, dns.name.Name | None, int, int, int]:
    """Return (qname wire, qname or None, qtype, qclass, offset just past the question).

    The usual name, plain labels and no compression, is only checked here and left
    unparsed (``None``): a dnspython parse costs several times the rest of a
    forwarded query, and most queries never need the ``Name``.  Anything else
    (a compression pointer, an odd label type, a truncated or over-long name) goes
    to dnspython, which parses it or says what is wrong with it.
    """
    if len(data) < HEADER_LEN:
        raise MalformedQuery("shorter than a DNS header")
    if _U16.unpack_from(data, 4)[0] == 0:
        raise MalformedQuery("no question")
    size = len(data)
    end = plain_name_end(data, HEADER_LEN)
    qname: dns.name.Name | None = None
    if end > 0 and end - HEADER_LEN <= 255:
        wire = bytes(data[HEADER_LEN:end])
    else:
        try:
            qname, used = dns.name.from_wire(bytes(data), HEADER_LEN)
        except dns.exception.DNSException as exc:
            raise MalformedQuery(f"bad question name: {exc}") from exc
        end = HEADER_LEN + used
        wire = qname.to_wire() or b""
    if size < end + 4:
        raise MalformedQuery("truncated question")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, end)
    return wire, qname, qtype, qclass, end + 4
