"""The packet cache: ``newPacketCache`` (both of dnsdist's forms) and the cleaning and
stale-entry settings.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from typing import Any

import trio

from triodist.cache.packetcache import PacketCache
from triodist.config.bindings.args import ConfigError, non_negative, option_table
from triodist.config.bindings.base import Binding, lua_function

#: The positional parameters of dnsdist < 1.4's newPacketCache, after maxEntries.
_PACKET_CACHE_POSITIONAL = (
    "maxTTL",
    "minTTL",
    "temporaryFailureTTL",
    "staleTTL",
    "dontAge",
    "numberOfShards",
    "deferrableInsertLock",
    "maxNegativeTTL",
    "parseECS",
)


class CacheBindings(Binding):
    """Packet caches (a pool takes one with ``pool:setCache``) and their settings."""

    @lua_function
    def newPacketCache(self, max_entries: Any, *rest: Any) -> PacketCache:
        if rest and not isinstance(rest[0], dict | list | type(None)):
            # dnsdist < 1.4: newPacketCache(maxEntries, maxTTL, minTTL, temporaryFailureTTL,
            # staleTTL, dontAge, numberOfShards, deferrableInsertLock, maxNegativeTTL, parseECS)
            opts = {
                name: value
                for name, value in zip(_PACKET_CACHE_POSITIONAL, rest, strict=False)
                if value is not None
            }
        else:
            opts = option_table(rest[0] if rest else None, "newPacketCache")
        try:
            cache = PacketCache.from_lua(max_entries, opts)
        except ValueError as exc:
            raise ConfigError(f"newPacketCache: {exc}") from exc
        # purgeExpired(), dump() and the like called from Lua use the server's clock.
        cache.clock = _server_clock
        return cache

    @lua_function
    def setStaleCacheEntriesTTL(self, ttl: Any) -> None:
        self.config.settings.stale_cache_entries_ttl = non_negative(ttl, "setStaleCacheEntriesTTL")

    @lua_function
    def setCacheCleaningDelay(self, delay: Any) -> None:
        self.config.settings.cache_cleaning_delay = max(
            1.0, non_negative(delay, "setCacheCleaningDelay")
        )

    @lua_function
    def setCacheCleaningPercentage(self, percentage: Any) -> None:
        value = non_negative(percentage, "setCacheCleaningPercentage")
        self.config.settings.cache_cleaning_percentage = min(100.0, value)


def _server_clock() -> float:
    """Trio's clock while serving; before (``check-config``) the cache is empty anyway."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0
