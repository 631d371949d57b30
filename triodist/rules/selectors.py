"""Selectors: which queries (or responses) a rule applies to.

Each selector is a small object with ``matches(dq) -> bool`` and a ``str()`` that
``showRules()`` prints.  They read the query's wire fields and never do I/O.

Imports nothing above triodist.rules (the wire format and util below it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import dns.exception
import dns.rdataclass
import dns.rdatatype
import trio

from triodist.rules.described import Described
from triodist.rules.luaview import Binder, bind_calls, call_with_view
from triodist.rules.matchers import DNSNameSet, IPAddress, NetmaskGroup, SuffixMatchNode
from triodist.util.luavalues import describe as lua_describe
from triodist.util.ratelimit import SourceRates, TokenBucket, source_key
from triodist.wire.message import DNSQuestion, DNSResponse
from triodist.wire.names import DNSName, as_name


def qtype_code(value: Any, function: str) -> int:
    """A DNS type given as its name ("AAAA", "TYPE65") or its number; an error that names
    the value otherwise (dnsdist: "Unable to convert 'AAAAA' to a DNS type")."""
    return _rr_code(value, function, "type", dns.rdatatype.from_text, "DNSQType.AAAA")


def qclass_code(value: Any, function: str) -> int:
    """A DNS class given as its name ("IN", "CH", "CLASS3") or its number, as
    :func:`qtype_code` takes a type."""
    return _rr_code(value, function, "class", dns.rdataclass.from_text, "DNSClass.IN")


def _rr_code(
    value: Any, function: str, what: str, from_text: Callable[[str], int], example: str
) -> int:
    if isinstance(value, str):
        try:
            return int(from_text(value))
        except (ValueError, dns.exception.DNSException):  # not dnspython's words
            raise ValueError(f"{function}: Unable to convert '{value}' to a DNS {what}") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if float(value).is_integer() and 0 <= value <= 0xFFFF:
            return int(value)
        raise ValueError(f"{function}: a DNS {what} is a number from 0 to 65535, not {value!r}")
    shown = "nil" if value is None else type(value).__name__
    raise ValueError(f"{function}: expected a DNS {what} (such as {example}), got {shown}")


class Selector(Described):
    """Base class: a selector matches a query or not."""

    def matches(self, dq: DNSQuestion) -> bool:
        raise NotImplementedError


class AllRule(Selector):
    def matches(self, dq: DNSQuestion) -> bool:
        return True

    def describe(self) -> str:
        return "All"


class QNameRule(Selector):
    def __init__(self, name: Any) -> None:
        self.name = as_name(name)

    def matches(self, dq: DNSQuestion) -> bool:
        return bool(dq.name == self.name)

    def describe(self) -> str:
        return f"qname=={self.name}"


class SuffixMatchNodeRule(Selector):
    def __init__(self, smn: SuffixMatchNode, quiet: bool = False) -> None:
        if not isinstance(smn, SuffixMatchNode):  # else the first query would find out
            raise TypeError(
                f"SuffixMatchNodeRule: expected a SuffixMatchNode, got {lua_describe(smn)}"
            )
        self.smn = smn
        self.quiet = quiet

    def matches(self, dq: DNSQuestion) -> bool:
        return self.smn.match_name(dq.name)

    def describe(self) -> str:
        return "qname matches a suffix" if self.quiet else f"qname in {self.smn}"


def QNameSuffixRule(suffixes: Any, quiet: bool = False) -> SuffixMatchNodeRule:
    """dnsdist's QNameSuffixRule: a SuffixMatchNodeRule built from names."""
    smn = SuffixMatchNode()
    smn.add(suffixes)
    return SuffixMatchNodeRule(smn, quiet)


class QNameSetRule(Selector):
    def __init__(self, names: DNSNameSet) -> None:
        self.names = names

    def matches(self, dq: DNSQuestion) -> bool:
        return self.names.contains(dq.name)

    def describe(self) -> str:
        return f"qname in {self.names}"


class QTypeRule(Selector):
    def __init__(self, qtype: Any) -> None:
        self.qtype = qtype_code(qtype, "QTypeRule")

    def matches(self, dq: DNSQuestion) -> bool:
        return dq.qtype == self.qtype

    def describe(self) -> str:
        return f"qtype=={dns.rdatatype.to_text(dns.rdatatype.RdataType.make(self.qtype))}"


