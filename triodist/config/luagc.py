"""Lua's garbage collector while serving: stopped, and run whole at safe points.

lupa hands a Python object to Lua as a userdata, remembered by the object's
address in a registry table with weak values, and given back when the same object
crosses again (``dq`` passed to a ``LuaRule`` and then to a ``LuaAction``,
``obj:getDQ()``, a server returned by ``getServer``).  With Lua's incremental
collector, a userdata that has become garbage is first cleared from that table
and only later finalised; a Python object crossing again in between can be given
another object's userdata, or one whose Python object has been freed.  Under
LuaJIT this shows as a Lua function receiving a ``ComboAddress``, a ``DNSName``
or a function instead of its ``dq``: about one query in 100,000 with two Lua
rules on it, far more with an eager collector (upstream: lupa issue #293;
``tests/test_luagc.py`` reproduces it in under a second).

A full collection clears and finalises in one step, with no Lua code running
between the two.  So while the server runs, the incremental collector is stopped
and ``LuaCollector.run`` makes full collections, between queries, every
``INTERVAL`` seconds when Lua has allocated anything since the last one.  That
also frees the queries Lua was keeping alive (each crossing holds its Python
object until the userdata is finalised) within ``INTERVAL`` instead of whenever
the incremental collector gets to them.

A configuration's own ``collectgarbage`` keeps working: "count" and the tuning
options as before, while "collect", "step", "restart" and the mode switches make a
full collection and leave the collector stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

log = logging.getLogger("triodist.config")

#: Seconds between two looks at Lua's memory (a full collection when it grew).
INTERVAL = 0.1
#: Growth, in KiB, below which a look makes no collection (a collection of an
#: unchanged heap would only cost time).
MIN_GROWTH_KB = 1.0

_FUNCTIONS = """
local collectgarbage = collectgarbage
local function collect()
  collectgarbage("collect")
  -- A full collection restarts the incremental collector (LuaJIT sets a new
  -- threshold): stop it again at once.
  collectgarbage("stop")
  return collectgarbage("count")
end
local function count()
  return collectgarbage("count")
end
local guarded = {
  collect = true, step = true, restart = true, incremental = true, generational = true,
}
local function take_over()
  _G.collectgarbage = function(opt, ...)
    if guarded[opt] then
      collect()
      if opt == "step" then return true end
      return 0
    end
    return collectgarbage(opt, ...)
  end
  return collect()
end
return collect, count, take_over
"""


class LuaCollector:
    """Full collections of one Lua state at safe points (see the module's text)."""

    def __init__(self, runtime: Any) -> None:
        self._collect, self._count, self._take_over = runtime.execute(_FUNCTIONS)
        self.active = False
        #: Full collections made while serving, and Lua's memory after the last (KiB).
        self.collections = 0
        self.after_last_kb = 0.0

    def take_over(self) -> None:
        """Stop the incremental collector; from now on only ``collect`` runs it."""
        if not self.active:
            self.after_last_kb = float(self._take_over())
            self.active = True

    def collect(self) -> None:
        """One full collection (clearing and finalising together), collector stopped after."""
        self.after_last_kb = float(self._collect())
        self.collections += 1

    def memory_kb(self) -> float:
        return float(self._count())

    async def run(self, interval: float = INTERVAL) -> None:
        """Take over the collector and collect whenever Lua allocated since the last look."""
        self.take_over()
        while True:
            await trio.sleep(interval)
            try:
                if self.memory_kb() - self.after_last_kb >= MIN_GROWTH_KB:
                    self.collect()
            except Exception as exc:  # a finaliser's error must not stop the server
                log.warning("Lua garbage collection failed: %s", exc)
