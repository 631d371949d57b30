"""The files of listening unix sockets: where a listener may bind, binding in a private
directory, and removing what it created.

A socket file is created with mode 0600 in a directory of this process's user (or root),
created 0700 when missing; a directory that another user owns or may write to is refused
(``unixtrust.py``).  A stale socket file (nobody listens on it) is replaced; a live one
never is.

Imports nothing above triodist.asyncproc (system below it).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat

from triodist.asyncproc.unixpaths import show_path
from triodist.system.unixtrust import (
    check_directory,
    open_private_directory,
    pass_credentials,
    unsafe_directory,
)

log = logging.getLogger("triodist.network")


def check_bindable(path: bytes, function: str) -> None:
    """What can be known about binding ``path`` without binding it (``ValueError``).

    The socket is bound when the server starts, not while the configuration runs, so
    that checking a configuration never replaces the socket of a server that runs it.
    """
    directory = os.path.dirname(path) or b"."
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        _check_creatable(path, directory, function)
        return
    except OSError as exc:
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: {show_path(directory)}: {exc.strerror}"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: {show_path(directory)} is not a directory"
        )
    try:
        check_directory(directory)
    except OSError as exc:
        raise ValueError(f"{function}: cannot bind {show_path(path)}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: no permission to create "
            f"files in {show_path(directory)}"
        )
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValueError(f"{function}: cannot bind {show_path(path)}: {exc.strerror}") from None
    if not stat.S_ISSOCK(existing.st_mode):
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: a file that is not a socket is "
            "in the way (only a stale socket is removed)"
        )


def _check_creatable(path: bytes, directory: bytes, function: str) -> None:
    """A missing socket directory: created 0700 at start-up, in a parent that must be safe."""
    parent = os.path.dirname(directory) or b"."
    try:
        reason = unsafe_directory(parent, holds_socket=False)
    except FileNotFoundError:
        # It may be created before the server starts (by the external component, or a
        # service manager's runtime directory): a warning now, an error at start-up.
        log.warning(
            "%s: the directory %s does not exist yet; it must exist when the server starts",
            function,
            show_path(parent),
        )
        return
    except OSError as exc:
        raise ValueError(
            f"{function}: cannot bind {show_path(path)}: {show_path(parent)}: {exc.strerror}"
        ) from None
    if reason is not None:
        raise ValueError(f"{function}: cannot bind {show_path(path)}: unsafe directory: {reason}")
    log.info(
        "%s: the directory %s will be created (mode 0700) when the server starts",
        function,
        show_path(directory),
    )


#: A bound listening socket: the socket, the descriptor of its directory (held open
#: while the socket is bound: the file is made, replaced and removed through it, never by
#: a path someone may have redirected), and the (device, inode) of the socket file this
#: process created, so that it is removed only while it is still ours. An abstract name
#: has neither.
Bound = tuple[socket.socket, int | None, tuple[int, int] | None]


def bind_socket(path: bytes) -> Bound:
    """Bind a datagram socket to ``path``: in a private directory, mode 0600, credentials
    passed, a stale socket file replaced.

    The directory is pinned by a descriptor (:func:`open_private_directory`) and every
    step in it goes through that descriptor: the stale file is examined and removed
    relative to it, and the socket bound at ``/proc/self/fd/N/name``, which the kernel
    resolves to that very directory.  A server started as root for ``serve -u USER``
    trusts USER's directories, and by the path USER could rename the directory and put
    a symbolic link in its place between the check and the act, to have root remove or
    create a socket file of that name in any directory."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dir_fd: int | None = None
    file_id: tuple[int, int] | None = None
    try:
        sock.setblocking(False)
        pass_credentials(sock)
        if path.startswith(b"\0"):
            sock.bind(path)
        else:
            dir_fd = open_private_directory(os.path.dirname(path) or b".")
            name = os.path.basename(path)
            pinned = _pinned(dir_fd, name)
            _remove_stale(dir_fd, name, pinned, path)
            # bind() creates the file with 0777 & ~umask: with the umask at 0177 it is
            # born 0600, with no moment at which someone else could open it.  No await
            # happens in between, so no other task runs with this umask.
            previous = os.umask(0o177)
            try:
                sock.bind(pinned)
            finally:
                os.umask(previous)
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            file_id = (info.st_dev, info.st_ino)
    except OSError as exc:
        sock.close()
        if dir_fd is not None:
            os.close(dir_fd)
        raise OSError(
            exc.errno, f"Error binding Unix socket to path {show_path(path)}: {exc.strerror}"
        ) from exc
    except BaseException:
        sock.close()
        if dir_fd is not None:
            os.close(dir_fd)
        raise
    return sock, dir_fd, file_id


#: sockaddr_un's sun_path, less the terminating NUL.
_MAX_UNIX_PATH = 107


def _pinned(dir_fd: int, name: bytes) -> bytes:
    """The path of ``name`` in the directory open as ``dir_fd``, that no one can redirect."""
    pinned = b"/proc/self/fd/%d/%s" % (dir_fd, name)
    if len(pinned) > _MAX_UNIX_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"the socket's name is too long: {len(name)} bytes, at most "
            f"{_MAX_UNIX_PATH - len(pinned) + len(name)} (it is bound through "
            f"{show_path(pinned[: -len(name)])})",
        )
    return pinned


def _remove_stale(dir_fd: int, name: bytes, pinned: bytes, path: bytes) -> None:
    try:
        existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
    # A socket file nobody listens on is stale; one that answers belongs to a live
    # process (another triodist, another listener), whose socket is never taken over.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(pinned)
    except OSError:
        pass
    else:
        raise OSError(errno.EADDRINUSE, "another process is listening on this socket")
    finally:
        probe.close()
    log.info("Removing the stale socket file %s", show_path(path))
    os.unlink(name, dir_fd=dir_fd)


def unbind_socket(path: bytes, bound: Bound) -> None:
    """Close a socket ``bind_socket`` bound, and remove its file if it is still ours."""
    sock, dir_fd, file_id = bound
    sock.close()
    if file_id is None or dir_fd is None:
        return
    name = os.path.basename(path)
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        # Remove the file only if it is still the one we created (a successor may have
        # bound the path again in the meantime).
        if (info.st_dev, info.st_ino) == file_id:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("Unable to remove %s: %s", show_path(path), exc.strerror)
    finally:
        os.close(dir_fd)
