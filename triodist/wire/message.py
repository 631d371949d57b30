"""DNS objects: wire-format views that rules read and change.

The wire bytes (a ``bytearray``) are the source of truth.  The header is read and
patched in place with ``struct``; the question name is parsed once, on arrival;
the full message is parsed with dnspython only when something asks for it
(records, EDNS details), and any change made through such a parse is written
back to the bytes at once.  Nothing here knows about sockets or Lua: the
camelCase methods exist so that a ``rules.lua`` written for dnsdist can call
them (``dq:getTag("x")``, ``dq.dh:setRD(false)``), and they are ordinary
Python methods that the tests call directly.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

_HEADER = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_TYPE_CLASS = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

OPT = 41


class LuaDict(dict[str, Any]):
    """A dict that Lua reads like a table: a missing key is nil, not an error."""

    def __missing__(self, key: str) -> None:
        return None


class MalformedQuery(ValueError):
    """The bytes are not a DNS query we can route (too short, bad name, no question)."""


class Header:
    """dnsdist's ``dq.dh``: the 12-byte header, read and written in place."""

    __slots__ = ("_data",)

    def __init__(self, data: bytearray) -> None:
        self._data = data

    def _flags(self) -> int:
        return int(_U16.unpack_from(self._data, 2)[0])

    def _set_flag(self, mask: int, on: Any) -> None:
        flags = self._flags()
        flags = flags | mask if on else flags & ~mask
        _U16.pack_into(self._data, 2, flags)

    def getID(self) -> int:
        return int(_U16.unpack_from(self._data, 0)[0])

    def setID(self, qid: int) -> None:
        _U16.pack_into(self._data, 0, int(qid) & 0xFFFF)

    def getQR(self) -> bool:
        return bool(self._flags() & QR)

    def setQR(self, on: Any) -> None:
        self._set_flag(QR, on)

    def getAA(self) -> bool:
        return bool(self._flags() & AA)

    def setAA(self, on: Any) -> None:
        self._set_flag(AA, on)

    def getTC(self) -> bool:
        return bool(self._flags() & TC)

    def setTC(self, on: Any) -> None:
        self._set_flag(TC, on)

    def getRD(self) -> bool:
        return bool(self._flags() & RD)

    def setRD(self, on: Any) -> None:
        self._set_flag(RD, on)

    def getRA(self) -> bool:
        return bool(self._flags() & RA)

    def setRA(self, on: Any) -> None:
        self._set_flag(RA, on)

    def getAD(self) -> bool:
        return bool(self._flags() & AD)

    def setAD(self, on: Any) -> None:
        self._set_flag(AD, on)

    def getCD(self) -> bool:
        return bool(self._flags() & CD)

    def setCD(self, on: Any) -> None:
        self._set_flag(CD, on)


