"""What a Python action's function returns: a ``Verdict`` (public: users import it as
``from triodist.rules import Verdict``).

A ``PythonAction("module:function", timeoutMs)`` calls ``async def function(dq)``; what it
returns decides what becomes of the query, in the words a Lua action or a resumed held
object would use::

    Verdict.ALLOW               DNSAction.Allow: stop the rules, forward (or send the answer)
    Verdict.DROP                DNSAction.Drop; obj:drop() on a held object
    Verdict.NXDOMAIN            DNSAction.Nxdomain
    Verdict.REFUSED             DNSAction.Refused
    Verdict.SERVFAIL            DNSAction.ServFail
    Verdict.TRUNCATE            DNSAction.Truncate (UDP; nothing over TCP)
    Verdict.spoof("192.0.2.1")  DNSAction.Spoof, "192.0.2.1" (addresses, or one name)
    Verdict.pool("abuse")       DNSAction.Pool, "abuse"
    Verdict.delay(100)          DNSAction.Delay, "100" (milliseconds, UDP answers)
    Verdict.rcode(5)            obj:setRCode(5, true) then obj:resume()
    None (or Verdict.NONE)      DNSAction.None: go on with the next rule; obj:resume()

A response action's function may return ``ALLOW``, ``DROP``, ``SERVFAIL``, ``TRUNCATE``,
``delay()``, ``rcode()`` or ``None`` (``DNSResponseAction``'s words); the others name
what only a query can become.

Imports nothing of triodist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision of a Python action; use the constants and functions of the class
    rather than building one (``Verdict.REFUSED``, ``Verdict.spoof("192.0.2.1")``)."""

    #: Which decision: "none", "allow", "drop", "nxdomain", "refused", "servfail",
    #: "truncate", "spoof", "pool", "delay" or "rcode".
    kind: str
    #: What goes with it, as a Lua action returns it: the addresses of ``spoof`` (comma
    #: separated), the pool's name, the delay in milliseconds.
    extra: str = ""
    #: ``rcode``: the DNS rcode (0 to 15), and whether the records go.
    code: int = 0
    clear_records: bool = True

    NONE: ClassVar[Verdict]
    ALLOW: ClassVar[Verdict]
    DROP: ClassVar[Verdict]
    NXDOMAIN: ClassVar[Verdict]
    REFUSED: ClassVar[Verdict]
    SERVFAIL: ClassVar[Verdict]
    TRUNCATE: ClassVar[Verdict]

    @classmethod
    def spoof(cls, *answers: str) -> Verdict:
        """Answer with these addresses (those of the query's type), or with one name as a
        CNAME: ``Verdict.spoof("192.0.2.1", "2001:db8::1")``."""
        texts = [a for a in answers if isinstance(a, str) and a.strip()]
        if not answers or len(texts) != len(answers) or any("," in t for t in texts):
            raise ValueError(f"Verdict.spoof: expected addresses or one name, got {answers!r}")
        return cls("spoof", ",".join(t.strip() for t in texts))

    @classmethod
    def pool(cls, name: str) -> Verdict:
        """Stop the rules and send the query to the pool ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"Verdict.pool: expected a pool name, got {name!r}")
        return cls("pool", name)

    @classmethod
    def delay(cls, milliseconds: int) -> Verdict:
        """Delay the UDP answer by ``milliseconds`` and go on with the next rule."""
        if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
            raise ValueError(f"Verdict.delay: expected milliseconds >= 0, got {milliseconds!r}")
        return cls("delay", str(milliseconds))

    @classmethod
    def rcode(cls, code: int, clear_records: bool = True) -> Verdict:
        """Answer with ``code`` (``dns.rcode.NXDOMAIN``...), as ``setRCode`` then ``resume``
        do on a held object: QR set, RA copied from RD, AA and AD cleared, EDNS kept, the
        records removed unless ``clear_records`` is false."""
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 15:
            raise ValueError(f"Verdict.rcode: expected an rcode from 0 to 15, got {code!r}")
        return cls("rcode", "", int(code), bool(clear_records))

    def __repr__(self) -> str:
        if self.kind == "spoof":
            return f"Verdict.spoof({', '.join(repr(a) for a in self.extra.split(','))})"
        if self.kind == "pool":
            return f"Verdict.pool({self.extra!r})"
        if self.kind == "delay":
            return f"Verdict.delay({self.extra})"
        if self.kind == "rcode":
            return f"Verdict.rcode({self.code}, clear_records={self.clear_records})"
        return f"Verdict.{self.kind.upper()}"


Verdict.NONE = Verdict("none")
Verdict.ALLOW = Verdict("allow")
Verdict.DROP = Verdict("drop")
Verdict.NXDOMAIN = Verdict("nxdomain")
Verdict.REFUSED = Verdict("refused")
Verdict.SERVFAIL = Verdict("servfail")
Verdict.TRUNCATE = Verdict("truncate")
