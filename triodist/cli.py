"""The command line: ``triodist serve``, ``check-config``, ``console``, ``replay``, ``demo``.

The top of the layers: it loads the configuration and hands what it made to the server,
the reload (``load``, to run again), the workers and the console client. Beside the demo
and the workers, it may import every layer below (configuration, server and reload, ops,
asyncproc, system, wire, util); not ``triodist.testing``, which only the demo uses.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial

import trio

from triodist import __version__
from triodist.asyncproc.unixpaths import set_worker_index
from triodist.config.api import ConfigAPI
from triodist.config.bindings.args import ConfigError
from triodist.config.cmdline import CommandLineError, DnsdistLine, parse, usage
from triodist.config.runtime import LuaConfig, engine_version
from triodist.ops.console.client import client_main
from triodist.ops.console.settings import ConsoleSettings
from triodist.reload import Reloader
from triodist.replay import DEFAULT_LISTED, DEFAULT_MAX_QUERIES, count, port
from triodist.rules.matchers import NetmaskGroup
from triodist.server import DNSServer, Listen
from triodist.system.privileges import PrivilegeError, Target, resolve
from triodist.system.unixtrust import trust_user
from triodist.util.ratelog import RateLimitedLog
from triodist.wire.address import split_host_port
from triodist.workers import Supervisor, WorkerControl

log = logging.getLogger("triodist")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triodist",
        description="A DNS load balancer and filtering proxy, in the mould of dnsdist.",
        epilog="Given dnsdist's options instead of a subcommand (triodist --supervised "
        "-C rules.lua -l 127.0.0.1:53 ...), triodist reads them as dnsdist does; "
        "'triodist --supervised --help' lists them.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-C", "--config", help="the Lua configuration file (dnsdist's rules.lua)")
        p.add_argument("-v", "--verbose", action="store_true", help="log per-query detail")

    serve = sub.add_parser("serve", help="run the proxy")
    common(serve)
    # dnsdist's -V, among serve's own options; SUPPRESS: "triodist -V serve" still counts.
    serve.add_argument(
        "-V",
        "--version",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the version and exit",
    )
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
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes sharing the listening addresses (SO_REUSEPORT)",
    )
    serve.add_argument(
        "-u",
        "--uid",
        metavar="USER",
        help="once every socket is bound, run as USER (a name or a number; started as root)",
    )
    serve.add_argument(
        "-g",
        "--gid",
        metavar="GROUP",
        help="once every socket is bound, run as GROUP (default with -u: USER's own group)",
    )
    # Set by the parent of --workers on each worker's command line.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "upstreams", nargs="*", metavar="UPSTREAM", help="backend addresses (port 53 by default)"
    )

    check = sub.add_parser("check-config", help="check a configuration and exit")
    common(check)
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1) on any error the configuration went on after, and on anything "
        "triodist ignores",
    )

    demo = sub.add_parser("demo", help="run a self-contained demonstration and exit")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.add_argument(
        "--backend",
        nargs="+",
        metavar="ADDR",
        help="instead: serve the demo's zone (example.org.) on each ADDR until interrupted, "
        "as a backend to try a configuration against",
    )

    console = sub.add_parser("console", help="run commands on a server's console (as dnsdist -c)")
    console.add_argument(
        "-C",
        "--config",
        help="take the address and key from this configuration's controlSocket() and setKey()",
    )
    console.add_argument(
        "-c",
        "--client",
        metavar="ADDR",
        help="the console's address (default: the configuration's, else 127.0.0.1:5199)",
    )
    console.add_argument("-k", "--setkey", metavar="KEY", help="the key (base64), as setKey()")
    console.add_argument(
        "-e",
        "--execute",
        metavar="COMMAND",
        help="run COMMAND, print its output and exit (default: read commands from stdin); "
        "the exit status is 3 when a command failed (a Lua error), 1 when the console "
        "could not be used",
    )
    console.add_argument("-v", "--verbose", action="store_true")

    replay = sub.add_parser(
        "replay",
        help="what a configuration would do with the DNS queries of a capture (pcap, pcapng)",
    )
    common(replay)
    replay.add_argument(
        "--against",
        metavar="FILE",
        help="a second configuration (the current one): report only the queries whose "
        "outcome differs",
    )
    replay.add_argument("--port", type=port, default=53, help="the DNS port in the capture")
    replay.add_argument(
        "--json", action="store_true", help="the report as JSON (every differing query)"
    )
    replay.add_argument("--queries", metavar="FILE", help="write one JSON line per query to FILE")
    replay.add_argument(
        "--max-queries",
        type=count,
        default=DEFAULT_MAX_QUERIES,
        metavar="N",
        help="replay at most the first N queries of the capture (the rest are counted)",
    )
    replay.add_argument(
        "--list",
        type=count,
        default=DEFAULT_LISTED,
        metavar="N",
        help="differing queries listed in the text report",
    )
    replay.add_argument("capture", metavar="CAPTURE", help="the capture file")
    return parser


def _setup_logging(verbose: bool, prefix: str = "", timestamps: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=("%(asctime)s " if timestamps else "") + prefix + "%(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def check_config(
    path: str,
    verbose: bool = False,
    *,
    run: bool = True,
    strict: bool = False,
    dnsdist_words: bool = False,
) -> int:
    """dnsdist's check: "Configuration 'F' OK!" for a file triodist runs whole; for one
    that asks for what triodist ignores, a last line that names it (the warnings above
    are easy to miss). Either way it loads and serves: exit status 0.  ``run=False``:
    the file could not be read and dnsdist's command line goes on without it."""
    lua = LuaConfig()
    # Started as dnsdist: the errors dnsdist logs too in its words (Binding.dnsdist_words).
    lua.api.dnsdist_words = dnsdist_words
    # As dnsdist: the informational lines ("Added downstream server ...") are a running
    # server's, not the check's, whose whole output a harness compares; warnings and
    # errors (what triodist ignores) still show.  -v shows everything.
    quiet = not verbose and not log.isEnabledFor(logging.DEBUG)
    previous = log.level
    if quiet:
        log.setLevel(logging.WARNING)
    try:
        if run:
            lua.run_file(path)
    except ConfigError as exc:
        print(f"Error in configuration: {exc}", file=sys.stderr)
        return 1
    finally:
        log.setLevel(previous)
    if strict and (lua.api.errors or lua.api.ignored):
        # The lines above name each; this one says why the status is 1.
        print(
            f"Configuration '{path}' fails --strict: {len(lua.api.errors)} error(s) skipped, "
            f"{len(lua.api.ignored)} thing(s) ignored",
            file=sys.stderr,
        )
        return 1
    if not lua.api.ignored:
        print(f"Configuration '{path}' OK!")
    else:
        print(f"Configuration '{path}' loads, but {ignored_summary(lua.api.ignored)}")
    return 0


