"""A fake DNS backend that answers from a table, for policy tests.

:class:`FakeBackend` plays one ``newServer`` of a configuration under test (see
:mod:`triodist.testing.plugin`). It is an :class:`~triodist.testing.backend.AuthServer`
whose answers come from an *answer table* instead of a zone, so that a test states
only what it needs::

    FakeBackend({
        "www.example.org.": "192.0.2.10",                  # A (an IPv6 address: AAAA)
        "dual.example.org.": ["192.0.2.1", "2001:db8::1"],  # A and AAAA
        ("example.org.", "MX"): "10 mail.example.org.",    # records of a type, as text
        "gone.example.org.": "NXDOMAIN",                   # an rcode by its name
        "odd.example.org.": lambda query: my_message(query),
    })

Keys are a name (absolute, with its final dot; case does not matter) or a
``(name, type)`` pair, which wins over the name alone. Values:

* an address, or a list of them: with a name key, the IPv4 ones answer type A and the
  IPv6 ones AAAA (another type gets NOERROR and no records); with a ``(name, type)``
  key, each text is a record of that type in master-file form;
* an rcode name (``"NXDOMAIN"``, ``"REFUSED"``, ``"SERVFAIL"``...): that rcode, no records;
* a callable: given the query (a dnspython message), it returns the answer, or None for
  no answer at all. An exception it raises, or anything else it returns, is the test's
  own error: it fails the test (rather than becoming a SERVFAIL that hides it).

A name that is in no key gets NXDOMAIN. A mode applies on top of the table
(``FakeBackend(table, mode=slow(2))``, or ``backend.mode = "servfail"`` while it runs):

* ``"answer"`` (the default): from the table;
* ``"silent"``: no answer at all;
* ``slow(seconds)``: from the table, ``seconds`` later (on Trio's clock: under
  ``autojump_clock`` it costs no wall time); ``mode="slow", delay=seconds`` says the same;
* ``"servfail"`` (or ``"refused"``): that rcode and the question only;
* ``"truncate"``: over UDP, TC set and no records; over TCP, the answer;
* ``"down"``: the health checks fail (see below); queries are answered from the table.

:attr:`FakeBackend.received` lists the queries that reached it as dnspython messages
(the last 1000; ``FakeBackend(table, history=n)`` keeps ``n``).

Health checks (queries for the server's ``checkName``, ``a.root-servers.net.`` unless the
configuration says otherwise) are answered NOERROR whatever the mode, and left out of
``received``; in the ``"down"`` mode, or while :attr:`FakeBackend.down` is set, they get no
answer, so the proxy marks the server down after its ``maxCheckFailures``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from triodist.testing.backend import AuthServer, Mode, Transport

__all__ = ["AnswerTable", "FakeBackend", "FakeMode", "Slow", "TableServer", "slow"]

#: What a table entry may hold; see the module documentation.
Answer: TypeAlias = str | Sequence[str] | Callable[[dns.message.Message], dns.message.Message]
#: An answer table: a name, or a name and a type, to what is answered.
AnswerTable: TypeAlias = Mapping[str | tuple[str, str], Answer]

#: TTL of the records a table answers with.
TTL = 300


@dataclass(frozen=True)
class Slow:
    """The mode ``slow(seconds)``: answers from the table, ``seconds`` late."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds >= 0:  # NaN too
            raise ValueError(f"slow({self.seconds!r}): a number of seconds, 0 or more")


def slow(seconds: float) -> Slow:
    """The mode that answers ``seconds`` late: ``FakeBackend(table, mode=slow(2))``."""
    return Slow(float(seconds))


Named = Literal["answer", "silent", "servfail", "refused", "echo", "truncate", "slow", "down"]
#: A fake backend's mode: a name, or ``slow(seconds)``.
FakeMode: TypeAlias = Named | Slow
_NAMED: frozenset[str] = frozenset(get_args(Named))


def _rcode(value: str) -> dns.rcode.Rcode | None:
    """The rcode ``value`` names, or None when it names none (an address, a record)."""
    if not value.isalpha():
        return None
    try:
        return dns.rcode.from_text(value)
    except dns.rcode.UnknownRcode:
        return None


def _address_type(text: str) -> dns.rdatatype.RdataType:
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither an address nor an rcode name: give records of other "
            "types under a (name, type) key"
        ) from exc
    return dns.rdatatype.AAAA if address.version == 6 else dns.rdatatype.A


