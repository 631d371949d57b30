"""``newPacketCache``'s options: dnsdist's names and the checks of their values, and
lists given from Lua.

Imports nothing above triodist.cache.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

from triodist.util.luavalues import describe as lua_describe
from triodist.wire.walk import HEADER_LEN

log = logging.getLogger("triodist.cache")


def lua_list(value: Any) -> list[Any]:
    """A list given from Lua: a Python list, a dict ``{1: a, 2: b}`` or a Lua table."""
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    if isinstance(value, Mapping):
        return [value[k] for k in sorted(value, key=lambda k: (not isinstance(k, int), k))]
    items = getattr(value, "items", None)  # a lupa table
    if callable(items) and not isinstance(value, str | bytes):
        pairs = list(items())
        return [v for _, v in sorted(pairs, key=lambda kv: (not isinstance(kv[0], int), kv[0]))]
    raise ValueError(f"expected a list, got {lua_describe(value)}")


def as_int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' must be an integer, got {lua_describe(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"'{name}' must be an integer, got {lua_describe(value)}")
        value = int(value)
    if value < minimum:
        raise ValueError(f"'{name}' must be at least {minimum}, got {value}")
    return int(value)


def as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be a boolean, got {lua_describe(value)}")
    return value


def as_codes(value: Any, name: str) -> list[int]:
    try:
        items = lua_list(value)
    except ValueError:
        raise ValueError(
            f"'{name}' must be a list of integers, got {lua_describe(value)}"
        ) from None
    return [as_int(item, name) for item in items]


class Kind(enum.Enum):
    """What an option's value must be."""

    INT = enum.auto()
    BOOL = enum.auto()
    #: A list of integers (option codes, payload sizes).
    CODES = enum.auto()


# newPacketCache's options: name -> (keyword of PacketCache.__init__, kind).
LUA_OPTIONS: dict[str, tuple[str, Kind]] = {
    "maxTTL": ("max_ttl", Kind.INT),
    "minTTL": ("min_ttl", Kind.INT),
    "temporaryFailureTTL": ("temporary_failure_ttl", Kind.INT),
    "maxNegativeTTL": ("max_negative_ttl", Kind.INT),
    "staleTTL": ("stale_ttl", Kind.INT),
    "dontAge": ("dont_age", Kind.BOOL),
    "keepStaleData": ("keep_stale_data", Kind.BOOL),
    "numberOfShards": ("number_of_shards", Kind.INT),
    "deferrableInsertLock": ("deferrable_insert_lock", Kind.BOOL),
    "skipOptions": ("skip_options", Kind.CODES),
    "cookieHashing": ("cookie_hashing", Kind.BOOL),
    "maximumEntrySize": ("maximum_entry_size", Kind.INT),
    "truncatedTTL": ("truncated_ttl", Kind.INT),
    "shuffle": ("shuffle", Kind.BOOL),
    "parseECS": ("parse_ecs", Kind.BOOL),
    "ecsParsing": ("parse_ecs", Kind.BOOL),  # the name before dnsdist 1.4
    "payloadRanks": ("payload_ranks", Kind.CODES),
}


def packet_cache_arguments(
    max_entries: Any, options: Mapping[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    """``newPacketCache(maxEntries, {options})`` as ``PacketCache``'s arguments: the
    number of entries and the keywords, with dnsdist's option names turned into them.

    A bad value or an unknown option raises ``ValueError`` naming it.  As in
    dnsdist, the number of shards defaults to 20 and never exceeds the number of
    entries, and a ``maximumEntrySize`` smaller than a DNS header is ignored.
    """
    try:
        entries = as_int(max_entries, "maxEntries", minimum=1)
    except ValueError:
        raise ValueError(
            "the maximum number of entries must be a positive integer, "
            f"got {lua_describe(max_entries)}"
        ) from None
    kwargs: dict[str, Any] = {"number_of_shards": 20}
    for name, value in (options or {}).items():
        spec = LUA_OPTIONS.get(str(name))
        if spec is None:
            raise ValueError(f"unknown option '{name}'")
        keyword, kind = spec
        if kind is Kind.INT:
            kwargs[keyword] = as_int(value, str(name))
        elif kind is Kind.BOOL:
            kwargs[keyword] = as_bool(value, str(name))
        else:
            kwargs[keyword] = as_codes(value, str(name))
    size = kwargs.get("maximum_entry_size")
    if size is not None and size < HEADER_LEN:
        log.warning(
            "newPacketCache: maximumEntrySize %d is smaller than a DNS header, using 4096",
            size,
        )
        del kwargs["maximum_entry_size"]
    if kwargs["number_of_shards"] > entries:
        kwargs["number_of_shards"] = entries
    return entries, kwargs
