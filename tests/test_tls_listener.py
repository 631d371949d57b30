"""DNS over TLS listeners (``addTLSLocal``): real TLS sessions on loopback.

The certificate is made for each test session by the ``openssl`` command (a throwaway
self-signed one, for the name ``dot.test`` and the address 127.0.0.1), so that no key
is kept in the repository and no package is needed beyond the standard library's ``ssl``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
import trio
from conftest import StartTriodist, frame, until
from test_cli import triodist_cli, write

from triodist.config.api import ConfigAPI
from triodist.frontends.tls import TLSFrontend

NAME = "dot.test"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(certificate, key) files: a self-signed P-256 certificate for ``dot.test``."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "these tests make their certificate with the openssl command"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={NAME}",
            "-addext",
            f"subjectAltName=DNS:{NAME},IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    yield cert, key


def client_context(cert: Path, *, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def tls_address(server_frontends: Sequence[object]) -> tuple[str, int]:
    (frontend,) = [f for f in server_frontends if isinstance(f, TLSFrontend)]
    return frontend.local


async def dot_connect(
    address: tuple[str, int], cert: Path, *, alpn: list[str] | None = None
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, client_context(cert, alpn=alpn), server_hostname=NAME)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def read_frame(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes | None:
    """One length-prefixed message (``None`` when the stream ends first)."""
    while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    length = int.from_bytes(buffer[:2], "big")
    data = bytes(buffer[2 : 2 + length])
    del buffer[: 2 + length]
    return data


CONFIG = """
newServer{address="$BACKEND"}
addTLSLocal("127.0.0.1:0", "%s", "%s")
function protocol(dq)
    local name = string.lower(string.gsub(dq:getProtocol(), " ", "-"))
    return DNSAction.Spoof, name .. ".proto.example."
