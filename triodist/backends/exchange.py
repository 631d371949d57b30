"""What the UDP and TCP sides share about one exchange with a backend: why a query was
not sent (``NotSent``), and whether a message is the reply to it (``reply_matches``).

Questions are read and compared by the one walker (``triodist.wire.walk``). Imports
nothing above triodist.wire.
"""

from __future__ import annotations

import enum

from triodist.wire.walk import HEADER_LEN, has_question


class NotSent(enum.Enum):
    """Why a query was not sent (``UDPSide.send_udp``, ``TCPSide.query_tcp``): a local
    failure, not the backend's silence, so not a ``downstream-timeouts``. The value is
    the counter it is counted in."""

    #: No socket (the server is not open), or the kernel refused the send (EAGAIN and
    #: ENOBUFS when the socket's buffer is full, ECONNREFUSED after a port unreachable...):
    #: dnsdist's counter for the same.
    SEND_ERROR = "downstream-send-errors"
    #: Every query ID the server may have in flight is taken (``setMaxUDPOutstanding``):
    #: dnsdist reuses the oldest ID then, losing that query's reply; triodist drops the new one.
    OVERLOADED = "downstream-overload-drops"


def reply_matches(reply: bytes, question: bytes, allow_empty: bool = False) -> bool:
    """Whether a backend's reply answers our question (``walk.question_key``): the same
    name in any case (the backend may answer with 0x20 case) and exactly the same type and
    class (``walk.has_question``), or, as dnsdist accepts, no question at all in an error
    reply (FORMERR, SERVFAIL, NOTIMP, REFUSED...), and with ``allow_empty``
    (``setAllowEmptyResponse``) in a NOERROR or NXDOMAIN one too.
    A message without QR (a query, say one echoed back) is never a reply, as in dnsdist."""
    if len(reply) < HEADER_LEN or not reply[2] & 0x80:
        return False
    if has_question(reply, question):
        return True
    return reply[4:6] == b"\x00\x00" and (allow_empty or (reply[3] & 0x0F) not in (0, 3))
