"""DNS objects: wire-format views that rules read and change.

The wire bytes (a ``bytearray``) are the source of truth.  The header is read and
patched in place with ``struct``; the question name is parsed once, on arrival;
the full message is parsed with dnspython only when something asks for it
(records, EDNS details), and any change made through such a parse is written
back to the bytes at once.  Nothing here knows about sockets or Lua: the
camelCase methods exist so that a ``rules.lua`` written for dnsdist can call
them (``dq:getTag("x")``, ``dq.dh:setRD(false)``), and they are ordinary
Python methods that the tests call directly.

This module holds the query and the response (``DNSQuestion``, ``DNSResponse``); the
pieces they are made of are beside it: the header (``header``), names (``names``),
addresses (``address``), reading the question (``question``), the walker over the
bytes (``walk``) and the answer builders (``build``).

Imports nothing above triodist.wire.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

from triodist.wire import address, build, ednsoptions, header, names, question, walk
from triodist.wire.build import spoof_texts
from triodist.wire.walk import OPT, WalkError, counts, records, skip_questions

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

#: What a query (or response) may grow to, its trailing data included: dnsdist's buffer
#: over UDP, and the largest message a two-byte length prefix allows over TCP and DoT.
MAX_UDP_SIZE = 4096
MAX_TCP_SIZE = 65535


class LuaDict(dict[str, Any]):
    """A dict that Lua reads like a table: a missing key is nil, not an error."""

    def __missing__(self, key: str) -> None:
        return None


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
        "_temp_failure_ttl",
        "async_registry",
        "client_payload",
        "data",
        "delay_ms",
        "ecs",
        "ecsOverride",
        "ecsPrefixLength",
        "edns_rcode",
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
        "whole_packet",
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
        self.qname_wire, self._name, self.qtype, self.qclass, self.question_end = (
            question.read_question(self.data)
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
        # dnsdist's default: a server with useClientSubnet adds ECS unless a rule says
        # not to. The pipeline sets ecsOverride and ecsPrefixLength (below) from
        # setECSOverride and setECSSourcePrefixV4/V6 as the query arrives.
        self.useECS = True
        #: The query's client subnet state (``triodist.wire.ecs.ECSState``), made only
        #: when a rule sets a subnet or the query is given one on its way to a backend.
        self.ecs: Any = None
        #: How long a SERVFAIL or REFUSED answer to this query may be cached, in place
        #: of the cache's temporaryFailureTTL (``tempFailureTTL``); None: the cache's.
        self._temp_failure_ttl: int | None = None
        self.ecsOverride = False
        self.ecsPrefixLength = 0
        self.size = 4096
        self.delay_ms = 0
        #: The upper bits of an extended rcode a rule answered with (ERCodeAction), for
        #: the OPT record of the answer (``build.finish_self_answer``).
        self.edns_rcode = 0
        # The answer is a whole packet a rule gave (setContent, SpoofPacket): sent as it
        # is, its own OPT record (or none) kept, as dnsdist does with a full packet.
        self.whole_packet = False
        #: The client's EDNS payload size, kept when an answer made here replaced its OPT
        #: record (the UDP answer's limit is still the client's); 0: read it from ``data``.
        self.client_payload = 0
        # When the query arrived (Trio's clock); a frontend that read a batch of
        # queries at one wake-up gives the time of that wake-up.
        self.query_time = trio.current_time() if now is None else now
        self.rule_fired = ""
        #: Asynchronous processing: the registry ``suspend`` uses (set by the pipeline)
        #: and, while the object is suspended, its entry there.
        self.async_registry: Any = None
        self.suspension: Any = None
        self._qname_obj: names.DNSName | None = None
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
    def qname(self) -> names.DNSName:
        if self._qname_obj is None:
            self._qname_obj = names.DNSName(self.name)
        return self._qname_obj

    @property
    def tags(self) -> dict[str, str]:
        """The query's tags (the dict is made on first use)."""
        if self._tags is None:
            self._tags = {}
        return self._tags

    @property
    def dh(self) -> header.Header:
        # A view on ``data``, made on each use rather than kept: it costs less to make
        # than to hold.
        return header.Header(self.data)

    @property
    def tempFailureTTL(self) -> int | None:
        """dnsdist's ``dq.tempFailureTTL``: nil, or the seconds a SERVFAIL or REFUSED
        answer to this query is cached for (``SetTempFailureCacheTTLAction``)."""
        return self._temp_failure_ttl

    @tempFailureTTL.setter
    def tempFailureTTL(self, value: Any) -> None:
        # Checked here, where Lua sets it: a bad value would fail only at the cache.
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not float(value).is_integer()
            or not 0 <= value <= 0xFFFFFFFF
        ):
            raise ValueError(
                f"tempFailureTTL: expected nil or seconds from 0 to 4294967295, got {value!r}"
            )
        self._temp_failure_ttl = None if value is None else int(value)

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
    def remoteaddr(self) -> address.ComboAddress:
        return address.ComboAddress(self.remote[0], self.remote[1])

    @property
    def localaddr(self) -> address.ComboAddress:
        return address.ComboAddress(self.local[0], self.local[1])

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

    def getHeader(self) -> header.Header:
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
        if not self.client_payload:
            # The client's payload size still bounds the UDP answer, not the content's.
            self.client_payload = build.edns_payload(self)
        self.whole_packet = True
        self.data[:] = raw
        _U16.pack_into(self.data, 0, qid)
        try:
            wire, qname, self.qtype, self.qclass, self.question_end = question.read_question(
                self.data
            )
            self.qname_wire, self._name = wire, qname
            self._qname_obj = None
        except question.MalformedQuery:
            self.question_end = 12

    def getDO(self) -> bool:
        opt = walk.find_opt(self.data, self.question_end)
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

    def getEDNSOptions(self) -> ednsoptions.EDNSOptions:
        """The OPT record's options by code, each an ``EDNSOptionView`` (``count()``,
        ``getValues()``), as dnsdist gives them; empty without EDNS."""
        return ednsoptions.edns_options(self.data, self.question_end)

    def getServerNameIndication(self) -> str:
        return ""

    # --- trailing data: bytes after the DNS message -----------------------------------

    def getTrailingData(self) -> bytes:
        """The bytes after the message's last record (dnsdist's ``getTrailingData``):
        empty when there are none, or when the records cannot be walked."""
        return bytes(self.data[walk.message_end(self.data) :])

    def setTrailingData(self, tail: bytes | str) -> bool:
        """Replace the trailing data with ``tail`` (empty: remove it). False when the
        message and ``tail`` would not fit in what the query may grow to (4096 bytes
        over UDP, 65535 over TCP and DoT), as dnsdist; the old trailing data is gone
        even then, as in dnsdist."""
        raw = tail.encode("latin-1") if isinstance(tail, str) else bytes(tail)
        del self.data[walk.message_end(self.data) :]
        if not raw:
            return True
        if len(self.data) + len(raw) > (MAX_TCP_SIZE if self.tcp else MAX_UDP_SIZE):
            return False
        self.data += raw
        return True

    def suspend(self, async_id: Any, query_id: Any, timeout_ms: Any) -> bool:
        """Hold this object until ``getAsynchronousObject(async_id, query_id)`` resumes or
        drops it, or ``timeout_ms`` passes; false when it cannot be held (see asyncproc)."""
        if self.async_registry is None:
            return False
        return bool(self.async_registry.suspend(self, async_id, query_id, timeout_ms))

    def spoof(self, what: Any) -> None:
        """Turn the query into an answer (dnsdist's ``spoof``): a table of addresses
        (``newCA``) gives the A/AAAA records of the query's type; a table of strings
        gives one record of the query's type per string, its rdata raw. One string
        (addresses separated by commas, or a name for a CNAME) is triodist's own.
        Nothing that fits the query leaves it untouched, as in dnsdist."""
        if isinstance(what, str | bytes):
            spoof_texts(self, [what.decode("latin-1") if isinstance(what, bytes) else what])
            return
        # A Lua table (or a Python mapping) by its values, in order; a list as it is.
        items = list(what.values()) if hasattr(what, "values") else list(what)
        aa = bool(self.data[2] & 0x04)  # a rule may have set AA: kept, as dnsdist keeps it
        if all(isinstance(i, address.ComboAddress) for i in items):
            build.make_spoof_answer(self, [i.toString() for i in items], aa=aa)
        elif all(isinstance(i, str | bytes) for i in items):
            raws = [i.encode("latin-1") if isinstance(i, str) else i for i in items]
            build.make_raw_spoof_answer(self, raws)
        else:
            raise TypeError("spoof: expected a table of addresses (newCA) or of raw rdata strings")

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
            f"{names.as_name(mname)} {names.as_name(rname)} {int(serial)} {int(refresh)} "
            f"{int(retry)} {int(expire)} {int(minimum)}",
        )
        rrs: list[build.RR] = [(names.as_name(zone), int(dns.rdatatype.SOA), int(ttl), soa)]
        header.set_response_header(self.data, rcode=3 if nxd else 0)
        build.rebuild(
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
        dr._temp_failure_ttl = dq._temp_failure_ttl
        dr.ecsOverride = dq.ecsOverride
        dr.ecsPrefixLength = dq.ecsPrefixLength
        # Not the query's: only a backend's reply to it has an ECS addition to undo
        # (the pipeline hands it the state), never a cache hit or a self-answer.
        dr.ecs = None
        dr.size = dq.size
        dr.delay_ms = dq.delay_ms
        dr.edns_rcode = dq.edns_rcode
        dr.whole_packet = dq.whole_packet
        dr.client_payload = dq.client_payload
        dr.query_time = dq.query_time
        dr.rule_fired = dq.rule_fired
        dr.async_registry = dq.async_registry
        dr.suspension = dq.suspension
        dr.may_wait = dq.may_wait
        dr._qname_obj = None
        end = dq.question_end
        # The usual case: the same question as the query's (a backend reply is matched on
        # it, a self-answer is the query itself), so the parse already done is reused.
        # The same: the name in any case, the type and class exactly (type 97 is not 65).
        if (
            walk.has_question(response, walk.question_key(dq.data, end))
            and _U16.unpack_from(response, 4)[0] == _U16.unpack_from(dq.data, 4)[0]
        ):
            return dr
        try:
            wire, qname, dr.qtype, dr.qclass, dr.question_end = question.read_question(dr.data)
        except question.MalformedQuery:
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
        qdcount, ancount, nscount, arcount = counts(data)
        pos = skip_questions(data, self.question_end, qdcount - 1)
        if pos < 0:
            return
        try:
            for _, _, rtype, _, ttl, _, rdata in records(
                data, pos, ancount + nscount + arcount, whole=False
            ):
                if rtype != OPT and (not only_types or rtype in only_types):
                    # The TTL field: the 4 bytes after type and class, 6 before the data.
                    _U32.pack_into(data, rdata - 6, int(fn(ttl)) & 0xFFFFFFFF)
        except WalkError:
            return

    def editTTLs(self, func: Any) -> None:
        """dnsdist's ``dr:editTTLs(func)``: ``func(section, qclass, qtype, ttl)`` is called
        for each record, in order (section 1 answer, 2 authority, 3 additional), and the
        TTL becomes what it returns, unless that is 0.

        As dnsdist's ``editDNSPacketTTL``: the walk ends at the OPT record (records after
        it are not visited), and where the records cannot be followed, or ``func`` fails
        or returns something that is not a number, it stops quietly, the TTLs before that
        point changed and the response otherwise untouched."""
        data = self.data
        if len(data) < 12:
            return
        qdcount, ancount, nscount, arcount = counts(data)
        pos = skip_questions(data, 12, qdcount)
        if pos < 0:
            return
        first_additional = ancount + nscount
        try:
            for index, _, rtype, rclass, ttl, _, rdata in records(
                data, pos, first_additional + arcount, whole=False
            ):
                if rtype == OPT:
                    return
                section = 1 if index < ancount else 2 if index < first_additional else 3
                new_ttl = func(section, rclass, rtype, ttl)
                if isinstance(new_ttl, bool) or not isinstance(new_ttl, int | float):
                    return
                new_ttl = int(new_ttl) & 0xFFFFFFFF
                if new_ttl:
                    _U32.pack_into(data, rdata - 6, new_ttl)
        except Exception:  # dnsdist's walk ends quietly on any error, func's too
            return

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
        build.restore_client_view(self.data, dq, self.question_end == dq.question_end and same)
