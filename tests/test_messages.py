"""What a configuration's author reads when something is wrong: Lua's words and the bad
value, never Python's ("'Pool' object has no attribute ...", "got NoneType",
"DNS resource record type is unknown.").  Through ``triodist check-config``, as a user
meets them, and at the console (``LuaConfig.console_eval``)."""

from __future__ import annotations

from pathlib import Path

from test_cli import triodist_cli, write

from triodist.config.runtime import LuaConfig

PYTHON_WORDS = ("object has no attribute", "NoneType", "int() argument", "is unknown.")


async def check_error(tmp_path: Path, text: str) -> str:
    """``triodist check-config`` on ``text``, which must fail: the message after the line."""
    config = write(tmp_path / "rules.lua", text)
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 1, result.stdout
    [line] = [
        line
        for line in result.stderr.decode().splitlines()
        if line.startswith("Error in configuration: ")
    ]
    for words in PYTHON_WORDS:
        assert words not in line
    return line.split(f"{config}:", 1)[1]


async def test_a_missing_method_reads_as_lua_says_it(tmp_path: Path) -> None:
    # LuaJIT's words (dnsdist 1.7.3 says exactly this); Lua 5.4 words it its own way.
    for text, method in (
        ('getPool(""):nosuch()', "nosuch"),
        ('newServer("192.0.2.1"):getFoo()', "getFoo"),
        ('SpoofAction("192.0.2.1"):nope()', "nope"),
    ):
        message = await check_error(tmp_path, text + "\n")
        assert message in (
            f"1: attempt to call method '{method}' (a nil value)",
            f"1: attempt to call a nil value (method '{method}')",
        )


async def test_a_missing_field_reads_as_nil(tmp_path: Path) -> None:
    """As a dnsdist object's: nothing is called, so nothing fails (dnsdist 1.7.3 loads
    this and prints ``true``); a method the object has is still there."""
    config = write(
        tmp_path / "rules.lua",
        'newServer("192.0.2.1")\n'
        "print(getServer(0).nosuch == nil, getServer(0).getName ~= nil)\n"
        'print(getPool("").nosuch == nil, newDNSName("a.").nosuch == nil)\n',
    )
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "true\ttrue\ntrue\ttrue\n" in result.stdout.decode()


def test_a_missing_field_reads_as_nil_at_the_console() -> None:
    lua = LuaConfig()
    lua.run_string('newServer("192.0.2.1")\n', "rules.lua")
    assert lua.console_eval("getServer(0).nosuch == nil") == "true\n"
    # Calling it is Lua's own error for a nil method, as dnsdist's.
    reply = lua.console_eval("getServer(0):nosuch()")
    assert reply.startswith("Error: ") and "attempt to call" in reply and "nosuch" in reply
    # Items are still read as items.
    assert lua.console_eval('getPool(""):getServers()[1]:getName()') == "192.0.2.1:53\n"


def test_an_attribute_error_inside_a_property_is_not_a_missing_field() -> None:
    lua = LuaConfig()

    class Broken:
        @property
        def field(self) -> None:
            raise AttributeError("'Thing' object has no attribute 'inner'")

    lua.lua.globals().broken = Broken()
    reply = lua.console_eval("broken.field")
    assert "'Thing' object has no attribute 'inner'" in reply


async def test_the_bad_value_is_named(tmp_path: Path) -> None:
    assert (
        await check_error(tmp_path, "setServerPolicy(leastOutstandingg)\n")
        == "1: setServerPolicy: expected a server policy, got nil"
    )
    assert (
        await check_error(tmp_path, "setServerPolicy({})\n")
        == "1: setServerPolicy: expected a server policy, got a table"
    )
    assert (
        await check_error(tmp_path, 'addAction(QTypeRule("AAAAA"), DropAction())\n')
        == "1: QTypeRule: Unable to convert 'AAAAA' to a DNS type"
    )
    assert (
        await check_error(tmp_path, "addAction(QTypeRule(DNSQType.AAAAA), DropAction())\n")
        == "1: QTypeRule: expected a DNS type (such as DNSQType.AAAA), got nil"
    )
    assert (
        await check_error(tmp_path, "addAction(QTypeRule(70000), DropAction())\n")
        == "1: QTypeRule: a DNS type is a number from 0 to 65535, not 70000"
    )


def test_an_error_inside_a_method_keeps_its_own_message() -> None:
    """Only a method that does not exist reads as Lua's "attempt to call": an
    AttributeError raised inside a method that Lua called keeps what it says."""
    lua = LuaConfig()

    class Broken:
        def method(self) -> None:
            raise AttributeError("'Thing' object has no attribute 'inner'")

    lua.lua.globals().broken = Broken()
    reply = lua.console_eval("broken:method()")
    assert "'Thing' object has no attribute 'inner'" in reply
    assert "attempt to call" not in reply


def test_pool_get_servers_is_a_lua_array() -> None:
    lua = LuaConfig()
    lua.run_string(
        'newServer{address="192.0.2.1", name="a", pool="p"}\n'
        'newServer{address="192.0.2.2", name="b", pool="p", order=0}\n',
        "rules.lua",
    )
    reply = lua.console_eval(
        'local servers = getPool("p"):getServers() '
        "local names = {} "
        "for i, s in ipairs(servers) do names[i] = s:getName() end "
        'print(#servers, servers[1]:getName(), table.concat(names, ",")) '
        'print(#getPool("empty"):getServers())'
    )
    # In ``order``, as getPoolServers gives them.
    assert reply == "2\tb\tb,a\n0\n"


def test_help_and_show_version_at_the_console() -> None:
    lua = LuaConfig()
    assert lua.console_eval("showVersion()").startswith("triodist ")
    assert "dnsdist" not in lua.console_eval("showVersion()")
    assert lua.console_eval('help("getPool")').startswith("getPool(name): ")
    assert lua.console_eval('help("addDOHLocal")') == "addDOHLocal: not supported by triodist yet\n"
    assert lua.console_eval('help("nosuch")') == "Nothing found for nosuch\n"