class DNSName:
    """dnsdist's DNSName, as Lua sees it (``dq.qname:toString()``)."""

    __slots__ = ("name",)

    def __init__(self, name: dns.name.Name | str) -> None:
        if isinstance(name, str):
            name = dns.name.from_text(name)
        self.name = name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DNSName):
            return bool(self.name == other.name)
        if isinstance(other, dns.name.Name):
            return bool(self.name == other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.toString()

    def __repr__(self) -> str:
        return f"DNSName({self.toString()!r})"

    def toString(self) -> str:
        return str(self.name.to_text())

    def toStringNoDot(self) -> str:
        return str(self.name.to_text(omit_final_dot=True)) or "."

    def toDNSString(self) -> bytes:
        return self.name.to_wire() or b""

    def countLabels(self) -> int:
        return len(self.name.labels) - 1

    def wirelength(self) -> int:
        return len(self.name.to_wire() or b"")

    def isPartOf(self, other: Any) -> bool:
        return self.name.is_subdomain(as_name(other))

    def equal(self, other: Any) -> bool:
        return bool(self.name == as_name(other))

    def chopOff(self) -> bool:
        if self.name == dns.name.root:
            return False
        self.name = self.name.parent()
        return True

    def makeRelative(self, zone: Any) -> DNSName:
        return DNSName(self.name.relativize(as_name(zone)))

    def hash(self) -> int:
        return hash(self.name.canonicalize()) & 0xFFFFFFFF

    def isRoot(self) -> bool:
        return bool(self.name == dns.name.root)


def as_name(value: Any) -> dns.name.Name:
    """Accept what dnsdist accepts where a name is expected: a DNSName or a string."""
    if isinstance(value, DNSName):
        return value.name
    if isinstance(value, dns.name.Name):
        return value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return dns.name.from_text(value)
    raise TypeError(f"expected a DNS name, got {value!r}")


class ComboAddress:
    """dnsdist's ComboAddress: an IP address with a port."""

    __slots__ = ("ip", "port")

    def __init__(self, ip: str, port: int = 0) -> None:
        self.ip = ipaddress.ip_address(ip.split("%", 1)[0])
        self.port = port

    @classmethod
    def parse(cls, text: str, default_port: int = 0) -> ComboAddress:
        host, port = split_host_port(text, default_port)
        return cls(host, port)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ComboAddress):
            return NotImplemented
        return (self.ip, self.port) == (other.ip, other.port)

    def __hash__(self) -> int:
        return hash((self.ip, self.port))

    def __str__(self) -> str:
        return self.toStringWithPort()

    def toString(self) -> str:
        return str(self.ip)

    def toStringWithPort(self) -> str:
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    def getPort(self) -> int:
        return self.port

    def isIPv4(self) -> bool:
        return self.ip.version == 4

    def isIPv6(self) -> bool:
        return self.ip.version == 6

    def isMappedIPv4(self) -> bool:
        return isinstance(self.ip, ipaddress.IPv6Address) and self.ip.ipv4_mapped is not None

    def getRaw(self) -> bytes:
        return self.ip.packed

    def truncate(self, bits: int) -> None:
        net = ipaddress.ip_network(f"{self.ip}/{int(bits)}", strict=False)
        self.ip = net.network_address


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``"192.0.2.1:53"``, ``"[2001:db8::1]:53"``, ``"2001:db8::1"`` or ``"192.0.2.1"``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = _port(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if text.count(":") == 1:
        host, port_text = text.split(":")
        return host, _port(port_text)
    return text, default_port


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return port


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
    if len(data) < 12:
        raise MalformedQuery("shorter than a DNS header")
    if _U16.unpack_from(data, 4)[0] == 0:
        raise MalformedQuery("no question")
    size = len(data)
    pos = 12
    while pos < size:
        length = data[pos]
        if length == 0 or length > 63:
            break
        pos += length + 1
    qname: dns.name.Name | None = None
    if pos < size and data[pos] == 0 and pos - 11 <= 255:
        end = pos + 1
        wire = bytes(data[12:end])
    else:
        try:
            qname, used = dns.name.from_wire(bytes(data), 12)
        except dns.exception.DNSException as exc:
            raise MalformedQuery(f"bad question name: {exc}") from exc
        end = 12 + used
        wire = qname.to_wire() or b""
    if size < end + 4:
        raise MalformedQuery("truncated question")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, end)
    return wire, qname, qtype, qclass, end + 4


def find_opt(data: bytes | bytearray, question_end: int) -> tuple[int, int] | None:
    """Locate the OPT record in the additional section: (start offset, end offset)."""
    _, _, _, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    if arcount == 0:
        return None
    pos = question_end
    try:
        for index in range(ancount + nscount + arcount):
            start = pos
            pos = _skip_name(data, pos)
            rtype, _, _, rdlen = _RR_FIXED.unpack_from(data, pos)
            pos += 10 + rdlen
            if pos > len(data):
                return None
            if rtype == OPT and index >= ancount + nscount:
                return start, pos
    except (struct.error, IndexError):
        return None
    return None


def _name_end(data: bytes | bytearray, pos: int) -> int:
    """The offset just past the name at ``pos`` (a compression pointer ends it, unfollowed),
    or -1 when the name runs off the end of ``data``."""
    size = len(data)
    while pos < size:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2 if pos + 2 <= size else -1
        pos += length + 1
    return -1


