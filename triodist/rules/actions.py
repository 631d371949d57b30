"""Actions: what a rule does to a query (or a response) it matched.

An action is called with the query and returns a verdict ``(action, extra)``
with dnsdist's meaning (see ``verdicts.py``).  Actions that answer the query
build the answer in ``dq.data`` and return ``HeaderModify``, as dnsdist's do.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import weakref
from collections.abc import Callable, Iterable
from typing import IO, Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from triodist.rules.luaview import Binder, bind_calls, call_with_view
from triodist.rules.selectors import _LazyBucket
from triodist.rules.verdicts import NONE, RESPONSE_NONE, Action, ResponseAction, Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.message import (
    AA,
    AD,
    RA,
    RD,
    RR,
    DNSQuestion,
    DNSResponse,
    make_rcode_answer,
    make_spoof_answer,
    make_truncated_answer,
    rebuild,
    set_response_header,
)

log = logging.getLogger("triodist.rules")

# Plain ints: reading an IntEnum member goes through EnumType.__getattr__ in Python 3.11,
# which costs more than the rest of a verdict's handling.
_ACTION_NONE = int(Action.None_)
_RESPONSE_NONE = int(ResponseAction.None_)


class QueryAction:
    """Base class for query actions."""

    def __call__(self, dq: DNSQuestion) -> Verdict:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return self.describe()

    def toString(self) -> str:
        return self.describe()


class ResponseActionBase:
    """Base class for response actions."""

    def __call__(self, dr: DNSResponse) -> Verdict:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return self.describe()

    def toString(self) -> str:
        return self.describe()


class HeaderOptions:
    """The ``{aa=, ad=, ra=}`` options of the answering actions (dnsdist's ResponseConfig)."""

    def __init__(self, options: dict[str, Any] | None) -> None:
        options = options or {}
        self.aa: bool | None = _opt_bool(options, "aa")
        self.ad: bool | None = _opt_bool(options, "ad")
        self.ra: bool | None = _opt_bool(options, "ra")
        self.ttl = int(options.get("ttl", 60))

    def apply(self, dq: DNSQuestion) -> None:
        # dnsdist's setResponseHeadersFromConfig: AA only when asked; AD cleared and
        # RA copied from RD unless asked otherwise.
        flags = int.from_bytes(dq.data[2:4], "big")
        ad = False if self.ad is None else self.ad
        ra = bool(flags & RD) if self.ra is None else self.ra
        for flag, value in ((AA, self.aa), (AD, ad), (RA, ra)):
            if value is not None:
                flags = flags | flag if value else flags & ~flag
        dq.data[2:4] = flags.to_bytes(2, "big")


def _opt_bool(options: dict[str, Any], key: str) -> bool | None:
    return bool(options[key]) if key in options else None


class AllowAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        return (Action.Allow, "")

    def describe(self) -> str:
        return "allow"


class DropAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        return (Action.Drop, "")

    def describe(self) -> str:
        return "drop"


class NoneAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        return NONE

    def describe(self) -> str:
        return "no op"


class RCodeAction(QueryAction):
    def __init__(self, rcode: int, options: dict[str, Any] | None = None) -> None:
        self.rcode = _whole(rcode, "RCodeAction")
        self.options = HeaderOptions(options)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        make_rcode_answer(dq, self.rcode)
        self.options.apply(dq)
        return (Action.HeaderModify, "")

    def describe(self) -> str:
        return f"set rcode {self.rcode}"


class SpoofAction(QueryAction):
    def __init__(self, addresses: Any, options: dict[str, Any] | None = None) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        elif isinstance(addresses, dict):
            addresses = list(addresses.values())
        elif not isinstance(addresses, list | tuple):
            raise TypeError(
                "SpoofAction: expected an address or a table of addresses, "
                f"got {lua_describe(addresses)}"
            )
        if not addresses:  # nothing to answer with: an error here, not at the first query
            raise ValueError("SpoofAction: expected at least one address, got an empty table")
        self.addresses = [str(a) for a in addresses]
        self._types = frozenset(
            dns.rdatatype.A if ipaddress.ip_address(a).version == 4 else dns.rdatatype.AAAA
            for a in self.addresses
        )
        self.options = HeaderOptions(options)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        # Nothing of the query's type to answer with: dnsdist lets the query go on.
        if dq.qtype != dns.rdatatype.ANY and dq.qtype not in self._types:
            return NONE
        make_spoof_answer(dq, self.addresses, ttl=self.options.ttl)
        self.options.apply(dq)
        return (Action.HeaderModify, "")

    def describe(self) -> str:
        return "spoof in " + ", ".join(self.addresses)


class SpoofCNAMEAction(QueryAction):
    def __init__(self, cname: str, options: dict[str, Any] | None = None) -> None:
        if not isinstance(cname, str):  # str(nil) would be the name "None."
            raise TypeError(f"SpoofCNAMEAction: expected a name, got {lua_describe(cname)}")
        self.cname = dns.name.from_text(cname).to_text()
        self.options = HeaderOptions(options)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        make_spoof_answer(dq, [], cname=self.cname, ttl=self.options.ttl)
        self.options.apply(dq)
        return (Action.HeaderModify, "")

    def describe(self) -> str:
        return f"spoof in {self.cname}"


class SpoofRawAction(QueryAction):
    """Answer with records of the query's type whose rdata is given raw (wire format)."""

    def __init__(self, raws: Any, options: dict[str, Any] | None = None) -> None:
        if isinstance(raws, str | bytes):
            raws = [raws]
        elif isinstance(raws, dict):
            raws = list(raws.values())
        self.raws = [r.encode("latin-1") if isinstance(r, str) else bytes(r) for r in raws]
        self.options = HeaderOptions(options)
        self.qtype = int(options.get("typeForAny", 0)) if options else 0

    def __call__(self, dq: DNSQuestion) -> Verdict:
        rtype = dq.qtype
        if rtype == dns.rdatatype.ANY and self.qtype:
            rtype = self.qtype
        # The rdata goes out as given, unparsed, and without EDNS: as dnsdist does.
        records: list[RR] = [(dq.name, rtype, self.options.ttl, raw) for raw in self.raws]
        set_response_header(dq.data, rcode=0)
        rebuild(dq, answer=records, keep_opt=False)
        self.options.apply(dq)
        return (Action.HeaderModify, "")

    def describe(self) -> str:
        return f"spoof {len(self.raws)} raw answers"


class TCAction(QueryAction):
    """Truncated answer over UDP so the client retries over TCP; nothing over TCP."""

    def __call__(self, dq: DNSQuestion) -> Verdict:
        if dq.tcp:
            return NONE
        make_truncated_answer(dq)
        return (Action.HeaderModify, "")

    def describe(self) -> str:
        return "tc=1 answer"


class DelayAction(QueryAction):
    def __init__(self, msec: int) -> None:
        self.msec = int(msec)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        return (Action.Delay, str(self.msec))

    def describe(self) -> str:
        return f"delay by {self.msec} ms"


class PoolAction(QueryAction):
    def __init__(self, pool: str, stop: bool = True) -> None:
        if not isinstance(pool, str):  # dnsdist refuses nil too; no pool named "None"
            raise TypeError(f"PoolAction: expected a pool name, got {lua_describe(pool)}")
        self.pool = pool
        self.stop = bool(stop)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        # The pool is set here, not by the verdict, so that ContinueAction(PoolAction(..))
        # routes too, as in dnsdist.
        dq.pool = self.pool
        return (Action.Pool, self.pool) if self.stop else NONE

    def describe(self) -> str:
        return f"to pool {self.pool}"


class QPSAction(QueryAction):
    """Let up to ``limit`` queries a second go on to the next rules; drop the rest (as dnsdist)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.bucket = _LazyBucket(limit)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        return NONE if self.bucket.take() else (Action.Drop, "")

    def describe(self) -> str:
        return f"qps limit to {self.limit}"


class QPSPoolAction(QueryAction):
    def __init__(self, limit: float, pool: str, stop: bool = True) -> None:
        self.limit = limit
        self.pool = str(pool)
        self.stop = bool(stop)
        self.bucket = _LazyBucket(limit)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        if not self.bucket.take():
            return NONE
        if self.stop:
            return (Action.Pool, self.pool)
        dq.pool = self.pool
        return NONE

    def describe(self) -> str:
        return f"max {self.limit} to pool {self.pool}"


class SetTagAction(QueryAction):
    def __init__(self, name: str, value: str = "") -> None:
        if not isinstance(name, str):  # str(nil) would be the tag "None"
            raise TypeError(f"SetTagAction: expected a tag name, got {lua_describe(name)}")
        self.name = str(name)
        self.value = str(value)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.tags[self.name] = self.value
        return NONE

    def describe(self) -> str:
        return f"set tag '{self.name}' to value '{self.value}'"


class SetNoRecurseAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.data[2] &= 0xFE
        return NONE

    def describe(self) -> str:
        return "set rd=0"


class SetSkipCacheAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.skipCache = True
        return NONE

    def describe(self) -> str:
        return "skip cache"


class LogFile:
    """A file rules write to, open while the server serves, shared by every logger that
    names the same path, whatever buffering each asks: a reload, or a rule added at the
    console, that names the running log again writes on through the same file (never
    truncating it, never interleaving two buffers), and the file is closed when its last
    logger is. The buffering is the one the first logger asked for."""

    __slots__ = ("buffered", "file", "owner", "path", "users")

    def __init__(self, path: str, file: IO[str], buffered: bool, owner: LogFiles) -> None:
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
        # Line-buffered unless the configuration asked for buffering; a path the server
        # opened before (by a rule since removed) is appended to.
        mode = "a" if append or path in self.opened else "w"
        file = open(path, mode, buffering=-1 if buffered else 1)  # noqa: SIM115
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
        self.file: IO[str] | None = None
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

    def write(self, line: str) -> None:
        if self.file is not None and not self.file.closed:
            self.file.write(line + "\n")
        elif not self.verbose_only or log.isEnabledFor(logging.DEBUG):
            log.info("%s", line)

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


def _rcode_text(rcode: int) -> str:
    return _RCODE_TEXT[rcode] if 0 <= rcode < len(_RCODE_TEXT) else f"Err#{rcode}"


def _type_text(qtype: int) -> str:
    return str(dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype)))


class LogAction(QueryAction):
    def __init__(
        self,
        filename: str = "",
        binary: bool = False,
        append: bool = False,
        buffered: bool = True,
        verbose_only: bool = True,
        include_timestamp: bool = False,
    ) -> None:
        self.logger = Logger(str(filename or ""), bool(append), bool(buffered), bool(verbose_only))
        self.include_timestamp = include_timestamp

    def __call__(self, dq: DNSQuestion) -> Verdict:
        # dnsdist's format, so that existing log parsers keep working.
        line = (
            f"Packet from {dq.remoteaddr.toStringWithPort()} for {dq.name} "
            f"{_type_text(dq.qtype)} with id {dq.id}"
        )
        if self.include_timestamp:
            line = f"[{dq.query_time:.6f}] {line}"
        self.logger.write(line)
        return NONE

    def describe(self) -> str:
        return "log to " + (self.logger.filename or "the log")

    def close(self) -> None:
        """Close the file (the server calls this when it stops)."""
        self.logger.close()


class _LuaCall:
    """A Lua function called with the object's ``LuaView`` (``luaview.py`` says why), its
    result read as a verdict. The call is written out here rather than left to
    ``call_with_view``: this runs for every object the rule sees. ``binder`` comes from
    the Lua runtime (``runtime.py``)."""

    takes_binder = True
    #: The class whose objects get the bound call, and the verdict when none is given.
    _viewed: type
    _default: int

    def __init__(self, func: Callable[[Any], Any], binder: Binder | None = None) -> None:
        if not callable(func):  # else the first query would find out
            raise TypeError(f"{type(self).__name__}: expected a function, got {lua_describe(func)}")
        self.func = func
        self._calls = bind_calls(func, binder, (self._viewed,))

    def __call__(self, obj: Any) -> Verdict:
        entry = self._calls.get(type(obj))
        if entry is None:  # another class of object, or a view handed back by Lua
            return lua_verdict(call_with_view(self.func, obj), self._default)
        view, call = entry
        previous = view._target
        view._target = obj
        try:
            result = call()
        finally:
            view._target = previous
        # lua_verdict's usual cases, without its call: ``DNSAction.X, "extra"`` arrives
        # from lupa as an (int, str) tuple, a verdict already, ``DNSAction.X`` as an int.
        if type(result) is tuple:
            if len(result) == 2 and type(result[0]) is int and type(result[1]) is str:
                return result
        elif type(result) is int:
            return (result, "")
        return lua_verdict(result, self._default)


class LuaAction(_LuaCall, QueryAction):
    """Call a Lua function with the query; it returns a verdict and an optional string."""

    _viewed = DNSQuestion
    _default = _ACTION_NONE

    def describe(self) -> str:
        return "Lua script"


class ContinueAction(QueryAction):
    """Run another action for its effect and go on with the next rules."""

    def __init__(self, action: QueryAction) -> None:
        self.action = action

    def __call__(self, dq: DNSQuestion) -> Verdict:
        self.action(dq)
        return NONE

    def describe(self) -> str:
        return f"continue after: {self.action}"


def lua_verdict(result: Any, default: int) -> Verdict:
    """Turn what a Lua action returned (``action`` or ``action, "extra"``) into a verdict."""
    if isinstance(result, tuple):
        action = result[0] if result else None
        extra = result[1] if len(result) > 1 else None
    else:
        action, extra = result, None
    if action is None:
        action = default
    if isinstance(extra, int | float) and not isinstance(extra, bool):
        extra = str(int(extra)) if float(extra).is_integer() else str(extra)
    return (int(action), "" if extra is None else str(extra))


# --- response actions -------------------------------------------------------------------


class AllowResponseAction(ResponseActionBase):
    def __call__(self, dr: DNSResponse) -> Verdict:
        return (ResponseAction.Allow, "")

    def describe(self) -> str:
        return "allow"


class DropResponseAction(ResponseActionBase):
    def __call__(self, dr: DNSResponse) -> Verdict:
        return (ResponseAction.Drop, "")

    def describe(self) -> str:
        return "drop"


class DelayResponseAction(ResponseActionBase):
    def __init__(self, msec: int) -> None:
        self.msec = int(msec)

    def __call__(self, dr: DNSResponse) -> Verdict:
        return (ResponseAction.Delay, str(self.msec))

    def describe(self) -> str:
        return f"delay by {self.msec} ms"


class LogResponseAction(ResponseActionBase):
    def __init__(
        self,
        filename: str = "",
        append: bool = False,
        buffered: bool = True,
        verbose_only: bool = True,
        include_timestamp: bool = False,
    ) -> None:
        self.logger = Logger(str(filename or ""), bool(append), bool(buffered), bool(verbose_only))
        self.include_timestamp = include_timestamp

    def __call__(self, dr: DNSResponse) -> Verdict:
        line = (
            f"Answer to {dr.remoteaddr.toStringWithPort()} for {dr.name} "
            f"{_type_text(dr.qtype)} ({_rcode_text(dr.rcode)}) with id {dr.id}"
        )
        if self.include_timestamp:
            line = f"[{dr.query_time:.6f}] {line}"
        self.logger.write(line)
        return RESPONSE_NONE

    def describe(self) -> str:
        return "log to " + (self.logger.filename or "the log")

    def close(self) -> None:
        """Close the file (the server calls this when it stops)."""
        self.logger.close()


class LuaResponseAction(_LuaCall, ResponseActionBase):
    """Call a Lua function with the response, as ``LuaAction`` does with the query."""

    _viewed = DNSResponse
    _default = _RESPONSE_NONE

    def describe(self) -> str:
        return "Lua response script"


class SetTagResponseAction(ResponseActionBase):
    def __init__(self, name: str, value: str = "") -> None:
        self.name = str(name)
        self.value = str(value)

    def __call__(self, dr: DNSResponse) -> Verdict:
        dr.tags[self.name] = self.value
        return RESPONSE_NONE

    def describe(self) -> str:
        return f"set tag '{self.name}' to value '{self.value}'"


class SetSkipCacheResponseAction(ResponseActionBase):
    """Keep this response out of the packet cache (it is still sent)."""

    def __call__(self, dr: DNSResponse) -> Verdict:
        dr.skipCache = True
        return RESPONSE_NONE

    def describe(self) -> str:
        return "skip cache"


class TCResponseAction(ResponseActionBase):
    """Truncate the response: TC set, every record removed (OPT kept)."""

    def __call__(self, dr: DNSResponse) -> Verdict:
        if dr.tcp:  # truncation means nothing over TCP
            return RESPONSE_NONE
        dr.data[2] |= 0x02
        rebuild(dr, answer=None)
        return (ResponseAction.HeaderModify, "")

    def describe(self) -> str:
        return "tc=1 answer"


def _whole(value: Any, function: str) -> int:
    """A number argument, or the error that names the function and the value as Lua does
    (``int(None)`` would say "int() argument must be ..., not 'NoneType'")."""
    # Not a boolean (int(True) is 1), and finite (int() of inf or nan raises otherwise).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{function}: expected a number, got {lua_describe(value)}")
    if not -(2**63) < value < 2**63:
        raise TypeError(f"{function}: expected a number, got {lua_describe(value)}")
    return int(value)


class _TTLAction(ResponseActionBase):
    def __init__(self, low: int | None, high: int | None, types: Iterable[int] = ()) -> None:
        self.low = low
        self.high = high
        self.types = frozenset(int(t) for t in types)

    def clamp(self, ttl: int) -> int:
        if self.high is not None and ttl > self.high:
            ttl = self.high
        if self.low is not None and ttl < self.low:
            ttl = self.low
        return ttl

    def __call__(self, dr: DNSResponse) -> Verdict:
        dr.set_ttls(self.clamp, only_types=self.types)
        return RESPONSE_NONE


class SetMaxTTLResponseAction(_TTLAction):
    def __init__(self, max_ttl: int) -> None:
        super().__init__(None, _whole(max_ttl, "SetMaxTTLResponseAction"))

    def describe(self) -> str:
        return f"cap the TTL of the returned records to {self.high}"


class SetMinTTLResponseAction(_TTLAction):
    def __init__(self, min_ttl: int) -> None:
        super().__init__(_whole(min_ttl, "SetMinTTLResponseAction"), None)

    def describe(self) -> str:
        return f"increase the TTL of the returned records to {self.low}"


class LimitTTLResponseAction(_TTLAction):
    def __init__(self, min_ttl: int = 0, max_ttl: int = 2**32 - 1, types: Any = ()) -> None:
        if isinstance(types, dict):
            types = list(types.values())
        super().__init__(int(min_ttl), int(max_ttl), types)

    def describe(self) -> str:
        return f"limit the TTL of the returned records to [{self.low}, {self.high}]"


class ClearRecordTypesResponseAction(ResponseActionBase):
    def __init__(self, types: Any) -> None:
        if isinstance(types, int | str):
            types = [types]
        elif isinstance(types, dict):
            types = list(types.values())
        self.types = frozenset(
            int(dns.rdatatype.from_text(t)) if isinstance(t, str) else int(t) for t in types
        )

    def __call__(self, dr: DNSResponse) -> Verdict:
        dr.clear_record_types(self.types)
        return RESPONSE_NONE

    def describe(self) -> str:
        return "clear record types " + ", ".join(_type_text(t) for t in sorted(self.types))
