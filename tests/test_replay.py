"""``triodist replay``: a capture's queries through a configuration, as a user runs it.

Each test makes its own small capture with dpkt's writers (``replay_captures``), runs
``python -m triodist replay`` in a subprocess, and reads its report: the JSON document
(``--json``) or the JSON line of each query (``--queries FILE``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.rcode
import dpkt
import pytest
import trio
import trio.testing
from conftest import StartTriodist, tcp_query, udp_query
from helpers import ROOT, subprocess_env
from replay_captures import RAW, SLL, SLL2, Capture, _ip, answer, query

from triodist.replay.capture import CaptureReader

SERVERS = """\
newServer{address="192.0.2.1:53", name="resolver1"}
newServer{address="192.0.2.2:53", name="internal", pool="internal"}
"""


def replay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m triodist replay ARGS``, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "triodist", "replay", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )


def report(config: Path, capture: Path, *more: str | Path) -> dict[str, Any]:
    done = replay("--config", config, capture, "--json", *more)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def each_query(config: Path, capture: Path, tmp_path: Path, *more: str) -> list[dict[str, Any]]:
    lines = tmp_path / "queries.jsonl"
    report(config, capture, "--queries", lines, *more)
    return [json.loads(line) for line in lines.read_text().splitlines()]


def counts(document: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(e["outcome"], e["by"]): e["queries"] for e in document["summary"]}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_each_query_is_attributed_to_the_rule_or_the_server_that_answered_it(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path / "rules.lua",
        SERVERS
        + """
addAction(QNameRule("ads.example.org."), RCodeAction(DNSRCode.REFUSED), {name="block-ads"})
addAction(QNameSuffixRule("corp.example.org."), PoolAction("internal"))
addAction(QNameRule("spoofed.example.org."), SpoofAction("192.0.2.77"))
""",
    )
    capture = Capture()
    www = query("www.example.org.", qid=1)
    capture.udp_query(10.0, "10.0.0.1", 4001, www, answer(www, "192.0.2.10"))
    gone = query("gone.example.org.", qid=2)
    capture.udp_query(10.1, "10.0.0.1", 4002, gone, answer(gone, rcode=dns.rcode.NXDOMAIN))
    capture.udp_query(10.2, "10.0.0.2", 4003, query("ads.example.org.", qid=3))
    capture.udp_query(10.3, "10.0.0.2", 4004, query("db.corp.example.org.", qid=4))
    capture.udp_query(10.4, "10.0.0.3", 4005, query("spoofed.example.org.", qid=5))
    path = capture.write(tmp_path / "traffic.pcap")

    seen = {q["name"]: q for q in each_query(config, path, tmp_path)}

    assert (
        seen["ads.example.org."] | {"outcome": "rule", "rcode": "REFUSED"}
        == seen["ads.example.org."]
    )
    assert seen["ads.example.org."]["by"] == "block-ads -> set rcode 5"
    # Not named: the rule as showRules() shows it.
    assert (
        seen["spoofed.example.org."]["by"] == "qname==spoofed.example.org. -> spoof in 192.0.2.77"
    )
    assert seen["www.example.org."]["outcome"] == "forwarded"
    assert seen["www.example.org."]["by"] == "default pool: resolver1 (192.0.2.1:53)"
    # The fake backend answers with the capture's own answer...
    assert seen["gone.example.org."]["rcode"] == "NXDOMAIN"
    assert seen["gone.example.org."]["captured_answer"] is True
    # ... and a query the capture has no answer for gets NOERROR.
    assert seen["db.corp.example.org."]["by"] == "pool internal: internal (192.0.2.2:53)"
    assert seen["db.corp.example.org."]["rcode"] == "NOERROR"
    assert seen["db.corp.example.org."]["captured_answer"] is False
    assert [q["time"] for q in seen.values()] == [0.0, 0.1, 0.2, 0.3, 0.4]


def _one_client(rate: float, seconds: float) -> Capture:
    capture = Capture()
    for number in range(int(rate * seconds)):
        message = query(f"n{number}.example.org.", qid=number)
        capture.udp_query(100.0 + number / rate, "10.0.0.7", 5353, message, answer(message))
    return capture


@pytest.mark.parametrize(("seconds", "least", "most"), [(3.0, 15, 35), (10.0, 0, 0)])
def test_a_rate_rule_sees_the_captures_own_rate(
    tmp_path: Path, seconds: float, least: int, most: int
) -> None:
    """60 queries from one client: at 20 a second (3 s), MaxQPSIPRule(10) drops about
    half of them; spread over 10 s (6 a second), none."""
    config = write(
        tmp_path / "rules.lua",
        SERVERS + 'addAction(MaxQPSIPRule(10), DropAction(), {name="rate"})\n',
    )
    capture = _one_client(60 / seconds, seconds).write(tmp_path / "traffic.pcap")

    found = counts(report(config, capture))

    dropped = found.get(("dropped", "rate -> drop"), 0)
    assert least <= dropped <= most, found
    assert dropped + found[("forwarded", "default pool: resolver1 (192.0.2.1:53)")] == 60


def test_against_lists_exactly_the_queries_that_differ_counted_by_rule(tmp_path: Path) -> None:
    current = write(tmp_path / "current.lua", SERVERS)
    new = write(
        tmp_path / "new.lua",
        SERVERS
        + """
