"""An external filter for triodist's asynchronous processing, on Trio.

This is the outside program of docs/tutorial/async-filter.md, as a component:
``examples/async_filter.py`` runs it from the command line, ``triodist demo`` runs it in its
own nursery.

Protocol, over two unix datagram sockets:

- triodist sends one datagram per suspended query to the filter's socket: the query in DNS
  wire format, whose ID field holds the queryID it is suspended under;
- the filter answers with one datagram of ASCII text, ``"<queryID> <verdict>"``, to
  triodist's listening socket, where the verdict is ``allow``, ``refuse``, ``nxdomain`` or
  ``drop``.

A datagram that is not a DNS message with one question is counted and ignored (triodist lets
the query go on when its timeout expires). The filter never waits for triodist before reading
the next query: an answer triodist's socket has no room for yet (its queue holds
``net.unix.max_dgram_qlen`` datagrams, 10 by default) waits in the filter's own queue, bounded
(``max_unsent``, 10,000 by default), and a writer task sends it as triodist reads. An answer
over that bound, or while triodist is not running, is counted (``unsent``) and forgotten.

Local users: the filter listens to its own user and root only. Its socket receives each
sender's credentials from the kernel and a query from any other user is counted (``foreign``)
and never answered; its socket's directory, and the directory of triodist's socket it answers
to, are created 0700 when missing and refused when another user owns them or may write to them
(``triodist.system.unixtrust``). Whoever else could send it queries would learn its verdicts;
whoever could replace triodist's socket would receive them instead of triodist.

Rules: one a line, ``allow|block|nxdomain|drop|ignore <name>``, each matching the name and
every name under it; ``block`` answers REFUSED, ``ignore`` sends no answer at all (the query
then waits for triodist's timeout). An ``allow`` rule wins; otherwise the closest matching
name decides; a name no rule matches is allowed. ``#`` starts a comment.

Beside the layers, for the demo, the example and the tests only (no module of the server
imports it). Imports nothing of triodist but ``triodist.system.unixtrust``: it speaks to
the server only through its sockets, as an outside program would.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections import Counter, deque
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import trio

from triodist.system.unixtrust import (
    CREDENTIALS_SPACE,
    check_directory,
    ensure_private_directory,
    pass_credentials,
    sender_credentials,
    trusted_uid,
)

__all__ = [
    "IGNORE",
    "KEYWORDS",
    "MAX_UNSENT",
    "VERDICTS",
    "Replies",
    "Rules",
    "bind_datagram_socket",
    "decide",
    "load_rules",
    "parse_rules",
    "prepare_reply_path",
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

#: Answers kept for triodist while its socket has no room for them, by default.
MAX_UNSENT = 10_000

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
    """Bind a unix datagram socket at ``path``, readable and writable by this user only,
    that receives its senders' credentials.

    The directory is created (mode 0700) if needed; one that another user owns or may write
    to is refused (``OSError``); a socket file left at ``path`` by an earlier run is
    removed, any other kind of file is an ``OSError``.
    """
    ensure_private_directory(os.fsencode(path.parent))
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"{path} exists and is not a socket")
        path.unlink()  # left behind by a previous run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old_umask = os.umask(0o177)  # created 0600: never accessible to others, not even briefly
    try:
        pass_credentials(sock)  # before bind: every datagram queued carries them
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


def prepare_reply_path(path: str | Path) -> None:
    """Make sure the directory of triodist's socket, where verdicts go, is private: created
    0700 when missing, refused (``OSError``) when another user owns it or may write to it,
    since that user could put a socket of theirs in triodist's place."""
    ensure_private_directory(os.fsencode(Path(path).parent))


