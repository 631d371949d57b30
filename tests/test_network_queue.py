"""A network endpoint's queue: what the component has no room for waits, bounded, in order.

Linux queues ``net.unix.max_dgram_qlen`` datagrams (10 by default) on a unix datagram socket
its reader has not read.  With a writer task running (the server starts one per endpoint),
``send`` queues what does not fit and the writer sends it as the component reads; ``send``
is false only over the bound (``setMaxNetworkEndpointQueue``) or with no component.  Real
unix sockets under ``tmp_path``.
"""

from __future__ import annotations

import gc
import socket
from functools import partial
from pathlib import Path

import dns.rcode
import pytest
import trio
from conftest import StartTriodist, query, until
from helpers import peer

from triodist.asyncproc.endpoint import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_MESSAGES,
    NetworkEndpoint,
    QueueBound,
)
from triodist.asyncproc.listener import MAX_DATAGRAM
from triodist.cli import load
from triodist.config.api import ConfigAPI
from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import LuaConfig
from triodist.reload import Reloader


def drain(sock: socket.socket) -> list[bytes]:
    """Everything in the component's queue now."""
    got = []
    while True:
        try:
            got.append(sock.recv(MAX_DATAGRAM))
        except BlockingIOError:
            return got


async def read_all(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` datagrams as they come, as a component does."""
    got: list[bytes] = []
    while len(got) < count:
        more = drain(sock)
        if not more:
            await trio.lowlevel.wait_readable(sock)
        got += more
    return got


async def test_a_full_component_gets_every_message_in_order_once_it_reads(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with peer(tmp_path / "c.sock") as component:
        endpoint = NetworkEndpoint(str(tmp_path / "c.sock"))
        endpoint.start_writer(nursery)
        messages = [f"{i} message".encode() for i in range(500)]
        # 500 at once: the component's queue takes about 10, the rest wait for it.
        assert all(endpoint.send(m) for m in messages)
        assert endpoint.waiting > 400
        assert endpoint.stats["async-send-queued"] == endpoint.queued == endpoint.waiting
        assert await read_all(component, 500) == messages
        await until(lambda: endpoint.waiting == 0)
        assert endpoint.sent == 500 and endpoint.failed == 0
        # Once the queue is empty, a message goes at once again.
        assert endpoint.send(b"after")
        assert endpoint.waiting == 0
        assert await read_all(component, 1) == [b"after"]
        endpoint.close()


async def test_over_the_bound_send_is_false_and_counted(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with peer(tmp_path / "c.sock") as component:
        endpoint = NetworkEndpoint(str(tmp_path / "c.sock"), bound=QueueBound(messages=5))
        endpoint.start_writer(nursery)
        results = [endpoint.send(b"%d" % i) for i in range(100)]
        in_kernel = results.index(False) - 5
        assert 0 < in_kernel <= 20  # the socket's own queue, then five in ours
        assert not any(results[in_kernel + 5 :]), "over the bound, every send is refused"
        assert endpoint.overflows == endpoint.stats["async-send-overflows"] == 100 - in_kernel - 5
        warnings = [r.message for r in caplog.records if "at the bound" in r.message]
        assert len(warnings) == 1, warnings  # once per episode, not once per message
        # What was accepted arrives, in order; what was refused never does.
        got = await read_all(component, in_kernel + 5)
        assert got == [b"%d" % i for i in range(in_kernel + 5)]
        await until(lambda: endpoint.waiting == 0)
        assert drain(component) == []
        endpoint.close()

        # The bytes bound holds too: one message larger than it is refused.
        small = NetworkEndpoint(str(tmp_path / "c.sock"), bound=QueueBound(bytes=100))
        small.start_writer(nursery)
        for _ in range(30):
            small.send(b"x" * 10)
        assert small.waiting * 10 <= 100
        assert small.send(b"y" * 200) is False
        small.close()


async def test_a_component_that_goes_away_while_messages_wait(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "c.sock"
    component = peer(path)
    endpoint = NetworkEndpoint(str(path))
    endpoint.start_writer(nursery)
    for i in range(50):
        assert endpoint.send(b"%d" % i)
    waiting = endpoint.waiting
    assert waiting > 0
    # It stops: what waits cannot be sent and is counted, and send is false again.
    component.close()
    path.unlink()
    await until(lambda: endpoint.waiting == 0)
    assert endpoint.stats["async-send-failures"] == waiting
    assert endpoint.send(b"lost") is False
    assert not endpoint.isValid()
    # A successor is reached, as without a queue.
    with peer(path) as successor:
        assert endpoint.send(b"again")
        assert await read_all(successor, 1) == [b"again"]
    endpoint.close()


async def test_a_collected_endpoint_ends_its_writer(nursery: trio.Nursery, tmp_path: Path) -> None:
    with peer(tmp_path / "c.sock") as component:
        endpoint = NetworkEndpoint(str(tmp_path / "c.sock"))
        endpoint.start_writer(nursery)
        outbox = endpoint._outbox
        for i in range(30):
            endpoint.send(b"%d" % i)
        assert endpoint.waiting > 0
        # Lua forgets it (a reload replaced its configuration): what waits is still
        # sent, then the writer ends.
        del endpoint
        gc.collect()
        assert len(await read_all(component, 30)) == 30
        await until(lambda: not outbox.writing)
        assert not nursery.child_tasks


async def test_without_a_writer_nothing_is_queued(tmp_path: Path) -> None:
    """check-config, or an endpoint used on its own: false when the component is full."""
    with peer(tmp_path / "c.sock"):
        endpoint = NetworkEndpoint(str(tmp_path / "c.sock"))
        results = [endpoint.send(b"x") for _ in range(100)]
        assert results[0] and not results[-1]
        assert endpoint.waiting == 0 and endpoint.queued == 0
        endpoint.close()


async def test_the_setting_from_lua(tmp_path: Path) -> None:
    lua = LuaConfig(ConfigAPI())
    bound = lua.api.config.endpoint_queue
    assert (bound.messages, bound.bytes) == (DEFAULT_QUEUE_MESSAGES, DEFAULT_QUEUE_BYTES)
    # Set after the endpoint is made, it applies to it all the same.
    lua.run_string(
        f"e = newNetworkEndpoint('{tmp_path}/c.sock')\nsetMaxNetworkEndpointQueue(20, 4096)\n",
        "rules.lua",
    )
    endpoint = next(iter(lua.api.config.network_endpoints))
    assert (endpoint.bound.messages, endpoint.bound.bytes) == (20, 4096)
    lua.run_string("setMaxNetworkEndpointQueue(0)", "more.lua")  # 0: never queue
    assert (bound.messages, bound.bytes) == (0, 4096)
    for bad in ("-1", "1.5", "'many'", "10, -1"):
        with pytest.raises(ConfigError, match="setMaxNetworkEndpointQueue"):
            lua.run_string(f"setMaxNetworkEndpointQueue({bad})", "bad.lua")
    endpoint.close()


CONFIG = """
newServer{address="$BACKEND"}
endpoint = newNetworkEndpoint("$COMPONENT")
function send(dq)
  endpoint:send(dq.qname:toString())
  return DNSAction.None
end
addAction(AllRule(), LuaAction(send))
"""


async def test_the_server_runs_the_writers(
    start_triodist: StartTriodist, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Started by the server for the configuration's endpoints, for one made at run time
    (the console, ``maintenance()``) and for a reloaded configuration's."""
    with peer(tmp_path / "c.sock") as component:
        t = await start_triodist(CONFIG.replace("$COMPONENT", str(tmp_path / "c.sock")))
        config = t.server.config
        (first,) = config.network_endpoints
        assert first._outbox.writing
        # A burst of queries, each sending one message: none refused, all counted.
        async with trio.open_nursery() as clients:
            for i in range(40):
                clients.start_soon(t.udp, query(f"q{i}.example.org."))
            got = await read_all(component, 40)
        assert sorted(got) == sorted(f"q{i}.example.org.".encode() for i in range(40))
        assert t.stats["async-send-queued"] > 0 and t.stats["async-send-failures"] == 0

        made_later = t.lua.lua.execute(f"return newNetworkEndpoint('{tmp_path}/c.sock')")
        assert made_later._outbox.writing

        reloader = Reloader(t.server, partial(load, str(t.config_path), [], ["127.0.0.1:0"]), t.lua)
        assert reloader.reload() is None
        (fresh,) = t.server.config.network_endpoints
        assert fresh is not first and fresh._outbox.writing
        reply = await t.udp(query("after.example.org."))
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN  # the backend's
        assert await read_all(component, 1) == [b"after.example.org."]
        made_later.close()
