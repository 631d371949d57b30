"""No setting that matters for security is accepted without a word.

Each dnsdist name that changes who may query, what is blocked or throttled, what is
encrypted or authenticated, or what reaches a backend or a client either works in
triodist or warns when a configuration uses it, saying what does not happen
(``triodist/config/unsupported.py`` gives the decision for each name).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_cli import triodist_cli, write
from test_config_compat import implemented

from triodist.config.api import ConfigAPI
from triodist.config.dnsdist_names import DNSDIST_GLOBALS
from triodist.config.unsupported import NOT_LISTENING, QUIET_TUNABLES, SECURITY_NOT_YET

#: The names weighed for security: each must work or warn.
SECURITY_RELEVANT = {
    # who may query, and the console
    "setACL",
    "addACL",
    "rmACL",
    "setACLFromFile",
    "setConsoleACL",
    "addConsoleACL",
    "setKey",
    "controlSocket",
    "setProxyProtocolACL",
    "setProxyProtocolApplyACLToProxiedClients",
    "setProxyProtocolMaximumPayloadSize",
    # what is blocked or throttled
    "addDynBlocks",
    "addDynamicBlock",
    "addDynBlockSMT",
    "dynBlockRulesGroup",
    "setDynBlocksAction",
    "setDynBlocksPurgeInterval",
    "exceedNXDOMAINs",
    "exceedQRate",
    "exceedQTypeRate",
    "exceedRespByterate",
    "exceedServFails",
    "newBPFFilter",
    "newDynBPFFilter",
    "addBPFFilterDynBlocks",
    "registerDynBPFFilter",
    "unregisterDynBPFFilter",
    "setDefaultBPFFilter",
    "setMaxTCPConnectionRatePerClient",
    "setMaxTCPConnectionsPerClient",
    "setMaxTLSNewSessionRatePerClient",
    "setMaxTLSResumedSessionRatePerClient",
    "setTCPConnectionsOverloadThreshold",
    # listeners, encryption, the web server
    "addTLSLocal",
    "addDOHLocal",
    "addDOQLocal",
    "addDOH3Local",
    "addDNSCryptBind",
    "webserver",
    "setWebserverConfig",
    "setAPIWritable",
    "registerWebHandler",
    # what reaches a backend or a client
    "setRandomizedIdsOverUDP",
    "setRandomizedOutgoingSockets",
    "setDropEmptyQueries",
    "setAllowEmptyResponse",
    # what the process may do once running
    "addCapabilitiesToRetain",
}


def test_every_security_relevant_name_works_or_warns() -> None:
    assert SECURITY_RELEVANT <= DNSDIST_GLOBALS
    working = implemented()
    quiet = sorted(n for n in SECURITY_RELEVANT - working if n in QUIET_TUNABLES)
    assert not quiet, f"accepted quietly: {quiet}"
    unexplained = sorted(
        n for n in SECURITY_RELEVANT - working if n not in SECURITY_NOT_YET | NOT_LISTENING.keys()
    )
    assert not unexplained, f"warn without saying what does not happen: {unexplained}"
    # And what is said to be missing is missing, and not quiet.
    assert not (SECURITY_NOT_YET.keys() | NOT_LISTENING.keys()) & (working | QUIET_TUNABLES)


@pytest.mark.parametrize("name", sorted(SECURITY_NOT_YET))
def test_a_missing_protection_says_what_does_not_happen(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = ConfigAPI()
    with caplog.at_level(logging.WARNING):
        api.functions()[name]("arg")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert messages == [
        f"{name}: not supported by triodist yet, ignored",
        f"{name}: {SECURITY_NOT_YET[name]}",
    ]


async def test_check_config_names_what_a_configuration_loses(tmp_path: Path) -> None:
    # The real command line: the configuration is accepted (as dnsdist accepts it) and the
    # log says, for each protection it asks for and does not get, what does not happen.
    config = write(
        tmp_path / "rules.lua",
        """
        setRandomizedIdsOverUDP(true)
        setRandomizedOutgoingSockets(true)
        newServer{address="192.0.2.1:53", sockets=8}
        setSecurityPollSuffix("")
        addDynBlocks(getDynamicBlocks(), "blocked", 60)
        rmACL("192.0.2.0/24")
        addDOHLocal("127.0.0.1:8443", "cert.pem", "key.pem")
        webserver("127.0.0.1:8083")
        setSecurityPollSuffix("secpoll.example.")
        addLocal("127.0.0.1:5301", {interface="eth1"})
        """,
    )
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    log = result.stderr.decode()
    for expected in (
        "addDynBlocks: no client is blocked",
        "rmACL: the netmask stays in the ACL",
        "addDOHLocal: DNS over HTTPS is not supported by triodist yet: nothing listens on "
        "127.0.0.1:8443",
        "webserver: triodist has no web server or API yet: nothing listens on 127.0.0.1:8083",
        "setSecurityPollSuffix: not supported by triodist yet, ignored",
        "addLocal: option 'interface' not supported by triodist yet, ignored: 127.0.0.1:5301 "
        "is listened on from every interface",
    ):
        assert expected in log, log
    for implemented_now in ("setRandomizedIdsOverUDP", "setRandomizedOutgoingSockets", "sockets"):
        assert implemented_now not in log, log


async def test_check_config_says_what_does_nothing_without_another_setting(
    tmp_path: Path,
) -> None:
    # Random outgoing sockets with one socket per server: the backend still sees one
    # source port, whichever comes first in the file; a capability to keep: none is kept.
    setting, server = "setRandomizedOutgoingSockets(true)", "newServer('192.0.2.1:53')"
    for first, then in ((setting, server), (server, setting)):
        text = f"{first}\n{then}\naddCapabilitiesToRetain({{'CAP_BPF'}})\n"
        config = write(tmp_path / "rules.lua", text)
        result = await triodist_cli("check-config", "--config", str(config))
        assert result.returncode == 0, result.stderr
        log = result.stderr.decode()
        assert "setRandomizedOutgoingSockets(true): no server has more than one socket" in log
        assert "sockets=N" in log, log
        assert "addCapabilitiesToRetain: no capability is kept" in log, log
        out = result.stdout.decode()
        assert "loads, but" in out and "setRandomizedOutgoingSockets" in out, out
    # With a pool of sockets it does what it says: no warning.
    config = write(
        tmp_path / "rules.lua",
        "setRandomizedOutgoingSockets(true)\nnewServer{address='192.0.2.1:53', sockets=2}\n",
    )
    result = await triodist_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert b"setRandomizedOutgoingSockets" not in result.stderr + result.stdout
