"""Health checks of backends: what is sent, what passes, and what the results decide.

Every test runs triodist with real loopback sockets in front of fake
authoritative backends (``AuthServer``) whose behaviour is switched at run time
(``mode``, or per name in ``modes``).  Intervals and timeouts run under
``autojump_clock``: a dead backend costs virtual seconds only, and the times
asserted are virtual ones (``trio.current_time()``, and ``ReceivedQuery.time``
on the backend side, which share the mock clock).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import pytest
import trio
from conftest import StartTriodist, free_port, hostport, records, until, whoami

from triodist.backends import randomness as backend_server
from triodist.backends.health import (
    FAILED,
    HEALTHY,
    POTENTIAL_FAILURE,
    build_check,
    check_required,
    submit_result,
)
from triodist.backends.healthstate import HealthCheckConfig
from triodist.backends.server import Server
from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import LuaConfig
from triodist.testing.backend import AuthServer

MakeAuth = Callable[..., Awaitable[AuthServer]]
ROOT = Path(__file__).resolve().parent.parent
# The check name most tests use (NXDOMAIN from the backend's zone: a passing check),
# so that the checks are told apart from the queries the tests send.
CHECK = "health.example.org."


def marks(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The "Marking downstream ..." lines logged so far, with their level."""
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.getMessage().startswith("Marking downstream")
    ]


def checks(auth: AuthServer, name: str = CHECK, rdtype: str | None = None) -> list[float]:
    """When the health checks (queries for ``name``) reached ``auth``, in virtual time."""
    return [r.time for r in auth.queries_for(name, rdtype)]


#: How the tests wait for a health state (in virtual time): ``until`` polls every
#: ``step``, so the time it returns is within 10 ms of the change, and fails after
#: ``timeout``, several check intervals.
WAIT: dict[str, float] = {"timeout": 30.0, "step": 0.01}


@pytest.fixture(autouse=True)
def _log_health(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="triodist.backends.health")


# --- active checks: down, traffic moves, up again ---------------------------------------------


async def test_silent_backend_is_marked_down_and_traffic_moves_without_loss(
    start_triodist: StartTriodist,
    make_auth: MakeAuth,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", name="primary", order=1, udpTimeout=1,'
        f'  checkName="{CHECK}", checkInterval=2, maxCheckFailures=3, checkTimeout=500}}\n'
        f'newServer{{address="{hostport(b)}", order=2}}\n'
    )
    primary = t.lua.api.getServer(0)
    assert primary.isUp() and await whoami(t) == "a"

    a.mode = "silent"
    t0 = trio.current_time()
    sent: list[tuple[float, str | None]] = []

    async def ask() -> None:
        sent_at = trio.current_time()
        sent.append((sent_at, await whoami(t, timeout=3.0)))

    async with trio.open_nursery() as clients:

        async def traffic() -> None:
            while True:
                clients.start_soon(ask)
                await trio.sleep(0.2)

        clients.start_soon(traffic)
        down_at = await until(lambda: not primary.isUp(), **WAIT)
        await trio.sleep(2.0)
        clients.cancel_scope.cancel()

    # Checks at t0+2, +4, +6, each failing after 0.5 s: down at t0 + 6.5.
    assert 6.0 + 0.5 <= down_at - t0 <= 6.5 + 0.05
    assert [round(x - t0, 2) for x in checks(a)[1:4]] == [2.0, 4.0, 6.0]
    address = hostport(a)
    assert (logging.WARNING, f"Marking downstream primary ({address}) as 'down'") in marks(caplog)
    assert primary.status == "down"
    # Before the mark some queries went to the silent backend and were lost; every
    # query sent after it was answered, by the other backend.
    assert any(answer is None for sent_at, answer in sent if sent_at < down_at)
    after = [answer for sent_at, answer in sent if sent_at >= down_at]
    assert len(after) >= 8
    assert after == ["b"] * len(after)


async def test_down_backend_comes_back_after_rise_good_checks(
    start_triodist: StartTriodist,
    make_auth: MakeAuth,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await make_auth(name="a", mode="silent")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", order=1, rise=3, checkTimeout=300,'
        f'  checkName="{CHECK}"}}\n'
        f'newServer{{address="{hostport(b)}", order=2}}\n'
    )
    server = t.lua.api.getServer(0)
    assert not server.isUp()  # the start-up check timed out
    a.mode = "answer"
    t0 = trio.current_time()
    up_at = await until(server.isUp, **WAIT)
    # Good checks at t0+1, +2, +3: up after the third, not before.
    assert 3.0 <= up_at - t0 <= 3.05
    assert (logging.WARNING, f"Marking downstream {hostport(a)} as 'up'") in marks(caplog)
    assert {await whoami(t) for _ in range(3)} == {"a"}


