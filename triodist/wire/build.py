"""Answers made from a query's bytes: the sections after the question rewritten
(:func:`rebuild`), rcode, spoofed and truncated answers, and an answer fitted to its
client (the client's ID, flags and qname case; the UDP size it allows).

The builders take any object with a query's bytes and what was read from them
(:class:`Query`: a ``DNSQuestion`` is one), so that the message views can use them
without this module importing those views.

Imports nothing above triodist.wire.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import Protocol

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from triodist.wire import edns
from triodist.wire.address import is_ip
from triodist.wire.header import AA, CD, RD, TC, set_response_header
from triodist.wire.walk import HEADER_LEN, find_opt, name_end, skip_questions

_HEADER = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR_FIXED = struct.Struct("!HHIH")


class Query(Protocol):
    """What the builders need of a query: its bytes (changed in place) and what was
    read from them on arrival."""

    @property
    def data(self) -> bytearray: ...

    @property
    def question_end(self) -> int: ...

    @property
    def name(self) -> dns.name.Name: ...

    @property
    def qtype(self) -> int: ...

    @property
    def id(self) -> int: ...

    @property
    def orig_flags(self) -> int: ...

    client_payload: int


# A record to write: owner, type, TTL, and rdata (parsed, or raw wire bytes).
RR = tuple[dns.name.Name, int, int, dns.rdata.Rdata | bytes]


def rebuild(
    dq: Query,
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


def make_rcode_answer(dq: Query, rcode: int, *, clear_records: bool = False) -> None:
    """Turn the query into an answer with ``rcode`` (dnsdist's RCodeAction / setRCode)."""
    set_response_header(dq.data, rcode=rcode & 0x0F, ra_from_rd=False)
    if clear_records:
        rebuild(dq, answer=None)


def make_spoof_answer(
    dq: Query,
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


def spoof_texts(dq: Query, items: list[str]) -> bool:
    """Spoof with addresses, or with a CNAME when given one name (dnsdist's rule)."""
    if items and all(is_ip(item) for item in items):
        return make_spoof_answer(dq, items)
    return make_spoof_answer(dq, [], cname=items[0]) if items else False


def spoof_from_string(dq: Query, text: str) -> bool:
    """A Lua action's ``DNSAction.Spoof, "..."``: addresses (comma-separated) or a CNAME."""
    return spoof_texts(dq, [item.strip() for item in text.split(",") if item.strip()])


def make_truncated_answer(dq: Query) -> None:
    """An answer with TC set, so that the client retries over TCP: the query itself
    with its header made an answer's, as dnsdist's TCAction answers. A query carries no
    answer to cut; what it does carry (its OPT record, trailing data) comes back as it
    came, as it does from dnsdist."""
    set_response_header(dq.data, rcode=None, ra_from_rd=True)
    _U16.pack_into(dq.data, 2, _U16.unpack_from(dq.data, 2)[0] | TC)


def restore_client_view(answer: bytearray, dq: Query, same_question: bool) -> None:
    """Give an answer to ``dq`` the client's ID, RD and CD flags and, when it carries the
    query's question (any case: ``same_question``), the client's qname case."""
    _U16.pack_into(answer, 0, dq.id)
    keep = RD | CD
    flags = (_U16.unpack_from(answer, 2)[0] & ~keep) | (dq.orig_flags & keep)
    _U16.pack_into(answer, 2, flags)
    if same_question:
        answer[12 : dq.question_end - 4] = dq.data[12 : dq.question_end - 4]


def edns_payload(dq: Query) -> int:
    """The client's EDNS UDP payload size, or 512 without EDNS."""
    if dq.client_payload:
        return dq.client_payload
    opt = find_opt(dq.data, dq.question_end)
    if opt is None:
        return 512
    return max(512, int(_U16.unpack_from(dq.data, opt[0] + 3)[0]))


def udp_answer_limit(dq: Query, maximum: int) -> int:
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
    question_end = skip_questions(answer, HEADER_LEN, qdcount)
    if question_end < 0:
        qdcount, question_end, opt = 0, HEADER_LEN, None
    else:
        opt = find_opt(answer, question_end)
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


def strip_truncated(answer: bytes | bytearray) -> bytearray:
    """A truncated (TC) answer cut to its header and question, as dnsdist's ``truncateTC``
    cuts a backend's: the records go, and an OPT record is given back bare (its payload
    size and DO bit kept; no options, extended rcode and version 0), as a resolver
    retrying over TCP needs no more."""
    out = truncate_answer(answer, len(answer))
    if _U16.unpack_from(out, 10)[0]:  # the OPT record was kept, just after the question
        opt = skip_questions(out, HEADER_LEN, _U16.unpack_from(out, 4)[0])
        do_bit = out[opt + 7] & 0x80
        # Name, type and class (payload size) stay; TTL and RDLENGTH are written anew.
        out[opt + 5 :] = bytes((0, 0, do_bit, 0, 0, 0))
    return out


#: The EDNS payload size of the answers triodist makes itself, by default (dnsdist's).
SELF_GENERATED_PAYLOAD = 1232


def finish_self_answer(
    dq: Query,
    *,
    add_edns: bool = True,
    payload: int = SELF_GENERATED_PAYLOAD,
    ext_rcode: int = 0,
) -> None:
    """Give an answer triodist made itself (a rule's, SERVFAIL when no server is up) the
    OPT record dnsdist gives such answers: when the query had one, a new one in its
    place, with payload size ``payload``, the query's DO bit, ``ext_rcode`` as the upper
    bits of the rcode, and no options (the client's options were meant for a server
    that never saw them); none at all with ``add_edns=False`` (dnsdist's
    ``setAddEDNSToSelfGeneratedResponses(false)``). Without an OPT record the answer is
    left as it is.

    Records after the OPT record are kept; trailing data goes. Bytes whose records
    cannot be followed are left as they are."""
    data = dq.data
    opt_at = find_opt(data, dq.question_end)
    if opt_at is None:  # the usual case, and the cheapest test
        return
    start, end = opt_at
    # The client's payload size still bounds the UDP answer (``udp_answer_limit``).
    dq.client_payload = max(512, int(_U16.unpack_from(data, name_end(data, start, end) + 2)[0]))
    if end == len(data) and data[start] == 0:
        # The OPT record ends the message (the query's own, as it came): replaced in place,
        # without walking the records again.
        do_bit = _U16.unpack_from(data, start + 7)[0] & edns.DO_BIT
        del data[start:]
        arcount = _U16.unpack_from(data, 10)[0] - 1
        if add_edns:
            data += edns.opt_record_bytes(payload=payload, ext_rcode=ext_rcode, flags=do_bit)
            arcount += 1
        _U16.pack_into(data, 10, arcount)
        return
    try:
        opt = edns.locate_opt(data)
        if opt is None:
            return
        edns.remove_opt(data)
        if add_edns:
            edns.add_opt(data, payload=payload, ext_rcode=ext_rcode, flags=opt.flags & edns.DO_BIT)
    except edns.EDNSError:
        return


def make_raw_spoof_answer(dq: Query, raws: list[bytes], *, ttl: int = 60) -> bool:
    """Answer with one record of the query's type per rdata in ``raws`` (wire format,
    written as given), as dnsdist's raw spoofing does: AA left as the query has it (a
    rule may have set it), the rcode NOERROR, the client's OPT record left out.

    Returns False, leaving the query untouched, when ``raws`` is empty (dnsdist then
    forwards the query)."""
    if not raws:
        return False
    aa = bool(_U16.unpack_from(dq.data, 2)[0] & AA)
    set_response_header(dq.data, rcode=0, aa=aa)
    rebuild(dq, answer=[(dq.name, dq.qtype, ttl, raw) for raw in raws], keep_opt=False)
    return True
