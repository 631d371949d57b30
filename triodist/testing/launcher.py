"""What the ``triodist`` fixture runs: a configuration in-process, on loopback, with fake
backends and fake components (the pytest plugin, ``plugin.py``, documents it for users).

:class:`Triodist` starts configurations and stops them at the end of the test;
:class:`Proxy` is one running: queries to it, its fakes, its counters, its console.

Imported by the fixture when a test first asks for it, not by the plugin module: a test
run that never uses the fixture does not pay for the server's imports.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import dns.message
import trio

from triodist.backends.server import Server
from triodist.config.api import ConfigAPI
from triodist.config.runtime import LuaConfig
from triodist.reload import Reloader
from triodist.server import DNSServer, Listen
from triodist.testing.fakebackend import AnswerTable, FakeBackend
from triodist.testing.fakecomponent import Answer, FakeComponent
from triodist.testing.sockets import SocketPaths, as_path_bytes
from triodist.wire.address import ComboAddress

__all__ = ["BackendSpec", "ComponentSpec", "Proxy", "Triodist"]

#: How long ``Proxy.query`` waits for an answer by default (seconds, on Trio's clock).
QUERY_TIMEOUT = 5.0

BackendSpec = AnswerTable | FakeBackend
ComponentSpec = Answer | FakeComponent


class Proxy:
    """A configuration running in-process: queries to it, and what its fakes saw."""

    def __init__(
        self,
        launcher: Triodist,
        server: DNSServer,
        lua: LuaConfig,
        address: tuple[str, int],
        backends: Mapping[str, FakeBackend],
        path: Path,
        settings: Mapping[str, Any],
        sockets: SocketPaths,
        components: Mapping[bytes, FakeComponent],
    ) -> None:
        self.launcher = launcher
        #: Where its unix socket paths were moved (the same over reloads).
        self.sockets = sockets
        #: The fake component behind each ``newNetworkEndpoint``, by its path as written.
        self.components = dict(components)
        self.server = server
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

    @property
    def lua(self) -> LuaConfig:
        """The configuration running now: the last reload's, however it was asked for
        (``reload()``, or ``reloadConfig()`` at the console)."""
        return self.reloader.current

    def _reloaded(self) -> LuaConfig:
        """The configuration a reload switches to: the one ``reload()`` prepared, else the
        file again (``reloadConfig()`` from Lua or the console), on the same fakes."""
        prepared, self._prepared = self._prepared, None
        if isinstance(prepared, Exception):
            raise prepared
        if prepared is not None:
            return prepared
        fresh = self.launcher.load(self.path, self.settings, self.sockets)
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
        """Reload, as SIGHUP does: the same file again, or ``config``. A server
        ``backends`` names gets that fake; another one already running keeps its own; a
        new one not named gets a SERVFAIL fake.

        :raises RuntimeError: the reload failed (the message says why); nothing changed.
        """
        path = self.path if config is None else self.launcher.config_path(config)
        fakes = self.backends
        try:
            fresh = self.launcher.load(path, self.settings, self.sockets)
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
        self.backends, self.path = fakes, path

    def backend(self, key: str) -> FakeBackend:
        """The fake behind a ``newServer``, by the server's name or its address string."""
        try:
            return self.backends[_address_key(key)]
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise KeyError(f"no backend {key!r} in this configuration (known: {known})") from None

    def component(self, path: str | bytes) -> FakeComponent:
        """The fake behind a ``newNetworkEndpoint``, by its path as the configuration
        writes it."""
        try:
            return self.components[as_path_bytes(path)]
        except KeyError:
            known = ", ".join(repr(p.decode("latin-1")) for p in self.components) or "none"
            raise KeyError(f"no component {path!r} in this test (known: {known})") from None

    def socket_path(self, path: str | bytes) -> str:
        """Where a unix socket path of the configuration (as written) is, in this test."""
        written = as_path_bytes(path)
        try:
            return self.sockets.moved[written].decode("latin-1")
        except KeyError:
            known = ", ".join(repr(p.decode("latin-1")) for p in self.sockets.moved) or "none"
            raise KeyError(
                f"the configuration names no unix path {path!r} (known: {known})"
            ) from None

    def console(self, line: str) -> str:
        """What the console answers to ``line`` (``"showServers()"``), run in the
        configuration's Lua state as a console connection would run it.

        :raises ValueError: the line added a server (``newServer``): it has no fake, so it
            is removed again before any query or health check can reach its address."""
        answer = self.lua.console_eval(line)
        faked = {_fake_address(fake) for fake in self.backends.values()}
        routing = self.lua.api.config.routing
        # No checkpoint since the line ran: nothing was sent to a stray server yet.
        strays = [server for server in routing.servers if server.address not in faked]
        for server in strays:
            routing.remove_server(server)
        if strays:
            added = ", ".join(f"{s.name!r} ({s.address.toStringWithPort()})" for s in strays)
            raise ValueError(
                f"proxy.console({line!r}) added newServer {added}, which has no fake backend "
                "and was removed: add it to the configuration and use proxy.reload(config, "
                "backends=...)"
            )
        return answer

    def counters(self) -> Counter[str]:
        """A copy of the server's counters (dnsdist's ``dumpStats()`` names where they
        exist); a counter that never counted reads 0."""
        return Counter(self.server.stats)

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


