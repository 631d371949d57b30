"""What a LuaFFIAction costs per call, beside a LuaAction that does the same.

    python -m bench.ffi_cost            # best of 5 repeats of 20,000 calls each

Three rules, called directly (no sockets) inside ``trio.run`` on one query: a
``LuaAction`` reading ``dq.qtype``, a ``LuaFFIAction`` reading it with
``dnsdist_ffi_dnsquestion_get_qtype`` and one reading the name with
``dnsdist_ffi_dnsquestion_get_qname_raw`` (two ``ffi.new`` per call, as dnsdist's
configurations write it, and a buffer kept for the call).  The best repeat is the
one least disturbed by whatever else the machine runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import dns.message
import trio

from triodist.config.runtime import load_config
from triodist.wire.message import DNSQuestion

CONFIG = """
local ffi = require("ffi")
local C = ffi.C
addAction("a.", LuaAction(function(dq)
  if dq.qtype == 1 then return DNSAction.None end
  return DNSAction.None
end))
addAction("b.", LuaFFIAction(function(dq)
  if C.dnsdist_ffi_dnsquestion_get_qtype(dq) == 1 then return DNSAction.None end
  return DNSAction.None
end))
addAction("c.", LuaFFIAction(function(dq)
  local name, size = ffi.new("const char *[1]"), ffi.new("size_t[1]")
  C.dnsdist_ffi_dnsquestion_get_qname_raw(dq, name, size)
  return DNSAction.None
end))
"""
NAMES = (
    "LuaAction, dq.qtype",
    "LuaFFIAction, dnsdist_ffi_dnsquestion_get_qtype",
    "LuaFFIAction, dnsdist_ffi_dnsquestion_get_qname_raw",
)
CALLS = 20_000
REPEATS = 5


async def measure() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cost.lua"
        path.write_text(CONFIG)
        rules = load_config(path).api.config.chains.queries.rules
    wire = dns.message.make_query("www.example.org.", "A").to_wire()
    dq = DNSQuestion(wire, ("127.0.0.1", 5300), ("127.0.0.1", 53))
    for rule, name in zip(rules, NAMES, strict=True):
        action = rule.action
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(CALLS):
                action(dq)
            best = min(best, time.perf_counter() - start)
        print(f"{name}: {best / CALLS * 1e6:.1f} µs per call")


if __name__ == "__main__":
    trio.run(measure)
