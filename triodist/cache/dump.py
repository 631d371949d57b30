"""The packet cache's dump: one line per entry, in dnsdist's format, to a new file.

Imports nothing above triodist.cache.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from typing import Any, TextIO

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype

from triodist.cache.store import Entry


def write_dump(
    filename: Any, table: Mapping[int, Entry], now: float, raw: bool, out: TextIO
) -> None:
    """Write one line per entry of ``table`` to a new file (an existing file is never
    overwritten), then report "Dumped N records" on ``out``; ``raw`` adds each answer
    in base64."""
    try:
        fd = os.open(str(filename), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o660)
    except OSError as exc:
        out.write(f"Error opening dump file for writing: {exc.strerror}\n")
        return
    # "added" is shown as a Unix time, as dnsdist does; entries carry the
    # caller's clock, so it is rebased on the wall clock here, for display only.
    wall_offset = time.time() - now
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as file:
        file.write("; packet cache dump follows\n;\n")
        for hash_, entry in list(table.items()):
            count += 1
            file.write(dump_line(hash_, entry, now, wall_offset, raw))
    out.write(f"Dumped {count} records\n")


def dump_line(hash_: int, entry: Entry, now: float, wall_offset: float, raw: bool) -> str:
    """One entry's line; ``wall_offset`` turns the entry's clock into a Unix time."""
    try:
        qname = dns.name.from_wire(entry.qname, 0)[0].to_text()
    except dns.exception.DNSException:
        return f"; error printing '{entry.qname!r}'\n"
    line = (
        f"{qname} {int(entry.validity - now)} "
        f"{dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(entry.qclass))} "
        f"{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(entry.qtype))} "
        f"; ecs {entry.subnet or 'empty'}, rcode {entry.rcode}, key {hash_}, "
        f"length {len(entry.response)}, received over UDP {0 if entry.tcp else 1}, "
        f"added {int(entry.added + wall_offset)}, dnssecOK {int(entry.dnssec_ok)}, "
        f"raw query flags {entry.query_flags}"
    )
    if raw:
        line += f", base64response {base64.b64encode(entry.response).decode('ascii')}"
    return line + "\n"