def _skip_name(data: bytes | bytearray, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += length + 1


class DNSQuestion:
    """One query on its way through triodist: dnsdist's ``DNSQuestion`` (``dq``).

    Built from the wire bytes of a query; ``data`` stays the bytes that will be
    forwarded (or, once the query has been turned into an answer, sent back).

    Slots, no instance dict: a query held by asynchronous processing keeps its
    ``DNSQuestion`` as long as it is held, and 100,000 can be held at once. For the same
    reason the tags dict is made only when a tag is set, and ``dh`` is a view made on
    each use. Lua (and Python) can read and set the attributes dnsdist has; setting
    any other is an error, as in dnsdist.
    """

    __slots__ = (
        "_name",
        "_qname_obj",
        "_tags",
        "async_registry",
        "data",
        "delay_ms",
        "ecsOverride",
        "ecsPrefixLength",
        "local",
        "may_wait",
        "orig_flags",
        "pool",
        "protocol",
        "qclass",
        "qname_wire",
        "qtype",
        "query_time",
        "question_end",
        "remote",
        "rule_fired",
        "size",
        "skipCache",
        "suspension",
        "tcp",
        "useECS",
    )

    is_response = False

    def __init__(
        self,
        data: bytes | bytearray,
        remote: tuple[str, int],
        local: tuple[str, int],
        *,
        tcp: bool = False,
        protocol: str | None = None,
        now: float | None = None,
    ) -> None:
        self.data = bytearray(data)
        #: The question name as uncompressed wire bytes (the case as received); the
        #: ``Name`` (``name``) is parsed from them only when something asks for it.
        self.qname_wire: bytes
        self._name: dns.name.Name | None
        self.qname_wire, self._name, self.qtype, self.qclass, self.question_end = read_question(
            self.data
        )
        # The client's flags as they arrived: RD and CD are given back in the response
        # even if a rule changed them on the way to the backend (as dnsdist does).
        self.orig_flags = int(_U16.unpack_from(self.data, 2)[0])
        self.remote = remote
        self.local = local
        self.tcp = tcp
        self.protocol = protocol or ("Do53 TCP" if tcp else "Do53 UDP")
        self._tags: dict[str, str] | None = None
        self.pool = ""
        self.skipCache = False
        self.useECS = False
        self.ecsOverride = False
        self.ecsPrefixLength = 0
        self.size = 4096
        self.delay_ms = 0
        # When the query arrived (Trio's clock); a frontend that read a batch of
        # queries at one wake-up gives the time of that wake-up.
        self.query_time = trio.current_time() if now is None else now
        self.rule_fired = ""
        #: Asynchronous processing: the registry ``suspend`` uses (set by the pipeline)
        #: and, while the object is suspended, its entry there.
        self.async_registry: Any = None
        self.suspension: Any = None
        self._qname_obj: DNSName | None = None
        #: False when the frontend has as many queries waiting as it allows: a query that
        #: would wait (for a backend, a suspension) is then dropped and counted instead.
        self.may_wait = True

    @property
    def name(self) -> dns.name.Name:
        """The question name, parsed on first use."""
        if self._name is None:
            self._name = dns.name.from_wire(self.qname_wire, 0)[0]
        return self._name

    @name.setter
    def name(self, value: dns.name.Name) -> None:
        self._name = value
        self.qname_wire = value.to_wire() or b""

    # --- attributes dnsdist exposes -------------------------------------------------

    @property
    def qname(self) -> DNSName:
        if self._qname_obj is None:
            self._qname_obj = DNSName(self.name)
        return self._qname_obj

    @property
    def tags(self) -> dict[str, str]:
        """The query's tags (the dict is made on first use)."""
        if self._tags is None:
            self._tags = {}
        return self._tags

    @property
    def dh(self) -> Header:
        # A view on ``data``, made on each use rather than kept: it costs less to make
        # than to hold.
        return Header(self.data)

    @property
    def len(self) -> int:
        return len(self.data)

    @property
    def opcode(self) -> int:
        return (self.data[2] >> 3) & 0x0F

    @property
    def rcode(self) -> int:
        return self.data[3] & 0x0F

    @rcode.setter
    def rcode(self, value: int) -> None:
        self.data[3] = (self.data[3] & 0xF0) | (int(value) & 0x0F)

    @property
    def remoteaddr(self) -> ComboAddress:
        return ComboAddress(self.remote[0], self.remote[1])

    @property
    def localaddr(self) -> ComboAddress:
        return ComboAddress(self.local[0], self.local[1])

    @property
    def id(self) -> int:
        return int(_U16.unpack_from(self.data, 0)[0])

    @property
    def flags(self) -> int:
        return int(_U16.unpack_from(self.data, 2)[0])

    def is_answer(self) -> bool:
        """True once a rule has turned the query into an answer (QR set)."""
        return bool(self.data[2] & 0x80)

    # --- methods dnsdist exposes ----------------------------------------------------

    def getHeader(self) -> Header:
        return self.dh

    def setTag(self, key: Any, value: Any) -> None:
        self.tags[str(key)] = str(value)

    def getTag(self, key: Any) -> str:
        return "" if self._tags is None else self._tags.get(str(key), "")

    def unsetTag(self, key: Any) -> None:
        if self._tags is not None:
            self._tags.pop(str(key), None)

    def getTagArray(self) -> LuaDict:
        return LuaDict(self._tags or ())

    def setTagArray(self, tags: Mapping[Any, Any]) -> None:
        for key, value in tags.items():
            self.setTag(key, value)

    def getContent(self) -> bytes:
        return bytes(self.data)

    def setContent(self, content: bytes | str) -> None:
        raw = content.encode("latin-1") if isinstance(content, str) else bytes(content)
        if len(raw) < 12:
            raise ValueError("setContent: content shorter than a DNS header")
        # dnsdist keeps the query's ID whatever the new content says.
        qid = self.id
        self.data[:] = raw
        _U16.pack_into(self.data, 0, qid)
        try:
            wire, qname, self.qtype, self.qclass, self.question_end = read_question(self.data)
            self.qname_wire, self._name = wire, qname
            self._qname_obj = None
        except MalformedQuery:
            self.question_end = 12

    def getDO(self) -> bool:
        opt = find_opt(self.data, self.question_end)
        if opt is None:
            return False
        # OPT: name(1) type(2) class(2) ttl(4: ext-rcode, version, flags) rdlen(2)
        flags = _U16.unpack_from(self.data, opt[0] + 7)[0]
        return bool(flags & 0x8000)

    def getProtocol(self) -> str:
        return self.protocol

    def getQueryTime(self) -> dict[str, int]:
        seconds = self.query_time
        return {"tv_sec": int(seconds), "tv_nsec": int((seconds % 1) * 1e9)}

    def getElapsedUs(self) -> float:
        return (trio.current_time() - self.query_time) * 1e6

    def getEDNSOptions(self) -> dict[int, list[bytes]]:
        message = self.message()
        result: dict[int, list[bytes]] = {}
        for option in message.options:
            result.setdefault(int(option.otype), []).append(option.to_wire() or b"")
        return result

    def getServerNameIndication(self) -> str:
        return ""

    def suspend(self, async_id: Any, query_id: Any, timeout_ms: Any) -> bool:
        """Hold this object until ``getAsynchronousObject(async_id, query_id)`` resumes or
        drops it, or ``timeout_ms`` passes; false when it cannot be held (see asyncproc)."""
        if self.async_registry is None:
            return False
        return bool(self.async_registry.suspend(self, async_id, query_id, timeout_ms))

    def spoof(self, what: Any) -> None:
        """Turn the query into an answer with A/AAAA records or one CNAME (dnsdist's ``spoof``)."""
        if isinstance(what, str | bytes):
            items = [what]
        elif isinstance(what, Mapping):
            items = list(what.values())
        else:
            items = list(what)
        spoof_texts(self, [i.decode("latin-1") if isinstance(i, bytes) else str(i) for i in items])

    def setNegativeAndAdditionalSOA(
        self,
        nxd: Any,
        zone: Any,
        ttl: int,
        mname: Any,
        rname: Any,
        serial: int,
        refresh: int,
        retry: int,
        expire: int,
        minimum: int,
        soa_in_authority: Any = False,
    ) -> bool:
        soa = dns.rdata.from_text(
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            f"{as_name(mname)} {as_name(rname)} {int(serial)} {int(refresh)} {int(retry)} "
            f"{int(expire)} {int(minimum)}",
        )
        rrs: list[RR] = [(as_name(zone), int(dns.rdatatype.SOA), int(ttl), soa)]
        set_response_header(self.data, rcode=3 if nxd else 0)
        rebuild(
            self,
            answer=None,
            authority=rrs if soa_in_authority else [],
            additional=[] if soa_in_authority else rrs,
        )
        return True

    # --- whole-message access (lazy dnspython parse) -------------------------------

    def message(self) -> dns.message.Message:
        return dns.message.from_wire(bytes(self.data), ignore_trailing=True)

    def describe(self) -> str:
        qtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(self.qtype))
        return f"{self.name.to_text()} {qtype}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def set_response_header(
    data: bytearray, *, rcode: int | None = None, aa: bool = False, ra_from_rd: bool = True
) -> None:
    """Make ``data``'s header that of an answer: QR set, RA from RD, AA and AD as dnsdist does."""
    flags = _U16.unpack_from(data, 2)[0]
    flags |= QR
    if ra_from_rd:
        flags = flags | RA if flags & RD else flags & ~RA
    flags = flags | AA if aa else flags & ~AA
    flags &= ~AD
    if rcode is not None:
        flags = (flags & ~0x000F) | (rcode & 0x0F)
    _U16.pack_into(data, 2, flags)