def console_settings(path: str) -> ConsoleSettings | None:
    """The console's address and key as the configuration sets them (``triodist console
    -C``); None, with the error printed, when it does not load."""
    # Running the configuration records what it asks for and binds nothing (no
    # server is started here).
    api = ConfigAPI()
    logging.disable(logging.WARNING)  # what the configuration logs is the server's
    try:
        LuaConfig(api).run_file(path)
    except ConfigError as exc:
        print(f"Error in configuration: {exc}", file=sys.stderr)
        return None
    finally:
        logging.disable(logging.NOTSET)
    return api.config.console


#: How many ignored things check-config's summary names (the warnings name every one).
SUMMARY_NAMES = 10


def ignored_summary(ignored: Sequence[str]) -> str:
    """What a configuration asked for and triodist ignores, on one line. A function whose
    only use was in a rule left out is named by that rule ("addAction rule(s) using X")."""
    items = [i for i in ignored if not any(o.endswith(f" using {i}") for o in ignored)]
    shown = "; ".join(items[:SUMMARY_NAMES])
    if len(items) > SUMMARY_NAMES:
        shown += f"; and {len(items) - SUMMARY_NAMES} more (each has a warning above)"
    what = "thing" if len(items) == 1 else "things"
    return f"triodist ignores {len(items)} {what} it does not support yet: {shown}"


