"""Differential tests: triodist against dnsdist, on the same ``rules.lua``.

Every ``tests/differential/*.lua`` file is a dnsdist configuration template
(placeholders ``{{LISTEN}}``, ``{{BACKEND}}``, ``{{BACKEND_B}}``, ``{{OUTDIR}}``)
whose comment lines starting with ``-- @`` tell this harness what to do:

``-- @describe TEXT``
    What the configuration exercises.
``-- @probe TRANSPORT QNAME QTYPE [options]`` or ``-- @probe tcp-connect``
    How to tell that a server is up: it answers this query (default
    ``udp probe.example.org A``), or it accepts a TCP connection.
``-- @query TRANSPORT QNAME QTYPE [options]``
    A query to send (``TRANSPORT`` is ``udp`` or ``tcp``).  Options: ``+rd``
    (the default) or ``-rd``, ``+cd``, ``+do`` (EDNS with DO), ``+edns``,
    ``payload=N``, ``class=CH``, ``opcode=NOTIFY``, ``from=127.0.0.2`` (the
    client's source address), and checks on dnsdist's behaviour, which keep
    the corpus honest: ``expect=RCODE`` or ``expect=drop``, ``reached=N``
    (times the query reached the backends), ``mindelay=S`` / ``maxdelay=S``
    (seconds; checked on both servers).
``-- @sleep SECONDS``
    Pause before the next query (rate limiters refill).

One AuthServer (``{{BACKEND}}``, named ``backend-a``) and a second one
(``{{BACKEND_B}}``, ``backend-b``; ``whoami.example.org TXT`` tells them
apart) run in the test's nursery.  For each configuration the harness starts
dnsdist, sends the queries, stops it, then does the same with
``python -m triodist serve --config FILE``, and compares for each query:
whether it was answered, the rcode, the flags QR AA TC RD RA AD CD, the
question, answer, authority and additional sections (TTLs within a second),
the EDNS pseudo-record, and what reached the backends (transport, RD, CD,
EDNS).  Files the configuration writes into ``{{OUTDIR}}`` (LogAction,
LogResponseAction) are compared too, client ports blanked out.

Deliberate differences are listed in :data:`DELIBERATE`, each with its reason;
configurations dnsdist 1.7.3 cannot load run against triodist alone with the
expected values in :data:`TRIODIST_ONLY`.

The environment variable ``DIFFERENTIAL_TARGETS=dnsdist`` runs only the
dnsdist side and its ``expect=`` checks (for writing the corpus); ``DNSDIST``
names another dnsdist binary.  Without dnsdist the tests are skipped, unless
``CI`` is set, when they fail.
"""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Literal

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
import trio
from conftest import free_port, until
from helpers import DNSDIST, needs_dnsdist, require_dnsdist

from triodist.testing.backend import AuthServer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "differential"
HEADER = CORPUS / "_header.lua"
TARGETS = tuple(
    t.strip() for t in os.environ.get("DIFFERENTIAL_TARGETS", "dnsdist,triodist").split(",")
)

SILENCE = 0.7  # seconds without a reply after which a query counts as dropped
STARTUP = 10.0  # seconds a server may take to answer its probe
CASE_GUARD = 60.0  # outer limit for one configuration, both servers
TTL_SLACK = 1  # seconds two TTLs may differ by (caches age answers)
BACKEND_DELAY = 0.2  # seconds the backends' "slow.example.org" waits

Transport = Literal["udp", "tcp"]
Summary = dict[str, object]

FIELDS = (
    "answered",
    "id",
    "rcode",
    "opcode",
    "flags",
    "question",
    "answer",
    "authority",
    "additional",
    "edns",
    "backend",
)


@dataclass(frozen=True)
class Deliberate:
    """A difference from dnsdist that triodist makes on purpose."""

    reason: str
    #: Which compared fields may differ (see FIELDS, plus "ttl" and "log").
    fields: frozenset[str]


#: Deliberate differences: (configuration stem, query number counted from 1,
#: or "log" for the written files) -> what may differ and why.  For "log" the
#: field "log-id" lets the query IDs in the files differ (nothing else).
DELIBERATE: dict[tuple[str, int | str], Deliberate] = {
    ("log-delay", "log"): Deliberate(
        reason=(
            "dnsdist 1.7.3 writes the query ID of LogAction/LogResponseAction text lines "
            "without converting it from network byte order (ID 0x1001 appears as 272); "
            "triodist writes the ID the client sent"
        ),
        fields=frozenset({"log-id"}),
    ),
    ("edns", 14): Deliberate(
        reason=(
            "dnsdist 1.7.3's SetEDNSOptionAction rewrites a query's OPT record with its TTL "
            "field's bytes swapped: a query with DO set reaches the backend as EDNS version "
            "128 without DO (and gets BADVERS); triodist keeps the client's version and flags"
        ),
        fields=frozenset({"rcode", "flags", "authority", "edns", "backend"}),
    ),
}