addAction(QNameSuffixRule("tracker.example."), DropAction(), {name="no-trackers"})
addAction(QTypeRule(DNSQType.ANY), RCodeAction(DNSRCode.NOTIMP), {name="no-any"})
""",
    )
    capture = Capture()
    names = ["a.example.org.", "x.tracker.example.", "b.example.org.", "y.tracker.example."]
    for number, name in enumerate(names * 3):
        message = query(name, qid=number)
        capture.udp_query(number * 0.5, f"10.0.1.{number}", 3000 + number, message, answer(message))
    capture.udp_query(7.0, "10.0.2.1", 999, query("c.example.org.", "ANY", qid=77))
    path = capture.write(tmp_path / "traffic.pcap")

    document = report(new, path, "--against", current)

    differing = document["queries_differing"]
    assert document["differences"] == len(differing) == 7
    assert sorted(q["name"] for q in differing) == sorted(
        ["x.tracker.example."] * 3 + ["y.tracker.example."] * 3 + ["c.example.org."]
    )
    for entry in differing:
        assert entry["against"]["outcome"] == "forwarded"
    by_rule = {e["rule"]: (e["new"], e["against"]) for e in document["by_rule"]}
    assert by_rule == {
        "no-trackers -> drop": (6, 0),
        "no-any -> set rcode 4": (1, 0),
        "(no rule)": (0, 7),
    }
    # The text report says the same to a reader.
    text = replay("--config", new, "--against", current, path).stdout
    assert "7 of 13 queries differ" in text
    assert "no-trackers -> drop" in text


def test_tcp_and_ipv6_in_a_pcapng(tmp_path: Path) -> None:
    """TCP messages cut across segments are put together; their answers are matched
    over TCP, IPv6 as IPv4."""
    config = write(tmp_path / "rules.lua", SERVERS)
    capture = Capture()
    first, second = query("t1.example.org.", qid=11), query("t2.example.org.", qid=12)
    capture.tcp_exchange(
        1.0,
        "fd00::7",
        40000,
        [(first, answer(first, rcode=dns.rcode.NXDOMAIN)), (second, None)],
        split=True,
    )
    udp = query("u.example.org.", "AAAA", qid=13)
    capture.udp_query(2.0, "fd00::8", 40001, udp, answer(udp, None))
    path = capture.write(tmp_path / "traffic.pcapng", "pcapng")

    seen = {q["name"]: q for q in each_query(config, path, tmp_path)}

    assert (
        seen["t1.example.org."] | {"transport": "tcp", "client": "fd00::7"}
        == seen["t1.example.org."]
    )
    assert seen["t1.example.org."]["rcode"] == "NXDOMAIN"  # the capture's answer, over TCP
    assert seen["t2.example.org."]["captured_answer"] is False
    assert seen["u.example.org."]["transport"] == "udp"
    assert seen["u.example.org."]["captured_answer"] is True


@pytest.mark.parametrize("linktype", [SLL, SLL2, RAW])
def test_link_types(tmp_path: Path, linktype: int) -> None:
    capture = Capture(linktype=linktype)
    message = query("link.example.org.", qid=5)
    capture.udp_query(3.0, "10.9.8.7", 1234, message, answer(message))
    capture.udp_query(3.5, "fd00::9", 1235, query("six.example.org.", qid=6))
    path = capture.write(tmp_path / "traffic.pcap")

    reader = CaptureReader()
    queries = reader.read(path)

    assert [(q.client, q.client_port, q.answer is not None) for q in queries] == [
        ("10.9.8.7", 1234, True),
        ("fd00::9", 1235, False),
    ]


def test_hostile_captures_are_skipped_and_counted(tmp_path: Path) -> None:
    config = write(tmp_path / "rules.lua", SERVERS)
    capture = Capture()
    good = query("good.example.org.", qid=1)
    capture.udp_query(1.0, "10.0.0.1", 1000, good, answer(good))
    capture.garbage(1.1, b"\xff" * 7)  # shorter than an Ethernet header
    capture.garbage(1.2, bytes(12) + b"\x08\x00\x45" + bytes(5))  # IPv4 cut short
    capture.udp(1.3, "10.0.0.1", 1001, "10.53.0.1", 53, b"GET / HTTP/1.1\r\n")  # not DNS
    capture.udp(1.4, "10.0.0.1", 1002, "10.53.0.1", 80, good.to_wire())  # another port
    late = query("late.example.org.", qid=2)
    capture.udp_query(2.0, "10.0.0.2", 1003, late)
    path = capture.write(tmp_path / "traffic.pcap")
    # The same file cut in the header of its last packet (a pcap record header is 16
    # bytes): what comes before it is read.
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[: -(len(capture.frames[-1][1]) + 6)])

    document = report(config, path)
    found = document["capture"]["counts"]
    assert document["queries"] == 2
    assert found["not-dns"] == 1
    assert found["other-ports"] == 1
    assert found["not-ip"] + found["undecodable-packets"] == 2
    assert "capture-cut-short" not in found
    assert counts(document) == {("forwarded", "default pool: resolver1 (192.0.2.1:53)"): 2}

    shorter = report(config, cut)
    assert shorter["queries"] == 1  # the last query was in what was cut off
    assert shorter["capture"]["counts"]["capture-cut-short"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"this is not a capture at all\n", "not a capture"), (b"\xd4\xc3\xb2\xa1\x02", "unreadable")],
)
def test_a_file_that_is_not_a_capture_is_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    config = write(tmp_path / "rules.lua", SERVERS)
    path = tmp_path / "notes.txt"
    path.write_bytes(content)

    done = replay("--config", config, path)

    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    missing = replay("--config", config, tmp_path / "missing.pcap")
    assert missing.returncode == 1
    assert "missing.pcap" in missing.stderr and "Traceback" not in missing.stderr


def test_suspensions_slow_backends_cache_and_no_server(tmp_path: Path) -> None:
    """What a query waits for is waited for on the mock clock, at no wall-clock cost: a
    suspension nobody resumes times out after its 500 ms, a backend slower than its
    udpTimeout does not answer, a second query for a name is a cache hit, and a pool
    with no server up answers SERVFAIL."""
    config = write(
        tmp_path / "rules.lua",
        """
