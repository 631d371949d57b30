"""The Lua configuration: the runtime that runs a ``rules.lua`` (``runtime.py``, the one
module that imports lupa), the dnsdist functions it calls, split by domain
(``bindings/``) and composed by ``api.ConfigAPI``, dnsdist's names and what triodist does
with those it lacks (``dnsdist_names.py``, ``unsupported.py``), ``help()``'s signatures,
and the Lua collector the server drives (``luagc.py``).

The layer under the command line: it imports the server and below, never the CLI.
"""
