"""What every selector and action has: a description, as ``showRules()`` prints it.

Imports nothing of triodist: the selectors and both kinds of action build on it.
"""

from __future__ import annotations


class Described:
    """A rule's part (a selector, an action) that says what it does: ``describe()``,
    which ``str()`` and Lua's ``toString()`` return too. A class that says nothing more
    is described by its name."""

    def describe(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return self.describe()

    def toString(self) -> str:
        return self.describe()