async def test_setAuto_at_run_time_brings_checks_back(
    start_triodist: StartTriodist,
    make_auth: MakeAuth,
    autojump_clock: trio.abc.Clock,
) -> None:
    a = await make_auth(name="a")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", healthCheckMode="DOWN", checkName="{CHECK}"}}\n'
    )
    server = t.lua.api.getServer(0)
    await trio.sleep(5)
    assert checks(a) == [] and server.status == "DOWN"
    assert await whoami(t, timeout=0.5) is None
    a.mode = "silent"
    server.setAuto(True)
    switched = trio.current_time()
    assert server.status == "up"
    down_at = await until(lambda: not server.isUp(), **WAIT)
    # Checked from the next tick on (1 s), down when that check times out (1 s).
    assert switched < checks(a)[0] <= switched + 1.0
    assert down_at == pytest.approx(checks(a)[0] + 1.0, abs=0.02)
    server.setUp()
    assert server.status == "UP" and server.isUp()


# --- what a check sends and what passes ------------------------------------------------------


async def test_check_query_uses_checkName_checkType_checkClass_and_flags(
    start_triodist: StartTriodist, make_auth: MakeAuth
) -> None:
    a = await make_auth(name="a")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", checkName="www.example.org",'
        '  checkType="AAAA", checkClass=DNSClass.CHAOS, setCD=true}\n'
        f'newServer{{address="{hostport(a)}", checkName="txt.example.org.", checkType=16}}\n'
        f'newServer{{address="{hostport(a)}", checkName="mail.example.org.", checkTCP=true}}\n'
        f'newServer{{address="{hostport(a)}", checkName="multi.example.org.", tcpOnly=true}}\n'
    )
    (first,) = a.queries_for("www.example.org.", "AAAA")
    assert first.message.question[0].rdclass == dns.rdataclass.CH
    assert first.message.flags & dns.flags.RD and first.message.flags & dns.flags.CD
    assert first.transport == "udp"
    (second,) = a.queries_for("txt.example.org.", "TXT")
    assert second.message.flags & dns.flags.RD and not second.message.flags & dns.flags.CD
    assert second.transport == "udp"
    assert [r.transport for r in a.queries_for("mail.example.org.", "A")] == ["tcp"]
    assert [r.transport for r in a.queries_for("multi.example.org.", "A")] == ["tcp"]
    # REFUSED (a class the backend does not serve) passes without mustResolve.
    assert all(s.isUp() for s in t.lua.api.getServers())


async def test_rcodes_that_fail_a_check(
    start_triodist: StartTriodist, make_auth: MakeAuth, caplog: pytest.LogCaptureFixture
) -> None:
    a = await make_auth(name="a")
    a.modes["sf.example.org."] = "servfail"
    t = await start_triodist(
        "\n".join(
            f'newServer{{address="{hostport(a)}", name="s{i}", {options}}}'
            for i, options in enumerate(
                [
                    'checkName="nope.example.org."',  # NXDOMAIN: fine
                    'checkName="nope.example.org.", mustResolve=true',  # NXDOMAIN: fails
                    'checkName="elsewhere.example.net."',  # REFUSED: fine
                    'checkName="elsewhere.example.net.", mustResolve=true',  # fails
                    'checkName="www.example.org.", mustResolve=true',  # NOERROR: fine
                    'checkName="sf.example.org."',  # SERVFAIL always fails
                ]
            )
        )
    )
    states = [s.isUp() for s in t.lua.api.getServers()]
    assert states == [True, False, True, False, True, False]
    assert f"Marking downstream s1 ({hostport(a)}) as 'down'" in [m for _, m in marks(caplog)]
    reasons = " | ".join(r.getMessage() for r in caplog.records)
    assert "NXDOMAIN (mustResolve)" in reasons and "REFUSED (mustResolve)" in reasons
    assert "SERVFAIL" in reasons