def _fake_address(fake: FakeBackend) -> ComboAddress:
    """Where a serving fake listens, as a server's address."""
    assert fake.address is not None
    host, port = fake.address
    return ComboAddress.parse(f"{host}:{port}", 53)


def _point(server: Server, fake: FakeBackend) -> None:
    """Send ``server``'s queries to ``fake`` (serving)."""
    server.address = _fake_address(fake)


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

    :param nursery: where the servers, the fake backends and the fake components run.
    :param tmp_path: where a configuration given as text is written, and where the unix
        sockets of each configuration go (``sockets1/``, ``sockets2/``...).
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
        self.search = list(dict.fromkeys([Path.cwd(), *search]))  # each once
        self.out = out
        self.started: list[DNSServer] = []
        #: Where each configuration started has its unix sockets.
        self.sockets: list[SocketPaths] = []
        self._numbers = itertools.count(1)
        self._socket_numbers = itertools.count(1)

    def config_path(self, config: str | Path) -> Path:
        """The file of ``config``: a path found, or the text written to a file.

        A string is a file's name when it has no line break and either names a file found
        or has a path's shape (``rules.lua``, ``dnsdist.conf``, ``conf/rules``): then not
        finding it is an error, not Lua to run. Else it is the configuration's text."""
        found = None if isinstance(config, str) and "\n" in config else self._find(Path(config))
        if found is not None:
            return found
        if isinstance(config, str) and ("\n" in config or not _is_path_like(config)):
            path = self.tmp_path / f"config{next(self._numbers)}.lua"
            path.write_text(config)
            return path
        places = ", ".join(str(d) for d in self.search)
        raise FileNotFoundError(f"configuration {str(config)!r} not found (looked in {places})")

    def _find(self, path: Path) -> Path | None:
        candidates = [path] if path.is_absolute() else [d / path for d in self.search]
        return next((c for c in candidates if c.is_file()), None)

    def load(self, path: Path, settings: Mapping[str, Any], sockets: SocketPaths) -> LuaConfig:
        """Run the configuration file, on loopback, its unix socket paths moved by
        ``sockets``, with ``settings``; no fakes yet."""
        # As ``triodist serve`` loads it (``cli.load``) without -l, the paths moved before
        # the Lua runs: each listener keeps its options and only its address changes.
        api = ConfigAPI()
        api.config.unix_paths = sockets
        lua = LuaConfig(api)
        lua.run_file(str(path))
        server_config = lua.api.config
        if not server_config.listens:
            server_config.listens.append(Listen("127.0.0.1:53"))
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
        components: Mapping[str | bytes, ComponentSpec] | None = None,
        **settings: Any,
    ) -> Proxy:
        """Run ``config`` on loopback with fake backends and components; see the plugin's
        documentation (``plugin.py``)."""
        path = self.config_path(config)
        sockets = SocketPaths(self.tmp_path / f"sockets{next(self._socket_numbers)}")
        self.sockets.append(sockets)
        lua = self.load(path, settings, sockets)
        fakes = await self.fake_backends(lua.api.config.routing.servers, dict(backends or {}))
        fake_components = await self.fake_components(lua, sockets, components or {})
        server = DNSServer(lua.api.config)
        bound: list[tuple[str, int]] = await self.nursery.start(server.run)
        self.started.append(server)
        return Proxy(self, server, lua, bound[0], fakes, path, settings, sockets, fake_components)

    async def fake_components(
        self, lua: LuaConfig, sockets: SocketPaths, specs: Mapping[str | bytes, ComponentSpec]
    ) -> dict[bytes, FakeComponent]:
        """Start a fake component on each endpoint path ``specs`` names (as the
        configuration writes it), answering to the configuration's listening endpoint."""
        config = lua.api.config
        endpoints = {
            written
            for written in (sockets.written(e.path) for e in config.network_endpoints)
            if written is not None
        }
        listening = [
            written
            for listener in config.network_listeners
            if listener.started
            for written in (sockets.written(e.path) for e in listener.endpoints)
            if written is not None
        ]
        started: dict[bytes, FakeComponent] = {}
        for key, spec in specs.items():
            written = as_path_bytes(key)
            if written not in endpoints:
                known = ", ".join(sorted(repr(p.decode("latin-1")) for p in endpoints)) or "none"
                raise KeyError(
                    f"components= names {key!r}, which is no newNetworkEndpoint path of the "
                    f"configuration (known: {known})"
                )
            component = spec if isinstance(spec, FakeComponent) else FakeComponent(spec)
            reply = _reply_path(component, listening)
            await self.nursery.start(
                component.serve,
                sockets.moved[written],
                None if reply is None else sockets.moved[reply],
            )
            started[written] = component
        for written in sorted(endpoints - started.keys()):
            print(
                f"triodist: newNetworkEndpoint({written.decode('latin-1')!r}) is not in"
                " components=: nothing answers there",
                file=self.out(),
            )
        return started

    async def fake_backends(
        self,
        servers: list[Server],
        specs: dict[str, BackendSpec],
        running: Mapping[str, FakeBackend] | None = None,
    ) -> dict[str, FakeBackend]:
        """Point each server at a fake: a ``running`` one under its name or address
        string, else one started from ``specs`` (a SERVFAIL one when they lack it)."""
        running = running or {}
        # An address key is found however it is spelled ("192.0.2.1", "192.0.2.1:53"),
        # as the configuration may write it either way.
        wanted = {_address_key(key): key for key in specs}
        # One fake per key: servers that share a name (or an address) share its fake.
        made: dict[str, FakeBackend] = {}
        fakes: dict[str, FakeBackend] = {}
        for server in servers:
            written = server.address.toStringWithPort()
            keys = [k for k in (server.name, written) if k]
            chosen = next((wanted[k] for k in keys if k in wanted), None)
            kept = next((running[k] for k in keys if k in running), None)
            if chosen is not None:
                if chosen not in made:
                    spec = specs[chosen]
                    made[chosen] = spec if isinstance(spec, FakeBackend) else _fake(chosen, spec)
                fake = made[chosen]
            elif kept is not None:
                fake = kept
            else:
                fake = FakeBackend(mode="servfail")
                # A server with no name is named by its address: say it once.
                known = repr(server.name)
                if server.name != written:
                    known += f" ({written})"
                print(
                    f"triodist: newServer {known} is not in backends=: its fake answers SERVFAIL",
                    file=self.out(),
                )
            if fake.address is None:
                fake.server.check_name = server.health.check_name
                await self.nursery.start(fake.server.serve, "127.0.0.1", 0)
            _point(server, fake)
            for key in keys:
                fakes[key] = fake
        unused = sorted(specs.keys() - made.keys())
        if unused:
            known = ", ".join(
                sorted({k for s in servers for k in (s.name, s.address.toStringWithPort()) if k})
            )
            raise KeyError(
                f"backends= names no server of the configuration: {', '.join(unused)}"
                f" (its servers: {known or 'none'})"
            )
        return fakes

    async def aclose(self) -> None:
        """Stop every server started, as a SIGTERM would, without a grace period; then
        remove the short socket directories made for them."""
        try:
            for server in self.started:
                server.config.settings.grace_period = 0
                server.request_shutdown()
            for server in self.started:
                await server.wait_stopped()
            self.started.clear()
        finally:
            for sockets in self.sockets:
                sockets.remove()


