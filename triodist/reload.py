"""Reloading the configuration of a running server: SIGHUP and ``reloadConfig()``.

The configuration file is run again, in a fresh Lua state, exactly as at start-up. If
that fails, the error (file and line) is reported and nothing changes. If it succeeds,
the new configuration replaces the running one in one synchronous step, between two
queries (nothing awaits in it), keeping what has a life of its own:

- backends: a new server with the address and name of a running one *is* that server,
  with the new options (weight, order, pools, timeouts, health-check settings...): its
  socket, its queries waiting for replies, its counters and its health state go on
  (one that was ``tcpOnly`` and no longer is gets its UDP sockets now).
  A server the new configuration no longer has is removed once its queries waiting for
  replies are answered or time out; a new one starts as ``newServer`` at run time does;
- packet caches: a pool's new cache takes the entries and counters of the running
  cache of the pool of the same name (unless its keys are made differently:
  ``skipOptions``, ``parseECS``, ``cookieHashing``, payload ranks);
- suspended queries and responses: the registry stays, with the new bound and timeout
  policy; the new configuration's ``getAsynchronousObject`` finds the held objects;
- network listeners: a path listened on before and after keeps its socket (the
  external component notices nothing) and calls the new callback; new paths are bound,
  paths gone are closed; network endpoints are the new configuration's, each with its
  writer (what the old ones still hold is sent until they are collected);
- counters: the server's, the frontends' and the backends' go on.

Rules, pools, policies, settings, the ACL and the Lua state are the new
configuration's. Listening addresses (``setLocal``/``addLocal``) and the console's address
stay as they are until a restart (a warning says so when they differ). A query in
the middle of the old rules when the switch happens finishes with them.

A server that dropped its privileges at start-up (``serve -u/-g``) can no longer bind
what needs root: a new configuration that adds a listening or console address on a
privileged port, or a socket path it may not create, is refused with a message saying
so, and the running configuration stays.

Imports nothing above triodist.server: what loads a configuration is handed in (the
command line's ``load``), and a loaded configuration is read through ``Loaded``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import socket
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import trio

from triodist.asyncproc.listener import ListeningEndpoint, NetworkListener
from triodist.asyncproc.unixpaths import show_path
from triodist.backends.server import Server
from triodist.system import fdlimit
from triodist.system.privileges import (
    PrivilegeError,
    is_permission_error,
    listen_addresses,
    refuse_privileged_binds,
)

if TYPE_CHECKING:
    from triodist.query.settings import Chains
    from triodist.server import BackendTasks, DNSServer, ServerConfig

log = logging.getLogger("triodist.reload")


class ReloadError(Exception):
    """A reload that cannot be done now: the server is not running."""


class Recorded(Protocol):
    """What a configuration asked for (``config.api.ConfigAPI``): its ``ServerConfig``."""

    @property
    def config(self) -> ServerConfig: ...


class Loaded(Protocol):
    """A configuration loaded in its Lua state (``config.runtime.LuaConfig``)."""

    @property
    def api(self) -> Recorded: ...


L = TypeVar("L", bound=Loaded)


class Reloader(Generic[L]):
    """Runs the configuration again and, if it loads, gives it to the running server.

    ``load`` builds a configuration the way start-up did (the same file and command
    line); ``current`` is the configuration serving now.
    """

    def __init__(self, server: DNSServer, load: Callable[[], L], current: L):
        self.server = server
        self.current = current
        self._load = load
        #: Successful reloads and failed attempts since start-up.
        self.reloads = 0
        self.failures = 0
        server.config.reload = self.reload

    def reload(self) -> str | None:
        """Reload now: None when the new configuration serves, else the error (and the
        running configuration is untouched). Nothing raised here stops the server."""
        try:
            fresh = self._load()
            plan = prepare(self.server, fresh.api.config)
        except Exception as exc:  # any failure leaves the server as it was
            return self._failed("Reloading the configuration failed, nothing changed: %s", exc)
        try:
            plan.commit()
        except Exception as exc:  # a bug: reported, and the server goes on
            log.exception("Reloading the configuration failed while switching to it")
            return self._failed("Reloading the configuration failed part-way: %s", exc)
        fresh.api.config.reload = self.reload
        self.current = fresh
        self.reloads += 1
        self.server.stats["config-reloads"] += 1
        config = fresh.api.config
        rules = sum(len(chain) for chain in config.chains.all())
        log.info(
            "Configuration reloaded: %d rules, %d servers, %d pools",
            rules,
            len(config.routing.servers),
            len(config.routing.pools),
        )
        return None

    def _failed(self, message: str, exc: Exception) -> str:
        self.failures += 1
        self.server.stats["config-reload-failures"] += 1
        text = str(exc) or type(exc).__name__
        log.error(message, text)
        return text


def swap(server: DNSServer, new: ServerConfig) -> None:
    """Make ``new`` the running configuration of ``server`` (see the module's text);
    on an error (``OSError``, ``ReloadError``) nothing has changed."""
    prepare(server, new).commit()


def prepare(server: DNSServer, new: ServerConfig) -> Swap:
    """Everything that can fail, done before anything changes: match the servers, bind
    the new listening paths and open the new backends' sockets. On an error what was
    opened is closed again and the running configuration is as it was."""
    old = server.config
    root = server.root
    backends = server.backends
    if root is None or backends is None:
        raise ReloadError("reloadConfig: the server is not running")
    dropped = getattr(server, "dropped", None)
    if dropped is not None:
        # Listening addresses are bound at start-up only, as root: refused here rather
        # than accepted for a restart the operator may believe already happened.
        refuse_privileged_binds(
            listen_addresses(x.address for x in old.listens),
            listen_addresses(x.address for x in new.listens),
            dropped,
        )
        refuse_privileged_binds(old.console.addresses, new.console.addresses, dropped)
    running = list(old.routing.servers)
    kept: list[tuple[Server, Server]] = []
    added: list[Server] = []
    for newer in new.routing.servers:
        match = next((s for s in running if s.same_backend(newer)), None)
        if match is None:
            added.append(newer)
        else:
            running.remove(match)
            kept.append((match, newer))
    try:
        bound = _bind_new_paths(old, new)
    except OSError as exc:
        if dropped is not None and is_permission_error(exc):
            raise PrivilegeError(
                f"{exc}: needs privileges dropped at start (the server runs as {dropped} "
                "since then, -u/-g): give that user the directory, or restart"
            ) from exc
        raise
    opened: list[Server] = []
    #: The UDP sockets of kept servers that had none: ``tcpOnly`` turned off.
    udp: dict[Server, list[socket.socket]] = {}
    try:
        for backend in added:
            backend.open()
            opened.append(backend)
        for match, newer in kept:
            if not match.life.socks and not newer.tcp_only:
                udp[newer] = newer.new_udp_sockets()
        # The new rules' files: a file the running rules write to goes on, appended to.
        new.chains.open_files(old.chains)
    except BaseException:
        new.chains.release_files()  # not close_files: the running server's files stay
        for backend in opened:
            backend.close()
        for socks in udp.values():
            for sock in socks:
                sock.close()
        for endpoint in bound:
            NetworkListener.retire(endpoint)
        raise
    return Swap(server, root, backends, old, new, kept, added, running, bound, udp)


@dataclasses.dataclass
class Swap:
    """A prepared reload: ``commit`` puts it in place, in one synchronous step that
    awaits nothing (queries see the old configuration before it and the new after)."""

    server: DNSServer
    root: trio.Nursery
    #: Starts and stops the backends' tasks (the running server's, handed in by ``prepare``).
    backends: BackendTasks
    old: ServerConfig
    new: ServerConfig
    kept: list[tuple[Server, Server]]
    added: list[Server]
    removed: list[Server]
    bound: list[ListeningEndpoint]
    #: UDP sockets opened for kept servers that had none (``tcpOnly`` turned off).
    udp: dict[Server, list[socket.socket]] = dataclasses.field(default_factory=dict)

    def commit(self) -> None:
        server, old, new = self.server, self.old, self.new
        # A kept server: the new configuration's object takes the running one's life
        # (``Server.adopt``), so that the Lua variables of the new configuration are it;
        # its health checks start again under its new settings.
        for running, newer in self.kept:
            socks = self.udp.get(newer)
            running.adopt(newer, socks)
            self.backends.renamed(running, newer, new_sockets=bool(socks))
        Server.membership_generation += 1
        _keep_caches(old, new)

        # The rings go on, with the new configuration's size.
        old.rings.resize(new.rings.size)
        new.rings = old.rings

        # Suspended objects: one registry, the new configuration's bound and policy.
        registry = old.async_registry
        registry.max_suspended = new.async_registry.max_suspended
        registry.timeout_policy = new.async_registry.timeout_policy
        new.async_registry = registry

        if [dataclasses.astuple(x) for x in new.listens] != [
            dataclasses.astuple(x) for x in old.listens
        ]:
            log.warning("The listening addresses changed: they take effect at the next restart")
        new.listens = old.listens
        _keep_console(old, new)

        # The Lua collector of the new state takes over; the old state is left to Python.
        if new.lua_collector is not None:
            new.lua_collector.take_over()

        # From here on, queries see the new configuration.
        _swap_listeners(old, new, self.bound, self.root)
        # The new endpoints' writers start; the old ones' go on while the old rules can
        # still send (a query in the middle of them), and end once they are collected.
        old.start_endpoint_writer = None
        for endpoint in list(new.network_endpoints):
            endpoint.start_writer(self.root)
        new.start_endpoint_writer = server.start_endpoint_writer
        pipeline = server.pipeline
        pipeline.chains = new.chains
        pipeline.routing = new.routing
        pipeline.settings = new.settings
        for udp in server.udp_frontends:
            udp.settings, udp.acl = new.settings, new.acl
        for tcp in server.tcp_frontends:
            tcp.settings, tcp.acl = new.settings, new.acl
        old.routing.on_change = None
        new.routing.on_change = self.backends.changed
        _close_when_released(old.chains)
        new.stats = server.stats
        server.config = new
        self.root.start_soon(_free_old_configuration)
        budget = fdlimit.fit(
            new.settings.max_tcp_connections, new.routing.servers, listeners=len(new.listens)
        )
        server.tcp_connections.cap = budget.client_cap
        for backend in self.added:
            log.info("Added downstream server %s", backend.getNameWithAddr())
            self.backends.changed(backend, True)  # opened by ``prepare``: cannot fail
        for backend in self.removed:
            log.info("Removed downstream server %s", backend.getNameWithAddr())
            self.backends.changed(backend, False, drain=True)


def _keep_caches(old: ServerConfig, new: ServerConfig) -> None:
    """A pool's new packet cache takes the entries of the running cache of the same pool."""
    for name, pool in new.routing.pools.items():
        before = old.routing.pools.get(name)
        if pool.cache is None or before is None or before.cache is None:
            continue
        if pool.cache is before.cache:
            continue
        if not pool.cache.take_entries(before.cache):
            log.warning(
                "The packet cache of pool '%s' makes its keys differently now: it starts empty",
                name,
            )


#: Seconds after a reload before the collection that frees the old configuration.
FREE_AFTER = 5.0


def _close_when_released(chains: Chains) -> None:
    """Close the old rules' files (LogAction...) once no query runs in them any more: a
    query that was in the middle of them when the reload happened still writes there."""
    closers: list[Callable[[], object]] = [logger.close for logger in chains.loggers()]
    if closers:
        weakref.finalize(chains, _close_all, closers)


def _close_all(closers: list[Callable[[], object]]) -> None:
    for close in closers:
        close()


async def _free_old_configuration() -> None:
    """The old configuration (its Lua state, rules, servers gone) is a reference cycle
    through Lua, which only a full collection frees: one, once the queries that were in
    its rules are done. It pauses the server for as long as the collection takes."""
    await trio.sleep(FREE_AFTER)
    gc.collect()


def _bind_new_paths(old: ServerConfig, new: ServerConfig) -> list[ListeningEndpoint]:
    """Bind the new configuration's listening paths that are not listened on yet; on
    failure none stays bound (``OSError``)."""
    live = {e.path for listener in old.network_listeners for e in listener.endpoints if e.sock}
    bound: list[ListeningEndpoint] = []
    try:
        for listener in new.network_listeners:
            if not listener.started:
                continue
            for endpoint in listener.endpoints:
                if endpoint.path not in live:
                    listener.open_endpoint(endpoint)
                    bound.append(endpoint)
    except BaseException:
        for endpoint in bound:
            NetworkListener.retire(endpoint)
        raise
    return bound


def _swap_listeners(
    old: ServerConfig, new: ServerConfig, bound: list[ListeningEndpoint], root: trio.Nursery
) -> None:
    live: dict[bytes, tuple[NetworkListener, ListeningEndpoint]] = {
        e.path: (listener, e)
        for listener in old.network_listeners
        for e in listener.endpoints
        if e.sock is not None
    }
    for listener in new.network_listeners:
        if not listener.started:
            continue
        for index, endpoint in enumerate(listener.endpoints):
            if endpoint.path in live:
                # The running socket and its receive task stay: the new callback is called.
                _, running = live.pop(endpoint.path)
                running.callback = endpoint.callback
                running.endpoint_id = endpoint.endpoint_id
                running.logged.clear()
                listener.endpoints[index] = running
            elif any(endpoint is b for b in bound):
                root.start_soon(listener.receive_loop, endpoint)
    for _, endpoint in live.values():
        log.info("No longer listening for network messages on %s", show_path(endpoint.path))
        NetworkListener.retire(endpoint)


def _keep_console(old: ServerConfig, new: ServerConfig) -> None:
    """The console keeps listening where it does; its key and ACL are the new ones."""
    old_console: Any = getattr(old, "console", None)
    new_console: Any = getattr(new, "console", None)
    if old_console is None or new_console is None:
        return
    if getattr(old_console, "addresses", None) != getattr(new_console, "addresses", None):
        log.warning("The console's address changed: it takes effect at the next restart")
        new_console.addresses = old_console.addresses
