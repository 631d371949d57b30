"""The per-query error boundary, and logging an error that repeats at the query rate.

An unexpected error while answering one query (a bug on our side, not a rule's error, which
the pipeline handles itself) is logged once a minute per distinct error, counted
(``unexpected-errors``) and answered SERVFAIL; over TCP the connection's other queries go on,
and the server goes on.
"""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace
from typing import Any

import dns.message
import dns.rcode
import pytest
import trio
from conftest import StartTriodist, accounted, frame, query, read_frame

from triodist.asyncproc.registry import AsyncRegistry
from triodist.cli import _maintenance
from triodist.config.runtime import load_config
from triodist.frontends.tcp import Outbox
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.message import DNSQuestion


def _raise_for(pipeline: Any, method: str, name: bytes) -> None:
    """Make ``pipeline.method`` raise for queries whose wire bytes hold ``name``."""
    original = getattr(pipeline, method)

    def broken(dq: Any, *args: Any) -> Any:
        if name in bytes(dq.data):
            raise RuntimeError("a bug in the making")
        return original(dq, *args)

    setattr(pipeline, method, broken)


@pytest.mark.parametrize("where", ["process", "_backend_replied"])
async def test_an_unexpected_error_over_tcp_answers_servfail_and_the_connection_goes_on(
    start_triodist: StartTriodist, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    # "process": inline, in the reader; "_backend_replied": in the query's own task.
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    _raise_for(t.server.pipeline, where, b"\x04boom")
    msgs = [query(name) for name in ("boom.example.org.", "www.example.org.")] * 3
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        await stream.send_all(b"".join(frame(m.to_wire()) for m in msgs))
        buffer = bytearray()
        replies = {}
        with trio.fail_after(5):
            for _ in msgs:
                data = await read_frame(stream, buffer)
                assert data is not None, "the connection was closed"
                reply = dns.message.from_wire(data)
                replies[reply.id] = reply
        # Still open: one more query on it is answered.
        await stream.send_all(frame(query("www.example.org.").to_wire()))
        with trio.fail_after(5):
            assert await read_frame(stream, buffer) is not None
    for msg in msgs:
        expected = dns.rcode.SERVFAIL if "boom" in msg.question[0].name.to_text() else 0
        assert replies[msg.id].rcode() == expected
        assert replies[msg.id].question == msg.question
    assert t.stats["unexpected-errors"] == 3
    await accounted(t)
    # Three errors, one line (and the detail at DEBUG).
    lines = [r for r in caplog.records if "Unexpected error" in r.getMessage()]
    assert len([r for r in lines if r.levelno >= logging.WARNING]) == 1


async def test_a_malformed_query_over_tcp_is_dropped_and_the_connection_goes_on(
    start_triodist: StartTriodist,
) -> None:
    """A query that cannot be read (its name cut short) in a well-framed message: dropped
    and counted, and the client's next query on the same connection is answered, as by
    dnsdist (the framing is intact, so nothing after it is lost)."""
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    bad = query("www.example.org.").to_wire()[:16]  # the header, then "\x03www" unended
    good = query("www.example.org.")
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        await stream.send_all(frame(bytes(bad)) + frame(good.to_wire()))
        with trio.fail_after(5):
            data = await read_frame(stream, bytearray())
        assert data is not None, "the connection was closed"
        assert dns.message.from_wire(data).id == good.id
    assert t.stats["non-compliant-queries"] == 1
    await accounted(t)


@pytest.mark.parametrize("where", ["process", "_backend_replied"])
async def test_an_unexpected_error_over_udp_answers_servfail(
    start_triodist: StartTriodist, where: str
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    _raise_for(t.server.pipeline, where, b"\x04boom")
    boom = await t.ask("boom.example.org.")
    assert boom is not None and boom.rcode() == dns.rcode.SERVFAIL
    www = await t.ask("www.example.org.")
    assert www is not None and www.rcode() == 0
    assert t.stats["unexpected-errors"] == 1
    await accounted(t)


async def test_a_repeated_error_is_written_once_an_interval_with_its_count(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("triodist.test.ratelog")
    rated = RateLimitedLog(logger, interval=60)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for _ in range(1000):
            rated.warning("same", "it broke", exc=ValueError("detail"))
        rated.warning("other", "something else broke")
        await trio.sleep(61)
        rated.warning("same", "it broke again")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "it broke",
        "something else broke",
        "it broke again (and 999 more like it since the last one)",
    ]
    # The detail with the line written, not with each of the 999 repeats.
    assert sum(1 for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info) == 1


def test_the_errors_remembered_are_bounded() -> None:
    rated = RateLimitedLog(logging.getLogger("triodist.test.ratelog"), max_keys=10)
    for n in range(1000):
        rated.warning(f"error {n}", "x")
    assert len(rated._seen) == 10


async def test_a_reset_mid_answer_is_not_an_unexpected_error(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\n')
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect(t.address)
    await sock.send(frame(query("www.example.org.").to_wire()))
    sock.close()
    answer = await t.ask("www.example.org.", tcp=True)
    assert answer is not None
    assert t.stats["unexpected-errors"] == 0
    assert t.stats["tcp-connection-errors"] == 0


async def test_a_rule_that_fails_on_every_query_writes_one_line(
    start_triodist: StartTriodist, caplog: pytest.LogCaptureFixture
) -> None:
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        'addAction(AllRule(), LuaAction(function(dq) error("broken rule") end))\n'
    )
    with caplog.at_level(logging.DEBUG, logger="triodist"):
        for _ in range(50):
            reply = await t.ask("www.example.org.")
            assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    lines = [r for r in caplog.records if "Error while processing query" in r.getMessage()]
    assert len([r for r in lines if r.levelno == logging.WARNING]) == 1
    assert len([r for r in lines if r.levelno == logging.DEBUG]) == 1  # its detail
    assert t.stats["rule-errors"] == 50


async def test_a_rule_whose_error_names_the_query_writes_one_line(
    start_triodist: StartTriodist, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors are told apart by the rule and where they were raised, not by their text:
    one that names each query's name is still one error."""
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        'addAction(LuaRule(function(dq) error("boom " .. dq.qname:toString()) end),'
        " DropAction())\n"
    )
    with caplog.at_level(logging.DEBUG, logger="triodist"):
        for n in range(30):
            reply = await t.ask(f"host{n}.example.org.")
            assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL
    lines = [r for r in caplog.records if "Error while processing query" in r.getMessage()]
    warnings = [r.getMessage() for r in lines if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "boom host0.example.org." in warnings[0]
    assert len([r for r in lines if r.levelno == logging.DEBUG and r.exc_info]) == 1
    assert t.stats["rule-errors"] == 30


async def test_a_failing_maintenance_writes_one_line_a_minute(
    tmp_path: Any, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.lua"
    rules.write_text('function maintenance() error("broken maintenance") end\n')
    # What the loop reads of the reloader: the configuration serving now.
    reloader = SimpleNamespace(current=load_config(str(rules)))
    with caplog.at_level(logging.WARNING, logger="triodist"):
        with trio.move_on_after(130.5):  # 130 calls, one a second
            await _maintenance(reloader)
    lines = [r.getMessage() for r in caplog.records if "Error in maintenance()" in r.getMessage()]
    assert len(lines) == 3, lines  # at 1 s, 61 s and 121 s
    assert "(and 59 more like it" in lines[1]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "waiting"])
async def test_an_error_handing_an_answer_to_the_writer_costs_one_connection(
    start_triodist: StartTriodist,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    inline: bool,
) -> None:
    # A bug past the pipeline (here: in the outbox) is counted, logged once a minute, and
    # ends that connection only; every query read is still counted answered or dropped.
    config = 'newServer{address="$BACKEND"}\n'
    if inline:
        config += 'addAction("www.example.org.", SpoofAction("192.0.2.1"))\n'
    t = await start_triodist(config)
    original = Outbox.put

    def put(self: Outbox, answer: bytes | bytearray) -> None:
        if b"\x03www" in bytes(answer):
            raise RuntimeError("a bug in the outbox")
        original(self, answer)

    monkeypatch.setattr(Outbox, "put", put)
    for _ in range(5):
        assert await t.ask("www.example.org.", tcp=True, timeout=1) is None
    assert await t.ask("mail.example.org.", tcp=True) is not None  # the server goes on
    assert t.stats["unexpected-errors"] == 5
    await accounted(t)
    lines = [r for r in caplog.records if "a bug in the outbox" in r.getMessage()]
    assert len([r for r in lines if r.levelno >= logging.WARNING]) == 1


async def test_an_error_sending_a_udp_answer_costs_that_answer_only(
    start_triodist: StartTriodist, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = await start_triodist('newServer{address="$BACKEND"}\n')

    def broken(*args: Any) -> int:
        raise RuntimeError("a bug in the size check")

    # Every answer over 512 bytes looks at the client's limit: break that.
    monkeypatch.setattr("triodist.frontends.udp.udp_answer_limit", broken)
    assert await t.udp(query("big.example.org.", "TXT", edns=True), timeout=1) is None
    assert await t.ask("www.example.org.") is not None  # the server goes on
    assert t.stats["unexpected-errors"] == 1
    await accounted(t)


async def test_collisions_a_client_can_cause_are_written_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client chooses its query IDs, so how often a key collides is the client's choice.
    registry = AsyncRegistry()

    def question() -> DNSQuestion:
        wire = query("www.example.org.").to_wire()
        return DNSQuestion(bytearray(wire), ("127.0.0.1", 5), ("127.0.0.1", 53), tcp=False)

    assert registry.suspend(question(), 0, 7, 500)
    with caplog.at_level(logging.WARNING, logger="triodist"):
        for _ in range(50):
            assert not registry.suspend(question(), 0, 7, 500)
    assert registry.stats["async-collisions"] == 50
    assert len([r for r in caplog.records if "already suspended" in r.getMessage()]) == 1
