"""What the network endpoints and listeners share: unix socket paths from the
configuration, as they are checked and shown, and where their counters go.

A path that starts with a NUL byte (``"\\0name"`` in Lua) is in Linux's abstract
namespace: no file is created, and it vanishes with the socket. ``{worker}`` in a path is
replaced by the worker index (``serve --workers``), so that each worker gets its own
socket from one configuration. A configuration may move every path it names
(``ServerConfig.unix_paths``: the pytest plugin puts them in the test's own directory).

Imports nothing above triodist.asyncproc (util below it).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from triodist.util.luavalues import describe

#: How many datagrams one wake-up may read or send before giving other tasks a turn.
BATCH = 64
#: ``sun_path`` is 108 bytes; a filesystem path also needs its terminating NUL.
MAX_PATH = 107
MAX_ABSTRACT = 108

#: Moves a path as the configuration wrote it (``{worker}`` replaced) to where it is used.
PathMap = Callable[[bytes], bytes]


class HasStats(Protocol):
    """What owns a listener: the server's configuration, whose ``stats`` are the running
    server's counters (None until it runs)."""

    stats: Counter[str] | None


#: What ``{worker}`` in a path becomes: this process's worker index (``serve --workers``),
#: set by the command line before the configuration runs; 0 in a single process.
worker_index = 0


def set_worker_index(index: int) -> None:
    global worker_index
    worker_index = index


def unix_path(value: Any, function: str, remap: PathMap | None = None) -> bytes:
    """A unix socket path from Lua (a latin-1 str carrying its bytes) or Python, as bytes.

    ``{worker}`` in the path is replaced by the worker index, so that each worker of
    ``serve --workers N`` gets its own socket from one configuration; then ``remap``, when
    given, moves it (checked after the move: the path used is the one that must fit).

    Raises ``ValueError`` (with ``function``'s name) when it cannot name a socket.
    """
    if isinstance(value, str):
        try:
            path = value.encode("latin-1")  # a Lua string: one character per byte
        except UnicodeEncodeError:
            path = os.fsencode(value)  # text given from Python
    elif isinstance(value, bytes | bytearray):
        path = bytes(value)
    elif isinstance(value, os.PathLike):
        path = os.fsencode(value)
    else:
        raise ValueError(f"{function}: expected a path, got {describe(value)}")
    path = path.replace(b"{worker}", str(worker_index).encode())
    if not path or path == b"\0":
        raise ValueError(f"{function}: the path is empty")
    if remap is not None:
        path = remap(path)
    if path.startswith(b"\0"):
        if len(path) > MAX_ABSTRACT:
            raise ValueError(
                f"{function}: the abstract name {show_path(path)} is too long "
                f"({len(path)} bytes, at most {MAX_ABSTRACT} with the leading NUL)"
            )
    else:
        if b"\0" in path:
            raise ValueError(f"{function}: the path {show_path(path)} contains a NUL byte")
        if len(path) > MAX_PATH:
            raise ValueError(
                f"{function}: the path {show_path(path)} is too long "
                f"({len(path)} bytes, at most {MAX_PATH})"
            )
    return path


def show_path(path: bytes) -> str:
    """A path as shown in messages: quoted, an abstract name with ``@`` for its NUL."""
    if path.startswith(b"\0"):
        path = b"@" + path[1:]
    return "'" + path.decode("utf-8", errors="backslashreplace").replace("\0", "\\0") + "'"


def count(owner: HasStats | None, own: Counter[str], name: str, n: int = 1) -> None:
    """Count ``name`` in the running server's counters (``owner``'s: kept over reloads),
    or in ``own`` when there is no server to count in."""
    stats = owner.stats if owner is not None else None
    (own if stats is None else stats)[name] += n