# A record to write: owner, type, TTL, and rdata (parsed, or raw wire bytes).
RR = tuple[dns.name.Name, int, int, dns.rdata.Rdata | bytes]


def rebuild(
    dq: DNSQuestion,
    *,
    answer: list[RR] | None,
    authority: list[RR] | None = None,
    additional: list[RR] | None = None,
    keep_opt: bool = True,
) -> None:
    """Rewrite the sections after the question, keeping the header and question bytes.

    ``None`` for a section means "empty".  The client's OPT record is kept (so EDNS
    survives a self-generated answer), as dnsdist does.
    """
    opt = find_opt(dq.data, dq.question_end) if keep_opt else None
    opt_bytes = bytes(dq.data[opt[0] : opt[1]]) if opt else b""
    out = bytearray(dq.data[: dq.question_end])
    counts = []
    # The question name is parsed only when a record is written (it is the first
    # compression target): clearing the records, as setRCode does, needs no name.
    compress: dict[dns.name.Name, int] = {dq.name: 12} if answer or authority or additional else {}
    for section in (answer or [], authority or [], additional or []):
        for owner, rtype, ttl, rdata in section:
            out += _owner_wire(owner, compress, len(out))
            rdata_wire = rdata if isinstance(rdata, bytes) else _rdata_wire(rdata, compress)
            # Class IN whatever the query's class, as dnsdist's spoofed records have.
            out += _RR_FIXED.pack(rtype, 1, ttl, len(rdata_wire))
            out += rdata_wire
        counts.append(len(section or []))
    arcount = counts[2]
    if opt_bytes:
        out += opt_bytes
        arcount += 1
    struct.pack_into("!HHH", out, 6, counts[0], counts[1], arcount)
    dq.data[:] = out


