"""The server's counters as a Lua table: ``getStatisticsCounters()``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

from triodist.config.bindings.base import Binding, lua_function
from triodist.ops.counters import statistics_counters


class StatisticsBindings(Binding):
    """The counters of the server a configuration runs in, for Lua to read."""

    @lua_function
    def getStatisticsCounters(self) -> dict[str, int]:
        """The server's counters by name, as they are now (dnsdist's, and triodist's own)."""
        return statistics_counters(self.config.stats or {})
