"""``LogAction`` and ``LogResponseAction`` with dnsdist 1.7.3's defaults: binary entries
unless ``binary`` is false, written unbuffered unless ``buffered`` is true (each entry on
disk when the query is answered), timestamps on the wall clock."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from conftest import StartTriodist, query

from triodist.testing.backend import AuthServer


def binary_entries(
    data: bytes, timestamps: bool
) -> list[tuple[float | None, int, bytes, int, int, str, int]]:
    """Read dnsdist's binary LogAction entries: (time, ID, name, type, family, address,
    port)."""
    entries = []
    pos = 0
    while pos < len(data):
        when = None
        if timestamps:
            seconds, nanoseconds = struct.unpack_from("=QI", data, pos)
            when = seconds + nanoseconds / 1e9
            pos += 12
        (qid,) = struct.unpack_from("!H", data, pos)
        pos += 2
        start = pos
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
        name = data[start:pos]
        qtype, family = struct.unpack_from("=HH", data, pos)
        pos += 4
        size = 4 if family == socket.AF_INET else 16
        address = socket.inet_ntop(family, data[pos : pos + size])
        pos += size
        (port,) = struct.unpack_from("!H", data, pos)
        pos += 2
        entries.append((when, qid, name, qtype, family, address, port))
    return entries


async def test_the_defaults_write_binary_entries_at_once(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    log = tmp_path / "queries.bin"
    stamped = tmp_path / "stamped.bin"
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        addAction(AllRule(), LogAction("{log}"))
        addAction(AllRule(), LogAction("{stamped}", nil, nil, nil, nil, true))
        """
    )
    www = query("WWW.example.org.")
    before = time.time()
    assert await t.udp(www) is not None
    mail = query("mail.example.org.", "AAAA")
    assert await t.tcp(mail) is not None
    after = time.time()
    # Read while the server runs: nothing is held in a buffer.
    entries = binary_entries(log.read_bytes(), timestamps=False)
    assert [(e[1], e[2], e[3], e[4], e[5]) for e in entries] == [
        (www.id, b"\x03WWW\x07example\x03org\x00", 1, socket.AF_INET, "127.0.0.1"),
        (mail.id, b"\x04mail\x07example\x03org\x00", 28, socket.AF_INET, "127.0.0.1"),
    ]
    assert all(0 < e[6] < 65536 for e in entries)
    times = [e[0] for e in binary_entries(stamped.read_bytes(), timestamps=True)]
    assert len(times) == 2
    assert all(t is not None and before - 0.5 <= t <= after + 0.5 for t in times), times


async def test_text_lines_with_wall_clock_timestamps(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    log = tmp_path / "queries.log"
    answers = tmp_path / "answers.log"
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        addAction(AllRule(), LogAction("{log}", false, false, false, true, true))
        addResponseAction(AllRule(), LogResponseAction("{answers}"))
        """
    )
    before = time.time()
    www = query("www.example.org.")
    assert await t.udp(www) is not None
    (line,) = log.read_text().splitlines()
    stamp, text = line.split(" ", 1)
    seconds, nanoseconds = stamp.strip("[]").split(".")
    assert len(nanoseconds) == 9
    assert before - 0.5 <= int(seconds) + int(nanoseconds) / 1e9 <= time.time() + 0.5
    assert text.endswith(f" for www.example.org. A with id {www.id}")
    # LogResponseAction: unbuffered by default too.
    (answer,) = answers.read_text().splitlines()
    assert answer.endswith(f" for www.example.org. A (No Error) with id {www.id}")


async def test_buffered_entries_wait_for_the_buffer(
    start_triodist: StartTriodist, auth: AuthServer, tmp_path: Path
) -> None:
    log = tmp_path / "queries.log"
    t = await start_triodist(
        f"""
        newServer("$BACKEND")
        addAction(AllRule(), LogAction("{log}", false, false, true))
        """
    )
    assert await t.udp(query("www.example.org.")) is not None
    assert log.read_bytes() == b""  # in the buffer, as buffered=true asks
    t.server.config.settings.grace_period = 0
    t.server.request_shutdown()
    await t.server.wait_stopped()
    assert log.read_text().count("Packet from 127.0.0.1:") == 1
