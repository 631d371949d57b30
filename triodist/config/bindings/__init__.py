"""The dnsdist configuration functions, by domain: one module each.

Each module holds a binding class (listeners, servers, pools and policies, rules, the
packet cache, asynchronous processing, tunables, inspection, logging, the console,
the names not supported yet) whose methods marked ``@lua_function`` are the Lua
globals of the same names; ``triodist.config.api.ConfigAPI`` composes them, and the
Lua runtime exposes what ``ConfigAPI.functions()`` derives from them.

Imports nothing above triodist.config.
"""
