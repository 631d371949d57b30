"""The benchmark's reading of dnsperf's output (``bench/dnsperf.py``) and its latency figures.

The outputs below are dnsperf 2.10.0's, captured against the benchmark's knotd backend
(``-v``: one line per answer with its latency) and against a socket that never answers.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from bench import dnsperf
from bench.dnsperf import Latencies, LoadOptions, parse, read_output
from bench.measure import DIRECT, LightLoad, Measurement, check
from bench.procs import Pinning, ProcessSet
from bench.report import added_us, headers, latency_added, latency_rows, rows, summarise

# dnsperf -v -n 1 -q 1 against knotd: three answers from the zone, one REFUSED (not in it).
# (The data file's path, /tmp/<random>/q, is shortened to fit the line length.)
VERBOSE = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 51447 -d /tmp/q -v -n 1 -q 1 -O suppress=timeouts
[Status] Sending queries (to 127.0.0.1:51447)
[Status] Started at: Sun Nov 22 05:37:08 2026
[Status] Stopping after 1 run through file
> NOERROR h0.bench.test A 0.002337
> NOERROR h1.bench.test AAAA 0.000036
> REFUSED example.com A 0.000155
> NOERROR h3.bench.test A 0.000147
[Status] Testing complete (end of file)

Statistics:

  Queries sent:         4
  Queries completed:    4 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 3 (75.00%), REFUSED 1 (25.00%)
  Average packet size:  request 30, response 51
  Run time (s):         0.103558
  Queries per second:   38.625698

  Average Latency (s):  0.000668 (min 0.000036, max 0.002337)
  Latency StdDev (s):   0.001113

"""

# dnsperf -v -t 0.2 against a socket that never answers, without -O suppress=timeouts
# (with it, dnsperf 2.10 prints no "> T" line either).
TIMEOUTS = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 47176 -d /tmp/q -v -n 1 -q 2 -t 0.2
[Status] Sending queries (to 127.0.0.1:47176)
[Status] Started at: Sun Nov 22 05:37:09 2026
[Status] Stopping after 1 run through file
> T h0.bench.test A
> T h1.bench.test AAAA
> T example.com A
> T h3.bench.test A
[Status] Testing complete (end of file)

Statistics:

  Queries sent:         4
  Queries completed:    0 (0.00%)
  Queries lost:         4 (100.00%)

  Response codes:{SPACES}
  Average packet size:  request 30, response 0
  Run time (s):         0.401019
  Queries per second:   0.000000

  Average Latency (s):  0.000000 (min 0.000000, max 0.000000)

