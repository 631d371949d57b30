"""Query actions that set something on the query and let the rules go on:
``SetDisableValidationAction`` (the CD flag the backend sees) and
``SetTempFailureCacheTTLAction`` (how long the cache keeps this query's SERVFAIL or
REFUSED answer).

Neither ends the rule chain (their verdict is None), as in dnsdist.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

from typing import Any

from triodist.rules.actionbase import QueryAction
from triodist.rules.verdicts import NONE, Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.header import CD
from triodist.wire.message import DNSQuestion


class SetDisableValidationAction(QueryAction):
    """Set CD in the query the backend gets. The client's own CD comes back in the answer
    (a self-made answer included), as dnsdist restores it."""

    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.data[3] |= CD & 0xFF
        return NONE

    def describe(self) -> str:
        return "set cd=1"


#: The largest TTL dnsdist takes here (a 32-bit unsigned number).
_MAX_TTL = 0xFFFFFFFF


class SetTempFailureCacheTTLAction(QueryAction):
    """Cache a SERVFAIL or REFUSED answer to the query for ``ttl`` seconds, in place of
    the cache's ``temporaryFailureTTL`` (0: not at all); other answers keep their TTLs."""

    def __init__(self, ttl: Any) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise TypeError(
                f"SetTempFailureCacheTTLAction: expected a TTL in seconds, got {lua_describe(ttl)}"
            )
        if not float(ttl).is_integer() or not 0 <= ttl <= _MAX_TTL:
            raise ValueError(
                "SetTempFailureCacheTTLAction: the TTL must be a whole number of seconds "
                f"from 0 to {_MAX_TTL}, got {lua_describe(ttl)}"
            )
        self.ttl = int(ttl)

    def __call__(self, dq: DNSQuestion) -> Verdict:
        dq.tempFailureTTL = self.ttl
        return NONE

    def describe(self) -> str:
        return f"set tempfailure cache ttl to {self.ttl}"
