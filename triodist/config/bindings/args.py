"""The arguments Lua passes, checked and turned into Python values, and ``ConfigError``.

Every binding checks its arguments with these, so that a wrong one is a ``ConfigError``
naming the function and saying, in Lua's words, what it got.

Imports nothing above triodist.util.
"""

from __future__ import annotations

from typing import Any

from triodist.util.luavalues import describe


class ConfigError(Exception):
    """A configuration asked for something invalid; the message says what."""


def text(value: Any) -> str:
    """A Lua string (bytes carried as latin-1) shown as the UTF-8 text it was."""
    shown = str(value)
    try:
        return shown.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return shown


def as_list(value: Any) -> list[Any]:
    """A Lua table (a list or a dict once converted), or one value, as a list."""
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def option_table(value: Any, function: str) -> dict[str, Any]:
    """A table of options given to ``function`` (nil or an empty table: none)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and not value:
        return {}
    raise ConfigError(f"{function}: expected a table of options, got {describe(value)}")


def boolean(value: Any, function: str) -> bool:
    """A true/false argument; anything else is an error, as in dnsdist."""
    if not isinstance(value, bool):
        raise ConfigError(f"{function}: expected true or false, got {describe(value)}")
    return value


def whole(value: Any, function: str, minimum: int) -> int:
    """A count given to ``function``: a whole number, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{function}: expected a whole number, got {describe(value)}")
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise ConfigError(f"{function}: expected a whole number, got {describe(value)}")
    if value < minimum:
        raise ConfigError(f"{function}: expected a number >= {minimum}, got {describe(value)}")
    return int(value)


def non_negative(value: Any, function: str) -> float:
    """A number given to ``function``, at least 0."""
    try:
        if isinstance(value, bool):  # float(True) is 1.0; Lua's true is no number
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{function}: expected a number, got {describe(value)}") from None
    if number < 0:
        raise ConfigError(f"{function}: expected a number >= 0, got {describe(value)}")
    return number
