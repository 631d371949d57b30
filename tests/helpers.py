"""Plain helpers several test files share (the fixtures are in ``conftest.py``).

Kept apart from ``conftest.py`` because none of them is a fixture: a test file imports
what it uses, by name, from here.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from functools import partial
from pathlib import Path

import pytest
from conftest import Triodist

from triodist.cli import load
from triodist.reload import Reloader

#: The repository: the working directory of the CLI runs, and what they import first.
ROOT = Path(__file__).resolve().parent.parent


def subprocess_env() -> dict[str, str]:
    """The environment for ``python -m triodist`` in a child process: this checkout first on
    ``PYTHONPATH``, so the child runs the code under test, not an installed copy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def reloader_for(t: Triodist) -> Reloader:
    """What ``triodist serve`` sets up for SIGHUP and ``reloadConfig()``: the same file and
    command line, built again."""
    return Reloader(t.server, partial(load, str(t.config_path), [], ["127.0.0.1:0"]), t.lua)


# --- unix datagram sockets -----------------------------------------------------------------


def abstract_name() -> str:
    """A fresh name in Linux's abstract socket namespace (no file, nothing to clean up)."""
    return f"\0triodist-test-{uuid.uuid4().hex}"


def peer(path: Path | str | bytes) -> socket.socket:
    """A stand-in for the external component: a bound, non-blocking datagram socket that
    reads only when the test says so."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(os.fsencode(path) if isinstance(path, Path) else path)
    return sock


# --- dnsdist, for the tests that compare with it -------------------------------------------

DNSDIST = os.environ.get("DNSDIST") or shutil.which("dnsdist")
NO_DNSDIST = "dnsdist is not installed (apt-get install dnsdist): these tests need it"
#: Without dnsdist these tests are skipped, except under CI (``CI`` set, as CI services
#: do): there a missing dnsdist must not pass as a skip, so the test body fails instead
#: (see :func:`require_dnsdist`).
needs_dnsdist = pytest.mark.skipif(DNSDIST is None and not os.environ.get("CI"), reason=NO_DNSDIST)


def require_dnsdist() -> str:
    """The dnsdist binary; fails the test when there is none (reached only under CI)."""
    if DNSDIST is None:
        pytest.fail(f"{NO_DNSDIST} (CI is set, so this is an error)")
    return DNSDIST