class QClassRule(Selector):
    def __init__(self, qclass: Any) -> None:
        self.qclass = qclass_code(qclass, "QClassRule")

    def matches(self, dq: DNSQuestion) -> bool:
        return dq.qclass == self.qclass

    def describe(self) -> str:
        return f"qclass=={dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(self.qclass))}"


class NetmaskGroupRule(Selector):
    def __init__(self, nmg: Any, src: bool = True, quiet: bool = False) -> None:
        if not isinstance(nmg, NetmaskGroup):
            nmg = NetmaskGroup(_strings(nmg))
        self.nmg = nmg
        self.src = src
        self.quiet = quiet

    def matches(self, dq: DNSQuestion) -> bool:
        host = dq.remote[0] if self.src else dq.local[0]
        return bool(self.nmg.match_ip(_ip(host)))

    def describe(self) -> str:
        where = "Src" if self.src else "Dst"
        return f"{where}: " + ("in-group" if self.quiet else str(self.nmg))


class RegexRule(Selector):
    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"RegexRule: expected a string, got {lua_describe(pattern)}")
        self.pattern = pattern
        try:
            self.regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            # re.error's own text ("... at position 1") names neither the rule nor the
            # pattern: say both, and count the position from 1 as an editor does.
            where = "" if exc.pos is None else f" (at character {exc.pos + 1})"
            raise ValueError(
                f"RegexRule: {lua_describe(pattern)} is not a valid regular expression: "
                f"{exc.msg}{where}"
            ) from exc

    def matches(self, dq: DNSQuestion) -> bool:
        # dnsdist matches the name without its final dot
        return self.regex.search(dq.name.to_text(omit_final_dot=True)) is not None

    def describe(self) -> str:
        return f"Regex: {self.pattern}"


class AndRule(Selector):
    def __init__(self, selectors: Iterable[Selector]) -> None:
        self.selectors = list(selectors)

    def matches(self, dq: DNSQuestion) -> bool:
        return all(s.matches(dq) for s in self.selectors)

    def describe(self) -> str:
        return "(" + " && ".join(map(str, self.selectors)) + ")"


class OrRule(Selector):
    def __init__(self, selectors: Iterable[Selector]) -> None:
        self.selectors = list(selectors)

    def matches(self, dq: DNSQuestion) -> bool:
        return any(s.matches(dq) for s in self.selectors)

    def describe(self) -> str:
        return "(" + " || ".join(map(str, self.selectors)) + ")"


class NotRule(Selector):
    def __init__(self, selector: Selector) -> None:
        if not isinstance(selector, Selector):  # else the first query would find out
            raise TypeError(f"NotRule: expected a selector, got {lua_describe(selector)}")
        self.selector = selector

    def matches(self, dq: DNSQuestion) -> bool:
        return not self.selector.matches(dq)

    def describe(self) -> str:
        return f"!({self.selector})"


class TagRule(Selector):
    def __init__(self, name: str, value: str | None = None) -> None:
        self.name = str(name)
        self.value = None if value is None else str(value)

    def matches(self, dq: DNSQuestion) -> bool:
        got = dq.tags.get(self.name)
        if got is None:
            return False
        return self.value is None or got == self.value

    def describe(self) -> str:
        suffix = "" if self.value is None else f" == {self.value}"
        return f"tag '{self.name}' is set{suffix}"


class RDRule(Selector):
    def matches(self, dq: DNSQuestion) -> bool:
        return bool(dq.data[2] & 0x01)

    def describe(self) -> str:
        return "rd==1"


class OpcodeRule(Selector):
    def __init__(self, opcode: int) -> None:
        self.opcode = int(opcode)

    def matches(self, dq: DNSQuestion) -> bool:
        return dq.opcode == self.opcode

    def describe(self) -> str:
        return f"opcode=={self.opcode}"


class TCPRule(Selector):
    def __init__(self, tcp: Any) -> None:
        self.tcp = bool(tcp)

    def matches(self, dq: DNSQuestion) -> bool:
        return dq.tcp == self.tcp

    def describe(self) -> str:
        return f"Src: {'TCP' if self.tcp else 'UDP'}"


class RCodeRule(Selector):
    def __init__(self, rcode: int) -> None:
        self.rcode = int(rcode)

    def matches(self, dq: DNSQuestion) -> bool:
        return dq.rcode == self.rcode

    def describe(self) -> str:
        return f"rcode=={self.rcode}"


