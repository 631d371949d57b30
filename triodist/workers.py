"""``triodist serve --workers N``: N processes sharing the listening addresses.

Each worker is a whole ``triodist serve`` (``python -m triodist serve ... --worker-index
I``): it runs the configuration itself, so it has its own Lua state, packet cache,
counters and backend health checks, and binds the same addresses with ``SO_REUSEPORT``;
the kernel spreads the queries over the workers by a hash of each packet's (or
connection's) addresses and ports.  The parent process binds nothing and answers nothing:
it starts the workers, forwards the stop signals to them and waits for them.

The parent and each worker are linked by a ``SOCK_SEQPACKET`` socket pair (the worker's
end is passed as ``--control-fd``), one JSON object per message:

* worker → parent: ``{"ready": true}`` once it listens; ``{"stats": {...}, "id": N}`` in
  reply to a ``stats`` request; ``{"output": "...", "id": N}`` in reply to a console
  command; ``{"final": {...}}``, its counters as it exits.
* parent → worker: ``{"stats": true, "id": N}``; ``{"eval": "<a console command>", "id":
  N}`` (the console of a set of workers is the parent's: each command runs in every
  worker's Lua state).  A reply carries its request's ``id``: one that comes after the
  parent stopped waiting for it is not taken for the next request's.  The end of the
  stream (the parent is gone, even killed with SIGKILL) makes the worker shut down: no
  worker outlives its parent.

Resource handling
    :meth:`Supervisor.run` owns the worker processes: whatever ends it (a signal, a
    worker that died, an error, a cancellation), every worker still running is sent
    SIGTERM, given ``stop_timeout`` seconds to finish its queries in flight, then killed.

Error handling
    A worker that exits while nobody asked it to (it failed to start: an address in
    use; or it died later) is logged, and all the others are stopped: the parent exits
    with 1 rather than serve on with fewer workers than it was asked for, and a service
    manager (systemd's ``Restart=on-failure``) restarts the whole set.  The parent also
    exits with 1 when a worker stopped with a non-zero code.

The top layer, beside the command line that starts it: it may import the
configuration, the server and everything below them.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from triodist.config.bindings.inspection import format_stats
from triodist.ops.console.server import serve as console_serve
from triodist.server import DNSServer, ServerConfig
from triodist.system.privileges import PrivilegeError, Target, drop, refuse_privileged_binds

log = logging.getLogger("triodist.workers")

#: A control message is a JSON object; counters stay far below this. (A unix datagram
#: socket takes at most its send buffer, 208 KiB by default on Linux, in one message.)
MAX_MESSAGE = 128 * 1024

#: Builds worker ``index``'s command line, given the number of its control descriptor.
Command = Callable[[int, int], Sequence[str]]


def _message(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _counter(value: Any) -> Counter[str]:
    if not isinstance(value, dict):
        return Counter()
    return Counter({str(k): int(v) for k, v in value.items() if isinstance(v, int)})


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --- the worker's side ----------------------------------------------------------------------


class WorkerControl:
    """A worker's end of its link to the parent (``--control-fd``)."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)

    async def serve(
        self, server: DNSServer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Say that the worker listens, then answer the parent's requests; shut the
        server down when the parent goes away."""
        self._send({"ready": True})
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                request = self.sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                continue
            except OSError:
                request = b""
            if not request:
                log.warning("The parent process is gone: shutting down")
                server.request_shutdown()
                return
            message = _message(request)
            ident = message.get("id")
            if message.get("stats"):
                self._send({"stats": dict(server.stats), "id": ident})
                continue
            command = message.get("eval")
            if isinstance(command, str):
                self._send(_output_message(_evaluate(server, command), ident))

    def report_final(self, stats: Mapping[str, int]) -> None:
        """The counters as the worker exits, for the parent to sum."""
        self._send({"final": dict(stats)})
        self.sock.close()

    def _send(self, message: Mapping[str, Any]) -> None:
        try:
            # Small messages on a socket nobody else writes to: the buffer has room.
            self.sock.send(json.dumps(message).encode())
        except OSError as exc:  # the parent is gone: serve() notices and shuts down
            log.debug("Control message not sent: %s", exc)


def _evaluate(server: DNSServer, command: str) -> str:
    """A console command in this worker's current configuration; its output, cut to what
    a control message holds."""
    evaluate = getattr(server.config, "lua_eval", None)
    if evaluate is None:
        return "This worker has no console evaluator\n"
    try:
        return str(evaluate(command))
    except Exception as exc:  # the console's boundary: the error is the reply
        return f"{exc}\n"


def _output_message(output: str, ident: object) -> dict[str, Any]:
    """A command's reply for the parent, its output cut to what a control message holds
    once encoded (JSON escapes make some characters six bytes)."""
    message: dict[str, Any] = {"output": output, "id": ident}
    size = len(json.dumps(message))
    while size > MAX_MESSAGE:
        keep = max(0, len(output) * (MAX_MESSAGE - 256) // size)
        output = output[:keep]
        message["output"] = output + "\n[output cut]\n"
        size = len(json.dumps(message))
    return message


# --- the parent's side ----------------------------------------------------------------------


@dataclass(eq=False)
class Worker:
    index: int
    process: trio.Process
    control: socket.socket
    ready: trio.Event = field(default_factory=trio.Event)
    #: The worker's counters as it exited (its last message), if it said.
    final: Counter[str] | None = None
    _lock: trio.Lock = field(default_factory=trio.Lock)
    #: The id of the request whose reply is awaited (replies to others are left), and
    #: the field that reply carries ("stats", "output").
    _awaited: int = -1
    _expected: str = ""
    _reply: dict[str, Any] = field(default_factory=dict)
    _replied: trio.Event = field(default_factory=trio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def request(
        self, message: dict[str, Any], ident: int, expected: str, patience: float
    ) -> dict[str, Any] | None:
        """Send ``message`` with ``ident`` and wait for the reply to it, one that carries
        ``expected``: None when it cannot be sent or does not come within ``patience``
        seconds.  One request at a time per worker."""
        async with self._lock:
            self._replied = trio.Event()
            self._awaited, self._expected = ident, expected
            try:
                self.control.send(json.dumps({**message, "id": ident}).encode())
            except OSError:
                return None
            with trio.move_on_after(patience):
                await self._replied.wait()
                return self._reply
            return None

    def replied(self, message: dict[str, Any]) -> None:
        """A message from the worker that may be the reply awaited (a late reply, to a
        request given up on, is left)."""
        if message.get("id", -1) == self._awaited and self._expected in message:
            self._reply = message
            self._replied.set()


class Supervisor:
    """Start ``count`` workers with ``command``, watch them, stop them.

    ``run`` returns the exit code for the parent: 0 when it was asked to stop
    (``request_stop``, SIGTERM, SIGINT) and every worker stopped cleanly, else 1.
    """

    def __init__(
        self,
        command: Command,
        count: int,
        *,
        stop_timeout: float = 10.0,
        config: ServerConfig | None = None,
        reload_config: Callable[[], ServerConfig] | None = None,
        privileges: Target | None = None,
    ) -> None:
        self.command = command
        #: Who the parent becomes once every worker listens (``serve -u/-g``; each worker
        #: drops them itself once it is bound), and who it became.
        self.privileges = privileges
        self.dropped: Target | None = None
        self.count = count
        #: The configuration as the parent loaded it: the console's settings (the parent
        #: serves the console of the set; its commands run in the workers, and in it too,
        #: so that ``setKey``, ``setConsoleACL`` or ``reloadConfig()`` apply to the
        #: console itself). ``reload_config`` loads it again (SIGHUP, ``reloadConfig()``).
        self.config = config if config is not None else ServerConfig()
        self._reload_config = reload_config
        self.config.reload = self.reload_own_config
        self.stop_timeout = stop_timeout
        self.workers: list[Worker] = []
        self.failed = False
        self.all_ready = trio.Event()
        self._stopping = trio.Event()
        self._request_ids = itertools.count()

    def request_stop(self) -> None:
        self._stopping.set()

    async def counters(self, *, patience: float = 1.0) -> list[Counter[str]]:
        """Each listening worker's counters, asked now over its control socket: what a
        console or web API sums.  A worker that does not answer within ``patience`` seconds is
        left out."""
        results: list[Counter[str]] = []

        async def ask(worker: Worker) -> None:
            ident = next(self._request_ids)
            reply = await worker.request({"stats": True}, ident, "stats", patience)
            if reply is not None:
                results.append(_counter(reply["stats"]))

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                if worker.ready.is_set() and worker.process.returncode is None:
                    nursery.start_soon(ask, worker)
        return results

    async def summed(self, *, patience: float = 1.0) -> tuple[Counter[str], int]:
        """The counters of the workers that answered within ``patience``, summed, and how
        many answered: what a console or web API shows for the whole set."""
        each = await self.counters(patience=patience)
        total: Counter[str] = Counter()
        for counters in each:
            total.update(counters)
        return total, len(each)

    async def evaluate(self, command: str, *, patience: float = 5.0) -> list[tuple[int, str]]:
        """Run a console command in every listening worker; (index, output) of each that
        answered within ``patience`` seconds, in worker order."""
        outputs: dict[int, str] = {}

        async def ask(worker: Worker) -> None:
            ident = next(self._request_ids)
            reply = await worker.request({"eval": command}, ident, "output", patience)
            if reply is not None and isinstance(reply["output"], str):
                outputs[worker.index] = reply["output"]

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                if worker.ready.is_set() and worker.process.returncode is None:
                    nursery.start_soon(ask, worker)
        return sorted(outputs.items())

    def reload_own_config(self) -> str | None:
        """Load the configuration again for the parent's own part, the console's settings
        (the workers reload theirs and report the errors): None, or the error, and then
        the console keeps its settings."""
        if self._reload_config is None:
            return "no configuration file to reload"
        try:
            fresh = self._reload_config()
        except Exception as exc:  # any failure leaves the console as it was
            log.warning("The console keeps its settings: the configuration failed: %s", exc)
            return str(exc)
        if self.dropped is not None:
            try:
                refuse_privileged_binds(
                    self.config.console.addresses, fresh.console.addresses, self.dropped
                )
            except PrivilegeError as exc:
                log.warning("The console keeps its settings: %s", exc)
                return str(exc)
        if fresh.console.addresses != self.config.console.addresses:
            log.warning("The console's address changed: it takes effect at the next restart")
        fresh.console.addresses = self.config.console.addresses
        fresh.reload = self.reload_own_config
        self.config = fresh
        return None

    def _run_here(self, command: str) -> None:
        """A console command in the parent's own Lua state, its output left: what it does
        to the console (``setKey``, ``setConsoleACL``, ``reloadConfig()``) applies."""
        evaluate = self.config.lua_eval
        if evaluate is None:
            return
        logging.disable(logging.WARNING)  # the workers say what the command did
        try:
            evaluate(command)
        except Exception:  # the evaluator reports Lua errors itself: a bug
            log.exception("Error running a console command in the parent")
        finally:
            logging.disable(logging.NOTSET)

    async def run_console_command(self, command: str) -> str:
        """A console command for the whole set: ``dumpStats()`` shows the workers'
        counters summed; anything else runs in every worker's Lua state (each has its
        own), and the reply is their output, once when they all said the same."""
        if command.strip() in ("dumpStats()", "dumpStats"):
            total, answered = await self.summed()
            note = "" if answered == self.count else f"({answered} of {self.count} workers)\n"
            return format_stats(total) + note
        if len(json.dumps({"eval": command, "id": 0})) > MAX_MESSAGE - 32:
            return f"Error: a command for the workers is at most {MAX_MESSAGE // 1024} KiB\n"
        self._run_here(command)
        outputs = await self.evaluate(command)
        if not outputs:
            return "Error: no worker answered\n"
        if len({output for _, output in outputs}) == 1 and len(outputs) == self.count:
            return outputs[0][1]
        return "".join(f"[worker {index}]\n{output}" for index, output in outputs)

    async def run_with_console(self) -> int:
        """``run``, with the console listening beside it when the configuration has one."""
        if not self.config.console.addresses:
            return await self.run()
        async with trio.open_nursery() as nursery:
            await nursery.start(console_serve, self)
            code = await self.run()
            nursery.cancel_scope.cancel()
        return code

    async def run(self) -> int:
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._on_signals)
                if self.privileges is not None:
                    outer.start_soon(self._drop_when_listening, self.privileges)
                async with trio.open_nursery() as watchers:
                    watchers.start_soon(self._stop_when_asked)
                    for index in range(self.count):
                        try:
                            worker = await self._spawn(index)
                        except OSError as exc:
                            log.error("Unable to start worker %d: %s", index, exc)
                            self.failed = True
                            self._stopping.set()
                            break
                        watchers.start_soon(self._watch, worker)
                outer.cancel_scope.cancel()
        finally:
            # Cancelled from outside (or a bug): no worker is left behind.
            with trio.CancelScope(shield=True):
                await self._stop_all()
            for worker in self.workers:
                worker.control.close()
        self._report()
        return 1 if self.failed else 0

    async def _drop_when_listening(self, target: Target) -> None:
        """The parent's own drop, once every worker listens: a worker binds its addresses
        (``SO_REUSEPORT``: as the same user as the others, root) and then drops its
        privileges itself before it says it is ready; the parent drops only after
        that, so that it can always signal every worker (a process that is not root
        may signal only its own user's). The console was bound before the workers
        were started."""
        await self.all_ready.wait()
        drop(target)
        self.dropped = target

    async def _spawn(self, index: int) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setblocking(False)
            process = await trio.lowlevel.open_process(
                list(self.command(index, theirs.fileno())), pass_fds=(theirs.fileno(),)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            # The worker has its copy: when it exits, our end reads the end of the stream.
            theirs.close()
        worker = Worker(index, process, ours)
        self.workers.append(worker)
        log.info("Started worker %d (pid %d)", index, process.pid)
        return worker

    async def _on_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    # Each worker reloads its own configuration (and reports its errors).
                    log.info("Received SIGHUP, telling %d workers to reload", self.count)
                    self.reload_own_config()
                    for worker in self.workers:
                        if worker.process.returncode is None:
                            worker.process.send_signal(signal.SIGHUP)
                    continue
                if not self._stopping.is_set():
                    log.info("Received signal %d, stopping %d workers", signum, self.count)
                self._stopping.set()

    async def _stop_when_asked(self) -> None:
        await self._stopping.wait()
        await self._stop_all()

    async def _stop_all(self) -> None:
        """SIGTERM to every worker still running, ``stop_timeout`` to exit, then SIGKILL."""
        self._stopping.set()
        running = [w for w in self.workers if w.process.returncode is None]
        for worker in running:
            worker.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.stop_timeout):
            for worker in running:
                await worker.process.wait()
        for worker in running:
            if worker.process.returncode is None:
                log.error("Worker %d (pid %d) did not stop: killing it", worker.index, worker.pid)
                worker.process.kill()
                await worker.process.wait()

    async def _watch(self, worker: Worker) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, worker)
            code = await worker.process.wait()
            # Its last messages are still buffered: a moment to read them.
            nursery.cancel_scope.deadline = trio.current_time() + 1.0
        if not self._stopping.is_set():
            what = "died" if worker.ready.is_set() else "failed to start"
            log.error(
                "Worker %d (pid %d) %s (%s): stopping all workers",
                worker.index,
                worker.pid,
                what,
                _exit_status(code),
            )
            self.failed = True
            self._stopping.set()
        elif code != 0:
            log.error(
                "Worker %d (pid %d) stopped with %s", worker.index, worker.pid, _exit_status(code)
            )
            self.failed = True

    async def _read(self, worker: Worker) -> None:
        sock = worker.control
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            message = _message(data)
            if message.get("ready"):
                worker.ready.set()
                if len(self.workers) == self.count and all(w.ready.is_set() for w in self.workers):
                    log.info("All %d workers listening", self.count)
                    self.all_ready.set()
            worker.replied(message)
            if "final" in message:
                worker.final = _counter(message["final"])

    def _report(self) -> None:
        finals = [w.final for w in self.workers if w.final is not None]
        if not finals:
            return
        total: Counter[str] = Counter()
        for final in finals:
            total.update(final)
        per_worker = ", ".join(
            f"{w.index}: {w.final['queries']}" for w in self.workers if w.final is not None
        )
        summary = ", ".join(f"{key} {value}" for key, value in sorted(total.items()) if value)
        log.info("Counters summed over %d workers: %s", len(finals), summary or "none")
        log.info("Queries per worker: %s", per_worker)
