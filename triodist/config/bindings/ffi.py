"""The functions of dnsdist that take LuaFFI functions: ``LuaFFIAction``, ``LuaFFIRule``,
``LuaFFIResponseAction``, their per-thread twins, and the FFI server policies
(``setServerPolicyLuaFFI``, ``setServerPolicyLuaFFIPerThread`` and the pools' ones).

dnsdist runs a per-thread function's code in a Lua state of each of its threads;
triodist has one thread, and runs the code once, in the configuration's Lua state, in
an environment of its own (its globals stay its own; it reads the configuration's).
A policy's code that does not compile, fails or returns no function stops the
configuration, as in dnsdist (which runs it once when the policy is set); a rule's or
action's is an error logged with the file and line (dnsdist finds out at the first
query), and the rule then fails every query.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any

from triodist.config.bindings.args import ConfigError, text
from triodist.config.bindings.base import Binding, lua_function
from triodist.config.ffi import FFIServerPolicy, LuaFFI
from triodist.rules import ffi_actions as F
from triodist.util.luavalues import describe


def _failing(message: str) -> Any:
    """What a per-thread code that failed to load stands for: a function that fails."""

    def fail(*args: Any) -> Any:
        raise RuntimeError(message)

    return fail


class FFIBindings(Binding):
    """LuaFFI rules and policies; ``ffi`` is set by the Lua runtime (None without LuaJIT)."""

    ffi: LuaFFI | None = None

    def _need_ffi(self, function: str) -> LuaFFI:
        if self.ffi is None:
            raise ConfigError(f"{function}: needs LuaJIT's FFI, and this Lua engine has none")
        return self.ffi

    def _per_thread(self, code: Any, function: str) -> Any:
        """The function a per-thread ``code`` returns, or one that fails as it did."""
        ffi = self._need_ffi(function)
        if not isinstance(code, str):
            raise ConfigError(f"{function}: expected the code as a string, got {describe(code)}")
        try:
            return ffi.load_code(code, f"={function}")
        except ValueError as exc:
            message = f"{function}: {exc}"
            self.config_error(message)
            return _failing(message)

    @lua_function
    def LuaFFIAction(self, func: Any) -> F.LuaFFIAction:
        """A query action whose Lua function uses dnsdist's FFI (``dnsdist_ffi_*``)."""
        return F.LuaFFIAction(func, self._need_ffi("LuaFFIAction").run_action)

    @lua_function
    def LuaFFIPerThreadAction(self, code: Any) -> F.LuaFFIAction:
        func = self._per_thread(code, "LuaFFIPerThreadAction")
        run = self._need_ffi("LuaFFIPerThreadAction").run_action
        return F.LuaFFIAction(func, run, F.PER_THREAD_SCRIPT)

    @lua_function
    def LuaFFIResponseAction(self, func: Any) -> F.LuaFFIResponseAction:
        """A response action whose Lua function uses dnsdist's FFI."""
        return F.LuaFFIResponseAction(func, self._need_ffi("LuaFFIResponseAction").run_action)

    @lua_function
    def LuaFFIPerThreadResponseAction(self, code: Any) -> F.LuaFFIResponseAction:
        func = self._per_thread(code, "LuaFFIPerThreadResponseAction")
        run = self._need_ffi("LuaFFIPerThreadResponseAction").run_action
        return F.LuaFFIResponseAction(func, run, F.PER_THREAD_SCRIPT)

    @lua_function
    def LuaFFIRule(self, func: Any) -> F.LuaFFIRule:
        """A selector whose Lua function uses dnsdist's FFI; it matches when it returns true."""
        return F.LuaFFIRule(func, self._need_ffi("LuaFFIRule").run_rule)

    @lua_function
    def LuaFFIPerThreadRule(self, code: Any) -> F.LuaFFIRule:
        func = self._per_thread(code, "LuaFFIPerThreadRule")
        run = self._need_ffi("LuaFFIPerThreadRule").run_rule
        return F.LuaFFIRule(func, run, F.PER_THREAD_SCRIPT)

    # --- server policies ---------------------------------------------------------------

    def _ffi_policy(self, name: Any, func: Any, function: str) -> FFIServerPolicy:
        ffi = self._need_ffi(function)
        if not callable(func):
            raise ConfigError(f"{function}: expected a function, got {describe(func)}")
        return FFIServerPolicy(text(name), func, ffi)

    def _ffi_per_thread_policy(self, name: Any, code: Any, function: str) -> FFIServerPolicy:
        ffi = self._need_ffi(function)
        if not isinstance(code, str):
            raise ConfigError(f"{function}: expected the code as a string, got {describe(code)}")
        try:
            # As dnsdist, which runs a policy's code once when it is set: a fatal error.
            func = ffi.load_code(code, f"={function}")
        except ValueError as exc:
            raise ConfigError(f"{function}: {exc}") from exc
        return FFIServerPolicy(text(name), func, ffi, per_thread=True)

    @lua_function
    def setServerPolicyLuaFFI(self, name: Any, func: Any) -> None:
        """A policy whose function(servers_list, dq) uses dnsdist's FFI and returns the
        0-based index of the server."""
        self.config.routing.policy = self._ffi_policy(name, func, "setServerPolicyLuaFFI")

    @lua_function
    def setPoolServerPolicyLuaFFI(self, name: Any, func: Any, pool: Any) -> None:
        policy = self._ffi_policy(name, func, "setPoolServerPolicyLuaFFI")
        self.config.routing.pool("" if pool is None else text(pool)).policy = policy

    @lua_function
    def setServerPolicyLuaFFIPerThread(self, name: Any, code: Any) -> None:
        """As setServerPolicyLuaFFI, the function being what ``code`` returns."""
        function = "setServerPolicyLuaFFIPerThread"
        self.config.routing.policy = self._ffi_per_thread_policy(name, code, function)

    @lua_function
    def setPoolServerPolicyLuaFFIPerThread(self, name: Any, code: Any, pool: Any) -> None:
        policy = self._ffi_per_thread_policy(name, code, "setPoolServerPolicyLuaFFIPerThread")
        self.config.routing.pool("" if pool is None else text(pool)).policy = policy
