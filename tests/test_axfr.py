"""Zone transfers (AXFR, IXFR) through triodist over TCP: an answer of several messages is
passed on whole, message by message, until dnsdist's rule says it is complete (the final
SOA, or an error); what the backend sends after that is not; a transfer cut short closes
the client's connection; and the messages are read from the backend only as fast as the
client takes them.

The backend is ``ScriptedTCPBackend`` on loopback, sending the messages each test gives."""

from __future__ import annotations

from collections import Counter

import dns.message
import dns.rcode
import dns.rdatatype
import trio
import trio.testing
from conftest import StartTriodist, Triodist, read_frame, records, until
from conftest import frame as framed
from conftest import query as make_query
from scripted_tcp_backend import BackendConnection, ScriptedTCPBackend, answer

from triodist.backends.server import Server
from triodist.backends.transfer import Transfer
from triodist.frontends.tcp import Outbox, _relay_transfer
from triodist.wire.walk import question_end

ZONE = "zone.example."


def soa(serial: int) -> str:
    return f"{ZONE} 60 IN SOA ns.{ZONE} hostmaster.{ZONE} {serial} 3600 600 86400 60"


A1 = f"{ZONE} 60 IN A 192.0.2.1"
A2 = f"www.{ZONE} 60 IN A 192.0.2.2"
AAAA = f"{ZONE} 60 IN AAAA 2001:db8::1"
TXT = f'{ZONE} 60 IN TXT "hello"'


def transfer_backend(messages: list[list[str]], *, close_after: bool = False) -> ScriptedTCPBackend:
    """A backend that answers a transfer with ``messages`` (each a list of records), any
    other query with an A record; ``close_after``: it closes the connection after the
    transfer's messages (a transfer cut short when they hold no final SOA)."""

    async def script(conn: BackendConnection) -> None:
        while True:
            got = await conn.read_query()
            if got is None:
                return
            if got.question[0].rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
                for lines in messages:
                    await conn.send(answer(got, *lines), answers=False)
                if close_after:
                    return
            else:
                await conn.send(answer(got, f"{got.question[0].name} 60 IN A 192.0.2.9"))

    return ScriptedTCPBackend(script)


async def start(
    start_triodist: StartTriodist, nursery: trio.Nursery, backend: ScriptedTCPBackend
) -> Triodist:
    await backend.start(nursery)
    return await start_triodist(f'newServer{{address="{backend.address}", healthCheckMode="up"}}\n')


