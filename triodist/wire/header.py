"""The 12-byte DNS header: its flag bits, dnsdist's ``dq.dh`` view, and making a
query's header that of an answer.

Imports nothing from triodist.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_U16 = struct.Struct("!H")

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010


def _flag_methods(mask: int) -> tuple[Callable[[Header], bool], Callable[[Header, Any], None]]:
    """dnsdist's getter and setter of one flag bit (``getRD``, ``setRD``): one pair of
    functions per bit, the same code for every bit."""

    def get(self: Header) -> bool:
        return bool(self._flags() & mask)

    def set_(self: Header, on: Any) -> None:
        self._set_flag(mask, on)

    return get, set_


class Header:
    """dnsdist's ``dq.dh``: the 12-byte header, read and written in place.

    Lua calls ``dq.dh:getRD()``, ``dq.dh:setRD(false)`` and so on, for QR, AA, TC, RD,
    RA, AD and CD; Python calls the same methods."""

    __slots__ = ("_data",)

    def __init__(self, data: bytearray) -> None:
        self._data = data

    def _flags(self) -> int:
        return int(_U16.unpack_from(self._data, 2)[0])

    def _set_flag(self, mask: int, on: Any) -> None:
        flags = self._flags()
        flags = flags | mask if on else flags & ~mask
        _U16.pack_into(self._data, 2, flags)

    def getID(self) -> int:
        return int(_U16.unpack_from(self._data, 0)[0])

    def setID(self, qid: int) -> None:
        _U16.pack_into(self._data, 0, int(qid) & 0xFFFF)

    getQR, setQR = _flag_methods(QR)
    getAA, setAA = _flag_methods(AA)
    getTC, setTC = _flag_methods(TC)
    getRD, setRD = _flag_methods(RD)
    getRA, setRA = _flag_methods(RA)
    getAD, setAD = _flag_methods(AD)
    getCD, setCD = _flag_methods(CD)


def set_response_header(
    data: bytearray, *, rcode: int | None = None, aa: bool = False, ra_from_rd: bool = True
) -> None:
    """Make ``data``'s header that of an answer: QR set, RA from RD, AA and AD as dnsdist does."""
    flags = _U16.unpack_from(data, 2)[0]
    flags |= QR
    if ra_from_rd:
        flags = flags | RA if flags & RD else flags & ~RA
    flags = flags | AA if aa else flags & ~AA
    flags &= ~AD
    if rcode is not None:
        flags = (flags & ~0x000F) | (rcode & 0x0F)
    _U16.pack_into(data, 2, flags)
