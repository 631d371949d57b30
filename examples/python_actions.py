"""Python actions for examples/python-action.lua: each is ``async def f(dq)`` and returns a
``Verdict`` (or None: go on with the next rule).

``check_name`` asks a reputation service about the query's name. The service here is a
stand-in that answers from a table after a short wait; a real one would be awaited the
same way (a database client, or an HTTP client that runs on Trio, as httpx does through
anyio). Answers are kept for a minute in a small cache of bounded size, so that a name
asked often is looked up once. ``scrub_answer`` turns an answer that points at a
documentation network into NXDOMAIN.

The configuration imports this module when it loads (beside the configuration file, then
on sys.path); a reload imports it again, so an edit here takes effect with a reload.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

import dns.message
import dns.rcode
import trio

from triodist.rules import Verdict

#: What the stand-in service knows: a name and every name under it.
REPUTATION = {
    "ads.example.org.": "block",
    "tracker.example.net.": "sinkhole",
    "login.example.com.": "allow",
}
#: Where a sinkholed name is sent.
SINKHOLE = "192.0.2.53"
#: Answers pointing here are turned into NXDOMAIN.
SCRUBBED = ipaddress.ip_network("198.51.100.0/24")

CACHE_SIZE = 10_000
CACHE_SECONDS = 60.0
_cache: OrderedDict[str, tuple[float, str]] = OrderedDict()


async def reputation(name: str) -> str:
    """The service's word on ``name``: "block", "sinkhole", "allow" or "unknown"."""
    await trio.sleep(0.005)  # the round trip to the service
    labels = name.split(".")
    for start in range(len(labels) - 1):
        found = REPUTATION.get(".".join(labels[start:]))
        if found is not None:
            return found
    return "unknown"


async def cached_reputation(name: str) -> str:
    now = trio.current_time()
    entry = _cache.get(name)
    if entry is not None and entry[0] > now:
        _cache.move_to_end(name)
        return entry[1]
    word = await reputation(name)
    _cache[name] = (now + CACHE_SECONDS, word)
    _cache.move_to_end(name)
    if len(_cache) > CACHE_SIZE:  # bounded: the least recently used goes
        _cache.popitem(last=False)
    return word


async def check_name(dq: Any) -> Verdict | None:
    """Refuse blocked names, answer sinkholed ones, tag the others with the service's word."""
    word = await cached_reputation(dq.qname.toString().lower())
    if word == "block":
        return Verdict.REFUSED
    if word == "sinkhole":
        return Verdict.spoof(SINKHOLE)
    dq.setTag("reputation", word)  # a later Lua rule may read it: dq:getTag("reputation")
    return None


async def scrub_answer(dr: Any) -> Verdict | None:
    """NXDOMAIN in place of an answer with an address in ``SCRUBBED``."""
    answer = dns.message.from_wire(dr.getContent())
    for rrset in answer.answer:
        for rdata in rrset:
            address = getattr(rdata, "address", None)
            if address is not None and ipaddress.ip_address(address) in SCRUBBED:
                return Verdict.rcode(dns.rcode.NXDOMAIN)
    return None
