"""Actions written in Python (``PythonAction``, ``PythonResponseAction``), end to end: a
configuration that names ``module:function``, run by the pytest plugin's ``triodist``
fixture on loopback with fake backends, queried over real sockets.

Each test writes its module beside its configuration (the test's ``tmp_path``), where the
action looks for it first. Timeouts run under ``autojump_clock``: no wall time.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Literal

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio
from conftest import until
from helpers import subprocess_env
from replay_captures import Capture
from replay_captures import query as replay_query

from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import load_config
from triodist.rules import Verdict
from triodist.testing.launcher import Proxy, Triodist

BACKEND = {"www.example.org.": "192.0.2.10", "q1.example.org.": "192.0.2.11"}

RULES = """\
newServer{address="192.0.2.1:53", name="resolver1"}
addAction(AllRule(), PythonAction("checks:check", 500))
"""


def module(tmp_path: Path, text: str, name: str = "checks") -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))


async def start(triodist: Triodist, rules: str = RULES) -> Proxy:
    return await triodist.start(rules, backends={"resolver1": dict(BACKEND)})


def addresses(answer: dns.message.Message | None) -> list[str]:
    assert answer is not None
    return [rd.to_text() for rrset in answer.answer for rd in rrset]


# --- the deadline ------------------------------------------------------------------------------

SLOW = """
import trio

async def check(dq):
    await trio.sleep(10)  # a lookup that never comes back in time
    return None
"""


async def test_a_slow_lookup_is_cut_off_at_the_deadline_and_the_query_forwarded(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    module(tmp_path, SLOW)
    proxy = await start(triodist)
    wall, virtual = time.monotonic(), trio.current_time()
    answer = await proxy.query("www.example.org.", timeout=30)
    waited = trio.current_time() - virtual
    # As after an async timeout: fail open, on to the backend, at 500 ms and not 10 s.
    assert addresses(answer) == ["192.0.2.10"]
    assert 0.5 <= waited < 1
    assert time.monotonic() - wall < 5
    assert len(proxy.backend("resolver1").received) == 1
    counters = proxy.counters()
    assert counters["python-calls"] == 1
    assert counters["python-timeouts"] == 1
    assert proxy.server.config.async_registry.awaiting == set()


@pytest.mark.parametrize("policy", ["drop", "servfail"])
async def test_the_async_timeout_policy_applies_to_a_slow_lookup(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock, policy: str
) -> None:
    module(tmp_path, SLOW)
    proxy = await start(triodist, RULES + f'setAsyncTimeoutPolicy("{policy}")\n')
    answer = await proxy.query("www.example.org.", timeout=30)
    if policy == "drop":
        assert answer is None
    else:
        assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
    assert proxy.backend("resolver1").received == []
    assert proxy.counters()["python-timeouts"] == 1


SWALLOWING = """
import trio
from triodist.rules import Verdict

async def check(dq):
    try:
        await trio.sleep(10)
    except BaseException:  # Trio's Cancelled too: a fallback, as sloppy code does
        if dq.qname.toString().startswith("raise."):
            raise LookupError("the lookup was cut short")
        return Verdict.REFUSED
    return None
