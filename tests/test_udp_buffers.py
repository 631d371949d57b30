"""setUDPSocketBufferSizes: the frontends' UDP socket buffers, as dnsdist sizes them."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from conftest import StartTriodist

from triodist.config.bindings.args import ConfigError
from triodist.config.runtime import load_config


def kernel_max(what: str) -> int:
    return int(Path(f"/proc/sys/net/core/{what}").read_text())


def granted(sock: socket.socket, option: int) -> int:
    # Linux reports twice what it grants (the other half is its bookkeeping).
    return int(sock.getsockopt(socket.SOL_SOCKET, option)) // 2


async def test_the_sizes_are_set_on_the_frontends_udp_socket(
    start_triodist: StartTriodist,
) -> None:
    recv, send = 300_000, 200_000
    assert recv <= kernel_max("rmem_max") and send <= kernel_max("wmem_max")
    t = await start_triodist(f'newServer("$BACKEND")\nsetUDPSocketBufferSizes({recv}, {send})\n')
    [frontend] = t.server.udp_frontends
    assert granted(frontend.sock, socket.SO_RCVBUF) == recv
    assert granted(frontend.sock, socket.SO_SNDBUF) == send


async def test_zero_keeps_the_systems_size(start_triodist: StartTriodist) -> None:
    t = await start_triodist('newServer("$BACKEND")\nsetUDPSocketBufferSizes(0, 0)\n')
    [frontend] = t.server.udp_frontends
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            assert granted(frontend.sock, option) == granted(fresh, option)


async def test_a_size_over_the_kernels_maximum_is_said(
    start_triodist: StartTriodist, caplog: pytest.LogCaptureFixture
) -> None:
    cap = kernel_max("rmem_max")
    t = await start_triodist(f'newServer("$BACKEND")\nsetUDPSocketBufferSizes({cap + 65536}, 0)\n')
    [frontend] = t.server.udp_frontends
    assert granted(frontend.sock, socket.SO_RCVBUF) == cap
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "setUDPSocketBufferSizes: the receive buffer of the UDP socket on 127.0.0.1:0 is "
        f"{cap} bytes, not the {cap + 65536} asked for: the kernel caps it at "
        "net.core.rmem_max" in w
        for w in warnings
    ), warnings


async def test_at_run_time_it_says_so_and_changes_nothing(
    start_triodist: StartTriodist, capsys: pytest.CaptureFixture[str]
) -> None:
    t = await start_triodist('newServer("$BACKEND")\nsetUDPSocketBufferSizes(300000, 0)\n')
    t.lua.lua.execute("setUDPSocketBufferSizes(500000, 500000)")
    assert "setUDPSocketBufferSizes cannot be used at runtime!" in capsys.readouterr().out
    assert t.server.config.settings.udp_buffer_sizes == (300_000, 0)
    [frontend] = t.server.udp_frontends
    assert granted(frontend.sock, socket.SO_RCVBUF) == 300_000


@pytest.mark.parametrize("value", ["-1", "1.5", "4294967296", '"big"'])
def test_a_size_that_is_not_one_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "rules.lua"
    path.write_text(f"setUDPSocketBufferSizes({value}, 0)\n")
    with pytest.raises(ConfigError, match="setUDPSocketBufferSizes: expected"):
        load_config(path)
