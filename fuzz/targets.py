"""Coverage-guided fuzz targets for the code that reads untrusted bytes (atheris).

    pip install -e '.[fuzz]'          # or: pip install atheris
    python fuzz/targets.py TARGET [libFuzzer options] [corpus directories]
    python fuzz/targets.py reply -max_total_time=120 /tmp/reply-corpus fuzz/corpus/responses

Targets (fuzz/README.md says more):

``query``     one datagram from a client, through the UDP frontend and the whole query
              path of a rule-heavy configuration (rules, spoofing, cache, backend);
``tcp``       a byte stream from a client, through the TCP frontend's framing;
``reply``     one datagram from a backend, as the reply to the query it carries, through
              reply matching, the cache and the response rules (two configurations);
``listener``  one datagram to a network listener, read by a Lua callback modelled on
              ``examples/async-filter.lua`` while queries are suspended;
``filter``    one datagram to the external filter of ``triodist/asyncfilter.py``.

Every input runs the real code in a fresh ``trio.run`` under a mock clock (timeouts
pass at once), over real loopback and unix sockets. A finding is an exception that
escapes, a hang, an answer that breaks an invariant (a client always gets its own ID
back), or an error the server caught and logged where none belongs (``Findings``):
the frontends' and the rules' catch-alls would otherwise hide the very bugs a fuzzer
is for. Without atheris this module still imports, so that the tests can run every
target over the seed corpus (``tests/test_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any


def _instrumentation() -> contextlib.AbstractContextManager[Any]:
    """Instrument triodist and dnspython for coverage, but only when fuzzing: imported by
    the tests (with or without atheris installed) nothing is instrumented."""
    if __name__ != "__main__":
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["triodist", "dns"])


with _instrumentation():
    import dns.exception
    import dns.message
    import dns.name
    import trio
    import trio.testing

    from triodist.asyncfilter import parse_rules
    from triodist.asyncfilter import receive_loop as filter_receive_loop
    from triodist.config.api import ConfigAPI
    from triodist.config.runtime import LuaConfig
    from triodist.dnsmsg import MalformedQuery, read_question
    from triodist.frontends.common import bind_tcp
    from triodist.frontends.tcp import TCPFrontend
    from triodist.frontends.udp import UDPFrontend
    from triodist.network import NetworkListener
    from triodist.rules.matchers import NetmaskGroup
    from triodist.server import DNSServer

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

_U16 = struct.Struct("!H")
_HEADER = struct.Struct("!HHHHHH")

#: A backend reply with QR clear (a query, say one echoed back) was once accepted as the
#: answer (found by this harness, fixed in ``reply_matches``). True forces QR on in the
#: fuzzed replies, should such a bug need to be stepped over again.
KNOWN_BUG_QR_CLEAR_REPLY = False
#: Virtual seconds an input may take: far beyond every timeout of the configurations.
GUARD = 60.0
#: Where the TCP frontend believes its client is.
TCP_CLIENT = ("127.0.0.1", 40000)

# --- configurations -------------------------------------------------------------------------

#: The cache alone: the pipeline's short path for replies (no response rule).
PLAIN = """
newServer{address="$BACKEND", udpTimeout=1}
getPool(""):setCache(newPacketCache(1000, {parseECS=true, shuffle=true, truncatedTTL=5,
                                          temporaryFailureTTL=5, payloadRanks={1232, 4096}}))
