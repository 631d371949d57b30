"""The address a datagram was sent to, on a UDP socket bound to every address.

A listener on ``0.0.0.0`` or ``::`` receives queries sent to any of the host's
addresses, and ``getsockname`` says only "any". The kernel tells the real destination
of each datagram when asked (``IP_PKTINFO``, ``IPV6_RECVPKTINFO``) in the ancillary
data that ``recvmsg`` returns; a query's ``dq.localaddr`` is then that address, as in
dnsdist. The answer is sent back from the same address (the same option, given to
``sendmsg``): left to the routing table, the source could be another of the host's
addresses, and a client that checks where answers come from would discard it.

A socket bound to one address needs none of this: its frontend keeps the cheaper
``recvfrom``/``sendto``.

Imports nothing of triodist.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

#: Linux's ``IP_PKTINFO`` (Python's socket module does not name it before 3.12's).
IP_PKTINFO = int(getattr(socket, "IP_PKTINFO", 8))

# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
_IN_PKTINFO = struct.Struct("=i4s4s")
# struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned int ipi6_ifindex; }
_IN6_PKTINFO = struct.Struct("=16sI")

#: Room for the largest of the two in the ancillary data.
ANCILLARY_SIZE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))

_WILDCARDS = frozenset({"0.0.0.0", "::"})


def enable(sock: socket.socket) -> bool:
    """Ask the kernel for each datagram's destination when ``sock`` is bound to every
    address; True when it will say (the frontend then uses :func:`receive` and
    :func:`send`), False for a socket bound to one address, or a system that refuses."""
    if sock.getsockname()[0] not in _WILDCARDS:
        return False
    try:
        if sock.family == socket.AF_INET6:
            # Also covers IPv4 datagrams on a dual-stack socket (as ::ffff:a.b.c.d).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except OSError:
        return False
    return True


def destination(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    """The destination address in ``recvmsg``'s ancillary data, or None when there is none
    (or it is cut short)."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            return socket.inet_ntop(socket.AF_INET, _IN_PKTINFO.unpack_from(data)[2])
        if (
            level == socket.IPPROTO_IPV6
            and kind == socket.IPV6_PKTINFO
            and len(data) >= _IN6_PKTINFO.size
        ):
            # An IPv4 datagram on a dual-stack socket shows as ::ffff:a.b.c.d, as its
            # sender's address does.
            return socket.inet_ntop(socket.AF_INET6, _IN6_PKTINFO.unpack_from(data)[0])
    return None


def receive(sock: socket.socket, size: int) -> tuple[bytes, tuple[str, int], str | None]:
    """One datagram: its bytes (at most ``size``), the sender, and the address it was sent
    to (None if the kernel did not say). Raises what ``recvmsg`` raises
    (``BlockingIOError`` when there is nothing to read)."""
    data, ancillary, _, addr = sock.recvmsg(size, ANCILLARY_SIZE)
    return data, addr, destination(ancillary)


def send(sock: socket.socket, data: bytes | bytearray, addr: tuple[str, int], source: str) -> None:
    """Send ``data`` to ``addr`` from the local address ``source`` (the query's
    destination). Raises what ``sendmsg`` raises."""
    if sock.family == socket.AF_INET6:
        ip = ipaddress.ip_address(source)
        packed = ipaddress.IPv6Address(f"::ffff:{ip}").packed if ip.version == 4 else ip.packed
        info = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(packed, 0))
    else:
        spec_dst = socket.inet_pton(socket.AF_INET, source)
        info = (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, spec_dst, bytes(4)))
    sock.sendmsg([data], [info], 0, addr)
