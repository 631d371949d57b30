"""Small captures for the replay tests, made with dpkt's own writers (pcap and pcapng).

A ``Capture`` collects frames (timestamp, link-layer bytes) for a link type: DNS queries
and responses over UDP or TCP, IPv4 or IPv6, and anything else a test wants in between
(garbage). ``write`` puts them in a file of either format.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import dpkt

ETHERNET, SLL, SLL2, RAW = 1, 113, 276, 101
SERVER_V4, SERVER_V6 = "10.53.0.1", "fd00::53"


def query(name: str, qtype: str = "A", qid: int = 1) -> dns.message.Message:
    message = dns.message.make_query(name, qtype)
    message.id = qid
    return message


def answer(
    message: dns.message.Message, address: str | None = "192.0.2.1", rcode: int = 0
) -> dns.message.Message:
    """The response to ``message``: one A record (``address``) unless an rcode or None."""
    response = dns.message.make_response(message)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    if address is not None and rcode == 0:
        name = message.question[0].name
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", address))
    return response


def _ip(src: str, dst: str, proto: int, payload: dpkt.Packet) -> dpkt.Packet:
    if ipaddress.ip_address(src).version == 4:
        packet = dpkt.ip.IP(
            src=ipaddress.ip_address(src).packed,
            dst=ipaddress.ip_address(dst).packed,
            p=proto,
            data=payload,
            ttl=64,
        )
        packet.len = len(bytes(packet))
        return packet
    packet = dpkt.ip6.IP6(
        src=ipaddress.ip_address(src).packed,
        dst=ipaddress.ip_address(dst).packed,
        nxt=proto,
        hlim=64,
        data=payload,
    )
    packet.plen = len(bytes(payload))
    packet.extension_hdrs = {}
    return packet


@dataclass
class Capture:
    """Frames of one link type, in the order added."""

    linktype: int = ETHERNET
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    _seqs: dict[tuple[str, int, str, int], int] = field(default_factory=dict)

    def frame(self, ip: dpkt.Packet) -> bytes:
        """``ip`` inside this capture's link layer."""
        raw = bytes(ip)
        version = raw[0] >> 4
        ethertype = 0x0800 if version == 4 else 0x86DD
        if self.linktype == ETHERNET:
            return bytes(
                dpkt.ethernet.Ethernet(
                    src=b"\x02\x00\x00\x00\x00\x01",
                    dst=b"\x02\x00\x00\x00\x00\x02",
                    type=ethertype,
                    data=raw,
                )
            )
        if self.linktype == SLL:
            header = struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01", ethertype)
            return header + raw
        if self.linktype == SLL2:
            header = struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 0, 6, b"\x02" + bytes(7))
            return header + raw
        return raw

    def add(self, at: float, ip: dpkt.Packet) -> None:
        self.frames.append((at, self.frame(ip)))

    def garbage(self, at: float, data: bytes) -> None:
        """A frame of raw bytes, whatever they are."""
        self.frames.append((at, data))

    def udp(self, at: float, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
        segment = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
        segment.ulen = len(bytes(segment))
        self.add(at, _ip(src, dst, dpkt.ip.IP_PROTO_UDP, segment))

    def udp_query(
        self,
        at: float,
        client: str,
        port: int,
        message: dns.message.Message,
        response: dns.message.Message | None = None,
        delay: float = 0.001,
        server_port: int = 53,
    ) -> None:
        """A query from ``client``:``port`` and, if given, its response ``delay`` later."""
        server = SERVER_V4 if ipaddress.ip_address(client).version == 4 else SERVER_V6
        self.udp(at, client, port, server, server_port, message.to_wire())
        if response is not None:
            self.udp(at + delay, server, server_port, client, port, response.to_wire())

    def tcp_segment(
        self, at: float, src: str, sport: int, dst: str, dport: int, data: bytes, flags: int
    ) -> None:
        key = (src, sport, dst, dport)
        seq = self._seqs.get(key, 1000)
        segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=data)
        segment.off = 5
        self._seqs[key] = (
            seq + len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)
        ) & 0xFFFFFFFF
        self.add(at, _ip(src, dst, dpkt.ip.IP_PROTO_TCP, segment))

    def tcp_exchange(
        self,
        at: float,
        client: str,
        port: int,
        messages: list[tuple[dns.message.Message, dns.message.Message | None]],
        split: bool = False,
    ) -> None:
        """A TCP connection from ``client``:``port``: handshake, each query (and its
        response, if any), then FIN both ways. ``split``: every query in two segments,
        the cut inside its length prefix."""
        server = SERVER_V4 if ipaddress.ip_address(client).version == 4 else SERVER_V6
        ack, syn, fin, psh = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH
        self.tcp_segment(at, client, port, server, 53, b"", syn)
        self.tcp_segment(at, server, 53, client, port, b"", syn | ack)
        self.tcp_segment(at, client, port, server, 53, b"", ack)
        for message, response in messages:
            wire = message.to_wire()
            framed = struct.pack("!H", len(wire)) + wire
            if split:
                self.tcp_segment(at, client, port, server, 53, framed[:1], psh | ack)
                self.tcp_segment(at, client, port, server, 53, framed[1:], psh | ack)
            else:
                self.tcp_segment(at, client, port, server, 53, framed, psh | ack)
            if response is not None:
                wire = response.to_wire()
                framed = struct.pack("!H", len(wire)) + wire
                self.tcp_segment(at + 0.001, server, 53, client, port, framed, psh | ack)
        self.tcp_segment(at + 0.002, client, port, server, 53, b"", fin | ack)
        self.tcp_segment(at + 0.002, server, 53, client, port, b"", fin | ack)

    def write(self, path: Path, fmt: str = "pcap") -> Path:
        """Write the frames as a pcap or pcapng file."""
        with path.open("wb") as out:
            writer = (
                dpkt.pcapng.Writer(out, linktype=self.linktype)
                if fmt == "pcapng"
                else dpkt.pcap.Writer(out, linktype=self.linktype)
            )
            for at, frame in self.frames:
                writer.writepkt(frame, ts=at)
        return path