end
addAction("proto.example.", LuaAction(protocol))
"""


async def test_queries_over_tls_are_answered(
    start_triodist: StartTriodist, certificate: tuple[Path, Path]
) -> None:
    t = await start_triodist(CONFIG % certificate)
    address = tls_address(t.server.tcp_frontends)
    async with await dot_connect(address, certificate[0], alpn=["dot"]) as stream:
        assert stream.selected_alpn_protocol() == "dot"
        buffer = bytearray()
        for name in ("www.example.org.", "proto.example."):
            query = dns.message.make_query(name, "A")
            await stream.send_all(frame(query.to_wire()))
            data = await read_frame(stream, buffer)
            assert data is not None
            reply = dns.message.from_wire(data)
            assert reply.id == query.id and reply.answer
        # The rules see the query as DNS over TLS.
        assert reply.answer[0][0].target.to_text() == "dns-over-tls.proto.example."
    # The plain listeners are untouched: the same rule says Do53 there.
    plain = await t.ask("proto.example.", tcp=True)
    assert plain is not None and plain.answer[0][0].target.to_text() == "do53-tcp.proto.example."


async def test_a_client_without_alpn_and_one_writing_in_pieces(
    start_triodist: StartTriodist, certificate: tuple[Path, Path]
) -> None:
    t = await start_triodist(CONFIG % certificate)
    address = tls_address(t.server.tcp_frontends)
    async with await dot_connect(address, certificate[0]) as stream:
        assert stream.selected_alpn_protocol() is None
        query = dns.message.make_query("www.example.org.", "A")
        # Each piece is a TLS record of its own: the length prefix byte by byte, then
        # the message in two parts.
        wire = frame(query.to_wire())
        for piece in (wire[:1], wire[1:2], wire[2:40], wire[40:]):
            await stream.send_all(piece)
            await trio.sleep(0.01)
        data = await read_frame(stream, bytearray())
        assert data is not None and dns.message.from_wire(data).id == query.id


async def test_a_stalled_handshake_is_bounded_and_counted(
    start_triodist: StartTriodist,
    certificate: tuple[Path, Path],
    autojump_clock: trio.abc.Clock,
) -> None:
    t = await start_triodist(
        CONFIG % certificate + "setTCPRecvTimeout(3)\nsetMaxTCPConnectionsPerClient(1)\n"
    )
    address = tls_address(t.server.tcp_frontends)
    began = trio.current_time()
    async with await trio.open_tcp_stream(*address) as stalled:
        # While it stalls it holds this client's one connection: another is refused.
        await until(lambda: t.server.tcp_connections.open == 1)
        with pytest.raises(trio.BrokenResourceError):
            await dot_connect(address, certificate[0])
        assert t.stats["tcp-overload-drops"] == 1
        # Then the deadline closes it.
        assert await stalled.receive_some(100) == b""
    assert 3 <= trio.current_time() - began < 4
    assert t.stats["tls-handshake-timeouts"] == 1
    await until(lambda: t.server.tcp_connections.open == 0)
    async with await dot_connect(address, certificate[0]) as stream:
        await stream.send_all(frame(dns.message.make_query("www.example.org.", "A").to_wire()))
        assert await read_frame(stream, bytearray()) is not None


async def test_a_client_that_does_not_speak_tls(
    start_triodist: StartTriodist, certificate: tuple[Path, Path]
) -> None:
    t = await start_triodist(CONFIG % certificate)
    address = tls_address(t.server.tcp_frontends)
    async with await trio.open_tcp_stream(*address) as plain:
        await plain.send_all(frame(dns.message.make_query("www.example.org.", "A").to_wire()))
        # No DNS answer: the handshake fails on it and the connection ends.
        with trio.fail_after(5):
            while await plain.receive_some(4096):
                pass
    await until(lambda: t.stats["tls-handshake-failures"] == 1)
    async with await dot_connect(address, certificate[0]) as stream:
        await stream.send_all(frame(dns.message.make_query("www.example.org.", "A").to_wire()))
        assert await read_frame(stream, bytearray()) is not None


# The command line, one run per test (each is a Python start-up).


async def test_check_config_prints_dnsdists_line(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    good = write(
        tmp_path / "good.lua",
        f'newServer{{address="192.0.2.1:53"}}\naddTLSLocal("127.0.0.1:8853", "{cert}", "{key}")\n',
    )
    result = await triodist_cli("--check-config", "-C", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"Configuration '{good}' OK!\n"


async def test_options_triodist_lacks_are_reported(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    # Options triodist lacks are said, as other ignored options are.
    cert, key = certificate
    with_options = write(
        tmp_path / "options.lua",
        f'addTLSLocal("127.0.0.1:8853", {{"{cert}"}}, {{"{key}"}}, '
        '{minTLSVersion="tls1.2", ocspResponses={"ocsp.der"}, sessionTimeout=60})\n',
    )
    result = await triodist_cli("check-config", "--config", str(with_options))
    assert result.returncode == 0, result.stderr
    log = result.stderr.decode()
    for option in ("ocspResponses", "sessionTimeout"):
        assert f"addTLSLocal: option '{option}' not supported by triodist yet, ignored" in log
    assert "minTLSVersion" not in log


async def test_a_mismatch_of_certificates_and_keys_is_gone_past(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    # As dnsdist, a mismatch of certificates and keys is an error the file goes on after.
    cert, key = certificate
    mismatched = write(
        tmp_path / "mismatched.lua",
        f'addTLSLocal("127.0.0.1:8853", {{"{cert}", "{cert}"}}, {{"{key}"}})\n',
    )
    result = await triodist_cli("check-config", "--strict", "--config", str(mismatched))
    assert result.returncode == 1
    assert "mismatched.lua:1: Error, mismatching number of certificates and keys" in (
        result.stderr.decode()
    )


async def test_a_key_that_cannot_be_read_stops_the_start(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    missing = write(
        tmp_path / "missing.lua",
        f'addTLSLocal("127.0.0.1:0", "{cert}", "{tmp_path}/none.pem")\n',
    )
    result = await triodist_cli("serve", "--config", str(missing), "-l", "127.0.0.1:0")
    assert result.returncode == 1
    assert "Error while setting up TLS on local address '127.0.0.1:0'" in result.stderr.decode()


def test_set_local_and_the_command_line_keep_tls_listeners() -> None:
    # As dnsdist: setLocal (and -l) replace the plain listeners only.
    api = ConfigAPI()
    api.addLocal("127.0.0.1:5300")
    api.addTLSLocal("127.0.0.1:8853", "cert.pem", "key.pem", {"maxInFlight": 10})
    api.setLocal("127.0.0.1:5301")
    assert [(x.address, x.tls is not None) for x in api.config.listens] == [
        ("127.0.0.1:8853", True),
        ("127.0.0.1:5301", False),
    ]
    (tls,) = [x for x in api.config.listens if x.tls is not None]
    assert not tls.udp and tls.max_in_flight == 10
    assert tls.tls is not None and tls.tls.certificates == (("cert.pem", "key.pem"),)


async def test_a_handshake_has_a_deadline_even_when_reads_have_none(
    start_triodist: StartTriodist,
    certificate: tuple[Path, Path],
    autojump_clock: trio.abc.Clock,
) -> None:
    t = await start_triodist(CONFIG % certificate + "setTCPRecvTimeout(0)\n")
    address = tls_address(t.server.tcp_frontends)
    # A client that does its handshake is served (0 is no bound, not an instant one)...
    async with await dot_connect(address, certificate[0]) as stream:
        await stream.send_all(frame(dns.message.make_query("www.example.org.", "A").to_wire()))
        assert await read_frame(stream, bytearray()) is not None
    # ... and one that stalls in it is let go after the default 2 s.
    began = trio.current_time()
    async with await trio.open_tcp_stream(*address) as stalled:
        assert await stalled.receive_some(100) == b""
    assert 2 <= trio.current_time() - began < 3
    assert t.stats["tls-handshake-timeouts"] == 1
