"""Query actions: what a rule does to a query it matched.

An action is called with the query and returns a verdict ``(action, extra)`` with
dnsdist's meaning (see ``verdicts.py``).  Actions that answer the query build the answer
in ``dq.data`` and return ``HeaderModify``, as dnsdist's do.  What query and response
actions share is in ``actionbase.py``; the response actions are in
``response_actions.py``, the logging ones (and the files they write to) in
``log_actions.py``.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.rdatatype

from triodist.rules.actionbase import (
    Allow,
    Delay,
    Drop,
    LuaCall,
    SetSkipCache,
    SetTag,
    Truncate,
    whole,
)
from triodist.rules.actionbase import (
    QueryAction as QueryAction,  # re-exported too: see the end of the module
)
from triodist.rules.pyactions import PythonCall
from triodist.rules.selectors import LazyBucket
from triodist.rules.verdicts import NONE, Action, Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.build import (
    RR,
    make_rcode_answer,
    make_spoof_answer,
    make_truncated_answer,
    rebuild,
)
from triodist.wire.header import AA, AD, RA, RD, set_response_header
from triodist.wire.message import DNSQuestion
from triodist.wire.names import as_name


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


class AllowAction(Allow, QueryAction):
    pass


class DropAction(Drop, QueryAction):
    pass


class NoneAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        return NONE

    def describe(self) -> str:
        return "no op"


class RCodeAction(QueryAction):
    def __init__(self, rcode: int, options: dict[str, Any] | None = None) -> None:
        self.rcode = whole(rcode, "RCodeAction")
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
        self.cname = as_name(cname).to_text()
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


class TCAction(Truncate, QueryAction):
    """Truncated answer over UDP so the client retries over TCP; nothing over TCP."""

    def truncate(self, obj: DNSQuestion) -> None:
        make_truncated_answer(obj)


class DelayAction(Delay, QueryAction):
    pass


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
        self.bucket = LazyBucket(limit)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        return NONE if self.bucket.take() else (Action.Drop, "")

    def describe(self) -> str:
        return f"qps limit to {self.limit}"


class QPSPoolAction(QueryAction):
    def __init__(self, limit: float, pool: str, stop: bool = True) -> None:
        self.limit = limit
        self.pool = str(pool)
        self.stop = bool(stop)
        self.bucket = LazyBucket(limit)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        if not self.bucket.take():
            return NONE
        if self.stop:
            return (Action.Pool, self.pool)
        dq.pool = self.pool
        return NONE

    def describe(self) -> str:
        return f"max {self.limit} to pool {self.pool}"


class SetTagAction(SetTag, QueryAction):
    def __init__(self, name: str, value: str = "") -> None:
        if not isinstance(name, str):  # str(nil) would be the tag "None"
            raise TypeError(f"SetTagAction: expected a tag name, got {lua_describe(name)}")
        super().__init__(name, value)


class SetNoRecurseAction(QueryAction):
    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.data[2] &= 0xFE
        return NONE

    def describe(self) -> str:
        return "set rd=0"


class SetSkipCacheAction(SetSkipCache, QueryAction):
    pass


class LuaAction(LuaCall, QueryAction):
    """Call a Lua function with the query; it returns a verdict and an optional string."""

    _viewed = DNSQuestion

    def describe(self) -> str:
        return "Lua script"


class ContinueAction(QueryAction):
    """Run another action for its effect and go on with the next rules."""

    def __init__(self, action: QueryAction) -> None:
        self.action = action

    def __call__(self, dq: DNSQuestion) -> Verdict:
        self.action(dq)
        if isinstance(dq.suspension, PythonCall):
            # A Python action's verdict comes when its function returns: ignored too.
            dq.suspension.keep_verdict = False
        return NONE

    def describe(self) -> str:
        return f"continue after: {self.action}"