@dataclass(frozen=True)
class TriodistOnly:
    """A configuration dnsdist 1.7.3 rejects, with triodist's expected answers."""

    reason: str
    #: Per query (in file order): the expected values of some summary fields.
    expected: Sequence[Mapping[str, object]]


_SOA = (
    "example.org. 300 IN SOA ns1.example.org. hostmaster.example.org. "
    "2024010101 7200 900 1209600 300"
)

#: Configurations dnsdist 1.7.3 cannot load: what they test appeared in later
#: dnsdist versions.  The expected values follow those versions' documentation.
TRIODIST_ONLY: dict[str, TriodistOnly] = {
    "ttl-response-actions": TriodistOnly(
        reason=(
            "SetMaxTTLResponseAction, SetMinTTLResponseAction and LimitTTLResponseAction "
            "are dnsdist 1.8 additions; 1.7.3 stops on the unknown names"
        ),
        expected=[
            # SetMaxTTLResponseAction(600) on long (86400)
            {"rcode": "NOERROR", "answer": ["long.example.org. 600 IN A 192.0.2.86"]},
            # SetMinTTLResponseAction(60) on short (5)
            {"rcode": "NOERROR", "answer": ["short.example.org. 60 IN A 192.0.2.5"]},
            # SetMinTTLResponseAction(60) leaves 3600 alone
            {
                "answer": [
                    "www.example.org. 3600 IN A 192.0.2.10",
                    "www.example.org. 3600 IN A 192.0.2.11",
                ]
            },
            # LimitTTLResponseAction(100, 1000): every record of the chain
            {
                "rcode": "NOERROR",
                "flags": "QR AA RD",
                "answer": [
                    "alias.example.org. 1000 IN CNAME www.example.org.",
                    "www.example.org. 1000 IN A 192.0.2.10",
                    "www.example.org. 1000 IN A 192.0.2.11",
                ],
            },
            # LimitTTLResponseAction(400, 1000) raises the SOA of a negative answer
            {"rcode": "NXDOMAIN", "answer": [], "authority": [_SOA.replace(" 300 IN", " 400 IN")]},
            # LimitTTLResponseAction(100, 1000, {A}) leaves AAAA alone...
            {"answer": ["www.example.org. 3600 IN AAAA 2001:db8::10"]},
            # ... and caps A
            {
                "answer": [
                    "www.example.org. 1000 IN A 192.0.2.10",
                    "www.example.org. 1000 IN A 192.0.2.11",
                ]
            },
            # over TCP as over UDP
            {"answer": ["long.example.org. 600 IN A 192.0.2.86"]},
        ],
    ),
    "newer-selectors-and-actions": TriodistOnly(
        reason=(
            "QNameSuffixRule (dnsdist 1.9), TCResponseAction (1.9) and "
            "ClearRecordTypesResponseAction (1.8) are unknown to dnsdist 1.7.3"
        ),
        expected=[
            # QNameSuffixRule({'suffix.example.org', 'other.test'}) -> RCodeAction(REFUSED),
            # which answers like 1.7.3's RCodeAction: QR, RA copied from RD, no AA
            {"answered": True, "rcode": "REFUSED", "flags": "QR RD RA", "answer": []},
            {"answered": True, "rcode": "REFUSED", "flags": "QR RD RA", "backend": []},
            {"answered": True, "rcode": "REFUSED"},
            # the suffix itself matches, case-insensitively
            {"answered": True, "rcode": "REFUSED"},
            # a name that merely ends in the same characters does not
            {"answered": True, "rcode": "NXDOMAIN", "flags": "QR AA RD"},
            # TCResponseAction over UDP: TC set, records removed
            {
                "answered": True,
                "rcode": "NOERROR",
                "flags": "QR AA TC RD",
                "answer": [],
                "authority": [],
                "additional": [],
            },
            # ... over TCP it does nothing
            {
                "answered": True,
                "flags": "QR AA RD",
                "answer": ["mail.example.org. 3600 IN A 192.0.2.25"],
            },
            # ClearRecordTypesResponseAction({CNAME}): the chain loses its CNAMEs
            {"rcode": "NOERROR", "answer": ["www.example.org. 3600 IN AAAA 2001:db8::10"]},
            # ClearRecordTypesResponseAction(AAAA) on ANY leaves A and TXT
            {
                "rcode": "NOERROR",
                "answer": [
                    "multi.example.org. 3600 IN A 192.0.2.20",
                    'multi.example.org. 3600 IN TXT "multi"',
                ],
            },
        ],
    ),
}


