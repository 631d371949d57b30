"""Which local users a unix socket trusts: senders' credentials, peers' owners, safe directories.

The asynchronous sockets carry verdicts: whoever can send to triodist's listening socket can
resume, refuse or drop held queries, and whoever receives what triodist sends to the external
component decides (or, by staying silent, lets the fail-open timeout decide). So both ends are
held to one rule: **the other side is this process's user or root**.

* A listening socket sets ``SO_PASSCRED``: the kernel attaches the sender's credentials
  (``SCM_CREDENTIALS``) to every datagram, and a sender cannot claim a uid it does not have.
  :func:`sender_uid` reads them; a datagram from another uid, or with none, is dropped.  This
  holds for abstract names (``"\\0name"``), which have no file and so no permissions at all.
* A socket triodist sends to is checked when it connects: :func:`peer_uid` asks the kernel
  (``NETLINK_SOCK_DIAG``) which user owns the socket at the other end; another user's is never
  sent to.
* A socket's directory is private (:func:`ensure_private_directory`): created 0700 when
  missing, and refused when another user could replace what is in it (:func:`unsafe_directory`,
  the rule of OpenSSH's ``safe_path``).

The directory rule.  From the socket's directory up to ``/``, after resolving symbolic links:
every directory belongs to this user or to root; the socket's own directory is writable by no
one else (no group or other write bit); a directory above it may be writable by others only if
it is sticky (as ``/tmp``), since then nobody else can rename or remove what this user put in
it.  A symbolic link on the way must belong to this user or root too (its owner could point it
elsewhere).  So ``/tmp/triodist-async/`` created by this user 0700 is fine; the same path made
first by another user, or made 0777, is refused.

Imports nothing of triodist: the asynchronous sockets and the test component build on it.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import struct
from collections.abc import Iterable

# --- the sender of a datagram ---------------------------------------------------------------

#: ``struct ucred``: pid, uid, gid.
_UCRED = struct.Struct("=iII")
#: The ancillary buffer ``recvmsg`` needs for the credentials and nothing more: file
#: descriptors a sender passes (``SCM_RIGHTS``) do not fit and are closed by the kernel.
CREDENTIALS_SPACE = socket.CMSG_SPACE(_UCRED.size)

AncillaryData = Iterable[tuple[int, int, bytes]]


def pass_credentials(sock: socket.socket) -> None:
    """Have the kernel attach the sender's credentials to every datagram ``sock`` receives.

    Set before ``bind``: a datagram queued before the option is set carries none (and would
    be dropped)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def sender_credentials(ancdata: AncillaryData) -> tuple[int, int, int] | None:
    """(pid, uid, gid) from a datagram's ``SCM_CREDENTIALS``; None when it carries none."""
    for level, kind, data in ancdata:
        if (
            level == socket.SOL_SOCKET
            and kind == socket.SCM_CREDENTIALS
            and len(data) >= _UCRED.size
        ):
            pid, uid, gid = _UCRED.unpack_from(data)
            return pid, uid, gid
    return None


_UID = struct.Struct("=I")
_SOL_SOCKET = socket.SOL_SOCKET
_SCM_CREDENTIALS = socket.SCM_CREDENTIALS


def sender_uid(ancdata: AncillaryData) -> int | None:
    """The sender's uid, as the kernel vouches for it; None when the datagram carries none.

    Called for every datagram a listener receives: the uid alone is unpacked, with the
    constants at module level (0.4 µs a call against 0.6 through ``sender_credentials``).
    """
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_CREDENTIALS and len(data) >= _UCRED.size:
            uid: int = _UID.unpack_from(data, 4)[0]  # after the pid
            return uid
    return None


#: A user trusted besides this process's effective user and root: the one a server started
#: as root becomes once it has bound everything (``serve -u``), so that what it checks
#: before the drop is judged as it will run.  See :func:`trust_user`.
_also_trusted: int | None = None


def trust_user(uid: int | None) -> None:
    """Trust ``uid`` as this process's own user (None: nobody besides it and root)."""
    global _also_trusted
    _also_trusted = uid


def trusted_uid(uid: int | None) -> bool:
    """This process's effective user (read now: it changes when privileges are dropped),
    root (who can reach any socket anyway), or the user given to :func:`trust_user`."""
    return uid is not None and (uid == 0 or uid == os.geteuid() or uid == _also_trusted)


def trusted_users(conjunction: str = "or") -> str:
    """Who may talk to us, for messages: ``uid 1000 (dns) or root``; ``root`` alone for
    a process running as root (never "uid 0 (root) or root")."""
    users = [
        user_name(uid)
        for uid in dict.fromkeys((os.geteuid(), _also_trusted))
        if uid is not None and uid != 0
    ]
    return f" {conjunction} ".join([*users, "root"])


