"""Soak: a minute of mixed traffic with faults against a real triodist, then the accounting.

    python -m bench.soak [--duration 60] [--rate 2000] [--out FILE]

triodist runs as its own process (``python -m triodist serve``) in front of the test
backend (``triodist.testing.backend``, in this process), with a packet cache, a spoof, a drop
rule, a name the backend never answers (timeouts) and a name every query of which is
suspended and sent to an external component (in this process) that resumes nine in ten
and forgets the tenth (async timeouts). Meanwhile:

- UDP clients ask a mix of those names at ``--rate`` queries a second in all;
- TCP clients pipeline batches of 20 queries on fresh connections;
- junk datagrams (short, a response, random bytes) arrive at 50 a second;
- 200 slowloris connections send one byte and stall (reopened as the server closes them);
- every ``--reload-every`` seconds (10) a SIGHUP reloads the configuration, every other
  time with a second server in a pool of its own, a rule sending a name there and a
  smaller cache, and the time after without them (a server removed with queries in flight).

Every second the proxy's resident size is read from /proc. At the end triodist is
stopped with SIGTERM and its exit line "Counters: ..." is read: received must equal
answered + dropped, and answered must be what the clients received. Loopback only,
bounded by ``--duration``; needs nothing beyond the package itself.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import dns.message
import trio

from triodist.testing.backend import AuthServer

CONFIG = """
setLocal("127.0.0.1:{port}")
setACL({{"127.0.0.0/8"}})
setTCPRecvTimeout(2)
newServer{{address="127.0.0.1:{backend}", udpTimeout=1, healthCheckMode="up"}}
getPool(""):setCache(newPacketCache({cache}))
{extra}addAction("spoof.soak.", SpoofAction("192.0.2.1"))
addAction("drop.soak.", DropAction())
local component = newNetworkEndpoint("{component}")
local function resumed(endpointID, message, from)
  local ok, obj = pcall(getAsynchronousObject, 0, tonumber(message) or -1)
  if ok then obj:resume() end
end
local listener = newNetworkListener()
listener:addUnixListeningEndpoint("{listener}", 0, resumed)
listener:start()
local n = 0
addAction("async.example.org.", LuaAction(function(dq)
  n = (n + 1) % 65536
  if dq:suspend(0, n, 500) then component:send(tostring(n)) end
  return DNSAction.None
end))
"""

NAMES = [
    ("www.example.org.", 40),  # cache hits after the first
    ("mail.example.org.", 20),
    ("spoof.soak.", 10),
    ("drop.soak.", 5),
    ("silent.example.org.", 5),  # the backend never answers: udpTimeout
    ("async.example.org.", 20),  # suspended; the component forgets one in ten
]


class Tally:
    def __init__(self) -> None:
        self.sent = Counter[str]()
        self.answers = 0
        self.rss_kib: list[int] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _udp_clients(address: tuple[str, int], rate: int, until: float, tally: Tally) -> None:
    names = [name for name, weight in NAMES for _ in range(weight)]
    rng = random.Random(1)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.connect(address)

    async def receive() -> None:
        while True:
            await sock.recv(65535)
            tally.answers += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        step = 0.01
        per_step = max(1, int(rate * step))
        while trio.current_time() < until:
            for _ in range(per_step):
                name = rng.choice(names)
                await sock.send(dns.message.make_query(name, "A").to_wire())
                tally.sent["udp"] += 1
            await trio.sleep(step)
        await trio.sleep(2)  # the last answers and timeouts
        nursery.cancel_scope.cancel()
    sock.close()


async def _tcp_clients(address: tuple[str, int], until: float, tally: Tally) -> None:
    while trio.current_time() < until:
        with trio.move_on_after(3):
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                wires = [
                    dns.message.make_query("www.example.org.", "A").to_wire() for _ in range(20)
                ]
                await stream.send_all(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
                tally.sent["tcp"] += 20
                buffer = b""
                got = 0
                while got < 20:
                    data = await stream.receive_some(65535)
                    if not data:
                        break
                    buffer += data
                    while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                        buffer = buffer[2 + int.from_bytes(buffer[:2], "big") :]
                        got += 1
                tally.answers += got
        await trio.sleep(0.1)


async def _junk(address: tuple[str, int], until: float, tally: Tally) -> None:
    rng = random.Random(2)
    response = dns.message.make_response(dns.message.make_query("x.example.", "A")).to_wire()
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while trio.current_time() < until:
            for junk in (b"\x00" * 5, response, rng.randbytes(rng.randrange(12, 200))):
                await sock.sendto(junk, address)
                tally.sent["junk"] += 1
            await trio.sleep(0.06)


async def _slowloris(address: tuple[str, int], until: float, tally: Tally) -> None:
    async def one() -> None:
        while trio.current_time() < until:
            with trio.move_on_after(5):
                stream = await trio.open_tcp_stream(*address)
                async with stream:
                    await stream.send_all(b"\x00")
                    tally.sent["slowloris"] += 1
                    await stream.receive_some(1)  # until the server closes it

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)


async def _component(path: Path, listener: Path, until: float, tally: Tally) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(str(path))
    count = 0
    with trio.move_on_at(until + 3):
        while True:
            data = await sock.recv(64)
            count += 1
            if count % 10:
                try:
                    await sock.sendto(data, str(listener))
                except OSError:
                    tally.sent["component-unsent"] += 1
    sock.close()


async def _watch(pid: int, until: float, tally: Tally) -> None:
    while trio.current_time() < until + 3:
        tally.rss_kib.append(_rss_kib(pid))
        await trio.sleep(1)


#: What every other reload adds: a second server (the same backend under another name, so
#: a server of its own) in a pool of its own that "mail" queries go to, and a smaller cache;
#: the reload after takes them away again (the server removed with queries in flight).
VARIANT = """newServer{{address="127.0.0.1:{backend}", name="second", pool="alt", udpTimeout=1,
  healthCheckMode="up"}}
