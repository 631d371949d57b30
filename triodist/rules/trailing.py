"""The selector of queries that carry trailing data: bytes after the DNS message
(``TrailingDataRule``).

Reading and replacing the trailing data are the query's own methods
(``DNSQuestion.getTrailingData``, ``setTrailingData``); where the message ends is the
wire walker's (``walk.message_end``).

Imports nothing above triodist.rules (the wire format below it).
"""

from __future__ import annotations

from triodist.rules.selectors import Selector
from triodist.wire.message import DNSQuestion
from triodist.wire.walk import message_end


class TrailingDataRule(Selector):
    """dnsdist's ``TrailingDataRule()``: matches a query with bytes after its last
    record. A query whose records cannot be walked has none, as in dnsdist."""

    def matches(self, dq: DNSQuestion) -> bool:
        return message_end(dq.data) < len(dq.data)

    def describe(self) -> str:
        return "trailing data"
