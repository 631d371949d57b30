"""Rules: selectors, actions and response actions, rule chains; small, pure, testable
without sockets (``selectors.py``, ``actions.py``, ``response_actions.py``,
``log_actions.py`` over ``actionbase.py``; ``chain.py``; the sets they match against in
``matchers.py``; the view Lua sees in ``luaview.py``; actions written in Python in
``pyactions.py``).

``Verdict``, what a Python action's function returns, is public: users import it from
here (``from triodist.rules import Verdict``).

Imports nothing above triodist.rules: asyncproc beside it, the wire format and util below.
"""

from __future__ import annotations

from triodist.rules.pyverdict import Verdict as Verdict

__all__ = ["Verdict"]
