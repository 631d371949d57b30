"""The dnsdist configuration functions, as plain Python: ``ConfigAPI``.

``ConfigAPI`` records what a ``rules.lua`` asks for in a ``ServerConfig``:
listeners, ACL, servers, pools, policies, rules.  It binds no socket and
contacts no backend, so running a configuration is safe for ``check-config``
(the one socket it opens is ``newNetworkEndpoint``'s client socket, connected
to a peer that may or may not be there).

It is made of one binding per domain (``bindings/``); ``functions()`` derives the
Lua globals from them: a placeholder for each dnsdist name triodist lacks, the
constructors of selectors, actions and objects, the built-in policies, every method
marked ``@lua_function``, and the functions of each rule chain.  The Lua runtime
(``runtime.py``) exposes them as Lua globals, after turning Lua tables into dicts
and lists; these functions are ordinary Python and are tested from Python.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from triodist.config.bindings.args import text
from triodist.config.bindings.asyncproc import AsyncBindings
from triodist.config.bindings.base import lua_function
from triodist.config.bindings.cache import CacheBindings
from triodist.config.bindings.console import ConsoleBindings
from triodist.config.bindings.ecs import ECS_CONSTRUCTORS, ECSBindings
from triodist.config.bindings.edns import EDNS_CONSTRUCTORS, EDNSBindings
from triodist.config.bindings.ffi import FFIBindings
from triodist.config.bindings.inspection import InspectionBindings
from triodist.config.bindings.listeners import ListenerBindings
from triodist.config.bindings.logs import LogBindings
from triodist.config.bindings.notyet import NotYetBindings, is_placeholder_function
from triodist.config.bindings.pools import PoolBindings
from triodist.config.bindings.python import PythonBindings
from triodist.config.bindings.rules import CONSTRUCTORS, RuleBindings
from triodist.config.bindings.rulesets import RuleSetBindings
from triodist.config.bindings.servers import ServerBindings
from triodist.config.bindings.statistics import StatisticsBindings
from triodist.config.bindings.tunables import TunableBindings
from triodist.config.dnsdist_names import DNSDIST_GLOBALS
from triodist.config.signatures import SIGNATURES


class ConfigAPI(
    ListenerBindings,
    ServerBindings,
    PoolBindings,
    TunableBindings,
    EDNSBindings,
    InspectionBindings,
    RuleSetBindings,
    RuleBindings,
    CacheBindings,
    ECSBindings,
    AsyncBindings,
    PythonBindings,
    LogBindings,
    ConsoleBindings,
    FFIBindings,
    StatisticsBindings,
    NotYetBindings,
):
    """Turns dnsdist configuration calls into a ``ServerConfig``."""

    def functions(self) -> dict[str, Any]:
        """Every global a configuration can call, by dnsdist's name."""
        fns: dict[str, Any] = {}
        fns.update(self.not_yet_functions())
        fns.update(CONSTRUCTORS)
        fns.update(EDNS_CONSTRUCTORS)
        fns.update(ECS_CONSTRUCTORS)
        # The policies are values in Lua (setServerPolicy(chashed)), this configuration's own.
        fns.update(self.policies)
        fns.update(self.lua_functions())
        fns.update(self.rule_functions())
        return fns

    @lua_function
    def help(self, command: Any = None) -> None:
        """help(): every function, one a line; help("name"): that one (as dnsdist's)."""
        entries = _help_entries(self.functions())
        if command is None:
            for name in sorted(entries, key=str.lower):
                print(entries[name], file=self.out)
            print(
                "Functions of dnsdist that triodist accepts without supporting them yet are "
                "not listed; docs/reference/configuration.md has every function.",
                file=self.out,
            )
        elif text(command) in entries:
            print(entries[text(command)], file=self.out)
        elif text(command) in DNSDIST_GLOBALS:
            print(f"{text(command)}: not supported by triodist yet", file=self.out)
        else:
            print(f"Nothing found for {text(command)}", file=self.out)


def _help_entries(functions: Mapping[str, Any]) -> dict[str, str]:
    """``help()``'s lines: "name(parameters): what it does" for every function triodist
    has (its docstring's first sentence where it has one), the placeholders left out.
    The parameters are written as dnsdist's documentation writes them (``SIGNATURES``),
    not as Python declares them."""
    entries: dict[str, str] = {}
    for name, value in functions.items():
        if not callable(value) or is_placeholder_function(value):
            continue
        # A function missing from the table (a test checks there is none) still gets a
        # line; its parameters are not guessed from Python's names.
        signature = SIGNATURES.get(name, f"{name}(...)")
        doc = (inspect.getdoc(value) or "").split("\n\n", 1)[0].replace("\n", " ")
        doc = doc.replace("``", "")  # reStructuredText quoting, not for a console
        if isinstance(value, type) and value.__doc__ is None:
            doc = ""  # a class's docstring inherited from its base says nothing of it
        entries[name] = signature + (f": {doc}" if doc else "")
    return entries
