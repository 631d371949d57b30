"""Values and Python's complaints about them, in the words a configuration's author knows:
Lua's (``nil``, ``true``, ``a table``), never Python's (``None``, ``NoneType``, ``int()``).

Imports nothing of triodist, so that every module that builds a message can use it.
"""

from __future__ import annotations

import re
from typing import Any

# Python's names of the types that Lua values arrive as, by Lua's names for them.
_LUA_TYPES = {
    "NoneType": "nil",
    "bool": "boolean",
    "int": "number",
    "float": "number",
    "str": "string",
    "bytes": "string",
    "list": "table",
    "tuple": "table",
    "dict": "table",
    "_LuaTable": "table",
    "_LuaFunction": "function",
    "_LuaThread": "coroutine",
    "_LuaCoroutineFunction": "function",
}


def describe(value: Any) -> str:
    """A value in an error message as Lua names it: ``nil``, ``true``, a number, a quoted
    string, ``a table``, ``a function``; a triodist object by its class."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, list | dict):  # a Lua table, as the wrappers hand it over
        return "a table"
    kind = type(value).__name__
    if kind.startswith("_Lua"):  # lupa's _LuaFunction, _LuaTable, _LuaThread...
        return "a " + kind[4:].lower().replace("thread", "coroutine")
    return kind


def _type_name(python: str) -> str:
    return _LUA_TYPES.get(python, python)


def _named(match: re.Match[str], text: str) -> str:
    # A constructor's complaint names Python's __init__: the caller names the Lua function.
    name = match["fn"]
    return f"{name}: {text}" if name and not name.startswith("__") else text


# Python's messages for a value of the wrong kind, each with Lua's words for it.  Only
# whole, known shapes are rewritten: a message from triodist itself is left as it is.
_REWRITES: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(r"^(?:int|float|complex)\(\) argument must be .*, not '(\w+)'$"),
        lambda m: f"expected a number, got {_type_name(m[1])}",
    ),
    (
        re.compile(r"^invalid literal for int\(\) with base \d+: (.*)$"),
        lambda m: f"expected a number, got {m[1]}",
    ),
    (
        re.compile(r"^could not convert string to float: (.*)$"),
        lambda m: f"expected a number, got {m[1]}",
    ),
    (
        re.compile(r"^'(\w+)' object is not (?:iterable|subscriptable)$"),
        lambda m: f"expected a table, got {_type_name(m[1])}",
    ),
    (
        re.compile(r"^first argument must be string or compiled pattern$"),
        lambda m: "expected a string",
    ),
    (
        re.compile(
            r"^(?:(?:\w+\.)*(?P<fn>\w+)\(\) )?takes (?:from \d+ to |at most |exactly )?"
            r"(?P<most>\d+) positional arguments? but (?P<given>\d+) (?:was|were) given$"
        ),
        # Python counts the object of a method call (``server:setAuto(...)``), as Lua does.
        lambda m: _named(m, f"takes at most {m['most']} argument(s), got {m['given']}"),
    ),
    (
        re.compile(
            r"^(?:(?:\w+\.)*(?P<fn>\w+)\(\) )?missing \d+ required positional "
            r"arguments?: (?P<names>.*)$"
        ),
        # Python's names for the parameters are not the ones the user reads: the count.
        lambda m: _named(m, f"missing {m['names'].count(chr(39)) // 2} argument(s)"),
    ),
]

# A quoted text other than 'NoneType' is the user's own (a pattern, a name): kept as it is.
_WORDS = re.compile(r"'NoneType'|'[^'\n]*'|\bNoneType\b|\bNone\b|\bTrue\b|\bFalse\b")
_WORD_FOR = {
    "'NoneType'": "nil",
    "NoneType": "nil",
    "None": "nil",
    "True": "true",
    "False": "false",
}


_NO_ARGUMENTS = re.compile(r"^(?:(?:\w+\.)*(?P<fn>\w+)\(\) )?takes no arguments$")


def lua_words(message: str, given: int | None = None) -> str:
    """``message``, a Python ``TypeError``'s or ``ValueError``'s, in Lua's words: a known
    shape rewritten whole ("int() argument must be ..., not 'NoneType'" is "expected a
    number, got nil"), and Python's names of nil, true and false as Lua's anywhere.
    ``given``: how many arguments Lua passed, for "takes no arguments", which Python
    says without the count."""
    match = _NO_ARGUMENTS.match(message)
    if match:
        count = "" if given is None else f", got {given}"
        return _named(match, f"takes no arguments{count}")
    for pattern, rewrite in _REWRITES:
        match = pattern.match(message)
        if match:
            message = rewrite(match)
            break
    return _WORDS.sub(lambda m: _WORD_FOR.get(m[0], m[0]), message)