"""

#: Rules that read the query in every way a configuration may, and response rules that
#: edit the answer: the long path.
RULES = """
newServer{address="$BACKEND", udpTimeout=1}
getPool(""):setCache(newPacketCache(1000, {parseECS=true, shuffle=true, truncatedTTL=5}))
addAction(QTypeRule(DNSQType.ANY), TCAction())
addAction(QNameSuffixRule("spoof.test."), SpoofAction({"192.0.2.1", "2001:db8::1"}))
addAction(QNameSuffixRule("cname.test."), SpoofCNAMEAction("target.example.org."))
addAction(RegexRule("^nx"), RCodeAction(DNSRCode.NXDOMAIN))
addAction(AndRule{DNSSECRule(), QTypeRule(DNSQType.TXT)}, SetTagAction("do", "1"))
addAction(OpcodeRule(DNSOpcode.Update), RCodeAction(DNSRCode.NOTIMP))
addAction(AllRule(), LuaAction(function(dq)
  local name = dq.qname:toString()
  local wire = dq.qname:toDNSString()
  if dq:getDO() and dq.qname:countLabels() > 3 then
    return DNSAction.Spoof, "192.0.2.7"
  end
  if dq.qtype == DNSQType.NULL then
    return DNSAction.Refused
  end
  return DNSAction.None, ""
end))
addResponseAction(AllRule(), LimitTTLResponseAction(10, 3600))
addResponseAction(QTypeRule(DNSQType.MX), ClearRecordTypesResponseAction(DNSQType.A))
addResponseAction(AllRule(), LuaResponseAction(function(dr)
  dr.qname:toString()
  if dr.rcode == DNSRCode.REFUSED then
    dr.dh:setRA(true)
    return DNSResponseAction.HeaderModify
  end
  return DNSResponseAction.None, ""
end))
addSelfAnsweredResponseAction(AllRule(), SetMaxTTLResponseAction(60))
addCacheHitResponseAction(AllRule(), SetMinTTLResponseAction(5))
"""

#: Answers every query itself (A: an address; anything else: REFUSED), so that a TCP
#: connection goes on from query to query without a backend.
SELF_ANSWERED = """
newServer{address="$BACKEND", udpTimeout=1}
addAction(QTypeRule(DNSQType.A), SpoofAction("192.0.2.1"))
addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))
"""

#: Every query is held until an external component's verdict, as in
#: examples/async-filter.lua (whose callback this one follows); the counter of query
#: IDs is a global so that each input can start again from 0 and stay deterministic.
ASYNC = """
newServer{address="$BACKEND", udpTimeout=1}
setMaxSuspended(16)
filter = newNetworkEndpoint("$FILTER")
nextQueryID = 0
addAction(AllRule(), LuaAction(function(dq)
  local queryID = nextQueryID
  nextQueryID = (nextQueryID + 1) % 65536
  if not dq:suspend(0, queryID, 500) then
    return DNSAction.None
  end
  filter:send(string.char(math.floor(queryID / 256), queryID % 256) .. dq:getContent():sub(3))
  return DNSAction.Allow
end))
local rcodes = {refuse = DNSRCode.REFUSED, nxdomain = DNSRCode.NXDOMAIN}
function gotAsyncResponse(endpointID, message, from)
  local id, verdict = message:match("^(%d+) (%a+)%s*$")
  local queryID = tonumber(id)
  if queryID == nil or queryID > 65535
      or (verdict ~= "allow" and verdict ~= "drop" and rcodes[verdict] == nil) then
    return
  end
  local ok, asyncObject = pcall(getAsynchronousObject, 0, queryID)
  if not ok then
    return
  end
  if verdict == "drop" then
    asyncObject:drop()
    return
  end
  asyncObject:getDQ():setTag("filter", "checked")
  if verdict ~= "allow" then
    asyncObject:setRCode(rcodes[verdict], true)
  end
  asyncObject:resume()
