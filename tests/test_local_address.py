"""``dq.localaddr`` on a listener bound to every address (0.0.0.0, ::) is the address the
client sent its query to, over UDP and TCP, and a UDP answer comes back from that address.

The client's socket is connected to 127.0.0.2 (any of 127.0.0.0/8 reaches the host): a
connected UDP socket takes only datagrams from the address it is connected to, so an
answer sent from another local address (127.0.0.1, what the routing table picks) is
never seen.
"""

from __future__ import annotations

import socket
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
import trio
from conftest import query, tcp_query, udp_query

from triodist.cli import load
from triodist.server import DNSServer

# The answer names the local address the query saw: a CNAME "at-127-0-0-2.example.",
# the address's dots (or colons) turned into dashes.
CONFIG = """
function where(dq)
  local text = dq.localaddr:toString():gsub("[.:]", "-")
  return DNSAction.Spoof, "at-" .. text .. ".example."
end
addAction(AllRule(), LuaAction(where))
"""


def cname_target(reply: dns.message.Message | None) -> str:
    assert reply is not None, "no answer"
    (rrset,) = reply.answer
    assert rrset.rdtype == dns.rdatatype.CNAME
    return str(rrset[0].target)


async def serve_on(nursery: trio.Nursery, tmp_path: Path, listen: str) -> tuple[DNSServer, int]:
    path = tmp_path / "rules.lua"
    path.write_text(CONFIG)
    server = DNSServer(load(str(path), [], [listen]).api.config)
    bound = await nursery.start(server.run)
    return server, int(bound[0][1])


async def stop(server: DNSServer) -> None:
    server.config.settings.grace_period = 0
    server.request_shutdown()
    await server.wait_stopped()


async def test_udp_and_tcp_on_any_ipv4_address_see_the_address_queried(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server, port = await serve_on(nursery, tmp_path, "0.0.0.0:0")
    try:
        for address in ("127.0.0.2", "127.0.0.1"):
            dashed = address.replace(".", "-")
            # udp_query connects its socket: the answer must come from ``address``.
            udp = await udp_query((address, port), query("where.example."))
            assert cname_target(udp) == f"at-{dashed}.example."
            tcp = await tcp_query((address, port), query("where.example."))
            assert cname_target(tcp) == f"at-{dashed}.example."
    finally:
        await stop(server)


async def test_a_listener_on_one_address_keeps_its_own(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server, port = await serve_on(nursery, tmp_path, "127.0.0.1:0")
    try:
        reply = await udp_query(("127.0.0.1", port), query("where.example."))
        assert cname_target(reply) == "at-127-0-0-1.example."
    finally:
        await stop(server)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
async def test_udp_on_any_ipv6_address_sees_the_address_queried(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server, port = await serve_on(nursery, tmp_path, "[::]:0")
    try:
        with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            await sock.connect(("::1", port))
            wire = query("where.example.").to_wire()
            await sock.send(wire)
            with trio.fail_after(2):
                data = await sock.recv(65535)
        assert cname_target(dns.message.from_wire(data)) == "at---1.example."
    finally:
        await stop(server)
