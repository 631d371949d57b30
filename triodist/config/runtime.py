"""The Lua runtime: the one module that imports lupa.

It picks the engine (LuaJIT 2.1 when lupa has it, else Lua 5.4), loads the
prelude from ``lua/`` (dnsdist's constant tables), exposes ``ConfigAPI``'s
functions as Lua globals and runs a configuration file.  Every error that
escapes the configuration is turned into a ``ConfigError`` whose first line
names the file and line where it happened; the Lua traceback is logged at
debug level.

Strings cross the boundary as latin-1, which maps every byte to one character
and back: DNS payloads (``getContent``/``setContent``) survive unchanged, and
text is turned back into UTF-8 where it is shown (log messages).

Imports nothing above triodist.config.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import io
import json
import logging
import os
import traceback
from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path
from types import ModuleType
from typing import Any

from triodist.backends.server import Server
from triodist.config.api import ConfigAPI
from triodist.config.bindings.args import ConfigError
from triodist.config.ffi import install as install_ffi
from triodist.config.luagc import LuaCollector
from triodist.util.luavalues import lua_words

log = logging.getLogger("triodist.config")

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
PRELUDE_NAME = "@triodist-prelude"

# Runs a chunk and, on error, finds the innermost frame that belongs to a
# configuration file (not the prelude, not Python) to report file and line.
_RUNNER = f"""
return function(chunk, errmsg)
  local function where(err)
    local level = 2
    while true do
      local info = debug.getinfo(level, "Sl")
      if not info then break end
      if info.what ~= "C" and info.source:sub(1, 1) == "@"
         and info.source ~= "{PRELUDE_NAME}" then
        return {{message = errmsg(err), source = info.source:sub(2),
                line = info.currentline, traceback = debug.traceback()}}
      end
      level = level + 1
    end
    return {{message = errmsg(err), source = "", line = 0, traceback = debug.traceback()}}
  end
  local ok, result = xpcall(chunk, where)
  if ok then return nil end
  return result
end
"""

# The configuration file and line of the call running now (the innermost frame of a
# configuration file): what an error logged-and-skipped names.
_WHERE = f"""
return function()
  local level = 2
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return "" end
    if info.what ~= "C" and info.source:sub(1, 1) == "@"
       and info.source ~= "{PRELUDE_NAME}" then
      return info.source:sub(2) .. ":" .. info.currentline
    end
    level = level + 1
  end
end
"""

# Lets `pairs`/`ipairs` walk the dicts and lists that Python methods return
# (dq:getTagArray(), getServers() from a method, ...), as they walk tables.
_PAIRS = """
local python_items, python_ipairs, python_next, python_len = ...
local raw_pairs, raw_ipairs, raw_next = pairs, ipairs, next
-- python.iterex is called here, in Lua: the iterator it makes unpacks each (key, value)
-- into two values only when Lua itself asked for it.
local iterex = python.iterex
function pairs(t)
  if type(t) == "userdata" then return iterex(python_items(t)) end
  return raw_pairs(t)
end
function ipairs(t)
  if type(t) == "userdata" then return iterex(python_ipairs(t)) end
  return raw_ipairs(t)
end
function next(t, k)
  if type(t) == "userdata" then return python_next(t, k) end
  return raw_next(t, k)
end
-- #x of a Python object (dq:getEDNSOptions()[code]:getValues()) is its length, as of the
-- table dnsdist would have given: one metatable serves every Python object.
getmetatable(python.none).__len = function(o) return python_len(o) end
"""


# Binds a rule's Lua function to the view it is given (see rules/luaview.py): the call
# from Python then has no argument to convert.  Not for what is not a Lua function.
_BINDER = """
return function(f, view)
  if type(f) ~= "function" then return nil end
  return function() return f(view) end
