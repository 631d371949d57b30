"""Write the seed corpus: real DNS queries and responses, one message per file.

    python fuzz/make_corpus.py    # (re)writes fuzz/corpus/{queries,responses,streams,listener}

A coverage-guided fuzzer starts from these and mutates them; seeds that already reach
deep into the parsers (EDNS options, compression, every common record type) save it
from having to discover the wire format byte by byte. The messages are built with
dnspython and are deterministic (fixed IDs, fixed rdata), so running this again gives
the same files; each file is named after what it holds.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

#: Record data in presentation format for each type the corpus covers.
RDATA: dict[str, list[str]] = {
    "A": ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
    "AAAA": ["2001:db8::1", "2001:db8::2"],
    "MX": ["10 mail.example.org.", "20 mx2.example.net."],
    "TXT": ['"v=spf1 -all"', '"a" "b" "' + "x" * 200 + '"'],
    "SRV": ["0 5 5060 sip.example.org.", "10 60 5061 sip2.example.org."],
    "NS": ["ns1.example.org.", "ns2.example.org."],
    "SOA": ["ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300"],
    "DNSKEY": [
        "257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+"
        "KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==",
    ],
    "CNAME": ["target.example.org."],
    "PTR": ["host.example.org."],
    "CAA": ['0 issue "ca.example.net"'],
    "DS": ["60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118"],
}

OWNER = {
    "SRV": "_sip._udp.example.org.",
    "PTR": "1.2.0.192.in-addr.arpa.",
    "NS": "example.org.",
    "SOA": "example.org.",
    "DNSKEY": "example.org.",
    "DS": "example.org.",
}

COOKIE = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, bytes(range(8)))
COOKIE_WITH_SERVER = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, bytes(range(24)))
ECS4 = dns.edns.ECSOption("198.51.100.0", 24)
ECS6 = dns.edns.ECSOption("2001:db8:1::", 56)
PADDING = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 40)
NSID = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")


def _query(
    name: str,
    rdtype: str,
    *,
    qid: int,
    edns: bool = False,
    options: list[dns.edns.Option] | None = None,
    do: bool = False,
    payload: int = 1232,
) -> dns.message.QueryMessage:
    msg = dns.message.make_query(
        name,
        rdtype,
        use_edns=0 if (edns or options or do) else False,
        want_dnssec=do,
        payload=payload,
        options=options,
    )
    msg.id = qid
    return msg


def queries() -> Iterator[tuple[str, bytes]]:
    """Queries as clients send them: every type, with and without EDNS and options."""
    qid = 0x1000
    for rdtype in RDATA:
        qid += 1
        name = OWNER.get(rdtype, "www.example.org.")
        yield f"{rdtype.lower()}", _query(name, rdtype, qid=qid).to_wire()
        yield f"{rdtype.lower()}-edns", _query(name, rdtype, qid=qid, edns=True).to_wire()
    yield "a-do", _query("www.example.org.", "A", qid=2, do=True).to_wire()
    yield "a-ecs4", _query("www.example.org.", "A", qid=3, options=[ECS4]).to_wire()
    yield "aaaa-ecs6", _query("www.example.org.", "AAAA", qid=4, options=[ECS6]).to_wire()
    yield "a-cookie", _query("www.example.org.", "A", qid=5, options=[COOKIE]).to_wire()
    yield (
        "a-cookie-ecs-padding-nsid",
        _query(
            "www.example.org.",
            "A",
            qid=6,
            options=[COOKIE_WITH_SERVER, ECS4, PADDING, NSID],
            do=True,
            payload=4096,
        ).to_wire(),
    )
    yield "any", _query("example.org.", "ANY", qid=7).to_wire()
    yield "root-ns", _query(".", "NS", qid=8).to_wire()
    yield "mixed-case", _query("WwW.ExAmPlE.oRg.", "A", qid=9).to_wire()
    yield "long-name", _query(".".join(["a" * 63] * 3) + ".x.", "A", qid=10).to_wire()
    yield "ch-txt", dns.message.make_query("version.bind.", "TXT", "CH").to_wire()
    norec = _query("www.example.org.", "A", qid=11)
    norec.flags &= ~dns.flags.RD
    yield "a-norecurse", norec.to_wire()
    # Two questions, the second name a compression pointer to the first: unusual in a
    # query, but it reaches the name decompression and the multi-question paths.
    plain = bytearray(_query("www.example.org.", "A", qid=12).to_wire())
    plain[5] = 2
    yield "two-questions-pointer", bytes(plain) + b"\xc0\x0c\x00\x1c\x00\x01"


def _rrset(name: str, rdtype: str, ttl: int, texts: list[str]) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, ttl, "IN", rdtype, texts)


def responses() -> Iterator[tuple[str, bytes]]:
    """Responses as backends send them (dnspython compresses their names)."""
    for label, wire in queries():
        query = dns.message.from_wire(wire)
        question = query.question[0]
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query)
        name = question.name.to_text()
        if rdtype in RDATA and question.rdclass == dns.rdataclass.IN:
            response.answer.append(_rrset(name, rdtype, 300, RDATA[rdtype]))
            if rdtype in ("MX", "SRV", "NS"):
                response.additional.append(_rrset("mail.example.org.", "A", 300, ["192.0.2.25"]))
        elif rdtype == "ANY":
            for each in ("A", "AAAA", "MX", "TXT"):
                response.answer.append(_rrset(name, each, 60, RDATA[each]))
        yield f"{label}-answer", response.to_wire()
    # Negative answers, with the SOA in the authority section.
    soa = _rrset("example.org.", "SOA", 3600, RDATA["SOA"])
    for rcode, label in ((dns.rcode.NXDOMAIN, "nxdomain"), (dns.rcode.NOERROR, "nodata")):
        query = _query("nope.example.org.", "A", qid=20, edns=True)
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        response.authority.append(soa)
        yield label, response.to_wire()
    # A CNAME chain, compressed against the question.
    query = _query("alias.example.org.", "A", qid=21)
    response = dns.message.make_response(query)
    response.answer.append(_rrset("alias.example.org.", "CNAME", 300, ["www.example.org."]))
    response.answer.append(_rrset("www.example.org.", "A", 300, RDATA["A"]))
    yield "cname-chain", response.to_wire()
    # Errors, with and without their question.
    for rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR, dns.rcode.NOTIMP):
        query = _query("www.example.org.", "A", qid=22)
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        text = dns.rcode.to_text(rcode).lower()
        yield f"{text}", response.to_wire()
        wire = bytearray(response.to_wire())
        wire[4:6] = b"\x00\x00"
        yield f"{text}-no-question", bytes(wire[:12])
    # Truncated, as a UDP answer too large for the client's buffer.
    query = _query("big.example.org.", "TXT", qid=23)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    yield "truncated", response.to_wire()
    # DNSSEC: signed answer (RRSIG), with the DO bit echoed.
    query = _query("example.org.", "DNSKEY", qid=24, do=True)
    response = dns.message.make_response(query)
    response.answer.append(_rrset("example.org.", "DNSKEY", 3600, RDATA["DNSKEY"]))
    response.answer.append(
        _rrset(
            "example.org.",
            "RRSIG",
            3600,
            [
                "DNSKEY 13 2 3600 20300101000000 20240101000000 60485 example.org. "
                "kz9u0kD6xw4jYPsBU9PTT9EqwUrmk/Xtc7UTnDRVRd/Nh2vT6N0TsVdTWaHfP5vz"
                "8GsgOl+3xM2yJzD4bw0+4Q==",
            ],
        )
    )
    yield "dnskey-rrsig", response.to_wire()
    # ECS echoed back with a scope.
    query = _query("www.example.org.", "A", qid=25, options=[ECS4])
    response = dns.message.make_response(query)
    response.use_edns(0, options=[dns.edns.ECSOption("198.51.100.0", 24, 24)])
    response.answer.append(_rrset("www.example.org.", "A", 30, RDATA["A"]))
    yield "a-ecs-scope", response.to_wire()


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def streams() -> Iterator[tuple[str, bytes]]:
    """DNS-over-TCP byte streams: pipelined queries, then the ways framing goes wrong."""
    wires = [wire for _, wire in queries()]
    yield "one", _frame(wires[0])
    yield "pipelined", b"".join(_frame(w) for w in wires[:6])
    yield "every-query", b"".join(_frame(w) for w in wires)
    yield "cut-in-length", _frame(wires[0]) + b"\x00"
    yield "cut-in-message", _frame(wires[0]) + _frame(wires[1])[:-5]
    yield "zero-length", _frame(wires[0]) + b"\x00\x00" + _frame(wires[1])
    yield "short-message", _frame(wires[0]) + _frame(b"\x00" * 11) + _frame(wires[1])
    yield "response-frame", _frame(next(w for _, w in responses()))
    yield "length-too-long", b"\xff\xff" + wires[0]


def listener_messages() -> Iterator[tuple[str, bytes]]:
    """What an external component sends the network listener: "<queryID> <verdict>"."""
    for query_id, verdict in ((0, "allow"), (1, "refuse"), (2, "nxdomain"), (0, "drop")):
        yield f"{query_id}-{verdict}", f"{query_id} {verdict}".encode()
    yield "trailing-newline", b"1 allow\n"
    yield "unknown-id", b"65535 allow"
    yield "id-too-large", b"65536 allow"
    yield "unknown-verdict", b"0 maybe"
    yield "binary", bytes(range(256))


def write(directory: Path, items: Iterator[tuple[str, bytes]]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for label, wire in items:
        (directory / f"{label}.bin").write_bytes(wire)
        count += 1
    return count


def main() -> int:
    random.seed(0)  # dnspython shuffles the records of an RRset: the same files every time
    n_queries = write(CORPUS / "queries", queries())
    n_responses = write(CORPUS / "responses", responses())
    n_streams = write(CORPUS / "streams", streams())
    n_listener = write(CORPUS / "listener", listener_messages())
    print(
        f"wrote {n_queries} queries, {n_responses} responses, {n_streams} TCP streams and "
        f"{n_listener} listener messages under {CORPUS}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
