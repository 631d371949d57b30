"""Fakes for tests and the demo: DNS backends, asynchronous components, the pytest plugin.

A policy test imports what it names from here::

    from triodist.testing import FakeBackend, FakeComponent, slow

Each name is imported when first used: the pytest plugin (``plugin.py``) lives in this
package, and a test run that never uses it must not pay for the server's imports.

Nothing in the server's layers imports this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from triodist.testing.fakebackend import FakeBackend as FakeBackend
    from triodist.testing.fakebackend import Slow as Slow
    from triodist.testing.fakebackend import slow as slow
    from triodist.testing.fakecomponent import FakeComponent as FakeComponent

__all__ = ["FakeBackend", "FakeComponent", "Slow", "slow"]

_WHERE = {
    "FakeBackend": "triodist.testing.fakebackend",
    "Slow": "triodist.testing.fakebackend",
    "slow": "triodist.testing.fakebackend",
    "FakeComponent": "triodist.testing.fakecomponent",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'triodist.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
