"""Reading a capture (pcap or pcapng, with dpkt) into the DNS queries to replay, each with
the answer the capture holds for it.

``read_capture`` walks every packet: the link layer (Ethernet, Linux cooked v1 and v2,
raw IP, BSD loopback), IPv4 or IPv6, then UDP or TCP to or from the DNS port. A UDP
datagram, or a message of a TCP stream (length-prefixed, reassembled per flow), is a
query when it goes to the port with QR clear, and a response when it comes from the port
with QR set. Each response is matched to the query it answers (the client's address and
port, the transport, the ID and the question) and becomes that query's ``answer``.

A capture is input from anywhere: a packet that cannot be decoded, a payload that is
not DNS, a file cut short are skipped or end the reading, and are counted in
``CaptureStats``, never raised. What is kept is bounded: the queries (``max_queries``),
the TCP flows being reassembled (``MAX_TCP_FLOWS``, the least recently used dropped
first) and what each holds (``MAX_FLOW_BYTES``, ``MAX_OUT_OF_ORDER``), the queries
waiting for an answer (one table entry per query kept). Whatever passes a bound is
counted.

Imports nothing above triodist.replay but the wire format.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import dpkt

from triodist.replay import DEFAULT_MAX_QUERIES
from triodist.wire.walk import question_end, question_key

#: The pcap magic numbers (both byte orders, micro- and nanosecond) and pcapng's.
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

# Link types, as pcap and pcapng files number them.
_ETHERNET = 1
_SLL = 113
_SLL2 = 276
_RAW = frozenset({12, 14, 101, 228, 229})  # raw IP (the numbers vary by system), IPv4, IPv6
_LOOPBACK = frozenset({0, 108})  # BSD loopback: a 4-byte address family, then IP
#: TCP flows reassembled at once: a new one beyond this pushes out the least recent.
MAX_TCP_FLOWS = 4096
#: What one flow may hold while a message is incomplete: the largest DNS message and its
#: length, and one more segment of the same size.
MAX_FLOW_BYTES = 2 * (65535 + 2)
#: Segments of one flow that came early (after a gap) and wait for the gap to fill (and
#: no more than ``MAX_FLOW_BYTES`` of them).
MAX_OUT_OF_ORDER = 8
#: Copies of one query (same client, port, ID and question) waiting for an answer: a
#: client that resends gets the one answer for each copy.
MAX_COPIES = 8
#: Client addresses kept as text for reuse (the same clients come back again and again).
MAX_ADDRESS_TEXTS = 100_000

_U16 = struct.Struct("!H")


class CaptureError(Exception):
    """The file is not a capture that can be read (not pcap or pcapng, an unknown header)."""


class CapturedQuery:
    """One query of the capture, and what the capture says answered it."""

    __slots__ = (
        "answer",
        "answer_delay",
        "client",
        "client_port",
        "data",
        "index",
        "server",
        "server_port",
        "tcp",
        "time",
    )

    def __init__(
        self,
        time: float,
        client: str,
        client_port: int,
        server: str,
        server_port: int,
        tcp: bool,
        data: bytes,
    ) -> None:
        #: The capture's timestamp (seconds, as the file has it).
        self.time = time
        self.client = client
        self.client_port = client_port
        #: Where it was sent: the address a configuration's rules see as local.
        self.server = server
        self.server_port = server_port
        self.tcp = tcp
        self.data = data
        #: The capture's response, if it has one, and how long after the query it came.
        self.answer: bytes | None = None
        self.answer_delay = 0.0
        #: Its place in the replay (in time order), set once the capture is read.
        self.index = 0


class CaptureStats:
    """What the reading found, beside the queries: counters by name (``counts``), the
    capture's first and last timestamps of a query."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first = 0.0
        self.last = 0.0


class _Flow:
    """One direction of a TCP connection, being reassembled."""

    __slots__ = ("buffer", "early", "next_seq")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.buffer = bytearray()
        #: Segments that came after a gap, by sequence number.
        self.early: dict[int, bytes] = {}


def open_capture(path: Path) -> tuple[Iterator[tuple[float, bytes]], int, BinaryIO]:
    """The packets of the file (timestamp, bytes), its link type, and the open file (for
    the caller to close). ``CaptureError`` for a file that is not a capture."""
    file = path.open("rb")
    try:
        magic = file.read(4)
        file.seek(0)
        reader: Any
        if magic in _PCAP_MAGICS:
            reader = dpkt.pcap.Reader(file)
        elif magic == _PCAPNG_MAGIC:
            reader = dpkt.pcapng.Reader(file)
        else:
            raise CaptureError(f"{path}: not a capture (neither pcap nor pcapng)")
        linktype = int(reader.datalink())
    except CaptureError:
        file.close()
        raise
    except Exception as exc:  # dpkt raises what it meets in a header cut short or forged
        file.close()
        raise CaptureError(
            f"{path}: unreadable capture header ({exc or type(exc).__name__})"
        ) from exc
    return iter(reader), linktype, file


