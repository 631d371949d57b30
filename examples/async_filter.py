"""An external filter for triodist's asynchronous processing (see examples/async-filter.lua).

The filter itself is ``triodist.testing.component``; this is its command line.

Protocol, over two unix datagram sockets:

- triodist sends one datagram per suspended query to the filter's socket (``--listen``): the
  query in DNS wire format, whose ID field holds the queryID it is suspended under;
- the filter answers with one datagram of ASCII text, ``"<queryID> <verdict>"``, to triodist's
  listening socket (``--reply``), where the verdict is ``allow``, ``refuse``, ``nxdomain`` or
  ``drop``.

A datagram that is not a DNS message with one question is counted and ignored (triodist lets
the query go on when its timeout expires). The filter never waits for triodist before reading
the next query: an answer triodist has no room for yet waits in the filter's queue (at most
``--max-unsent``, 10,000 by default) and is sent as triodist reads; one over that bound, or
while triodist is not running, is counted (``unsent``) and forgotten.

Only this user and root are listened to: a query sent by another local user is counted
(``foreign``) and not answered. The directories of both sockets are created mode 0700 when
missing; one that another user owns or may write to is refused, as triodist refuses it.

Rules (see examples/async-filter.rules): one a line, ``allow|block|nxdomain|drop <name>``,
each matching the name and every name under it; ``block`` answers REFUSED (and ``ignore``
sends no answer, leaving the query to triodist's timeout). An ``allow`` rule wins; otherwise
the closest matching name decides; a name no rule matches is allowed.

    python examples/async_filter.py --listen /tmp/triodist-async/filter.sock \\
        --reply /tmp/triodist-async/triodist.sock --rules examples/async-filter.rules
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import trio

from triodist.testing.component import (
    IGNORE,
    KEYWORDS,
    MAX_UNSENT,
    Rules,
    bind_datagram_socket,
    decide,
    load_rules,
    prepare_reply_path,
    serve,
)

# Importable from here as before, for tests or another program.
__all__ = ["KEYWORDS", "Rules", "bind_datagram_socket", "decide", "load_rules", "main", "run"]


async def stop_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run(listen: socket.socket, args: argparse.Namespace, rules: Rules) -> Counter[str]:
    stats: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signals, nursery.cancel_scope)
        await serve(
            listen, args.reply, rules, stats, verbose=args.verbose, max_unsent=args.max_unsent
        )
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An external filter for triodist.")
    parser.add_argument("--listen", required=True, help="this filter's socket (bound here)")
    parser.add_argument("--reply", required=True, help="triodist's listening socket")
    parser.add_argument("--rules", required=True, help="the rules file")
    parser.add_argument("--verbose", action="store_true", help="print every decision")
    parser.add_argument(
        "--max-unsent",
        type=int,
        default=MAX_UNSENT,
        help=f"answers kept while triodist's socket is full (default {MAX_UNSENT})",
    )
    args = parser.parse_args(argv)
    path = Path(args.listen)
    try:
        rules = load_rules(args.rules)
        prepare_reply_path(args.reply)
        listen = bind_datagram_socket(path)
    except (OSError, ValueError) as exc:
        print(f"async_filter: {exc}", file=sys.stderr)
        return 1
    print(f"async_filter: {len(rules)} rules, listening on {path}", flush=True)
    inode = path.stat().st_ino
    try:
        with listen:
            stats = trio.run(run, listen, args, rules)
    finally:
        # Remove the socket file, unless another process has bound that path since.
        if path.exists() and path.stat().st_ino == inode:
            path.unlink()
    names = ["received", "foreign", "malformed", "allow", "refuse", "nxdomain", "drop"]
    names += ["queued", "unsent"]
    if stats[IGNORE]:  # only rules files with "ignore" rules have this counter
        names.append(IGNORE)
    print("async_filter: " + " ".join(f"{name}={stats[name]}" for name in names), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