newServer{address="192.0.2.1:53", name="resolver1", udpTimeout=1}
newServer{address="192.0.2.9:53", name="gone", pool="gone"}:setDown()
setServFailWhenNoServer(true)
getPool(""):setCache(newPacketCache(100))
addAction(QNameRule("held.example.org."), LuaAction(function(dq)
  dq:suspend(1, dq.dh:getID(), 500)
  return DNSAction.Allow
end), {name="hold"})
addAction(QNameRule("nowhere.example.org."), PoolAction("gone"))
""",
    )
    capture = Capture()
    held = query("held.example.org.", qid=1)
    capture.udp_query(1.0, "10.0.0.1", 1000, held, answer(held))
    slow = query("slow.example.org.", qid=2)
    capture.udp_query(2.0, "10.0.0.1", 1001, slow, answer(slow), delay=1.5)
    for number in range(2):
        twice = query("twice.example.org.", qid=3 + number)
        capture.udp_query(3.0 + number, "10.0.0.2", 1002, twice, answer(twice))
    capture.udp_query(5.0, "10.0.0.3", 1003, query("nowhere.example.org.", qid=9))
    path = capture.write(tmp_path / "traffic.pcap")

    found = each_query(config, path, tmp_path)

    by_name = {(q["name"], q["index"]): q for q in found}
    assert by_name["held.example.org.", 0]["suspension"] == "timed-out"
    assert by_name["held.example.org.", 0]["outcome"] == "forwarded"
    assert by_name["slow.example.org.", 1]["outcome"] == "dropped"
    assert by_name["slow.example.org.", 1]["by"] == (
        "no answer in time from default pool: resolver1 (192.0.2.1:53)"
    )
    assert by_name["twice.example.org.", 2]["outcome"] == "forwarded"
    assert by_name["twice.example.org.", 3]["outcome"] == "cache"
    assert by_name["nowhere.example.org.", 4]["outcome"] == "servfail-no-server"
    assert by_name["nowhere.example.org.", 4]["rcode"] == "SERVFAIL"


def test_the_text_report_is_a_summary_table(tmp_path: Path) -> None:
    config = write(
        tmp_path / "rules.lua",
        SERVERS + 'addAction(QNameRule("ads.example.org."), DropAction(), {name="ads"})\n',
    )
    capture = Capture()
    for number in range(3):
        message = query("ads.example.org." if number else "www.example.org.", qid=number)
        capture.udp_query(number, "10.0.0.1", 1000 + number, message)
    path = capture.write(tmp_path / "traffic.pcap")

    done = replay("--config", config, path)

    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Replayed 3 queries from {path} (2.0 s of traffic, 1 client)")
    table = [line.split() for line in lines if line.startswith("  ")]
    assert table[0] == ["outcome", "by", "queries", "%"]
    assert table[1] == ["dropped", "ads", "->", "drop", "2", "66.7"]
    assert table[2][0] == "forwarded" and table[2][-2:] == ["1", "33.3"]


#: The generated capture's size: 10,000 queries, not the 100,000 of ``bench.replay``
#: (which replays them in about 20 s on a loaded 2-core machine: too long for the suite;
#: bench/results/2026-12-07-replay.txt).
GENERATED = 10_000


def test_a_generated_capture_is_accounted_for_query_by_query(tmp_path: Path) -> None:
    """``bench.replay``'s capture and configuration, at 1,000 queries a second: the
    report's outcomes are checked against what the capture holds, query by query."""
    from bench.replay import CONFIG, make_capture

    config = write(tmp_path / "rules.lua", CONFIG)
    capture = tmp_path / "traffic.pcap"
    make_capture(capture, GENERATED, seconds=GENERATED / 1000)
    blocked = {f"name{i * 50 + 7}.example.com." for i in range(100)}

    found = each_query(config, capture, tmp_path)

    assert len(found) == GENERATED
    rate_limited = 0
    v6_reaching_the_rate_rule = 0
    for entry in found:
        name, by = entry["name"], entry["by"]
        ipv6 = ":" in entry["client"]
        assert (name in blocked) == (by == "blocklist -> set rcode 5"), entry
        if name in blocked:
            assert entry["rcode"] == "REFUSED"
            continue
        v6_reaching_the_rate_rule += ipv6
        if by == "rate-limit -> drop":
            # Only the IPv6 clients, all in one /64 (at about 100 queries a second),
            # go over 20 a second; no IPv4 client does.
            assert ipv6, entry
            rate_limited += 1
        elif name.endswith(".corp.example.com."):  # routed before the ANY rule sees it
            assert by == "pool internal: internal (192.0.2.3:53)", entry
        elif entry["type"] == "ANY" and entry["transport"] == "udp":
            assert (entry["outcome"], entry["truncated"]) == ("rule", True), entry
        else:
            assert entry["outcome"] in ("forwarded", "cache"), entry
    # The /64's bucket: 20 at once, then 20 a second over the capture's 10 s.
    allowed = 20 + 20 * GENERATED / 1000
    assert abs(rate_limited - (v6_reaching_the_rate_rule - allowed)) <= 25


