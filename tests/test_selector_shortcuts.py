"""What dnsdist takes in place of a selector, and ``makeRule``, which builds the same rule.

Wherever a rule's selector goes (``addAction``, ``addResponseAction``, ...), dnsdist 1.7.3
takes a shortcut: a string (a suffix, or a netmask), a ``DNSName``, or a table of either.
When any string is a netmask the rule matches the query's source on the netmasks alone
(the names in the table are forgotten); otherwise it is a suffix match.  ``makeRule(x)``
gives that rule as an object.  What ``showRules()`` prints below is what dnsdist 1.7.3
printed for the same configuration (run on loopback, console ``showRules()``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dns.rcode
import trio
from conftest import StartTriodist
from helpers import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
REFUSED = dns.rcode.REFUSED
NOERROR = dns.rcode.NOERROR


def rcode(reply: dns.message.Message | None) -> dns.rcode.Rcode | None:
    return None if reply is None else reply.rcode()


async def test_dnsname_and_tables_of_names_are_suffix_rules(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(newDNSName("dname.example.org."), RCodeAction(DNSRCode.REFUSED))
        addAction({newDNSName("t1.example.org."), newDNSName("t2.example.org.")},
                  RCodeAction(DNSRCode.REFUSED))
        addAction("str.example.org.", RCodeAction(DNSRCode.REFUSED))
        addAction({"s1.example.org.", "s2.example.org."}, RCodeAction(DNSRCode.REFUSED))
        """
    )
    for name in ("dname", "x.t1", "t2", "deep.str", "s1", "s2"):
        assert rcode(await t.ask(f"{name}.example.org.")) == REFUSED, name
        assert rcode(await t.ask(f"{name}.example.org.", tcp=True)) == REFUSED, name
    # Label boundaries count, and other names go to the backend.
    assert rcode(await t.ask("xdname.example.org.")) != REFUSED
    assert rcode(await t.ask("www.example.org.")) == NOERROR


async def test_a_table_with_a_netmask_matches_the_source_on_its_netmasks_alone(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        -- Not from 192.0.2.0/24: the name beside it is not matched either.
        addAction({"named.example.org.", "192.0.2.0/24"}, RCodeAction(DNSRCode.REFUSED))
        -- From 127.0.0.0/8: every name matches, not only the one beside it.
        addAction({"other.example.org.", "127.0.0.0/8"}, RCodeAction(DNSRCode.NXDOMAIN))
        """
    )
    assert rcode(await t.ask("named.example.org.")) == dns.rcode.NXDOMAIN
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.NXDOMAIN
    assert rcode(await t.ask("www.example.org.", tcp=True)) == dns.rcode.NXDOMAIN


async def test_make_rule_builds_the_shortcut_rule(start_triodist: StartTriodist) -> None:
    t = await start_triodist(
        """
        newServer("$BACKEND")
        addAction(NotRule(makeRule({"www.example.org.", newDNSName("mail.example.org.")})),
                  RCodeAction(DNSRCode.REFUSED))
        addAction(AndRule{makeRule("127.0.0.1/32"), makeRule(newDNSName("www.example.org"))},
                  RCodeAction(DNSRCode.NXDOMAIN))
        addAction(makeRule(QTypeRule(DNSQType.MX)), RCodeAction(DNSRCode.NOTIMP))
        """
    )
    assert rcode(await t.ask("ns.example.org.")) == REFUSED
    assert rcode(await t.ask("www.example.org.")) == dns.rcode.NXDOMAIN
    assert rcode(await t.ask("mail.example.org.", "MX")) == dns.rcode.NOTIMP
    assert rcode(await t.ask("mail.example.org.")) == NOERROR


async def check_config(tmp_path: Path, lua: str) -> tuple[int, str, str]:
    path = tmp_path / "rules.lua"
    path.write_text(lua)
    done = await trio.run_process(
        [sys.executable, "-m", "triodist", "check-config", "-C", str(path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=subprocess_env(),
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_show_rules_names_shortcut_rules_as_dnsdist_does(tmp_path: Path) -> None:
    code, out, err = await check_config(
        tmp_path,
        """
        newServer("192.0.2.1")
        addAction(newDNSName("dname.example."), DropAction())
        addAction({newDNSName("t1.example."), newDNSName("t2.example.")}, DropAction())
        addAction({"mixed.example.", "192.0.2.0/24"}, DropAction())
        addAction("zzz", DropAction())
        addAction(makeRule({"10.0.0.0/8", "11.0.0.0/8"}), DropAction())
        addAction({1, 2}, DropAction())
        addAction("10.0.0.256/8", DropAction())
        addResponseAction(newDNSName("resp.example."), DropResponseAction())
        showRules()
        showResponseRules()
        """,
    )
    assert code == 0, err
    # "#  Name  Matches Rule  Action": no names, so the rule follows the match count.
    described = [
        re.split(r"\s{2,}", line)[1].split(" ", 1)[1]
        for line in out.splitlines()
        if line[:1].isdigit()
    ]
    assert described == [
        "qname in dname.example.",
        "qname in t1.example., t2.example.",
        "Src: 192.0.2.0/24",
        "qname in zzz.",
        "Src: 10.0.0.0/8, 11.0.0.0/8",
        "qname in 1., 2.",
        # Not a netmask (256 is no octet): a name, as dnsdist makes it.
        "qname in 10.0.0.256/8.",
        "qname in resp.example.",
    ]


async def test_a_shortcut_that_is_not_a_name_is_an_error_with_file_and_line(
    tmp_path: Path,
) -> None:
    code, _, err = await check_config(tmp_path, 'newServer("192.0.2.1")\nmakeRule("a..b")\n')
    assert code != 0
    assert "rules.lua:2: makeRule: Found . in wrong position in DNSName a..b" in err
    code, _, err = await check_config(tmp_path, "addAction(true, DropAction())\n")
    assert code != 0
    assert "rules.lua:1: addAction: expected a selector, a name or a netmask, got true" in err
