"""Rules: selectors, actions and response actions, rule chains; small, pure, testable
without sockets (``selectors.py``, ``actions.py``, ``response_actions.py``,
``log_actions.py`` over ``actionbase.py``; ``chain.py``; the sets they match against in
``matchers.py``; the view Lua sees in ``luaview.py``).

Imports nothing above triodist.rules: asyncproc beside it, the wire format and util below.
"""