# ---------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class QuerySpec:
    """One query of a configuration's list (or its probe)."""

    line: int
    text: str
    transport: Transport
    qname: str
    qtype: str
    qclass: str = "IN"
    rd: bool = True
    cd: bool = False
    do: bool = False
    edns: bool = False
    payload: int = 1232
    opcode: str = "QUERY"
    source: str = "127.0.0.1"
    expect: str | None = None
    reached: int | None = None
    min_delay: float | None = None
    max_delay: float | None = None
    sleep_before: float = 0.0

    def label(self, number: int) -> str:
        return f"#{number} (line {self.line}) {self.text}"

    def message(self, qid: int) -> dns.message.Message:
        use_edns = 0 if (self.edns or self.do) else False
        msg = dns.message.make_query(
            self.qname,
            dns.rdatatype.from_text(self.qtype),
            rdclass=dns.rdataclass.from_text(self.qclass),
            use_edns=use_edns,
            want_dnssec=self.do,
            payload=self.payload,
            id=qid,
        )
        msg.flags = 0
        if self.rd:
            msg.flags |= dns.flags.RD
        if self.cd:
            msg.flags |= dns.flags.CD
        msg.set_opcode(dns.opcode.from_text(self.opcode))
        return msg


@dataclass
class Config:
    path: Path
    description: str = ""
    probe: QuerySpec | None = None
    queries: list[QuerySpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


def parse_query(line: int, text: str, sleep_before: float = 0.0) -> QuerySpec:
    words = text.split()
    if len(words) < 3 or words[0] not in ("udp", "tcp"):
        raise ValueError(f"line {line}: expected 'udp|tcp QNAME QTYPE [options]': {text!r}")
    transport: Transport = "udp" if words[0] == "udp" else "tcp"
    options: dict[str, object] = {}
    for word in words[3:]:
        if word in ("+rd", "-rd"):
            options["rd"] = word == "+rd"
        elif word == "+cd":
            options["cd"] = True
        elif word == "+do":
            options["do"] = True
        elif word == "+edns":
            options["edns"] = True
        elif "=" in word:
            key, value = word.split("=", 1)
            if key == "payload":
                options["payload"] = int(value)
                options["edns"] = True
            elif key == "class":
                options["qclass"] = value.upper()
            elif key == "opcode":
                options["opcode"] = value.upper()
            elif key == "from":
                options["source"] = value
            elif key == "expect":
                options["expect"] = value
            elif key == "reached":
                options["reached"] = int(value)
            elif key == "mindelay":
                options["min_delay"] = float(value)
            elif key == "maxdelay":
                options["max_delay"] = float(value)
            else:
                raise ValueError(f"line {line}: unknown option {word!r}")
        else:
            raise ValueError(f"line {line}: unknown option {word!r}")
    spec = QuerySpec(line, text, transport, words[1], words[2].upper(), sleep_before=sleep_before)
    return QuerySpec(**{**spec.__dict__, **options})


def load_config(path: Path) -> Config:
    config = Config(path, probe=parse_query(0, "udp probe.example.org A"))
    sleep = 0.0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        match = re.match(r"\s*--\s*@(\w+)\s*(.*?)\s*$", raw)
        if not match:
            continue
        directive, rest = match.groups()
        if directive == "describe":
            config.description = (config.description + " " + rest).strip()
        elif directive == "probe":
            config.probe = None if rest == "tcp-connect" else parse_query(number, rest)
        elif directive == "query":
            config.queries.append(parse_query(number, rest, sleep))
            sleep = 0.0
        elif directive == "sleep":
            sleep += float(rest)
        else:
            raise ValueError(f"{path.name}:{number}: unknown directive @{directive}")
    if not config.queries:
        raise ValueError(f"{path.name}: no @query lines")
    return config


CONFIG_PATHS = sorted(p for p in CORPUS.glob("*.lua") if not p.name.startswith("_"))


def render(template: str, values: Mapping[str, str]) -> str:
    text = HEADER.read_text() + "\n" + template

    def substitute(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", substitute, text)


# ---------------------------------------------------------------------------
# talking DNS


@dataclass
class Outcome:
    """What one server did with one query."""

    summary: Summary
    ttls: dict[str, int]
    elapsed: float
    silence: str = ""  # "timeout" or "closed" when unanswered


def rr_lines(section: Sequence[dns.rrset.RRset]) -> tuple[list[str], dict[str, int]]:
    lines: list[str] = []
    ttls: dict[str, int] = {}
    for rrset in section:
        if rrset.rdtype == dns.rdatatype.OPT:
            continue
        for rdata in rrset:
            name = rrset.name.to_text().lower()
            rest = (
                f"{dns.rdataclass.to_text(rrset.rdclass)} "
                f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
            )
            lines.append(f"{name} {rrset.ttl} {rest}")
            ttls[f"{name} {rest}"] = rrset.ttl
    return sorted(lines), ttls


FLAG_ORDER = (
    ("QR", dns.flags.QR),
    ("AA", dns.flags.AA),
    ("TC", dns.flags.TC),
    ("RD", dns.flags.RD),
    ("RA", dns.flags.RA),
    ("AD", dns.flags.AD),
    ("CD", dns.flags.CD),
)


def flag_text(flags: int) -> str:
    return " ".join(name for name, bit in FLAG_ORDER if flags & bit)


def summarize(query: dns.message.Message, wire: bytes) -> tuple[Summary, dict[str, int]]:
    try:
        reply = dns.message.from_wire(wire)
    except Exception as exc:
        return summarize_raw(query, wire, exc)
    answer, ttls = rr_lines(reply.answer)
    authority, ttls2 = rr_lines(reply.authority)
    additional, ttls3 = rr_lines(reply.additional)
    edns: str | None = None
    if reply.edns >= 0:
        options = ",".join(sorted(str(int(o.otype)) for o in reply.options))
        edns = (
            f"version={reply.edns} payload={reply.payload} "
            f"do={bool(reply.ednsflags & dns.flags.DO)} options=[{options}]"
        )
    summary: Summary = {
        "answered": True,
        "id": reply.id == query.id,
        "rcode": dns.rcode.to_text(reply.rcode()),
        "opcode": dns.opcode.to_text(reply.opcode()),
        "flags": flag_text(reply.flags),
        "question": [
            f"{q.name.to_text().lower()} {dns.rdataclass.to_text(q.rdclass)} "
            f"{dns.rdatatype.to_text(q.rdtype)}"
            for q in reply.question
        ],
        "answer": answer,
        "authority": authority,
        "additional": additional,
        "edns": edns,
    }
    return summary, {**ttls, **ttls2, **ttls3}


def summarize_raw(
    query: dns.message.Message, wire: bytes, error: Exception
) -> tuple[Summary, dict[str, int]]:
    """A summary of a reply dnspython rejects (e.g. A records of the wrong length).

    Records are shown in the generic ``\\# length hex`` form.
    """
    summary: Summary = {"answered": True, "unparsable": type(error).__name__}
    ttls: dict[str, int] = {}
    try:
        qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", wire)
        summary["id"] = qid == query.id
        summary["rcode"] = dns.rcode.to_text(dns.rcode.from_flags(flags, 0))
        summary["opcode"] = dns.opcode.to_text(dns.opcode.from_flags(flags))
        summary["flags"] = flag_text(flags)
        offset = 12
        question = []
        for _ in range(qdcount):
            name, used = dns.name.from_wire(wire, offset)
            qtype, qclass = struct.unpack_from("!HH", wire, offset + used)
            offset += used + 4
            question.append(
                f"{name.to_text().lower()} {dns.rdataclass.to_text(qclass)} "
                f"{dns.rdatatype.to_text(qtype)}"
            )
        summary["question"] = question
        summary["edns"] = None
        for section, count in (
            ("answer", ancount),
            ("authority", nscount),
            ("additional", arcount),
        ):
            lines = []
            for _ in range(count):
                name, used = dns.name.from_wire(wire, offset)
                rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", wire, offset + used)
                offset += used + 10
                rdata = wire[offset : offset + rdlen]
                offset += rdlen
                if rtype == dns.rdatatype.OPT:
                    summary["edns"] = f"raw opt payload={rclass} flags={ttl:#x}"
                    continue
                rest = (
                    f"{dns.rdataclass.to_text(rclass)} {dns.rdatatype.to_text(rtype)} "
                    f"\\# {rdlen} {rdata.hex()}"
                )
                lines.append(f"{name.to_text().lower()} {ttl} {rest}")
                ttls[f"{name.to_text().lower()} {rest}"] = ttl
            summary[section] = sorted(lines)
    except Exception as exc:
        summary["unparsable"] = f"{type(error).__name__}, then {exc!r}: {wire.hex()}"
    return summary, ttls


async def udp_ask(
    address: tuple[str, int], source: str, query: dns.message.Message
) -> tuple[bytes | None, str]:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((source, 0))
        await sock.connect(address)
        await sock.send(query.to_wire())
        with trio.move_on_after(SILENCE):
            while True:
                try:
                    data = await sock.recv(65535)
                except ConnectionRefusedError:
                    return None, "refused"
                if data[:2] == query.id.to_bytes(2, "big"):
                    return data, ""
    return None, "timeout"


async def tcp_ask(
    address: tuple[str, int], source: str, query: dns.message.Message
) -> tuple[bytes | None, str]:
    wire = query.to_wire()
    try:
        stream = await trio.open_tcp_stream(*address, local_address=source)
    except OSError:
        return None, "refused"
    async with stream:
        try:
            await stream.send_all(len(wire).to_bytes(2, "big") + wire)
        except trio.BrokenResourceError:
            return None, "closed"
        buffer = bytearray()
        with trio.move_on_after(SILENCE):
            while True:
                if len(buffer) >= 2:
                    length = int.from_bytes(buffer[:2], "big")
                    if len(buffer) >= 2 + length:
                        return bytes(buffer[2 : 2 + length]), ""
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    chunk = b""
                if not chunk:
                    return None, "closed"
                buffer += chunk
    return None, "timeout"


async def ask(
    address: tuple[str, int], spec: QuerySpec, query: dns.message.Message
) -> tuple[bytes | None, str]:
    if spec.transport == "udp":
        return await udp_ask(address, spec.source, query)
    return await tcp_ask(address, spec.source, query)


# ---------------------------------------------------------------------------
# running one server


class StartupError(Exception):
    def __init__(self, message: str, *, port_clash: bool = False) -> None:
        super().__init__(message)
        self.port_clash = port_clash


def open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def write_config(config: Config, values: Mapping[str, str], path: Path) -> None:
    """Render ``config`` with ``values`` into ``path`` (small local files: no need for threads)."""
    path.write_text(render(config.path.read_text(), values))


def read_outputs(outdir: Path) -> dict[str, list[str]]:
    """Files a configuration wrote, client ports blanked out."""
    result: dict[str, list[str]] = {}
    for path in sorted(outdir.iterdir()):
        text = path.read_text(errors="replace")
        text = re.sub(r"(\d+\.\d+\.\d+\.\d+):\d+", r"\1:PORT", text)
        result[path.name] = text.splitlines()
    return result


@dataclass
class TargetRun:
    outcomes: list[Outcome]
    outputs: dict[str, list[str]]
    log: str


def backend_view(servers: Sequence[AuthServer], marks: Sequence[int], qname: str) -> list[str]:
    """What reached the backends since ``marks`` for ``qname``."""
    wanted = qname.lower().rstrip(".") + "."
    seen: list[str] = []
    for server, mark in zip(servers, marks, strict=True):
        for received in list(server.received)[mark:]:
            if received.qname is None or received.qname.to_text().lower() != wanted:
                continue
            msg = received.message
            edns = "noedns" if msg.edns < 0 else f"edns do={bool(msg.ednsflags & dns.flags.DO)}"
            flags = flag_text(msg.flags & (dns.flags.RD | dns.flags.CD)) or "-"
            qtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(received.qtype or 0))
            seen.append(f"{server.name} {received.transport} {qtype} {flags} {edns}")
    return sorted(seen)


async def run_target(
    kind: str,
    config: Config,
    servers: Sequence[AuthServer],
    workdir: Path,
) -> TargetRun:
    """Start one server on the configuration, send the queries, stop it."""
    last_error: StartupError | None = None
    for attempt in range(3):
        port = free_port()
        outdir = workdir / f"{kind}-out-{attempt}"
        outdir.mkdir()
        values = {
            "LISTEN": f"127.0.0.1:{port}",
            "BACKEND": "{}:{}".format(*(servers[0].address or ("", 0))),
            "BACKEND_B": "{}:{}".format(*(servers[1].address or ("", 0))),
            "OUTDIR": str(outdir),
        }
        conf_path = workdir / f"{kind}-{attempt}.lua"
        write_config(config, values, conf_path)
        log_path = workdir / f"{kind}-{attempt}.log"
        if kind == "dnsdist":
            assert DNSDIST is not None
            argv = [DNSDIST, "--supervised", "--disable-syslog", "-C", str(conf_path)]
        else:
            argv = [sys.executable, "-m", "triodist", "serve", "--config", str(conf_path)]
        pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        with open_log(log_path) as log_file:
            try:
                return await _run_process(
                    argv, env, log_file, log_path, ("127.0.0.1", port), config, servers, outdir
                )
            except StartupError as exc:
                if not exc.port_clash:
                    raise
                last_error = exc  # another process took the port: try another
    assert last_error is not None
    raise last_error


async def _run_process(
    argv: list[str],
    env: dict[str, str],
    log_file: IO[bytes],
    log_path: Path,
    address: tuple[str, int],
    config: Config,
    servers: Sequence[AuthServer],
    outdir: Path,
) -> TargetRun:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                check=False,
                env=env,
                cwd=str(ROOT),
            )
        )
        try:
            await wait_ready(process, address, config.probe, log_path)
            outcomes = [
                await run_query(address, spec, number, servers)
                for number, spec in enumerate(config.queries, start=1)
            ]
        finally:
            nursery.cancel_scope.cancel()
    # The process has exited: its files are complete.
    return TargetRun(outcomes, read_outputs(outdir), read_text(log_path))