#: A string of these characters only, with a dot or a slash, is a file's name: no Lua
#: statement has that shape (each needs a call's parentheses or an assignment's "=").
_PATH_SHAPE = re.compile(r"[\w.~+@-]*[./][\w.~+@/-]*")


def _is_path_like(text: str) -> bool:
    return text.endswith((".lua", ".conf")) or _PATH_SHAPE.fullmatch(text) is not None


def _address_key(key: str) -> str:
    """``key`` as the server's address string, when it is an address (``"192.0.2.1"``:
    ``"192.0.2.1:53"``); else ``key`` itself (a server's name)."""
    try:
        return ComboAddress.parse(key, 53).toStringWithPort()
    except ValueError:
        return key


def _fake(key: str, spec: object) -> FakeBackend:
    """A fake backend answering from the table ``spec``, which ``backends[key]`` gives."""
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"backends[{key!r}] is {spec!r}: an answer table (a dict, name -> answer) or a "
            f"FakeBackend, such as {{{key!r}: {{'www.example.org.': '192.0.2.10'}}}}"
        )
    return FakeBackend(spec)


def _reply_path(component: FakeComponent, listening: list[bytes]) -> bytes | None:
    """The listening endpoint ``component`` answers to, as written: the one it names, or
    the configuration's only one (None when there is none: it then cannot answer)."""
    if component.reply_to is not None:
        wanted = as_path_bytes(component.reply_to)
        if wanted not in listening:
            known = ", ".join(repr(p.decode("latin-1")) for p in listening) or "none"
            raise KeyError(
                f"reply_to={component.reply_to!r} is no started listening endpoint of the "
                f"configuration (known: {known})"
            )
        return wanted
    if len(listening) > 1:
        known = ", ".join(repr(p.decode("latin-1")) for p in listening)
        raise ValueError(
            f"the configuration listens on several paths ({known}): say which one the "
            "component answers to, FakeComponent(answer, reply_to=path)"
        )
    return listening[0] if listening else None