def load(
    path: str | None,
    upstreams: Sequence[str],
    listens: Sequence[str],
    *,
    reloading: bool = False,
    acl: Sequence[str] | None = None,
    console_key: bytes | None = None,
) -> LuaConfig:
    """Run the configuration (if any), then apply the command line on top of it.
    ``acl`` (dnsdist's --acl) and ``console_key`` (-k) are in place before the file
    runs, as dnsdist has them: its setACL/setKey replace them, addACL adds."""
    api = ConfigAPI()
    api.reloading = reloading
    if acl is not None:
        api.config.acl = NetmaskGroup(acl)
    if console_key is not None:
        api.config.console.key = console_key
    lua = LuaConfig(api)
    if path:
        lua.run_file(path)
    for upstream in upstreams:
        api.newServer(upstream)
    if listens:
        # As dnsdist's -l: the plain listeners give way, DNS over TLS ones stay.
        kept = [listen for listen in api.config.listens if listen.tls is not None]
        api.config.listens[:] = kept + [Listen(address) for address in listens]
    elif not api.config.listens:
        api.config.listens.append(Listen("127.0.0.1:53"))
    return lua


#: Allocations between two collections of the youngest generation (Python's default is
#: 700), and how many of those between collections of the next generations (10 and 10).
GC_THRESHOLDS = (50_000, 20, 20)


def tune_garbage_collector() -> None:
    """Make Python's cyclic garbage collector cheap for a server.

    Almost everything a query allocates is freed by reference counting as soon as it is
    answered; the collector only has cycles left to find. By default it runs every 700
    allocations, a few dozen queries, and each run walks every young object; what the
    configuration built at start-up (the Lua state, the rules, the imported modules) is
    walked again by every full collection. So: collect once, freeze what start-up left
    (it is never walked again), and run the youngest generation every 50,000 allocations.
    Measured on the forwarding path (``bench/``): see bench/figures.md."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(
    lua: LuaConfig,
    control: WorkerControl | None = None,
    reload_with: Callable[[], LuaConfig] | None = None,
    privileges: Target | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads the configuration (``reload_with``
    builds it again, as start-up did). A worker of ``--workers`` also reports to its
    parent over ``control`` and ignores repeated signals: a service manager's SIGTERM to
    the whole group and the parent's forwarded one arrive both, and the second must not
    kill it during its grace period. ``privileges``: who to become once bound (-u/-g)."""
    server = DNSServer(lua.api.config, privileges=privileges)
    reloader = Reloader(server, reload_with or (lambda: lua), lua)

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if reload_with is None:
                        log.warning("Received SIGHUP: no configuration file to reload")
                    else:
                        log.info("Received SIGHUP, reloading the configuration")
                        reloader.reload()
                    continue
                if control is not None and server_stopping:
                    continue
                log.info("Received signal %d, exiting", signum)
                server.request_shutdown()
                if control is None:
                    return
                server_stopping.append(signum)

    server_stopping: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        await nursery.start(server.run)
        if control is not None:
            await nursery.start(control.serve, server)
        nursery.start_soon(_maintenance, reloader)
        await server.wait_stopped()
        nursery.cancel_scope.cancel()
    if control is not None:
        control.report_final(server.stats)
    else:
        # As the parent of --workers does for their sum: what became of every query.
        summary = ", ".join(f"{k} {v}" for k, v in sorted(server.stats.items()) if v)
        log.info("Counters: %s", summary or "none")
    return 0


async def _maintenance(reloader: Reloader[LuaConfig]) -> None:
    """Call the configuration's ``maintenance()`` every second, as dnsdist does (the
    current configuration's, after a reload)."""
    # It runs every second: a broken maintenance() is written once a minute.
    errors = RateLimitedLog(log)
    while True:
        await trio.sleep(1)
        _call_maintenance(reloader.current, errors)


def _call_maintenance(lua: LuaConfig, errors: RateLimitedLog) -> None:
    # A function of its own: nothing of the configuration stays referenced over the
    # sleep, which would keep an old configuration alive after a reload.
    try:
        func = lua.call_hook("maintenance")
        if func is not None:
            func()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        errors.warning(first, f"Error in maintenance(): {first}", exc=exc)


