"""The pytest plugin: a DNS policy (a ``rules.lua``) under test, in-process, on loopback.

Enable it in a test module or the project's root ``conftest.py`` with::

    pytest_plugins = ["triodist.testing.plugin"]

(there is no ``pytest11`` entry point yet, so installing triodist does not load it by
itself). It runs on pytest-trio: an ``async def`` test that takes the ``triodist``
fixture runs under Trio (the plugin marks it ``trio``), with or without pytest-trio's
``trio_mode``. A test then writes::

    async def test_blocked_names_never_reach_the_backend(triodist):
        proxy = await triodist.start(
            "rules.lua",
            backends={"resolver1": {"www.example.org.": "192.0.2.10"}},
        )
        answer = await proxy.query("ads.example.org.", "A")
        assert answer.rcode() == dns.rcode.REFUSED
        assert proxy.backend("resolver1").received == []

``triodist.start(config, backends=..., **settings)`` runs the configuration as
``triodist serve`` would, with these changes:

* every listening address (``setLocal``/``addLocal``) becomes a free port on 127.0.0.1,
  and the console is not opened;
* every ``newServer`` is sent to a fake backend (:class:`~triodist.testing.fakebackend.
  FakeBackend`) chosen in ``backends`` by the server's ``name`` or by its ``address`` string
  as written in the configuration. A value there is an answer table or a ``FakeBackend``
  (for its modes: ``FakeBackend(table, mode="slow", delay=5)``; ``down=True``: its health
  checks fail). A server ``backends`` does not mention gets a fake that answers SERVFAIL,
  and the test's output says so;
* ``settings`` set fields of the configuration's ``Settings`` (``grace_period=0``...).

The :class:`Proxy` it returns: ``query(name, type="A", over="udp"|"tcp", **edns)`` (the
answer, or None when none comes), ``backend(name_or_address).received``, ``counters()``,
``console("showServers()")`` and ``await reload(config=None, backends=None)`` (as SIGHUP:
running servers keep their fakes, new ones get fakes from ``backends``).

``config`` is the text of a configuration, or the path of a file (a ``pathlib.Path``, or
a string ending in ``.lua`` without a line break), looked for from the current directory,
then from the test file's directory.

Timeouts follow Trio's clock: with pytest-trio's ``autojump_clock`` fixture a slow
backend, a timeout, a health-check interval or a cache TTL costs no wall time.

Not there yet: Unix socket paths in the configuration (``newNetworkEndpoint``,
``addUnixListeningEndpoint``) are used as written, and there are no fake asynchronous
components: a configuration that talks to one needs its own in the test.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import dns.message
import pytest
import trio

from triodist.backends.server import Server
from triodist.cli import load
from triodist.config.runtime import LuaConfig
from triodist.reload import Reloader
from triodist.server import DNSServer
from triodist.testing.fakebackend import AnswerTable, FakeBackend
from triodist.wire.address import ComboAddress

__all__ = ["Proxy", "Triodist", "triodist"]

#: How long ``Proxy.query`` waits for an answer by default (seconds, on Trio's clock).
QUERY_TIMEOUT = 5.0

BackendSpec = AnswerTable | FakeBackend


class Proxy:
    """A configuration running in-process: queries to it, and what its backends saw."""

    def __init__(
        self,
        launcher: Triodist,
        server: DNSServer,
        lua: LuaConfig,
        address: tuple[str, int],
        backends: Mapping[str, FakeBackend],
        path: Path,
        settings: Mapping[str, Any],
    ) -> None:
        self.launcher = launcher
        self.server = server
        self.lua = lua
        #: Where it listens, UDP and TCP.
        self.address = address
        #: The fake behind each ``newServer``, by the server's name and by its address
        #: string as the configuration wrote it.
        self.backends = dict(backends)
        self.path = path
        self.settings = dict(settings)
        #: The configuration ``reload()`` prepared, for the reloader to take.
        self._prepared: LuaConfig | Exception | None = None
        self.reloader = Reloader(server, self._reloaded, lua)

    def _reloaded(self) -> LuaConfig:
        """The configuration a reload switches to: the one ``reload()`` prepared, else the
        file again (``reloadConfig()`` from Lua or the console), on the same fakes."""
        prepared, self._prepared = self._prepared, None
        if isinstance(prepared, Exception):
            raise prepared
        if prepared is not None:
            return prepared
        fresh = self.launcher.load(self.path, self.settings)
        for server in fresh.api.config.routing.servers:
            fake = self.backends.get(server.name) or self.backends.get(
                server.address.toStringWithPort()
            )
            if fake is None:
                raise ValueError(
                    f"newServer {server.name!r} has no fake backend: reload with proxy.reload()"
                )
            _point(server, fake)
        return fresh

    async def reload(
        self,
        config: str | Path | None = None,
        backends: Mapping[str, BackendSpec] | None = None,
    ) -> None:
        """Reload, as SIGHUP does: the same file again, or ``config``. A server already
        running keeps its fake; a new one gets one from ``backends`` (or a SERVFAIL fake).

        :raises RuntimeError: the reload failed (the message says why); nothing changed.
        """
        path = self.path if config is None else self.launcher.config_path(config)
        fakes = self.backends
        try:
            fresh = self.launcher.load(path, self.settings)
            fakes = await self.launcher.fake_backends(
                fresh.api.config.routing.servers, dict(backends or {}), self.backends
            )
        except Exception as exc:
            # The reloader reports and counts it, as a configuration that fails to load.
            self._prepared = exc
        else:
            self._prepared = fresh
        error = self.reloader.reload()
        self._prepared = None
        if error is not None:
            raise RuntimeError(error)
        self.lua, self.backends, self.path = self.reloader.current, fakes, path

    def backend(self, key: str) -> FakeBackend:
        """The fake behind a ``newServer``, by the server's name or its address string."""
        try:
            return self.backends[key]
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise KeyError(f"no backend {key!r} in this configuration (known: {known})") from None

    def console(self, line: str) -> str:
        """What the console answers to ``line`` (``"showServers()"``), run in the
        configuration's Lua state as a console connection would run it."""
        return self.lua.console_eval(line)

    def counters(self) -> dict[str, int]:
        """The server's counters (dnsdist's ``dumpStats()`` names where they exist)."""
        return dict(self.server.stats)

    async def query(
        self,
        name: str,
        type: str = "A",  # dnsdist's and dig's word for it, shadowing the builtin
        over: Literal["udp", "tcp"] = "udp",
        *,
        timeout: float = QUERY_TIMEOUT,  # noqa: ASYNC109 - silence is an answer
        **edns: Any,
    ) -> dns.message.Message | None:
        """Ask the proxy; its answer, or None when none comes within ``timeout``.

        ``edns``: keyword arguments of ``dns.message.make_query`` (``use_edns=0``,
        ``want_dnssec=True``, ``payload=1232``, ``options=[...]``)."""
        if over not in ("udp", "tcp"):
            raise ValueError(f"over={over!r}: 'udp' or 'tcp'")
        message = dns.message.make_query(name, type, **edns)
        wire = message.to_wire()
        with trio.move_on_after(timeout):
            data = await (_udp if over == "udp" else _tcp)(self.address, wire)
            return None if data is None else dns.message.from_wire(data)
        return None


