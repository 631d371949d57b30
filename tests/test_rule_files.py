"""The files rules write to (LogAction, LogResponseAction): running a configuration opens
none; the server opens them when it starts serving; a reload, or a rule added at the
console, that names the running log again appends to it through the same file.

``check-config`` runs as a user runs it (``python -m triodist`` in a subprocess); the rest
runs triodist in-process with real sockets (conftest's ``start_triodist``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
from conftest import StartTriodist
from helpers import reloader_for, subprocess_env

from triodist.testing.backend import AuthServer

#: Query and response logs, written line by line (buffered=false) so that a test reads
#: each line as soon as the query is answered.
LOGGED = """
newServer{address="$BACKEND"}
addAction(AllRule(), LogAction("%(queries)s", false, false, false))
addResponseAction(AllRule(), LogResponseAction("%(responses)s", false, false))
"""

EARLIER = "a line from before, kept\n"


def logs(tmp_path: Path) -> dict[str, Path]:
    return {"queries": tmp_path / "queries.log", "responses": tmp_path / "responses.log"}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_check_config_touches_no_log_file(tmp_path: Path) -> None:
    files = logs(tmp_path)
    files["queries"].write_text(EARLIER)  # a live query log: check-config must not empty it
    config = tmp_path / "rules.lua"
    config.write_text(LOGGED.replace("$BACKEND", "127.0.0.1:53") % files)
    done = await trio.run_process(
        [sys.executable, "-m", "triodist", "check-config", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    assert files["queries"].read_text() == EARLIER
    assert not files["responses"].exists()  # not even created


async def test_the_logs_open_when_the_server_starts_serving(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    files["queries"].write_text(EARLIER)
    t = await start_triodist(LOGGED % files)
    # Serving: opened as dnsdist opens them (append=false: a new log), and written to.
    assert files["queries"].read_text() == ""
    assert await t.ask("www.example.org.") is not None
    assert len(lines(files["queries"])) == 1 and len(lines(files["responses"])) == 1


async def test_a_reload_naming_the_same_logs_keeps_appending(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    t = await start_triodist(LOGGED % files)
    reloader = reloader_for(t)
    assert await t.ask("www.example.org.") is not None
    before = lines(files["queries"])
    assert len(before) == 1
    assert reloader.reload() is None
    assert await t.ask("mail.example.org.") is not None
    after = lines(files["queries"])
    assert after[:1] == before and len(after) == 2 and "mail.example.org" in after[1]
    assert len(lines(files["responses"])) == 2


async def test_a_failed_reload_leaves_the_running_log_alone(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    t = await start_triodist(LOGGED % files)
    reloader = reloader_for(t)
    assert await t.ask("www.example.org.") is not None
    # The new configuration names the log, then fails: nothing changes, the log included.
    t.config_path.write_text(t.config_path.read_text() + 'error("not this one")\n')
    assert reloader.reload() is not None
    assert await t.ask("mail.example.org.") is not None
    assert len(lines(files["queries"])) == 2


async def test_a_rule_added_at_the_console_appends_to_the_running_log(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    t = await start_triodist(LOGGED % files)
    assert await t.ask("www.example.org.") is not None
    added = f'addAction(AllRule(), LogAction("{files["queries"]}", false, false, false))'
    assert t.lua.console_eval(added) == ""
    assert await t.ask("mail.example.org.") is not None
    written = lines(files["queries"])
    # The first query's line, then the second's twice (two rules log it).
    assert len(written) == 3 and "www.example.org" in written[0], written


async def test_a_rule_added_at_the_console_with_a_log_it_cannot_open_is_not_added(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    t = await start_triodist(LOGGED % files)
    missing = tmp_path / "no-such-directory" / "queries.log"
    answer = t.lua.console_eval(f'addAction(AllRule(), LogAction("{missing}"))')
    assert answer.startswith("Error: ") and "No such file or directory" in answer, answer
    assert len(t.server.config.chains.queries) == 1
    assert await t.ask("www.example.org.") is not None


async def test_a_rule_removed_then_added_at_the_console_keeps_the_log(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    t = await start_triodist(LOGGED % files)
    assert await t.ask("www.example.org.") is not None
    removed = t.server.config.chains.queries.rules[0].action.logger.file
    assert removed is not None and not removed.closed
    assert t.lua.console_eval("rmRule(0)") == ""
    # No query holds the removed rule: its file is closed now, not by the collector.
    assert removed.closed
    added = f'addAction(AllRule(), LogAction("{files["queries"]}", false, false, false))'
    assert t.lua.console_eval(added) == ""
    assert await t.ask("mail.example.org.") is not None
    assert t.lua.console_eval("clearRules()") == ""
    assert t.lua.console_eval(added) == ""
    assert await t.ask("ftp.example.org.") is not None
    written = lines(files["queries"])
    assert len(written) == 3, written
    assert all(n in line for n, line in zip(("www.", "mail.", "ftp."), written, strict=True))


async def test_a_reload_naming_a_log_only_a_removed_rule_had_appends_to_it(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    files = logs(tmp_path)
    t = await start_triodist(LOGGED % files)
    reloader = reloader_for(t)
    assert await t.ask("www.example.org.") is not None
    assert t.lua.console_eval("clearRules()") == ""
    assert await t.ask("mail.example.org.") is not None  # not logged: no rule
    assert reloader.reload() is None  # the configuration names the log again
    assert await t.ask("ftp.example.org.") is not None
    written = lines(files["queries"])
    assert len(written) == 2 and "www.example.org" in written[0], written
    assert "ftp.example.org" in written[1]


async def test_two_rules_on_one_log_with_different_buffering_share_one_file(
    start_triodist: StartTriodist,
    auth: AuthServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log_path = tmp_path / "queries.log"
    # The first rule writes line by line, the second asks for a buffer: two file objects
    # on one path would each flush its own buffer, interleaving lines.
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        f'addAction(AllRule(), LogAction("{log_path}", false, false, false))\n'
        f'addAction(AllRule(), LogAction("{log_path}", false, false, true))\n'
        f'addAction(AllRule(), LogAction("{log_path}", false, false, true))\n'
    )
    assert await t.ask("www.example.org.") is not None
    loggers = [rule.action.logger for rule in t.server.config.chains.queries.rules]
    assert len({id(logger.file) for logger in loggers}) == 1
    # The first rule's buffering holds: every line is on disk as soon as it is written.
    assert len(lines(log_path)) == 3
    warned = [r for r in caplog.records if str(log_path) in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING", warned


async def test_one_log_action_in_two_rules_keeps_its_file_while_either_is_there(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    """The same LogAction value in two rules: removing one leaves the other writing to the
    file (one logger, opened by each rule, closed with the last)."""
    log_path = tmp_path / "queries.log"
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        f'la = LogAction("{log_path}", false, false, false)\n'
        "addAction(AllRule(), la)\n"
        "addAction(QTypeRule(DNSQType.A), la)\n"
    )
    assert await t.ask("www.example.org.") is not None
    assert len(lines(log_path)) == 2  # both rules logged it
    logger = t.server.config.chains.queries.rules[0].action.logger
    assert t.lua.console_eval("rmRule(0)") == ""
    assert logger.file is not None and not logger.file.closed
    assert await t.ask("mail.example.org.") is not None
    written = lines(log_path)
    assert len(written) == 3 and "mail.example.org" in written[2], written
    file = logger.file
    assert t.lua.console_eval("rmRule(0)") == ""
    assert file.closed  # the last rule gone: the file closes


async def test_a_log_action_removed_and_added_again_keeps_its_file(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    """``rmRule`` then ``addAction`` of the same LogAction value while a query still holds
    the removed rule: when that query lets go, the removed rule closes what it opened, and
    not the file the rule added again writes to."""
    log_path = tmp_path / "queries.log"
    t = await start_triodist(
        'newServer{address="$BACKEND"}\n'
        f'la = LogAction("{log_path}", false, false, false)\n'
        "addAction(AllRule(), la)\n"
    )
    assert await t.ask("www.example.org.") is not None
    # What a query in the middle of the chain holds: the rules as they were.
    held = t.server.config.chains.queries.rules
    assert t.lua.console_eval("rmRule(0)") == ""
    assert t.lua.console_eval("addAction(AllRule(), la)") == ""
    del held  # the query is done: the removed rule is collected and closes its file
    assert await t.ask("mail.example.org.") is not None
    written = lines(log_path)
    assert len(written) == 2 and "mail.example.org" in written[1], written