end
"""


# One console line, as dnsdist's console runs it: as an expression first
# ("return " .. line), as a statement if that does not compile, each named by its own
# text as dnsdist names them ('[string "return x()"]:1: ...' in messages).  While it
# runs, Lua's print writes through Python (``write``) into the console's answer: the C
# stdout it writes to otherwise is the server's, not the console user's.
_CONSOLE = """
local write, errmsg = ...
local function console_print(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  write(table.concat(parts, "\\t") .. "\\n")
end
return function(line)
  local source = "return " .. line
  local chunk = load(source, source)
  if not chunk then
    local message
    source = line
    chunk, message = load(source, source)
    if not chunk then return "syntax", message end
  end
  -- A Python exception carries no location: give it the line's, as Lua's errors have.
  local function where(err)
    if type(err) == "string" then return err end
    local level = 2
    while true do
      local info = debug.getinfo(level, "Sl")
      if not info then break end
      if info.source == source then
        return info.short_src .. ":" .. info.currentline .. ": " .. errmsg(err)
      end
      level = level + 1
    end
    return errmsg(err)
  end
  local saved = print
  print = console_print
  local ok, value = xpcall(chunk, where)
  if print == console_print then print = saved end
  if not ok then return "error", value end
  if type(value) == "number" then value = tostring(value) end
  return "ok", value
end
"""


class ConsoleOutcome(enum.Enum):
    """How a console line ended (the first value the ``_CONSOLE`` runner returns)."""

    OK = "ok"
    #: It did not compile, as an expression or as a statement.
    SYNTAX = "syntax"
    #: It raised a Lua error (or a Python exception) while it ran.
    ERROR = "error"


def _engine() -> ModuleType:
    for name in ("lupa.luajit21", "lupa.lua54"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeError("lupa has neither LuaJIT 2.1 nor Lua 5.4")


LUPA = _engine()
LuaError: type[Exception] = LUPA.LuaError


def engine_version() -> str:
    runtime = LUPA.LuaRuntime()
    version = runtime.eval("jit and jit.version or _VERSION")
    return str(version)


class LuaConfig:
    """A Lua state holding a configuration: its functions stay alive while serving."""

    def __init__(self, api: ConfigAPI | None = None) -> None:
        self.api = api or ConfigAPI()
        self.lua = LUPA.LuaRuntime(
            encoding="latin-1", unpack_returned_tuples=True, attribute_handlers=(_index, None)
        )
        self._run = self.lua.execute(_RUNNER)
        where = self.lua.execute(_WHERE)
        self.api.where = lambda: _text(str(where()))
        self.api.config.lua_collector = LuaCollector(self.lua)
        # The console runs its commands here, for as long as this configuration serves.
        self.api.config.lua_eval = self.console_eval
        self._load_prelude()
        # dnsdist's FFI functions behind require("ffi") (LuaJIT only).
        self.api.ffi = install_ffi(self.lua)
        # Lua server policies are given the pool's servers as a Lua array (#servers works).
        self.api.lua_array = self.lua.table_from
        self._register(self.api.functions())
        self.lua.globals().includeDirectory = self._wrap("includeDirectory", self.include_directory)
        #: Files being run (includeDirectory runs files within a file).
        self._files_running = 0

    # --- values across the boundary -----------------------------------------------------

    def from_lua(self, value: Any) -> Any:
        """Lua tables become lists (keys 1..n) or dicts; everything else is kept."""
        if LUPA.lua_type(value) != "table":
            return value
        items = [(k, self.from_lua(v)) for k, v in value.items()]
        keys = [k for k, _ in items]
        if keys and keys == list(range(1, len(keys) + 1)):
            return [v for _, v in items]
        return {str(k) if not isinstance(k, int) else k: v for k, v in items}

    def to_lua(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return self.lua.table_from([self.to_lua(v) for v in value])
        if isinstance(value, dict):
            return self.lua.table_from({k: self.to_lua(v) for k, v in value.items()})
        return value

    def _wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        from_lua, to_lua = self.from_lua, self.to_lua

        def call(*args: Any) -> Any:
            try:
                result = func(*[from_lua(a) for a in args])
            except (TypeError, ValueError) as exc:
                # Python's complaint about a bad argument ("int() argument must be ...,
                # not 'NoneType'"): the function it was given to named, in Lua's words.
                message = lua_words(str(exc) or type(exc).__name__, len(args))
                if not message.startswith(f"{name}:"):
                    message = f"{name}: {message}"
                raise ConfigError(message) from exc
            return to_lua(result)

        call.__name__ = name
        return call

    def _register(self, functions: dict[str, Any]) -> None:
        g = self.lua.globals()
        binder = self.lua.execute(_BINDER)
        for name, value in functions.items():
            if getattr(value, "takes_binder", False):
                value = partial(value, binder=binder)
            g[name] = (
                self._wrap(name, value) if callable(value) and not _is_object(value) else value
            )

    def _load_prelude(self) -> None:
        prelude = (LUA_DIR / "prelude.lua").read_text()
        chunk = self.lua.eval("load")(prelude, PRELUDE_NAME)
        chunk()

        def items(obj: Any) -> Any:
            return iter(obj.items() if isinstance(obj, dict) else enumerate(obj, 1))

        def list_items(obj: Any) -> Any:
            return iter(enumerate(obj, 1))

        self.lua.eval("load")(_PAIRS, "=pairs")(items, list_items, _python_next, len)

    # --- running files ----------------------------------------------------------------

    def run_file(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        try:
            code = path.read_text(encoding="latin-1")
        except OSError as exc:
            raise ConfigError(
                f"Unable to read configuration file '{path}': {exc.strerror}"
            ) from exc
        self._files_running += 1
        self.api.files_running.append(path)
        if self.api.first_file is None:
            self.api.first_file = path
        try:
            self.run_string(code, str(path))
        finally:
            self._files_running -= 1
            self.api.files_running.pop()
        if not self._files_running:
            # What only the whole configuration tells (a setting that needs another).
            self.api.configuration_ran()

    def run_string(self, code: str, source: str) -> None:
        loaded = self.lua.eval("load")(code, "@" + source)
        if isinstance(loaded, tuple):  # load() failed: (nil, "file:line: message")
            chunk, message = loaded[0], loaded[1] if len(loaded) > 1 else "syntax error"
        else:
            chunk, message = loaded, None
        if chunk is None:
            raise ConfigError(_full_path(_text(str(message)), source))
        failure = self._run(chunk, _error_message)
        if failure is not None:
            self._raise(failure)

    def _raise(self, failure: Any) -> None:
        source, line = str(failure["source"]), int(failure["line"] or 0)
        full = _full_path(_text(str(failure["message"])), source).strip() or "error"
        # The first line is for the user; the rest, and the traceback, for the debug log.
        message = full.splitlines()[0]
        log.debug("Error: %s\nLua traceback:\n%s", full, failure["traceback"])
        prefix = f"{source}:{line}:"
        # Lua's own errors already start with "file:line:"; Python ones do not.
        if source and not message.startswith(prefix) and not _has_location(message):
            message = f"{prefix} {message}"
        raise ConfigError(message)

    def include_directory(self, directory: Any) -> None:
        path = Path(str(directory))
        # As dnsdist: an error logged, the rest of the configuration still runs (a
        # container whose conf.d was not mounted still starts).
        if not path.exists():
            self.api.config_error(f"includeDirectory: the directory '{path}' does not exist")
            return
        if not path.is_dir():
            self.api.config_error(f"includeDirectory: '{path}' is not a directory")
            return
        for file in sorted(p for p in path.iterdir() if p.suffix == ".conf" and p.is_file()):
            log.info("Read configuration from '%s'", file)
            self.run_file(file)

    # --- the console --------------------------------------------------------------------

    def console_eval(self, line: str) -> str:
        """Run one console line in this Lua state; the answer dnsdist's console gives.

        The answer is what the line printed (Lua's ``print``, the ``show*`` functions)
        followed by the value it returned: a string or number on a line of its own, a
        server by its name, a table of numbers as JSON, any other object by its text
        where it has one.  A Lua error is answered as dnsdist words it
        (``Error: [string "return x()"]:1: ...``, without the traceback); nothing is
        raised.
        """
        out = io.StringIO()
        saved, self.api.out = self.api.out, out
        try:
            with contextlib.redirect_stdout(out):
                outcome, value = self._console_runner(_console_to_lua(line))
            status = ConsoleOutcome(outcome)
        except LuaError as exc:  # from the runner itself (out of memory, say)
            status, value = ConsoleOutcome.ERROR, str(exc)
        finally:
            self.api.out = saved
        printed = out.getvalue()
        if status is ConsoleOutcome.SYNTAX:
            # dnsdist 1.7.3 ends this message with ": " (an empty detail after it); the
            # message is complete without it.
            return f"{printed}Error: {_console_text(str(value))}"
        if status is ConsoleOutcome.ERROR:
            return f"{printed}Error: {_console_text(_error_message(value))}"
        return printed + _console_value(value)

    @cached_property
    def _console_runner(self) -> Any:
        def write(text: Any) -> None:
            self.api.out.write(_console_text(str(text)))

        return self.lua.execute(_CONSOLE, write, _error_message)

    def call_hook(self, name: str) -> Callable[[], Any] | None:
        """A function the configuration defined itself (e.g. ``maintenance``), if any."""
        value = self.lua.globals()[name]
        return value if LUPA.lua_type(value) == "function" else None


def _python_next(obj: Any, key: Any = None) -> Any:
    """Lua's ``next`` over a Python object, as ``pairs`` walks it (a dict's items, else the
    values numbered from 1): the pair after ``key``, the first for nil, nil after the last.
    The containers Lua meets this way are small (a message's EDNS options, a query's
    tags), so the walk to ``key`` costs little."""
    pairs = obj.items() if isinstance(obj, dict) else enumerate(obj, 1)
    found = key is None
    for k, v in pairs:
        if found:
            return k, v
        found = k == key
    return None


def _is_object(value: Any) -> bool:
    # Policy objects are values in Lua (setServerPolicy(roundrobin)), not functions;
    # so are the placeholders for the policies triodist lacks (chashed).
    return not callable(value) or type(value).__name__ in ("ServerPolicy", "Anything")


#: Whether Lua indexes a type's objects by item (lupa's rule: it has ``__getitem__``).
#: The types Lua meets are triodist's and Python's own: a handful.
_HAS_ITEMS: dict[type, bool] = {}


def _index(obj: Any, key: Any) -> Any:
    """``obj.key`` or ``obj[key]`` in Lua, on a Python object: what lupa does itself (an
    item of what has items, else an attribute), except that a field the object lacks
    reads as nil, as a dnsdist object's does (``getServer(0).nosuch == nil``); calling it
    is then Lua's own "attempt to call method 'nosuch' (a nil value)"."""
    kind = type(obj)
    items = _HAS_ITEMS.get(kind)
    if items is None:
        # lupa asks the object; its type is asked here, once: a view (rules/luaview.py)
        # would forward the question to its query on every read.
        items = _HAS_ITEMS[kind] = hasattr(kind, "__getitem__")
    if items:
        return obj[key]
    try:
        return getattr(obj, key)
    except AttributeError:
        # Raised by a property or a method's descriptor the type has: a fault there, not
        # a missing field (Python names ``key`` in the error either way).
        if isinstance(key, str) and not any(key in vars(cls) for cls in kind.__mro__):
            return None
        raise


def _error_message(err: Any) -> str:
    if isinstance(err, TypeError | ValueError):
        # From a method called on an object (``server:setAuto(nil, 5)``): Lua's words,
        # after the method's name as a function's error has its function's.
        message = lua_words(str(err) or type(err).__name__)
        method = _method_called(err)
        if method and not message.startswith(f"{method}:"):
            message = f"{method}: {message}"
        return message
    if isinstance(err, BaseException):
        return str(err) or type(err).__name__
    return str(err)


def _method_called(err: BaseException) -> str | None:
    """The name of the Python method that Lua called and ``err`` came out of (``add`` for
    ``smn:add("a..b")``): the first frame after lupa's, if it is a public method's."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        if not frame.f_code.co_filename.startswith("lupa/"):
            name = frame.f_code.co_name
            return name if name.isidentifier() and not name.startswith("_") else None
    return None


def _console_to_lua(text: str) -> str:
    """Console text (UTF-8, undecodable bytes kept as surrogates) as a Lua string."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return data.decode("latin-1")


def _console_text(value: str) -> str:
    """A Lua string as console text: the inverse of ``_console_to_lua``."""
    try:
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # text from Python, not bytes from Lua
        return value


def _console_value(value: Any) -> str:
    """A value a console line returned, as dnsdist prints it ("" for none)."""
    if value is None:
        return ""
    if isinstance(value, str):  # numbers were turned into text in Lua, as dnsdist does
        return _console_text(value) + "\n"
    if isinstance(value, bool):
        # dnsdist 1.7.3 cannot print a boolean ("an object we can't print"); triodist says
        # which it is (``reloadConfig()`` answers with one).
        return "true\n" if value else "false\n"
    if isinstance(value, Server):
        return value.getName() + "\n"
    kind = LUPA.lua_type(value)
    if kind == "table":
        numbers = _json_numbers(value)
        if numbers is not None:
            return numbers + "\n"
    elif kind is None and _has_text(value):
        return str(value) + "\n"  # triodist's objects (a netmask group, a name, ...)
    if kind is None:
        kind = "userdata"
    return (
        f'Command returned an object we can\'t print: Trying to cast a lua variable from "{kind}"'
        " to a string, a server or a table of numbers\n"
    )


def _has_text(value: object) -> bool:
    """Whether an object's class says how to show it (its own ``__str__``)."""
    return any("__str__" in vars(cls) for cls in type(value).__mro__[:-1])


def _json_numbers(table: Any) -> str | None:
    """A Lua table of numbers as dnsdist prints it (JSON, keys sorted), else None."""
    items: dict[str, float] = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(key, str):
            items[_console_text(key)] = value
        elif isinstance(key, int | float) and not isinstance(key, bool):
            items[format(key, ".14g")] = value
        else:
            return None
    body = ", ".join(
        f"{json.dumps(key, ensure_ascii=False)}: {format(value, '.17g')}"
        for key, value in sorted(items.items())
    )
    return "{" + body + "}"


def _full_path(message: str, source: str) -> str:
    """Lua shortens long file names in its messages ("...conf.d/rules.lua:3: ..."): restore it."""
    head = message.split(" ", 1)[0]
    if source and head.startswith("...") and _has_location(message):
        shown = head[3:].rsplit(":", 2)[0]
        if shown and source.endswith(shown):
            return source + message[3 + len(shown) :]
    return message


def _has_location(message: str) -> bool:
    head = message.split(" ", 1)[0]
    return head.endswith(":") and head.count(":") >= 2 and head.split(":")[-2].isdigit()


def _text(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def load_config(path: str | os.PathLike[str], api: ConfigAPI | None = None) -> LuaConfig:
    """Run a configuration file; raise ``ConfigError`` (with file and line) if it fails."""
    config = LuaConfig(api)
    config.run_file(path)
    return config
