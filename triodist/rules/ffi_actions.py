"""Rules whose Lua function uses dnsdist's C interface (``LuaFFIAction``, ``LuaFFIRule``,
``LuaFFIResponseAction`` and their per-thread twins).

The function is given the object's view (``luaview.py``), as a ``LuaAction``'s is, but
through a runner that the configuration's FFI layer supplies (``config/ffi.py``): the
runner makes the view the one ``dnsdist_ffi_*`` functions accept for the time of the
call, keeps the buffers they hand out alive until it ends, and returns what the
function decided.  A function that fails raises, and the rule fails as any rule does.

Imports nothing above triodist.rules (the wire format below it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from triodist.rules.actionbase import QueryAction, ResponseActionBase
from triodist.rules.luaview import call_with_view
from triodist.rules.selectors import Selector
from triodist.rules.verdicts import Verdict
from triodist.util.luavalues import describe as lua_describe
from triodist.wire.message import DNSQuestion, DNSResponse

#: ``run(func, view)``: a LuaFFI action's function called; its verdict (a number) and
#: what it gave ``dnsdist_ffi_dnsquestion_set_result``.
ActionRunner = Callable[[Any, Any], tuple[int, str]]
#: ``run(func, view)``: a LuaFFI rule's function called; whether it matches.
RuleRunner = Callable[[Any, Any], bool]

FFI_SCRIPT = "Lua FFI script"
PER_THREAD_SCRIPT = "Lua FFI per-thread script"


def _check(func: Any, what: str) -> None:
    if not callable(func):  # else the first query would find out
        raise TypeError(f"{what}: expected a function, got {lua_describe(func)}")


class LuaFFIAction(QueryAction):
    """dnsdist's ``LuaFFIAction(function)``: the function's number is the verdict
    (``DNSAction``), and the text it set with ``dnsdist_ffi_dnsquestion_set_result`` the
    verdict's extra (the addresses of a ``Spoof``, the pool of a ``Pool``)."""

    def __init__(self, func: Any, run: ActionRunner, description: str = FFI_SCRIPT) -> None:
        _check(func, "LuaFFIAction")
        self._call = partial(run, func)
        self._description = description

    def __call__(self, dq: DNSQuestion) -> Verdict:
        action, extra = call_with_view(self._call, dq)
        return (int(action), str(extra))

    def describe(self) -> str:
        return self._description


class LuaFFIResponseAction(ResponseActionBase):
    """dnsdist's ``LuaFFIResponseAction(function)``: as ``LuaFFIAction``, with the
    response; the number is a ``DNSResponseAction``."""

    def __init__(self, func: Any, run: ActionRunner, description: str = FFI_SCRIPT) -> None:
        _check(func, "LuaFFIResponseAction")
        self._call = partial(run, func)
        self._description = description

    def __call__(self, dr: DNSResponse) -> Verdict:
        action, extra = call_with_view(self._call, dr)
        return (int(action), str(extra))

    def describe(self) -> str:
        return self._description


class LuaFFIRule(Selector):
    """dnsdist's ``LuaFFIRule(function)``: matches when the function returns true."""

    def __init__(self, func: Any, run: RuleRunner, description: str = FFI_SCRIPT) -> None:
        _check(func, "LuaFFIRule")
        self._call = partial(run, func)
        self._description = description

    def matches(self, dq: DNSQuestion) -> bool:
        return bool(call_with_view(self._call, dq))

    def describe(self) -> str:
        return self._description
