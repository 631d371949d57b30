"""Coverage-guided fuzz targets for the code that reads untrusted bytes (atheris).

    pip install -e '.[fuzz]'          # or: pip install atheris
    python fuzz/targets.py TARGET [libFuzzer options] [corpus directories]
    python fuzz/targets.py reply -max_total_time=120 /tmp/reply-corpus fuzz/corpus/responses
    python fuzz/targets.py console-seeds     # (re)writes fuzz/corpus/console

Targets (fuzz/README.md says more):

``query``     one datagram from a client, through the UDP frontend and the whole query
              path of a rule-heavy configuration (rules, spoofing, cache, backend);
``tcp``       a byte stream from a client, through the TCP frontend's framing;
``reply``     one datagram from a backend, as the reply to the query it carries, through
              reply matching, the cache and the response rules (two configurations);
``listener``  one datagram to a network listener, read by a Lua callback modelled on
              ``examples/async-filter.lua`` while queries are suspended;
``filter``    one datagram to the external filter of ``triodist/testing/component.py``;
``console``   one connection to the console (dnsdist's control socket): raw bytes in
              place of the handshake, or a session with the right key whose commands
              (Lua from a safe vocabulary) and broken frames come from the input.

Every input runs the real code in a fresh ``trio.run`` under a mock clock (timeouts
pass at once), over real loopback, TCP and unix sockets. A finding is an exception that
escapes, a hang, an answer that breaks an invariant (a client always gets its own ID
back), or an error the server caught and logged where none belongs (``Findings``):
the frontends' and the rules' catch-alls would otherwise hide the very bugs a fuzzer
is for. Without atheris this module still imports, so that the tests can run every
target over the seed corpus (``tests/test_fuzz.py``).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _instrumentation() -> contextlib.AbstractContextManager[Any]:
    """Instrument triodist and dnspython for coverage, but only when fuzzing: imported by
    the tests (with or without atheris installed), or writing the console's seeds,
    nothing is instrumented."""
    if __name__ != "__main__" or sys.argv[1:2] == ["console-seeds"]:
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["triodist", "dns"])


with _instrumentation():
    import dns.exception
    import dns.message
    import dns.name
    import trio
    import trio.testing

    from triodist.asyncproc.listener import NetworkListener
    from triodist.config.api import ConfigAPI
    from triodist.config.runtime import LuaConfig
    from triodist.frontends.common import bind_tcp
    from triodist.frontends.tcp import TCPFrontend
    from triodist.frontends.udp import UDPFrontend
    from triodist.ops.console.protocol import NONCE_BYTES, SecretChannel
    from triodist.ops.console.protocol import frame as console_frame
    from triodist.ops.console.server import FRAME_TIMEOUT, serve
    from triodist.rules.matchers import NetmaskGroup
    from triodist.server import DNSServer, ServerConfig
    from triodist.system.unixtrust import pass_credentials
    from triodist.testing.component import Replies, parse_rules
    from triodist.testing.component import receive_loop as filter_receive_loop
    from triodist.wire.question import MalformedQuery, read_question

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

#: The console's key (32 bytes), and a configuration that serves a console with it. The
#: server is never started (no DNSServer): it is there for ``getServer(0)`` and friends.
CONSOLE_KEY = bytes(range(32))
CONSOLE = f"""
setKey("{base64.b64encode(CONSOLE_KEY).decode()}")
newServer{{address="192.0.2.1", name="b1", healthCheckMode="up"}}
"""

#: What a console command is made of: each input byte of a command picks one of these
#: (modulo their number), and the command is the picks joined by spaces. Nothing here
#: can loop or grow without bound, or change the server: no ``while``, ``for``,
#: ``repeat``, ``goto`` or ``function`` (so no loop and no recursion), no ``=`` (so no
#: variable to double again and again), no ``[`` indexing (``[[`` opens a string), and
#: only names that read: no ``os``, ``io``, ``load``, ``_G``, no ``string.rep``,
#: ``gsub`` or ``format``, no ``set*``/``add*``/``newServer``/``reloadConfig``/``shutdown``.
#: Strings may hold anything, since nothing can run them.
CONSOLE_TOKENS: tuple[bytes, ...] = tuple(
    t.encode() if isinstance(t, str) else t
    for t in (
        # names: Lua's own (read only), the configuration's (read only), none at all
        "print", "tostring", "tonumber", "type", "error", "pcall", "select", "string",
        "math", "string.upper", "string.lower", "string.len", "string.sub", "string.byte",
        "string.char", "string.reverse", "math.floor", "math.max", "math.huge",
        "showServers", "showServerPolicy", "showConsoleACL", "getServer", "getServers",
        "newDNSName", "newCA", "newNMG", "testCrypto", "makeKey", "dumpStats", "x", "nosuch",
        "_VERSION", "upper", "len", "sub", "byte", "toString", "getName", "isUp",
        # keywords
        "nil", "true", "false", "not", "and", "or", "if", "then", "else", "elseif", "end",
        "do", "return", "local", "break",
        # punctuation
        "(", ")", "{", "}", ",", ";", "..", "+", "-", "*", "/", "%", "^", "#", "==", "~=",
        "<", "<=", ">", ">=", ":", ".", "...", "[[", "]]", "--", "\n", "'", '"', "\\",
        # literals
        "0", "1", "2", "3", "42", "-1", "0.5", "1e308", "0x7fffffff", "1e-5", '""', '"x"',
        "'a b'", '"é"', '"\\255\\0"', "[[long]]", "[==[x]]==]", '"192.0.2.1"', '"::1"',
        '"127.0.0.1/8"', '"www.example.org."', '"%s %d"', "'\\n'",
        # bytes that are not UTF-8 (the console passes them through)
        b'"\xff\xfe"', b"\xff", b"\x00", b"\xc3", b"\xed\xa0\x80",
    )
)  # fmt: skip

# What the first byte of a console input says (flags).
#: A session: nonces exchanged, then records (else: the rest of the input, raw).
CONSOLE_SESSION = 0x01
#: Keep the connection open, silent, for twice FRAME_TIMEOUT before ending it.
CONSOLE_HOLD = 0x02
#: End the connection with a reset (SO_LINGER 0) instead of an end of stream.
CONSOLE_RESET = 0x04
#: Bits 3-5: send in chunks of this many bytes (0: all at once), a checkpoint between.
CONSOLE_CHUNKS = (0, 1, 2, 5, 11, 24, 29, 100)

# The records of a session: one byte, modulo 8, then their arguments.
#: n, then n bytes: a command of n tokens (CONSOLE_TOKENS). Answered, and the answer opens.
REC_COMMAND = 0
#: n, then n bytes: a command returning them in a string literal; the answer is them.
REC_ECHO = 1
#: A message of length 0 (not encrypted at all): answered with one.
REC_EMPTY = 2
#: n, then n bytes: a frame of the right length holding them (not a box of this key).
REC_GARBAGE = 3
#: 4 bytes of length, n, then n bytes: a length header that need not be the truth.
REC_LYING = 4
#: The last box sent, again (its nonce is used up); "1+2" sealed two nonces ahead if none.
REC_REPLAY = 5
#: A command sealed one nonce ahead (a message lost in between).
REC_SKIP = 6
#: n, then n tokens: a command's frame cut short after (next byte) bytes.
REC_CUT = 7
#: The records of one input, at most (each costs a round trip and a Lua call).
MAX_RECORDS = 32
#: The client's nonce in a session (the server's is random).
CLIENT_NONCE = bytes(range(100, 100 + 24))


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
    not one (shorter than a header, QR set, a question it cannot read); one with no
    question is a query (answered NOTIMP)."""
    queries = []
    for message in messages:
        if len(message) < 12 or message[2] & 0x80:
            break
        if message[4:6] == b"\x00\x00":  # no question: answered NOTIMP, as dnsdist does
            queries.append(message)
            continue
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