class Client:
    """One TCP connection to triodist, reading message by message."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, msg: dns.message.Message) -> None:
        await self.stream.send_all(framed(msg.to_wire()))

    async def read(self, timeout: float = 2.0) -> dns.message.Message | None:  # noqa: ASYNC109
        """The next message; None when the connection closed (or nothing came in time)."""
        with trio.move_on_after(timeout):
            data = await read_frame(self.stream, self.buffer)
            return None if data is None else dns.message.from_wire(data)
        return None


def axfr(rdtype: str = "AXFR") -> dns.message.Message:
    return make_query(ZONE, rdtype)


async def test_a_transfer_of_several_messages_is_passed_on_whole(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    messages = [[soa(7)], [A1], [AAAA, TXT], [A2], [soa(7)]]
    backend = transfer_backend(messages)
    t = await start(start_triodist, nursery, backend)
    q = axfr()
    async with await trio.open_tcp_stream(*t.address) as stream:
        client = Client(stream)
        await client.send(q)
        got = [await client.read() for _ in messages]
        assert all(m is not None and m.id == q.id for m in got)
        assert [records(m) for m in got] == [
            records(answer(q, *lines)) for lines in messages
        ]
        # Complete at the final SOA: triodist closes its connection to the backend (what
        # might follow is not the client's), and the client's connection goes on.
        await until(lambda: backend.closed == 1)
        follow = make_query("after.example.")
        await client.send(follow)
        reply = await client.read()
        assert reply is not None and reply.id == follow.id
        assert records(reply) == {"after.example. A 192.0.2.9"}
    assert t.stats["responses"] == 2  # one reply per query: the transfer's first message


async def test_what_follows_the_final_soa_is_not_passed_on(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    messages = [[soa(7)], [A1], [TXT, soa(7)], [f'{ZONE} 60 IN TXT "trailing"']]
    t = await start(start_triodist, nursery, transfer_backend(messages))
    async with await trio.open_tcp_stream(*t.address) as stream:
        client = Client(stream)
        await client.send(axfr())
        for lines in messages[:3]:
            got = await client.read()
            assert got is not None and records(got) == records(answer(axfr(), *lines))
        # The next frame on the connection is the answer to the next query, not the
        # backend's trailing message.
        follow = make_query("after.example.")
        await client.send(follow)
        reply = await client.read()
        assert reply is not None and reply.id == follow.id


async def test_an_ixfr_is_complete_at_the_third_copy_of_the_new_soa(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    # From serial 1 to 3: the new SOA; the change 1 -> 2 (a removal, two additions), split
    # over two messages; the change 2 -> 3; the new SOA again. Then a trailing message.
    messages = [
        [soa(3), soa(1), A1, soa(2)],
        [A2, soa(2)],
        [soa(3), AAAA, soa(3)],
        [TXT],
    ]
    t = await start(start_triodist, nursery, transfer_backend(messages))
    q = axfr("IXFR")
    async with await trio.open_tcp_stream(*t.address) as stream:
        client = Client(stream)
        await client.send(q)
        got = [await client.read() for _ in range(3)]
        assert all(m is not None and m.id == q.id for m in got)
        follow = make_query("after.example.")
        await client.send(follow)
        reply = await client.read()
        assert reply is not None and reply.id == follow.id


async def test_an_error_ends_a_transfer_at_its_first_message(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    async def refuse(conn: BackendConnection) -> None:
        while (got := await conn.read_query()) is not None:
            reply = answer(got)
            reply.set_rcode(dns.rcode.NOTAUTH if got.question[0].rdtype == 252 else 0)
            await conn.send(reply)

    backend = ScriptedTCPBackend(refuse)
    t = await start(start_triodist, nursery, backend)
    async with await trio.open_tcp_stream(*t.address) as stream:
        client = Client(stream)
        await client.send(axfr())
        got = await client.read()
        assert got is not None and got.rcode() == dns.rcode.NOTAUTH
        # Over: its connection to the backend is closed, nothing more is awaited.
        await until(lambda: backend.closed == 1)
        follow = make_query("after.example.")
        await client.send(follow)
        reply = await client.read()
        assert reply is not None and reply.id == follow.id


async def test_a_transfer_cut_short_closes_the_clients_connection(
    start_triodist: StartTriodist, nursery: trio.Nursery
) -> None:
    """The backend closes after two messages and no final SOA: the client gets those two,
    then its connection is closed (as dnsdist closes it), so that it cannot take a part of
    a zone for the whole; the server goes on."""
    messages = [[soa(7)], [A1]]
    backend = transfer_backend(messages, close_after=True)
    t = await start(start_triodist, nursery, backend)
    async with await trio.open_tcp_stream(*t.address) as stream:
        client = Client(stream)
        await client.send(axfr())
        assert await client.read() is not None
        assert await client.read() is not None
        # Closed at once: well before the server's idle timeout (setTCPRecvTimeout, 2 s)
        # would close it.
        with trio.fail_after(0.5):
            assert await read_frame(stream, client.buffer) is None
    assert t.stats["tcp-transfers-cut"] == 1
    assert t.server.servers[0].tcp_connections == 0
    assert records(await t.ask("again.example.", tcp=True)) == {"again.example. A 192.0.2.9"}


async def test_a_transfer_is_read_from_the_backend_only_as_the_client_takes_it(
    nursery: trio.Nursery,
) -> None:
    """Streamed, never kept: with a client that reads nothing, the relay reads no more than
    a message or two from the backend; once the client reads, the whole zone comes, in
    order. (The client's side is a lockstep stream: nothing is buffered between them.)"""
    big = " ".join(f'"{index:03d}' + "x" * 250 + '"' for index in range(100))  # ~25 KB
    messages = [[soa(9)]] + [[f"{ZONE} 60 IN TXT {big}"] for _ in range(40)] + [[soa(9)]]
    backend = transfer_backend(messages)
    await backend.start(nursery)
    server = Server(backend.address)
    wire = axfr().to_wire()
    transfer = await server.query_tcp(wire, question_end(wire), True)
    assert isinstance(transfer, Transfer)
    client_side, our_side = trio.testing.lockstep_stream_pair()
    stats: Counter[str] = Counter()
    outbox = Outbox(our_side, stats, limit=128 * 1024, send_timeout=60)
    closing = trio.Event()
    outbox.put(transfer)
    relayed = trio.Event()

    async def relay() -> None:
        try:
            await _relay_transfer(transfer, outbox, closing)
        finally:
            transfer.close()
            outbox.no_more_answers()
            relayed.set()

    async with trio.open_nursery() as inner:
        inner.start_soon(outbox.run, inner.cancel_scope)
        inner.start_soon(relay)
        await trio.testing.wait_all_tasks_blocked(cushion=0.2)
        assert transfer.messages <= 2
        assert stats["tcp-unsent-overflows"] == 0
        buffer = bytearray()
        got = []
        while len(got) < len(messages):
            data = await read_frame(client_side, buffer)  # type: ignore[arg-type]
            assert data is not None
            got.append(dns.message.from_wire(data))
        await relayed.wait()
    assert transfer.complete
    assert [records(m) for m in got] == [records(answer(axfr(), *m)) for m in messages]
    assert stats["answered"] == 1  # the query's answer; the rest are its continuation
    assert server.tcp_connections == 0