"""


@pytest.mark.parametrize("name", ["fallback.example.org.", "raise.example.org."])
async def test_a_function_that_catches_the_cancellation_still_times_out(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock, name: str
) -> None:
    # Its deadline came first: the timeout policy decides, not the function's fallback
    # verdict, nor the error it raised on its way out (no SERVFAIL for that).
    module(tmp_path, SWALLOWING)
    proxy = await triodist.start(
        RULES + 'setAsyncTimeoutPolicy("drop")\n', backends={"resolver1": {name: "192.0.2.10"}}
    )
    assert await proxy.query(name, timeout=30) is None
    counters = proxy.counters()
    assert counters["python-timeouts"] == 1
    assert counters["python-errors"] == 0
    assert counters["rule-refused"] == 0
    assert proxy.backend("resolver1").received == []


async def test_waiting_functions_are_cut_off_at_shutdown_and_their_queries_answered(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    module(tmp_path, SLOW)
    proxy = await start(triodist, RULES.replace('"checks:check", 500', '"checks:check", 60000'))
    answers: list[dns.message.Message | None] = []

    async def ask(over: Literal["udp", "tcp"]) -> None:
        answers.append(await proxy.query("www.example.org.", over=over, timeout=120))

    async with trio.open_nursery() as clients:
        clients.start_soon(ask, "udp")
        clients.start_soon(ask, "tcp")
        registry = proxy.server.config.async_registry
        started = await until(lambda: len(registry.awaiting) == 2)
        proxy.server.request_shutdown()  # the grace period answers them: fail-open
    assert trio.current_time() - started < 1  # not at the 60 s deadline, nor the 10 s sleep
    assert [addresses(a) for a in answers] == [["192.0.2.10"]] * 2
    assert proxy.counters()["python-timeouts"] == 2


# --- many at once --------------------------------------------------------------------------------

MANY = """
import trio
from triodist.rules import Verdict

waiting = 0
peak = 0

async def check(dq):
    global waiting, peak
    label = dq.qname.toString().split(".")[0]  # "q<n>"
    n = int(label[1:])
    waiting += 1
    peak = max(peak, waiting)
    try:
        await trio.sleep(1 + (n % 17) / 10)  # each its own delay: they overlap
    finally:
        waiting -= 1
    # Read again after the wait, while the others wait or end: still this query's.
    assert dq.qname.toString() == f"q{n}.example.org."
    if n % 5 == 0:
        return Verdict.REFUSED
    if n % 5 == 1:
        return None  # on to the backend
    return Verdict.spoof(f"127.0.{n // 256}.{n % 256}")
"""


async def test_500_python_actions_at_once_each_get_their_own_verdict(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    module(tmp_path, MANY)
    table = {f"q{n}.example.org.": f"192.0.2.{n % 250}" for n in range(1, 500, 5)}
    rules = RULES.replace('"checks:check", 500', '"checks:check", 5000')
    proxy = await triodist.start(rules, backends={"resolver1": table})
    answers: dict[int, dns.message.Message | None] = {}

    async def ask(n: int) -> None:
        await trio.sleep(n / 1000)  # spread over half a second: no burst lost
        answers[n] = await proxy.query(f"q{n}.example.org.", timeout=30)

    async with trio.open_nursery() as clients:
        for n in range(500):
            clients.start_soon(ask, n)
    assert sorted(answers) == list(range(500))
    for n, answer in answers.items():
        assert answer is not None, n
        if n % 5 == 0:
            assert answer.rcode() == dns.rcode.REFUSED, n
        elif n % 5 == 1:
            assert addresses(answer) == [f"192.0.2.{n % 250}"], n
        else:
            assert addresses(answer) == [f"127.0.{n // 256}.{n % 256}"], n
    assert len(proxy.backend("resolver1").received) == 100
    assert sys.modules["checks"].peak == 500  # all waiting at once, none blocking another
    assert proxy.counters()["python-calls"] == 500


async def test_over_the_bound_a_query_goes_on_without_the_call(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    module(tmp_path, SLOW)
    proxy = await start(triodist, RULES + "setMaxSuspended(1)\n")
    async with trio.open_nursery() as clients:
        clients.start_soon(proxy.query, "www.example.org.")  # waits its 500 ms
        await until(lambda: len(proxy.server.config.async_registry.awaiting) == 1)
        assert "0 held, 1 in Python actions (at most 1)" in proxy.console("showSuspended()")
        # The bound is reached: the second goes on to the backend at once, uncalled.
        start_time = trio.current_time()
        answer = await proxy.query("www.example.org.")
        assert trio.current_time() - start_time < 0.1
    assert addresses(answer) == ["192.0.2.10"]
    counters = proxy.counters()
    assert counters["python-over-bound"] == 1
    assert counters["python-calls"] == 1


async def test_a_query_over_its_frontends_bound_is_dropped_and_its_call_forgotten(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    module(tmp_path, SLOW)
    proxy = await start(triodist, RULES + "setMaxUDPInFlight(1)\n")
    registry = proxy.server.config.async_registry
    async with trio.open_nursery() as clients:
        clients.start_soon(proxy.query, "www.example.org.")
        await until(lambda: len(registry.awaiting) == 1)
        # The frontend has as many waiting as it allows: dropped, never called.
        assert await proxy.query("www.example.org.", timeout=0.2) is None
        assert len(registry.awaiting) == 1
    assert registry.awaiting == set()
    counters = proxy.counters()
    assert counters["frontend-overload-drops"] == 1
    assert counters["python-calls"] == 1


# --- errors ------------------------------------------------------------------------------

FAILING = """
from triodist.rules import Verdict

