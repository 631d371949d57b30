"""The pytest plugin (triodist/testing/plugin.py) and its fake backend's answer table.

The first tests run a user's project as pytest would run it, in a separate pytest
process: a ``rules.lua`` and the issue's example test, the plugin loaded by its entry
point, by name, or both; and examples/policy-tests/ with the installed package, as its
user runs it. The others use the plugin's ``Triodist`` class directly, with this suite's
nursery.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import deque
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

import triodist
from triodist.testing import slow
from triodist.testing.fakebackend import FakeBackend, TableServer
from triodist.testing.launcher import Triodist

pytest_plugins = ["pytester"]

RULES = """\
setLocal("192.0.2.53:53")
newServer({address="192.0.2.1:53", name="resolver1"})
addAction(QNameRule("ads.example.org."), RCodeAction(DNSRCode.REFUSED))
"""

USER_TEST = """\
import dns.rcode

pytest_plugins = ["triodist.testing.plugin"]


async def test_blocked_names_never_reach_the_backend(triodist):
    proxy = await triodist.start(
        "rules.lua",
        backends={"resolver1": {"www.example.org.": "192.0.2.10"}},
    )
    answer = await proxy.query("ads.example.org.", "A")
    assert answer.rcode() == dns.rcode.REFUSED
    assert proxy.backend("resolver1").received == []


async def test_other_names_are_forwarded(triodist):
    proxy = await triodist.start(
        "rules.lua",
        backends={"resolver1": {"www.example.org.": "192.0.2.10"}},
    )
    answer = await proxy.query("www.example.org.", "A", over="tcp")
    assert [rr.to_text() for rr in answer.answer] == ["www.example.org. 300 IN A 192.0.2.10"]
    assert [q.question[0].name.to_text() for q in proxy.backend("resolver1").received] == [
        "www.example.org."
    ]


async def test_a_backend_not_given_answers_servfail(triodist):
    proxy = await triodist.start("rules.lua")
    answer = await proxy.query("www.example.org.", "A")
    assert answer.rcode() == dns.rcode.SERVFAIL
"""


def query(name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


@pytest.mark.parametrize("trio_mode", [True, False])
def test_a_users_project_runs_the_issues_example(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, trio_mode: bool
) -> None:
    # The package under test, not an installed copy, in the pytest process it starts.
    monkeypatch.setenv("PYTHONPATH", str(Path(triodist.__file__).parent.parent))
    # Without trio_mode, the plugin marks the tests that use its fixture.
    pytester.makeini(f"[pytest]\ntrio_mode = {str(trio_mode).lower()}\n")
    pytester.makefile(".lua", rules=RULES)
    pytester.makepyfile(test_policy=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rP")
    result.assert_outcomes(passed=3)
    # The notice is in that test's captured output (shown here by -rP, as on a failure).
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_backend_not_given_answers_servfail _*",
            "*Captured stdout call*",
            "triodist: newServer 'resolver1' (192.0.2.1:53) is not in backends=:"
            " its fake answers SERVFAIL",
        ]
    )


CHECKOUT = Path(triodist.__file__).parent.parent
EXAMPLE = CHECKOUT / "examples" / "policy-tests"

#: A test module that uses the fixture, with nothing but the example's own imports.
PLAIN_TEST = USER_TEST.replace('pytest_plugins = ["triodist.testing.plugin"]\n', "")


def entry_point() -> str:
    """The module the package's ``pytest11`` entry point ``triodist`` names (pyproject.toml)."""
    with (CHECKOUT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return str(project["entry-points"]["pytest11"]["triodist"])


def installed_entry_point(where: Path) -> Path:
    """A directory that, on ``sys.path``, makes the package's ``pytest11`` entry point
    visible to pytest, as ``pip install triodist`` does."""
    module = entry_point()
    info = where / "triodist_plugin_entry-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: triodist-plugin-entry\nVersion: 0.0\n"
    )
    (info / "entry_points.txt").write_text(f"[pytest11]\ntriodist = {module}\n")
    return where


