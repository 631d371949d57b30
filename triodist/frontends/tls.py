"""The DNS over TLS frontend (``addTLSLocal``): the TCP frontend's connections, each
wrapped in a TLS session (Trio's ``SSLStream``, the standard library's ``ssl``).

A connection is accepted and counted as a TCP one is (the ACL, ``setMaxTCPConnections``,
the per-client bound and the listener's ``maxConcurrentTCPConnections`` all apply to it
before its handshake), then its TLS handshake runs under a deadline: a client that
stalls in the handshake holds a connection slot for ``setTCPRecvTimeout`` at most, and a
handshake that fails closes that connection only. Past the handshake, the length-prefixed
queries and the answers are the TCP frontend's (``TCPFrontend._serve_connection``).

What a certificate, a key or an option is wrong about is found when the listener is set
up, as the server starts (never by ``check-config``, which binds nothing, as dnsdist):
the error names the address and the server does not start.

Imports nothing above triodist.frontends (the query path and below).
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from dataclasses import dataclass

import trio

from triodist.frontends.common import bind_tcp
from triodist.frontends.tcp import Connection, TCPConnections, TCPFrontend
from triodist.query.pipeline import Pipeline
from triodist.query.settings import Settings
from triodist.rules.matchers import NetmaskGroup
from triodist.wire.address import split_host_port

log = logging.getLogger("triodist.frontends")

#: DNS over TLS's port (RFC 7858), ``addTLSLocal``'s default.
DOT_PORT = 853
#: The ALPN protocol of DNS over TLS (RFC 7858's registration): offered, never required
#: (a client that names none, or others only, is served all the same).
ALPN = ("dot",)

#: Seconds a TLS handshake may take when ``setTCPRecvTimeout(0)`` lifts the bound on
#: reads (dnsdist's default receive timeout).
HANDSHAKE_TIMEOUT = 2.0

#: ``minTLSVersion``'s values, as dnsdist spells them.
TLS_VERSIONS = {
    "tls1.0": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class TLSSettings:
    """What ``addTLSLocal`` asks of a listener's TLS: plain values, checked as the
    configuration runs, turned into an ``ssl.SSLContext`` only when the server starts."""

    #: (certificate file, key file) pairs, in order: one per key type (RSA, ECDSA) is
    #: what OpenSSL serves; a later pair of the same type replaces an earlier one.
    certificates: tuple[tuple[str, str], ...]
    min_version: str | None = None
    ciphers: str | None = None
    prefer_server_ciphers: bool = True
    session_tickets: bool = True
    key_log_file: str | None = None


def make_context(settings: TLSSettings, address: str) -> ssl.SSLContext:
    """The server context of a DNS over TLS listener; ``OSError`` naming ``address``
    when a certificate, a key or an option cannot be used."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        for certificate, key in settings.certificates:
            context.load_cert_chain(certificate, key)
        if settings.min_version is not None:
            context.minimum_version = TLS_VERSIONS[settings.min_version]
        if settings.ciphers:
            context.set_ciphers(settings.ciphers)
        if settings.prefer_server_ciphers:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        if not settings.session_tickets:
            context.options |= ssl.OP_NO_TICKET
        # dnsdist's default (enableRenegotiation=false): renegotiation widens what a
        # client can make the server do, and DNS has no use for it.
        context.options |= ssl.OP_NO_RENEGOTIATION
        if settings.key_log_file:
            context.keylog_filename = settings.key_log_file
        context.set_alpn_protocols(list(ALPN))
    except (OSError, ValueError) as exc:
        raise OSError(
            f"Error while setting up TLS on local address '{address}': {_reason(exc)}"
        ) from exc
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


class TLSFrontend(TCPFrontend):
    """A TCP frontend whose connections speak TLS first; rules see ``dq:getProtocol()`` as
    dnsdist names it, "DNS over TLS".

    Resource handling: a connection in its handshake is an open connection, counted in
    every TCP bound; the handshake has ``setTCPRecvTimeout`` to finish (the same wait a
    TCP client is given to send a query; 2 s when that is 0), then the connection is
    closed. Error handling: a handshake that fails or times out is counted
    (``tls-handshake-failures``, ``tls-handshake-timeouts``), logged at debug level and
    ends that connection; the server goes on."""

    protocol = "DNS over TLS"

    def __init__(
        self,
        listener: trio.SocketListener,
        context: ssl.SSLContext,
        pipeline: Pipeline,
        acl: NetmaskGroup,
        stats: Counter[str],
        settings: Settings,
        *,
        max_connections: int = 0,
        max_in_flight: int = 0,
        shared: TCPConnections | None = None,
    ) -> None:
        super().__init__(
            listener,
            pipeline,
            acl,
            stats,
            settings,
            max_connections=max_connections,
            max_in_flight=max_in_flight,
            shared=shared,
        )
        self.context = context

    async def serve(self, connection_nursery: trio.Nursery) -> None:
        log.info("Listening on %s:%d for TLS", *self.local)
        await super().serve(connection_nursery)

    async def _serve_connection(self, stream: Connection, remote: tuple[str, int]) -> None:
        if not isinstance(stream, trio.SocketStream):  # TLS inside TLS: never made here
            raise TypeError(f"a TLS listener's connection is a TCP one, not {stream!r}")
        tls = trio.SSLStream(stream, self.context, server_side=True)
        # setTCPRecvTimeout(0) lifts the bound on reads, never on a handshake: the
        # default one applies then.
        deadline = self.settings.tcp_recv_timeout or HANDSHAKE_TIMEOUT
        with trio.move_on_after(deadline) as handshake:
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                # Not TLS, a certificate the client refused, a reset: that client's
                # problem, one connection's end.
                self.stats["tls-handshake-failures"] += 1
                log.debug("TLS handshake with %s failed: %s", remote[0], exc.__cause__ or exc)
                return
        if handshake.cancelled_caught:
            self.stats["tls-handshake-timeouts"] += 1
            log.debug("TLS handshake with %s timed out", remote[0])
            return
        try:
            await super()._serve_connection(tls, remote)
        finally:
            # close_notify, so the client tells the end from a cut; bounded, since a
            # client that does not read could hold it, and the socket closes either way.
            with trio.move_on_after(self.settings.tcp_send_timeout):
                await tls.aclose()


def bind_tls(
    address: str,
    tls: TLSSettings,
    pipeline: Pipeline,
    acl: NetmaskGroup,
    stats: Counter[str],
    settings: Settings,
    *,
    reuse_port: bool = False,
    max_connections: int = 0,
    max_in_flight: int = 0,
    shared: TCPConnections | None = None,
) -> TLSFrontend:
    """Set up a DNS over TLS listener on ``address`` (port 853 unless it names one):
    its TLS context first, so that a bad certificate binds nothing."""
    context = make_context(tls, address)
    host, port = split_host_port(address, DOT_PORT)
    try:
        sock = bind_tcp(host, port, reuse_port=reuse_port)
    except OSError as exc:
        raise OSError(
            exc.errno, f"Unable to bind to TCP socket on {address}: {exc.strerror}"
        ) from exc
    return TLSFrontend(
        trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
        context,
        pipeline,
        acl,
        stats,
        settings,
        max_connections=max_connections,
        max_in_flight=max_in_flight,
        shared=shared,
    )