async def check(dq):
    name = dq.qname.toString()
    if name.startswith("boom."):
        raise ValueError("the lookup service said no")
    if name.startswith("odd."):
        return 42
    if name.startswith("nx."):
        return Verdict.NXDOMAIN
    return None
"""


async def test_an_exception_answers_servfail_for_that_query_only_logged_once(
    triodist: Triodist, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module(tmp_path, FAILING)
    proxy = await start(triodist)
    caplog.set_level(logging.WARNING, "triodist.python")
    for _ in range(3):
        answer = await proxy.query("boom.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
        assert addresses(await proxy.query("www.example.org.")) == ["192.0.2.10"]
    lines = [r.getMessage() for r in caplog.records if r.name == "triodist.python"]
    assert len(lines) == 1, lines
    assert lines[0] == (
        "Python action checks:check for boom.example.org. A raised ValueError: "
        "the lookup service said no; answered SERVFAIL"
    )
    assert proxy.counters()["python-errors"] == 3
    assert [q.question[0].name.to_text() for q in proxy.backend("resolver1").received] == [
        "www.example.org."
    ] * 3


async def test_a_repeated_exception_is_logged_again_after_a_minute_with_its_count(
    triodist: Triodist,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.abc.Clock,
) -> None:
    module(tmp_path, FAILING)
    proxy = await start(triodist)
    caplog.set_level(logging.WARNING, "triodist.python")
    for wait in (0, 30, 29, 2):  # at 0, 30, 59 (within the minute) and 61 s
        await trio.sleep(wait)
        answer = await proxy.query("boom.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
    lines = [r.getMessage() for r in caplog.records if r.name == "triodist.python"]
    said = (
        "Python action checks:check for boom.example.org. A raised ValueError: "
        "the lookup service said no; answered SERVFAIL"
    )
    assert lines == [said, f"{said} (and 2 more like it since the last one)"]
    assert proxy.counters()["python-errors"] == 4


ODD = """
import asyncio


class Odd(BaseException):
    pass


async def check(dq):
    name = dq.qname.toString()
    if name.startswith("odd."):
        raise Odd("not an Exception")
    if name.startswith("asyncio."):
        raise asyncio.CancelledError()  # a BaseException too, and not Trio's
    return None
"""


@pytest.mark.parametrize("name", ["odd.example.org.", "asyncio.example.org."])
async def test_a_base_exception_answers_servfail_and_the_server_goes_on(
    triodist: Triodist, tmp_path: Path, name: str
) -> None:
    module(tmp_path, ODD)
    proxy = await start(triodist)
    for _ in range(2):
        answer = await proxy.query(name)
        assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
        assert addresses(await proxy.query("www.example.org.")) == ["192.0.2.10"]
    assert proxy.counters()["python-errors"] == 2


NURSERY = """
import trio


async def check(dq):
    async with trio.open_nursery() as nursery:  # two lookups at once, a minute each
        nursery.start_soon(trio.sleep, 60)
        nursery.start_soon(trio.sleep, 60)
    return None