def test_against_counts_a_suspension_as_a_difference(tmp_path: Path) -> None:
    """A configuration that holds queries for 500 ms before forwarding them differs from
    one that forwards them at once: the queries it held are listed, their outcome names
    the rule that suspended them and how the suspension ended, and that rule decided."""
    current = write(tmp_path / "current.lua", SERVERS)
    new = write(
        tmp_path / "new.lua",
        SERVERS
        + """
addAction(QNameSuffixRule("slow.example."), LuaAction(function(dq)
  dq:suspend(1, dq.dh:getID(), 500)
  return DNSAction.Allow
end), {name="hold"})
""",
    )
    capture = Capture()
    for number, name in enumerate(["a.example.org.", "x.slow.example.", "b.example.org."]):
        message = query(name, qid=number)
        capture.udp_query(number * 1.0, "10.0.0.1", 2000 + number, message, answer(message))
    path = capture.write(tmp_path / "traffic.pcap")

    document = report(new, path, "--against", current)

    [held] = document["queries_differing"]
    assert held["name"] == "x.slow.example."
    assert held["new"]["outcome"] == held["against"]["outcome"] == "forwarded"
    assert held["new"]["suspension"] == "timed-out"
    assert held["new"]["by"] == (
        "default pool: resolver1 (192.0.2.1:53), after hold -> Lua script suspended it (timed-out)"
    )
    assert {e["rule"]: (e["new"], e["against"]) for e in document["by_rule"]} == {
        "hold -> Lua script": (1, 0),
        "(no rule)": (0, 1),
    }