async def wait_ready(
    process: trio.Process,
    address: tuple[str, int],
    probe: QuerySpec | None,
    log_path: Path,
) -> None:
    def failure(why: str) -> StartupError:
        output = read_text(log_path)
        return StartupError(
            f"{why}: {process.args!r}\n--- output ---\n{output[-4000:]}",
            port_clash=process.returncode is not None and "in use" in output.lower(),
        )

    try:
        with trio.fail_after(STARTUP):
            while True:
                if process.returncode is not None:
                    raise failure(f"exited with status {process.returncode} before answering")
                if probe is None:
                    try:
                        stream = await trio.open_tcp_stream(*address)
                    except OSError:
                        pass
                    else:
                        await stream.aclose()
                        return
                else:
                    query = probe.message(0xFFFF)
                    with trio.move_on_after(0.2):
                        if probe.transport == "udp":
                            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                                await sock.bind((probe.source, 0))
                                await sock.connect(address)
                                await sock.send(query.to_wire())
                                try:
                                    await sock.recv(65535)
                                    return
                                except OSError:
                                    pass
                        else:
                            data, _ = await tcp_ask(address, probe.source, query)
                            if data is not None:
                                return
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise failure(f"no answer to the probe within {STARTUP}s") from None


async def run_query(
    address: tuple[str, int], spec: QuerySpec, number: int, servers: Sequence[AuthServer]
) -> Outcome:
    if spec.sleep_before:
        await trio.sleep(spec.sleep_before)
    query = spec.message(0x1000 + number)
    marks = [len(server.received) for server in servers]
    start = trio.current_time()
    data, silence = await ask(address, spec, query)
    elapsed = trio.current_time() - start
    if data is None:
        summary: Summary = {"answered": False}
        ttls: dict[str, int] = {}
    else:
        summary, ttls = summarize(query, data)
    # A backend records a query when it arrives, before it answers (AuthServer._record):
    # an answer relayed from a backend, or silence waited out, leaves nothing on its way.
    # Only a query the server sends on while answering itself could still be, and then
    # the corpus says how many are due (reached=N): wait for them, and no longer than a
    # silence, so that a count that never comes is reported below as the difference.
    if spec.reached:
        reached = spec.reached
        with trio.move_on_after(SILENCE):
            await until(lambda: len(backend_view(servers, marks, spec.qname)) >= reached, math.inf)
    summary["backend"] = backend_view(servers, marks, spec.qname)
    return Outcome(summary, ttls, elapsed, silence)