"""


async def test_a_tcp_client_gone_cancels_the_call_and_it_is_no_error(
    triodist: Triodist, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # Trio's cancellation of the query's task goes on up through the function (and its
    # nursery's exception group): the call is not a failure, and nothing stays waiting.
    module(tmp_path, NURSERY)
    proxy = await start(triodist, RULES.replace('"checks:check", 500', '"checks:check", 120000'))
    registry = proxy.server.config.async_registry
    stream = await trio.open_tcp_stream(*proxy.address)
    wire = dns.message.make_query("www.example.org.", "A").to_wire()
    await stream.send_all(len(wire).to_bytes(2, "big") + wire)
    await until(lambda: len(registry.awaiting) == 1)
    # A reset (SO_LINGER 0) rather than an orderly close: the connection's reader fails,
    # and with it its queries' tasks.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    closed = trio.current_time()
    await stream.aclose()
    left = await until(lambda: not registry.awaiting, timeout=1.0)
    assert left - closed < 1.0  # not at the two-minute deadline
    counters = proxy.counters()
    assert counters["python-calls"] == 1
    assert counters["python-errors"] == counters["python-timeouts"] == 0
    assert counters["dropped"] == 1


async def test_a_bad_return_value_answers_servfail_and_says_what_was_returned(
    triodist: Triodist, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module(tmp_path, FAILING)
    proxy = await start(triodist)
    caplog.set_level(logging.WARNING, "triodist.python")
    answer = await proxy.query("odd.example.org.")
    assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
    assert proxy.counters()["python-errors"] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "triodist.python"] == [
        "Python action checks:check for odd.example.org. A returned 42 (int), not None or a "
        "Verdict (from triodist.rules import Verdict); answered SERVFAIL"
    ]


# --- verdicts, both ways ---------------------------------------------------------------------

VERDICTS = """
from triodist.rules import Verdict

async def check(dq):
    return {
        "allow": Verdict.ALLOW,
        "drop": Verdict.DROP,
        "nx": Verdict.NXDOMAIN,
        "refused": Verdict.REFUSED,
        "servfail": Verdict.SERVFAIL,
        "spoof": Verdict.spoof("192.0.2.77", "2001:db8::77"),
        "rcode": Verdict.rcode(5),
        "pool": Verdict.pool("other"),
        "tc": Verdict.TRUNCATE,
    }.get(dq.qname.toString().split(".")[0])
"""

# What the verdict of each name means, after the Python action: a Lua rule that answers
# whatever reaches it (None goes on to it; ALLOW stops the rules and forwards).
VERDICT_RULES = """\
newServer{address="192.0.2.1:53", name="resolver1"}
newServer{address="192.0.2.2:53", name="resolver2", pool="other"}
addAction(AllRule(), PythonAction("checks:check", 500))
addAction(AllRule(), SpoofAction("192.0.2.99"))
"""


@pytest.mark.parametrize(
    ("label", "rcode", "records", "backend"),
    [
        ("none", dns.rcode.NOERROR, ["192.0.2.99"], None),
        ("allow", dns.rcode.NOERROR, ["192.0.2.10"], "resolver1"),
        ("nx", dns.rcode.NXDOMAIN, [], None),
        ("refused", dns.rcode.REFUSED, [], None),
        ("servfail", dns.rcode.SERVFAIL, [], None),
        ("spoof", dns.rcode.NOERROR, ["192.0.2.77"], None),
        ("rcode", dns.rcode.REFUSED, [], None),
        ("pool", dns.rcode.NOERROR, ["192.0.2.20"], "resolver2"),
    ],
)
async def test_each_verdict_goes_on_as_the_lua_verdict_of_its_name(
    triodist: Triodist,
    tmp_path: Path,
    label: str,
    rcode: int,
    records: list[str],
    backend: str | None,
) -> None:
    module(tmp_path, VERDICTS)
    name = f"{label}.example.org."
    proxy = await triodist.start(
        VERDICT_RULES,
        backends={"resolver1": {name: "192.0.2.10"}, "resolver2": {name: "192.0.2.20"}},
    )
    answer = await proxy.query(name)
    assert answer is not None
    assert answer.rcode() == rcode
    assert addresses(answer) == records
    for fake in ("resolver1", "resolver2"):
        assert len(proxy.backend(fake).received) == (fake == backend)


async def test_in_a_continue_action_the_function_runs_and_its_verdict_is_ignored(
    triodist: Triodist, tmp_path: Path
) -> None:
    module(tmp_path, VERDICTS)
    rules = VERDICT_RULES.replace(
        'PythonAction("checks:check", 500)', 'ContinueAction(PythonAction("checks:check", 500))'
    )
    proxy = await triodist.start(rules, backends={"resolver1": {}, "resolver2": {}})
    # REFUSED from the function, but the rule goes on: the next rule spoofs.
    assert addresses(await proxy.query("refused.example.org.")) == ["192.0.2.99"]
    assert proxy.counters()["python-calls"] == 1


async def test_drop_sends_nothing_and_truncate_sets_tc_over_udp(
    triodist: Triodist, tmp_path: Path
) -> None:
    module(tmp_path, VERDICTS)
    proxy = await triodist.start(VERDICT_RULES, backends={"resolver1": {}, "resolver2": {}})
    assert await proxy.query("drop.example.org.", timeout=1) is None
    truncated = await proxy.query("tc.example.org.")
    assert truncated is not None and truncated.flags & dns.flags.TC
    assert proxy.counters()["rule-drop"] == 1


RESPONSES = """
import dns.flags
import dns.message
import dns.rcode
import trio
from triodist.rules import Verdict