def test_idle_tcp_connections_pushed_out_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections kept open between queries (no FIN in the capture) are pushed out when
    there are too many at once: that loses nothing and is not counted; a connection
    pushed out in the middle of a message is."""
    monkeypatch.setattr("triodist.replay.capture.MAX_TCP_FLOWS", 2)
    capture = Capture()
    psh = dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
    for number in range(5):  # one whole query each, then nothing
        wire = query(f"idle{number}.example.org.", qid=number).to_wire()
        framed = struct.pack("!H", len(wire)) + wire
        capture.tcp_segment(number, "10.0.0.1", 3000 + number, "10.53.0.1", 53, framed, psh)
    for number in range(3):  # half a query each
        wire = query(f"cut{number}.example.org.", qid=9).to_wire()
        framed = struct.pack("!H", len(wire)) + wire
        port = 4000 + number
        capture.tcp_segment(9 + number, "10.0.0.1", port, "10.53.0.1", 53, framed[:9], psh)
    # The first idle connection comes back with a second query.
    wire = query("again.example.org.", qid=77).to_wire()
    framed = struct.pack("!H", len(wire)) + wire
    capture.tcp_segment(20, "10.0.0.1", 3000, "10.53.0.1", 53, framed, psh)
    path = capture.write(tmp_path / "traffic.pcap")

    reader = CaptureReader()
    queries = reader.read(path)

    assert len(queries) == 6
    # cut0 pushed out by cut2, cut1 by the idle connection that came back; cut2 is left.
    assert reader.stats.counts["tcp-flows-over-bound"] == 2
    assert reader.stats.counts["tcp-flows-left-incomplete"] == 1


@pytest.mark.parametrize(
    ("option", "value"), [("--max-queries", "-1"), ("--list", "-1"), ("--port", "70000")]
)
def test_a_count_or_port_out_of_range_is_a_command_line_error(
    tmp_path: Path, option: str, value: str
) -> None:
    config = write(tmp_path / "rules.lua", SERVERS)
    path = Capture().write(tmp_path / "traffic.pcap")

    done = replay("--config", config, option, value, path)

    assert done.returncode == 2
    assert f"argument {option}: invalid" in done.stderr


def test_a_capture_with_no_query_says_so(tmp_path: Path) -> None:
    config = write(tmp_path / "rules.lua", SERVERS)
    capture = Capture()
    capture.udp(1.0, "10.0.0.1", 1000, "10.53.0.1", 80, b"not dns")
    path = capture.write(tmp_path / "traffic.pcap")

    done = replay("--config", config, path)

    assert done.returncode == 0, done.stderr
    assert "0 queries, 0 responses; no query to replay" in done.stdout
    assert "every query has its answer" not in done.stdout
    assert "outcome" not in done.stdout  # no empty table


def test_segments_out_of_order_are_bounded_in_bytes(tmp_path: Path) -> None:
    """A connection that sends 60 KB segments past a gap that never fills keeps no more
    than one flow's byte bound of them (two); the others are counted and left out."""
    capture = Capture()
    psh = dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
    capture.tcp_segment(1.0, "10.0.0.1", 3000, "10.53.0.1", 53, b"\x00\x10", psh)
    for number in range(8):
        segment = dpkt.tcp.TCP(
            sport=3000, dport=53, seq=1_000_000 + number * 60_000, flags=psh, data=bytes(60_000)
        )
        segment.off = 5
        capture.add(1.1 + number, _ip("10.0.0.1", "10.53.0.1", dpkt.ip.IP_PROTO_TCP, segment))
    path = capture.write(tmp_path / "traffic.pcap")

    reader = CaptureReader()
    reader.read(path)

    assert reader.stats.counts["tcp-out-of-order-over-bound"] == 6


