"""Reloading the configuration while serving: ``reloadConfig()`` and SIGHUP.

The new rules.lua is checked first: on an error nothing changes and the error (file and
line) is reported; on success rules, pools and servers are the new ones while the packet
cache, the suspended queries and the counters go on.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from conftest import StartTriodist, hostport, query, records, udp_query, until
from helpers import reloader_for
from test_cli import MakeAuth, start_serve

from triodist.cli import load
from triodist.config.bindings.args import ConfigError
from triodist.testing.backend import AuthServer

SPOOF = """
setACL({"127.0.0.0/8"})
newServer{address="$BACKEND", healthCheckMode="up"}
addAction("spoofed.example.org.", SpoofAction("%s"))
"""


async def test_new_rules_apply_and_counters_go_on(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF % "192.0.2.1")
    reloader = reloader_for(t)
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.1"}
    assert records(await t.ask("www.example.org."))
    backend = t.server.servers[0]
    received, backend_queries = t.stats["received"], backend.queries
    assert (received, backend_queries) == (2, 1)

    t.config_path.write_text((SPOOF % "192.0.2.2").replace("$BACKEND", hostport(auth)))
    assert reloader.reload() is None
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.2"}
    assert records(await t.ask("www.example.org."))
    # The same backend object, its counters going on; the server's counters going on.
    assert t.server.servers[0].same_backend(backend)
    assert backend.queries == 2
    assert t.stats["received"] == 4
    assert t.stats["answered"] == 4
    assert t.stats["config-reloads"] == 1


async def test_a_broken_configuration_changes_nothing(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    t = await start_triodist(SPOOF % "192.0.2.1")
    reloader = reloader_for(t)
    config_before = t.server.config
    t.config_path.write_text(
        f'newServer{{address="{hostport(auth)}"}}\naddAction("x.", DropAction())\nthis is not lua\n'
    )
    error = reloader.reload()
    assert error is not None
    assert f"{t.config_path}:3" in error
    assert t.server.config is config_before
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.1"}
    assert t.stats["config-reload-failures"] == 1

    # A configuration that loads but cannot be put in place (a listening path that
    # cannot be bound) changes nothing either.
    t.config_path.write_text(
        (SPOOF % "192.0.2.9").replace("$BACKEND", hostport(auth))
        + "local l = newNetworkListener()\n"
        + f'l:addUnixListeningEndpoint("{t.config_path.parent}/not/a-dir/x", 0, print)\n'
        + "l:start()\n"
    )
    assert reloader.reload() is not None
    assert t.server.config is config_before
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.1"}


#: Loads (check-config accepts it) but its socket cannot be connected: a broadcast
#: address without SO_BROADCAST is refused by the kernel (EACCES) when the reload opens it.
UNOPENABLE = 'newServer{address="255.255.255.255:53", name="late"}\n'


async def test_a_late_failure_changes_nothing(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    t = await start_triodist(SPOOF % "192.0.2.1")
    reloader = reloader_for(t)
    config_before, servers_before = t.server.config, list(t.server.servers)
    path = tmp_path / "listen.sock"
    t.config_path.write_text(
        (SPOOF % "192.0.2.9").replace("$BACKEND", hostport(auth))
        + "local l = newNetworkListener()\n"
        + f'l:addUnixListeningEndpoint("{path}", 0, print)\n'
        + "l:start()\n"
        + UNOPENABLE
    )
    error = reloader.reload()
    assert error is not None and "255.255.255.255:53" in error and "denied" in error
    assert t.server.config is config_before and t.server.servers == servers_before
    assert not path.exists()  # the path bound for it was closed again
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.1"}
    assert records(await t.ask("www.example.org."))
    assert t.stats["config-reload-failures"] == 1 and t.stats["config-reloads"] == 0


async def test_a_failure_while_switching_is_reported_and_serving_goes_on(
    start_triodist: StartTriodist, auth: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the switch itself: reported, counted, and the server keeps serving."""
    from triodist import reload as reload_module

    t = await start_triodist(SPOOF % "192.0.2.1")
    reloader = reloader_for(t)

    def broken(old: object, new: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(reload_module, "_keep_caches", broken)
    t.config_path.write_text((SPOOF % "192.0.2.2").replace("$BACKEND", hostport(auth)))
    assert reloader.reload() == "injected"
    assert t.stats["config-reload-failures"] == 1
    assert records(await t.ask("www.example.org."))
    monkeypatch.undo()
    assert reloader.reload() is None
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.2"}


CACHED = """
setACL({"127.0.0.0/8"})
newServer{address="$BACKEND", healthCheckMode="up"}
getPool(""):setCache(newPacketCache(%d))
addAction("spoofed.example.org.", SpoofAction("192.0.2.1"))
"""


async def test_the_packet_cache_survives(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(CACHED % 1000)
    reloader = reloader_for(t)
    assert records(await t.ask("www.example.org."))
    assert len(auth.received) == 1
    old_cache = t.server.config.routing.pools[""].cache
    assert old_cache.misses == 1

    # A different size: the entries are kept all the same.
    t.config_path.write_text((CACHED % 500).replace("$BACKEND", hostport(auth)))
    assert reloader.reload() is None
    cache = t.server.config.routing.pools[""].cache
    assert cache is not old_cache and cache.max_entries == 500
    assert records(await t.ask("www.example.org."))
    assert len(auth.received) == 1  # answered from the cache kept over the reload
    assert (cache.hits, cache.misses) == (1, 1)


HELD = """
setACL({"127.0.0.0/8"})
newServer{address="$BACKEND", healthCheckMode="up"}
addAction("held.example.org.", LuaAction(function(dq)
  dq:suspend(1, dq.dh:getID(), 60000)
  return DNSAction.None
end))
"""


async def test_suspended_queries_survive(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(HELD)
    reloader = reloader_for(t)
    msg = query("held.example.org.")
    msg.id = 4242
    async with trio.open_nursery() as nursery:
        replies: list[object] = []

        async def ask() -> None:
            replies.append(await udp_query(t.address, msg, timeout=10))

        nursery.start_soon(ask)
        await until(lambda: t.stats["async-suspended"] == 1)
        # The new configuration has no such rule: the held query stays held all the same.
        t.config_path.write_text(
            f'setACL({{"127.0.0.0/8"}})\nnewServer{{address="{hostport(auth)}"}}\n'
            'addAction("held.example.org.", SpoofAction("192.0.2.77"))\n'
        )
        assert reloader.reload() is None
        assert not replies
        # The new Lua state finds it and resumes it.
        resumed = reloader.current.lua.execute("return getAsynchronousObject(1, 4242):resume()")
        assert resumed is True
    reply = replies[0]
    assert reply is not None
    # It went on from where it was in the old rules (to the backend), not through the new.
    assert [str(r.qname) for r in auth.received] == ["held.example.org."]
    assert "192.0.2.77" not in str(reply)
    assert t.stats["async-timeouts"] == 0
    assert t.stats["answered"] == t.stats["received"] == 1


async def test_servers_are_matched_added_and_removed(
    start_triodist: StartTriodist, make_auth: MakeAuth, auth: AuthServer
) -> None:
    second = await make_auth()
    t = await start_triodist(
        'setACL({"127.0.0.0/8"})\nnewServer{address="$BACKEND", name="one", healthCheckMode="up"}\n'
    )
    reloader = reloader_for(t)
    one = t.server.servers[0]
    assert records(await t.ask("www.example.org."))

    # "one" stays (another weight: the running server takes it), "two" is new in pool "b".
    # A Lua variable holding a server of the new configuration acts on the running one.
    t.config_path.write_text(
        'setACL({"127.0.0.0/8"})\n'
        f'first = newServer{{address="{hostport(auth)}", name="one", weight=5,'
        ' healthCheckMode="up"}\n'
        f'newServer{{address="{hostport(second)}", name="two", pool="b", healthCheckMode="up"}}\n'
        'addAction("mail.example.org.", PoolAction("b"))\n'
    )
    assert reloader.reload() is None
    running = t.server.servers[0]
    # The new configuration's object is the running backend (its life: sockets, counters)
    # with the new options; the old one keeps its own, for what was started under it.
    assert running is not one and running.life is one.life
    assert running.weight == 5 and running.queries == 1 and one.weight == 1
    assert records(await t.ask("mail.example.org."))
    assert [str(r.qname) for r in second.received] == ["mail.example.org."]
    reloader.current.lua.execute("first:setDown()")
    assert not running.is_up
    # The new configuration's variable is the running server, for Lua as for the server.
    assert reloader.current.lua.eval("getServer(0) == first") is True
    reloader.current.lua.execute("rmServer(first)")
    assert [s.name for s in t.server.servers] == ["two"]
    await until(lambda: not one._socks)  # its tasks stopped: the sockets are closed

    # "two" goes: a query it was answering slowly when it went is still answered.
    second.mode, second.delay = "slow", 0.3
    async with trio.open_nursery() as nursery:
        replies: list[object] = []

        async def ask() -> None:
            replies.append(await udp_query(t.address, query("mail.example.org."), timeout=3))

        nursery.start_soon(ask)
        await until(lambda: len(second.received) == 2)
        t.config_path.write_text(
            f'setACL({{"127.0.0.0/8"}})\nnewServer{{address="{hostport(auth)}", name="one"}}\n'
        )
        assert reloader.reload() is None
        assert [s.name for s in t.server.servers] == ["one"]
    assert replies[0] is not None and records(replies[0])  # type: ignore[arg-type]


async def test_a_kept_server_no_longer_tcp_only_gets_its_udp_sockets(
    start_triodist: StartTriodist, auth: AuthServer
) -> None:
    """A reload that turns a kept server's ``tcpOnly`` from true to false opens its UDP
    sockets (``sockets=2``) and starts reading them then, not at the next restart; the
    other way, the server goes over TCP at once."""
    tcp_only = 'setACL({"127.0.0.0/8"})\nnewServer{address="$BACKEND", tcpOnly=%s, sockets=2}\n'
    t = await start_triodist(tcp_only % "true")
    reloader = reloader_for(t)
    assert records(await t.ask("www.example.org."))
    assert (auth.udp_queries, auth.tcp_queries) == (0, 1)
    assert not t.server.servers[0].life.socks

    t.config_path.write_text(tcp_only.replace("$BACKEND", hostport(auth)) % "false")
    assert reloader.reload() is None
    assert len(t.server.servers[0].life.socks) == 2
    for name in ("www.example.org.", "mail.example.org."):  # one on each socket
        assert records(await t.ask(name)), name
    assert (auth.udp_queries, auth.tcp_queries) == (2, 1)
    assert t.server.stats["downstream-send-errors"] == 0

    t.config_path.write_text(tcp_only.replace("$BACKEND", hostport(auth)) % "true")
    assert reloader.reload() is None
    assert records(await t.ask("www.example.org."))
    assert (auth.udp_queries, auth.tcp_queries) == (2, 2)


async def test_network_listener_socket_is_kept(
    start_triodist: StartTriodist, tmp_path: Path
) -> None:
    path = tmp_path / "listen.sock"
    config = (
        'setACL({"127.0.0.0/8"})\n'
        'newServer{address="$BACKEND", healthCheckMode="up"}\n'
        "got = {}\n"
        "local l = newNetworkListener()\n"
        f'l:addUnixListeningEndpoint("{path}", 0, function(id, msg, from)'
        ' table.insert(got, "%s" .. msg) end)\n'
        "l:start()\n"
    )
    t = await start_triodist(config % "old:")
    reloader = reloader_for(t)
    inode = path.stat().st_ino
    sender = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    with sender:
        await sender.sendto(b"1", str(path))
        await until(lambda: len(t.lua.lua.globals().got) == 1)
        t.config_path.write_text((config % "new:").replace("$BACKEND", "127.0.0.1:1"))
        assert reloader.reload() is None
        assert path.stat().st_ino == inode  # the same socket: the component notices nothing
        await sender.sendto(b"2", str(path))
        await until(lambda: len(reloader.current.lua.globals().got) == 1)
    assert list(t.lua.lua.globals().got.values()) == ["old:1"]
    assert list(reloader.current.lua.globals().got.values()) == ["new:2"]


async def test_reload_config_from_lua(start_triodist: StartTriodist, auth: AuthServer) -> None:
    t = await start_triodist(SPOOF % "192.0.2.1")
    reloader = reloader_for(t)
    t.config_path.write_text((SPOOF % "192.0.2.3").replace("$BACKEND", hostport(auth)))
    # As the console runs it: a Lua line in the running configuration's state.
    assert t.lua.lua.execute("return reloadConfig()") is True
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.3"}
    # Again, from the new state.
    t.config_path.write_text("syntax error here\n")
    assert reloader.current.lua.execute("return reloadConfig()") is False
    assert records(await t.ask("spoofed.example.org.")) == {"spoofed.example.org. A 192.0.2.3"}


def test_reload_config_needs_a_running_server(tmp_path: Path) -> None:
    path = tmp_path / "rules.lua"
    path.write_text("reloadConfig()\n")
    with pytest.raises(ConfigError, match="only a running server"):
        load(str(path), [], [])


async def test_sighup_reloads_the_real_server(tmp_path: Path, make_auth: MakeAuth) -> None:
    auth = await make_auth()
    rules = tmp_path / "rules.lua"
    rules.write_text((SPOOF % "192.0.2.1").replace("$BACKEND", hostport(auth)))
    served = await start_serve(tmp_path, "--config", str(rules))
    try:
        await served.wait_answering()
        address = served.address
        reply = await udp_query(address, query("spoofed.example.org."))
        assert records(reply) == {"spoofed.example.org. A 192.0.2.1"}

        rules.write_text((SPOOF % "192.0.2.2").replace("$BACKEND", hostport(auth)))
        served.process.send_signal(signal.SIGHUP)
        await until(lambda: "Configuration reloaded" in served.err.read_text())
        reply = await udp_query(address, query("spoofed.example.org."))
        assert records(reply) == {"spoofed.example.org. A 192.0.2.2"}

        rules.write_text("newServer{}\n")  # no address: fatal, as in dnsdist
        served.process.send_signal(signal.SIGHUP)
        await until(lambda: "nothing changed" in served.err.read_text())
        reply = await udp_query(address, query("spoofed.example.org."))
        assert records(reply) == {"spoofed.example.org. A 192.0.2.2"}

        # One that fails late, opening a new backend's socket: the server goes on.
        rules.write_text((SPOOF % "192.0.2.3").replace("$BACKEND", hostport(auth)) + UNOPENABLE)
        served.process.send_signal(signal.SIGHUP)
        await until(lambda: served.err.read_text().count("nothing changed") == 2)
        reply = await udp_query(address, query("spoofed.example.org."))
        assert records(reply) == {"spoofed.example.org. A 192.0.2.2"}
        assert served.process.returncode is None
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert await served.process.wait() == 0
    log = served.err.read_text()
    assert f"{rules}:1" in log
    assert "Configuration reloaded" in log
    # The counters went on over both reloads: every query of the test is in them.
    counters = log.split("Counters: ")[-1]
    assert "config-reloads 1" in counters and "config-reload-failures 2" in counters


async def test_the_old_configuration_is_freed(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import weakref

    from triodist import reload as reload_module

    monkeypatch.setattr(reload_module, "FREE_AFTER", 0)
    log_file = tmp_path / "queries.log"
    config = (SPOOF % "192.0.2.1") + f'addAction(AllRule(), LogAction("{log_file}"))\n'
    t = await start_triodist(config)
    reloader = reloader_for(t)
    assert records(await t.ask("www.example.org."))
    logger = next(r.action for r in t.server.config.chains.queries if hasattr(r.action, "close"))
    old = [weakref.ref(t.lua)]
    del t.lua
    for _ in range(3):
        assert reloader.reload() is None
        old.append(weakref.ref(reloader.current))
        await until(lambda: old[-2]() is None)  # the collection after the reload
    # Every configuration but the serving one is gone: its Lua state, rules and servers,
    # and the old rules have let go of their log file (the serving rule, which names the
    # same file, goes on writing to it: tests/test_rule_files.py).
    assert [ref() is None for ref in old] == [True, True, True, False]
    assert logger.logger.file is None and logger.logger.shared is None
    assert records(await t.ask("www.example.org."))