async def check(dr):
    await trio.sleep(0.01)
    answer = dns.message.from_wire(dr.getContent())
    seen = {rd.to_text() for rrset in answer.answer for rd in rrset}
    if "192.0.2.66" in seen:  # a blocked address in the backend's answer
        return Verdict.rcode(dns.rcode.NXDOMAIN)
    if dr.getTag("verdict") == "drop":
        return Verdict.DROP
    if dr.getTag("verdict") == "nx":
        return Verdict.NXDOMAIN  # a query's verdict: not for a response
    return None
"""

RESPONSE_RULES = """\
newServer{address="192.0.2.1:53", name="resolver1"}
addAction(QNameRule("drop.example.org."), SetTagAction("verdict", "drop"))
addAction(QNameRule("nx.example.org."), SetTagAction("verdict", "nx"))
addResponseAction(AllRule(), PythonResponseAction("checks:check", 500))
"""


async def test_the_response_twin_changes_a_response(triodist: Triodist, tmp_path: Path) -> None:
    module(tmp_path, RESPONSES)
    table = {
        "www.example.org.": "192.0.2.10",
        "bad.example.org.": "192.0.2.66",
        "drop.example.org.": "192.0.2.12",
        "nx.example.org.": "192.0.2.13",
    }
    proxy = await triodist.start(RESPONSE_RULES, backends={"resolver1": table})
    assert addresses(await proxy.query("www.example.org.")) == ["192.0.2.10"]
    blocked = await proxy.query("bad.example.org.")
    assert blocked is not None
    assert blocked.rcode() == dns.rcode.NXDOMAIN
    assert blocked.answer == []
    assert await proxy.query("drop.example.org.", timeout=1) is None
    refused = await proxy.query("nx.example.org.")  # no verdict for a response: SERVFAIL
    assert refused is not None and refused.rcode() == dns.rcode.SERVFAIL
    assert proxy.counters()["python-errors"] == 1
    assert proxy.counters()["python-calls"] == 4


# --- the dq -------------------------------------------------------------------------------------

DQ = """
from triodist.rules import Verdict

kept = []

async def check(dq):
    kept.append(dq)
    # What a Lua rule set, read here; and what this sets, read by a Lua rule next.
    seen = [
        dq.getTag("from-lua"),
        dq.qname.toString(),
        dq.qtype,
        dq.remoteaddr.toString(),
        dq.localaddr.getPort() > 0,
        dq.dh.getRD(),
        dq.getHeader().getRD(),
        dq.getProtocol(),
        dq.tcp,
    ]
    dq.setTag("from-python", "|".join(str(s) for s in seen))
    return None
