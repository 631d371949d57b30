"""An external filter for triodist's asynchronous processing, on Trio.

This is the outside program of docs/async.md, as a component: ``examples/async_filter.py``
runs it from the command line, ``triodist demo`` runs it in its own nursery.

Protocol, over two unix datagram sockets:

- triodist sends one datagram per suspended query to the filter's socket: the query in DNS
  wire format, whose ID field holds the queryID it is suspended under;
- the filter answers with one datagram of ASCII text, ``"<queryID> <verdict>"``, to
  triodist's listening socket, where the verdict is ``allow``, ``refuse``, ``nxdomain`` or
  ``drop``.

A datagram that is not a DNS message with one question is counted and ignored (triodist lets
the query go on when its timeout expires). An answer that cannot be sent at once (triodist not
running, its queue full) is counted and forgotten: the filter never waits for triodist.

Rules: one a line, ``allow|block|nxdomain|drop|ignore <name>``, each matching the name and
every name under it; ``block`` answers REFUSED, ``ignore`` sends no answer at all (the query
then waits for triodist's timeout). An ``allow`` rule wins; otherwise the closest matching
name decides; a name no rule matches is allowed. ``#`` starts a comment.
"""

from __future__ import annotations

import os
import socket
import stat
from collections import Counter
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import trio

__all__ = [
    "IGNORE",
    "KEYWORDS",
    "VERDICTS",
    "Rules",
    "bind_datagram_socket",
    "decide",
    "load_rules",
    "parse_rules",
    "receive_loop",
    "serve",
]

#: The verdict of an ``ignore`` rule: nothing is sent back.
IGNORE = "ignore"

#: Rule keyword -> verdict.
KEYWORDS = {
    "allow": "allow",
    "block": "refuse",
    "nxdomain": "nxdomain",
    "drop": "drop",
    "ignore": IGNORE,
}

#: The verdicts sent to triodist.
VERDICTS = ("allow", "refuse", "nxdomain", "drop")

Rules = dict[dns.name.Name, str]
"""Name -> verdict; the verdict applies to the name and to every name under it."""


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Read rules from ``text``; a line that is not ``<keyword> <name>`` is a ``ValueError``.

    ``source`` names the text in error messages (a file name, say).
    """
    rules: Rules = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in KEYWORDS:
            raise ValueError(f"{source}:{number}: expected '<{'|'.join(KEYWORDS)}> <name>'")
        try:
            name = dns.name.from_text(fields[1])
        except dns.exception.DNSException as exc:
            raise ValueError(f"{source}:{number}: bad name {fields[1]!r}: {exc}") from exc
        rules[name] = KEYWORDS[fields[0]]
    return rules


def load_rules(path: str | Path) -> Rules:
    """Read a rules file (see :func:`parse_rules`)."""
    return parse_rules(Path(path).read_text(encoding="utf-8"), str(path))


def decide(qname: dns.name.Name | str, rules: Rules) -> str:
    """The verdict for ``qname``: allow, refuse, nxdomain, drop or ignore."""
    name = dns.name.from_text(qname) if isinstance(qname, str) else qname
    closest: str | None = None
    while True:  # from the name itself up to the root: the first match is the closest
        verdict = rules.get(name)
        if verdict == "allow":
            return "allow"
        if closest is None:
            closest = verdict
        if len(name) <= 1:
            return closest or "allow"
        name = name.parent()


def bind_datagram_socket(path: Path) -> socket.socket:
    """Bind a unix datagram socket at ``path``, readable and writable by this user only.

    The directory is created (mode 0700) if needed; a socket file left at ``path`` by an
    earlier run is removed, any other kind of file is an ``OSError``.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"{path} exists and is not a socket")
        path.unlink()  # left behind by a previous run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old_umask = os.umask(0o177)  # created 0600: never accessible to others, not even briefly
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


async def receive_loop(
    listen: trio.socket.SocketType,
    reply: socket.socket,
    reply_path: str,
    rules: Rules,
    stats: Counter[str],
    verbose: bool = False,
) -> None:
    """Answer each query received on ``listen``; never wait for triodist.

    ``stats`` counts ``received``, ``malformed``, each verdict and ``unsent``.
    """
    while True:
        data = await listen.recv(65535)
        stats["received"] += 1
        try:
            query = dns.message.from_wire(data, question_only=True)
        except dns.exception.DNSException:
            stats["malformed"] += 1
            continue
        if len(query.question) != 1:
            stats["malformed"] += 1
            continue
        question = query.question[0]
        verdict = decide(question.name, rules)
        stats[verdict] += 1
        note = ""
        if verdict == IGNORE:
            note = " (no answer sent)"
        else:
            try:
                reply.sendto(f"{query.id} {verdict}".encode("ascii"), reply_path)
            except OSError as exc:  # triodist not there (yet), or its queue full: never wait
                stats["unsent"] += 1
                note = f" (not sent: {exc.strerror})"
        if verbose:
            qtype = dns.rdatatype.to_text(question.rdtype)
            print(f"{query.id} {question.name} {qtype} -> {verdict}{note}", flush=True)


async def serve(
    listen: socket.socket,
    reply_path: str | Path,
    rules: Rules,
    stats: Counter[str],
    *,
    verbose: bool = False,
) -> None:
    """Run the filter on the bound socket ``listen`` until cancelled.

    Answers go to ``reply_path``, triodist's listening socket. ``listen`` is left open: it
    belongs to the caller (see :func:`bind_datagram_socket`).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reply:
        reply.setblocking(False)
        await receive_loop(
            trio.socket.from_stdlib_socket(listen), reply, str(reply_path), rules, stats, verbose
        )