@pytest.mark.parametrize(
    ("entry_point", "by_name", "autoload"),
    [
        (True, False, True),  # installed: nothing to write
        (True, True, True),  # installed, and named too: no clash
        (True, True, False),  # autoload disabled: named, and pytest-trio comes along
        (False, True, False),  # a working tree: named only
    ],
    ids=["entry-point", "entry-point-and-name", "name-without-autoload", "name-only"],
)
def test_the_plugin_loads_by_its_entry_point_by_name_or_both(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    entry_point: bool,
    by_name: bool,
    autoload: bool,
) -> None:
    paths = [str(CHECKOUT)]
    if entry_point:
        paths.append(str(installed_entry_point(pytester.path / "site")))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    if autoload:
        monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    else:
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makefile(".lua", rules=RULES)
    pytester.makepyfile(test_policy=USER_TEST if by_name else PLAIN_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_without_pytest_trio_a_test_of_the_fixture_fails_saying_what_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(CHECKOUT))
    pytester.makefile(".lua", rules=RULES)
    pytester.makepyfile(test_policy=USER_TEST)
    # Blocked, pytest-trio is as good as absent (and the plugin respects the block).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:trio")
    result.assert_outcomes(errors=3)
    said = (
        "the triodist fixture runs on pytest-trio, which is not installed: "
        "pip install 'triodist[pytest]'"
    )
    assert result.stdout.str().count(said) >= 3


