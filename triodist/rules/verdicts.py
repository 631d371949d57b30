"""The verdicts rules return, with dnsdist's numbering (``DNSAction.Drop`` is 0).

Imports nothing of triodist.
"""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    """dnsdist's ``DNSAction``: what a query rule decided."""

    Drop = 0
    Nxdomain = 1
    Refused = 2
    Spoof = 3
    Allow = 4
    HeaderModify = 5
    Pool = 6
    Delay = 7
    Truncate = 8
    ServFail = 9
    None_ = 10
    NoOp = 11
    NoRecurse = 12
    SpoofRaw = 13
    SpoofPacket = 14
    SetTag = 15


class ResponseAction(IntEnum):
    """dnsdist's ``DNSResponseAction``: what a response rule decided."""

    Allow = 0
    Delay = 1
    Drop = 2
    HeaderModify = 3
    ServFail = 4
    None_ = 5
    Truncate = 6


# A rule's result: the verdict and the optional string that goes with it
# (a pool name for Pool, milliseconds for Delay, an address for Spoof, ...).
Verdict = tuple[int, str]

NONE: Verdict = (Action.None_, "")
RESPONSE_NONE: Verdict = (ResponseAction.None_, "")
