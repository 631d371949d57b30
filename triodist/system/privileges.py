"""Dropping root's privileges once everything privileged is bound: ``serve -u/-g``.

Binding port 53 needs root (or ``CAP_NET_BIND_SERVICE``); answering queries does not.
As dnsdist's ``-u/--uid`` and ``-g/--gid``, ``triodist serve -u USER -g GROUP`` binds
every listening socket, the console and the network listeners' socket files as root,
then becomes USER:GROUP for the rest of its life: a rule, the console's Lua or a bug
in the server then has a plain user's rights, not root's.

The order is fixed: the open-file limit is fitted first (``fdlimit.fit``, at the start
of ``DNSServer.run``), then everything is bound, the network listeners' socket files are
given to the user (:func:`hand_over`), and then :func:`drop`: supplementary groups
cleared, group, then user (once the user is changed, the group could no longer be).
The result is read back, and a process that could become root again stops.

Differences from dnsdist 1.7.3, each on the safe side:

* ``-u`` alone takes the user's primary group (dnsdist keeps group 0, root's);
* a process that is not root and is asked for another user or group refuses to
  start (dnsdist warns and serves on as it is);
* a numeric ``-u`` that the password database does not know needs ``-g``.

After the drop nothing privileged can be bound again: a reload that would need it is
refused (:func:`refuse_privileged_binds`) and the server goes on as it was.

Imports nothing above triodist.system (the wire format's addresses below it).
"""

from __future__ import annotations

import codecs
import errno
import grp
import logging
import os
import pwd
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.rdata

from triodist.wire.address import split_host_port

log = logging.getLogger("triodist.privileges")

#: Linux's threshold for privileged ports; read from here when it exists.
_UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


class PrivilegeError(Exception):
    """The user or group cannot be resolved or taken, or a drop did not take."""


@dataclass(frozen=True)
class Target:
    """Who the server becomes: ``uid``/``gid``, and how the command line named them."""

    uid: int
    gid: int
    user: str
    group: str

    def __str__(self) -> str:
        return f"uid {self.uid} ({self.user}), gid {self.gid} ({self.group})"


def _user(text: str) -> tuple[int, int | None]:
    """A user name or number (as dnsdist: a name first): its uid, and its primary gid
    when the password database knows it."""
    try:
        entry = pwd.getpwnam(text)
    except KeyError:
        pass
    else:
        return entry.pw_uid, entry.pw_gid
    uid = _number(text, "user")
    try:
        return uid, pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid, None


def _group(text: str) -> int:
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        return _number(text, "group")


def _number(text: str, what: str) -> int:
    # uid_t and gid_t are 32 bits; (uid_t)-1 means "unchanged" to setuid and is refused.
    if text.isascii() and text.isdigit() and int(text) < 0xFFFFFFFF:
        return int(text)
    raise PrivilegeError(f"Unable to resolve {what} '{text}': no such {what}, and not a number")


def _name(number: int, lookup: str) -> str:
    try:
        if lookup == "user":
            return pwd.getpwuid(number).pw_name
        return grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def resolve(user: str | None, group: str | None) -> Target | None:
    """What ``-u user -g group`` ask for; None when there is nothing to do.

    Refused (``PrivilegeError``), before anything is bound: an unknown name, a numeric
    user without a group, and a process that is not root asked for other ids."""
    if user is None and group is None:
        return None
    euid, egid = os.geteuid(), os.getegid()
    uid, gid = euid, egid
    if user is not None:
        uid, primary = _user(user)
        if group is None:
            if primary is None:
                raise PrivilegeError(
                    f"-u {user}: no such user in the password database, so its group is "
                    "unknown: give the group with -g"
                )
            gid = primary
    if group is not None:
        gid = _group(group)
    target = Target(uid, gid, user or _name(uid, "user"), group or _name(gid, "group"))
    if euid != 0:
        if (uid, gid) == (euid, egid):
            return None  # already who is asked for
        raise PrivilegeError(
            f"-u/-g ask for {target}, and only root can change its user or group "
            f"(this process runs as uid {euid}, gid {egid})"
        )
    return target


def unprivileged_port_start() -> int:
    """The lowest port a process without privileges may bind (Linux's sysctl, else 1024)."""
    try:
        with open(_UNPRIVILEGED_PORT_START, "rb") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1024