""".replace("{SPACES}", " " * 7)  # dnsperf's trailing spaces after an empty list


def test_verbose_lines_become_a_histogram_of_microseconds() -> None:
    text, latencies = read_output(VERBOSE.splitlines(keepends=True))
    assert dict(latencies.counts) == {2337: 1, 36: 1, 155: 1, 147: 1}
    assert dict(latencies.rcodes) == {"NOERROR": 3, "REFUSED": 1}
    assert latencies.count == 4
    assert (latencies.timeouts, latencies.interrupted, latencies.unparsed) == (0, 0, 0)
    # The per-query lines are gone; the rest, statistics included, is kept as it was.
    assert "> NOERROR" not in text
    assert text == "".join(
        line for line in VERBOSE.splitlines(keepends=True) if not line.startswith("> ")
    )
    result = parse(text)
    assert (result.sent, result.completed, result.lost) == (4, 4, 0)
    assert result.rcodes == {"NOERROR": 3, "REFUSED": 1}
    assert result.latency_max == pytest.approx(0.002337)


def test_nearest_rank_percentiles() -> None:
    latencies = Latencies()
    for line in VERBOSE.splitlines():
        latencies.add_line(line)
    # Sorted: 36, 147, 155, 2337.
    assert latencies.percentile(25) == 36
    assert latencies.percentile(50) == 147
    assert latencies.percentile(50.1) == 155
    assert latencies.percentile(99) == 2337
    assert latencies.percentiles() == {
        "p50": pytest.approx(147e-6),
        "p90": pytest.approx(2337e-6),
        "p99": pytest.approx(2337e-6),
        "p99.9": pytest.approx(2337e-6),
    }
    summary = latencies.summary()
    assert summary["answers"] == 4
    assert (summary["min_us"], summary["p50_us"], summary["max_us"]) == (36, 147, 2337)
    assert summary["mean_us"] == pytest.approx((36 + 147 + 155 + 2337) / 4, abs=0.1)


def test_percentiles_of_many_answers() -> None:
    # 1..1000 µs, once each: the nearest rank of p99.9 is the 999th value.
    lines = [f"> NOERROR q{n}.bench.test A 0.{n:06d}\n" for n in range(1, 1001)]
    _, latencies = read_output(lines)
    assert latencies.count == 1000
    assert [latencies.percentile(p) for p in (50, 90, 99, 99.9, 100)] == [500, 900, 990, 999, 1000]
    # A second or more is read as well as microseconds.
    latencies.add_line("> NOERROR slow.bench.test A 1.000250")
    assert max(latencies.counts) == 1_000_250


def test_no_answers_no_percentiles() -> None:
    text, latencies = read_output(TIMEOUTS.splitlines(keepends=True))
    assert latencies.count == 0
    assert latencies.timeouts == 4
    assert latencies.percentile(50) is None
    assert latencies.percentiles() == {}
    assert latencies.summary() == {"answers": 0, "timeouts": 4, "interrupted": 0, "unparsed": 0}
    result = parse(text)
    assert (result.sent, result.completed, result.lost) == (4, 0, 4)


@pytest.mark.parametrize(
    ("line", "counted"),
    [
        ("> I h0.bench.test A", "interrupted"),
        ("> T h0.bench.test A", "timeouts"),
        ("> NOERROR h0.bench.test A", "unparsed"),  # no latency
        ("> NOERROR h0.bench.test A 0.12", "unparsed"),  # not six digits
        ("> NOERROR h0.bench.test A 0.000123 extra", "unparsed"),
    ],
)
def test_other_per_query_lines(line: str, counted: str) -> None:
    latencies = Latencies()
    assert latencies.add_line(line + "\n")
    assert latencies.count == 0
    assert getattr(latencies, counted) == 1


def test_query_lines_with_more_fields_and_other_rcodes() -> None:
    latencies = Latencies()
    # The query file's whole line is printed, so it may hold more than a name and a type.
    assert latencies.add_line("> SERVFAIL odd name.bench.test TXT +extra 0.000311\n")
    assert latencies.add_line("> NXDOMAIN x.test A 0.000007\r\n")
    assert dict(latencies.counts) == {311: 1, 7: 1}
    assert dict(latencies.rcodes) == {"SERVFAIL": 1, "NXDOMAIN": 1}


def test_other_lines_are_not_per_query_lines() -> None:
    latencies = Latencies()
    for line in ("[Status] Sending queries", "Warning: received short response", ">", ""):
        assert not latencies.add_line(line)
    assert latencies.count == latencies.unparsed == 0


def test_only_the_last_lines_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsperf, "KEPT_LINES", 30)
    warnings = [f"Warning: received a response with an unexpected id: {n}\n" for n in range(500)]
    text, _ = read_output([*warnings, *VERBOSE.splitlines(keepends=True)])
    assert text.count("\n") == 30
    assert parse(text).completed == 4  # the statistics, at the end, are always kept


def test_load_options_with_a_rate() -> None:
    assert LoadOptions(duration=5, rate=2000).argv() == [
        *["-l", "5", "-c", "1", "-T", "1", "-q", "100", "-t", "1", "-Q", "2000"]
    ]
    assert "-Q" not in LoadOptions().argv()


def _fake_dnsperf(tmp_path: Path, output: str) -> Path:
    """A program that prints ``output`` and exits, in dnsperf's place."""
    data = tmp_path / "output.txt"
    data.write_text(output)
    script = tmp_path / "dnsperf"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import sys
            sys.stdout.write(open({str(data)!r}).read())
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_verbose_run_keeps_a_short_log(tmp_path: Path) -> None:
    program = _fake_dnsperf(tmp_path, VERBOSE)
    log = tmp_path / "run.dnsperf.log"
    with ProcessSet() as processes:
        result = dnsperf.run(
            str(program),
            processes,
            Pinning(None, None, None),
            host="127.0.0.1",
            port=53,
            query_file=tmp_path / "queries",
            options=LoadOptions(duration=1, rate=2000),
            log_path=log,
            verbose=True,
        )
    assert result.percentiles["p50"] == pytest.approx(147e-6)
    assert result.per_query is not None and result.per_query["p99_us"] == 2337
    assert "> NOERROR" not in log.read_text()
    assert "Queries completed:    4" in log.read_text()


