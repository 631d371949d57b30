"""An external filter for triodist's asynchronous processing (see examples/async-filter.lua).

Protocol, over two unix datagram sockets:

- triodist sends one datagram per suspended query to the filter's socket (``--listen``): the
  query in DNS wire format, whose ID field holds the queryID it is suspended under;
- the filter answers with one datagram of ASCII text, ``"<queryID> <verdict>"``, to triodist's
  listening socket (``--reply``), where the verdict is ``allow``, ``refuse``, ``nxdomain`` or
  ``drop``.

A datagram that is not a DNS message with one question is counted and ignored (triodist lets
the query go on when its timeout expires). An answer that cannot be sent at once (triodist not
running, its queue full) is counted and forgotten: the filter never waits for triodist.

Rules (see examples/async-filter.rules): one a line, ``allow|block|nxdomain|drop <name>``,
each matching the name and every name under it; ``block`` answers REFUSED. An ``allow`` rule
wins; otherwise the closest matching name decides; a name no rule matches is allowed.

    python examples/async_filter.py --listen /tmp/triodist-async/filter.sock \\
        --reply /tmp/triodist-async/triodist.sock --rules examples/async-filter.rules
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys
from collections import Counter
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import trio

#: Rule keyword -> verdict sent to triodist.
KEYWORDS = {"allow": "allow", "block": "refuse", "nxdomain": "nxdomain", "drop": "drop"}

Rules = dict[dns.name.Name, str]
"""Name -> verdict; the verdict applies to the name and to every name under it."""


def load_rules(path: str | Path) -> Rules:
    """Read a rules file; a line that is not ``<keyword> <name>`` is a ``ValueError``."""
    rules: Rules = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in KEYWORDS:
            raise ValueError(f"{path}:{number}: expected '<{'|'.join(KEYWORDS)}> <name>'")
        try:
            name = dns.name.from_text(fields[1])
        except dns.exception.DNSException as exc:
            raise ValueError(f"{path}:{number}: bad name {fields[1]!r}: {exc}") from exc
        rules[name] = KEYWORDS[fields[0]]
    return rules


def decide(qname: dns.name.Name | str, rules: Rules) -> str:
    """The verdict for ``qname``: allow, refuse, nxdomain or drop."""
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
    """Bind a unix datagram socket at ``path``, readable and writable by this user only."""
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
    finally:
        os.umask(old_umask)
    return sock


async def receive_loop(
    listen: trio.socket.SocketType,
    reply: socket.socket,
    reply_path: str,
    rules: Rules,
    stats: Counter[str],
    verbose: bool,
) -> None:
    """Answer each query received on ``listen``; never wait for triodist."""
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
        try:
            reply.sendto(f"{query.id} {verdict}".encode("ascii"), reply_path)
        except OSError as exc:  # triodist not there (yet), or its queue full: never wait
            stats["unsent"] += 1
            note = f" (not sent: {exc.strerror})"
        if verbose:
            qtype = dns.rdatatype.to_text(question.rdtype)
            print(f"{query.id} {question.name} {qtype} -> {verdict}{note}", flush=True)


async def stop_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run(listen: socket.socket, args: argparse.Namespace, rules: Rules) -> Counter[str]:
    stats: Counter[str] = Counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reply:
        reply.setblocking(False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, nursery.cancel_scope)
            nursery.start_soon(
                receive_loop,
                trio.socket.from_stdlib_socket(listen),
                reply,
                args.reply,
                rules,
                stats,
                args.verbose,
            )
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An external filter for triodist.")
    parser.add_argument("--listen", required=True, help="this filter's socket (bound here)")
    parser.add_argument("--reply", required=True, help="triodist's listening socket")
    parser.add_argument("--rules", required=True, help="the rules file")
    parser.add_argument("--verbose", action="store_true", help="print every decision")
    args = parser.parse_args(argv)
    path = Path(args.listen)
    try:
        rules = load_rules(args.rules)
        listen = bind_datagram_socket(path)
    except (OSError, ValueError) as exc:
        print(f"async_filter: {exc}", file=sys.stderr)
        return 1
    print(f"async_filter: {len(rules)} rules, listening on {path}", flush=True)
    inode = path.stat().st_ino
    try:
        with listen:
            stats = trio.run(run, listen, args, rules)
    finally:
        # Remove the socket file, unless another process has bound that path since.
        if path.exists() and path.stat().st_ino == inode:
            path.unlink()
    names = ("received", "malformed", "allow", "refuse", "nxdomain", "drop", "unsent")
    print("async_filter: " + " ".join(f"{name}={stats[name]}" for name in names), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
