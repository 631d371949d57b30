"""The two kinds of action, and the code a query action and its response twin share.

An action is called with the query (a ``QueryAction``) or the response (a
``ResponseActionBase``) its rule matched and returns a verdict ``(action, extra)`` with
dnsdist's meaning (``verdicts.py``). Most response actions have a query twin that does the
same to the object it is given (``AllowAction`` and ``AllowResponseAction``,
``SetTagAction`` and ``SetTagResponseAction``...): the behaviour is written once here, and
each kind supplies its own verdicts (``ActionKind``). The concrete classes, with the names
Lua knows, are in ``actions.py`` (query actions), ``response_actions.py`` and
``log_actions.py``.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import dns.rdatatype

from triodist.rules.described import Described
from triodist.rules.luaview import Binder, bind_calls, call_with_view
from triodist.rules.verdicts import NONE, RESPONSE_NONE, Action, ResponseAction, Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.message import DNSQuestion, DNSResponse


class ActionKind(Described):
    """What both kinds of action have: a call that returns a verdict, and the verdicts of
    their kind for the code the two kinds share."""

    NONE: ClassVar[Verdict]
    ALLOW: ClassVar[Verdict]
    DROP: ClassVar[Verdict]
    HEADER_MODIFY: ClassVar[Verdict]
    DELAY: ClassVar[int]

    def __call__(self, obj: Any) -> Verdict:
        raise NotImplementedError


class QueryAction(ActionKind):
    """Base class for query actions: called with the ``DNSQuestion``."""

    NONE = NONE
    ALLOW = (Action.Allow, "")
    DROP = (Action.Drop, "")
    HEADER_MODIFY = (Action.HeaderModify, "")
    DELAY = Action.Delay

    def __call__(self, dq: DNSQuestion) -> Verdict:
        raise NotImplementedError


class ResponseActionBase(ActionKind):
    """Base class for response actions: called with the ``DNSResponse``."""

    NONE = RESPONSE_NONE
    ALLOW = (ResponseAction.Allow, "")
    DROP = (ResponseAction.Drop, "")
    HEADER_MODIFY = (ResponseAction.HeaderModify, "")
    DELAY = ResponseAction.Delay

    def __call__(self, dr: DNSResponse) -> Verdict:
        raise NotImplementedError


# --- what twins share -----------------------------------------------------------------------


class Allow(ActionKind):
    def __call__(self, obj: DNSQuestion) -> Verdict:
        return self.ALLOW

    def describe(self) -> str:
        return "allow"


class Drop(ActionKind):
    def __call__(self, obj: DNSQuestion) -> Verdict:
        return self.DROP

    def describe(self) -> str:
        return "drop"


class Delay(ActionKind):
    def __init__(self, msec: int) -> None:
        self.msec = int(msec)

    def __call__(self, obj: DNSQuestion) -> Verdict:
        return (self.DELAY, str(self.msec))

    def describe(self) -> str:
        return f"delay by {self.msec} ms"


class SetTag(ActionKind):
    def __init__(self, name: str, value: str = "") -> None:
        self.name = str(name)
        self.value = str(value)

    def __call__(self, obj: DNSQuestion) -> Verdict:
        obj.tags[self.name] = self.value
        return self.NONE

    def describe(self) -> str:
        return f"set tag '{self.name}' to value '{self.value}'"


class SetSkipCache(ActionKind):
    def __call__(self, obj: DNSQuestion) -> Verdict:
        obj.skipCache = True
        return self.NONE

    def describe(self) -> str:
        return "skip cache"


class Truncate(ActionKind):
    """Truncate over UDP (the client retries over TCP); nothing over TCP, where
    truncation means nothing."""

    def truncate(self, obj: DNSQuestion) -> None:
        raise NotImplementedError

    def __call__(self, obj: DNSQuestion) -> Verdict:
        if obj.tcp:
            return self.NONE
        self.truncate(obj)
        return self.HEADER_MODIFY

    def describe(self) -> str:
        return "tc=1 answer"


class LuaCall(ActionKind):
    """A Lua function called with the object's ``LuaView`` (``luaview.py`` says why), its
    result read as a verdict. The call is written out here rather than left to
    ``call_with_view``: this runs for every object the rule sees. ``binder`` comes from
    the Lua runtime (``runtime.py``)."""

    takes_binder = True
    #: The class whose objects get the bound call.
    _viewed: type

    def __init__(self, func: Callable[[Any], Any], binder: Binder | None = None) -> None:
        if not callable(func):  # else the first query would find out
            raise TypeError(f"{type(self).__name__}: expected a function, got {lua_describe(func)}")
        self.func = func
        self._calls = bind_calls(func, binder, (self._viewed,))
        #: The verdict when the function returns none (a plain int: see lua_verdict).
        self._default = int(self.NONE[0])

    def __call__(self, obj: Any) -> Verdict:
        entry = self._calls.get(type(obj))
        if entry is None:  # another class of object, or a view handed back by Lua
            return lua_verdict(call_with_view(self.func, obj), self._default)
        view, call = entry
        previous = view.target
        view.target = obj
        try:
            result = call()
        finally:
            view.target = previous
        # lua_verdict's usual cases, without its call: ``DNSAction.X, "extra"`` arrives
        # from lupa as an (int, str) tuple, a verdict already, ``DNSAction.X`` as an int.
        if type(result) is tuple:
            if len(result) == 2 and type(result[0]) is int and type(result[1]) is str:
                return result
        elif type(result) is int:
            return (result, "")
        return lua_verdict(result, self._default)


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


def whole(value: Any, function: str) -> int:
    """A number argument, or the error that names the function and the value as Lua does
    (``int(None)`` would say "int() argument must be ..., not 'NoneType'")."""
    # Not a boolean (int(True) is 1), and finite (int() of inf or nan raises otherwise).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{function}: expected a number, got {lua_describe(value)}")
    if not -(2**63) < value < 2**63:
        raise TypeError(f"{function}: expected a number, got {lua_describe(value)}")
    return int(value)


def type_text(qtype: int) -> str:
    """A DNS type's name, as dnsdist's log lines and descriptions show it."""
    return str(dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype)))
