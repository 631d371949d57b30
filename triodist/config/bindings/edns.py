"""EDNS: the settings of the answers triodist makes itself
(``setPayloadSizeOnSelfGeneratedAnswers``, ``setAddEDNSToSelfGeneratedResponses``),
``setAllowEmptyResponse``, and the constructors of the EDNS selectors and actions
(``EDNS_CONSTRUCTORS``: ``EDNSOptionRule``, ``ERCodeAction``...).

Imports nothing above triodist.config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from triodist.config.bindings.args import ConfigError, boolean
from triodist.config.bindings.base import Binding, lua_function
from triodist.rules import edns_rules as E
from triodist.util.luavalues import describe

log = logging.getLogger("triodist.config")

#: The payload sizes setPayloadSizeOnSelfGeneratedAnswers keeps to, as dnsdist 1.7.3
#: (its upper bound is the largest UDP query it accepts).
MIN_SELF_GENERATED_PAYLOAD = 512
MAX_SELF_GENERATED_PAYLOAD = 1500


class EDNSBindings(Binding):
    """Settings of EDNS in answers (``config.settings``, and the servers' own copies)."""

    @lua_function
    def setPayloadSizeOnSelfGeneratedAnswers(self, size: Any) -> None:
        """The EDNS payload size of the answers triodist makes itself (1232 by default),
        512 to 1500: a size outside is brought inside, with a warning, as dnsdist does."""
        if (
            isinstance(size, bool)
            or not isinstance(size, int | float)
            or size != size
            or size in (float("inf"), float("-inf"))
            or size != int(size)
            or not 0 <= size <= 0xFFFF
        ):
            raise ConfigError(
                "setPayloadSizeOnSelfGeneratedAnswers: expected a payload size from 512 to "
                f"1500, got {describe(size)}"
            )
        payload = int(size)
        if payload < MIN_SELF_GENERATED_PAYLOAD:
            log.warning(
                "setPayloadSizeOnSelfGeneratedAnswers: %d is too low, using %d instead",
                payload,
                MIN_SELF_GENERATED_PAYLOAD,
            )
            payload = MIN_SELF_GENERATED_PAYLOAD
        elif payload > MAX_SELF_GENERATED_PAYLOAD:
            log.warning(
                "setPayloadSizeOnSelfGeneratedAnswers: %d is too high, using %d instead",
                payload,
                MAX_SELF_GENERATED_PAYLOAD,
            )
            payload = MAX_SELF_GENERATED_PAYLOAD
        self.config.settings.self_generated_payload = payload

    @lua_function
    def setAddEDNSToSelfGeneratedResponses(self, add: Any) -> None:
        """Whether an answer triodist makes itself to a query with EDNS carries an OPT
        record (true, the default) or none."""
        self.config.settings.add_edns_to_self_generated = boolean(
            add, "setAddEDNSToSelfGeneratedResponses"
        )

    @lua_function
    def setAllowEmptyResponse(self, allow: Any) -> None:
        """Take a backend's NOERROR or NXDOMAIN reply with no question as the answer
        (false by default: such a reply cannot be matched to its query, so it is
        ignored and the query times out). Error replies with no question always are."""
        on = boolean(allow, "setAllowEmptyResponse")
        self.config.settings.allow_empty_response = on
        for server in self.config.routing.servers:
            server.allow_empty_response = on


#: The EDNS selectors and actions, by dnsdist's names.
EDNS_CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "EDNSOptionRule": E.EDNSOptionRule,
    "EDNSVersionRule": E.EDNSVersionRule,
    "ERCodeRule": E.ERCodeRule,
    "ERCodeAction": E.ERCodeAction,
    "NegativeAndSOAAction": E.NegativeAndSOAAction,
    "SetNegativeAndSOAAction": E.SetNegativeAndSOAAction,
    "SetEDNSOptionAction": E.SetEDNSOptionAction,
}
