"""What every binding shares: the configuration it records into, where it prints, the
warnings said once, and ``lua_function``, the mark that makes a method a Lua global.

Imports nothing above triodist.config (``ServerConfig`` is the server's, below it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from triodist.backends.server import Server
from triodist.query.settings import Chains
from triodist.server import ServerConfig

log = logging.getLogger("triodist.config")

Method = TypeVar("Method", bound=Callable[..., Any])

#: How many logged-and-skipped errors a configuration keeps for ``check-config --strict``.
MAX_ERRORS_KEPT = 1000

#: The attribute ``lua_function`` sets on a method.
_MARK = "lua_function"


def lua_function(method: Method) -> Method:
    """Make ``method`` a Lua global of the same name (``Binding.lua_functions``)."""
    setattr(method, _MARK, True)
    return method


class Binding:
    """The state the configuration functions of every domain work on.

    ``ConfigAPI`` is made of one subclass per domain; each records what the
    configuration asks for in ``config`` and prints to ``out`` (the console's output
    while a console command runs).
    """

    #: Builds a Lua array from a list; set by the Lua runtime, so that Lua policies get
    #: Lua arrays (``#servers``).  Without it (Python use) they get the list itself.
    lua_array: Callable[[list[Server]], Any] | None = None

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.warned: set[str] = set()
        #: What the configuration asked for that triodist ignores (not supported yet), in
        #: the order met: check-config ends with it.
        self.ignored: list[str] = []
        self.local_set = False
        self.out: TextIO = sys.stdout
        #: Loading again for a reload: the reload says which servers it adds and removes.
        self.reloading = False
        #: The configuration files running, innermost last (``includeDirectory`` runs
        #: files within a file), and the first one run: a ``PythonAction`` looks for its
        #: module beside the file that names it (``bindings/python.py``).
        self.files_running: list[Path] = []
        self.first_file: Path | None = None
        #: The errors logged where dnsdist logs and goes on ("file:line: message"), in
        #: the order met: what failed was skipped; ``check-config --strict`` fails on them.
        self.errors: list[str] = []
        #: Errors logged past ``MAX_ERRORS_KEPT`` (a loop in the file), counted only.
        self.errors_not_kept = 0
        #: Where in the configuration the call running now is ("file:line"); set by the
        #: Lua runtime, "" without it (Python use).
        self.where: Callable[[], str] = lambda: ""

    #: Errors dnsdist logs too are said in dnsdist's words, without file and line: set
    #: for dnsdist's command line, whose check-config output a harness may compare.
    dnsdist_words = False

    def config_error(self, message: str, *, dnsdist: str | None = None) -> None:
        """Log an error the configuration goes on after (dnsdist's way), with the file
        and line of the call, and record it for ``check-config --strict``. ``dnsdist``:
        the line dnsdist logs for it, shown instead under ``dnsdist_words``."""
        location = self.where()
        line = f"{location}: {message}" if location else message
        log.error("%s", dnsdist if dnsdist is not None and self.dnsdist_words else line)
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(line)
        else:
            self.errors_not_kept += 1

    def warn_once(self, key: str, message: str, *, ignored: str | None = None) -> None:
        """Log ``message`` the first time ``key`` is met; ``ignored``: what it says is
        ignored, for the summary that check-config ends with."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning("%s", message)
            if ignored is not None:
                self.ignored.append(ignored)

    @property
    def chains(self) -> Chains:
        return self.config.chains

    def lua_functions(self) -> dict[str, Callable[..., Any]]:
        """Every method marked ``@lua_function`` in this object's classes, bound, by name."""
        found: dict[str, Callable[..., Any]] = {}
        for cls in reversed(type(self).__mro__):
            for name, member in vars(cls).items():
                if getattr(member, _MARK, False):
                    found[name] = getattr(self, name)
        return found


def columns(cells: list[tuple[int, str]]) -> str:
    """One line of a dnsdist console table: cells separated by a space, a cell with a
    tab stop starting no earlier than that column (as boost::format's ``%|Nt|``)."""
    line = cells[0][1]
    for stop, cell in cells[1:]:
        line += " "
        if len(line) < stop:
            line += " " * (stop - len(line))
        line += cell
    return line