"""

DQ_RULES = """\
newServer{address="192.0.2.1:53", name="resolver1"}
addAction(AllRule(), SetTagAction("from-lua", "lua-was-here"))
addAction(AllRule(), PythonAction("checks:check", 500))
addAction(AllRule(), LuaAction(function(dq)
  return DNSAction.Spoof, "192.0.2.1" .. (dq:getTag("from-python") == EXPECTED and "" or "9")
end))
"""


@pytest.mark.parametrize("over", ["udp", "tcp"])
async def test_the_dq_has_the_lua_dq_methods_and_tags_cross_both_ways(
    triodist: Triodist, tmp_path: Path, over: str
) -> None:
    module(tmp_path, DQ)
    tcp = over == "tcp"
    expected = (
        f"lua-was-here|www.example.org.|1|127.0.0.1|True|True|True|"
        f"{'Do53 TCP' if tcp else 'Do53 UDP'}|{tcp}"
    )
    rules = f'EXPECTED = "{expected}"\n' + DQ_RULES
    proxy = await triodist.start(rules, backends={"resolver1": {}})
    answer = await proxy.query("www.example.org.", over="tcp" if tcp else "udp")
    assert addresses(answer) == ["192.0.2.1"], sys.modules["checks"].kept
    # A dq kept after its call says so rather than show another query.
    kept = sys.modules["checks"].kept[0]
    with pytest.raises(RuntimeError, match="only valid until the Python action's function"):
        kept.getTag("from-lua")
    with pytest.raises(RuntimeError, match="only valid until the Python action's function"):
        kept.qname  # noqa: B018  # reading it is the error
    assert str(kept) == "<dq after its Python action returned>"


TASKS = """
import trio

tasks = []

async def check(dq):
    tasks.append(trio.lowlevel.current_task())
    await trio.sleep(0)
    return None