#: How many client networks a ``MaxQPSIPRule`` keeps at most (~120 bytes each).
DEFAULT_MAX_SOURCES = 100_000


class LazyBucket:
    """A token bucket created on first use, so that config loading needs no Trio clock."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.bucket: TokenBucket | None = None

    def take(self) -> bool:
        if self.bucket is None:
            self.bucket = TokenBucket(self.rate, self.burst)
        return self.bucket.take()


class MaxQPSRule(Selector):
    """Matches queries while they stay within ``qps`` per second (with ``burst``).

    As in dnsdist, the sense is the opposite of ``MaxQPSIPRule``: this one matches
    the traffic under the limit (``NotRule(MaxQPSRule(n))`` matches the excess).
    """

    def __init__(self, qps: float, burst: float | None = None) -> None:
        if isinstance(qps, bool) or not isinstance(qps, int | float):
            raise TypeError(f"MaxQPSRule: expected a number, got {lua_describe(qps)}")
        self.qps = qps
        self.bucket = LazyBucket(qps, burst)

    def matches(self, dq: DNSQuestion) -> bool:
        return self.bucket.take()

    def describe(self) -> str:
        return f"Max {self.qps} qps"


class MaxQPSIPRule(Selector):
    """Matches queries from a client network beyond ``qps`` per second.

    Clients are grouped by the ``v4Mask``/``v6Mask`` prefix of their address, as in
    dnsdist.  Source addresses can be spoofed, so the table behind the rule
    (``ratelimit.SourceRates``) costs O(1) per query whatever it holds and never holds
    more than ``max_entries`` networks (triodist's own bound, the ninth argument from
    Lua; dnsdist's table has none): over it, the network seen least recently goes.
    Idle entries are forgotten after ``expiration`` seconds; ``shards`` splits the
    table as in dnsdist; ``cleanupDelay`` and ``scanFraction`` are accepted and not
    needed, since expiry is done a little at each new source instead of by a scan.
    """

    def __init__(
        self,
        qps: float,
        v4_mask: int = 32,
        v6_mask: int = 64,
        burst: float | None = None,
        expiration: float = 300,
        cleanup_delay: float = 60,
        scan_fraction: int = 10,
        shards: int = 10,
        max_entries: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        self.qps = qps
        # As dnsdist's Netmask, a prefix longer than the address is the whole address.
        self.v4_mask = min(max(int(v4_mask), 0), 32)
        self.v6_mask = min(max(int(v6_mask), 0), 128)
        self.burst = burst
        self.expiration = float(expiration)
        self.table = SourceRates(
            qps,
            burst,
            expiration=self.expiration,
            max_entries=int(max_entries),
            shards=int(shards),
            name=f"MaxQPSIPRule({self.describe()})",
        )
        self.max_entries = self.table.max_entries
        self._v4_shift = 32 - self.v4_mask
        self._v6_shift = 128 - self.v6_mask

    def matches(self, dq: DNSQuestion) -> bool:
        key = source_key(dq.remote[0], self._v4_shift, self._v6_shift)
        return not self.table.take(key, trio.current_time())

    def getStats(self) -> dict[str, int]:
        """The table's counters: ``entries``, ``maxEntries``, ``evictions`` (entries
        forgotten to make room), ``evictionsNotFull`` (of those, the ones whose source
        was still being limited, and so starts again with its burst: the bound is too
        small for the traffic) and ``expired`` (idle entries forgotten)."""
        return self.table.stats()

    def describe(self) -> str:
        return f"IP (/{self.v4_mask}, /{self.v6_mask}) match for QPS over {self.qps}"


class LuaRule(Selector):
    """Matches when a Lua function given the query returns true.

    The function is given the query's (or the response's) ``LuaView``, as
    ``LuaAction``'s is."""

    takes_binder = True

    def __init__(self, func: Callable[[Any], Any], binder: Binder | None = None) -> None:
        self.func = func
        self._calls = bind_calls(func, binder, (DNSQuestion, DNSResponse))

    def matches(self, dq: DNSQuestion) -> bool:
        entry = self._calls.get(type(dq))
        if entry is None:  # another class of object, or a view handed back by Lua
            return bool(call_with_view(self.func, dq))
        view, call = entry
        previous = view.target
        view.target = dq
        try:
            return bool(call())
        finally:
            view.target = previous

    def describe(self) -> str:
        return "Lua rule"


