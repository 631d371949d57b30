"""Response actions: what a rule does to a response it matched (a backend's answer, a
self-answered one, a cache hit).

Called with the ``DNSResponse``; the verdict is a ``ResponseAction`` (``verdicts.py``).
What a response action shares with its query twin is in ``actionbase.py``;
``LogResponseAction`` is in ``log_actions.py``.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from triodist.rules.actionbase import (
    Allow,
    Delay,
    Drop,
    LuaCall,
    ResponseActionBase,
    SetSkipCache,
    SetTag,
    Truncate,
    type_text,
    whole,
)
from triodist.rules.selectors import qtype_code
from triodist.rules.verdicts import RESPONSE_NONE, Verdict
from triodist.wire.build import rebuild
from triodist.wire.message import DNSQuestion, DNSResponse


class AllowResponseAction(Allow, ResponseActionBase):
    pass


class DropResponseAction(Drop, ResponseActionBase):
    pass


class DelayResponseAction(Delay, ResponseActionBase):
    pass


class LuaResponseAction(LuaCall, ResponseActionBase):
    """Call a Lua function with the response, as ``LuaAction`` does with the query."""

    _viewed = DNSResponse

    def describe(self) -> str:
        return "Lua response script"


class SetTagResponseAction(SetTag, ResponseActionBase):
    pass


class SetSkipCacheResponseAction(SetSkipCache, ResponseActionBase):
    """Keep this response out of the packet cache (it is still sent)."""


class TCResponseAction(Truncate, ResponseActionBase):
    """Truncate the response: TC set, every record removed (OPT kept)."""

    def truncate(self, obj: DNSQuestion) -> None:
        obj.data[2] |= 0x02
        rebuild(obj, answer=None)


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
        super().__init__(None, whole(max_ttl, "SetMaxTTLResponseAction"))

    def describe(self) -> str:
        return f"cap the TTL of the returned records to {self.high}"


class SetMinTTLResponseAction(_TTLAction):
    def __init__(self, min_ttl: int) -> None:
        super().__init__(whole(min_ttl, "SetMinTTLResponseAction"), None)

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
        self.types = frozenset(qtype_code(t, "ClearRecordTypesResponseAction") for t in types)

    def __call__(self, dr: DNSResponse) -> Verdict:
        dr.clear_record_types(self.types)
        return RESPONSE_NONE

    def describe(self) -> str:
        return "clear record types " + ", ".join(type_text(t) for t in sorted(self.types))
