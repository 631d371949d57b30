"""Logging from a configuration: ``infolog``, ``warnlog``, ``errlog``, ``vinfolog`` and
``setVerbose``.

Imports nothing above triodist.config.
"""

from __future__ import annotations

import logging
from typing import Any

from triodist.config.bindings.args import text
from triodist.config.bindings.base import Binding, lua_function

log = logging.getLogger("triodist.config")


class LogBindings(Binding):
    """A configuration's messages, in the server's log."""

    @lua_function
    def infolog(self, message: Any) -> None:
        log.info("%s", text(message))

    @lua_function
    def warnlog(self, message: Any) -> None:
        log.warning("%s", text(message))

    @lua_function
    def errlog(self, message: Any) -> None:
        log.error("%s", text(message))

    @lua_function
    def vinfolog(self, message: Any) -> None:
        log.debug("%s", text(message))

    @lua_function
    def setVerbose(self, on: Any = True) -> None:
        if on:
            logging.getLogger("triodist").setLevel(logging.DEBUG)