# ---------------------------------------------------------------------------
# comparing


def expectation_problems(spec: QuerySpec, outcome: Outcome, who: str) -> list[str]:
    problems: list[str] = []
    summary = outcome.summary
    if spec.expect is not None:
        got = "drop" if not summary["answered"] else str(summary.get("rcode"))
        if got != spec.expect.upper() and got != spec.expect:
            problems.append(f"{who}: expected {spec.expect}, got {got}")
        elif got == "drop" and spec.transport == "tcp" and outcome.silence != "closed":
            # dnsdist closes a TCP connection on a drop; left open, the client waits.
            problems.append(
                f"{who}: expected the connection closed on the drop, got {outcome.silence}"
            )
    if spec.reached is not None:
        backend = summary["backend"]
        assert isinstance(backend, list)
        if len(backend) != spec.reached:
            problems.append(f"{who}: expected {spec.reached} backend queries, saw {backend}")
    if spec.min_delay is not None and outcome.elapsed < spec.min_delay:
        problems.append(f"{who}: answered after {outcome.elapsed:.3f}s < {spec.min_delay}s")
    if spec.max_delay is not None and outcome.elapsed > spec.max_delay:
        problems.append(f"{who}: answered after {outcome.elapsed:.3f}s > {spec.max_delay}s")
    return problems