def hand_over(files: Iterable[tuple[bytes, tuple[int, int], int]], target: Target) -> None:
    """Give the socket files bound as root (path, (device, inode), the descriptor of the
    directory it was bound in) to ``target``.

    Sending to a unix socket needs write permission on its file (mode 0600): owned by
    root, only a root component could reach the server once it runs as the user.

    The file is changed only while it is still the one bound (device and inode), never
    through a symbolic link (``lchown``), and only in the directory it was bound in (by
    that directory's descriptor, not its path): a directory the user may rename must
    not let them swap in a file of root's for the server to give away.

    Removing the file at shutdown needs write permission on its directory, which a
    socket file's owner does not give: a directory the user cannot write to is
    reported, and its socket file is left behind at shutdown (the next start removes
    it as stale)."""
    for path, file_id, dir_fd in files:
        name = os.path.basename(path)
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if (info.st_dev, info.st_ino) != file_id or not stat.S_ISSOCK(info.st_mode):
                log.warning("%s is no longer the socket bound there: left as it is", _show(path))
                continue
            os.chown(name, target.uid, target.gid, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise PrivilegeError(
                f"Unable to give {_show(path)} to {target}: {exc.strerror}"
            ) from exc
        directory = os.path.dirname(path) or b"."
        allowed = _permissions(dir_fd, target)
        if not allowed & stat.S_IXOTH:
            log.warning(
                "%s: %s is not searchable by %s: a component running as that user cannot "
                "reach the socket, and the socket file stays there when the server stops; "
                "give the directory to that user",
                _show(path),
                _show(directory),
                target,
            )
        elif not allowed & stat.S_IWOTH:
            log.warning(
                "%s: %s is not writable by %s: the socket file stays there when the server "
                "stops (the next start removes it); give the directory to that user",
                _show(path),
                _show(directory),
                target,
            )


def _permissions(dir_fd: int, target: Target) -> int:
    """What ``target`` may do in the directory open as ``dir_fd`` (as the kernel decides
    for a user that is not root: owner's bits, else group's, else others'), as
    ``S_IRWXO`` bits."""
    try:
        info = os.fstat(dir_fd)
    except OSError:
        return 0
    if target.uid == 0:
        return stat.S_IRWXO
    mode = info.st_mode
    if info.st_uid == target.uid:
        return (mode & stat.S_IRWXU) >> 6
    if info.st_gid == target.gid:
        return (mode & stat.S_IRWXG) >> 3
    return mode & stat.S_IRWXO


def _show(path: bytes) -> str:
    return os.fsdecode(path)


def preload() -> None:
    """Import now what Python and dnspython import on first use.

    Once the server runs as the user, a module imported late must be readable by that
    user, and an installation only root may read (a virtual environment or
    ``~/.local`` under ``/root``) would fail at the first query of a new record type
    or the first text in an unusual encoding, long after start-up. Imported here, as
    root, they fail (or work) at start."""
    for encoding in ("ascii", "utf-8", "latin-1", "idna", "unicode_escape"):
        codecs.lookup(encoding)
    # Every rdata type dnspython implements (a type seen for the first time is imported
    # otherwise); the ones it does not implement are generic, as they would be anyway.
    load_all_types = getattr(dns.rdata, "load_all_types", None)
    if load_all_types is not None:
        load_all_types(disable_dynamic_load=False)


def drop(target: Target) -> None:
    """Become ``target`` for good: supplementary groups, group, user, in this order,
    then check that it took and that root cannot be had back (``PrivilegeError``)."""
    preload()
    try:
        os.setgroups([])
        os.setgid(target.gid)
        log.info("Set effective group id to %d", target.gid)
        os.setuid(target.uid)
        log.info("Set effective user id to %d", target.uid)
    except OSError as exc:
        raise PrivilegeError(f"Unable to become {target}: {exc.strerror}") from exc
    verify(target)


def verify(target: Target) -> None:
    """The process is ``target`` through and through: real, effective and saved ids, no
    supplementary group but its own, and (not root) no way back to root."""
    uids, gids, groups = os.getresuid(), os.getresgid(), os.getgroups()
    if uids != (target.uid,) * 3 or gids != (target.gid,) * 3 or set(groups) - {target.gid}:
        raise PrivilegeError(
            f"Dropping privileges did not take: uids {uids}, gids {gids}, groups {groups}, "
            f"where {target} was asked for"
        )
    if target.uid == 0:
        return
    for regain in (os.setuid, os.setgid):
        try:
            regain(0)
        except PermissionError:
            continue
        raise PrivilegeError(f"Dropping privileges did not take: {regain.__name__}(0) succeeded")
    effective = _capabilities()
    if effective:
        raise PrivilegeError(f"Dropping privileges did not take: capabilities {effective:#x} left")


def _capabilities() -> int:
    """The effective capability set (Linux's /proc); 0 where it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def refuse_privileged_binds(
    old: Sequence[tuple[str, int]], new: Sequence[tuple[str, int]], target: Target
) -> None:
    """A reload after the drop: refuse (``PrivilegeError``) a configuration that adds a
    listening address only root may bind. Without the refusal it would be accepted and
    the address left for a restart, at which point the server starts (as root) bound
    there; the operator learns now, while the running configuration is untouched."""
    start = unprivileged_port_start()
    known = set(old)
    for host, port in new:
        if (host, port) in known or not 0 < port < start:
            continue
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise PrivilegeError(
            f"listening on {where} needs privileges dropped at start (the server runs as "
            f"{target} since then, -u/-g; ports below {start} need root): restart it to "
            "listen there"
        )


def listen_addresses(addresses: Iterable[str]) -> list[tuple[str, int]]:
    """``setLocal``/``addLocal`` addresses as (host, port)."""
    return [split_host_port(address, 53) for address in addresses]


def is_permission_error(exc: BaseException) -> bool:
    """A bind refused for want of permission (``EACCES``): what the drop can cause. (A
    path refused as unsafe, ``EPERM``, is refused whoever the server runs as.)"""
    return isinstance(exc, OSError) and exc.errno == errno.EACCES