def test_the_docs_replay_section_shows_what_the_commands_print(tmp_path: Path) -> None:
    """docs/testing.md's "What-if replay": its capture script and configurations, written
    out as a reader would, and each command it shows, run; the output is the page's, but
    for the time the replay took."""
    docs = (ROOT / "docs" / "testing.md").read_text()
    section = docs.split("\n## What-if replay\n", 1)[1].split("\n## ", 1)[0]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "make_capture.py").write_text(script)
    luas = [block.split("```", 1)[0] for block in section.split("```lua\n")[1:]]
    for name, text in zip(["current.lua", "new.lua", "hold.lua"], luas, strict=True):
        (tmp_path / name).write_text(text)
    shown = [block.split("```", 1)[0] for block in section.split("```console\n")[1:]]
    assert len(shown) == 3

    def timeless(text: str) -> str:
        return re.sub(r" in \d+\.\d s$", " in T s", text, flags=re.M)

    for block in shown:
        commands = re.split(r"^\$ ", block, flags=re.M)[1:]
        for command in commands:
            line, _, expected = command.partition("\n")
            argv = shlex.split(line)
            if argv[0] == "python":
                done = subprocess.run(
                    [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True
                )
            else:
                assert argv[:2] == ["triodist", "replay"], line
                done = subprocess.run(
                    [sys.executable, "-m", "triodist", *argv[1:]],
                    cwd=tmp_path,
                    env=subprocess_env(),
                    capture_output=True,
                    text=True,
                )
            assert done.returncode == 0, done.stderr
            assert timeless(done.stdout) == timeless(expected), line


def test_responses_to_queries_over_max_queries_are_not_called_unmatched(tmp_path: Path) -> None:
    config = write(tmp_path / "rules.lua", SERVERS)
    capture = Capture()
    for number in range(4):
        message = query(f"q{number}.example.org.", qid=number)
        capture.udp_query(number, "10.0.0.1", 1000 + number, message, answer(message))
    path = capture.write(tmp_path / "traffic.pcap")

    document = report(config, path, "--max-queries", "2")

    found = document["capture"]["counts"]
    assert (found["queries-over-max"], found["responses-after-max"]) == (2, 2)
    assert "responses-without-query" not in found
    text = replay("--config", config, path, "--max-queries", "2").stdout
    assert "2 queries over --max-queries; 2 responses once --max-queries was reached" in text


async def test_a_capture_the_kernel_made_of_real_queries(
    start_triodist: StartTriodist, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Real queries to a running triodist, over UDP and TCP (a connection each, with the
    kernel's handshakes, sequence numbers and TCP options), captured off the loopback
    interface by the kernel (a packet socket, as tcpdump takes them), then replayed
    through the same configuration: every query is found, with the answer it got, and
    gets the same outcome and rcode; through a configuration that blocks one more name,
    exactly that name's queries differ."""
    try:
        sniffer = trio.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except PermissionError:
        why = "capturing off the loopback interface needs CAP_NET_RAW"
        if os.environ.get("CI") == "true":  # CI runs as root: never skip there
            pytest.fail(why)
        pytest.skip(why)
    await sniffer.bind(("lo", 0))
    rules = 'addAction(QNameRule("blocked.example.org."), RCodeAction(DNSRCode.REFUSED))\n'
    proxy = await start_triodist('newServer{address="$BACKEND", name="auth"}\n' + rules)
    frames: list[tuple[float, bytes]] = []

    async def capture() -> None:
        with sniffer:
            while True:
                data, where = await sniffer.recvfrom(70_000)
                if where[2] != socket.PACKET_OUTGOING:  # loopback shows each frame twice
                    frames.append((trio.current_time(), data))

    nursery.start_soon(capture)
    live = []
    for name in ["www.example.org.", "blocked.example.org.", "nosuch.example.org."]:
        for over in (udp_query, tcp_query):
            answer = await over(proxy.address, query(name))
            assert answer is not None
            live.append((name, "udp" if over is udp_query else "tcp", answer.rcode()))
    await trio.testing.wait_all_tasks_blocked()  # the capture has taken every frame
    path = tmp_path / "loopback.pcap"
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=1)
        for at, frame in frames:
            writer.writepkt(frame, ts=1_700_000_000 + at)
    port = str(proxy.address[1])
    new = write(
        tmp_path / "new.lua", proxy.config_path.read_text() + rules.replace("blocked", "www")
    )

    seen = each_query(proxy.config_path, path, tmp_path, "--port", port)

    assert [(q["name"], q["transport"]) for q in seen] == [(n, t) for n, t, _ in live]
    for entry, (name, _, rcode) in zip(seen, live, strict=True):
        assert entry["captured_answer"] is True
        assert entry["rcode"] == dns.rcode.to_text(rcode)
        assert entry["outcome"] == ("rule" if name.startswith("blocked") else "forwarded")
    changed = report(new, path, "--port", port, "--against", proxy.config_path)
    assert [q["name"] for q in changed["queries_differing"]] == ["www.example.org."] * 2
