"""The pytest plugin: a DNS policy (a ``rules.lua``) under test, in-process, on loopback.

Installing triodist installs it (the ``pytest11`` entry point ``triodist``, which loads
this module); it runs on pytest-trio, which ``pip install 'triodist[pytest]'`` brings.
Where plugins are not loaded by themselves (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), a test
module or the root ``conftest.py`` enables it with::

    pytest_plugins = ["triodist.testing.plugin"]

(both together are fine). An ``async def`` test that takes the ``triodist`` fixture runs
under Trio (the plugin marks it ``trio``), with or without pytest-trio's ``trio_mode``::

    async def test_blocked_names_never_reach_the_backend(triodist):
        proxy = await triodist.start(
            "rules.lua",
            backends={"resolver1": {"www.example.org.": "192.0.2.10"}},
        )
        answer = await proxy.query("ads.example.org.", "A")
        assert answer.rcode() == dns.rcode.REFUSED
        assert proxy.backend("resolver1").received == []

``triodist.start(config, backends=..., components=..., **settings)`` runs the
configuration as ``triodist serve`` would, with these changes:

* every listening address (``setLocal``/``addLocal``) becomes a free port on 127.0.0.1,
  and the console is not opened;
* every ``newServer`` is sent to a fake backend
  (:class:`~triodist.testing.fakebackend.FakeBackend`) chosen in ``backends`` by the
  server's ``name`` or by its ``address`` (``"192.0.2.1"`` and ``"192.0.2.1:53"`` both
  find ``newServer("192.0.2.1")``). A value there is an answer table or a
  ``FakeBackend`` (for its modes: ``"silent"``, ``slow(seconds)``, ``"servfail"``,
  ``"truncate"``, ``"down"``). A server ``backends`` does not mention gets a fake that
  answers SERVFAIL, and the test's output says so;
* every unix socket path (``newNetworkEndpoint``, ``addUnixListeningEndpoint``) is moved
  into the test's directory (:mod:`triodist.testing.sockets`);
* each ``newNetworkEndpoint`` path named in ``components`` gets a fake component
  (:class:`~triodist.testing.fakecomponent.FakeComponent`, or a function ``answer(raw:
  bytes) -> bytes | None``) that answers on the configuration's listening endpoint;
* ``settings`` set fields of the configuration's ``Settings`` (``grace_period=0``...).

The :class:`~triodist.testing.launcher.Proxy` it returns: ``query(name, type="A",
over="udp"|"tcp", **edns)`` (the answer, or None when none comes),
``backend(name_or_address)``, ``component(path)``, ``counters()``,
``console("showServers()")`` and ``await reload(config=None, backends=None)`` (as SIGHUP:
a server ``backends`` names gets that fake, the other running ones keep theirs).

``config`` is the path of a file (a ``pathlib.Path``, or a string without a line break
that names a file or has a path's shape: ``"rules.lua"``, ``"dnsdist.conf"``), looked for
from the current directory, then from the test file's directory; else the text of a
configuration.

Timeouts follow Trio's clock: with pytest-trio's ``autojump_clock`` fixture a slow
backend, a component's delay, an asynchronous timeout, a health-check interval or a
cache TTL costs no wall time.

What it does not do: it runs what triodist serves, DNS over UDP and TCP, and its fake
backends speak the same; the console is not opened (``proxy.console`` runs a line in the
configuration's Lua state instead); ``serve --workers`` is not run; ``proxy.reload()``
gives no component to an endpoint path only the new configuration uses. docs/testing.md
says all this for users.

This module imports only pytest: the server is imported when a test first asks for the
fixture, so that a test run that never uses it does not pay for it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import trio

    from triodist.testing.launcher import Triodist

__all__ = [
    "pytest_addhooks",
    "pytest_collection_modifyitems",
    "pytest_runtest_setup",
    "triodist",
]

#: pytest-trio's own plugin name (its ``pytest11`` entry point).
_PYTEST_TRIO = "trio"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Bring pytest-trio along when it is installed but not loaded (plugins not loaded by
    themselves, ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), unless the run blocks it (``-p
    no:trio``). Registered under its entry point's name, as pytest would, so that a
    ``-p trio`` or its own entry point then finds it there instead of loading it again."""
    if pluginmanager.has_plugin(_PYTEST_TRIO) or pluginmanager.is_blocked(_PYTEST_TRIO):
        return
    try:
        module = importlib.import_module("pytest_trio.plugin")
    except ImportError:
        return  # said to the tests that use the fixture (pytest_runtest_setup)
    pluginmanager.register(module, _PYTEST_TRIO)


def _uses_fixture(item: pytest.Item) -> bool:
    return "triodist" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``trio`` the coroutine tests that use the fixture, so that the example in the
    module documentation runs as written in a project without pytest-trio's trio_mode."""
    if not config.pluginmanager.hasplugin(_PYTEST_TRIO):
        return  # no such mark: pytest_runtest_setup says what is missing
    for item in items:
        function = getattr(item, "obj", None)
        if (
            _uses_fixture(item)
            and inspect.iscoroutinefunction(function)
            and item.get_closest_marker("trio") is None
        ):
            item.add_marker(pytest.mark.trio)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that takes the fixture without pytest-trio installed, or that is a plain
    ``def``, fails saying why (instead of pytest's or pytest-trio's word for it)."""
    if not _uses_fixture(item):
        return
    if not item.config.pluginmanager.hasplugin(_PYTEST_TRIO):
        pytest.fail(
            "the triodist fixture runs on pytest-trio, which is not installed: "
            "pip install 'triodist[pytest]'",
            pytrace=False,
        )
    function = getattr(item, "obj", None)
    if function is not None and not inspect.iscoroutinefunction(function):
        # Said before the fixture is set up: pytest-trio, asked for it by a plain def,
        # leaves a state behind that makes every later Trio test of the run error.
        pytest.fail(
            f"{item.name} takes the triodist fixture but is no coroutine: "
            "write it 'async def' (and 'await triodist.start(...)')",
            pytrace=False,
        )


@pytest.fixture
async def triodist(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Triodist]:
    """Start configurations under test: ``proxy = await triodist.start(config, backends=...)``."""
    from triodist.testing.launcher import Triodist  # the server: only when used

    launcher = Triodist(nursery, tmp_path, [request.path.parent], out=lambda: sys.stdout)
    try:
        yield launcher
    finally:
        await launcher.aclose()
