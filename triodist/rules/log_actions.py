"""Actions that write an entry for each query or response (``LogAction``,
``LogResponseAction``), and the files they write to: opened when the server starts
serving the rules, shared between rules that name the same path, closed with the last
rule that writes to them.

The defaults are those of dnsdist 1.7.3's Lua functions, which are not what its
documentation says: ``LogAction`` writes binary entries unless ``binary`` is false, and
both write unbuffered unless ``buffered`` is true (each entry is on disk when the action
returns).

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
import weakref
from collections.abc import Callable, Iterable
from typing import IO, Any

import trio

from triodist.rules.actionbase import ActionKind, QueryAction, ResponseActionBase, type_text
from triodist.rules.verdicts import Verdict
from triodist.wire.message import DNSQuestion, DNSResponse

log = logging.getLogger("triodist.rules")


class LogFile:
    """A file rules write to, open while the server serves, shared by every logger that
    names the same path, whatever buffering each asks: a reload, or a rule added at the
    console, that names the running log again writes on through the same file (never
    truncating it, never interleaving two buffers), and the file is closed when its last
    logger is. The buffering is the one the first logger asked for."""

    __slots__ = ("buffered", "file", "owner", "path", "users")

    def __init__(self, path: str, file: IO[bytes], buffered: bool, owner: LogFiles) -> None:
        self.path = path
        self.file = file
        self.buffered = buffered
        self.owner = owner
        self.users = 1


class LogFiles:
    """The files a running server's rules write to, by absolute path, whatever its rules
    are now: a rule removed at the console (``rmRule``, ``clearRules``) keeps its file
    open until the queries that were in its rules are done, and a rule added meanwhile,
    or a reload, that names the same file shares it rather than opening it again. A path
    is truncated only the first time the server opens it (dnsdist's "w" at start-up);
    opened again later in the server's life, it is appended to, so a log is never
    emptied under a running server. One per server, handed from configuration to
    configuration by a reload."""

    def __init__(self) -> None:
        # Keyed by path alone: two file objects on one path, each with its own buffer,
        # would interleave their flushes mid-line.
        self.open: dict[str, LogFile] = {}
        #: Every path opened in the server's life (paths come from the configuration,
        #: never from a client: bounded by what the operator writes).
        self.opened: set[str] = set()
        #: Paths already warned about for a buffering other than the open file's: one
        #: warning per path, not one per rule or reload.
        self.warned: set[str] = set()

    def share(self, path: str, buffered: bool, append: bool) -> LogFile:
        shared = self.open.get(path)
        if shared is not None:
            if shared.buffered != buffered and path not in self.warned:
                self.warned.add(path)
                log.warning(
                    "%s is already open %s; a rule asking for it %s shares that file as it is",
                    path,
                    "buffered" if shared.buffered else "line by line",
                    "buffered" if buffered else "line by line",
                )
            shared.users += 1
            return shared
        # Opened in binary mode: text lines and binary entries may share a file. Without
        # buffering each entry is one write(), whole on disk when the action returns; a
        # path the server opened before (by a rule since removed) is appended to.
        mode = "ab" if append or path in self.opened else "wb"
        file = open(path, mode, buffering=-1 if buffered else 0)  # noqa: SIM115
        shared = LogFile(path, file, buffered, self)
        self.open[path] = shared
        self.opened.add(path)
        return shared

    def release(self, shared: LogFile) -> None:
        """One logger fewer writes to ``shared``: the file closes with its last one."""
        shared.users -= 1
        if shared.users <= 0:
            if self.open.get(shared.path) is shared:
                del self.open[shared.path]
            shared.file.close()

    def close_all(self) -> None:
        """The server stops: every file still open closes, those of removed rules that a
        query might still hold included (a late line then goes to the log)."""
        for shared in list(self.open.values()):
            shared.users = 0
            shared.file.close()
        self.open.clear()


class Logger:
    """Where LogAction and LogResponseAction write: a file, or the log.

    Running a configuration only records the file's name: ``check-config``, a reload
    that fails and a configuration that never serves touch no file. The file is opened
    by ``open_loggers`` when the server starts serving, when a reload is put in place,
    or when a rule is added to the running server; dnsdist opens it while the
    configuration runs.

    One action, and so one logger, may be in several rules at once (``la = LogAction(...)``
    added twice, or removed and added again while a query still holds the removed rule):
    each rule opens the logger once and closes it once, and the file stays open while
    any of them has it open (``uses``)."""

    def __init__(self, filename: str, append: bool, buffered: bool, verbose_only: bool) -> None:
        self.filename = filename
        self.append = append
        self.buffered = buffered
        self.verbose_only = verbose_only
        self.shared: LogFile | None = None
        self.file: IO[bytes] | None = None
        #: The rules that have this logger open: the file is let go with the last.
        self.uses = 0

    def open(self, files: LogFiles) -> bool:
        """Open the file among the server's ``files``, for one rule more: one open already
        is shared; one opened anew is truncated the first time the server opens it,
        unless ``append`` asks otherwise, as dnsdist does at start-up. False when there
        is no file to open (the logger writes to the log)."""
        if not self.filename:
            return False
        if self.shared is None:
            shared = files.share(os.path.abspath(self.filename), self.buffered, self.append)
            self.shared, self.file = shared, shared.file
        self.uses += 1
        return True

    @property
    def to_file(self) -> bool:
        """Whether entries go to a file now (else to the log)."""
        return self.file is not None and not self.file.closed

    def write(self, line: str) -> None:
        if self.file is not None and not self.file.closed:
            self.file.write(line.encode("utf-8", "replace") + b"\n")
        elif not self.verbose_only or log.isEnabledFor(logging.DEBUG):
            log.info("%s", line)

    def write_bytes(self, entry: bytes) -> None:
        """A binary entry: to the file only (nothing is written to the log)."""
        if self.file is not None and not self.file.closed:
            self.file.write(entry)

    def close(self) -> None:
        """One rule that had this logger open is done with it; the logger lets its file go
        with the last such rule, and the file closes with its last logger."""
        if self.shared is None:
            return
        self.uses -= 1
        if self.uses > 0:
            return  # another rule still writes through this logger
        shared, self.shared, self.file = self.shared, None, None
        self.uses = 0
        shared.owner.release(shared)


def loggers_of(actions: Iterable[Any]) -> list[Logger]:
    """The loggers of ``actions``, those of actions wrapped in another (ContinueAction)
    included."""
    found: list[Logger] = []
    for action in actions:
        while action is not None:
            logger = getattr(action, "logger", None)
            if isinstance(logger, Logger):
                found.append(logger)
            action = getattr(action, "action", None)
    return found


def open_loggers(loggers: Iterable[Logger], files: LogFiles) -> list[Logger]:
    """Open the files of ``loggers`` (one rule's) among the server's ``files``: all or
    nothing (on an ``OSError`` the ones opened here are closed again). The loggers
    opened, for the rule to close once each when it goes (``Rule.opened``)."""
    opened: list[Logger] = []
    try:
        for logger in loggers:
            if logger.open(files):
                opened.append(logger)
    except BaseException:
        for logger in opened:
            logger.close()
        raise
    return opened


def close_when_released(owner: object, loggers: Iterable[Logger]) -> None:
    """Close ``loggers`` once ``owner`` (rules taken out of a chain, a replaced
    configuration's chains) is collected: a query that was in those rules when they were
    taken out still holds them, and may still write."""
    closers: list[Callable[[], object]] = [logger.close for logger in loggers]
    if closers:
        weakref.finalize(owner, _close_all, closers)


def _close_all(closers: list[Callable[[], object]]) -> None:
    for close in closers:
        close()


# dnsdist's RCode::to_s, as its log lines show rcodes.
_RCODE_TEXT = (
    "No Error",
    "Form Error",
    "Server Failure",
    "Non-Existent domain",
    "Not Implemented",
    "Query Refused",
    "Name Exists when it should not",
    "RR Set Exists when it should not",
    "RR Set that should exist does not",
    "Server Not Authoritative for zone / Not Authorized",
    "Name not contained in zone",
)


def rcode_text(rcode: int) -> str:
    return _RCODE_TEXT[rcode] if 0 <= rcode < len(_RCODE_TEXT) else f"Err#{rcode}"


def wall_clock_of(obj: DNSQuestion) -> float:
    """When ``obj``'s query arrived, on the wall clock (seconds since the epoch), as
    dnsdist stamps log entries: ``query_time`` is on Trio's clock, which has no epoch."""
    try:
        elapsed = max(0.0, trio.current_time() - obj.query_time)
    except RuntimeError:  # outside Trio (a rule called from plain Python)
        elapsed = 0.0
    return time.time() - elapsed


def timestamp_text(seconds: float) -> str:
    """``[seconds.nanoseconds]``, the nanoseconds in nine digits (dnsdist 1.7.3 prints
    them without leading zeros, so that .05 s reads as .50000000)."""
    whole = int(seconds)
    return f"[{whole}.{int((seconds - whole) * 1e9):09d}]"


class LogLine(ActionKind):
    """What ``LogAction`` and ``LogResponseAction`` share: a line for each object, in
    dnsdist's format (so that existing log parsers keep working), written by their
    ``Logger``. ``None`` for an argument (Lua's nil) is its default, as in dnsdist."""

    def __init__(
        self,
        filename: str | None = "",
        append: bool | None = False,
        buffered: bool | None = False,
        verbose_only: bool | None = True,
        include_timestamp: bool | None = False,
    ) -> None:
        self.logger = Logger(
            str(filename or ""),
            bool(append),
            bool(buffered),
            True if verbose_only is None else bool(verbose_only),
        )
        self.include_timestamp = bool(include_timestamp)

    def line(self, obj: Any) -> str:
        raise NotImplementedError

    def __call__(self, obj: DNSQuestion) -> Verdict:
        line = self.line(obj)
        if self.include_timestamp:
            line = f"{timestamp_text(wall_clock_of(obj))} {line}"
        self.logger.write(line)
        return self.NONE

    def describe(self) -> str:
        return "log to " + (self.logger.filename or "the log")

    def close(self) -> None:
        """Close the file (the server calls this when it stops)."""
        self.logger.close()


_U16_NATIVE = struct.Struct("=H")
_BINARY_TIME = struct.Struct("=QI")


def binary_entry(dq: DNSQuestion, when: float | None) -> bytes:
    """One query as dnsdist 1.7.3's binary ``LogAction`` writes it, on this machine's
    byte order as dnsdist's is: [the arrival time: 64-bit seconds, 32-bit nanoseconds],
    the query ID as it is on the wire, the question name in wire format, the type (16
    bits), the address family (16 bits: AF_INET or AF_INET6), the client's address and
    its port as they are on the wire (network byte order)."""
    parts: list[bytes] = []
    if when is not None:
        whole = int(when)
        parts.append(_BINARY_TIME.pack(whole, int((when - whole) * 1e9)))
    parts.append(bytes(dq.data[0:2]))
    parts.append(dq.qname_wire)
    parts.append(_U16_NATIVE.pack(dq.qtype & 0xFFFF))
    ip = dq.remoteaddr.ip
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    parts.append(_U16_NATIVE.pack(int(family)))
    parts.append(ip.packed)
    parts.append(struct.pack("!H", dq.remote[1] & 0xFFFF))
    return b"".join(parts)


class LogAction(LogLine, QueryAction):
    def __init__(
        self,
        filename: str | None = "",
        binary: bool | None = True,
        append: bool | None = False,
        buffered: bool | None = False,
        verbose_only: bool | None = True,
        include_timestamp: bool | None = False,
    ) -> None:
        super().__init__(filename, append, buffered, verbose_only, include_timestamp)
        #: Binary entries (dnsdist's default) when writing to a file; the log always
        #: gets text lines.
        self.binary = True if binary is None else bool(binary)

    def __call__(self, obj: DNSQuestion) -> Verdict:
        logger = self.logger
        if self.binary and logger.to_file:
            when = wall_clock_of(obj) if self.include_timestamp else None
            logger.write_bytes(binary_entry(obj, when))
            return self.NONE
        return super().__call__(obj)

    def line(self, dq: DNSQuestion) -> str:
        return (
            f"Packet from {dq.remoteaddr.toStringWithPort()} for {dq.name} "
            f"{type_text(dq.qtype)} with id {dq.id}"
        )


class LogResponseAction(LogLine, ResponseActionBase):
    def line(self, dr: DNSResponse) -> str:
        return (
            f"Answer to {dr.remoteaddr.toStringWithPort()} for {dr.name} "
            f"{type_text(dr.qtype)} ({rcode_text(dr.rcode)}) with id {dr.id}"
        )
