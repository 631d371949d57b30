"""Selectors and actions about EDNS: which options a query carries (``EDNSOptionRule``),
the EDNS version it asks for (``EDNSVersionRule``), a response's extended rcode
(``ERCodeRule``); answering with an extended rcode (``ERCodeAction``) or a negative
answer with a SOA record (``NegativeAndSOAAction``), and giving the query an option on
its way to the backend (``SetEDNSOptionAction``).

The three selectors read the OPT record of the additional section, as dnsdist reads it:
its owner must be the root, and the first one counts. The bytes may be hostile: a
message whose records cannot be followed has no OPT record here, and options are read
until one runs past the record's data.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

import logging
from typing import Any

from triodist.rules.actionbase import QueryAction
from triodist.rules.actions import HeaderOptions, RCodeAction
from triodist.rules.log_actions import rcode_text
from triodist.rules.selectors import Selector
from triodist.rules.verdicts import NONE, Action, Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire import edns
from triodist.wire.ecs import ECSState
from triodist.wire.ednsoptions import edns_options
from triodist.wire.message import DNSQuestion
from triodist.wire.names import as_name
from triodist.wire.walk import find_opt

log = logging.getLogger("triodist.config")

# dnsdist's names of the extended rcodes (its showRules() says "ercode==" one of these);
# those under 16 are the header's, named as its log lines name them.
_EXTENDED_RCODE_NAMES = (
    "Bad OPT Version / TSIG Signature Failure",
    "Key not recognized",
    "Signature out of time window",
    "Bad TKEY Mode",
    "Duplicate key name",
    "Algorithm not supported",
    "Bad Truncation",
    "Bad/missing Server Cookie",
)


def rcode_name(rcode: int) -> str:
    """An rcode (extended ones too) as dnsdist names it in descriptions."""
    if rcode < 16:
        return rcode_text(rcode)
    extended = rcode - 16
    if extended < len(_EXTENDED_RCODE_NAMES):
        return _EXTENDED_RCODE_NAMES[extended]
    return f"Err#{rcode}"


def number_in(value: Any, function: str, what: str, maximum: int) -> int:
    """A whole number from 0 to ``maximum``, or an error naming ``function`` and the value
    (dnsdist would cut a larger one to its low bits without a word)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value  # NaN
        or value in (float("inf"), float("-inf"))
        or value != int(value)
        or not 0 <= value <= maximum
    ):
        raise ValueError(
            f"{function}: expected {what}, a whole number from 0 to {maximum}, "
            f"got {lua_describe(value)}"
        )
    return int(value)


def _root_opt(dq: DNSQuestion) -> int | None:
    """Where the OPT record of ``dq`` starts, when there is one owned by the root."""
    opt = find_opt(dq.data, dq.question_end)
    if opt is None or dq.data[opt[0]] != 0:
        return None
    return opt[0]


# --- selectors ---------------------------------------------------------------------------


class EDNSOptionRule(Selector):
    """Matches a message whose OPT record holds an option with this code."""

    def __init__(self, code: Any) -> None:
        self.code = number_in(code, "EDNSOptionRule", "an EDNS option code", 0xFFFF)

    def matches(self, dq: DNSQuestion) -> bool:
        if _root_opt(dq) is None:
            return False
        return self.code in edns_options(dq.data, dq.question_end)

    def describe(self) -> str:
        return f"ednsoptcode=={self.code}"


class EDNSVersionRule(Selector):
    """Matches a message whose OPT record asks for an EDNS version above this one (so
    ``EDNSVersionRule(0)`` matches what a server of EDNS 0 answers BADVERS)."""

    def __init__(self, version: Any) -> None:
        self.version = number_in(version, "EDNSVersionRule", "an EDNS version", 0xFF)

    def matches(self, dq: DNSQuestion) -> bool:
        start = _root_opt(dq)
        # The OPT record: owner (1), type (2), class (2), extended rcode (1), version (1).
        return start is not None and dq.data[start + 6] > self.version

    def describe(self) -> str:
        return f"ednsversion>{self.version}"


class ERCodeRule(Selector):
    """Matches a message whose rcode, its header's four bits and its OPT record's upper
    bits together, is this one. A message without an OPT record has no extended rcode,
    so it never matches, even for an rcode below 16 (as in dnsdist)."""

    def __init__(self, rcode: Any) -> None:
        self.rcode = number_in(rcode, "ERCodeRule", "an rcode", 0xFF)

    def matches(self, dq: DNSQuestion) -> bool:
        # The header's bits first: most messages fail there, without a walk.
        if dq.data[3] & 0x0F != self.rcode & 0x0F:
            return False
        start = _root_opt(dq)
        return start is not None and dq.data[start + 5] == self.rcode >> 4

    def describe(self) -> str:
        return f"ercode=={rcode_name(self.rcode)}"