addAction("mail.example.org.", PoolAction("alt"))
"""


def _config(variant: bool, **where: object) -> str:
    extra = VARIANT.format(**where) if variant else ""
    return CONFIG.format(cache=5000 if variant else 10000, extra=extra, **where)


async def _reloads(
    proc: trio.Process,
    conf: Path,
    where: dict[str, object],
    every: float,
    until: float,
    tally: Tally,
) -> None:
    """SIGHUP every ``every`` seconds: the configuration is reloaded under the load, with
    queries held, in flight and in the cache (none may be lost), each time with a server,
    a pool, a rule and the cache's size changed."""
    variant = False
    while trio.current_time() + every < until:
        await trio.sleep(every)
        variant = not variant
        await trio.Path(conf).write_text(_config(variant, **where))
        proc.send_signal(signal.SIGHUP)
        tally.sent["reloads (SIGHUP)"] += 1


async def soak(duration: float, rate: int, reload_every: float = 10) -> dict[str, object]:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="triodist-soak-") as tmp:
        backend = AuthServer(history=10)
        backend.modes["silent.example.org."] = "silent"
        async with trio.open_nursery() as nursery:
            _host, backend_port = await nursery.start(backend.serve, "127.0.0.1", 0)
            port = _free_port()
            component, listener = Path(tmp) / "component.sock", Path(tmp) / "listener.sock"
            conf = Path(tmp) / "soak.lua"
            where: dict[str, object] = {
                "port": port,
                "backend": backend_port,
                "component": component,
                "listener": listener,
            }
            conf.write_text(_config(False, **where))
            log = Path(tmp) / "triodist.log"
            with log.open("w") as out:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "triodist", "serve", "--config", str(conf)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                await trio.sleep(2)  # start-up and the first health check
                start = trio.current_time()
                until = start + duration
                address = ("127.0.0.1", port)
                async with trio.open_nursery() as load:
                    load.start_soon(_component, component, listener, until, tally)
                    load.start_soon(_watch, proc.pid, until, tally)
                    load.start_soon(_udp_clients, address, rate, until, tally)
                    for _ in range(4):
                        load.start_soon(_tcp_clients, address, until, tally)
                    load.start_soon(_junk, address, until, tally)
                    load.start_soon(_slowloris, address, until, tally)
                    if reload_every > 0:
                        load.start_soon(_reloads, proc, conf, where, reload_every, until, tally)
            finally:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            nursery.cancel_scope.cancel()
        text = log.read_text()
    found = re.search(r"Counters: (.*)", text)
    counters = {}
    if found and found.group(1) != "none":
        for item in found.group(1).split(", "):
            key, _, value = item.rpartition(" ")
            counters[key] = int(value)
    received, answered, dropped = (counters.get(k, 0) for k in ("received", "answered", "dropped"))
    return {
        "duration_s": duration,
        "rate_qps": rate,
        "sent": dict(tally.sent),
        "answers_received_by_clients": tally.answers,
        "triodist_exit_code": proc.returncode,
        "peak_rss_kib": max(tally.rss_kib, default=0),
        "rss_kib_first_last": [tally.rss_kib[0], tally.rss_kib[-1]] if tally.rss_kib else [],
        "counters": counters,
        "accounted": received == answered + dropped,
        "answered_matches_clients": answered == tally.answers,
        "reloads_done": text.count("Configuration reloaded"),
        "reloads_failed": text.count("Reloading the configuration failed"),
        "errors_in_log": [
            line for line in text.splitlines() if "Traceback" in line or "ERROR" in line
        ][:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument(
        "--rate", type=int, default=2000, help="UDP queries a second (default 2000)"
    )
    parser.add_argument(
        "--reload-every",
        type=float,
        default=10,
        help="seconds between two SIGHUPs (configuration reloads); 0: none (default 10)",
    )
    parser.add_argument("--out", type=Path, help="also write the report (JSON) to this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = trio.run(soak, args.duration, args.rate, args.reload_every)
    report["wall_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = (
        report["accounted"]
        and report["answered_matches_clients"]
        and report["triodist_exit_code"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