def test_loading_the_plugin_imports_no_server() -> None:
    # A user's unrelated tests pay for the plugin as soon as triodist is installed.
    code = (
        "import sys, triodist.testing.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('triodist.', 'lupa', 'dns'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['triodist.testing', 'triodist.testing.plugin']"


def _outside_env() -> dict[str, str]:
    """The environment of a user's shell: none of this suite's settings for Python or pytest."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PYTEST_"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the checkout's example
    return env


_INSTALLED = """import hashlib, importlib.metadata, pathlib, triodist
root = pathlib.Path(triodist.__file__).parent
print(root)
print(sorted(f"{e.name}={e.value}" for e in importlib.metadata.entry_points(group="pytest11")))
for path in sorted(root.rglob("*")):
    if path.suffix in (".py", ".lua"):
        print(path.relative_to(root), hashlib.sha256(path.read_bytes()).hexdigest())
"""


def _installed_matches_checkout(python: str) -> bool:
    """Whether ``python``, started outside the checkout, imports this checkout's package
    (the same files) and sees its entry point."""
    result = subprocess.run(
        [python, "-c", _INSTALLED], cwd=EXAMPLE, env=_outside_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        return False
    root, entry_points, *files = result.stdout.splitlines()
    if Path(root) == CHECKOUT / "triodist":
        return False  # the checkout itself, not an installed copy
    ours = subprocess.run(
        [sys.executable, "-c", _INSTALLED],
        cwd=CHECKOUT,
        env={**_outside_env(), "PYTHONPATH": str(CHECKOUT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[2:]
    return f"triodist={entry_point()}" in entry_points and files == ours


@pytest.fixture(scope="session")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python in which this checkout is installed, not imported from the working tree.

    In CI the package is installed from the checkout (``pip install '.[test]'``): this
    one. Elsewhere the installed copy may be older: then a private virtual environment,
    seeing this one's packages for the dependencies, gets this checkout installed
    (from a copy: building in the working tree would leave its files there)."""
    if _installed_matches_checkout(sys.executable):
        return sys.executable
    where = tmp_path_factory.mktemp("installed")
    source = where / "source"
    source.mkdir()
    shutil.copytree(
        CHECKOUT / "triodist", source / "triodist", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", str(source)],
        env=_outside_env(),
        check=True,
        capture_output=True,
    )
    # Installed there, with its entry point (the files are the copy's: the working tree
    # may have changed since).
    root, entry_points = subprocess.run(
        [python, "-c", _INSTALLED], cwd=EXAMPLE, env=_outside_env(), capture_output=True, text=True
    ).stdout.splitlines()[:2]
    assert Path(root).is_relative_to(venv) and f"triodist={entry_point()}" in entry_points
    return python


def test_the_example_project_passes_as_its_user_runs_it(installed_python: str) -> None:
    # As its user runs it: `pytest` in that folder, with triodist installed; nothing on the
    # path but the folder itself, no plugin named on the command line.
    result = subprocess.run(
        # No cache directory left in the checkout (and no benchmark store, when
        # pytest-benchmark is around).
        [installed_python, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-v"],
        cwd=EXAMPLE,
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = (EXAMPLE / "test_rules.py").read_text().count("\nasync def test_")
    assert tests >= 5
    assert result.stdout.count(" PASSED") == tests, result.stdout
    assert f"{tests} passed" in result.stdout.splitlines()[-1]


def test_the_examples_first_test_is_the_issues_example_as_written() -> None:
    example = (EXAMPLE / "test_rules.py").read_text()
    written = USER_TEST.split("\n\n\nasync def test_other_names")[0]
    written = written.replace('pytest_plugins = ["triodist.testing.plugin"]\n\n\n', "")
    body = written.split("import dns.rcode\n\n")[1]
    body = body.replace(
        '"rules.lua",',
        '"rules.lua",                                   # the production file, unchanged',
    )
    assert body in example


def test_the_docs_first_test_is_the_examples() -> None:
    docs = (CHECKOUT / "docs" / "testing.md").read_text()
    section = docs.split("### A first test", 1)[1].split("\n### ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    test = block.split("\n\n", 1)[1]  # after the import
    assert test.startswith("async def test_")
    assert test in (EXAMPLE / "test_rules.py").read_text()


def test_the_docs_mock_clock_test_is_the_examples() -> None:
    docs = (CHECKOUT / "docs" / "testing.md").read_text()
    section = docs.split("### Time: the mock clock", 1)[1].split("\n### ", 1)[0]
    test = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert test.startswith("async def test_") and "autojump_clock" in test
    assert test in (EXAMPLE / "test_rules.py").read_text()


def test_the_examples_rules_pass_check_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "triodist", "check-config", "-C", "rules.lua"],
        cwd=EXAMPLE,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Configuration 'rules.lua' OK!"


async def test_a_server_not_in_backends_answers_servfail_and_the_output_says_so(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    out = io.StringIO()
    launcher = Triodist(nursery, tmp_path, out=lambda: out)
    other = 'newServer({address="192.0.2.2:53", pool="other"})\n'
    other += 'addAction(QNameRule("www.other.example."), PoolAction("other"))\n'
    proxy = await launcher.start(RULES + other, backends={"resolver1": {}})
    try:
        # A server with no name is named by its address: the notice says it once.
        assert out.getvalue() == (
            "triodist: newServer '192.0.2.2:53' is not in backends=: its fake answers SERVFAIL\n"
        )
        assert proxy.backend("192.0.2.2:53").mode == "servfail"
        answer = await proxy.query("www.other.example.", timeout=3)
        assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
        assert len(proxy.backend("192.0.2.2:53").received) == 1
    finally:
        await launcher.aclose()


async def test_a_backend_is_found_by_its_address_string_too(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"192.0.2.1:53": {"a.example.": "NXDOMAIN"}})
    try:
        answer = await proxy.query("a.example.")
        assert answer is not None and answer.rcode() == dns.rcode.NXDOMAIN
        assert proxy.backend("resolver1") is proxy.backend("192.0.2.1:53")
        with pytest.raises(KeyError, match="no backend 'nope'"):
            proxy.backend("nope")
    finally:
        await launcher.aclose()


async def test_the_console_answers_and_an_unknown_transport_is_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"resolver1": {}})
    try:
        assert "resolver1" in proxy.console("showServers()")
        assert proxy.console("return 6 * 7") == "42\n"
        with pytest.raises(ValueError, match="over='quic'"):
            await proxy.query("www.example.org.", over="quic")  # type: ignore[arg-type]
    finally:
        await launcher.aclose()


async def test_edns_arguments_shape_the_query(nursery: trio.Nursery, tmp_path: Path) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"resolver1": {"www.example.org.": "192.0.2.10"}})
    try:
        await proxy.query("www.example.org.", want_dnssec=True, payload=1400)
        (received,) = proxy.backend("resolver1").received
        assert received.edns == 0 and received.ednsflags & dns.flags.DO
    finally:
        await launcher.aclose()


