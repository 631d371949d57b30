"""What the frontends share: binding their sockets, the ACL check, the per-query error
boundary's SERVFAIL.

Imports nothing above triodist.frontends (rules' matchers, util and the wire format).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import sys
from collections import Counter

from triodist.rules.matchers import IPAddress, NetmaskGroup
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.address import ComboAddress, split_host_port
from triodist.wire.message import DNSQuestion

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!HHHHHH")
_SERVFAIL_FLAGS = 0x8000 | 0x0080 | 2  # QR, RA, rcode SERVFAIL


def client_ip(host: str) -> IPAddress:
    """A client's address, parsed for the ACL (a scope ID after ``%`` left out)."""
    return ipaddress.ip_address(host.split("%", 1)[0])


def allowed(acl: NetmaskGroup, host: str) -> bool:
    """Whether the ACL lets a client in. Parsing the address costs several times the
    match itself, and clients come back again and again, so the ACL keeps its verdicts
    by address text (and forgets them whenever it changes)."""
    return acl.match_host(host, client_ip)


def answer_error(
    dq: DNSQuestion, exc: Exception, stats: Counter[str], errors: RateLimitedLog
) -> bytes:
    """The per-query boundary: an unexpected error while answering ``dq`` is logged (once a
    minute for each distinct error, the traceback at DEBUG), counted, and answered
    SERVFAIL with the query's question, so that the client, and a TCP connection's other
    queries, go on."""
    errors.unexpected("answer", f"while answering {dq.describe()}", exc)
    stats["unexpected-errors"] += 1
    data = dq.data
    end = dq.question_end if 12 <= dq.question_end <= len(data) else 12
    flags = _SERVFAIL_FLAGS | (data[2] << 8 | data[3]) & 0x0100  # the client's RD
    qid = data[0] << 8 | data[1]
    return _HEADER.pack(qid, flags, 1 if end > 12 else 0, 0, 0, 0) + bytes(data[12:end])


def answer_no_question(
    data: bytes | bytearray, stats: Counter[str], drop: bool = False
) -> bytearray | None:
    """A query with no question (QDCOUNT 0) is answered NOTIMP, as dnsdist does: the query
    sent back whole, QR set and the rcode replaced, every other flag kept.  It is counted
    as a query and an empty query, never as a response.  None for any other query.
    With ``drop`` (``setDropEmptyQueries(true)``) the answer is empty: the frontend sends
    nothing (and closes a TCP connection, as dnsdist does).

    ``data`` is a query's header at least (the frontends check that first)."""
    if data[4] or data[5]:
        return None
    stats["queries"] += 1
    stats["empty-queries"] += 1
    if drop:
        return bytearray()
    reply = bytearray(data)
    reply[2] |= 0x80
    reply[3] = (reply[3] & 0xF0) | _NOTIMP
    return reply


#: The rcode of a query with no question.
_NOTIMP = 4


def bind_udp(address: str, *, reuse_port: bool = False) -> socket.socket:
    host, port = split_host_port(address, 53)
    family = socket.AF_INET6 if ComboAddress(host).isIPv6() else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


#: setsockopt takes a C int: a larger request (dnsdist accepts up to 2**32 - 1) asks for
#: the most, which the kernel caps at its maximum anyway.
_MAX_BUFFER = 2**31 - 1


def set_buffer_sizes(sock: socket.socket, recv: int, send: int, address: str) -> None:
    """dnsdist's ``setUDPSocketBufferSizes``: the receive (``SO_RCVBUF``) and send
    (``SO_SNDBUF``) buffers of a frontend's UDP socket, set once as it is bound; 0 leaves
    the system's value (``net.core.rmem_default``, ``wmem_default`` on Linux).

    Linux grants at most ``net.core.rmem_max`` (``wmem_max``) and reports twice what it
    granted (the other half is its bookkeeping): a buffer smaller than asked is said in a
    warning, since the operator sized it for a burst it now may not hold. A refused
    setsockopt is a warning too, and the socket keeps its size (as dnsdist)."""
    for option, size, what, limit in (
        (socket.SO_RCVBUF, recv, "receive", "net.core.rmem_max"),
        (socket.SO_SNDBUF, send, "send", "net.core.wmem_max"),
    ):
        if size <= 0:
            continue
        size = min(size, _MAX_BUFFER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            granted = sock.getsockopt(socket.SOL_SOCKET, option)
        except OSError as exc:
            log.warning(
                "setUDPSocketBufferSizes: the %s buffer of the UDP socket on %s was not set: %s",
                what,
                address,
                exc.strerror or exc,
            )
            continue
        if sys.platform.startswith("linux"):
            granted //= 2
        if granted < size:
            log.warning(
                "setUDPSocketBufferSizes: the %s buffer of the UDP socket on %s is %d bytes, "
                "not the %d asked for: the kernel caps it at %s",
                what,
                address,
                granted,
                size,
                limit,
            )


def bind_tcp(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = 128
) -> socket.socket:
    family = socket.AF_INET6 if ComboAddress(host).isIPv6() else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_udp_tcp(
    address: str,
    *,
    reuse_port: bool = False,
    tcp: bool = True,
    attempts: int = 50,
    buffers: tuple[int, int] = (0, 0),
) -> tuple[socket.socket, socket.socket | None]:
    """Bind UDP on ``address`` and, when ``tcp``, TCP on the same port; the UDP socket's
    receive and send buffers sized as ``buffers`` asks (``set_buffer_sizes``).

    With port 0 the kernel picks the UDP port; that number may already be taken
    for TCP (an outgoing connection's local port, say), so another UDP port is
    tried, as often as ``attempts``.
    """
    _, wanted = split_host_port(address, 53)
    for attempt in range(attempts):
        try:
            udp = bind_udp(address, reuse_port=reuse_port)
        except OSError as exc:
            raise _naming(exc, "UDP", address) from exc
        if not tcp:
            set_buffer_sizes(udp, *buffers, address)
            return udp, None
        host, port = udp.getsockname()[:2]
        try:
            stream = bind_tcp(host, port, reuse_port=reuse_port)
        except OSError as exc:
            udp.close()
            if wanted != 0 or exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise _naming(exc, "TCP", address) from exc
            continue
        set_buffer_sizes(udp, *buffers, address)
        return udp, stream
    raise AssertionError("unreachable")


def _naming(exc: OSError, what: str, address: str) -> OSError:
    """The error, saying which socket (as dnsdist: "Unable to bind to UDP socket on ...")."""
    return OSError(exc.errno, f"Unable to bind to {what} socket on {address}: {exc.strerror}")