class CaptureReader:
    """Reads one capture's DNS queries and answers (``read``)."""

    def __init__(self, port: int = 53, max_queries: int = DEFAULT_MAX_QUERIES) -> None:
        self.port = port
        self.max_queries = max_queries
        self.stats = CaptureStats()
        self.queries: list[CapturedQuery] = []
        #: Queries waiting for their answer, by (transport, client, port, ID, question).
        self._waiting: dict[tuple[bool, str, int, int, bytes], list[CapturedQuery]] = {}
        self._flows: OrderedDict[tuple[bytes, int, bytes, int], _Flow] = OrderedDict()
        self._texts: dict[bytes, str] = {}

    def read(self, path: Path) -> list[CapturedQuery]:
        """Every query of the capture at ``path``, in the order of their timestamps."""
        packets, linktype, file = open_capture(path)
        counts = self.stats.counts
        decode = self._link_decoder(linktype)
        try:
            while True:
                try:
                    timestamp, frame = next(packets)
                except StopIteration:
                    break
                except Exception:  # a block or header cut short, a length forged
                    counts["capture-cut-short"] += 1
                    break
                counts["packets"] += 1
                if decode is None:
                    counts["unsupported-link-type"] += 1
                    continue
                try:
                    self._packet(float(timestamp), decode(frame))
                except Exception:  # dpkt raises whatever a forged header leads it to
                    counts["undecodable-packets"] += 1
        finally:
            file.close()
        # Stable: queries with the same timestamp keep the capture's order.
        self.queries.sort(key=lambda q: q.time)
        for index, query in enumerate(self.queries):
            query.index = index
        if self.queries:
            self.stats.first, self.stats.last = self.queries[0].time, self.queries[-1].time
        counts["tcp-flows-left-incomplete"] += sum(1 for f in self._flows.values() if f.buffer)
        self._flows.clear()
        self._waiting.clear()
        return self.queries

    @staticmethod
    def _link_decoder(linktype: int) -> Any:
        """What turns a frame of this link type into its IP packet (a dpkt object)."""
        if linktype == _ETHERNET:
            return lambda frame: dpkt.ethernet.Ethernet(frame).data
        if linktype == _SLL:
            return lambda frame: dpkt.sll.SLL(frame).data
        if linktype == _SLL2:
            return lambda frame: dpkt.sll2.SLL2(frame).data
        if linktype in _RAW:
            return _raw_ip
        if linktype in _LOOPBACK:
            return lambda frame: _raw_ip(frame[4:])
        return None

    def _packet(self, timestamp: float, ip: Any) -> None:
        counts = self.stats.counts
        if isinstance(ip, dpkt.ip.IP):
            if ip.mf or ip.offset:
                counts["ip-fragments"] += 1  # not reassembled: rare for DNS, and hostile
                return
        elif not isinstance(ip, dpkt.ip6.IP6):
            counts["not-ip"] += 1
            return
        transport = ip.data
        if isinstance(transport, dpkt.udp.UDP):
            self._udp(timestamp, ip, transport)
        elif isinstance(transport, dpkt.tcp.TCP):
            self._tcp(timestamp, ip, transport)
        else:
            counts["not-udp-or-tcp"] += 1

    def _udp(self, timestamp: float, ip: Any, udp: Any) -> None:
        data = bytes(udp.data)
        if udp.dport == self.port:
            self._message(timestamp, ip.src, udp.sport, ip.dst, udp.dport, data, False, True)
        elif udp.sport == self.port:
            self._message(timestamp, ip.dst, udp.dport, ip.src, udp.sport, data, False, False)
        else:
            self.stats.counts["other-ports"] += 1

    def _tcp(self, timestamp: float, ip: Any, tcp: Any) -> None:
        counts = self.stats.counts
        to_port = tcp.dport == self.port
        if to_port:
            client, client_port, server, server_port = ip.src, tcp.sport, ip.dst, tcp.dport
        elif tcp.sport == self.port:
            client, client_port, server, server_port = ip.dst, tcp.dport, ip.src, tcp.sport
        else:
            counts["other-ports"] += 1
            return
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        flows = self._flows
        if tcp.flags & (dpkt.tcp.TH_RST | dpkt.tcp.TH_SYN):
            # A new connection (or one reset): nothing of an older one under these ports
            # goes with it.
            flows.pop(key, None)
        flow = flows.get(key)
        if flow is None:
            if len(flows) >= MAX_TCP_FLOWS:
                _, oldest = flows.popitem(last=False)
                # Only a flow that held part of a message loses something: an idle one
                # (a kept-open connection between queries) picks up where it is if it
                # comes back, as a capture begun mid-connection does.
                if oldest.buffer or oldest.early:
                    counts["tcp-flows-over-bound"] += 1
            flow = flows[key] = _Flow()
        else:
            flows.move_to_end(key)
        seq = tcp.seq
        if tcp.flags & dpkt.tcp.TH_SYN:
            flow.next_seq = (seq + 1) & 0xFFFFFFFF
        data = bytes(tcp.data)
        if data:
            if flow.next_seq is None:  # the capture began mid-connection: start here
                flow.next_seq = seq
            self._segment(flow, seq, data)
            for message in _messages(flow.buffer):
                self._message(
                    timestamp, client, client_port, server, server_port, message, True, to_port
                )
            if len(flow.buffer) > MAX_FLOW_BYTES:
                counts["tcp-flow-bytes-over-bound"] += 1
                flow.buffer.clear()
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            if flow.buffer:
                counts["tcp-messages-cut-short"] += 1
            flows.pop(key, None)

    def _segment(self, flow: _Flow, seq: int, data: bytes) -> None:
        """Add a segment's bytes in stream order: a retransmitted part is left out, one
        after a gap waits (bounded) for the gap to fill."""
        counts = self.stats.counts
        assert flow.next_seq is not None
        offset = (seq - flow.next_seq) & 0xFFFFFFFF
        if offset >= 0x80000000:  # before what we have: a retransmission, maybe partial
            behind = 0x100000000 - offset
            if behind >= len(data):
                counts["tcp-retransmissions"] += 1
                return
            data = data[behind:]
            offset = 0
        if offset > 0:
            # Bounded in count and in bytes: 8 forged segments of 64 KiB each, in each
            # of 4,096 flows, would hold 2 GiB.
            early = flow.early
            if (
                len(early) >= MAX_OUT_OF_ORDER
                or sum(map(len, early.values())) + len(data) > MAX_FLOW_BYTES
            ):
                counts["tcp-out-of-order-over-bound"] += 1
                return
            flow.early[seq] = data
            return
        flow.buffer += data
        flow.next_seq = (flow.next_seq + len(data)) & 0xFFFFFFFF
        while flow.early:
            waiting = flow.early.pop(flow.next_seq, None)
            if waiting is None:
                break
            flow.buffer += waiting
            flow.next_seq = (flow.next_seq + len(waiting)) & 0xFFFFFFFF

    def _message(
        self,
        timestamp: float,
        client: bytes,
        client_port: int,
        server: bytes,
        server_port: int,
        data: bytes,
        tcp: bool,
        to_port: bool,
    ) -> None:
        """One DNS message between a client and the DNS port (``to_port``: sent to it):
        a query kept, or a response matched to the query it answers."""
        counts = self.stats.counts
        end = question_end(data)
        # Too short, cannot be walked, no question, or a query coming from the port or a
        # response going to it: not what a DNS server receives and sends.
        if end <= 12 or bool(data[2] & 0x80) == to_port:
            counts["not-dns"] += 1
            return
        qid = _U16.unpack_from(data, 0)[0]
        key = (tcp, self._text(client), client_port, qid, question_key(data, end))
        if data[2] & 0x80:
            counts["responses"] += 1
            copies = self._waiting.pop(key, None)
            if copies is None:
                # Once --max-queries is reached, most answer a query left out: not
                # responses "to no query in the capture".
                full = len(self.queries) >= self.max_queries
                counts["responses-after-max" if full else "responses-without-query"] += 1
                return
            for query in copies:
                query.answer = data
                query.answer_delay = max(0.0, timestamp - query.time)
            return
        if len(self.queries) >= self.max_queries:
            counts["queries-over-max"] += 1
            return
        counts["queries"] += 1
        query = CapturedQuery(
            timestamp, key[1], client_port, self._text(server), server_port, tcp, data
        )
        self.queries.append(query)
        copies = self._waiting.setdefault(key, [])
        if len(copies) < MAX_COPIES:
            copies.append(query)

    def _text(self, address: bytes) -> str:
        text = self._texts.get(address)
        if text is None:
            family = socket.AF_INET if len(address) == 4 else socket.AF_INET6
            text = socket.inet_ntop(family, address)
            if len(self._texts) < MAX_ADDRESS_TEXTS:
                self._texts[address] = text
        return text


def _raw_ip(frame: bytes) -> Any:
    """A raw IP packet, version 4 or 6 by its first nibble."""
    version = frame[0] >> 4 if frame else 0
    if version == 4:
        return dpkt.ip.IP(frame)
    if version == 6:
        return dpkt.ip6.IP6(frame)
    return None


def _messages(buffer: bytearray) -> Iterator[bytes]:
    """The whole length-prefixed messages at the start of ``buffer``, taken out of it."""
    while len(buffer) >= 2:
        length = buffer[0] << 8 | buffer[1]
        if len(buffer) < 2 + length:
            return
        message = bytes(buffer[2 : 2 + length])
        del buffer[: 2 + length]
        yield message