def _owner_wire(owner: dns.name.Name, compress: dict[dns.name.Name, int], pos: int) -> bytes:
    if owner in compress:
        return _U16.pack(0xC000 | compress[owner])
    if pos < 0x4000:
        compress[owner] = pos
    return owner.to_wire() or b""


def _rdata_wire(rdata: dns.rdata.Rdata, compress: dict[dns.name.Name, int]) -> bytes:
    # Names inside rdata may point at names already written, but never define new
    # targets: the rdata is written after its length, which we only know afterwards.
    wire = rdata.to_wire(compress=dict(compress), origin=None)
    return wire or b""


def make_rcode_answer(dq: DNSQuestion, rcode: int, *, clear_records: bool = False) -> None:
    """Turn the query into an answer with ``rcode`` (dnsdist's RCodeAction / setRCode)."""
    set_response_header(dq.data, rcode=rcode & 0x0F, ra_from_rd=False)
    if clear_records:
        rebuild(dq, answer=None)


def make_spoof_answer(
    dq: DNSQuestion,
    addresses: Iterable[str],
    *,
    cname: str | None = None,
    ttl: int = 60,
    aa: bool = False,
) -> bool:
    """Answer with the addresses that match the query type, or with one CNAME.

    Returns False, leaving the query untouched, when no address fits the query type.
    """
    records: list[RR] = []
    if cname is not None:
        target = dns.name.from_text(cname)
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, target.to_text())
        records.append((dq.name, int(dns.rdatatype.CNAME), ttl, rdata))
    else:
        for text in addresses:
            ip = ipaddress.ip_address(text)
            rtype = dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA
            if dq.qtype not in (rtype, dns.rdatatype.ANY):
                continue
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, str(ip))
            records.append((dq.name, int(rtype), ttl, rdata))
        if not records:
            return False
    set_response_header(dq.data, rcode=0, aa=aa)
    rebuild(dq, answer=records)
    return True