async def test_backends_naming_no_server_is_an_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    with pytest.raises(KeyError, match="resolver9"):
        await launcher.start(RULES, backends={"resolver1": {}, "resolver9": {}})
    await launcher.aclose()


@pytest.mark.parametrize(
    "spelled", ["slow(seconds)", "mode='slow', delay=seconds", "set while running"]
)
async def test_a_slow_backend_and_a_timeout_cost_no_wall_time_under_autojump_clock(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, spelled: str
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    table = {"www.example.org.": "192.0.2.10"}
    if spelled == "slow(seconds)":
        fake = FakeBackend(table, mode=slow(8))
    elif spelled == "mode='slow', delay=seconds":
        fake = FakeBackend(table, mode="slow", delay=8)
    else:
        fake = FakeBackend(table)
        fake.mode = slow(8)
    proxy = await launcher.start(RULES, backends={"resolver1": fake})
    try:
        wall, virtual = time.monotonic(), trio.current_time()
        # Later than the proxy waits for a backend (2 s): no answer ...
        assert await proxy.query("www.example.org.", timeout=10) is None
        assert trio.current_time() - virtual >= 10
        assert len(fake.received) == 1
        assert proxy.counters()["received"] == 1
        # ... and within it, the answer, that much later.
        fake.mode = slow(1.5)
        virtual = trio.current_time()
        answer = await proxy.query("www.example.org.", timeout=10)
        assert answer is not None and records(answer) == ["www.example.org. A 192.0.2.10"]
        assert 1.5 <= trio.current_time() - virtual < 1.6
        assert time.monotonic() - wall < 5
    finally:
        await launcher.aclose()


def test_a_mode_not_known_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown mode 'sluggish': one of .*silent.*slow\(seconds\)"
    ):
        FakeBackend(mode="sluggish")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"slow\(-1"):
        slow(-1)