class TableServer(AuthServer):
    """An AuthServer answering from an answer table (checked when it is made)."""

    def __init__(
        self,
        table: AnswerTable,
        *,
        name: str = "fake",
        mode: Mode = "answer",
        history: int = 1000,
    ) -> None:
        super().__init__(name=name, mode=mode, history=history)
        #: The name the proxy's health checks ask for (the server's ``checkName``).
        self.check_name = dns.name.from_text("a.root-servers.net.")
        #: While set, health checks get no answer.
        self.down = False
        #: What a callable entry raised while answering, for :meth:`handle` to raise.
        self._failure: Exception | None = None
        self.by_name: dict[dns.name.Name, Answer] = {}
        self.by_type: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], Answer] = {}
        for key, value in table.items():
            self._check(key, value)
            if isinstance(key, tuple):
                owner, rdtype = key
                self.by_type[dns.name.from_text(owner), dns.rdatatype.from_text(rdtype)] = value
            else:
                self.by_name[dns.name.from_text(key)] = value

    @staticmethod
    def _check(key: str | tuple[str, str], value: Answer) -> None:
        """Fail at once, naming the entry, on a value that could not be answered."""
        if callable(value):
            return
        texts = [value] if isinstance(value, str) else list(value)
        if len(texts) == 1 and _rcode(texts[0]) is not None:
            return
        if isinstance(key, tuple):
            rdtype = dns.rdatatype.from_text(key[1])
            for text in texts:
                try:
                    dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
                except Exception as exc:
                    raise ValueError(f"answer table entry {key!r}: {text!r}: {exc}") from exc
        else:
            for text in texts:
                try:
                    _address_type(text)
                except ValueError as exc:
                    raise ValueError(f"answer table entry {key!r}: {exc}") from exc

    def is_check(self, query: dns.message.Message) -> bool:
        """Whether ``query`` is one of the proxy's health checks."""
        return len(query.question) == 1 and query.question[0].name == self.check_name

    def _is_default_check(self, query: dns.message.Message) -> bool:
        # Kept apart (health_checks) under the server's own checkName too: in received,
        # a check a second would push the test's queries out of its bounded history.
        return self.is_check(query)

    async def handle(
        self, query: dns.message.Message, transport: Transport
    ) -> dns.message.Message | None:
        if self.is_check(query):
            return None if self.down else dns.message.make_response(query)
        response = await super().handle(query, transport)
        # The zone server turns an exception into SERVFAIL; a callable entry's is raised
        # instead, out of the fake's task into the test's nursery. No checkpoint lies
        # between answer() and here, so the failure is this query's.
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        return response

    def _call(
        self,
        function: Callable[[dns.message.Message], dns.message.Message],
        query: dns.message.Message,
    ) -> dns.message.Message:
        """What a callable entry answers to ``query``; its failure kept for :meth:`handle`."""
        question = query.question[0]
        try:
            response = function(query)
            if response is not None and not isinstance(response, dns.message.Message):
                raise TypeError(f"returned {response!r}: a dnspython message (or None: no answer)")
        except Exception as exc:
            asked = f"{question.name} {dns.rdatatype.to_text(question.rdtype)}"
            exc.add_note(f"in the answer table's function, answering {asked}")
            self._failure = exc
            raise
        return response

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The answer the table gives to ``query`` (NXDOMAIN for a name it lacks)."""
        if len(query.question) != 1:
            return super().answer(query)  # FORMERR, as the zone server says
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        value = self.by_type.get((name, rdtype))
        typed = value is not None
        if value is None:
            value = self.by_name.get(name)
        if value is None:
            if not any(owner == name for owner, _ in self.by_type):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response  # NODATA for a name the table has under other types
        if callable(value):
            return self._call(value, query)
        texts = [value] if isinstance(value, str) else list(value)
        if len(texts) == 1 and (rcode := _rcode(texts[0])) is not None:
            response.set_rcode(rcode)
            return response
        if typed:
            rdatas = [dns.rdata.from_text(dns.rdataclass.IN, rdtype, t) for t in texts]
        else:
            rdatas = [
                dns.rdata.from_text(dns.rdataclass.IN, rdtype, t)
                for t in texts
                if _address_type(t) == rdtype
            ]
        if rdatas:
            response.answer.append(dns.rrset.from_rdata_list(name, TTL, rdatas))
        return response


class FakeBackend:
    """A fake backend: a :class:`TableServer` and what a test reads from it.

    :param table: the answer table (see the module documentation).
    :param mode: the mode to start in (``"servfail"``, ``slow(5)``, ``"down"``...).
    :param delay: seconds the ``"slow"`` mode (given by its name) waits.
    :param down: whether health checks go unanswered from the start, whatever the mode.
    :param history: how many queries :attr:`received` keeps (the last ones).
    """

    def __init__(
        self,
        table: AnswerTable | None = None,
        *,
        mode: FakeMode = "answer",
        delay: float = 1.0,
        down: bool = False,
        history: int = 1000,
    ) -> None:
        self.server = TableServer(table or {}, history=history)
        self.server.delay = delay
        self._down = down
        self._mode: FakeMode = "answer"
        self.mode = mode

    @property
    def mode(self) -> FakeMode:
        return self._mode

    @mode.setter
    def mode(self, mode: FakeMode) -> None:
        if isinstance(mode, Slow):
            self.server.mode = "slow"
            self.server.delay = mode.seconds
        elif mode == "down":
            self.server.mode = "answer"
        elif mode in _NAMED:
            self.server.mode = mode
        else:
            known = ", ".join(sorted(_NAMED))
            raise ValueError(f"unknown mode {mode!r}: one of {known}, or slow(seconds)")
        self._mode = mode
        self.server.down = self.down

    @property
    def delay(self) -> float:
        return self.server.delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.server.delay = seconds

    @property
    def down(self) -> bool:
        """Whether the proxy's health checks get no answer (set, or the ``"down"`` mode)."""
        return self._down or self._mode == "down"

    @down.setter
    def down(self, down: bool) -> None:
        self._down = down
        if not down and self._mode == "down":
            self._mode = "answer"  # up again: answering, as before it went down
        self.server.down = self.down

    @property
    def received(self) -> list[dns.message.Message]:
        """The queries that reached this backend, oldest first: the last ``history``
        (1000 unless the backend was made with another), health checks left out."""
        return [
            query.message
            for query in self.server.received
            if not self.server.is_check(query.message)
        ]

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` once serving."""
        return self.server.address