end
listener = newNetworkListener()
listener:addUnixListeningEndpoint("$LISTENER", 0, gotAsyncResponse)
listener:start()
"""

#: A few queries for the listener target to hold while its datagram arrives.
HELD_QUERIES = [
    dns.message.make_query(name, "A", use_edns=0).to_wire()
    for name in ("www.example.org.", "mail.example.org.", "ads.example.org.")
]

#: The query the reply target falls back on when a reply carries no readable question.
DEFAULT_QUERY = dns.message.make_query("www.example.org.", "A").to_wire()


# --- findings -------------------------------------------------------------------------------


class Findings(logging.Handler):
    """What the server logged that means a bug: an exception the frontends caught at
    their per-query boundary, a rule that failed with anything but a DNS parse error
    (a message that does not parse is the sender's problem), a network-listener
    callback that failed. Installed on the ``triodist`` logger, which it also silences."""

    #: A whole-message parse (``dq:getEDNSOptions()``, ClearRecordTypesResponseAction)
    #: of bytes that do not parse: the rule fails and the answer is SERVFAIL, by design.
    EXPECTED = (dns.exception.DNSException,)

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if record.levelno >= logging.ERROR or not isinstance(exc, self.EXPECTED):
                self.found.append(f"{message}: {type(exc).__name__}: {exc}")
        elif record.levelno >= logging.ERROR or "read callback" in message:
            self.found.append(message)

    def check(self) -> None:
        if self.found:
            found, self.found = self.found, []
            raise AssertionError("; ".join(found))

    def install(self) -> None:
        """Receive everything the ``triodist`` loggers say, and keep it from the console."""
        logger = logging.getLogger("triodist")
        self._saved = (logger.level, logger.propagate)
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False

    def uninstall(self) -> None:
        logger = logging.getLogger("triodist")
        logger.removeHandler(self)
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[1]

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Installed for the time of a block (a test), starting with nothing found."""
        self.found = []
        self.install()
        try:
            yield
        finally:
            self.uninstall()


# --- the lab: a pipeline, its frontends, a backend the harness plays --------------------------


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(65535))
        except BlockingIOError:
            return datagrams