def spoof_texts(dq: DNSQuestion, items: list[str]) -> bool:
    """Spoof with addresses, or with a CNAME when given one name (dnsdist's rule)."""
    if items and all(_is_ip(item) for item in items):
        return make_spoof_answer(dq, items)
    return make_spoof_answer(dq, [], cname=items[0]) if items else False


def spoof_from_string(dq: DNSQuestion, text: str) -> bool:
    """A Lua action's ``DNSAction.Spoof, "..."``: addresses (comma-separated) or a CNAME."""
    return spoof_texts(dq, [item.strip() for item in text.split(",") if item.strip()])


def make_truncated_answer(dq: DNSQuestion) -> None:
    """An empty answer with TC set, so that the client retries over TCP."""
    set_response_header(dq.data, rcode=None, ra_from_rd=True)
    _U16.pack_into(dq.data, 2, _U16.unpack_from(dq.data, 2)[0] | TC)
    rebuild(dq, answer=None)


class DNSResponse(DNSQuestion):
    """A response on its way back to the client: dnsdist's ``DNSResponse`` (``dr``)."""

    __slots__ = ()

    is_response = True

    @classmethod
    def from_query(cls, dq: DNSQuestion, response: bytes | bytearray) -> DNSResponse:
        dr = cls.__new__(cls)
        # Every slot but data and _qname_obj, as the query has it (its tags dict shared).
        dr.data = bytearray(response)
        dr.qname_wire = dq.qname_wire
        dr._name = dq._name
        dr.qtype = dq.qtype
        dr.qclass = dq.qclass
        dr.question_end = dq.question_end
        dr.orig_flags = dq.orig_flags
        dr.remote = dq.remote
        dr.local = dq.local
        dr.tcp = dq.tcp
        dr.protocol = dq.protocol
        dr._tags = dq._tags
        dr.pool = dq.pool
        dr.skipCache = dq.skipCache
        dr.useECS = dq.useECS
        dr.ecsOverride = dq.ecsOverride
        dr.ecsPrefixLength = dq.ecsPrefixLength
        dr.size = dq.size
        dr.delay_ms = dq.delay_ms
        dr.query_time = dq.query_time
        dr.rule_fired = dq.rule_fired
        dr.async_registry = dq.async_registry
        dr.suspension = dq.suspension
        dr.may_wait = dq.may_wait
        dr._qname_obj = None
        end = dq.question_end
        # The usual case: the same question as the query's (a backend reply is matched on
        # it, a self-answer is the query itself), so the parse already done is reused.
        if (
            response[12:end].lower() == dq.data[12:end].lower()
            and _U16.unpack_from(response, 4)[0] == _U16.unpack_from(dq.data, 4)[0]
        ):
            return dr
        try:
            wire, qname, dr.qtype, dr.qclass, dr.question_end = read_question(dr.data)
        except MalformedQuery:
            dr.question_end = 12
        else:
            dr.qname_wire, dr._name = wire, qname
        return dr

    def _edit_records(self, edit: Any) -> None:
        message = self.message()
        for section in (message.answer, message.authority, message.additional):
            edit(section)
        wire = message.to_wire(max_size=65535)
        self.data[:] = wire

    def set_ttls(self, fn: Any, *, only_types: frozenset[int] = frozenset()) -> None:
        """Apply ``fn(ttl) -> ttl`` to the records' TTLs in place (all types when
        ``only_types`` is empty; OPT never).

        The response comes from a backend: where its records cannot be followed (a name
        or a record running off the end, counts larger than the records present), the
        walk stops quietly, the TTLs before that point changed, as dnsdist's
        ``editDNSPacketTTL`` does, rather than failing the response."""
        data = self.data
        size = len(data)
        _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
        pos = self.question_end
        for _ in range(qdcount - 1):
            pos = _name_end(data, pos)
            if pos < 0:
                return
            pos += 4
        for _ in range(ancount + nscount + arcount):
            pos = _name_end(data, pos)
            if pos < 0 or pos + 10 > size:
                return
            rtype, _, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            if rtype != OPT and (not only_types or rtype in only_types):
                struct.pack_into("!I", data, pos + 4, int(fn(ttl)) & 0xFFFFFFFF)
            pos += 10 + rdlen

    def clear_record_types(self, types: frozenset[int]) -> None:
        def edit(section: list[dns.rrset.RRset]) -> None:
            section[:] = [rrset for rrset in section if rrset.rdtype not in types]

        self._edit_records(edit)

    def restore_question(self, dq: DNSQuestion) -> None:
        """Give the answer the client's ID, RD and CD flags (and, where it matches, the
        client's qname case)."""
        # Names compared as wire bytes, case-insensitively (as ``Name`` equality does),
        # so that no ``Name`` is parsed for this; a response sharing the query's
        # question shares its bytes object too.
        same = self.qname_wire is dq.qname_wire or self.qname_wire.lower() == dq.qname_wire.lower()
        restore_client_view(self.data, dq, self.question_end == dq.question_end and same)


