"""Health checks of downstream servers, with dnsdist's settings and state machine.

A *check* is one query (``checkName``/``checkType``/``checkClass``, RD set, CD
when ``setCD``) sent from a fresh socket, over UDP or, with ``checkTCP`` or
``tcpOnly``, over TCP, and answered within ``checkTimeout``.  It passes when the
reply carries our ID, has QR set, repeats our question and its rcode is
acceptable: SERVFAIL never is; with ``mustResolve`` neither are NXDOMAIN and
REFUSED.  Any other rcode (NOERROR, FORMERR, NOTIMP...) passes, as in dnsdist.

What checks decide (``submit_result``) follows dnsdist:

* mode ``auto`` (*active* checks): a check every ``checkInterval``;
  ``maxCheckFailures`` consecutive failures mark an up server down, ``rise``
  consecutive successes mark a down server up.
* mode ``lazy``: no check while the server is *Healthy*.  Real queries record
  their outcome (timeout, and SERVFAIL unless ``lazyHealthCheckMode`` is
  ``TimeoutOnly``) in a window of ``lazyHealthCheckSampleSize``; when at least
  ``lazyHealthCheckMinSampleCount`` outcomes are there and the failure rate
  reaches ``lazyHealthCheckThreshold`` percent, the server enters
  *PotentialFailure* and is checked every ``checkInterval``.  One good check
  makes it Healthy again; ``maxCheckFailures`` bad ones mark it down and
  *Failed*, where it is checked every ``lazyHealthCheckFailedInterval`` (doubling
  up to ``lazyHealthCheckMaxBackOff`` with ``lazyHealthCheckUseExponentialBackOff``)
  until ``rise`` good checks mark it up and Healthy.
* servers forced ``up`` or ``down`` (``healthCheckMode``, ``setUp``/``setDown``)
  are not checked; ``setAuto`` brings the checks back.

Tasks: ``initial_health_checks`` checks every ``auto`` server once, all in
parallel, before the listeners start (as dnsdist does at start-up); then
``health_check_loop`` runs one task per server in the server's root nursery.
A check waits in that task, never in a query's, so a slow or dead backend costs
queries nothing; the Lua ``checkFunction`` is the only synchronous part.

Error handling: nothing a backend sends, and no error of a ``checkFunction``,
leaves this module as an exception: the check fails, the reason is logged
(a failing ``checkFunction`` at warning level, once per distinct error; network
and validation failures at debug level), and the loop goes on.

The settings and states are in ``healthstate.py``; a server is seen through its
``CheckedServer`` protocol, so this module imports nothing above triodist.backends and
not ``server.py``.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import trio

from triodist.backends import randomness
from triodist.backends.healthstate import (
    Availability,
    CheckedServer,
    CheckMode,
    HealthCheckConfig,
    LazyStatus,
)
from triodist.wire.header import Header
from triodist.wire.names import DNSName, as_name

log = logging.getLogger("triodist.backends.health")

# The lazy states by their short names.
HEALTHY = LazyStatus.HEALTHY
POTENTIAL_FAILURE = LazyStatus.POTENTIAL_FAILURE
FAILED = LazyStatus.FAILED

_U16 = struct.Struct("!H")
_TYPE_CLASS = struct.Struct("!HH")
_RD = 0x0100
_CD = 0x0010
_QR = 0x80  # in the third header byte
_SERVFAIL = 2
_NXDOMAIN = 3
_REFUSED = 5


# --- one check -----------------------------------------------------------------------------


@dataclass
class CheckQuery:
    """The query a check sends, and what its reply must repeat."""

    packet: bytes
    qid: int
    name: dns.name.Name
    qtype: int
    qclass: int

    def problem(self, reply: bytes, must_resolve: bool) -> str | None:
        """Why ``reply`` fails the check, or ``None`` when it passes."""
        if len(reply) < 12:
            return f"reply too short ({len(reply)} bytes)"
        qid = _U16.unpack_from(reply, 0)[0]
        if qid != self.qid:
            return f"reply ID {qid} instead of {self.qid}"
        if not reply[2] & _QR:
            return "QR not set in the reply"
        rcode = reply[3] & 0x0F
        if rcode == _SERVFAIL:
            return "reply is SERVFAIL"
        if must_resolve and rcode in (_NXDOMAIN, _REFUSED):
            return f"reply is {'NXDOMAIN' if rcode == _NXDOMAIN else 'REFUSED'} (mustResolve)"
        try:
            name, used = dns.name.from_wire(reply, 12)
            qtype, qclass = _TYPE_CLASS.unpack_from(reply, 12 + used)
        except (dns.exception.DNSException, struct.error):
            return "no question in the reply"
        if name != self.name or qtype != self.qtype or qclass != self.qclass:
            return (
                f"reply to another question ({name} {qtype} {qclass} instead of "
                f"{self.name} {self.qtype} {self.qclass})"
            )
        return None


def _query_id() -> int:
    """A check's query ID, from the operating system's generator that the queries' IDs
    come from (``randomness``), never from ``random``'s Mersenne Twister: whoever sees
    enough check IDs could recover its state and predict the IDs of everything else
    drawn from it."""
    return randomness.u16()


def build_check(config: HealthCheckConfig) -> CheckQuery:
    """The check query: a random ID, RD (and CD), then what ``checkFunction`` makes of it.

    The function gets the name, type, class and a header it may change in place
    (``dh:setCD(true)``) and returns the name, type and class to use.  Whatever
    it raises, or a result of the wrong shape, propagates: the check fails.
    """
    header = bytearray(12)
    _U16.pack_into(header, 0, _query_id())
    _U16.pack_into(header, 2, _RD | (_CD if config.set_cd else 0))
    _U16.pack_into(header, 4, 1)  # one question
    name, qtype, qclass = config.check_name, config.check_type, config.check_class
    func = config.check_function
    if func is not None:
        result = func(DNSName(name), qtype, qclass, Header(header))
        if not isinstance(result, tuple) or len(result) < 3:
            raise ValueError("checkFunction must return a name, a type and a class")
        name = as_name(result[0]).derelativize(dns.name.root)
        qtype, qclass = _code(result[1], "type"), _code(result[2], "class")
    packet = bytes(header) + (name.to_wire() or b"") + _TYPE_CLASS.pack(qtype, qclass)
    return CheckQuery(packet, _U16.unpack_from(header, 0)[0], name, qtype, qclass)


def _code(value: Any, what: str) -> int:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and float(value).is_integer() and 0 <= value <= 0xFFFF:
        return int(value)
    raise ValueError(f"checkFunction returned an invalid {what}: {value!r}")


async def run_check(server: CheckedServer) -> bool:
    """Send one check to ``server``; whether it passed.  Never raises (but ``Cancelled``)."""
    config = server.health
    try:
        check = build_check(config)
    except Exception as exc:  # a failing checkFunction must not stop the checks
        _check_function_failed(server, exc)
        return False
    server.check_function_error = None
    over_tcp = config.check_tcp or server.tcp_only
    start = trio.current_time()
    reply: bytes | None = None
    with trio.move_on_after(config.check_timeout):
        try:
            if over_tcp:
                reply = await _exchange_tcp(server, check.packet)
            else:
                reply = await _exchange_udp(server, check.packet)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
            log.debug("Health check of %s failed: %s", server.getNameWithAddr(), exc or type(exc))
            return False
    if reply is None:
        log.debug(
            "Health check of %s failed: no reply within %g ms",
            server.getNameWithAddr(),
            config.check_timeout * 1000,
        )
        return False
    problem = check.problem(reply, config.must_resolve)
    if problem is not None:
        log.debug("Health check of %s failed: %s", server.getNameWithAddr(), problem)
        return False
    server.health_check_latency_us = (trio.current_time() - start) * 1e6
    return True


def _check_function_failed(server: CheckedServer, exc: Exception) -> None:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    # Once per distinct error, not once per second: the debug log has every one.
    if first != server.check_function_error:
        server.check_function_error = first
        log.warning(
            "Error in the checkFunction of %s, the health check fails: %s",
            server.getNameWithAddr(),
            first,
        )
    else:
        log.debug("Error in the checkFunction of %s: %s", server.getNameWithAddr(), first)


def _family(server: CheckedServer) -> socket.AddressFamily:
    return socket.AF_INET6 if server.address.isIPv6() else socket.AF_INET


async def _exchange_udp(server: CheckedServer, packet: bytes) -> bytes:
    """Send from a fresh connected socket; the first datagram back is the verdict."""
    with trio.socket.socket(_family(server), socket.SOCK_DGRAM) as sock:
        await sock.connect((server.address.toString(), server.address.port))
        await sock.send(packet)
        return await sock.recv(65535)


async def _exchange_tcp(server: CheckedServer, packet: bytes) -> bytes:
    """One length-prefixed query and its reply over a new connection."""
    stream = await trio.open_tcp_stream(server.address.toString(), server.address.port)
    async with stream:
        await stream.send_all(_U16.pack(len(packet)) + packet)
        buffer = bytearray()
        while True:
            if len(buffer) >= 2:
                length = _U16.unpack_from(buffer, 0)[0]
                if len(buffer) >= 2 + length:
                    return bytes(buffer[2 : 2 + length])
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise EOFError("connection closed before the reply")
            buffer += chunk


# --- what checks decide --------------------------------------------------------------------


def _mark(server: CheckedServer, up: bool, *, initial: bool = False) -> None:
    message = "Marking downstream %s as '%s'"
    level = logging.INFO if initial and up else logging.WARNING
    log.log(level, message, server.getNameWithAddr(), "up" if up else "down")
    server.healthy = up


def submit_result(server: CheckedServer, ok: bool, *, initial: bool = False) -> None:
    """Fold one check's outcome into the server's state (dnsdist's rules).

    The initial check, at start-up, sets the state directly, whatever ``rise``
    and ``maxCheckFailures`` say.
    """
    config = server.health
    lazy = server.health_check_mode == CheckMode.LAZY
    now = trio.current_time()
    if not ok:
        server.health_check_failures += 1
    if initial:
        _mark(server, ok, initial=True)
        if not ok:
            server.check_failures += 1
            if lazy:
                server.lazy_status = FAILED
                _schedule_lazy(server, now, scheduled=False)
        return

    new_state = ok
    if ok:
        server.check_failures = 0
        server.check_successes += 1
        if not server.healthy and server.check_successes < config.rise:
            new_state = False  # not enough successes in a row yet
            if lazy:
                _schedule_lazy(server, now, scheduled=False)
        if new_state and lazy:
            if server.lazy_status != HEALTHY:
                log.info(
                    "Backend %s passed its health check, back to the Healthy state",
                    server.getNameWithAddr(),
                )
            server.lazy_status = HEALTHY
            if server.lazy_results is not None:
                server.lazy_results.clear()
    else:
        server.check_successes = 0
        server.check_failures += 1
        if server.healthy:
            if server.check_failures < config.max_check_failures:
                new_state = True  # not enough failures in a row yet
            elif lazy:
                log.info(
                    "Backend %s failed its health checks, moving from PotentialFailure to Failed",
                    server.getNameWithAddr(),
                )
                server.lazy_status = FAILED
                # The back-off counts the failures from here on.
                server.check_failures = 1
                _schedule_lazy(server, now, scheduled=False)
    if new_state != server.healthy:
        _mark(server, new_state)


def check_required(server: CheckedServer, now: float) -> bool:
    """Whether the tick at ``now`` sends a check (called by the server's loop)."""
    if server.mode != Availability.AUTO:
        return False
    if server.health_check_mode != CheckMode.LAZY:
        return True
    status = server.lazy_status
    if status == POTENTIAL_FAILURE:
        return True
    if status == FAILED:
        if server.lazy_next_check <= now:
            # Plan the one after now: this check may time out, and the next must
            # not be sent meanwhile.
            _schedule_lazy(server, now, scheduled=True)
            return True
        return False
    results = server.lazy_results
    config = server.health
    if results is None or not results or len(results) < config.lazy_min_sample_count:
        return False
    failures = sum(results)
    rate = 100.0 * failures / len(results)
    if rate < config.lazy_threshold:
        return False
    log.info(
        "Backend %s reached the lazy health-check threshold (%d failures in the last %d "
        "queries, %.1f%% >= %g%%), moving to the PotentialFailure state",
        server.getNameWithAddr(),
        failures,
        len(results),
        rate,
        config.lazy_threshold,
    )
    results.clear()
    server.lazy_status = POTENTIAL_FAILURE
    server.check_successes = 0
    _schedule_lazy(server, now, scheduled=True)
    return True


def _schedule_lazy(server: CheckedServer, now: float, *, scheduled: bool) -> None:
    """When a lazy server in PotentialFailure or Failed gets its next check.

    ``scheduled``: a check is being sent now, so this plans the one after it,
    which happens only if this one fails (hence one more failure counted).
    """
    config = server.health
    if not config.lazy_exponential_backoff:
        server.lazy_next_check = now + config.lazy_failed_interval
    elif server.lazy_status == POTENTIAL_FAILURE:
        server.lazy_next_check = now + config.check_interval
    elif server.check_successes > 0:
        # Failed but answering again: the next check comes soon.
        server.lazy_next_check = now + config.lazy_failed_interval
    else:
        failures = server.check_failures + (1 if scheduled else 0)
        exponent = max(failures - 1, 0)
        delay = (
            config.lazy_max_backoff
            if exponent > 31
            else min(config.lazy_failed_interval * (1 << exponent), config.lazy_max_backoff)
        )
        server.lazy_next_check = now + delay


# --- tasks ---------------------------------------------------------------------------------


async def initial_health_checks(servers: Sequence[CheckedServer]) -> None:
    """Check every ``auto`` server once, in parallel, and set its state from the result.

    Each check is bounded by its own ``checkTimeout``, so this returns after the
    longest of them at most.
    """

    async def check(server: CheckedServer) -> None:
        submit_result(server, await run_check(server), initial=True)

    async with trio.open_nursery() as nursery:
        for server in servers:
            if server.mode == Availability.AUTO:
                nursery.start_soon(check, server)


async def health_check_loop(
    server: CheckedServer,
    servers: Sequence[CheckedServer] | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Check ``server`` for as long as the task lives (until it leaves ``servers``).

    Ticks come every ``checkInterval`` after the start; a tick sends a check when
    ``check_required`` says so (always for ``auto``, by state for ``lazy``, never
    for servers forced up or down).  The check runs in this task: it can delay
    the next tick by its ``checkTimeout`` at most, never queries.  A lazy server
    in the Failed state wakes up for its own next check time in between ticks.
    """
    task_status.started()
    next_tick = trio.current_time() + server.health.check_interval
    while True:
        await trio.sleep_until(next_tick)
        if servers is not None and server not in servers:
            return  # removed from the configuration (rmServer)
        tick = next_tick
        try:
            if check_required(server, trio.current_time()):
                submit_result(server, await run_check(server))
        except Exception:  # a bug here must not end the checks of this server
            log.exception("Unexpected error in the health check of %s", server.getNameWithAddr())
        next_tick = tick + server.health.check_interval
        if server.health_check_mode == CheckMode.LAZY and server.lazy_status == FAILED:
            next_tick = min(next_tick, server.lazy_next_check)
        next_tick = max(next_tick, trio.current_time())


__all__ = [
    "FAILED",
    "HEALTHY",
    "POTENTIAL_FAILURE",
    "CheckQuery",
    "build_check",
    "check_required",
    "health_check_loop",
    "initial_health_checks",
    "run_check",
    "submit_result",
]
