"""External async components that misbehave: the server stays up and every query is
accounted for (received == answered + dropped).

The component is a unix datagram socket in the test: each held query's ID comes to it
as text, and it sends that text back to triodist's listening socket to resume the query.
Faults: the component is gone (its socket closed and removed) and comes back on the same
path, answers twice, and floods the listening socket with junk.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import trio
import trio.testing
from conftest import StartTriodist, accounted, records, until

from triodist.testing.backend import AuthServer

CONFIG = """
newServer{address="$BACKEND"}
late = 0
local component = newNetworkEndpoint("COMPONENT")
local function answered(endpointID, message, from)
  local id = tonumber(message)
  if id == nil then return end
  local ok, obj = pcall(getAsynchronousObject, 0, id)
  if not ok then late = late + 1 return end
  obj:resume()
end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint("LISTENER", 0, answered)
listener:start()
addAction(AllRule(), LuaAction(function(dq)
  local id = dq.dh:getID()
  if dq:suspend(0, id, 500) then component:send(tostring(id)) end
  return DNSAction.None
end))
"""

ANSWER = {"www.example.org. A 192.0.2.10", "www.example.org. A 192.0.2.11"}


class Component:
    """The external component: echoes each ID it gets back to triodist, ``copies`` times."""

    def __init__(self, path: Path, listener: Path, copies: int = 1) -> None:
        self.path = path
        self.listener = listener
        self.copies = copies
        self.received = 0
        #: Cancelled to make the component die (its socket closed and removed).
        self.alive = trio.CancelScope()

    async def run(self) -> None:
        with self.alive:
            await self._serve()

    async def _serve(self) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await sock.bind(str(self.path))
        try:
            while True:
                data = await sock.recv(4096)
                self.received += 1
                for _ in range(self.copies):
                    await sock.sendto(data, str(self.listener))
        finally:
            sock.close()
            os.unlink(self.path)


async def _start(nursery: trio.Nursery, component: Component) -> None:
    """Run ``component`` in ``nursery`` once its socket is bound."""
    nursery.start_soon(component.run)
    await until(component.path.exists)  # a file another task creates


def _config(tmp_path: Path) -> tuple[str, Path, Path]:
    component, listener = tmp_path / "component.sock", tmp_path / "listener.sock"
    text = CONFIG.replace("COMPONENT", str(component)).replace("LISTENER", str(listener))
    return text, component, listener


async def test_a_component_that_dies_and_comes_back(
    start_triodist: StartTriodist,
    auth: AuthServer,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
) -> None:
    text, path, listener = _config(tmp_path)
    async with trio.open_nursery() as nursery:
        component = Component(path, listener)
        await _start(nursery, component)
        t = await start_triodist(text)
        start = trio.current_time()
        assert records(await t.ask("www.example.org.")) == ANSWER
        assert trio.current_time() - start < 0.1  # resumed by the component
        component.alive.cancel()  # the component dies: its socket is closed and removed
        await until(lambda: not path.exists())
        start = trio.current_time()
        assert records(await t.ask("www.example.org.", timeout=2)) == ANSWER
        # Went on at its timeout (0.5 s of virtual time, give or take a float's rounding:
        # 0.855 - 0.355 is 0.49999999999999994).
        assert 0.5 - 1e-9 <= trio.current_time() - start < 0.6
        # Back on the same path: triodist's endpoint reconnects on its next send.
        component = Component(path, listener)
        await _start(nursery, component)
        start = trio.current_time()
        assert records(await t.ask("www.example.org.", timeout=2)) == ANSWER
        assert trio.current_time() - start < 0.1
        assert component.received == 1
        nursery.cancel_scope.cancel()
    assert t.stats["async-timeouts"] == 1
    await accounted(t)
    assert t.stats["answered"] == 3


async def test_a_component_that_answers_twice_resumes_once(
    start_triodist: StartTriodist,
    auth: AuthServer,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
) -> None:
    text, path, listener = _config(tmp_path)
    async with trio.open_nursery() as nursery:
        await _start(nursery, Component(path, listener, copies=2))
        t = await start_triodist(text)
        for _ in range(5):
            assert records(await t.ask("www.example.org.")) == ANSWER
        await until(lambda: t.lua.lua.globals().late == 5)  # the second copies are in
        nursery.cancel_scope.cancel()
    assert t.lua.lua.globals().late == 5  # the second answers found nothing held
    assert t.stats["async-resumed"] == 5
    await accounted(t)
    assert t.stats["answered"] == 5


async def test_a_flood_of_junk_on_the_listening_socket(
    start_triodist: StartTriodist,
    auth: AuthServer,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
) -> None:
    text, path, listener = _config(tmp_path)
    async with trio.open_nursery() as nursery:
        await _start(nursery, Component(path, listener))
        t = await start_triodist(text)
        junk = [b"", b"\x00" * 4000, b"not a number", b"99999", "é".encode(), b"1" * 70]
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as flooder:
            sent = 0
            for n in range(3000):
                try:
                    await flooder.sendto(junk[n % len(junk)], str(listener))
                    sent += 1
                except OSError:
                    break
        assert sent > 100
        assert records(await t.ask("www.example.org.", timeout=2)) == ANSWER
        nursery.cancel_scope.cancel()
    await accounted(t)
    assert t.stats["answered"] == 1
