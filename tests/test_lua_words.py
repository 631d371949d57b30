"""A configuration error names the function and the bad value in Lua's words (``nil``,
``true``, ``a table``), never Python's (``None``, ``NoneType``, ``int() argument``,
"takes from 1 to 2 positional arguments"), through ``load_config`` as check-config runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import load_config
from triodist.util.luavalues import lua_words

PYTHON_WORDS = (
    "None",
    "NoneType",
    "True",
    "False",
    "int()",
    "float()",
    "object is not",
    "positional argument",
    "__init__",
    "compiled pattern",
    "bytes-like",
    # dnspython's: "A DNS label is empty.", "DNS resource record type is unknown."
    "A DNS",
    "is unknown.",
)

# (one line of configuration, the function the message must name, what it must say)
ONE_LINERS = [
    ("addAction(nil, DropAction())", "addAction", "got nil"),
    ("addAction(true, DropAction())", "addAction", "got true"),
    ("setAsyncTimeoutPolicy(nil)", "setAsyncTimeoutPolicy", "got nil"),
    ("newPacketCache(nil)", "newPacketCache", "got nil"),
    ("newPacketCache(10, {maxTTL=true})", "newPacketCache", "got true"),
    ("addLocal(nil)", "addLocal", "expected an address, got nil"),
    ("SpoofAction(nil)", "SpoofAction", "expected an address or a table of addresses, got nil"),
    ("NetmaskGroupRule(nil)", "NetmaskGroupRule", "got nil"),
    ("RCodeAction(nil)", "RCodeAction", "expected a number, got nil"),
    ("RCodeAction(true)", "RCodeAction", "expected a number, got true"),
    ("RCodeAction(1/0)", "RCodeAction", "expected a number"),
    ("SetMaxTTLResponseAction(nil)", "SetMaxTTLResponseAction", "expected a number, got nil"),
    ("SetMinTTLResponseAction({})", "SetMinTTLResponseAction", "expected a number, got a table"),
    ("MaxQPSIPRule(nil)", "MaxQPSIPRule", "expected a number, got nil"),
    ("RegexRule(nil)", "RegexRule", "expected a string, got nil"),
    # Not re.error's "missing ), unterminated subpattern at position 1" alone.
    (
        'RegexRule("a(b")',
        "RegexRule",
        "'a(b' is not a valid regular expression: missing ), unterminated subpattern "
        "(at character 2)",
    ),
    ('newServer("192.0.2.1"):setAuto(nil, 5)', "setAuto", "at most 2 argument(s), got 3"),
    ("PoolAction(nil)", "PoolAction", "got nil"),
    # Python's own parameter names are not shown: "missing argument(s): 'name'" was.
    ("getPoolServers()", "getPoolServers", "missing 1 argument(s)"),
    # A constructor's: not "PoolAction: __init__: missing ...".
    ("PoolAction()", "PoolAction", "missing 1 argument(s)"),
    ("SetTagAction()", "SetTagAction", "missing 1 argument(s)"),
    # Counts refuse booleans: float(True) would be 1.
    ("setMaxUDPOutstanding(true)", "setMaxUDPOutstanding", "expected a number, got true"),
    ("setMaxUDPOutstanding(nil)", "setMaxUDPOutstanding", "expected a number, got nil"),
    ("setMaxSuspended(true)", "setMaxSuspended", "expected a number, got true"),
    ("setRingBuffersSize(true)", "setRingBuffersSize", "expected a whole number, got true"),
    ("addACL(nil)", "addACL", "expected a netmask, got nil"),
    ('newServer{address="192.0.2.1", weight=true}', "newServer", "got true"),
    ('newServer{address="192.0.2.1", tcpOnly=1}', "newServer", "got 1"),
    ('PoolOutstandingRule("x", nil)', "PoolOutstandingRule", "invalid limit nil"),
    # Checked where they are made, not at the first query.
    ("NotRule(nil)", "NotRule", "expected a selector, got nil"),
    ("AndRule(nil)", "AndRule", "expected a table of selectors, got nil"),
    ("OrRule(nil)", "OrRule", "expected a table of selectors, got nil"),
    ("SuffixMatchNodeRule(nil)", "SuffixMatchNodeRule", "got nil"),
    ("SpoofAction({})", "SpoofAction", "expected at least one address"),
    ("SpoofCNAMEAction(nil)", "SpoofCNAMEAction", "expected a name, got nil"),
    ("LuaAction(nil)", "LuaAction", "expected a function, got nil"),
    ('SetTagAction(nil, "x")', "SetTagAction", "expected a tag name, got nil"),
    ("MaxQPSRule(nil)", "MaxQPSRule", "expected a number, got nil"),
    ("setACL(nil)", "setACL", "got nil"),
    ("getPool(nil)", "getPool", "expected a pool name, got nil"),
    # Refused as dnsdist refuses it (and as getPool does), not taken as the default pool.
    ("getPoolServers(nil)", "getPoolServers", "expected a pool name, got nil"),
    ("getPoolServers(true)", "getPoolServers", "expected a pool name, got true"),
    ("TCAction(1)", "TCAction", "takes no arguments, got 1"),
    # A bad type, class or name: the function and the value, not dnspython's words alone.
    (
        'ClearRecordTypesResponseAction("FOO")',
        "ClearRecordTypesResponseAction",
        "Unable to convert 'FOO' to a DNS type",
    ),
    ('QClassRule("FOO")', "QClassRule", "Unable to convert 'FOO' to a DNS class"),
    ('newDNSName("a..b")', "newDNSName", "Found . in wrong position in DNSName a..b"),
    ('QNameRule("a..b")', "QNameRule", "Found . in wrong position in DNSName a..b"),
    ('SpoofCNAMEAction("a..b")', "SpoofCNAMEAction", "Found . in wrong position in DNSName a..b"),
    ('addAction("a..b", DropAction())', "addAction", "Found . in wrong position in DNSName a..b"),
    ('newSuffixMatchNode():add("a..b")', "add", "Found . in wrong position in DNSName a..b"),
    ('newDNSNameSet():add(".a")', "add", "Found . in wrong position in DNSName .a"),
    ('newDNSName("x"):isPartOf("a..b")', "isPartOf", "in DNSName a..b"),
    (f'QNameRule("{"a" * 64}")', "QNameRule", f"Label longer than 63 octets in DNSName {'a' * 64}"),
]


@pytest.mark.parametrize(("line", "function", "says"), ONE_LINERS)
def test_the_message_names_the_function_in_luas_words(
    tmp_path: Path, line: str, function: str, says: str
) -> None:
    config = tmp_path / "rules.lua"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    message = str(raised.value)
    assert message.startswith(f"{config}:1: {function}: "), message
    assert says in message
    for words in PYTHON_WORDS:
        assert words not in message, message


def test_the_users_own_text_is_quoted_as_written(tmp_path: Path) -> None:
    """Python's None, True and False become Lua's words outside quotes only: a pattern
    the user wrote is shown as written."""
    config = tmp_path / "rules.lua"
    config.write_text('RegexRule("(None|True")\n')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert "'(None|True' is not a valid regular expression" in str(raised.value)


def test_pythons_complaints_read_in_luas_words() -> None:
    """The safety net at the Lua boundary, for what no constructor checks itself."""
    assert (
        lua_words(
            "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"
        )
        == "expected a number, got nil"
    )
    assert lua_words("invalid literal for int() with base 10: 'x'") == "expected a number, got 'x'"
    assert lua_words("'bool' object is not iterable") == "expected a table, got boolean"
    assert (
        lua_words("Server.setAuto() takes from 1 to 2 positional arguments but 3 were given")
        == "setAuto: takes at most 2 argument(s), got 3"
    )
    assert lua_words("TCAction() takes no arguments", 1) == "TCAction: takes no arguments, got 1"
    assert lua_words("expected a name, got None or True") == "expected a name, got nil or true"
    # A message triodist wrote itself is kept, words inside other words included.
    assert lua_words("'Nonesuch' is not a pool") == "'Nonesuch' is not a pool"