def user_name(uid: int) -> str:
    """``uid 65534 (nobody)``, or the bare number when the user has no name."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, OverflowError):
        return f"uid {uid}"


# --- the peer of a connected socket ---------------------------------------------------------

# linux/netlink.h, linux/sock_diag.h, linux/unix_diag.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_UDIAG_SHOW_PEER = 0x04
_UDIAG_SHOW_UID = 0x40
_UNIX_DIAG_PEER = 2
_UNIX_DIAG_UID = 7
_NO_COOKIE = 0xFFFFFFFF
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBHIIIII")  # unix_diag_req
_REPLY = struct.Struct("=BBBBIII")  # unix_diag_msg
_ATTR = struct.Struct("=HH")  # rtattr
_U32 = struct.Struct("=I")


def _diag(inode: int, show: int) -> dict[int, bytes]:
    """The attributes ``show`` asks for of the unix socket ``inode`` (``OSError``)."""
    request = _REQUEST.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, show, _NO_COOKIE, _NO_COOKIE)
    header = _NLMSG.pack(_NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)  # the kernel answers at once; never hang on a broken one
        netlink.send(header + request)
        data = netlink.recv(8192)
    if len(data) < _NLMSG.size:
        raise OSError(errno.EPROTO, "short sock_diag reply")
    length, kind, _, _, _ = _NLMSG.unpack_from(data)
    if kind == _NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", data, _NLMSG.size)
        raise OSError(-code, os.strerror(-code))
    attributes: dict[int, bytes] = {}
    offset = _NLMSG.size + _REPLY.size
    end = min(length, len(data))
    while offset + _ATTR.size <= end:
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        attributes[kind] = data[offset + _ATTR.size : offset + size]
        offset += (size + 3) & ~3
    return attributes


def peer_uid(sock: socket.socket) -> int:
    """The user who owns the socket that the connected unix socket ``sock`` is connected to.

    Asked of the kernel's socket diagnostics (Linux 5.3 and later): connecting a datagram
    socket records no peer credentials (``SO_PEERCRED`` is empty), and an abstract name has
    no file whose owner could be read.  ``OSError`` when the kernel cannot tell.
    """
    own = _diag(os.fstat(sock.fileno()).st_ino, _UDIAG_SHOW_PEER)
    if _UNIX_DIAG_PEER not in own:
        raise OSError(errno.ENOTCONN, "the socket has no peer")
    (peer,) = _U32.unpack_from(own[_UNIX_DIAG_PEER])
    attributes = _diag(peer, _UDIAG_SHOW_UID)
    if _UNIX_DIAG_UID not in attributes:
        raise OSError(errno.EOPNOTSUPP, "the kernel does not report socket owners")
    (uid,) = _U32.unpack_from(attributes[_UNIX_DIAG_UID])
    return int(uid)


# --- directories ----------------------------------------------------------------------------


class UnsafePathError(PermissionError):
    """A socket's directory that another user could change, or a peer of another user."""


def _show(path: bytes) -> str:
    return "'" + path.decode("utf-8", errors="backslashreplace") + "'"


def _mode(info: os.stat_result) -> str:
    return f"{stat.S_IMODE(info.st_mode):04o}"


def unsafe_directory(directory: bytes, *, holds_socket: bool = True) -> str | None:
    """Why the existing ``directory`` must not hold a socket of ours; None when it may.

    The rule is in the module's text; with ``holds_socket`` false, ``directory`` is judged
    as a directory above the socket's (the one a missing socket directory is created in).
    ``OSError`` when it cannot be examined.
    """
    absolute = os.path.abspath(directory)
    # The symbolic links on the way, as written: their owners could point them elsewhere.
    prefix = b"/"
    for part in absolute.split(b"/"):
        if not part:
            continue
        prefix = os.path.join(prefix, part)
        info = os.lstat(prefix)
        if stat.S_ISLNK(info.st_mode) and not trusted_uid(info.st_uid):
            return f"{_show(prefix)} is a symbolic link owned by {user_name(info.st_uid)}"
    # The directories themselves, from the socket's own up to the root.
    real = os.path.realpath(absolute)
    current = real
    while True:
        info = os.stat(current)
        where = _show(current) + ("" if current == real else f" (holding {_show(real)})")
        if not stat.S_ISDIR(info.st_mode):
            return f"{where} is not a directory"
        if not trusted_uid(info.st_uid):
            return (
                f"{where} is owned by {user_name(info.st_uid)}, mode {_mode(info)}: it must "
                f"belong to {trusted_users()}"
            )
        others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        own_directory = holds_socket and current == real
        if others_write and (own_directory or not info.st_mode & stat.S_ISVTX):
            return (
                f"{where} is owned by {user_name(info.st_uid)}, mode {_mode(info)}: other "
                "users may write to it"
                + (
                    "; a socket's own directory must be writable by its owner only"
                    if own_directory
                    else " and it is not sticky"
                )
            )
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def check_directory(directory: bytes) -> None:
    """``UnsafePathError`` (naming the directory, its owner and mode) when
    :func:`unsafe_directory` finds a reason; ``OSError`` when it cannot be examined."""
    reason = unsafe_directory(directory)
    if reason is not None:
        raise UnsafePathError(errno.EPERM, f"unsafe directory: {reason}")