#: A first argument that is one of these is a subcommand; otherwise the command line is
#: dnsdist's.
SUBCOMMANDS = ("serve", "check-config", "demo", "console", "replay")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] not in (*SUBCOMMANDS, "-h", "--help"):
        return dnsdist_main(arguments)
    args = _parser().parse_args(argv)
    if args.version:
        print(_version())
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    _setup_logging(getattr(args, "verbose", False))
    if args.command == "demo":
        from triodist.demo import run_backends, run_demo

        if args.backend:
            return run_backends(args.backend)
        return int(run_demo())
    if args.command == "console":
        settings = None
        if args.config:
            settings = console_settings(args.config)
            if settings is None:
                return 1
        return client_main(settings, args.client, args.setkey, args.execute)
    if args.command == "replay":
        if not args.config:
            print("replay needs --config FILE", file=sys.stderr)
            return 2
        if not args.verbose:
            # The report is the output: the configuration's own lines ("Added downstream
            # server...") only with -v; its warnings and errors still show.
            logging.getLogger("triodist").setLevel(logging.WARNING)
        # Imported here: dpkt and Trio's mock clock cost every other command ~0.3 s.
        from triodist.replay.main import ReplayOptions, replay_main

        options = ReplayOptions(
            args.config,
            args.capture,
            args.against,
            port=args.port,
            max_queries=args.max_queries,
            json=args.json,
            lines=args.queries,
            listed=args.list,
        )
        return replay_main(options, lambda path: load(path, (), ()))
    if args.command == "check-config" or args.check_config:
        if not args.config:
            print("check-config needs --config FILE", file=sys.stderr)
            return 2
        refused = _check_as(getattr(args, "uid", None), getattr(args, "gid", None))
        if refused is not None:
            return refused
        return check_config(args.config, args.verbose, strict=getattr(args, "strict", False))
    return _serve_main(args, sys.argv[1:] if argv is None else list(argv))


def _check_as(uid: str | None, gid: str | None) -> int | None:
    """--check-config -u USER: USER's socket directories are the server's. The exit
    status when USER is unknown, else None."""
    if uid is None and gid is None:
        return None
    try:
        target = resolve(uid, gid)
    except PrivilegeError as exc:
        print(f"Unable to check: {exc}", file=sys.stderr)
        return 1
    trust_user(None if target is None else target.uid)
    return None


def _serve_main(args: argparse.Namespace, argv: list[str]) -> int:
    if args.workers < 1:
        print(f"--workers must be at least 1, not {args.workers}", file=sys.stderr)
        return 2
    try:
        # Before anything is bound: an unknown user, or ids only root could take.
        privileges = resolve(args.uid, args.gid)
    except PrivilegeError as exc:
        print(f"Unable to start: {exc}", file=sys.stderr)
        return 1
    # The user the server becomes is its own from the start (unixtrust): a socket
    # directory of that user's is accepted, a missing one is created for it, and its
    # components are heard before the drop as after.
    trust_user(None if privileges is None else privileges.uid)
    if args.worker_index is not None:
        # A worker of --workers: "{worker}" in socket paths is this index, and every
        # listener shares its address with the other workers.
        _setup_logging(args.verbose, f"[worker {args.worker_index}] ")
        set_worker_index(args.worker_index)
    elif args.workers > 1:
        return _supervise(args, argv, privileges)

    def load_here(reloading: bool = False) -> LuaConfig:
        lua = load(
            args.config,
            args.upstreams,
            args.local,
            reloading=reloading,
            acl=getattr(args, "acl", None),
            console_key=getattr(args, "console_key", None),
        )
        if args.worker_index is not None:
            for listen in lua.api.config.listens:
                listen.reuse_port = True
            # The console of a set of workers is served by their parent.
            lua.api.config.console.addresses = []
        return lua

    try:
        lua = load_here()
    except ConfigError as exc:
        print(f"Error in configuration: {exc}", file=sys.stderr)
        return 1
    control = None
    if args.worker_index is not None and args.control_fd is not None:
        control = WorkerControl(args.control_fd)
    tune_garbage_collector()
    try:
        return trio.run(serve, lua, control, partial(load_here, reloading=True), privileges)
    except* OSError as group:
        # Binding a listener failed (address in use, no permission): say so, no traceback.
        # (The console binds inside the server's root nursery: its error is one group deeper.)
        for error in _leaf_errors(group):
            print(f"Unable to start: {error}", file=sys.stderr)
    except* PrivilegeError as group:
        # -u/-g could not be applied after binding: the server does not serve as root.
        for error in _leaf_errors(group):
            print(f"Unable to start: {error}", file=sys.stderr)
    return 1


def _leaf_errors(group: BaseExceptionGroup[Exception]) -> list[BaseException]:
    errors: list[BaseException] = []
    for error in group.exceptions:
        errors += _leaf_errors(error) if isinstance(error, BaseExceptionGroup) else [error]
    return errors