# --- the console: its server on loopback TCP, the clients the harness plays -----------------


@dataclass
class ConsoleHost:
    """What ``console.serve`` needs of the server: its configuration."""

    config: ServerConfig


def console_host() -> ConsoleHost:
    """The console of ``CONSOLE``, on 127.0.0.1 (a new port each time it is served)."""
    lua = LuaConfig(ConfigAPI())
    lua.run_string(CONSOLE, "fuzz-console")
    config = lua.api.config
    config.console.addresses[:] = [("127.0.0.1", 0)]
    return ConsoleHost(config)


#: What the console logs about a session that went well: its start and its end.
CLEAN_SESSION = frozenset({"Got control connection from %s", "Closed control connection from %s"})


class ConsoleLog(logging.Handler):
    """What the console logged about each client (by its address), for one input."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_client: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and record.args:
            self.by_client.setdefault(str(record.args[0]), []).append(str(record.msg))

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        logger = logging.getLogger("triodist.console")
        level = logger.level
        self.by_client = {}
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


def console_command(picks: bytes) -> bytes:
    """A console line: one token of ``CONSOLE_TOKENS`` per byte, joined by spaces."""
    return b" ".join(CONSOLE_TOKENS[b % len(CONSOLE_TOKENS)] for b in picks)


def console_echo(payload: bytes) -> bytes:
    """A console line returning ``payload`` (any bytes): a Lua string literal, the bytes
    as they are but for the four a short string cannot hold (escaped as ``\\ddd``)."""
    body = b"".join(b"\\%03d" % b if b in b'"\\\n\r' else bytes([b]) for b in payload)
    return b'"' + body + b'"'


class InputReader:
    """The input, read from the front; past its end, bytes are 0 and chunks empty."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        chunk = self.take(1)
        return chunk[0] if chunk else 0

    def take(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        return self.take(len(self.data))


class ConsoleConnection:
    """The client end of one console connection: raw bytes, sent in chunks of ``chunk``
    bytes (0: all at once), and what comes back; ``closed`` once the server closed it."""

    def __init__(self, stream: trio.SocketStream, chunk: int = 0) -> None:
        self.stream = stream
        self.chunk = chunk
        self.buffer = bytearray()
        self.closed = False
        #: The server's nonce, once received; the last command's box, once sent.
        self.server_nonce: bytes | None = None
        self.last_box: bytes | None = None

    async def send(self, data: bytes) -> None:
        step = self.chunk or max(len(data), 1)
        try:
            for start in range(0, len(data), step):
                await self.stream.send_all(data[start : start + step])
                if self.chunk:
                    await trio.lowlevel.checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True  # reset by the server

    async def _fill(self) -> bool:
        try:
            chunk = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    async def receive(self, size: int) -> bytes | None:
        """``size`` bytes, or None if the connection ends first."""
        while len(self.buffer) < size:
            if not await self._fill():
                return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def message(self) -> bytes | None:
        """A message (its length, then as many bytes): what follows its length."""
        header = await self.receive(4)
        return None if header is None else await self.receive(int.from_bytes(header, "big"))

    async def until_closed(self) -> bytes:
        """Everything the server sends (what was not read yet included) until it closes."""
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def handshake(self, nonce: bytes) -> SecretChannel | None:
        """Nonces exchanged: the channel, or None if the server closed the connection."""
        await self.send(nonce)
        self.server_nonce = await self.receive(NONCE_BYTES)
        if self.server_nonce is None:
            return None
        return SecretChannel(CONSOLE_KEY, nonce, self.server_nonce)

    async def command(self, channel: SecretChannel, line: bytes) -> bytes:
        """Send one command, return the answer (which must come, and must open)."""
        self.last_box = channel.seal(line)
        await self.send(console_frame(self.last_box))
        box = await self.message()
        assert box is not None, f"the console closed the connection on the command {line!r}"
        return channel.open(box)


async def check_console_answers(address: tuple[str, int]) -> None:
    """A good client as ``dnsdist -c`` is one: nonces, the empty line, then ``1+2``."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        client = ConsoleConnection(stream)
        channel = await client.handshake(bytes(NONCE_BYTES))
        assert channel is not None, "the console closed a good client's connection at once"
        for line, expected in ((b"", b""), (b"1+2", b"3\n")):
            answer = await client.command(channel, line)
            assert answer == expected, f"a good client's {line!r} answered with {answer!r}"


def console_seeds() -> dict[str, bytes]:
    """The seed inputs of the console target, by file name (fuzz/corpus/console)."""

    def tokens(*words: str | bytes) -> bytes:
        picks = bytes(CONSOLE_TOKENS.index(w.encode() if isinstance(w, str) else w) for w in words)
        return bytes([REC_COMMAND, len(picks)]) + picks

    def echo(payload: bytes) -> bytes:
        return bytes([REC_ECHO, len(payload)]) + payload

    def chunks(size: int) -> int:
        return CONSOLE_CHUNKS.index(size) << 3

    nonce = bytes(range(24))
    one_plus_two = tokens("1", "+", "2")
    session = bytes([CONSOLE_SESSION])
    return {
        "raw-nothing": b"\x00",
        "raw-half-nonce-held": bytes([CONSOLE_HOLD]) + nonce[:10],
        "raw-nonce-held": bytes([CONSOLE_HOLD]) + nonce,
        "raw-nonce-empty-messages": b"\x00" + nonce + bytes(8),
        "raw-nonce-garbage-frame": b"\x00" + nonce + console_frame(b"not a box" * 3),
        "raw-nonce-oversized-length": b"\x00" + nonce + (1 << 20 | 1).to_bytes(4, "big"),
        "raw-dribbled-reset": bytes([CONSOLE_RESET | chunks(5)]) + nonce + bytes(4) + b"\x00\x00",
        "session-commands": session
        + one_plus_two
        + bytes([REC_EMPTY])
        + tokens("print", "(", "'a b'", ",", "1", ",", "nil", ")")
        + tokens("{", "1", ",", "0.5", ",", "42", "}")
        + tokens("getServer", "(", "0", ")")
        + tokens("newDNSName", "(", '"www.example.org."', ")")
        + tokens("showServers", "(", ")")
        + tokens("tostring", "(", "1e308", "*", "1e308", ")", "..", '"x"'),
        "session-errors": session
        + tokens("nosuch", "(", ")")
        + tokens("error", "(", "'a b'", ")")
        + tokens("error", "(", "{", "}", ")")
        + tokens("getServer", "(", "42", ")")
        + tokens("newCA", "(", '"x"', ")")
        + tokens("1", "+", "+")
        + tokens("local", "x", "x", "(", ")")
        + tokens("print", "(", "'a b'", ")", "error", "(", '"x"', ")")
        + tokens("pcall", "(", "error", ",", "getServer", ")"),
        "session-echo": session + echo(b"hello") + echo(b'\xff\xfe"\\\n\r\x00\xed\xa0\x80 \xc3'),
        "session-idle-held": bytes([CONSOLE_SESSION | CONSOLE_HOLD]) + one_plus_two,
        "session-garbage-frame": session + one_plus_two + bytes([REC_GARBAGE, 20]) + bytes(20),
        "session-lying-length-held": bytes([CONSOLE_SESSION | CONSOLE_HOLD])
        + one_plus_two
        + bytes([REC_LYING])
        + (100).to_bytes(4, "big")
        + bytes([5])
        + b"short",
        "session-oversized-length": session + bytes([REC_LYING]) + b"\xff\xff\xff\xff\x00",
        "session-replay": session + one_plus_two + bytes([REC_REPLAY]),
        "session-reflected": session + bytes([REC_REPLAY]),
        "session-skipped-nonce": session + bytes([REC_SKIP]) + one_plus_two[1:],
        "session-cut-frame": session + bytes([REC_CUT]) + one_plus_two[1:] + bytes([9]),
        "session-dribbled-reset": bytes([CONSOLE_SESSION | CONSOLE_RESET | chunks(1)])
        + one_plus_two
        + echo(b"x"),
    }


def write_console_seeds() -> None:
    """(Re)write fuzz/corpus/console from ``console_seeds``."""
    directory = CORPUS / "console"
    directory.mkdir(exist_ok=True)
    for name, data in console_seeds().items():
        (directory / name).write_bytes(data)


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
        self.console_host = console_host()
        self.console_log = ConsoleLog()
        self.by_name: dict[str, Callable[[bytes], None]] = {
            "query": self.query,
            "tcp": self.tcp,
            "reply": self.reply,
            "listener": self.listener,
            "filter": self.filter,
            "console": self.console,
        }

    def close(self) -> None:
        for lab in (self.plain, self.rules, self.self_answered, self.held):
            lab.close()
        self.filter_sock.close()
        self._tmp.cleanup()

    def console(self, data: bytes) -> None:
        """One connection to the console, raw or a session (``CONSOLE_*``, ``REC_*``); a
        good client's ``1+2`` while it is open; then its end. The console must go on
        serving, answer every well-formed message (and a command's answer must open),
        send nothing but zero lengths once a message was not, keep an idle session open,
        and log nothing but its start and end for a session that went well."""
        try:
            with self.console_log.watching():
                run_mocked(self._console_round, data)
        except BaseException as exc:
            failure = _alone(exc) if isinstance(exc, BaseExceptionGroup) else exc
            try:
                self.findings.check()  # what the console logged, the cause most often
            except AssertionError as logged:
                raise logged from failure
            raise failure from None
        self.findings.check()

    async def _console_round(self, data: bytes) -> None:
        ended = False

        async def run_server(
            task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            nonlocal ended
            try:
                await serve(self.console_host, task_status=task_status)
            finally:
                ended = True

        flags = data[0] if data else 0
        reader = InputReader(data[1:])
        async with trio.open_nursery() as nursery:
            [address] = await nursery.start(run_server)
            stream = await trio.open_tcp_stream(*address)
            client_id = "{}:{}".format(*stream.socket.getsockname()[:2])
            client = ConsoleConnection(stream, CONSOLE_CHUNKS[(flags >> 3) & 7])
            async with stream:
                if flags & CONSOLE_SESSION:
                    clean = await self._console_session(client, reader)
                else:
                    clean = False
                    await client.send(reader.rest())
                await check_console_answers(address)  # while this one is still open
                tail = b""
                if flags & CONSOLE_HOLD:
                    with trio.move_on_after(2 * FRAME_TIMEOUT):
                        tail += await client.until_closed()
                    assert not (clean and client.closed), "the console closed an idle session"
                if flags & CONSOLE_RESET:
                    linger = struct.pack("ii", 1, 0)
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                else:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_eof()
                    tail += await client.until_closed()
            # Until the server has seen the end, logged it and closed its end.
            await trio.testing.wait_all_tasks_blocked()
            assert not ended, "the console stopped serving"
            nursery.cancel_scope.cancel()
        if flags & CONSOLE_SESSION:
            # After a message that was not a good one, only answers to empty messages.
            assert tail.count(0) == len(tail), f"the console sent {tail.hex()} after a bad message"
            if clean and not flags & CONSOLE_RESET:
                said = self.console_log.by_client.get(client_id, [])
                assert set(said) <= CLEAN_SESSION, f"a good session ended with: {said}"
        else:
            # Its nonce once a nonce came, then answers to empty messages: nothing decrypts.
            sent = len(data) - 1
            assert sent >= NONCE_BYTES or not tail, f"the console sent {tail.hex()} before a nonce"
            assert tail[NONCE_BYTES:].count(0) == len(tail[NONCE_BYTES:]), (
                f"the console sent {tail.hex()} to raw bytes"
            )

    async def _console_session(self, client: ConsoleConnection, reader: InputReader) -> bool:
        """Nonces exchanged, then records up to the first that is not a well-formed message,
        which is sent with the rest of the input; whether every record was well formed."""
        channel = await client.handshake(CLIENT_NONCE)
        assert channel is not None, "the console closed the connection before its nonce"
        for _ in range(MAX_RECORDS):
            if reader.done:
                break
            record = reader.byte() % 8
            if record in (REC_COMMAND, REC_ECHO):
                payload = reader.take(reader.byte())
                if record == REC_COMMAND:
                    await client.command(channel, console_command(payload))
                else:
                    line = console_echo(payload)
                    answer = await client.command(channel, line)
                    assert answer == payload + b"\n", f"{line!r} answered with {answer!r}"
                continue
            if record == REC_EMPTY:
                await client.send(console_frame(b""))
                assert await client.message() == b"", "an empty message not answered with one"
                continue
            if record == REC_GARBAGE:
                bad = console_frame(reader.take(reader.byte()))
            elif record == REC_LYING:
                bad = reader.take(4).ljust(4, b"\0") + reader.take(reader.byte())
            elif record == REC_REPLAY:
                # The last command again (its nonce is used up), or a box the server
                # could have sent (the other direction's nonce) when there was none.
                box = client.last_box
                if box is None:
                    assert client.server_nonce is not None
                    server = SecretChannel(CONSOLE_KEY, client.server_nonce, CLIENT_NONCE)
                    box = server.seal(b"1+2")
                bad = console_frame(box)
            elif record == REC_SKIP:
                channel.seal(b"")
                bad = console_frame(channel.seal(console_command(reader.take(reader.byte()))))
            else:
                whole = console_frame(channel.seal(console_command(reader.take(reader.byte()))))
                bad = whole[: reader.byte() % len(whole)]
            await client.send(bad + reader.rest())
            return False
        if client.last_box is None:
            # As real clients do: a first message proves the key, and only then may a
            # session idle (before it, the console closes it after FRAME_TIMEOUT).
            await client.command(channel, b"")
        return True

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
            # As bind_datagram_socket does: the filter hears only senders with credentials.
            pass_credentials(listen)
            replies = Replies(self.filter_path + ".verdicts", stats)
            with listen, feed, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as back:
                back.bind(self.filter_path + ".verdicts")
                back.setblocking(False)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            filter_receive_loop,
                            trio.socket.from_stdlib_socket(listen),
                            replies,
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
                    replies.close()
                    os.unlink(self.filter_path + ".verdicts")

        return run_mocked(round_trip)


def _alone(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception a nursery wrapped, when it is the only one (a clearer report)."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner


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
        "console": "console",
    }[target]
    for path in sorted((CORPUS / directory).iterdir()):
        yield path.read_bytes()


def main(argv: list[str]) -> None:
    if argv[1:2] == ["console-seeds"]:
        write_console_seeds()
        return
    import atheris

    if len(argv) < 2 or argv[1] not in ("query", "tcp", "reply", "listener", "filter", "console"):
        sys.exit(__doc__)
    name = argv.pop(1)
    targets = Targets()
    targets.findings.install()
    atheris.Setup(argv, targets.by_name[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
