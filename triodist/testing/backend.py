"""A small authoritative DNS server on Trio.

It serves one zone over UDP and TCP on the same port and is meant for demos
and for tests, where it plays the part of a backend whose behaviour can be
changed at run time::

    server = AuthServer()                       # built-in example.org. zone
    host, port = await nursery.start(server.serve)
    server.mode = "servfail"                    # every answer is now SERVFAIL
    server.modes["slow.example.org."] = "slow"  # ... except for this name
    server.received[-1].message.flags           # last query that arrived

Modes (attribute :attr:`AuthServer.mode`, or per query name in
:attr:`AuthServer.modes`):

``"answer"``
    Authoritative answers from the zone: NOERROR with AA and the records,
    NXDOMAIN or NODATA with the SOA in the authority section, REFUSED for
    names outside the zone (or another class).  Over UDP an answer larger
    than the client's EDNS buffer size (512 bytes without EDNS) is sent with
    TC set and its record sections emptied.
``"silent"``
    Never replies.
``"servfail"`` / ``"refused"``
    Replies with that rcode and the question only.
``"echo"``
    Replies NOERROR with the question only.
``"truncate"``
    Over UDP, TC set and no records; over TCP, the full answer.
``"slow"``
    Like ``"answer"`` but after :attr:`AuthServer.delay` seconds
    (``trio.sleep``, so it follows a mock clock).

The name ``whoami.<origin>`` always has a TXT record holding the server's
``name``, so that tests running several servers can tell which one answered.

Health checks: a proxy in front of this server checks it with queries for
``a.root-servers.net.`` by default.  Unless :attr:`AuthServer.modes` names that
name, such a query is answered NOERROR (whatever :attr:`AuthServer.mode` is) and
kept in :attr:`AuthServer.health_checks` instead of :attr:`AuthServer.received`
and the query counters, so that tests count only the queries they sent.

Robustness: undecodable datagrams are ignored, a TCP connection with broken
framing or an undecodable message is closed (other connections are not
affected), an exception while building an answer yields SERVFAIL, and several
queries may be pipelined on one TCP connection (their answers may come back in
any order).

Beside the layers, for the demo and the tests only (no module of the server imports it);
it imports nothing of triodist, so that it plays a backend that knows nothing of the proxy.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.zone
import trio

from triodist.wire.walk import question_end

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_ZONE",
    "MODES",
    "AuthServer",
    "Mode",
    "ReceivedQuery",
    "Transport",
]

Mode = Literal["answer", "silent", "servfail", "refused", "echo", "truncate", "slow"]
Transport = Literal["udp", "tcp"]

MODES: Final[frozenset[str]] = frozenset(
    {"answer", "silent", "servfail", "refused", "echo", "truncate", "slow"}
)

DEFAULT_ORIGIN: Final = "example.org."

_DEFAULT_CHECK_NAME: Final = dns.name.from_text("a.root-servers.net.")

_BIG_TXT: Final = " ".join(f'"big-txt-chunk-{i:02d}-{"x" * 40}"' for i in range(12))

#: The built-in zone, relative to the origin (``example.org.`` by default).
DEFAULT_ZONE: Final = f"""\
$TTL 3600
@        IN SOA   ns1 hostmaster 2024010101 7200 900 1209600 300
@        IN NS    ns1
@        IN NS    ns2
@        IN A     192.0.2.1
@        IN MX    10 mail
ns1      IN A     192.0.2.53
ns2      IN AAAA  2001:db8::53
www      IN A     192.0.2.10
www      IN A     192.0.2.11
www      IN AAAA  2001:db8::10
mail     IN A     192.0.2.25
mail     IN AAAA  2001:db8::25
alias    IN CNAME www
chain    IN CNAME alias
outside  IN CNAME www.example.net.
txt      IN TXT   "hello world"
big      IN TXT   {_BIG_TXT}
short 5  IN A     192.0.2.5
long 86400 IN A   192.0.2.86
multi    IN A     192.0.2.20
multi    IN AAAA  2001:db8::20
multi    IN TXT   "multi"
*.wild   IN A     192.0.2.99
*.wild   IN TXT   "wildcard"
deep.empty IN A   192.0.2.30
"""

_MAX_CNAME_CHAIN: Final = 8
_UDP_RECV_SIZE: Final = 65535
_DEFAULT_UDP_LIMIT: Final = 512
_OUR_EDNS_PAYLOAD: Final = 1232


@dataclass(frozen=True, slots=True)
class ReceivedQuery:
    """A query as it reached the server."""

    message: dns.message.Message
    transport: Transport
    peer: tuple[str, int]
    time: float = field(default=0.0)

    @property
    def qname(self) -> dns.name.Name | None:
        return self.message.question[0].name if self.message.question else None

    @property
    def qtype(self) -> int | None:
        return self.message.question[0].rdtype if self.message.question else None


class AuthServer:
    """Authoritative server for one zone; see the module documentation.

    :param zone_text: zone in master-file format, names relative to
        ``origin``; ``None`` for :data:`DEFAULT_ZONE`.
    :param origin: the zone's apex.
    :param name: the text served as ``whoami.<origin>. TXT``.
    :param mode: the initial mode.
    :param delay: seconds the ``"slow"`` mode waits before answering.
    :param history: how many received queries :attr:`received` keeps.
    :param tcp_idle_timeout: seconds an idle TCP connection is kept open.
    :raises ValueError: if the zone text does not parse or has no SOA at its apex.
    """

    def __init__(
        self,
        zone_text: str | None = None,
        origin: str = DEFAULT_ORIGIN,
        *,
        name: str = "authserver",
        mode: Mode = "answer",
        delay: float = 1.0,
        history: int = 1000,
        tcp_idle_timeout: float = 30.0,
    ) -> None:
        self.origin = dns.name.from_text(origin)
        try:
            self.zone = dns.zone.from_text(
                DEFAULT_ZONE if zone_text is None else zone_text,
                origin=self.origin,
                relativize=False,
                check_origin=True,
            )
        except dns.exception.DNSException as exc:
            raise ValueError(f"invalid zone: {exc}") from exc
        self.name = name
        whoami = dns.name.from_text("whoami", self.origin)
        node = self.zone.find_node(whoami, create=True)
        rds = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.TXT, create=True)
        rds.update_ttl(0)
        rds.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [name.encode()]))
        self._soa = self.zone.get_rrset(self.origin, dns.rdatatype.SOA)
        if self._soa is None:
            raise ValueError("zone has no SOA at its origin")

        #: Mode applied to every query, see the module documentation.
        self.mode: Mode = mode
        #: Per query name overrides of :attr:`mode` (keys: absolute names,
        #: case-insensitive; text keys must end with a dot).
        self.modes: dict[str, Mode] = {}
        #: Seconds to wait in the ``"slow"`` mode.
        self.delay = delay
        self.tcp_idle_timeout = tcp_idle_timeout
        #: The last ``history`` queries received (decodable ones only).
        self.received: deque[ReceivedQuery] = deque(maxlen=history)
        self.udp_queries = 0
        self.tcp_queries = 0
        self.tcp_connections = 0
        #: Datagrams or TCP messages that could not be decoded.
        self.malformed = 0
        #: Default health-check queries received (see the module documentation).
        self.health_checks: deque[ReceivedQuery] = deque(maxlen=history)
        #: ``(host, port)`` once :meth:`serve` is listening.
        self.address: tuple[str, int] | None = None

    # ------------------------------------------------------------------
    # statistics

    def reset_stats(self) -> None:
        """Forget received queries and zero the counters."""
        self.received.clear()
        self.health_checks.clear()
        self.udp_queries = self.tcp_queries = self.tcp_connections = self.malformed = 0

    def queries_for(
        self, qname: str | dns.name.Name, qtype: str | int | None = None
    ) -> list[ReceivedQuery]:
        """Received queries (still in :attr:`received`) for a name and type."""
        name = dns.name.from_text(qname) if isinstance(qname, str) else qname
        rdtype = dns.rdatatype.from_text(qtype) if isinstance(qtype, str) else qtype
        return [
            r for r in self.received if r.qname == name and (rdtype is None or r.qtype == rdtype)
        ]

    # ------------------------------------------------------------------
    # answering

    def mode_for(self, query: dns.message.Message) -> Mode:
        """The mode that applies to ``query``."""
        if self.modes and query.question:
            wanted = query.question[0].name
            for key, mode in self.modes.items():
                if dns.name.from_text(key) == wanted:
                    return mode
        return self.mode

    async def handle(
        self, query: dns.message.Message, transport: Transport
    ) -> dns.message.Message | None:
        """The reply to ``query`` (``None``: send nothing), following the mode."""
        if self._is_default_check(query):
            return self._bare(query, dns.rcode.NOERROR)
        mode = self.mode_for(query)
        if mode == "silent":
            return None
        if mode == "slow":
            await trio.sleep(self.delay)
        try:
            if mode in ("answer", "slow"):
                return self.answer(query)
            if mode == "truncate":
                response = self.answer(query)
                if transport == "udp":
                    _strip_records(response)
                    response.flags |= dns.flags.TC
                return response
            if mode == "servfail":
                return self._bare(query, dns.rcode.SERVFAIL)
            if mode == "refused":
                return self._bare(query, dns.rcode.REFUSED)
            if mode == "echo":
                return self._bare(query, dns.rcode.NOERROR)
            raise ValueError(f"unknown mode {mode!r}")
        except Exception:
            return self._bare(query, dns.rcode.SERVFAIL)

    def _bare(self, query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=_OUR_EDNS_PAYLOAD)
        response.flags |= query.flags & dns.flags.CD
        response.set_rcode(rcode)
        return response

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The authoritative answer to ``query`` from the zone."""
        response = dns.message.make_response(query, our_payload=_OUR_EDNS_PAYLOAD)
        response.flags |= query.flags & dns.flags.CD
        if query.edns > 0:
            response.use_edns(0, 0, _OUR_EDNS_PAYLOAD)
            response.set_rcode(dns.rcode.BADVERS)
            return response
        if query.edns >= 0 and query.ednsflags & dns.flags.DO:
            response.ednsflags |= dns.flags.DO
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN or not question.name.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response

        response.flags |= dns.flags.AA
        name = question.name
        rdtype = question.rdtype
        for _ in range(_MAX_CNAME_CHAIN):
            node = self._lookup(name)
            if node is None:
                if self._has_descendants(name):
                    self._add_soa(response)  # empty non-terminal: NODATA
                else:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    self._add_soa(response)
                return response
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is not None and rdtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
                response.answer.append(_rrset(name, cname))
                target: dns.name.Name = next(iter(cname)).target
                if not target.is_subdomain(self.origin):
                    return response
                name = target
                continue
            found = [
                rds for rds in node.rdatasets if rdtype == dns.rdatatype.ANY or rds.rdtype == rdtype
            ]
            if not found:
                self._add_soa(response)
                return response
            for rds in found:
                response.answer.append(_rrset(name, rds))
            return response
        return response  # CNAME chain too long: what we have so far

    def _lookup(self, name: dns.name.Name) -> dns.node.Node | None:
        """The node for ``name``, possibly synthesised from a wildcard."""
        node = self.zone.get_node(name)
        if node is not None or self._has_descendants(name):
            return node
        # Wildcard from the closest encloser.
        encloser = name.parent()
        while encloser.is_subdomain(self.origin):
            if self.zone.get_node(encloser) is not None or self._has_descendants(encloser):
                return self.zone.get_node(dns.name.Name((b"*", *encloser.labels)))
            if encloser == self.origin:
                break
            encloser = encloser.parent()
        return None

    def _has_descendants(self, name: dns.name.Name) -> bool:
        return any(other != name and other.is_subdomain(name) for other in self.zone.nodes)

    def _add_soa(self, response: dns.message.Message) -> None:
        assert self._soa is not None
        ttl = min(self._soa.ttl, next(iter(self._soa)).minimum)
        response.authority.append(dns.rrset.from_rdata_list(self.origin, ttl, list(self._soa)))

    # ------------------------------------------------------------------
    # wire handling

    def _record(
        self, wire: bytes, transport: Transport, peer: tuple[str, int]
    ) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            self.malformed += 1
            return None
        if query.flags & dns.flags.QR:
            self.malformed += 1
            return None
        received = ReceivedQuery(
            query, transport, (str(peer[0]), int(peer[1])), trio.current_time()
        )
        if self._is_default_check(query):
            self.health_checks.append(received)
            return query
        if transport == "udp":
            self.udp_queries += 1
        else:
            self.tcp_queries += 1
        self.received.append(received)
        return query

    def _is_default_check(self, query: dns.message.Message) -> bool:
        """A proxy's default health check, which this server answers on the side."""
        return (
            len(query.question) == 1
            and query.question[0].name == _DEFAULT_CHECK_NAME
            and not any(dns.name.from_text(k) == _DEFAULT_CHECK_NAME for k in self.modes)
        )

    async def _answer_wire(self, query: dns.message.Message, transport: Transport) -> bytes | None:
        response = await self.handle(query, transport)
        if response is None:
            return None
        wire = _render(response)
        if transport == "udp":
            limit = (
                max(_DEFAULT_UDP_LIMIT, query.payload) if query.edns >= 0 else _DEFAULT_UDP_LIMIT
            )
            if len(wire) > limit:
                _strip_records(response)
                response.flags |= dns.flags.TC
                wire = _render(response)
        return wire

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve UDP and TCP on ``host``:``port`` until cancelled.

        With ``port`` 0 a free port is picked for UDP and TCP binds the same
        number (retrying with another port if TCP's is taken).  Reports
        ``(host, port)`` through ``task_status``.
        """
        udp, tcp = await _bind_pair(host, port)
        with udp, tcp:
            bound = udp.getsockname()
            self.address = (host, int(bound[1]))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._udp_loop, udp, nursery)
                nursery.start_soon(self._tcp_loop, trio.SocketListener(tcp), nursery)
                task_status.started(self.address)

    async def _udp_loop(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                data, peer = await sock.recvfrom(_UDP_RECV_SIZE)
            except OSError:  # e.g. ICMP errors reported on the socket
                continue
            query = self._record(data, "udp", peer)
            if query is not None:
                nursery.start_soon(self._udp_reply, sock, query, peer)

    async def _udp_reply(
        self, sock: trio.socket.SocketType, query: dns.message.Message, peer: tuple[str, int]
    ) -> None:
        wire = await self._answer_wire(query, "udp")
        if wire is not None:
            with contextlib.suppress(OSError):
                await sock.sendto(wire, peer)

    async def _tcp_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError:
                continue
            self.tcp_connections += 1
            nursery.start_soon(self._tcp_connection, stream)

    async def _tcp_connection(self, stream: trio.SocketStream) -> None:
        send_lock = trio.Lock()
        try:
            peername = stream.socket.getpeername()
        except OSError:
            peername = ("", 0)
        peer = (str(peername[0]), int(peername[1]))

        async def reply(query: dns.message.Message) -> None:
            wire = await self._answer_wire(query, "tcp")
            if wire is None:
                return
            async with send_lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(len(wire).to_bytes(2, "big") + wire)

        async with stream, trio.open_nursery() as nursery:
            buffer = bytearray()
            while True:
                chunk = b""
                with trio.move_on_after(self.tcp_idle_timeout):
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        chunk = await stream.receive_some(65536)
                if not chunk:
                    break  # peer closed its side, or idle: finish pending replies
                buffer += chunk
                while len(buffer) >= 2:
                    length = int.from_bytes(buffer[:2], "big")
                    if len(buffer) < 2 + length:
                        break
                    wire = bytes(buffer[2 : 2 + length])
                    del buffer[: 2 + length]
                    query = self._record(wire, "tcp", peer) if length else None
                    if query is None:
                        if not length:
                            self.malformed += 1
                        # Broken stream: close this connection only.
                        nursery.cancel_scope.cancel()
                        return
                    nursery.start_soon(reply, query)


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


def _render(response: dns.message.Message) -> bytes:
    return response.to_wire(max_size=65535)


def _strip_records(response: dns.message.Message) -> None:
    response.answer = []
    response.authority = []
    response.additional = []


async def _bind_pair(
    host: str, port: int, attempts: int = 50
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error: OSError | None = None
    for _ in range(attempts):
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await udp.bind((host, port))
            chosen = udp.getsockname()[1]
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await tcp.bind((host, chosen))
            tcp.listen(128)
        except OSError as exc:
            udp.close()
            tcp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                last_error = exc
                continue
            raise
        return udp, tcp
    assert last_error is not None
    raise last_error


#: One A record for the question's name (a pointer to offset 12), TTL 60, 192.0.2.99.
_ONE_A = bytes.fromhex("c00c 0001 0001 0000003c 0004 c0000263".replace(" ", ""))


def answer_with_one_a(query: bytes) -> bytes | None:
    """``query`` answered NOERROR with one A record (192.0.2.99, TTL 60), from its bytes
    alone; None when its question cannot be walked.  For a backend that shares the
    machine, or the process, with what is measured: it parses nothing beyond the
    question, whereas :class:`AuthServer` parses every query with dnspython."""
    end = question_end(query)
    if end < 0 or query[4:6] != b"\x00\x01":
        return None
    header = query[:2] + bytes(((query[2] | 0x80) & ~0x04, 0x80)) + query[4:6] + b"\x00\x01"
    return header + query[8:end] + _ONE_A + query[end:]