def _tamper(query: bytes, how: str) -> bytes:
    """A reply to ``query`` (header and question only), spoilt as ``how`` says."""
    reply = bytearray(query)
    reply[2] |= 0x80  # QR
    if how == "wrong ID":
        reply[0] ^= 0xFF
    elif how == "no QR":
        reply[2] &= 0x7F
    elif how == "other name":
        reply[13] = ord("b")  # a.root-servers.net. -> b.root-servers.net.
    elif how == "other type":
        reply[-3] = 28  # A -> AAAA
    elif how == "other class":
        reply[-1] = 3  # IN -> CH
    elif how == "no question":
        reply = reply[:12]
    elif how == "short":
        reply = reply[:11]
    elif how == "formerr":
        reply[3] = (reply[3] & 0xF0) | 1  # any rcode but SERVFAIL passes
    return bytes(reply)


@pytest.mark.parametrize(
    ("how", "up"),
    [
        ("as asked", True),
        ("formerr", True),
        ("wrong ID", False),
        ("no QR", False),
        ("other name", False),
        ("other type", False),
        ("other class", False),
        ("no question", False),
        ("short", False),
    ],
)
async def test_reply_must_match_the_check(
    start_triodist: StartTriodist, nursery: trio.Nursery, how: str, up: bool
) -> None:
    """A raw backend that answers checks with a reply spoilt in one way."""
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    queries: list[bytes] = []

    async def respond() -> None:
        with sock:
            while True:
                data, peer = await sock.recvfrom(65535)
                queries.append(data)
                await sock.sendto(_tamper(data, how), peer)

    nursery.start_soon(respond)
    t = await start_triodist(f'newServer{{address="127.0.0.1:{port}", checkTimeout=2000}}\n')
    assert t.lua.api.getServer(0).isUp() is up
    # The default check: a.root-servers.net. A IN, RD only, nothing else (no EDNS).
    check = dns.message.from_wire(queries[0])
    assert check.question[0].to_text() == "a.root-servers.net. IN A"
    assert check.flags == dns.flags.RD and check.edns == -1
    assert len(queries[0]) == 12 + len("a.root-servers.net.") + 1 + 4


