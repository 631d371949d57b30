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
and ``LuaCollector.run`` makes full collections between queries: it looks every
``INTERVAL`` seconds and collects when Lua's heap grew by a quarter of what the last
collection left (64 KiB at least).  That
also frees the Python objects Lua was keeping alive (each crossing holds its
object until the userdata is finalised) soon after their use.  The cost: a full
collection pauses the server for as long as it takes to walk Lua's heap (~10 ms per
MiB), so a configuration that keeps hundreds of MiB in Lua tables sees pauses;
within one Lua call (``maintenance()``, a heavy rule) nothing is collected.

A configuration's own ``collectgarbage`` keeps working: "count" and the tuning
options as before, while "collect" (or no option), "step", "restart" and the mode
switches make a full collection and leave the collector stopped.

The server drives it (``server.LuaCollection``) from its root nursery. Imports nothing
above triodist.config.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from triodist.server import LUA_COLLECTION_INTERVAL

log = logging.getLogger("triodist.config")

#: Seconds between two looks at Lua's memory (a full collection when it grew enough):
#: the server's, which looks while serving.
INTERVAL = LUA_COLLECTION_INTERVAL
#: A look makes a full collection when Lua's heap grew by this many KiB since the last
#: one, or by ``GROWTH_SHARE`` of what the last one left, whichever is larger.  A full
#: collection walks everything Lua keeps (~10 ms per MiB with LuaJIT), so a large heap
#: is collected only when its garbage is a fair share of it, as Lua's own collector does.
MIN_GROWTH_KB = 64.0
GROWTH_SHARE = 0.25
#: A full collection slower than this is logged once: the configuration keeps much data
#: in Lua tables, and each collection pauses the server for that long.
SLOW_COLLECTION = 0.05

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
  -- Stopped again on every look: a reference to the original function kept by the
  -- configuration before serving could have restarted the incremental collector.
  collectgarbage("stop")
  return collectgarbage("count")
end
local guarded = {
  collect = true, step = true, restart = true, incremental = true, generational = true,
}
local function take_over()
  _G.collectgarbage = function(opt, ...)
    if opt == nil or guarded[opt] then
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
        self._warned_slow = False

    def take_over(self) -> None:
        """Stop the incremental collector; from now on only ``collect`` runs it."""
        if not self.active:
            self.after_last_kb = float(self._take_over())
            self.active = True

    def collect(self) -> None:
        """One full collection (clearing and finalising together), collector stopped after."""
        started = time.perf_counter()
        self.after_last_kb = float(self._collect())
        self.collections += 1
        took = time.perf_counter() - started
        if took > SLOW_COLLECTION and not self._warned_slow:
            self._warned_slow = True
            log.warning(
                "A full Lua garbage collection took %.0f ms (Lua heap %.1f MiB): large data "
                "is better kept in SuffixMatchNode, NetmaskGroup or key-value stores than in "
                "Lua tables (bench/reliability.md, Lua)",
                took * 1000,
                self.after_last_kb / 1024,
            )

    def due(self) -> bool:
        """Whether Lua's garbage since the last collection warrants a full one."""
        grown = self.memory_kb() - self.after_last_kb
        return grown >= max(MIN_GROWTH_KB, self.after_last_kb * GROWTH_SHARE)

    def memory_kb(self) -> float:
        return float(self._count())

    def tick(self) -> None:
        """One look: a full collection if it is due; an error is logged, never raised."""
        try:
            if self.due():
                self.collect()
        except Exception as exc:  # a finaliser's error must not stop the server
            log.warning("Lua garbage collection failed: %s", exc)

    async def run(self, interval: float = INTERVAL) -> None:
        """Take over the collector and collect whenever Lua allocated since the last look."""
        self.take_over()
        while True:
            await trio.sleep(interval)
            self.tick()
