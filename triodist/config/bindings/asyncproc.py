"""Asynchronous processing: the held queries and responses (``getAsynchronousObject``,
the bound and the timeout policy) and the unix sockets to external components
(``newNetworkEndpoint``, ``newNetworkListener``).

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any

from triodist.asyncproc.endpoint import NetworkEndpoint
from triodist.asyncproc.listener import NetworkListener
from triodist.asyncproc.registry import AsynchronousObject
from triodist.config.bindings.args import ConfigError, non_negative, whole
from triodist.config.bindings.base import Binding, lua_function
from triodist.util.luavalues import describe


class AsyncBindings(Binding):
    """The suspended objects' registry and the network endpoints and listeners."""

    @lua_function
    def getAsynchronousObject(self, async_id: Any, query_id: Any) -> AsynchronousObject:
        # A missing key is a Lua error naming it (raised by the registry).
        return self.config.async_registry.take(async_id, query_id)

    @lua_function
    def setAsyncTimeoutPolicy(self, policy: Any) -> None:
        """What a suspended object that times out does: "continue" (dnsdist's behaviour,
        the default), "servfail" or "drop" (fail closed)."""
        value = str(policy).lower()
        if value not in ("continue", "servfail", "drop"):
            raise ConfigError(
                "setAsyncTimeoutPolicy: expected 'continue', 'servfail' or 'drop', "
                f"got {describe(policy)}"
            )
        self.config.async_registry.timeout_policy = value  # type: ignore[assignment]

    @lua_function
    def setMaxSuspended(self, count: Any) -> None:
        """The most queries and responses held at once; over it ``suspend`` returns false."""
        self.config.async_registry.max_suspended = int(non_negative(count, "setMaxSuspended"))

    @lua_function
    def showSuspended(self) -> None:
        print(self.config.async_registry.show(), file=self.out)

    # --- network endpoints ------------------------------------------------------------

    @lua_function
    def newNetworkEndpoint(self, path: Any) -> NetworkEndpoint:
        """A unix datagram socket connected to ``path``; a missing peer gives an endpoint
        whose ``isValid()`` is false and whose ``send()`` returns false.  The server runs
        its writer (what the peer cannot take at once waits in a bounded queue)."""
        config = self.config
        try:
            endpoint = NetworkEndpoint(
                path, owner=config, bound=config.endpoint_queue, remap=config.unix_paths
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        config.network_endpoints.add(endpoint)
        if config.start_endpoint_writer is not None:  # made while serving
            config.start_endpoint_writer(endpoint)
        return endpoint

    @lua_function
    def setMaxNetworkEndpointQueue(self, messages: Any, size: Any = None) -> None:
        """What each network endpoint keeps for a component that has not read yet
        (triodist's own): at most ``messages`` messages and ``size`` bytes (defaults
        10,000 and 16 MiB); over it ``send()`` returns false (``async-send-overflows``)."""
        bound = self.config.endpoint_queue
        bound.messages = whole(messages, "setMaxNetworkEndpointQueue", 0)
        if size is not None:
            bound.bytes = whole(size, "setMaxNetworkEndpointQueue", 0)

    @lua_function
    def newNetworkListener(self) -> NetworkListener:
        """Listening unix datagram sockets; the server runs the started ones."""
        # Counts into the server's stats; paths moved as the configuration's are.
        listener = NetworkListener(self.config, self.config.unix_paths)
        self.config.network_listeners.append(listener)
        return listener