def compare(reference: Outcome, candidate: Outcome) -> dict[str, str]:
    """Fields that differ -> description (reference is dnsdist)."""
    differences: dict[str, str] = {}
    for name in (*FIELDS, "unparsable"):
        ours = candidate.summary.get(name)
        theirs = reference.summary.get(name)
        if name in ("answer", "authority", "additional"):
            ours = _strip_ttls(ours)
            theirs = _strip_ttls(theirs)
        if ours != theirs:
            differences[name] = f"dnsdist={theirs!r} triodist={ours!r}"
    for key, ttl in reference.ttls.items():
        other = candidate.ttls.get(key)
        if other is not None and abs(other - ttl) > TTL_SLACK:
            differences.setdefault("ttl", "")
            differences["ttl"] += f"[{key}: dnsdist={ttl} triodist={other}]"
    if not reference.summary["answered"] and not candidate.summary["answered"]:
        kept = {k: v for k, v in differences.items() if k == "backend"}
        # Neither answered: what the client saw still counts (a TCP connection closed at
        # once, or left open until the client gave up).
        if reference.silence != candidate.silence:
            kept["silence"] = f"dnsdist={reference.silence!r} triodist={candidate.silence!r}"
        return kept
    return differences


def compare_outputs(
    name: str, reference: dict[str, list[str]], candidate: dict[str, list[str]]
) -> list[str]:
    """Problems with the files the two servers wrote (see DELIBERATE for "log")."""
    deliberate = DELIBERATE.get((name, "log"))
    if deliberate is not None:
        if reference == candidate:
            return [f"written files: listed in DELIBERATE ({deliberate.reason}) but both agree"]
        if "log-id" in deliberate.fields:
            reference, candidate = _blank_ids(reference), _blank_ids(candidate)
    if reference == candidate:
        return []
    lines = ["written files differ:"]
    for file in sorted(set(reference) | set(candidate)):
        ours, theirs = candidate.get(file, []), reference.get(file, [])
        if ours != theirs:
            lines.append(f"  {file}: dnsdist={theirs!r}")
            lines.append(f"  {file}: triodist={ours!r}")
    return ["\n".join(lines)]


