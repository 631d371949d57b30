"""Two behaviours of dnsdist 1.7.3's query path, end to end on loopback.

* A query with no question (QDCOUNT 0) is answered NOTIMP over UDP and TCP: the query's
  own bytes (trailing data included) sent back with QR set and the rcode replaced, every
  other flag kept; counted in ``queries`` and ``empty-queries``, not in ``responses``.
  The bytes expected below are what dnsdist 1.7.3 sent for the same queries.
* ``truncateTC(true)``: a backend's UDP answer with TC set reaches the client cut to its
  header and question, with an OPT record kept bare (payload size and DO; no option).
  Off by default, the answer passes whole.  dnsdist 1.7.3 sent the same bytes.
"""

from __future__ import annotations

import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import trio
from conftest import StartTriodist, accounted, frame, read_frame

# ID 0x1234, RD, no question; the second has 11 bytes after the header.
EMPTY = struct.pack("!HHHHHH", 0x1234, 0x0100, 0, 0, 0, 0)
TRAILING = EMPTY + bytes.fromhex("0000291000000000000000")
# ID 0x4321, opcode 0, AA, TC, CD set by a (hostile) client: all kept.
ODD_FLAGS = struct.pack("!HHHHHH", 0x4321, 0x0610, 0, 0, 0, 0)


async def udp_raw(address: tuple[str, int], data: bytes) -> bytes:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(address)
        await sock.send(data)
        with trio.fail_after(5):
            return await sock.recv(65535)


async def test_a_query_with_no_question_is_answered_notimp(
    start_triodist: StartTriodist,
) -> None:
    t = await start_triodist('newServer("$BACKEND")\naddAction(AllRule(), DropAction())\n')
    assert await udp_raw(t.address, EMPTY) == bytes.fromhex("123481040000000000000000")
    assert await udp_raw(t.address, TRAILING) == bytes.fromhex(
        "1234810400000000000000000000291000000000000000"
    )
    assert await udp_raw(t.address, ODD_FLAGS) == bytes.fromhex("432186140000000000000000")
    # Over TCP, two on one connection: both answered, the connection stays open.
    stream = await trio.open_tcp_stream(*t.address)
    async with stream:
        await stream.send_all(frame(EMPTY) + frame(EMPTY))
        buffer = bytearray()
        for _ in range(2):
            assert await read_frame(stream, buffer) == bytes.fromhex("123481040000000000000000")
        await stream.send_all(frame(TRAILING))
        assert await read_frame(stream, buffer) == bytes.fromhex(
            "1234810400000000000000000000291000000000000000"
        )
    await accounted(t)
    stats = t.stats
    assert (stats["queries"], stats["empty-queries"]) == (6, 6)
    assert (stats["responses"], stats["self-answered"], stats["rule-drop"]) == (0, 0, 0)
    assert stats["non-compliant-queries"] == 0


async def truncating_backend(
    sock: trio.socket.SocketType, *, task_status: trio.TaskStatus[None]
) -> None:
    """A UDP backend whose every answer is truncated yet carries a record, and an OPT
    record with DO, payload 1232 and an option: what truncateTC is for."""
    task_status.started()
    while True:
        data, addr = await sock.recvfrom(65535)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC | dns.flags.AA
        reply.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.GenericOption(65001, b"xyz")])
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1"))
        await sock.sendto(reply.to_wire(), addr)


async def test_truncate_tc_cuts_a_truncated_backend_answer(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as backend:
        await backend.bind(("127.0.0.1", 0))
        await nursery.start(truncating_backend, backend)
        host, port = backend.getsockname()
        on = await start_triodist(f'newServer("{host}:{port}")\ntruncateTC(true)\n')
        off = await start_triodist(f'newServer("{host}:{port}")\n')
        query = dns.message.make_query("b.example.", "A", use_edns=0, want_dnssec=True)
        query.id = 0x0E3A
        wire = query.to_wire()
        assert await udp_raw(on.address, wire) == bytes.fromhex(
            "0e3a870000010000000000010162076578616d706c65000001000100002904d0000080000000"
        )
        whole = dns.message.from_wire(await udp_raw(off.address, wire))
        assert whole.flags & dns.flags.TC
        assert len(whole.answer) == 1
        assert [option.otype for option in whole.options] == [65001]
        off.server.config.settings.truncate_tc = True  # the setting, read at each answer
        cut = dns.message.from_wire(await udp_raw(off.address, wire))
        assert (cut.answer, cut.options, cut.payload) == ([], (), 1232)
        assert cut.rcode() == dns.rcode.NOERROR
