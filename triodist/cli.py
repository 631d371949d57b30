"""The command line: ``triodist serve``, ``check-config``, ``demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from . import __version__
from .config.api import ConfigAPI, ConfigError
from .config.runtime import LuaConfig, engine_version
from .server import DNSServer, Listen

log = logging.getLogger("triodist")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triodist",
        description="A DNS load balancer and filtering proxy, in the mould of dnsdist.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-C", "--config", help="the Lua configuration file (dnsdist's rules.lua)")
        p.add_argument("-v", "--verbose", action="store_true", help="log per-query detail")

    serve = sub.add_parser("serve", help="run the proxy")
    common(serve)
    serve.add_argument(
        "-l",
        "--local",
        action="append",
        default=[],
        metavar="ADDR",
        help="listen on ADDR (repeatable; replaces the configuration's listeners)",
    )
    serve.add_argument(
        "--supervised", action="store_true", help="accepted for dnsdist compatibility"
    )
    serve.add_argument(
        "--check-config", action="store_true", help="check the configuration and exit"
    )
    serve.add_argument(
        "upstreams", nargs="*", metavar="UPSTREAM", help="backend addresses (port 53 by default)"
    )

    check = sub.add_parser("check-config", help="check a configuration and exit")
    common(check)

    demo = sub.add_parser("demo", help="run a self-contained demonstration and exit")
    demo.add_argument("-v", "--verbose", action="store_true")
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )


def check_config(path: str) -> int:
    try:
        LuaConfig().run_file(path)
    except ConfigError as exc:
        print(f"Error in configuration: {exc}", file=sys.stderr)
        return 1
    print(f"Configuration '{path}' OK!")
    return 0


def load(path: str | None, upstreams: Sequence[str], listens: Sequence[str]) -> LuaConfig:
    """Run the configuration (if any), then apply the command line on top of it."""
    api = ConfigAPI()
    lua = LuaConfig(api)
    if path:
        lua.run_file(path)
    for upstream in upstreams:
        api.newServer(upstream)
    if listens:
        api.config.listens[:] = [Listen(address) for address in listens]
    elif not api.config.listens:
        api.config.listens.append(Listen("127.0.0.1:53"))
    return lua


async def serve(lua: LuaConfig) -> int:
    server = DNSServer(lua.api.config)

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("Received signal %d, exiting", signum)
                server.request_shutdown()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        await nursery.start(server.run)
        maintenance = lua.call_hook("maintenance")
        if maintenance is not None:
            nursery.start_soon(_maintenance, maintenance, server)
        await server.wait_stopped()
        nursery.cancel_scope.cancel()
    return 0


async def _maintenance(func: object, server: DNSServer) -> None:
    """Call the configuration's ``maintenance()`` every second, as dnsdist does."""
    while True:
        await trio.sleep(1)
        try:
            func()  # type: ignore[operator]
        except Exception as exc:
            log.warning("Error in maintenance(): %s", str(exc).splitlines()[0] if str(exc) else exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"triodist {__version__} (Lua: {engine_version()})")
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    _setup_logging(getattr(args, "verbose", False))
    if args.command == "demo":
        from .demo import run_demo

        return int(run_demo())
    if args.command == "check-config" or args.check_config:
        if not args.config:
            print("check-config needs --config FILE", file=sys.stderr)
            return 2
        return check_config(args.config)
    try:
        lua = load(args.config, args.upstreams, args.local)
    except ConfigError as exc:
        print(f"Error in configuration: {exc}", file=sys.stderr)
        return 1
    try:
        return trio.run(serve, lua)
    except* OSError as group:
        # Binding a listener failed (address in use, no permission): say so, no traceback.
        for error in group.exceptions:
            print(f"Unable to start: {error}", file=sys.stderr)
    return 1


def console_main() -> None:
    sys.exit(main())
