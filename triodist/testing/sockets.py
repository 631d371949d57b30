"""Where a configuration under test puts its unix sockets: the test's own directory.

The pytest plugin sets a :class:`SocketPaths` as the configuration's
``ServerConfig.unix_paths`` before its Lua runs, so every path that
``newNetworkEndpoint(path)`` and ``addUnixListeningEndpoint(path, ...)`` name is moved
there, keeping its own shape (``/run/triodist/filter.sock`` becomes
``<tmp_path>/sockets1/run/triodist/filter.sock``). Two tests, or two runs at once, never
meet on a socket, and nothing is written outside the test's directories.

A unix socket path holds at most 107 bytes, and pytest's ``tmp_path`` can be long (it
holds the test's name). A path that would not fit goes to a short private directory
(``/tmp/triodist-XXXXXXXX``, mode 0700) instead, removed by :meth:`SocketPaths.remove`
at the end of the test; a path too long even there keeps its file name behind a short
hash. An abstract name (``"\\0name"``: no file) gets a prefix of its own for the same
reason, since those are shared by the whole machine.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from triodist.asyncproc.unixpaths import MAX_ABSTRACT, MAX_PATH

__all__ = ["SocketPaths", "as_path_bytes"]

_prefixes = itertools.count(1)


def as_path_bytes(path: str | bytes | os.PathLike[str]) -> bytes:
    """A path as the configuration's Lua would give it: one byte per character."""
    if isinstance(path, bytes):
        return path
    text = os.fspath(path)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return os.fsencode(text)


class SocketPaths:
    """Moves a configuration's unix socket paths under ``base`` (callable: ``bytes ->
    bytes``), and remembers each move: :attr:`moved`, written path to the one used.

    The same path is always moved to the same place, so that a reload finds the
    sockets of the running configuration where it left them.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        #: The path as the configuration wrote it -> the path used.
        self.moved: dict[bytes, bytes] = {}
        #: The short directory, made when a path first needs it.
        self.short: Path | None = None
        self._abstract = f"triodist-{os.getpid()}-{next(_prefixes)}/".encode()

    def __call__(self, path: bytes) -> bytes:
        used = self.moved.get(path)
        if used is None:
            used = self._abstract_name(path) if path.startswith(b"\0") else self._place(path)
            self.moved[path] = used
        return used

    def written(self, used: bytes) -> bytes | None:
        """The path as written that was moved to ``used``."""
        return next((w for w, u in self.moved.items() if u == used), None)

    def remove(self) -> None:
        """Remove the short directory (the test's own directory is pytest's to remove)."""
        if self.short is not None:
            shutil.rmtree(self.short, ignore_errors=True)
            self.short = None

    def _abstract_name(self, path: bytes) -> bytes:
        used = b"\0" + self._abstract + path[1:]
        # Too long with the prefix: the name's end, which tells sockets apart.
        return used if len(used) <= MAX_ABSTRACT else used[:MAX_ABSTRACT]

    def _place(self, path: bytes) -> bytes:
        # The path's own shape below the directory: ".." cannot climb out of it.
        parts = [b"__" if p == b".." else p for p in path.split(b"/") if p not in (b"", b".")]
        relative = b"/".join(parts)
        used = os.fsencode(self.base) + b"/" + relative
        if len(used) > MAX_PATH:
            used = os.fsencode(self._short()) + b"/" + relative
        if len(used) > MAX_PATH:
            digest = hashlib.sha256(path).hexdigest()[:12].encode()
            used = os.fsencode(self._short()) + b"/" + digest + b"-" + parts[-1][-60:]
        _make_directories(os.path.dirname(used))
        return used

    def _short(self) -> Path:
        if self.short is None:
            self.short = Path(tempfile.mkdtemp(prefix="triodist-"))  # 0700
        return self.short


def _make_directories(directory: bytes) -> None:
    """Create ``directory`` and its missing parents, each 0700: a socket's directory must
    be private (another user who could write there could replace the socket)."""
    missing: list[bytes] = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path, 0o700)