"""


@pytest.mark.parametrize("over", ["udp", "tcp"])
async def test_the_function_runs_in_the_querys_own_task(
    triodist: Triodist, tmp_path: Path, over: Literal["udp", "tcp"]
) -> None:
    module(tmp_path, TASKS)
    proxy = await start(triodist)
    for _ in range(2):
        assert addresses(await proxy.query("www.example.org.", over=over)) == ["192.0.2.10"]
    first, second = sys.modules["checks"].tasks
    # The task the frontend starts for a query that waits: one per query, no other.
    name = "udp query" if over == "udp" else "triodist.frontends.tcp.TCPFrontend._query_task"
    assert first.name == second.name == name
    assert first is not second


# --- the configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "says"),
    [
        ('PythonAction("checks.check", 500)', "expected 'package.module:function'"),
        ("PythonAction(nil, 500)", "expected 'package.module:function', got nil"),
        ('PythonAction("nosuch:check", 500)', "no module named 'nosuch' (looked in "),
        ('PythonAction("nosuch.deeper:check", 500)', "no package 'nosuch'"),
        ('PythonAction("checks:absent", 500)', "module 'checks' ("),
        ('PythonAction("checks:plain", 500)', "'checks:plain' is not an async def function"),
        ('PythonAction("checks:NUMBER", 500)', "is not an async def function"),
        ('PythonAction("checks:check")', "expected a timeout in ms above 0"),
        ('PythonAction("checks:check", -1)', "expected a timeout in ms above 0"),
        ('PythonAction("broken:check", 500)', "importing 'broken' failed: ZeroDivisionError"),
        ('PythonAction("json:loads", 500)', "'json' is a module of Python or triodist"),
        ('PythonResponseAction("checks:plain", 500)', "is not an async def function"),
    ],
)
def test_a_bad_target_is_a_configuration_error_with_file_and_line(
    tmp_path: Path, call: str, says: str
) -> None:
    module(
        tmp_path, "NUMBER = 3\ndef plain(dq):\n    return None\nasync def check(dq):\n    pass\n"
    )
    module(tmp_path, "1 / 0\n", name="broken")
    path = tmp_path / "rules.lua"
    path.write_text(f'newServer{{address="192.0.2.1:53"}}\n\naddAction(AllRule(), {call})\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    function = call.split("(")[0]
    assert str(error.value).startswith(f"{path}:3: {function}: "), str(error.value)
    assert says in str(error.value)


def test_a_response_action_is_refused_in_a_query_chain(tmp_path: Path) -> None:
    module(tmp_path, "async def check(dq):\n    pass\n")
    path = tmp_path / "rules.lua"
    path.write_text('addAction(AllRule(), PythonResponseAction("checks:check", 500))\n')
    with pytest.raises(ConfigError, match=r"rules.lua:1: addAction: expected a query action"):
        load_config(path)


def test_the_module_is_found_beside_an_included_file_and_imported_once(tmp_path: Path) -> None:
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "extra.conf").write_text(
        'addAction(AllRule(), PythonAction("near:check", 100))\n'
        'addAction(AllRule(), PythonAction("near:check", 200))\n'
    )
    module(
        included,
        "imports = globals().get('imports', 0) + 1\nasync def check(dq):\n    pass\n",
        "near",
    )
    path = tmp_path / "rules.lua"
    path.write_text(f'includeDirectory("{included}")\n')
    config = load_config(path)
    actions = [rule.action for rule in config.api.config.chains.queries.rules]
    assert [a.describe() for a in actions] == [
        "Python function near:check (timeout 100 ms)",
        "Python function near:check (timeout 200 ms)",
    ]
    assert actions[0].func is actions[1].func  # one import per configuration


def test_a_module_imported_otherwise_is_used_as_it_is_never_run_again(tmp_path: Path) -> None:
    # trio is the server's own: running its code again would put a second trio in
    # sys.modules under the running server. A module a test (or anything) imported
    # before is used as Python's import would: the same object.
    module(tmp_path, "runs = globals().get('runs', 0) + 1\nasync def check(dq):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("checks", None)
        import checks  # type: ignore[import-not-found]  # written just above
    finally:
        sys.path.remove(str(tmp_path))
    path = tmp_path / "rules.lua"
    path.write_text(
        'addAction(AllRule(), PythonAction("trio:sleep", 100))\n'
        'addAction(AllRule(), PythonAction("checks:check", 100))\n'
    )
    trio_before = sys.modules["trio"]
    try:
        for _ in range(2):  # the start, then a reload
            config = load_config(path)
            first, second = (rule.action for rule in config.api.config.chains.queries.rules)
            assert sys.modules["trio"] is trio_before
            assert first.func is trio.sleep
            assert sys.modules["checks"] is checks
            assert second.func is checks.check
        assert checks.runs == 1
    finally:
        del sys.modules["checks"]  # the other tests' checks.py are their own


async def test_an_action_added_at_the_console_finds_its_module_beside_the_configuration(
    triodist: Triodist, tmp_path: Path
) -> None:
    module(tmp_path, VERDICTS)
    proxy = await triodist.start(
        VERDICT_RULES.replace("addAction(AllRule(), Python", "-- "),
        backends={"resolver1": {}, "resolver2": {}},
    )
    assert addresses(await proxy.query("refused.example.org.")) == ["192.0.2.99"]
    said = proxy.console('addAction(AllRule(), PythonAction("checks:check", 500))')
    assert said == "", said
    proxy.console("mvRuleToTop()")
    answer = await proxy.query("refused.example.org.")
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    said = proxy.console('addAction(AllRule(), PythonAction("checks:absent", 500))')
    assert said.startswith("Error: ") and "module 'checks' (" in said, said


async def test_a_reload_imports_the_module_afresh(triodist: Triodist, tmp_path: Path) -> None:
    module(
        tmp_path,
        "from triodist.rules import Verdict\nasync def check(dq):\n    return Verdict.REFUSED\n",
    )
    proxy = await start(triodist)
    answer = await proxy.query("www.example.org.")
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    module(
        tmp_path,
        "from triodist.rules import Verdict\nasync def check(dq):\n    return Verdict.NXDOMAIN\n",
    )
    await proxy.reload()
    answer = await proxy.query("www.example.org.")
    assert answer is not None and answer.rcode() == dns.rcode.NXDOMAIN


def test_verdicts_read_as_written_and_refuse_bad_arguments() -> None:
    assert repr(Verdict.REFUSED) == "Verdict.REFUSED"
    assert (
        repr(Verdict.spoof("192.0.2.1", "2001:db8::1"))
        == "Verdict.spoof('192.0.2.1', '2001:db8::1')"
    )
    assert repr(Verdict.rcode(3)) == "Verdict.rcode(3, clear_records=True)"
    assert Verdict.pool("abuse") == Verdict.pool("abuse")
    for bad in (lambda: Verdict.spoof(), lambda: Verdict.spoof("a,b"), lambda: Verdict.rcode(16)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        Verdict.delay(-1)


# --- replayed ----------------------------------------------------------------------------

REPLAYED = """
import trio
from triodist.rules import Verdict