class DNSSECRule(Selector):
    def matches(self, dq: DNSQuestion) -> bool:
        return dq.getDO()

    def describe(self) -> str:
        return "DNSSEC"


class PoolState(Protocol):
    """What the pool selectors read of a pool (``backends.pools.Pool`` provides it)."""

    def countServers(self, upOnly: Any = False) -> int: ...

    def poolLoad(self) -> int: ...


# The pool selectors look the pool up by name at each query (``None``: no such pool), so
# that they see the pools as they are then, not as they were when the rule was built.
PoolLookup = Callable[[str], PoolState | None]


class PoolAvailableRule(Selector):
    """Matches when the pool has at least one server up (dnsdist's PoolAvailableRule).

    A pool that does not exist has no server up: the rule does not match.
    """

    def __init__(self, pool: str, lookup: PoolLookup) -> None:
        self.pool = str(pool)
        self.lookup = lookup

    def matches(self, dq: DNSQuestion) -> bool:
        pool = self.lookup(self.pool)
        return pool is not None and pool.countServers(True) > 0

    def describe(self) -> str:
        return f"pool '{self.pool}' is available"


class PoolOutstandingRule(Selector):
    """Matches when the queries in flight to the pool's servers exceed ``limit``."""

    def __init__(self, pool: str, limit: int, lookup: PoolLookup) -> None:
        self.pool = str(pool)
        self.limit = int(limit)
        self.lookup = lookup

    def matches(self, dq: DNSQuestion) -> bool:
        pool = self.lookup(self.pool)
        return pool is not None and pool.poolLoad() > self.limit

    def describe(self) -> str:
        return f"pool '{self.pool}' outstanding > {self.limit}"


def _ip(host: str) -> IPAddress:
    return ipaddress.ip_address(host.split("%", 1)[0])


def _strings(items: Any) -> list[str]:
    if isinstance(items, str):
        return [items]
    if isinstance(items, dict):
        return [str(v) for v in items.values()]
    return [str(v) for v in items]


def selector_from(value: Any) -> Selector:
    """What ``addAction`` accepts in place of a selector, as dnsdist does.

    A string, a DNSName, or a table of them is a suffix match, unless one of the
    strings is a netmask, in which case it is a source match on the netmasks alone.
    Lua's ``makeRule`` is this function.  A SuffixMatchNode, NetmaskGroup or
    DNSNameSet is accepted too (beyond dnsdist, which refuses them here).
    """
    if isinstance(value, Selector):
        return value
    if isinstance(value, DNSNameSet):
        return QNameSetRule(value)
    if isinstance(value, SuffixMatchNode):
        return SuffixMatchNodeRule(value)
    if isinstance(value, NetmaskGroup):
        return NetmaskGroupRule(value)
    if isinstance(value, DNSName):
        value = [value]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = _number_text(value)  # Lua hands dnsdist a number as its text
    items = _items(value) if isinstance(value, str | list | tuple | dict) else None
    if items is None:
        raise TypeError(f"expected a selector, a name or a netmask, got {lua_describe(value)}")
    # As dnsdist: an empty table is a suffix match on no name (it matches nothing); if any
    # string is a netmask, the rule matches on the netmasks alone.  A DNSName is a name even
    # when its text would parse as a netmask.
    masks = [item for item in items if isinstance(item, str) and _looks_like_netmask(item)]
    if masks:
        return NetmaskGroupRule(NetmaskGroup(masks))
    smn = SuffixMatchNode()
    smn.add(items)
    return SuffixMatchNodeRule(smn)


def _items(value: str | list[Any] | tuple[Any, ...] | dict[Any, Any]) -> list[str | DNSName]:
    """The names and netmasks of a shortcut: strings (a number is its text, as in
    dnsdist) and DNSNames, which stay names."""
    if isinstance(value, dict):
        values = list(value.values())
    elif isinstance(value, str):
        values = [value]
    else:
        values = list(value)
    return [
        v
        if isinstance(v, DNSName)
        else _number_text(v)
        if isinstance(v, int | float) and not isinstance(v, bool)
        else str(v)
        for v in values
    ]


def _number_text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _looks_like_netmask(text: str) -> bool:
    try:
        ipaddress.ip_network(text.lstrip("!"), strict=False)
    except ValueError:
        return False
    return True