def restore_client_view(answer: bytearray, dq: DNSQuestion, same_question: bool) -> None:
    """Give an answer to ``dq`` the client's ID, RD and CD flags and, when it carries the
    query's question (any case: ``same_question``), the client's qname case."""
    _U16.pack_into(answer, 0, dq.id)
    keep = RD | CD
    flags = (_U16.unpack_from(answer, 2)[0] & ~keep) | (dq.orig_flags & keep)
    _U16.pack_into(answer, 2, flags)
    if same_question:
        answer[12 : dq.question_end - 4] = dq.data[12 : dq.question_end - 4]


def edns_payload(dq: DNSQuestion) -> int:
    """The client's EDNS UDP payload size, or 512 without EDNS."""
    opt = find_opt(dq.data, dq.question_end)
    if opt is None:
        return 512
    return max(512, int(_U16.unpack_from(dq.data, opt[0] + 3)[0]))


def udp_answer_limit(dq: DNSQuestion, maximum: int) -> int:
    """The largest UDP answer ``dq``'s client may be sent: 512 bytes without EDNS, else
    its EDNS payload size, and never more than ``maximum`` (nor less than 512)."""
    return max(512, min(edns_payload(dq), maximum))


def truncate_answer(answer: bytes | bytearray, limit: int) -> bytearray:
    """``answer`` cut down for a client that allows ``limit`` bytes: TC set, the header's
    other flags and rcode kept, the question, and the OPT record (its options left out
    if they would not fit), as dnsdist answers a UDP client an answer too large for it.

    Hostile bytes give a smaller answer, never an error: a question that cannot be
    walked is left out, and so is an OPT record that cannot be found."""
    out = bytearray(answer[:12])
    flags = _U16.unpack_from(answer, 2)[0] | TC
    qdcount = _U16.unpack_from(answer, 4)[0]
    question_end = 12
    try:
        for _ in range(qdcount):
            question_end = _skip_name(answer, question_end) + 4
        if question_end > len(answer):
            raise IndexError
        opt = find_opt(answer, question_end)
    except IndexError:
        qdcount, question_end, opt = 0, 12, None
    out += answer[12:question_end]
    arcount = 0
    if opt is not None and answer[opt[0]] == 0:  # an OPT record is owned by the root
        record = answer[opt[0] : opt[1]]
        if len(out) + len(record) > limit:
            # The OPT record alone, without its options: root name, type, class, TTL.
            record = bytes(record[:9]) + b"\x00\x00"
        if len(out) + len(record) <= limit:
            out += record
            arcount = 1
    _HEADER.pack_into(out, 0, _U16.unpack_from(answer, 0)[0], flags, qdcount, 0, 0, arcount)
    return out
