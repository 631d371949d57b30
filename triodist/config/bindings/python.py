"""Actions written in Python: ``PythonAction("package.module:function", timeoutMs)`` and
``PythonResponseAction(...)`` (triodist's own; ``rules/pyactions.py`` runs them).

The module is imported when the configuration runs the call: from the directory of the
file that makes the call first (the first configuration file's, at the console), then from
``sys.path``; afresh for each configuration loaded (a reload sees an edited module), once
per configuration however many actions name it. A target that cannot be used is a
configuration error naming the file and line of the call.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from triodist.config.bindings.args import ConfigError
from triodist.config.bindings.base import Binding, lua_function
from triodist.rules.pyactions import (
    PythonAction as QueryPythonAction,
)
from triodist.rules.pyactions import (
    PythonActionBase,
    import_function,
)
from triodist.rules.pyactions import (
    PythonResponseAction as ResponsePythonAction,
)
from triodist.server import ServerConfig

A = TypeVar("A", bound=PythonActionBase)


class PythonBindings(Binding):
    """The constructors of the Python actions, and the modules they imported."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        super().__init__(config)
        #: The modules this configuration imported, by name: each imported once.
        self.python_modules: dict[str, ModuleType] = {}

    @lua_function
    def PythonAction(self, target: Any, timeout_ms: Any = None) -> QueryPythonAction:
        """An action that awaits a Python function, async def f(dq), in the query's own
        task, for at most timeoutMs; its Verdict goes on as a resumed held query's."""
        return self._python_action(QueryPythonAction, "PythonAction", target, timeout_ms)

    @lua_function
    def PythonResponseAction(self, target: Any, timeout_ms: Any = None) -> ResponsePythonAction:
        """The response twin of PythonAction: async def f(dr)."""
        return self._python_action(ResponsePythonAction, "PythonResponseAction", target, timeout_ms)

    def _python_action(self, kind: type[A], function: str, target: Any, timeout_ms: Any) -> A:
        try:
            func = import_function(target, self._python_directories(), self.python_modules)
            return kind(str(target), func, timeout_ms)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            if not message.startswith(f"{function}:"):
                message = f"{function}: {message}"
            raise ConfigError(message) from exc

    def _python_directories(self) -> list[Path]:
        """Where a module is looked for before ``sys.path``: the directory of the file
        running (the first file's when none is, at the console)."""
        running = self.files_running[-1] if self.files_running else self.first_file
        return [] if running is None else [running.absolute().parent]
