"""A backend's host name turned into an address, once, when the configuration loads.

dnsdist takes only addresses in ``newServer``; a container's configuration often names
its backend by host name (``pdns-recursor:53``).  triodist resolves such a name when the
configuration runs (at start and at each reload) and warns with what it found, so that
the operator sees which address is used until the next reload.

Resolution is bounded, because a reload runs while the server serves: the hosts file
first (read whole, a bounded size), then ``localhost`` and ``.invalid`` as RFC 6761 has
them (loopback; never), then a stub resolver query with a deadline.  A name that does
not resolve in time is an error, as one that does not resolve at all.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path

import dns.exception
import dns.resolver

HOSTS_FILE = Path("/etc/hosts")
#: Bytes of the hosts file read: a larger one is read this far.
HOSTS_MAX_BYTES = 1 << 20
#: Seconds one name may take, all its queries together.
NAME_TIMEOUT = 2.0
#: Seconds all the names of one load may take together: a reload with many names that
#: do not answer still ends soon.
LOAD_BUDGET = 5.0

_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


class NotResolved(Exception):
    """A host name that gave no address (the message says why)."""


def is_host_name(text: str) -> bool:
    """Whether ``text`` is written as a host name (not an address, not anything else)."""
    if len(text) > 253 or not _HOST_NAME.match(text):
        return False
    # All digits and dots is a malformed IPv4 address, not a name.
    return not text.replace(".", "").isdigit()


class HostResolver:
    """Resolves the host names of one configuration load within ``LOAD_BUDGET``."""

    def __init__(self, hosts_file: Path = HOSTS_FILE, budget: float = LOAD_BUDGET) -> None:
        self.hosts_file = hosts_file
        self.budget = budget
        self._spent = 0.0
        self._hosts: dict[str, list[str]] | None = None

    def resolve(self, name: str) -> list[str]:
        """The addresses of ``name``, IPv4 first; ``NotResolved`` if it has none."""
        key = name.rstrip(".").lower()
        if key == "invalid" or key.endswith(".invalid"):
            raise NotResolved("a name under .invalid never resolves")
        found = self._read_hosts().get(key)
        if found:
            return found
        if key == "localhost" or key.endswith(".localhost"):
            return ["127.0.0.1", "::1"]
        left = self.budget - self._spent
        if left <= 0:
            raise NotResolved(f"the {self.budget:g} s this load may spend resolving are spent")
        started = time.monotonic()
        try:
            return _query(name, min(NAME_TIMEOUT, left))
        finally:
            self._spent += time.monotonic() - started

    def _read_hosts(self) -> dict[str, list[str]]:
        if self._hosts is None:
            self._hosts = {}
            try:
                with self.hosts_file.open("rb") as f:
                    data = f.read(HOSTS_MAX_BYTES).decode("utf-8", "replace")
            except OSError:
                data = ""
            for line in data.splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2:
                    continue
                try:
                    address = str(ipaddress.ip_address(fields[0].split("%", 1)[0]))
                except ValueError:
                    continue
                for host in fields[1:]:
                    self._hosts.setdefault(host.lower().rstrip("."), []).append(address)
            for addresses in self._hosts.values():
                addresses.sort(key=lambda a: ":" in a)  # IPv4 first, file order kept
        return self._hosts


def _query(name: str, timeout: float) -> list[str]:
    """A and AAAA through the system's stub resolver settings, ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    resolver = dns.resolver.Resolver()
    found: list[str] = []
    reason = "no address"
    for rdtype in ("A", "AAAA"):
        left = deadline - time.monotonic()
        if left <= 0:
            reason = f"no answer within {timeout:g} s"
            break
        try:
            answer = resolver.resolve(name, rdtype, lifetime=left, search=True)
        except dns.resolver.NXDOMAIN:
            raise NotResolved("no such name") from None
        except dns.exception.Timeout:
            reason = f"no answer within {timeout:g} s"
            break
        except dns.exception.DNSException as exc:
            reason = str(exc) or type(exc).__name__
            continue
        found.extend(str(r) for r in answer)
        if found:
            break
    if not found:
        raise NotResolved(reason)
    return found