def frames(stream: bytes) -> list[bytes]:
    """Split a DNS-over-TCP byte stream into its messages (a cut-off tail is left out)."""
    out = []
    pos = 0
    while pos + 2 <= len(stream):
        (length,) = _U16.unpack_from(stream, pos)
        if pos + 2 + length > len(stream):
            break
        out.append(stream[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def leading_queries(messages: list[bytes]) -> list[bytes]:
    """The messages a TCP frontend reads as queries before it stops at the first that is
    not one (shorter than a header, QR set, a question it cannot read)."""
    queries = []
    for message in messages:
        if len(message) < 12 or message[2] & 0x80:
            break
        try:
            read_question(message)
        except MalformedQuery:
            break
        queries.append(message)
    return queries


def echo(query: bytes) -> bytes:
    """A backend that answers with the question only (NOERROR, no record)."""
    answer = bytearray(query)
    answer[2] |= 0x80
    return bytes(answer)


Reply = Callable[[bytes], bytes | None]


class Lab:
    """A pipeline built from a Lua configuration as ``triodist serve`` builds it, with its
    UDP and TCP frontends; the harness plays the client and the backend (``$BACKEND``),
    over loopback sockets. Sockets live as long as the lab; ``close`` it."""

    def __init__(self, lua_text: str, **paths: str) -> None:
        self.backend = _udp_socket()
        self.client = _udp_socket()
        host, port = self.backend.getsockname()
        text = lua_text.replace("$BACKEND", f"{host}:{port}")
        for name, path in paths.items():
            text = text.replace(f"${name.upper()}", path)
        self.lua = LuaConfig(ConfigAPI())
        self.lua.run_string(text, "fuzz")
        config = self.lua.api.config
        self.config = config
        # The pipeline and counters wired as the server wires them.
        server = DNSServer(config)
        self.pipeline, self.stats = server.pipeline, server.stats
        # Lua's collector as the server runs it: stopped, and full collections between
        # queries (config/luagc.py says why: the incremental one confuses lupa).
        self.collector = config.lua_collector
        if self.collector is not None:
            self.collector.take_over()
        everyone = NetmaskGroup(["0.0.0.0/0", "::/0"])
        self.udp = UDPFrontend(_udp_socket(), self.pipeline, everyone, self.stats, config.settings)
        # Never accepted on: the TCP target hands the frontend a memory stream instead.
        self._listening = bind_tcp("127.0.0.1", 0)
        self.tcp = TCPFrontend(
            trio.SocketListener(trio.socket.from_stdlib_socket(self._listening)),
            self.pipeline,
            everyone,
            self.stats,
            config.settings,
        )
        self.reply: Reply = echo

    def close(self) -> None:
        for server in self.config.routing.servers:
            server.close()
        for listener in self.config.network_listeners:
            listener.close()
        self.udp.sock.close()
        self._listening.close()  # outside a Trio run: the standard socket itself
        self.backend.close()
        self.client.close()
        # The configuration's network endpoints (their sockets) go with the Lua state.
        self.lua.lua.execute("filter = nil; listener = nil; collectgarbage()")

    async def _play_backend(self) -> None:
        """Answer every query forwarded to the backend with ``self.reply(query)``."""
        while True:
            await trio.lowlevel.wait_readable(self.backend)
            while True:
                try:
                    query, sender = self.backend.recvfrom(65535)
                except BlockingIOError:
                    break
                reply = self.reply(query)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        self.backend.sendto(reply, sender)

    async def serving(self, body: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        """Run ``body`` with the backends' receive loops and the backend player running;
        ``body`` starts query tasks in the nursery it is given, which is left only when
        every one of them has ended (answered, or timed out in mock time)."""
        async with trio.open_nursery() as backends:
            for server in self.config.routing.servers:
                await backends.start(server.receive_loop)
            backends.start_soon(self._play_backend)
            async with trio.open_nursery() as queries:
                await body(queries)
            backends.cancel_scope.cancel()
        if self.collector is not None:
            self.collector.collect()  # between queries, as the server's collector runs

    async def udp_exchange(self, datagrams: list[bytes]) -> list[bytes]:
        """Datagrams from a client to the UDP frontend; the answers the client got."""
        address = self.client.getsockname()

        async def send(queries: trio.Nursery) -> None:
            for datagram in datagrams:
                self.udp._received(datagram, address, queries, trio.current_time())

        await self.serving(send)
        return _drain(self.client)

    async def tcp_exchange(self, stream: bytes) -> bytes:
        """A byte stream from a client to the TCP frontend (then end of stream); what the
        client read back."""
        client, server = trio.testing.memory_stream_pair()
        received = bytearray()

        async def read() -> None:
            while chunk := await client.receive_some(65536):
                received.extend(chunk)

        async def converse(queries: trio.Nursery) -> None:
            queries.start_soon(read)
            await client.send_all(stream)
            await client.send_eof()
            async with server:
                await self.tcp._serve_connection(server, TCP_CLIENT)  # type: ignore[arg-type]

        await self.serving(converse)
        return bytes(received)


def run_mocked(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``fn`` in a fresh Trio run under a mock clock that skips every wait: a
    timeout passes at once, and a hang shows as ``trio.TooSlowError`` (``GUARD``)."""

    async def guarded() -> Any:
        with trio.fail_after(GUARD):
            return await fn(*args)

    return trio.run(guarded, clock=trio.testing.MockClock(autojump_threshold=0))


def check_answers(queries: list[bytes], answers: list[bytes]) -> None:
    """What every answer must be, whatever the query and the backend's reply were: a DNS
    header at least, with QR set and the ID of a query the client sent; and when it carries
    a question, the question of a query with that ID (any case): nobody is ever given the
    answer to another question, from a backend, the cache or a rule."""
    questions: dict[bytes, set[bytes]] = {}
    for query in queries:
        try:
            end = read_question(query)[4]
        except MalformedQuery:
            end = 0  # never answered with a question
        questions.setdefault(query[:2], set()).add(query[12:end].lower() if end else b"")
    for answer in answers:
        assert len(answer) >= 12, f"answer shorter than a header: {answer.hex()}"
        assert answer[2] & 0x80, f"answer without QR: {answer.hex()}"
        asked = questions.get(answer[:2])
        assert asked is not None, f"answer with an ID nobody asked for: {answer.hex()}"
        if answer[4:6] != b"\x00\x00":
            assert any(q and answer[12 : 12 + len(q)].lower() == q for q in asked), (
                f"answer to another question: {answer.hex()}"
            )


# --- the targets ----------------------------------------------------------------------------


class Targets:
    """The fuzz targets, each a function of the input bytes; the labs they use are made
    once (loading a configuration costs far more than an input). ``findings`` must be
    installed (or ``watching``) for the targets to see what the server logs."""

    def __init__(self) -> None:
        self.findings = Findings()
        self._tmp = tempfile.TemporaryDirectory(prefix="triodist-fuzz-")
        tmp = self._tmp.name
        self.filter_path = os.path.join(tmp, "filter.sock")
        self.filter_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.filter_sock.bind(self.filter_path)
        self.filter_sock.setblocking(False)
        self.listener_path = os.path.join(tmp, "listener.sock")
        self.plain = Lab(PLAIN)
        self.rules = Lab(RULES)
        self.self_answered = Lab(SELF_ANSWERED)
        self.held = Lab(ASYNC, filter=self.filter_path, listener=self.listener_path)
        self.by_name: dict[str, Callable[[bytes], None]] = {
            "query": self.query,
            "tcp": self.tcp,
            "reply": self.reply,
            "listener": self.listener,
            "filter": self.filter,
        }

    def close(self) -> None:
        for lab in (self.plain, self.rules, self.self_answered, self.held):
            lab.close()
        self.filter_sock.close()
        self._tmp.cleanup()

    def query(self, data: bytes) -> None:
        """A client's datagram through the rule-heavy configuration."""
        lab = self.rules
        lab.reply = echo
        answers = run_mocked(lab.udp_exchange, [data])
        self.findings.check()
        check_answers([data], answers)
        assert len(answers) <= 1, "more than one answer to one query"

    def tcp(self, data: bytes) -> None:
        """A client's byte stream: the queries before the first frame that is not one are
        answered, each once and in order (the configuration answers everything itself, at
        once), and nothing after it."""
        lab = self.self_answered
        received = run_mocked(lab.tcp_exchange, data)
        self.findings.check()
        answers = frames(received)
        check_answers(frames(data), answers)
        expected = [q[:2] for q in leading_queries(frames(data))]
        assert [a[:2] for a in answers] == expected, "not one answer per query, in order"

    def reply(self, data: bytes) -> None:
        """A backend's datagram as the reply to the query it names (or to a default query),
        through both configurations; then the same question again, which the cache may
        answer, with the second client's ID."""
        query = query_for(data)
        again = b"\x43\x21" + query[2:]

        def backend(forwarded: bytes) -> bytes:
            # The ID the proxy chose, the rest fuzzed; QR forced on while a reply with QR
            # clear is still taken for an answer (a known bug, tests/test_fuzz.py has its
            # regression test): otherwise every run would stop on it within seconds.
            reply = bytearray(forwarded[:2] + data[2:])
            if len(reply) > 2 and KNOWN_BUG_QR_CLEAR_REPLY:
                reply[2] |= 0x80
            return bytes(reply)

        for lab in (self.plain, self.rules):
            lab.reply = backend
            answers = run_mocked(lab.udp_exchange, [query])
            self.findings.check()
            check_answers([query], answers)
            lab.reply = echo
            answers = run_mocked(lab.udp_exchange, [again])
            self.findings.check()
            check_answers([again], answers)

    def listener(self, data: bytes) -> None:
        """A datagram to the network listener while three queries are held."""
        lab = self.held
        lab.reply = echo
        lab.lua.lua.execute("nextQueryID = 0")
        listener: NetworkListener = lab.config.network_listeners[0]
        answers = run_mocked(self._listener_round, listener, data)
        self.findings.check()
        check_answers(HELD_QUERIES, answers)
        assert all(e.errors == 0 for e in listener.endpoints), "the callback failed"
        assert not lab.config.async_registry.held, "a query still held after its timeout"

    async def _listener_round(self, listener: NetworkListener, data: bytes) -> list[bytes]:
        lab = self.held
        address = lab.client.getsockname()
        listener.open()
        try:
            async with trio.open_nursery() as receiving:
                listener.start_tasks(receiving)

                async def hold_then_deliver(queries: trio.Nursery) -> None:
                    for query in HELD_QUERIES:
                        lab.udp._received(query, address, queries, trio.current_time())
                    _drain(self.filter_sock)  # what the component would judge
                    with (
                        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
                        contextlib.suppress(OSError),  # too long for a datagram
                    ):
                        sender.sendto(data, self.listener_path)
                    # No wait here: the datagram is queued already, so the listener reads
                    # it before the mock clock can jump to the queries' timeouts.

                await lab.serving(hold_then_deliver)
                receiving.cancel_scope.cancel()
        finally:
            listener.close()
        return _drain(lab.client)

    def filter(self, data: bytes) -> None:
        """A datagram to the external filter, then a well-formed query: the filter goes on
        and answers the second."""
        verdicts = self._run_filter(data)
        assert verdicts[-1:] == [b"4660 refuse"], f"no verdict after the datagram: {verdicts}"

    def _run_filter(self, data: bytes) -> list[bytes]:
        query = dns.message.make_query("ads.example.org.", "A")
        query.id = 4660
        rules = parse_rules("block ads.example.org\n")

        async def round_trip() -> list[bytes]:
            stats: Counter[str] = Counter()
            listen, feed = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            reply = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            reply.setblocking(False)
            with listen, feed, reply, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as back:
                back.bind(self.filter_path + ".verdicts")
                back.setblocking(False)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            filter_receive_loop,
                            trio.socket.from_stdlib_socket(listen),
                            reply,
                            self.filter_path + ".verdicts",
                            rules,
                            stats,
                        )
                        expected = 1
                        with contextlib.suppress(OSError):  # too long for a datagram
                            feed.send(data)
                            expected = 2
                        feed.send(query.to_wire())
                        # A datagram is processed whole once counted: no await in between.
                        while stats["received"] < expected:  # noqa: ASYNC110
                            await trio.sleep(0.001)
                        nursery.cancel_scope.cancel()
                    return _drain(back)
                finally:
                    os.unlink(self.filter_path + ".verdicts")

        return run_mocked(round_trip)


def query_for(reply: bytes) -> bytes:
    """The query a reply answers: its question (decompressed), RD set, EDNS with DO when
    the reply has additional records; the default query when it has no readable question."""
    try:
        qname, _, qtype, qclass, _ = read_question(reply)
    except MalformedQuery:
        return DEFAULT_QUERY
    additional = _HEADER.unpack_from(reply, 0)[5]
    opt = b"\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00" if additional else b""
    header = _HEADER.pack(0x1234, 0x0100, 1, 0, 0, 1 if opt else 0)
    return header + qname + struct.pack("!HH", qtype, qclass) + opt


def corpus_inputs(target: str) -> Iterator[bytes]:
    """The seed inputs of a target, from fuzz/corpus."""
    directory = {
        "query": "queries",
        "tcp": "streams",
        "reply": "responses",
        "listener": "listener",
        "filter": "queries",
    }[target]
    for path in sorted((CORPUS / directory).iterdir()):
        yield path.read_bytes()


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1] not in ("query", "tcp", "reply", "listener", "filter"):
        sys.exit(__doc__)
    name = argv.pop(1)
    targets = Targets()
    targets.findings.install()
    atheris.Setup(argv, targets.by_name[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
