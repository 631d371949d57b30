"""dnsdist's C interface for LuaJIT's FFI: ``require("ffi")`` in a configuration, the
``dnsdist_ffi_*`` functions, and what runs LuaFFI functions.

The functions themselves are Lua (``lua/ffi.lua``): they turn FFI pointers and arrays
into Lua values and back, and read the query through its view (``rules/luaview.py``).
What Lua cannot read from the view, ``FFIHost`` reads in Python: addresses as bytes,
the EDNS options, the tags, the raw answers.  ``install`` loads the Lua side into a
configuration's Lua state (LuaJIT only: Lua 5.4 has no FFI) and returns ``LuaFFI``,
the runners the rules and policies call.

Imports nothing above triodist.config; it is given the Lua runtime, never imports lupa.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from triodist.backends.pools import ServerPolicy, burtle_ci
from triodist.backends.server import Server
from triodist.rules.luaview import LuaView, call_with_view
from triodist.wire import build
from triodist.wire.message import DNSQuestion
from triodist.wire.walk import find_opt

log = logging.getLogger("triodist.config")

FFI_LUA = Path(__file__).resolve().parent.parent / "lua" / "ffi.lua"
_U16 = struct.Struct("!H")


def _query(view: Any) -> DNSQuestion:
    """The query a view shows (the Lua side has checked it is the call's own)."""
    target = view.target if isinstance(view, LuaView) else view
    if not isinstance(target, DNSQuestion):
        raise TypeError("expected the dq given to the LuaFFI function running now")
    return target


def edns_options(data: bytes | bytearray, question_end: int) -> list[tuple[int, bytes]]:
    """The options of the message's OPT record, ordered by option code and, for one
    code, as they come (dnsdist's order); [] without OPT.  An option running past its
    record ends the list there: the bytes are the client's."""
    opt = find_opt(data, question_end)
    if opt is None or data[opt[0]] != 0:
        return []
    start = opt[0] + 11  # root owner, type, class, TTL, RDLENGTH
    end = min(opt[1], len(data))
    found: list[tuple[int, bytes]] = []
    pos = start
    while pos + 4 <= end:
        code, length = _U16.unpack_from(data, pos)[0], _U16.unpack_from(data, pos + 2)[0]
        if pos + 4 + length > end:
            break
        found.append((code, bytes(data[pos + 4 : pos + 4 + length])))
        pos += 4 + length
    found.sort(key=lambda option: option[0])  # stable: one code's options keep their order
    return found


class FFIHost:
    """What the Lua side asks Python for; every method takes the query's view.

    ``table`` makes a Lua table from a list (the configuration's Lua state's)."""

    def __init__(self, table: Callable[[Any], Any]) -> None:
        self._table = table

    def qname_wire(self, view: Any) -> bytes:
        return _query(view).qname_wire

    def qname_hash(self, view: Any, init: Any) -> int:
        # dnsdist's DNSName::hash: the case-insensitive lookup2 hash of the wire name.
        return burtle_ci(_query(view).qname_wire, int(init) & 0xFFFFFFFF)

    def address(self, view: Any, which: str, bits: int) -> bytes:
        """The local or remote address in network order; masked to ``bits`` when
        ``bits`` is 0 or more (more than the address has: the whole address)."""
        dq = _query(view)
        ip = ipaddress.ip_address((dq.local if which == "local" else dq.remote)[0].split("%")[0])
        if bits >= 0:
            network = ipaddress.ip_network(f"{ip}/{min(bits, ip.max_prefixlen)}", strict=False)
            ip = network.network_address
        return ip.packed

    def port(self, view: Any, which: str) -> int:
        dq = _query(view)
        return int((dq.local if which == "local" else dq.remote)[1])

    def tag(self, view: Any, label: str) -> str | None:
        tags = _query(view).getTagArray()
        return tags.get(label)

    def tags(self, view: Any) -> Any:
        return self._table([self._table([k, v]) for k, v in _query(view).getTagArray().items()])

    def edns_options(self, view: Any) -> Any:
        dq = _query(view)
        options = edns_options(dq.data, dq.question_end)
        return self._table([self._table([code, data.decode("latin-1")]) for code, data in options])

    def set_rcode(self, view: Any, rcode: int) -> None:
        # dnsdist's: the rcode's low four bits and QR, nothing else of the header.
        dq = _query(view)
        dq.data[2] |= 0x80
        dq.data[3] = (dq.data[3] & 0xF0) | (rcode & 0x0F)

    def spoof_raw(self, view: Any, values: Any) -> None:
        raws = [str(v).encode("latin-1") for v in values.values()]
        build.make_raw_spoof_answer(_query(view), raws)

    def spoof_addrs(self, view: Any, values: Any) -> None:
        addresses = []
        for value in values.values():
            raw = str(value).encode("latin-1")
            if len(raw) in (4, 16):  # others are skipped, as dnsdist skips them
                addresses.append(str(ipaddress.ip_address(raw)))
        dq = _query(view)
        build.make_spoof_answer(dq, addresses, aa=bool(dq.data[2] & 0x04))


class LuaFFI:
    """The Lua side of the FFI in one configuration's Lua state: what runs LuaFFI
    functions, and the ``dnsdist_ffi_*`` names it has (``names``)."""

    def __init__(self, exports: Any, table: Callable[[Any], Any]) -> None:
        self.ffi = exports["ffi"]
        self.run_action: Callable[[Any, Any], tuple[int, str]] = exports["action"]
        self.run_rule: Callable[[Any, Any], bool] = exports["rule"]
        self._policy = exports["policy"]
        self._load_code = exports["load_code"]
        self.names: list[str] = list(exports["names"].values())
        self.table = table

    def load_code(self, code: str, chunkname: str) -> Any:
        """The function a per-thread code returns; ``ValueError`` with Lua's message if
        the code does not compile, fails, or returns something else."""
        loaded = self._load_code(code, chunkname)
        func, message = loaded if isinstance(loaded, tuple) else (loaded, None)
        if func is None:
            raise ValueError(str(message))
        return func

    def run_policy(self, func: Any, servers: Any, view: Any) -> Any:
        return self._policy(func, servers, view)


def install(lua: Any) -> LuaFFI | None:
    """Load ``lua/ffi.lua`` into the Lua state ``lua`` (a lupa ``LuaRuntime``) and make
    ``require("ffi")`` return its ``ffi``; None when the engine is not LuaJIT."""
    if not lua.eval("jit ~= nil"):
        return None
    real = lua.eval('require("ffi")')
    host = FFIHost(lua.table_from)
    chunk = lua.eval("load")(FFI_LUA.read_text(), "=triodist-ffi")
    exports = chunk(real, host)
    lua.eval("package.loaded")["ffi"] = exports["ffi"]
    return LuaFFI(exports, lua.table_from)


class FFIServerPolicy(ServerPolicy):
    """A policy whose Lua function uses the FFI: ``function(servers_list, dq)``
    returning the 0-based index of the chosen server in the pool (every server, up or
    down, in ``order``, as dnsdist gives them).  An index out of range, or a value that
    is not a number, means no server (dnsdist fails the query then)."""

    isLua = True
    isFFI = True
    _CACHE_LIMIT = 64

    def __init__(self, name: str, func: Any, ffi: LuaFFI, *, per_thread: bool = False) -> None:
        super().__init__(name, self._choose_ffi)
        self.isPerThread = per_thread
        self.lua_func = func
        self._ffi = ffi
        self._arrays: dict[tuple[Server, ...], Any] = {}
        self._complained = False

    def _choose_ffi(self, servers: Sequence[Server], dq: DNSQuestion) -> Server | None:
        key = tuple(servers)
        array = self._arrays.get(key)
        if array is None:
            if len(self._arrays) >= self._CACHE_LIMIT:
                self._arrays.clear()
            array = self._arrays[key] = self._ffi.table(list(key))
        chosen = call_with_view(partial(self._ffi.run_policy, self.lua_func, array), dq)
        if (
            isinstance(chosen, int | float)
            and float(chosen).is_integer()
            and 0 <= chosen < len(key)
        ):
            return key[int(chosen)]
        if not self._complained:
            self._complained = True
            log.warning(
                "Server policy '%s' returned %s, not the index of one of the %d servers: no server",
                self.name,
                chosen,
                len(key),
            )
        return None

    def toString(self) -> str:
        return f'ServerPolicy (FFI) "{self.name}"'