def ensure_private_directory(directory: bytes) -> None:
    """Make sure ``directory`` exists and is safe for a socket (``OSError`` otherwise).

    :func:`open_private_directory`, for a caller that acts on the directory by its path
    with no more privileges than the users it trusts (the example filter)."""
    os.close(open_private_directory(directory))


#: How a directory is pinned: never through a symbolic link in the last component.
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_private_directory(directory: bytes) -> int:
    """Make sure ``directory`` exists and is safe for a socket, and return a file
    descriptor for it (``OSError`` otherwise): what is done in it afterwards is done
    through that descriptor, in the directory that was checked, whatever happens to the
    path since.

    A missing directory is created with mode 0700 (its parent must exist: only the last
    level is made, so that a mistyped path does not grow a tree); an existing one is
    checked, never changed.  Created by root for the user given to :func:`trust_user`
    (``serve -u``), it is that user's: the server, once it runs as that user, and its
    components can then reach and remove what is in it.

    Why descriptors.  Root acts here on paths that the trusted user may change (their own
    directories count as safe): by the path, a ``chown`` after ``mkdir`` would follow a
    symbolic link that user swapped in, and give them any directory of root's (``/etc``).
    So every component is opened without following symbolic links, from ``/`` down (the
    path's links are resolved first, and one that appears meanwhile is an error), the
    new directory is opened the same way from its parent's descriptor, and its mode and
    owner are set on the descriptor, once ``fstat`` shows a directory this process made.
    """
    real = os.path.realpath(os.path.abspath(directory))
    parent, name = os.path.split(real)
    parent_fd = _open_walk(parent)
    try:
        if not name:  # "/" itself: root's, never created nor changed
            fd = os.dup(parent_fd)
            created = False
        else:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                created = True
            except FileExistsError:
                created = False
            fd = _open_in(parent_fd, name, real)
    finally:
        os.close(parent_fd)
    try:
        if created:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                # Removed and replaced by someone else's directory since mkdir: theirs.
                raise UnsafePathError(
                    errno.EPERM,
                    f"unsafe directory: {_show(real)} was replaced while it was created "
                    f"(now owned by {user_name(info.st_uid)})",
                )
            # mkdir applies the umask: 0700 or narrower, never wider.  Made exactly 0700,
            # so that a umask of 0777 does not leave a directory this user cannot use.
            os.fchmod(fd, 0o700)
            if _also_trusted is not None and os.geteuid() == 0:
                os.fchown(fd, _also_trusted, -1)
        # The reasons, by the path (its messages name the directory above that is wrong);
        # then the directory actually opened, by its descriptor.
        check_directory(directory)
        reason = _unsafe_pinned(os.fstat(fd), holds_socket=True)
        if reason is not None:
            raise UnsafePathError(errno.EPERM, f"unsafe directory: {_show(real)} {reason}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_in(parent_fd: int, name: bytes, path: bytes) -> int:
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # A symbolic link (or another file) where realpath() found a directory.
            raise UnsafePathError(
                exc.errno,
                f"unsafe directory: {_show(path)} changed while it was opened (now a symbolic "
                "link or not a directory)",
            ) from exc
        raise


def _open_walk(directory: bytes) -> int:
    """A descriptor for the resolved, absolute ``directory``, each component opened from
    the one above without following symbolic links and held to the directory rule."""
    fd = os.open(b"/", _DIRECTORY_FLAGS)
    prefix = b"/"
    try:
        for part in directory.split(b"/"):
            if not part:
                continue
            prefix = os.path.join(prefix, part)
            reason = _unsafe_pinned(os.fstat(fd), holds_socket=False)
            if reason is not None:
                raise UnsafePathError(
                    errno.EPERM, f"unsafe directory: {_show(os.path.dirname(prefix))} {reason}"
                )
            below = _open_in(fd, part, prefix)
            os.close(fd)
            fd = below
        reason = _unsafe_pinned(os.fstat(fd), holds_socket=False)
        if reason is not None:
            raise UnsafePathError(errno.EPERM, f"unsafe directory: {_show(prefix)} {reason}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unsafe_pinned(info: os.stat_result, *, holds_socket: bool) -> str | None:
    """The directory rule for one opened directory: why it must not be used, or None."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if not trusted_uid(info.st_uid):
        return f"is owned by {user_name(info.st_uid)}, mode {_mode(info)}"
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if others_write and (holds_socket or not info.st_mode & stat.S_ISVTX):
        owner = user_name(info.st_uid)
        return f"is owned by {owner}, mode {_mode(info)}: other users may write to it"
    return None
