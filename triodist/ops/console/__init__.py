"""The console: dnsdist's control socket, both ends.

A configuration opens it with ``controlSocket("127.0.0.1:5199")`` and
``setKey("<base64 of 32 bytes>")`` (config/bindings/console.py records them in
``ConsoleSettings``); ``dnsdist -c`` or ``triodist console`` then sends Lua lines that
run in the server's Lua state and get back what they printed.

- ``settings``: what the configuration asks of the console, dnsdist's defaults, the
  parsing of an address and a key;
- ``protocol``: dnsdist's wire protocol (nonces, ``crypto_secretbox``, framing),
  without I/O;
- ``server``: the accept loops and the connections, in the server's root nursery;
- ``client``: a blocking client for the command line, as ``dnsdist -c``.

Imports nothing above triodist.ops.
"""