def _point(server: Server, fake: FakeBackend) -> None:
    """Send ``server``'s queries to ``fake`` (serving)."""
    assert fake.address is not None
    host, port = fake.address
    server.address = ComboAddress.parse(f"{host}:{port}", 53)


async def _udp(address: tuple[str, int], wire: bytes) -> bytes:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(wire)
        while True:
            data = await sock.recv(65535)
            if data[:2] == wire[:2]:
                return data


async def _tcp(address: tuple[str, int], wire: bytes) -> bytes | None:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(len(wire).to_bytes(2, "big") + wire)
        buffer = bytearray()
        while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not chunk:
                return None  # closed without an answer (a drop over TCP)
            buffer += chunk
        return bytes(buffer[2 : 2 + int.from_bytes(buffer[:2], "big")])


class Triodist:
    """What the ``triodist`` fixture gives: starts configurations, stops them at the end.

    :param nursery: where the servers and the fake backends run.
    :param tmp_path: where a configuration given as text is written.
    :param search: directories a relative configuration path is looked for in.
    :param out: where notices for the test's output go.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        tmp_path: Path,
        search: Iterable[Path] = (),
        out: Callable[[], TextIO] = lambda: sys.stdout,
    ) -> None:
        self.nursery = nursery
        self.tmp_path = tmp_path
        self.search = [Path.cwd(), *search]
        self.out = out
        self.started: list[DNSServer] = []
        self._numbers = itertools.count(1)

    def config_path(self, config: str | Path) -> Path:
        """The file of ``config``: a path found, or the text written to a file."""
        if isinstance(config, str) and ("\n" in config or not config.endswith(".lua")):
            path = self.tmp_path / f"config{next(self._numbers)}.lua"
            path.write_text(config)
            return path
        path = Path(config)
        if path.is_absolute():
            return path
        for directory in self.search:
            if (directory / path).is_file():
                return directory / path
        places = ", ".join(str(d) for d in self.search)
        raise FileNotFoundError(f"configuration {str(config)!r} not found (looked in {places})")

    def load(self, path: Path, settings: Mapping[str, Any]) -> LuaConfig:
        """Run the configuration file, on loopback and with ``settings``; no fakes yet."""
        # As ``triodist serve`` loads it, without -l: each listener keeps its options and
        # only its address changes.
        lua = load(str(path), [], [])
        server_config = lua.api.config
        server_config.listens[:] = [
            dataclasses.replace(listen, address="127.0.0.1:0", reuse_port=False)
            for listen in server_config.listens
        ]
        server_config.console.addresses = []
        for key, value in settings.items():
            if not hasattr(server_config.settings, key):
                raise TypeError(f"no setting named {key!r}")
            setattr(server_config.settings, key, value)
        return lua

    async def start(
        self,
        config: str | Path,
        backends: Mapping[str, BackendSpec] | None = None,
        **settings: Any,
    ) -> Proxy:
        """Run ``config`` on loopback with fake backends; see the module documentation."""
        path = self.config_path(config)
        lua = self.load(path, settings)
        fakes = await self.fake_backends(lua.api.config.routing.servers, dict(backends or {}))
        server = DNSServer(lua.api.config)
        bound: list[tuple[str, int]] = await self.nursery.start(server.run)
        self.started.append(server)
        return Proxy(self, server, lua, bound[0], fakes, path, settings)

    async def fake_backends(
        self,
        servers: list[Server],
        specs: dict[str, BackendSpec],
        running: Mapping[str, FakeBackend] | None = None,
    ) -> dict[str, FakeBackend]:
        """Point each server at a fake: a ``running`` one under its name or address
        string, else one started from ``specs`` (a SERVFAIL one when they lack it)."""
        running = running or {}
        fakes: dict[str, FakeBackend] = {}
        for server in servers:
            written = server.address.toStringWithPort()
            keys = [k for k in (server.name, written) if k]
            chosen = next((k for k in keys if k in specs), None)
            kept = next((running[k] for k in keys if k in running), None)
            if chosen is not None:
                spec = specs.pop(chosen)
                fake = spec if isinstance(spec, FakeBackend) else FakeBackend(spec)
            elif kept is not None:
                fake = kept
            else:
                fake = FakeBackend(mode="servfail")
                print(
                    f"triodist: newServer {server.name!r} ({written}) is not in backends=:"
                    " its fake answers SERVFAIL",
                    file=self.out(),
                )
            if fake.address is None:
                fake.server.check_name = server.health.check_name
                await self.nursery.start(fake.server.serve, "127.0.0.1", 0)
            _point(server, fake)
            for key in keys:
                fakes[key] = fake
        if specs:
            raise KeyError(
                f"backends= names no server of the configuration: {', '.join(sorted(specs))}"
            )
        return fakes

    async def aclose(self) -> None:
        """Stop every server started, as a SIGTERM would, without a grace period."""
        for server in self.started:
            server.config.settings.grace_period = 0
            server.request_shutdown()
        for server in self.started:
            await server.wait_stopped()
        self.started.clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``trio`` the coroutine tests that use the fixture, so that the example in the
    module documentation runs as written in a project without pytest-trio's trio_mode."""
    for item in items:
        function = getattr(item, "obj", None)
        if (
            "triodist" in getattr(item, "fixturenames", ())
            and inspect.iscoroutinefunction(function)
            and item.get_closest_marker("trio") is None
        ):
            item.add_marker(pytest.mark.trio)


@pytest.fixture
async def triodist(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Triodist]:
    """Start configurations under test: ``proxy = await triodist.start(config, backends=...)``."""
    launcher = Triodist(nursery, tmp_path, [request.path.parent], out=lambda: sys.stdout)
    yield launcher
    await launcher.aclose()
