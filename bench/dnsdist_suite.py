"""dnsdist's own regression tests, run against triodist: the measure of drop-in compatibility.

    python -m bench.dnsdist_suite run --pdns GITDIR --label LABEL [--bin BINARY] [FILE...]
    python -m bench.dnsdist_suite table LABEL [LABEL...]

The tests are PowerDNS/pdns's ``regression-tests.dnsdist/`` at tag ``dnsdist-1.7.3`` (GITDIR:
the git directory of a clone holding that tag). They are GPL and are never copied into this
project: ``run`` extracts them into ``WORK`` (``/tmp/dnsdist-regress`` unless
``--work``), makes a virtual environment there with what they pin (dnspython 1.15, and
pytest, since nose does not run on Python 3.11) and the test certificates, then runs each
file unmodified, one at a time, with ``DNSDISTBIN`` set to the binary (``triodist`` on the
PATH unless ``--bin``; ``/usr/bin/dnsdist`` gives dnsdist's own result). Each file's pytest
output and junit XML go to ``RESULTS/LABEL/`` (``bench/results/dnsdist-suite/`` unless
``--results``).

``table`` reads those junit files and prints, per file, the tests passed out of those run,
one column per label, and the totals: the before-and-after table an issue note quotes.

The files load the machine lightly but their timeouts are short: run nothing heavy beside.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TAG = "dnsdist-1.7.3"
#: The files that measure drop-in compatibility (the others need DoT, DoH, protobuf,
#: SNMP, the web server and more that triodist does not have yet).
FILES = [
    "Basics", "Routing", "Caching", "Spoofing", "Responses", "Advanced", "TCPLimits",
    "Trailing", "EDNSOptions", "EdnsClientSubnet", "Tags", "HealthChecks", "Console",
    "CheckConfig", "TCPKeepAlive", "RulesActions", "CacheHitResponses",
    "SelfAnsweredResponses", "RecordsCount", "TCPOnly", "TCPShort", "BrokenAnswer",
    "EDNSSelfGenerated", "OOOR", "AXFR",
]  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results" / "dnsdist-suite"


def git(gitdir: str, *args: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={gitdir}", *args], check=True, capture_output=True
    ).stdout


def extract(gitdir: str, work: Path) -> Path:
    """The suite at ``TAG`` in ``work``, with its virtual environment and certificates."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    archive = git(gitdir, "archive", TAG, "regression-tests.dnsdist")
    subprocess.run(
        ["tar", "-x", "--strip-components=1", "-C", str(work)], input=archive, check=True
    )
    # Two helpers are links to files outside the folder: their targets' text instead.
    for name in ("eqdnsmessage.py", "proxyprotocol.py"):
        target = git(gitdir, "show", f"{TAG}:regression-tests.dnsdist/{name}").decode().strip()
        (work / name).unlink(missing_ok=True)
        (work / name).write_bytes(git(gitdir, "show", f"{TAG}:{target.removeprefix('../')}"))
    venv = work / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "dnspython==1.15.0", "pytest", "libnacl",
         "requests", "protobuf", "future"],
        check=True,
    )  # fmt: skip
    ssl = ["openssl", "req", "-new", "-nodes"]
    subprocess.run(
        [*ssl, "-x509", "-days", "30", "-extensions", "v3_ca", "-keyout", "ca.key",
         "-out", "ca.pem", "-config", "configCA.conf"], cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*ssl, "-newkey", "rsa:2048", "-keyout", "server.key", "-out", "server.csr",
         "-config", "configServer.conf"], cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-days", "30", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-in", "server.csr", "-out", "server.pem",
         "-extfile", "configServer.conf", "-extensions", "v3_req"],
        cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    (work / "server.chain").write_bytes(
        (work / "server.pem").read_bytes() + (work / "ca.pem").read_bytes()
    )
    return work


def run(work: Path, binary: str, files: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DNSDISTBIN": binary, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    for name in files:
        test = f"test_{name}.py"
        shutil.rmtree(work / "configs", ignore_errors=True)
        (work / "configs").mkdir()
        with (out / f"test_{name}.txt").open("wb") as log:
            subprocess.run(
                [str(work / ".venv" / "bin" / "python"), "-m", "pytest", "-v", "-p",
                 "no:cacheprovider", f"--junitxml={out / f'test_{name}.xml'}", test],
                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1200,
            )  # fmt: skip
        passed, total = counts(out / f"test_{name}.xml")
        print(f"{test:32} {passed:4} / {total}", flush=True)


def counts(junit: Path) -> tuple[int, int]:
    """Tests passed and tests run, from a junit file (0, 0 when there is none)."""
    if not junit.exists():
        return 0, 0
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    total = int(suite.get("tests", 0))
    failed = sum(int(suite.get(k, 0)) for k in ("failures", "errors", "skipped"))
    return total - failed, total


def table(labels: list[str], results: Path) -> str:
    """Per file, passed of run for each label; a Markdown table."""
    lines = ["| file | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    sums = [[0, 0] for _ in labels]
    for name in FILES:
        cells = []
        for i, label in enumerate(labels):
            passed, total = counts(results / label / f"test_{name}.xml")
            sums[i][0] += passed
            sums[i][1] += total
            cells.append(f"{passed} / {total}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{p} / {t}**" for p, t in sums) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dnsdist_suite")
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="extract the suite and run files against a binary")
    go.add_argument("--pdns", required=True, help="git directory of a PowerDNS/pdns clone")
    go.add_argument("--label", required=True, help="the results' folder name")
    go.add_argument("--bin", default=shutil.which("triodist") or "triodist")
    go.add_argument("--work", type=Path, default=Path("/tmp/dnsdist-regress"))
    go.add_argument("--results", type=Path, default=RESULTS)
    go.add_argument("--reuse", action="store_true", help="the suite is extracted already")
    go.add_argument("files", nargs="*", help="names such as Basics (default: all of FILES)")
    show = sub.add_parser("table", help="passed per file, one column per label")
    show.add_argument("labels", nargs="+")
    show.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.command == "table":
        print(table(args.labels, args.results))
        return 0
    work = args.work if args.reuse else extract(args.pdns, args.work)
    run(work, args.bin, args.files or FILES, args.results / args.label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