def test_a_plain_run_has_no_per_query_figures(tmp_path: Path) -> None:
    program = _fake_dnsperf(tmp_path, VERBOSE)
    log = tmp_path / "run.dnsperf.log"
    with ProcessSet() as processes:
        result = dnsperf.run(
            str(program),
            processes,
            Pinning(None, None, None),
            host="127.0.0.1",
            port=53,
            query_file=tmp_path / "queries",
            options=LoadOptions(duration=1),
            log_path=log,
        )
    assert result.per_query is None
    assert result.percentiles == {}
    assert log.read_text() == VERBOSE  # left as dnsperf wrote it


def _latency_run(target: str, micros: list[int]) -> Measurement:
    lines = [f"> NOERROR h{n % 100}.bench.test A 0.{us:06d}\n" for n, us in enumerate(micros)]
    statistics = VERBOSE.split("Statistics:")[1]
    statistics = statistics.replace(
        "Queries sent:         4", f"Queries sent:         {len(micros)}"
    )
    statistics = statistics.replace(
        "Queries completed:    4", f"Queries completed:    {len(micros)}"
    )
    statistics = statistics.replace("Run time (s):         0.103558", "Run time (s):         1.0")
    statistics = statistics.replace(
        "NOERROR 3 (75.00%), REFUSED 1 (25.00%)", f"NOERROR {len(micros)} (100.00%)"
    )
    text, latencies = read_output([*lines, "Statistics:\n", *statistics.splitlines(True)])
    result = dataclasses.replace(
        parse(text), percentiles=latencies.percentiles(), per_query=latencies.summary()
    )
    proxy_cpu = None if target == DIRECT else 0.05
    return Measurement(target, 1, result, 100, proxy_cpu, 0.01, 0, rate=len(micros))


def test_latency_figures_in_the_table_and_the_json() -> None:
    direct = _latency_run(DIRECT, [30] * 90 + [100] * 10)
    proxy = _latency_run("triodist", [130] * 90 + [400] * 10)
    assert check(direct, None) == []
    summaries = [
        summarise("no-cache", "triodist", [], [proxy]),
        summarise("no-cache", DIRECT, [], [direct]),
    ]
    subject = summaries[0]
    assert (subject.light_p50_us, subject.light_p99_us, subject.light_rate) == (130, 400, 100)
    assert added_us(summaries, subject, lambda s: s.light_p50_us) == 100
    assert added_us(summaries, summaries[1], lambda s: s.light_p50_us) is None
    names = headers(summaries)
    table = dict(zip(names, rows(summaries)[0], strict=True))
    assert (table["p50 µs"], table["p99 µs"], table["added p50 µs"]) == ("130", "400", "+100")
    assert table["qps"] == "-"  # no throughput run for this target
    assert "p50 ms at load" not in names
    assert latency_added(summaries) == {"triodist": {"p50": 100, "p99": 300, "p99.9": 300}}
    direct_row, proxy_row = latency_rows([direct, proxy])
    assert direct_row[0] == DIRECT and direct_row[-4:-2] == ["-", "-"]
    assert proxy_row[4:9] == ["130", "130", "400", "400", "400"]  # p50, p90, p99, p99.9, max
    assert proxy_row[9:11] == ["+100", "+300"]
    json.dumps([s.as_dict() for s in summaries])  # what the result file holds


def test_a_latency_run_notes_losses_and_a_missed_rate() -> None:
    m = _latency_run("triodist", [130] * 100)
    m.rate = 2000  # dnsperf sent 100 in a second
    m.result = dataclasses.replace(m.result, lost=3)
    notes = check(m, None)
    assert any("3 queries unanswered" in n for n in notes)
    assert any("not the 2,000 asked" in n for n in notes)


def test_light_load_argv() -> None:
    light = LightLoad(LoadOptions(duration=5, rate=2000), Path("w"), 1000)
    assert light.rate == 2000
    assert light.argv()[-3:] == ["-Q", "2000", "-v"]
