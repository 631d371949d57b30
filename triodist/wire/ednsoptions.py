"""The EDNS options of a message as a Lua function reads them: ``dq:getEDNSOptions()``.

dnsdist hands Lua a table keyed by option code whose values are option objects (an
``EDNSOptionView``): ``count()`` says how many options of that code the OPT record holds,
``getValues()`` gives their values (the bytes after each option's code and length), in
the order they appear, as a list indexed from 1. A message without an OPT record gives
an empty table.

The bytes may be hostile: the options are read from the OPT record of the additional
section (the walker finds it, without a dnspython parse) until one runs past the
record's data, and those read before it are kept, as dnsdist keeps them. Nothing here
raises on bad bytes.

Imports nothing above triodist.wire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from triodist.wire.walk import find_opt, name_end

_OPTION_HEAD = struct.Struct("!HH")


class OptionValues:
    """The values of the options of one code, as Lua reads a list: from index 1, nil past
    the end, ``#values`` its length (with the Lua runtime's ``__len``)."""

    __slots__ = ("_values",)

    def __init__(self, values: list[bytes]) -> None:
        self._values = values

    def __getitem__(self, index: object) -> bytes | None:
        # A Lua number arrives as an int (or a float with an integral value).
        if isinstance(index, int | float) and not isinstance(index, bool):
            position = int(index)
            if position == index and 1 <= position <= len(self._values):
                return self._values[position - 1]
        return None

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._values)

    def __repr__(self) -> str:
        return f"OptionValues({self._values!r})"


class EDNSOptionView:
    """Every option of one code in a message's OPT record (dnsdist's ``EDNSOptionView``)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def count(self) -> int:
        """How many options of this code the OPT record holds."""
        return len(self.values)

    def getValues(self) -> OptionValues:
        """Their values, in the order they appear (Lua: indexed from 1)."""
        return OptionValues(list(self.values))

    def __repr__(self) -> str:
        return f"EDNSOptionView({self.values!r})"


class EDNSOptions(dict[int, EDNSOptionView]):
    """The options by code; a code the message does not carry reads as nil in Lua."""

    def __missing__(self, code: int) -> None:
        return None


def edns_options(data: bytes | bytearray, question_end: int) -> EDNSOptions:
    """The options of the OPT record of ``data`` (whose question ends at
    ``question_end``), by code; empty without an OPT record."""
    found = EDNSOptions()
    opt = find_opt(data, question_end)
    if opt is None:
        return found
    start, end = opt
    # After the owner (the root, unless the sender says otherwise): type, class, TTL and
    # data length. find_opt checked that the record lies within the data, so only the
    # options can be wrong.
    pos = name_end(data, start, end) + 10
    while pos + 4 <= end:
        code, length = _OPTION_HEAD.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            break
        view = found.get(code)
        if view is None:
            view = found[code] = EDNSOptionView()
        view.values.append(bytes(data[pos : pos + length]))
        pos += length
    return found