async def test_a_cached_answer_expires_with_its_ttl_in_no_wall_time(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    rules = RULES + 'getPool(""):setCache(newPacketCache(100))\n'
    proxy = await launcher.start(rules, backends={"resolver1": {"www.example.org.": "192.0.2.10"}})
    try:
        wall = time.monotonic()
        await proxy.query("www.example.org.")
        await proxy.query("www.example.org.")
        assert len(proxy.backend("resolver1").received) == 1  # the second from the cache
        await trio.sleep(301)  # the table's TTL is 300 s
        await proxy.query("www.example.org.")
        assert len(proxy.backend("resolver1").received) == 2
        assert time.monotonic() - wall < 5
    finally:
        await launcher.aclose()


async def test_a_truncating_backend_sets_tc_over_udp_and_answers_over_tcp(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    fake = FakeBackend({"www.example.org.": "192.0.2.10"}, mode="truncate")
    proxy = await launcher.start(RULES, backends={"resolver1": fake})
    try:
        over_udp = await proxy.query("www.example.org.")
        assert over_udp is not None and over_udp.flags & dns.flags.TC and over_udp.answer == []
        over_tcp = await proxy.query("www.example.org.", over="tcp")
        assert over_tcp is not None and not over_tcp.flags & dns.flags.TC
        assert records(over_tcp) == ["www.example.org. A 192.0.2.10"]
    finally:
        await launcher.aclose()


@pytest.mark.parametrize("check", ["", ', checkName="check.example."'])
@pytest.mark.parametrize("spelled", ["down=True", "mode='down'"])
async def test_a_down_backend_fails_its_health_checks_and_comes_back_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, check: str, spelled: str
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    rules = RULES.replace('name="resolver1"', 'name="resolver1"' + check)
    table = {"www.example.org.": "192.0.2.10"}
    if spelled == "down=True":
        fake = FakeBackend(table, down=True)
    else:
        fake = FakeBackend(table, mode="down")
    proxy = await launcher.start(rules, backends={"resolver1": fake})
    try:
        await trio.sleep(5)  # several check intervals (1 s by default), in virtual time
        assert proxy.console("return getServer(0):isUp()") == "false\n"
        assert fake.received == []  # the checks are not queries of the test's
        if spelled == "down=True":
            fake.down = False
        else:
            fake.mode = "answer"
        assert not fake.down
        await trio.sleep(5)
        assert proxy.console("return getServer(0):isUp()") == "true\n"
        answer = await proxy.query("www.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR
    finally:
        await launcher.aclose()


FORWARD_ALL = """\
newServer({address="192.0.2.1:53", name="resolver1"})
newServer({address="192.0.2.3:53", name="resolver2", pool="two"})
addAction(QNameRule("x.example."), PoolAction("two"))
"""


async def test_reload_switches_rules_and_keeps_the_running_servers_fakes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    resolver1 = FakeBackend({"ads.example.org.": "192.0.2.66"})
    proxy = await launcher.start(RULES, backends={"resolver1": resolver1})
    try:
        answer = await proxy.query("ads.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.REFUSED
        await proxy.reload(FORWARD_ALL, backends={"resolver2": {"x.example.": "192.0.2.7"}})
        assert proxy.backend("resolver1") is resolver1
        answer = await proxy.query("ads.example.org.")
        assert answer is not None and [rr.to_text() for rr in answer.answer] == [
            "ads.example.org. 300 IN A 192.0.2.66"
        ]
        answer = await proxy.query("x.example.")
        assert answer is not None and [rr.to_text() for rr in answer.answer] == [
            "x.example. 300 IN A 192.0.2.7"
        ]
        assert proxy.counters()["config-reloads"] == 1
    finally:
        await launcher.aclose()


async def test_a_failed_reload_raises_and_the_running_configuration_stays(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"resolver1": {}})
    try:
        with pytest.raises(RuntimeError, match=r"config2\.lua:4: .*'NoSuchRule'"):
            await proxy.reload(RULES + "addAction(NoSuchRule(), DropAction())\n")
        assert proxy.counters()["config-reload-failures"] == 1
        answer = await proxy.query("ads.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    finally:
        await launcher.aclose()


async def test_reload_config_from_the_console_reads_the_file_again_on_the_same_fakes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"resolver1": {"ads.example.org.": "192.0.2.66"}})
    try:
        proxy.path.write_text(RULES.replace("ads.example.org.", "other.example."))
        proxy.console("reloadConfig()")
        assert proxy.counters()["config-reloads"] == 1
        answer = await proxy.query("ads.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR
        assert len(proxy.backend("resolver1").received) == 1
        # A server the fakes do not know is refused rather than sent to its real address.
        proxy.path.write_text(RULES + 'newServer("192.0.2.9:53")\n')
        assert "no fake backend" in proxy.console("reloadConfig()")
        assert proxy.counters()["config-reload-failures"] == 1
    finally:
        await launcher.aclose()


async def test_settings_are_applied_and_unknown_ones_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"resolver1": {}}, grace_period=0.25)
    assert proxy.server.config.settings.grace_period == 0.25
    with pytest.raises(TypeError, match="no_such_setting"):
        await launcher.start(RULES, backends={"resolver1": {}}, no_such_setting=1)
    await launcher.aclose()


# --- the answer table ------------------------------------------------------------------------


def records(message: dns.message.Message) -> list[str]:
    return sorted(
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in message.answer
        for rd in rrset
    )


def test_addresses_answer_a_and_aaaa_by_their_family() -> None:
    table = TableServer({"dual.example.": ["192.0.2.1", "2001:db8::1", "192.0.2.2"]})
    assert records(table.answer(query("dual.example.", "A"))) == [
        "dual.example. A 192.0.2.1",
        "dual.example. A 192.0.2.2",
    ]
    assert records(table.answer(query("DUAL.example.", "AAAA"))) == [
        "DUAL.example. AAAA 2001:db8::1"  # the question's case, as DNS keeps it
    ]
    nodata = table.answer(query("dual.example.", "MX"))
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []


def test_a_name_and_type_key_holds_records_and_wins_over_the_name() -> None:
    table = TableServer(
        {
            "example.": "192.0.2.1",
            ("example.", "MX"): ["10 mail.example.", "20 backup.example."],
            ("example.", "A"): "192.0.2.99",
        }
    )
    assert records(table.answer(query("example.", "MX"))) == [
        "example. MX 10 mail.example.",
        "example. MX 20 backup.example.",
    ]
    assert records(table.answer(query("example.", "A"))) == ["example. A 192.0.2.99"]


def test_an_rcode_name_answers_that_rcode_and_a_missing_name_nxdomain() -> None:
    table = TableServer({"gone.example.": "NXDOMAIN", ("x.example.", "TXT"): "REFUSED"})
    assert table.answer(query("gone.example.")).rcode() == dns.rcode.NXDOMAIN
    assert table.answer(query("x.example.", "TXT")).rcode() == dns.rcode.REFUSED
    assert table.answer(query("x.example.", "A")).rcode() == dns.rcode.NOERROR
    assert table.answer(query("elsewhere.example.")).rcode() == dns.rcode.NXDOMAIN


def test_a_callable_builds_the_answer() -> None:
    def answer(q: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(q)
        response.set_rcode(dns.rcode.YXDOMAIN)
        return response

    table = TableServer({"odd.example.": answer})
    assert table.answer(query("odd.example.")).rcode() == dns.rcode.YXDOMAIN


def test_a_bad_entry_fails_when_the_table_is_made() -> None:
    with pytest.raises(ValueError, match=r"'www\.example\.'.*neither an address nor an rcode"):
        TableServer({"www.example.": "mail.example."})
    with pytest.raises(ValueError, match=r"\('example.', 'MX'\)"):
        TableServer({("example.", "MX"): "not a record"})


async def test_health_checks_under_any_check_name_never_push_queries_out_of_received(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # received keeps the last `history` queries; a check a second must not take their
    # room, whatever name the checks ask for.
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    rules = RULES.replace('name="resolver1"', 'name="resolver1", checkName="check.example."')
    fake = FakeBackend({"www.example.org.": "192.0.2.10"}, history=100)
    proxy = await launcher.start(rules, backends={"resolver1": fake})
    try:
        await proxy.query("www.example.org.")
        await trio.sleep(200)
        assert len(fake.server.health_checks) == 100  # checked all along
        assert [q.question[0].name.to_text() for q in fake.received] == ["www.example.org."]
        for _ in range(101):
            await proxy.query("www.example.org.")
        assert len(fake.received) == 100  # the last 100
    finally:
        await launcher.aclose()


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ('"192.0.2.7"', "192.0.2.7"),  # as newServer("192.0.2.7") writes it: port 53
        ('"192.0.2.7"', "192.0.2.7:53"),
        ('{address="192.0.2.7:53"}', "192.0.2.7"),
        ('{address="2001:db8::7"}', "2001:db8::7"),
        ('{address="[2001:db8::7]:53"}', "[2001:db8::7]:53"),
    ],
)
async def test_a_backend_is_found_by_its_address_however_the_file_spells_it(
    nursery: trio.Nursery, tmp_path: Path, written: str, key: str
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(
        f"newServer({written})\n", backends={key: {"www.example.org.": "192.0.2.10"}}
    )
    try:
        answer = await proxy.query("www.example.org.")
        assert answer is not None and records(answer) == ["www.example.org. A 192.0.2.10"]
        assert len(proxy.backend(key).received) == 1
    finally:
        await launcher.aclose()


@pytest.mark.parametrize("value", ["192.0.2.10", ["192.0.2.10"], None])
async def test_a_backend_that_is_no_table_is_refused_saying_what_is_wanted(
    nursery: trio.Nursery, tmp_path: Path, value: object
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    with pytest.raises(TypeError, match=r"backends\['resolver1'\] is .*: an answer table"):
        await launcher.start(RULES, backends={"resolver1": value})  # type: ignore[dict-item]
    await launcher.aclose()


async def test_a_configuration_not_found_names_each_place_looked_in_once(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    launcher = Triodist(nursery, tmp_path, [tmp_path], out=io.StringIO)
    with pytest.raises(FileNotFoundError) as raised:
        await launcher.start("nothere.lua")
    assert str(raised.value) == f"configuration 'nothere.lua' not found (looked in {tmp_path})"


def _raises(query: dns.message.Message) -> dns.message.Message:
    raise LookupError("the test's own mistake")


@pytest.mark.parametrize(
    ("function", "error"),
    [
        (_raises, pytest.RaisesExc(LookupError, match="the test's own mistake")),
        (lambda query: "192.0.2.10", pytest.RaisesExc(TypeError, match="a dnspython message")),
    ],
    ids=["raises", "returns-no-message"],
)
async def test_an_answer_function_that_fails_fails_the_test_instead_of_a_servfail(
    tmp_path: Path,
    function: Callable[[dns.message.Message], dns.message.Message],
    error: pytest.RaisesExc[Exception],
) -> None:
    with pytest.RaisesGroup(error, flatten_subgroups=True) as raised:
        async with trio.open_nursery() as nursery:
            launcher = Triodist(nursery, tmp_path, out=io.StringIO)
            table = {"www.example.org.": function}
            proxy = await launcher.start(RULES, backends={"resolver1": table})
            await proxy.query("www.example.org.", timeout=1)
            await trio.sleep_forever()  # cancelled by the failure, if it has not come yet
    (failure,) = raised.value.exceptions
    while isinstance(failure, BaseExceptionGroup):
        (failure,) = failure.exceptions
    assert failure.__notes__ == ["in the answer table's function, answering www.example.org. A"]


async def test_an_answer_function_returning_none_gives_no_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    table = {"www.example.org.": lambda query: None}
    proxy = await launcher.start(RULES, backends={"resolver1": table})
    try:
        assert await proxy.query("www.example.org.") is None
        assert proxy.counters()["downstream-timeouts"] == 1
    finally:
        await launcher.aclose()


def test_a_plain_def_taking_the_fixture_fails_saying_so_and_the_next_tests_still_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(CHECKOUT))
    pytester.makefile(".lua", rules=RULES)
    forgot_async = 'def test_forgot_async(triodist):\n    triodist.start("rules.lua")\n\n\n'
    pytester.makepyfile(
        test_policy=USER_TEST.replace(
            "async def test_blocked", forgot_async + "async def test_blocked", 1
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_forgot_async takes the triodist fixture but is no coroutine: write it "
            "'async def' (and 'await triodist.start(...)')"
        ]
    )


@pytest.mark.parametrize("name", ["dnsdist.conf", "conf/dnsdist.conf", "rules.lua", "policy"])
async def test_a_configuration_file_is_found_by_its_name_whatever_its_suffix(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # dnsdist's own file is dnsdist.conf: a name, not a line of Lua to run.
    (tmp_path / "conf").mkdir()
    (tmp_path / name).write_text(RULES)
    monkeypatch.chdir(tmp_path)
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(name, backends={"resolver1": {}})
    try:
        assert proxy.path == tmp_path / name
        answer = await proxy.query("ads.example.org.")
        assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    finally:
        await launcher.aclose()


@pytest.mark.parametrize("name", ["dnsdist.conf", "conf/rules", "{tmp_path}/dnsdist.conf"])
async def test_a_configuration_file_not_found_is_said_not_run_as_lua(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    name = name.format(tmp_path=tmp_path)
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    with pytest.raises(FileNotFoundError, match=f"configuration '{name}' not found"):
        await launcher.start(name)


async def test_a_configuration_of_one_line_is_its_text(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start('newServer({address="192.0.2.1:53", name="resolver1"})')
    try:
        assert proxy.path.read_text() == 'newServer({address="192.0.2.1:53", name="resolver1"})'
    finally:
        await launcher.aclose()


async def test_a_server_added_at_the_console_is_refused_before_anything_reaches_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # A real address on loopback, where a query or a health check would be seen.
    outside = FakeBackend({"www.example.org.": "192.0.2.99"})
    host, port = await nursery.start(outside.server.serve, "127.0.0.1", 0)
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES, backends={"resolver1": {}})
    try:
        with pytest.raises(ValueError, match=r"added newServer 'late' \(127\.0\.0\.1:\d+\).*"):
            proxy.console(f'newServer({{address="{host}:{port}", name="late", order=0}})')
        assert "late" not in proxy.console("showServers()")
        await proxy.query("www.example.org.")
        await trio.sleep(5)  # health check intervals
        assert outside.server.received == deque() and outside.server.health_checks == deque()
        assert len(proxy.backend("resolver1").received) == 1
    finally:
        await launcher.aclose()


async def test_after_a_reload_at_the_console_the_console_speaks_to_the_new_configuration(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    proxy = await launcher.start(RULES + "marker = 'first'\n", backends={"resolver1": {}})
    try:
        proxy.path.write_text(RULES + "marker = 'second'\n")
        proxy.console("reloadConfig()")
        assert proxy.counters()["config-reloads"] == 1
        assert proxy.console("return marker") == "second\n"
    finally:
        await launcher.aclose()


async def test_a_reload_that_names_a_running_server_gives_it_the_new_fake(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    launcher = Triodist(nursery, tmp_path, out=io.StringIO)
    first = FakeBackend({"www.example.org.": "192.0.2.10"})
    proxy = await launcher.start(RULES, backends={"resolver1": first})
    try:
        await proxy.reload(backends={"192.0.2.1": {"www.example.org.": "192.0.2.11"}})
        answer = await proxy.query("www.example.org.")
        assert answer is not None and records(answer) == ["www.example.org. A 192.0.2.11"]
        assert proxy.backend("resolver1") is not first and first.received == []
    finally:
        await launcher.aclose()


async def test_servers_that_share_a_name_share_its_fake(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    out = io.StringIO()
    launcher = Triodist(nursery, tmp_path, out=lambda: out)
    rules = RULES + 'newServer({address="192.0.2.2:53", name="resolver1", pool="two"})\n'
    rules += 'addAction(QNameRule("x.example."), PoolAction("two"))\n'
    table = {"www.example.org.": "192.0.2.10", "x.example.": "192.0.2.7"}
    proxy = await launcher.start(rules, backends={"resolver1": table})
    try:
        assert out.getvalue() == ""  # no server left to a SERVFAIL fake
        for name in ("www.example.org.", "x.example."):
            answer = await proxy.query(name)
            assert answer is not None and answer.rcode() == dns.rcode.NOERROR
        assert proxy.backend("192.0.2.1") is proxy.backend("192.0.2.2")
        assert len(proxy.backend("resolver1").received) == 2
    finally:
        await launcher.aclose()