class Replies:
    """The answers on their way to triodist's socket: sent at once when it has room, else
    queued (at most ``max_unsent``) and sent by :meth:`write_loop` as triodist reads.

    The socket is connected to triodist's: a connected unix datagram socket is writable
    again as soon as its peer's queue has room, so the writer waits for triodist to read
    rather than polling. When triodist is not there (not started, restarting), what is
    queued is counted as ``unsent`` and dropped, and the next answer connects again.
    ``stats`` counts ``queued`` (answers that waited) and ``unsent``.
    """

    def __init__(self, path: str, stats: Counter[str], max_unsent: int = MAX_UNSENT) -> None:
        self.path = path
        self.stats = stats
        self.max_unsent = max_unsent
        self.queue: deque[bytes] = deque()
        self.sock: socket.socket | None = None
        self._wake = trio.Event()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(RuntimeError):  # outside Trio: nobody waits on it
                trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
            self.sock = None

    def send(self, data: bytes) -> str | None:
        """Send or queue ``data``; None when done, else why it was not (and counted)."""
        if self.queue:  # older answers wait: this one goes after them
            return self._enqueue(data)
        try:
            self._send(data)
        except BlockingIOError:
            return self._enqueue(data)
        except OSError as exc:  # triodist not there (yet): never wait for it
            self.stats["unsent"] += 1
            return exc.strerror or str(exc)
        return None

    async def write_loop(self) -> None:
        """Send the queued answers as triodist reads them, until cancelled."""
        while True:
            if not self.queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            try:
                self._send(self.queue[0])
            except BlockingIOError:
                assert self.sock is not None
                with contextlib.suppress(trio.ClosedResourceError):
                    await trio.lowlevel.wait_writable(self.sock)
                continue
            except OSError:  # triodist went away: what waits is lost
                self.stats["unsent"] += len(self.queue)
                self.queue.clear()
                continue
            self.queue.popleft()
            await trio.lowlevel.checkpoint()  # the queries go on being read

    def _enqueue(self, data: bytes) -> str | None:
        if len(self.queue) >= self.max_unsent:
            self.stats["unsent"] += 1
            return f"{self.max_unsent} answers wait already"
        self.queue.append(data)
        self.stats["queued"] += 1
        self._wake.set()
        return None

    def _send(self, data: bytes) -> None:
        """One attempt, connecting (again) first if need be: ``OSError`` when it fails."""
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self.sock = sock
        try:
            self.sock.send(data)
        except BlockingIOError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.ECONNRESET):
                self.close()  # triodist restarted: the next answer connects again
            raise


async def receive_loop(
    listen: trio.socket.SocketType,
    replies: Replies,
    rules: Rules,
    stats: Counter[str],
    verbose: bool = False,
) -> None:
    """Answer each query received on ``listen``; never wait for triodist.

    ``stats`` counts ``received``, ``foreign`` (from another user than this one or root:
    dropped unread), ``malformed``, each verdict, ``queued`` and ``unsent`` (see
    :class:`Replies`).  ``listen`` must pass credentials (``unixtrust.pass_credentials``,
    set by :func:`bind_datagram_socket`) before anything is sent to it: a datagram without
    them counts as foreign.
    """
    while True:
        data, ancdata, _, _ = await listen.recvmsg(65535, CREDENTIALS_SPACE)
        stats["received"] += 1
        credentials = sender_credentials(ancdata)
        if credentials is None or not trusted_uid(credentials[1]):
            stats["foreign"] += 1
            if verbose:
                who = "no credentials" if credentials is None else f"uid {credentials[1]}"
                print(f"dropped a datagram from another user ({who})", flush=True)
            continue
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
            why = replies.send(f"{query.id} {verdict}".encode("ascii"))
            if why is not None:
                note = f" (not sent: {why})"
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
    max_unsent: int = MAX_UNSENT,
) -> None:
    """Run the filter on the bound socket ``listen`` until cancelled.

    Answers go to ``reply_path``, triodist's listening socket, whose directory must be
    private (``OSError`` otherwise; see :func:`prepare_reply_path`); at most
    ``max_unsent`` wait for triodist to read. ``listen`` is left open: it belongs to the
    caller (see :func:`bind_datagram_socket`).
    """
    check_directory(os.fsencode(Path(reply_path).parent))
    replies = Replies(str(reply_path), stats, max_unsent)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replies.write_loop)
            await receive_loop(
                trio.socket.from_stdlib_socket(listen), replies, rules, stats, verbose
            )
    finally:
        replies.close()