async def check(dq):
    name = dq.qname.toString()
    if name.startswith("slow."):
        await trio.sleep(10)
    if name.startswith("ads."):
        return Verdict.REFUSED
    return None
"""


def test_triodist_replay_runs_python_actions_and_says_how_each_call_ended(
    tmp_path: Path,
) -> None:
    # A replay's queries meet the functions as a server's do, on the replay's mock clock.
    module(tmp_path, REPLAYED)
    config = tmp_path / "rules.lua"
    config.write_text(RULES.replace('"checks:check", 500', '"checks:check", 200'))
    capture = Capture()
    for n, name in enumerate(["www.example.org.", "ads.example.org.", "slow.example.org."]):
        capture.udp_query(n * 0.1, "10.0.0.1", 5000 + n, replay_query(name))
    pcap = capture.write(tmp_path / "traffic.pcap")
    lines = tmp_path / "queries.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "triodist",
            "replay",
            "--config",
            str(config),
            str(pcap),
            "--json",
            "--queries",
            str(lines),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    queries = {q["name"]: q for q in map(json.loads, lines.read_text().splitlines())}
    function = "Python function checks:check (timeout 200 ms)"
    assert queries["www.example.org."]["suspension"] == "returned"
    assert queries["www.example.org."]["outcome"] == "forwarded"
    assert queries["ads.example.org."]["suspension"] == "returned"
    assert queries["ads.example.org."]["outcome"] == "rule"
    assert function in queries["ads.example.org."]["by"]
    assert queries["slow.example.org."]["suspension"] == "timed-out"
    assert queries["slow.example.org."]["outcome"] == "forwarded"  # fail-open, as a server


# --- the example ---------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "python-action.lua"


async def test_the_example_refuses_sinkholes_scrubs_and_forwards(
    triodist: Triodist, autojump_clock: trio.abc.Clock
) -> None:
    table = {
        "www.example.org.": "192.0.2.10",
        "moved.example.org.": "198.51.100.7",  # in the scrubbed network
        "login.example.com.": "192.0.2.20",
    }
    proxy = await triodist.start(EXAMPLE, backends={"resolver": table})
    refused = await proxy.query("ads.example.org.")
    assert refused is not None and refused.rcode() == dns.rcode.REFUSED
    assert addresses(await proxy.query("x.tracker.example.net.")) == ["192.0.2.53"]
    assert addresses(await proxy.query("www.example.org.")) == ["192.0.2.10"]
    scrubbed = await proxy.query("moved.example.org.")
    assert scrubbed is not None and scrubbed.rcode() == dns.rcode.NXDOMAIN
    assert addresses(await proxy.query("login.example.com.")) == ["192.0.2.20"]
    asked = [q.question[0].name.to_text() for q in proxy.backend("resolver").received]
    assert asked == ["www.example.org.", "moved.example.org.", "login.example.com."]
    assert proxy.counters()["python-calls"] == 5 + 3