async def test_checkFunction_changes_name_type_class_and_header(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(
        """
        seen = {}
        function healthQuery(qname, qtype, qclass, dh)
          seen = {qname:toString(), qtype, qclass, dh:getRD(), dh:getCD()}
          dh:setCD(true)
          return newDNSName("txt." .. qname:toString()), DNSQType.TXT, qclass
        end
        newServer{address="$BACKEND", checkName="example.org.", checkFunction=healthQuery}
        """
    )
    (received,) = auth.queries_for("txt.example.org.", "TXT")
    assert received.message.flags & dns.flags.CD and received.message.flags & dns.flags.RD
    seen = t.lua.lua.globals().seen
    assert [seen[i] for i in range(1, 6)] == ["example.org.", 1, 1, True, False]
    assert t.lua.api.getServer(0).isUp()
    assert len(auth.received) == 1  # nothing else was sent


async def test_failing_checkFunction_fails_the_check_and_nothing_else(
    start_triodist: StartTriodist,
    make_auth: MakeAuth,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await make_auth(name="a")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", order=1,'
        '  checkFunction=function(qname, qtype, qclass, dh) error("no health today") end}\n'
        f'newServer{{address="{hostport(a)}", order=1,'
        "  checkFunction=function(qname, qtype, qclass, dh) return qname end}\n"
        f'newServer{{address="{hostport(b)}", order=2}}\n'
    )
    broken, incomplete, other = t.lua.api.getServers()
    assert not broken.isUp() and not incomplete.isUp() and other.isUp()
    assert len(a.received) == 0
    await trio.sleep(5.5)
    # The checks go on failing (no query is ever sent), each error logged once.
    assert broken.health_check_failures == 6
    errors = [
        r.getMessage()
        for r in caplog.records
        if "Error in the checkFunction" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(errors) == 2
    assert any("must return a name, a type and a class" in e for e in errors)
    assert any("no health today" in e for e in errors)
    assert {await whoami(t) for _ in range(3)} == {"b"}


async def test_startup_check_marks_a_dead_server_down_before_the_first_query(
    start_triodist: StartTriodist,
    make_auth: MakeAuth,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    silent = await make_auth(name="silent", mode="silent")
    live = await make_auth(name="live")
    refused = free_port()  # nothing listens there
    start = trio.current_time()
    t = await start_triodist(
        f'newServer{{address="{hostport(silent)}", order=1, checkTimeout=400,'
        f'  checkName="{CHECK}"}}\n'
        f'newServer{{address="127.0.0.1:{refused}", order=1}}\n'
        f'newServer{{address="{hostport(live)}", order=2}}\n'
    )
    # In parallel, each bounded by its own timeout: ready after the longest (0.4 s).
    assert 0.4 <= trio.current_time() - start <= 0.45
    assert [s.isUp() for s in t.lua.api.getServers()] == [False, False, True]
    assert sorted(marks(caplog)) == sorted(
        [
            (logging.WARNING, f"Marking downstream {hostport(silent)} as 'down'"),
            (logging.WARNING, f"Marking downstream 127.0.0.1:{refused} as 'down'"),
            (logging.INFO, f"Marking downstream {hostport(live)} as 'up'"),
        ]
    )
    assert await whoami(t) == "live"
    assert [q.qname.to_text() for q in silent.received] == [CHECK]


# --- timing: a slow check neither blocks queries nor shifts the schedule ----------------------


@pytest.mark.parametrize(("timeout_ms", "spacing"), [(500, 1.0), (1500, 1.5)])
async def test_slow_check_delays_the_next_by_its_timeout_at_most(
    start_triodist: StartTriodist,
    auth: AuthServer,
    autojump_clock: trio.abc.Clock,
    timeout_ms: int,
    spacing: float,
) -> None:
    t = await start_triodist(
        f'newServer{{address="$BACKEND", checkTimeout={timeout_ms}, maxCheckFailures=100,'
        f'  checkName="{CHECK}"}}\n'
    )
    auth.modes[CHECK] = "slow"
    auth.delay = 60.0
    t0 = trio.current_time()
    await trio.sleep(1.2)  # the first slow check is now outstanding
    started = trio.current_time()
    assert records(await t.ask("www.example.org.")) == {
        "www.example.org. A 192.0.2.10",
        "www.example.org. A 192.0.2.11",
    }
    assert trio.current_time() - started < 0.01  # queries do not wait for checks
    await trio.sleep(6)
    times = [round(x - t0, 3) for x in checks(auth)[1:]]
    assert times[:4] == [1.0 + spacing * i for i in range(4)]


# --- lazy mode ---------------------------------------------------------------------------------


async def test_lazy_checks_only_after_enough_failed_queries(
    start_triodist: StartTriodist,
    auth: AuthServer,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = await start_triodist(
        """
        newServer{address="$BACKEND", healthCheckMode="Lazy", udpTimeout=1,
          checkName="www.example.org.", checkTimeout=200, maxCheckFailures=2,
          lazyHealthCheckSampleSize=10, lazyHealthCheckMinSampleCount=4,
          lazyHealthCheckThreshold=50, lazyHealthCheckFailedInterval=5}
        """
    )
    server = t.lua.api.getServer(0)
    assert server.getHealthCheckMode() == "lazy"
    www = "www.example.org."
    assert len(checks(auth, www)) == 1  # at start-up, as in auto mode
    await trio.sleep(10)
    assert len(checks(auth, www)) == 1  # healthy: no check at all
    auth.mode = "silent"
    for _ in range(3):
        assert await t.ask("mail.example.org.", timeout=2) is None
    await trio.sleep(5)
    # Three failures (100%) but fewer than lazyHealthCheckMinSampleCount samples.
    assert server.lazy_status == HEALTHY and len(checks(auth, www)) == 1
    auth.mode = "answer"
    for _ in range(4):
        assert await t.ask("mail.example.org.") is not None
    await trio.sleep(5)
    # Three failures in seven samples: 43%, under the threshold.
    assert server.lazy_status == HEALTHY and len(checks(auth, www)) == 1
    auth.mode = "silent"
    t_fourth = trio.current_time()
    assert await t.ask("mail.example.org.", timeout=2) is None
    await until(lambda: server.lazy_status == POTENTIAL_FAILURE, **WAIT)
    down_at = await until(lambda: not server.isUp(), **WAIT)
    assert server.lazy_status == FAILED
    first, second = checks(auth, www)[1:3]
    # Four failures in eight samples (50%): the query fails after udpTimeout (1 s);
    # checked at the next tick (ticks come every checkInterval, 1 s), then one
    # interval later.
    assert 1.0 <= first - t_fourth <= 2.0 and second - first == pytest.approx(1.0)
    assert down_at == pytest.approx(second + 0.2, abs=0.02)
    assert f"Marking downstream {hostport(auth)} as 'down'" in [m for _, m in marks(caplog)]
    # While failed: a check every lazyHealthCheckFailedInterval.
    await trio.sleep(11)
    failed_checks = checks(auth, www)[3:]
    gaps = [b - a for a, b in itertools.pairwise([down_at, *failed_checks])]
    assert [round(gap, 3) for gap in gaps] == [5, 5]
    auth.mode = "answer"
    up_at = await until(server.isUp, **WAIT)
    assert up_at - failed_checks[-1] == pytest.approx(5.0, abs=0.02)
    assert server.lazy_status == HEALTHY
    count = len(checks(auth, www))
    await trio.sleep(10)
    assert len(checks(auth, www)) == count  # healthy again: checks stop


@pytest.mark.parametrize(("mode", "failed"), [("TimeoutOrServFail", True), ("timeoutonly", False)])
async def test_lazy_mode_counts_servfail_unless_timeout_only(
    start_triodist: StartTriodist, auth: AuthServer, mode: str, failed: bool
) -> None:
    t = await start_triodist(
        f'newServer{{address="$BACKEND", healthCheckMode="lazy", lazyHealthCheckMode="{mode}"}}\n'
    )
    auth.modes["sf.example.org."] = "servfail"
    for tcp in (False, True):
        assert await t.ask("sf.example.org.", tcp=tcp) is not None
        assert await t.ask("www.example.org.", tcp=tcp) is not None
    assert list(t.lua.api.getServer(0).lazy_results or ()) == [failed, False] * 2


async def test_lazy_exponential_back_off_doubles_up_to_the_maximum(
    autojump_clock: trio.abc.Clock,
) -> None:
    _, _, health = HealthCheckConfig.from_options(
        {
            "lazyHealthCheckUseExponentialBackOff": True,
            "lazyHealthCheckFailedInterval": 15,
            "lazyHealthCheckMaxBackOff": 100,
            "lazyHealthCheckMinSampleCount": 3,
        }
    )
    server = Server("192.0.2.1", health_check_mode="lazy", health=health)
    for _ in range(3):
        server.record_outcome(True)
    assert check_required(server, trio.current_time())
    assert server.lazy_status == POTENTIAL_FAILURE
    submit_result(server, False)
    assert server.lazy_status == FAILED and not server.isUp()
    delays = []
    for _ in range(5):
        delays.append(server.lazy_next_check - trio.current_time())
        await trio.sleep_until(server.lazy_next_check)
        assert check_required(server, trio.current_time())
        assert not check_required(server, trio.current_time())  # one check at a time
        submit_result(server, False)
    assert delays == [15, 30, 60, 100, 100]
    submit_result(server, True)
    assert server.isUp() and server.lazy_status == HEALTHY


# --- forced modes, names, Lua methods -----------------------------------------------------------


async def test_forced_up_and_down_are_never_checked(
    start_triodist: StartTriodist, make_auth: MakeAuth, autojump_clock: trio.abc.Clock
) -> None:
    a = await make_auth(name="a", mode="silent")
    b = await make_auth(name="b")
    t = await start_triodist(
        f'newServer{{address="{hostport(a)}", healthCheckMode="up", udpTimeout=1}}\n'
        f'newServer{{address="{hostport(b)}", healthCheckMode="down"}}\n'
    )
    await trio.sleep(10)
    assert len(a.received) == len(b.received) == 0
    up, down = t.lua.api.getServers()
    assert (up.status, down.status) == ("UP", "DOWN")
    assert await whoami(t, timeout=3) is None  # forced up, silent: the query is lost
    assert len(a.received) == 1 and len(b.received) == 0


def test_name_with_address_is_the_address_alone_without_a_name() -> None:
    assert Server("192.0.2.1").getNameWithAddr() == "192.0.2.1:53"
    assert Server("192.0.2.1:5300", name="r1").getNameWithAddr() == "r1 (192.0.2.1:5300)"
    assert Server("[2001:db8::1]:53").getNameWithAddr() == "[2001:db8::1]:53"


def test_server_methods_from_lua(tmp_path: Path) -> None:
    lua = LuaConfig()
    lua.run_string(
        """
        local s = newServer{address="192.0.2.1", name="r1", checkInterval=5}
        assert(s:getNameWithAddr() == "r1 (192.0.2.1:53)")
        assert(s:getHealthCheckMode() == "active" and s:isUp() and s.upStatus)
        s:setLazyAuto(false)
        assert(s:getHealthCheckMode() == "lazy" and not s:isUp())
        s:setUp()
        s:setAuto()
        assert(s:getHealthCheckMode() == "lazy" and not s:isUp())
        s:setActiveAuto(true)
        assert(s:getHealthCheckMode() == "active" and s:isUp())
        s:setHealthCheckParams({checkInterval=2, checkTimeout=250, rise=3, maxCheckFailures=0})
        """,
        str(tmp_path / "rules.lua"),
    )
    health = lua.api.getServer(0).health
    assert (health.check_interval, health.check_timeout) == (2, 0.25)
    assert (health.rise, health.max_check_failures) == (3, 1)


# --- configuration errors ----------------------------------------------------------------------

BAD_OPTIONS = [
    ("checkInterval=0", "'checkInterval' must be greater than 0"),
    ("checkTimeout=-5", "'checkTimeout' must be greater than 0"),
    ('healthCheckMode="sometimes"', "'healthCheckMode' must be 'auto', 'lazy', 'up' or 'down'"),
    ('checkClass="MARS"', "'checkClass': unknown value 'MARS'"),
    ('checkName="a..b"', "'checkName' is not a valid DNS name"),
    ("maxCheckFailures=0", "'maxCheckFailures' must be a whole number >= 1"),
    ("rise=1.5", "'rise' must be a whole number >= 1"),
    ('mustResolve="yes"', "'mustResolve' must be true or false"),
    ('checkFunction="healthQuery"', "'checkFunction' must be a function"),
    ('lazyHealthCheckMode="Sometimes"', "'lazyHealthCheckMode' must be 'TimeoutOnly' or"),
    ("lazyHealthCheckThreshold=150", "'lazyHealthCheckThreshold' is a percentage"),
    ("lazyHealthCheckSampleSize=0", "'lazyHealthCheckSampleSize' must be a whole number >= 1"),
]


@pytest.mark.parametrize(("option", "message"), BAD_OPTIONS, ids=[o for o, _ in BAD_OPTIONS])
def test_bad_option_is_a_config_error_with_file_and_line(
    tmp_path: Path, option: str, message: str
) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(f'setLocal("127.0.0.1:5300")\n\nnewServer{{address="192.0.2.1", {option}}}\n')
    with pytest.raises(ConfigError) as caught:
        LuaConfig().run_file(path)
    assert str(caught.value).startswith(f"{path}:3: newServer: {message}")


async def test_check_config_reports_bad_health_options(tmp_path: Path) -> None:
    results: dict[str, tuple[int, str]] = {}

    async def check(option: str) -> None:
        path = tmp_path / f"{option.split('=')[0]}.lua"
        path.write_text(f'newServer("192.0.2.2")\nnewServer{{address="192.0.2.1", {option}}}\n')
        done = await trio.run_process(
            [sys.executable, "-m", "triodist", "check-config", "--config", str(path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
        results[option] = (done.returncode, f"{path}:2: newServer: " in done.stderr.decode())

    async with trio.open_nursery() as nursery:
        for option in ('healthCheckMode="sometimes"', "checkInterval=0", 'checkType="NOPE"'):
            nursery.start_soon(check, option)
    assert results == {
        'healthCheckMode="sometimes"': (1, True),
        "checkInterval=0": (1, True),
        # As dnsdist, an unknown type is not fatal (tests/test_config_goes_on.py).
        'checkType="NOPE"': (0, True),
    }


def test_check_ids_come_from_the_operating_systems_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The queries' IDs come from os.urandom (setRandomizedIdsOverUDP); the checks' must
    # too, never from random's Mersenne Twister, whose state enough IDs would give away.
    drawn = iter([0x1234, 0xBEEF, 0x0001])

    class Stub:
        def u16(self) -> int:
            return next(drawn)

    monkeypatch.setattr(backend_server, "_RANDOM", Stub())
    ids = [build_check(HealthCheckConfig()).qid for _ in range(3)]
    assert ids == [0x1234, 0xBEEF, 0x0001]