def _supervise(args: argparse.Namespace, argv: list[str], privileges: Target | None) -> int:
    """The parent of ``--workers N``: check the configuration once, start the workers
    (each binds, then drops ``privileges`` itself; the parent drops them once all listen)."""

    # Errors are reported here, once, and nothing starts.  The workers log what the
    # configuration says (infolog, warnings) each in turn: the parent keeps quiet.
    def load_quietly(reloading: bool = False) -> LuaConfig:
        logging.disable(logging.WARNING)
        try:
            return load(args.config, args.upstreams, args.local, reloading=reloading)
        finally:
            logging.disable(logging.NOTSET)

    try:
        lua = load_quietly()
    except ConfigError as exc:
        print(f"Error in configuration: {exc}", file=sys.stderr)
        return 1
    for listen in lua.api.config.listens:
        if split_host_port(listen.address, 53)[1] == 0:
            print(
                f"--workers {args.workers}: cannot listen on {listen.address}: with port 0 "
                "each worker would get a port of its own; give a port number",
                file=sys.stderr,
            )
            return 2

    # Each worker runs the same command line (argv[0] is "serve"), plus its index and its
    # control descriptor, given first so that a "--" among the arguments does not matter.
    def command(index: int, fd: int) -> list[str]:
        hidden = ["--worker-index", str(index), "--control-fd", str(fd)]
        return [sys.executable, "-m", "triodist", argv[0], *hidden, *argv[1:]]

    # The console of the set is the parent's (the workers do not bind it).
    supervisor = Supervisor(
        command,
        args.workers,
        config=lua.api.config,
        reload_config=lambda: load_quietly(reloading=True).api.config,
        privileges=privileges,
    )
    try:
        return trio.run(supervisor.run_with_console)
    except* OSError as group:
        for error in _leaf_errors(group):
            print(f"Unable to start: {error}", file=sys.stderr)
    except* PrivilegeError as group:
        for error in _leaf_errors(group):
            print(f"Unable to start: {error}", file=sys.stderr)
    return 1


def _version() -> str:
    return f"triodist {__version__} (Lua: {engine_version()})"


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def dnsdist_main(argv: list[str]) -> int:
    """``triodist`` given dnsdist's options: what dnsdist does with them."""
    try:
        line = parse(argv)
    except CommandLineError as exc:
        # As dnsdist: the complaint on standard error, its usage on standard output.
        print(exc, file=sys.stderr)
        if exc.usage:
            print(usage())
        return exc.status
    if line.exit_with == "V":
        print(_version())
        return 0
    if line.exit_with == "h":
        print(usage())
        return 0
    _setup_logging(line.verbose, timestamps=line.log_timestamps)
    readable = _readable(line.config)
    if line.client or line.command is not None:
        return _dnsdist_client(line, readable)
    if not readable:
        # dnsdist goes on without the file (and its check says OK): so does triodist.
        log.warning("Unable to read configuration from '%s'", line.config)
    if line.check_config:
        refused = _check_as(line.uid, line.gid)
        if refused is not None:
            return refused
        return check_config(line.config, line.verbose, run=readable, dnsdist_words=True)
    if not line.supervised:
        # dnsdist without --supervised reads console commands from its terminal.
        log.warning(
            "triodist has no console on its terminal (dnsdist's without --supervised): "
            "running as with --supervised; use 'triodist -c' to reach the console"
        )
    args = argparse.Namespace(
        config=line.config if readable else None,
        upstreams=line.addresses,
        local=line.locals,
        uid=line.uid,
        gid=line.gid,
        workers=1,
        worker_index=None,
        control_fd=None,
        verbose=line.verbose,
        acl=line.acl or None,
        console_key=line.key,
    )
    return _serve_main(args, ["serve", *argv])


#: ``client_main``'s status for a command that failed with a Lua error.
COMMAND_FAILED = 3


def _dnsdist_client(line: DnsdistLine, readable: bool) -> int:
    """-c/-e: the console client; an address argument is the console's (the last one)."""
    settings = None
    if readable:
        settings = console_settings(line.config)
        if settings is None:
            return 1
    elif line.config_given:
        log.warning("Unable to read configuration from '%s'", line.config)
    address = line.addresses[-1] if line.addresses else None
    status = client_main(settings, address, line.key_text, line.command)
    # dnsdist -e exits 0 when the command fails with a Lua error (the output says it);
    # `triodist console -e` tells with 3.
    return 0 if status == COMMAND_FAILED else status


def console_main() -> None:
    sys.exit(main())