# --- actions -----------------------------------------------------------------------------


class ERCodeAction(RCodeAction):
    """Answer with an extended rcode: its low four bits in the header, the rest in the
    OPT record of the answer, which a query without EDNS does not get (its answer then
    carries the low bits alone, as dnsdist's)."""

    def __init__(self, rcode: Any, options: dict[str, Any] | None = None) -> None:
        super().__init__(number_in(rcode, "ERCodeAction", "an rcode", 0xFF), options)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        verdict = super().__call__(dq)
        dq.edns_rcode = self.rcode >> 4
        return verdict

    def describe(self) -> str:
        return f"set ercode {rcode_name(self.rcode)}"


class NegativeAndSOAAction(QueryAction):
    """Answer NXDOMAIN (``nxd``) or NODATA, with the zone's SOA record in the additional
    section, so that a resolver caches the negative answer (dnsdist 1.7's place for it)."""

    def __init__(
        self,
        nxd: Any,
        zone: Any,
        ttl: Any,
        mname: Any,
        rname: Any,
        serial: Any,
        refresh: Any,
        retry: Any,
        expire: Any,
        minimum: Any,
        options: dict[str, Any] | None = None,
    ) -> None:
        name = type(self).__name__
        if not isinstance(nxd, bool):
            raise TypeError(f"{name}: expected true or false, got {lua_describe(nxd)}")
        self.nxd = nxd
        self.zone = as_name(zone)
        self.mname = as_name(mname)
        self.rname = as_name(rname)
        self.ttl = number_in(ttl, name, "a TTL", 0xFFFFFFFF)
        self.soa = tuple(
            number_in(value, name, what, 0xFFFFFFFF)
            for value, what in (
                (serial, "a serial"),
                (refresh, "a refresh time"),
                (retry, "a retry time"),
                (expire, "an expiry time"),
                (minimum, "a minimum TTL"),
            )
        )
        self.options = HeaderOptions(options)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        if int.from_bytes(dq.data[4:6], "big") != 1:
            return NONE  # dnsdist answers only a query with one question
        dq.setNegativeAndAdditionalSOA(
            self.nxd, self.zone, self.ttl, self.mname, self.rname, *self.soa
        )
        self.options.apply(dq)
        return (Action.Allow, "")

    def describe(self) -> str:
        return ("NXD " if self.nxd else "NODATA") + " with SOA"


class SetNegativeAndSOAAction(NegativeAndSOAAction):
    """dnsdist's older name of ``NegativeAndSOAAction``."""

    def __init__(self, *args: Any) -> None:
        log.warning(
            "SetNegativeAndSOAAction is an old name, which dnsdist deprecates: "
            "use NegativeAndSOAAction"
        )
        super().__init__(*args)


class SetEDNSOptionAction(QueryAction):
    """Give the query the EDNS option ``code`` with the value ``data`` on its way to the
    backend: options of that code it had are taken out, the new one goes last. A query
    without an OPT record gets one (payload size 512), which its answer loses before
    the client sees it, as in dnsdist. The chain goes on (the verdict is None)."""

    def __init__(self, code: Any, data: Any) -> None:
        self.code = number_in(code, "SetEDNSOptionAction", "an EDNS option code", 0xFFFF)
        if isinstance(data, str):
            data = data.encode("latin-1")  # a Lua string: its bytes as they are
        if not isinstance(data, bytes):
            raise TypeError(f"SetEDNSOptionAction: expected a string, got {lua_describe(data)}")
        if len(data) > 0xFFFF:
            raise ValueError("SetEDNSOptionAction: an option's value is at most 65535 bytes")
        self.value = data

    def __call__(self, dq: DNSQuestion) -> Verdict:
        work = bytearray(dq.data)
        try:
            edns.remove_option(work, self.code)
            done = edns.set_option(work, self.code, self.value, max_size=65535 if dq.tcp else 4096)
        except edns.EDNSError:
            return NONE  # records that cannot be followed, or too large: left as it was
        dq.data[:] = work
        if done is edns.Edit.ADDED_OPT:
            # Remembered where the client subnet's own additions are, so that the answer
            # loses the OPT record the client never sent (whatever the backend put in it).
            state = dq.ecs if isinstance(dq.ecs, ECSState) else ECSState()
            state.edns_added = True
            dq.ecs = state
        return NONE

    def describe(self) -> str:
        return f"add EDNS Option (code={self.code})"