def _blank_ids(outputs: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        file: [re.sub(r"with id \d+", "with id ID", line) for line in lines]
        for file, lines in outputs.items()
    }


def _strip_ttls(lines: object) -> object:
    if not isinstance(lines, list):
        return lines
    return sorted(re.sub(r"^(\S+) \d+ ", r"\1 ", str(line)) for line in lines)


def describe(outcome: Outcome) -> str:
    summary = outcome.summary
    if not summary["answered"]:
        return f"no answer ({outcome.silence}); backend={summary['backend']}"
    keys = ("rcode", "flags", "answer", "authority", "edns", "backend")
    return "; ".join(f"{k}={summary.get(k)!r}" for k in keys)


def dump(config: Config, reference: TargetRun, candidate: TargetRun | None) -> None:
    """Print every outcome (``DIFFERENTIAL_DUMP=1``, with ``pytest -s``)."""
    print(f"\n=== {config.name}: {config.description}")
    for number, spec in enumerate(config.queries, start=1):
        print(f"{spec.label(number)}")
        print(
            f"   dnsdist  [{reference.outcomes[number - 1].elapsed:.3f}s] "
            f"{describe(reference.outcomes[number - 1])}"
        )
        if candidate is not None:
            print(
                f"   triodist [{candidate.outcomes[number - 1].elapsed:.3f}s] "
                f"{describe(candidate.outcomes[number - 1])}"
            )
    for name, lines in reference.outputs.items():
        print(f"--- dnsdist wrote {name}:", *lines, sep="\n    ")


# ---------------------------------------------------------------------------
# the tests


async def start_backends(nursery: trio.Nursery) -> list[AuthServer]:
    servers = []
    for name in ("backend-a", "backend-b"):
        server = AuthServer(name=name, history=100_000, delay=BACKEND_DELAY)
        server.modes.update(
            {
                "servfail.example.org.": "servfail",
                "refused.example.org.": "refused",
                "slow.example.org.": "slow",
                "truncated.example.org.": "truncate",
                "echo.example.org.": "echo",
            }
        )
        await nursery.start(server.serve)
        servers.append(server)
    return servers


DIFFERENTIAL = [p for p in CONFIG_PATHS if p.stem not in TRIODIST_ONLY]
ONLY = [p for p in CONFIG_PATHS if p.stem in TRIODIST_ONLY]


#: What the corpus must exercise, each name somewhere in a configuration.
COVERED = [
    "AllRule",
    "QNameRule",
    "QNameSuffixRule",
    "SuffixMatchNodeRule",
    "newSuffixMatchNode",
    "QNameSetRule",
    "newDNSNameSet",
    "QTypeRule",
    "QClassRule",
    "NetmaskGroupRule",
    "newNMG",
    "RegexRule",
    "AndRule",
    "OrRule",
    "NotRule",
    "TagRule",
    "RDRule",
    "OpcodeRule",
    "TCPRule",
    "MaxQPSIPRule",
    "MaxQPSRule",
    "LuaRule",
    "PoolAction",
    "DropAction",
    "AllowAction",
    "NoneAction",
    "RCodeAction",
    "SpoofAction",
    "SpoofCNAMEAction",
    "SpoofRawAction",
    "TCAction",
    "DelayAction",
    "LogAction",
    "SetTagAction",
    "SetNoRecurseAction",
    "SetSkipCacheAction",
    "QPSAction",
    "LuaAction",
    "ContinueAction",
    "AllowResponseAction",
    "DropResponseAction",
    "DelayResponseAction",
    "LogResponseAction",
    "LuaResponseAction",
    "SetTagResponseAction",
    "TCResponseAction",
    "SetMaxTTLResponseAction",
    "SetMinTTLResponseAction",
    "LimitTTLResponseAction",
    "ClearRecordTypesResponseAction",
    "addSelfAnsweredResponseAction",
    "makeRule",
    "setACL",
    "addACL",
]


def test_corpus_is_well_formed() -> None:
    assert len(CONFIG_PATHS) >= 15
    assert set(TRIODIST_ONLY) <= {p.stem for p in CONFIG_PATHS}
    for path in CONFIG_PATHS:
        config = load_config(path)
        assert config.description, f"{path.name} has no @describe"
        text = path.read_text()
        assert "{{LISTEN}}" in text and "{{BACKEND}}" in text, path.name
        if path.stem in TRIODIST_ONLY:
            assert len(TRIODIST_ONLY[path.stem].expected) == len(config.queries), path.name
    corpus = "\n".join(p.read_text() for p in CONFIG_PATHS)
    missing = [name for name in COVERED if not re.search(rf"\b{name}\s*[({{]", corpus)]
    assert not missing, f"not exercised by any configuration: {missing}"
    for (stem, _), deliberate in DELIBERATE.items():
        assert stem in {p.stem for p in CONFIG_PATHS}
        assert deliberate.reason and deliberate.fields


@needs_dnsdist
@pytest.mark.parametrize("path", DIFFERENTIAL, ids=[p.stem for p in DIFFERENTIAL])
async def test_differential(path: Path, tmp_path: Path) -> None:
    require_dnsdist()
    config = load_config(path)
    problems: list[str] = []
    with trio.fail_after(CASE_GUARD):
        async with trio.open_nursery() as nursery:
            servers = await start_backends(nursery)
            reference = await run_target("dnsdist", config, servers, tmp_path)
            candidate = None
            if "triodist" in TARGETS:
                candidate = await run_target("triodist", config, servers, tmp_path)
            nursery.cancel_scope.cancel()

    if os.environ.get("DIFFERENTIAL_DUMP"):
        dump(config, reference, candidate)
    for number, spec in enumerate(config.queries, start=1):
        label = spec.label(number)
        ref = reference.outcomes[number - 1]
        for problem in expectation_problems(spec, ref, "dnsdist"):
            problems.append(f"{label}: corpus expectation: {problem}; {describe(ref)}")
        if candidate is None:
            continue
        cand = candidate.outcomes[number - 1]
        differences = compare(ref, cand)
        if spec.min_delay is not None or spec.max_delay is not None:
            for problem in expectation_problems(spec, cand, "triodist"):
                if "delay" in problem or "after" in problem:
                    differences["delay"] = problem
        deliberate = DELIBERATE.get((config.name, number))
        if deliberate is not None:
            if not differences:
                problems.append(
                    f"{label}: listed in DELIBERATE ({deliberate.reason}) but both agree"
                )
            differences = {k: v for k, v in differences.items() if k not in deliberate.fields}
        for name, text in differences.items():
            problems.append(f"{label}: {name} differs: {text}")
    if candidate is not None:
        problems.extend(compare_outputs(config.name, reference.outputs, candidate.outputs))
    if problems:
        details = [f"{config.name}: {config.description}", *problems]
        if candidate is not None:
            details.append("--- triodist output (tail) ---\n" + candidate.log[-3000:])
        pytest.fail("\n".join(details), pytrace=False)


@pytest.mark.skipif("triodist" not in TARGETS, reason="DIFFERENTIAL_TARGETS excludes triodist")
@pytest.mark.parametrize("path", ONLY, ids=[p.stem for p in ONLY])
async def test_triodist_only(path: Path, tmp_path: Path) -> None:
    """Configurations dnsdist 1.7.3 cannot load: triodist against written values."""
    only = TRIODIST_ONLY[path.stem]
    config = load_config(path)
    if DNSDIST is not None:
        # Keep the reason honest: once dnsdist loads the file, make it differential.
        conf = tmp_path / "check.lua"
        values = {
            "LISTEN": "127.0.0.1:1",
            "BACKEND": "127.0.0.1:1",
            "BACKEND_B": "127.0.0.1:2",
            "OUTDIR": str(tmp_path),
        }
        write_config(config, values, conf)
        check = await trio.run_process(
            [DNSDIST, "--check-config", "-C", str(conf)], capture_stdout=True, check=False
        )
        assert check.returncode != 0, f"{DNSDIST} now loads {path.name}: {only.reason} no more"
    problems: list[str] = []
    with trio.fail_after(CASE_GUARD):
        async with trio.open_nursery() as nursery:
            servers = await start_backends(nursery)
            run = await run_target("triodist", config, servers, tmp_path)
            nursery.cancel_scope.cancel()
    for number, (spec, expected) in enumerate(
        zip(config.queries, only.expected, strict=True), start=1
    ):
        outcome = run.outcomes[number - 1]
        for key, value in expected.items():
            if outcome.summary.get(key) != value:
                problems.append(
                    f"{spec.label(number)}: {key}: expected {value!r}, "
                    f"got {outcome.summary.get(key)!r}"
                )
        for problem in expectation_problems(spec, outcome, "triodist"):
            problems.append(f"{spec.label(number)}: {problem}")
    if problems:
        details = [f"{config.name} (triodist only: {only.reason})", *problems]
        details.append("--- triodist output (tail) ---\n" + run.log[-3000:])
        pytest.fail("\n".join(details), pytrace=False)
