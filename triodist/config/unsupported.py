"""What triodist does with the dnsdist names it does not support yet, when a
configuration uses one (each is a placeholder: config/bindings/notyet.py):

* ``QUIET_TUNABLES``: setters and tunables that have no observable effect on a Python
  proxy (thread counts, buffer and ring sizes, kernel tuning, SNMP, carbon,
  connection-pool housekeeping and similar), so they can be accepted without comment.
  Each was weighed for security: none of them changes who may query, what is blocked or
  throttled, what is encrypted or authenticated, or what reaches a backend or a client
  (the comments say why for each group).
* ``QUIET_WITH``: quiet tunables that are quiet only with the one value that asks for
  what triodist does anyway; any other value warns.
* ``SECURITY_NOT_YET`` and ``NOT_LISTENING``: names not implemented yet that matter for
  security. Each warns like any name not implemented, and then says what does not
  happen (``NOT_LISTENING``: which listener is not opened, logged as an error). Dynamic
  blocks warn so until they exist.

The names themselves are dnsdist's (``dnsdist_names.py``). Imports nothing.
"""

from __future__ import annotations

__all__ = [
    "NOT_LISTENING",
    "QUIET_TUNABLES",
    "QUIET_WITH",
    "SECURITY_NOT_YET",
]

QUIET_TUNABLES: frozenset[str] = frozenset(
    {
        # Threads, pipes, queues and buffers: triodist runs one thread per process, has
        # no pipes, drains each socket at every wake-up (no recvmmsg vector), and bounds
        # TCP connections with setMaxTCPConnections instead of a queue of accepted ones.
        "setMaxTCPClientThreads",
        "setMaxTCPQueuedConnections",
        "setOutgoingDoHWorkerThreads",
        "setRingBuffersLockRetries",
        "setRingBuffersOptions",
        "setTCPInternalPipeBufferSize",
        "setTCPUseSinglePipe",
        "setUDPMultipleMessagesVectorSize",
        # Housekeeping of connections to backends (the idle TCP ones kept are bounded,
        # MAX_IDLE_TCP) and of outgoing TLS and DoH, which warn where a server asks for them.
        "setDoHDownstreamCleanupInterval",
        "setDoHDownstreamMaxIdleTime",
        "setMaxCachedTCPConnectionsPerDownstream",
        "setMaxIdleDoHConnectionsPerDownstream",
        "setOutgoingTLSSessionsCacheCleanupDelay",
        "setOutgoingTLSSessionsCacheMaxTicketValidity",
        "setOutgoingTLSSessionsCacheMaxTicketsPerBackend",
        "setTCPDownstreamCleanupInterval",
        "setTCPDownstreamMaxIdleTime",
        # TLS engines and providers, the TCP Fast Open key: triodist has no TLS (every TLS
        # listener and option warns) and does not turn TCP Fast Open on.
        "loadTLSEngine",
        "loadTLSProvider",
        "setTCPFastOpenKey",
        # Monitoring and log output: what is reported, not what is served.
        "carbonServer",
        "sendCustomTrap",
        "setOpenTelemetryInternalTrace",
        "setQueryCount",
        "setQueryCountFilter",
        "setStructuredLogging",
        "setSyslogFacility",
        "setVerboseHealthChecks",
        "snmpAgent",
        # Security polling (a DNS lookup of the version's status): triodist never polls, so
        # setSecurityPollSuffix("") (off) asks for what it does; another suffix warns.
        "setSecurityPollInterval",
        "setSecurityPollSuffix",
        # The console's own settings, implemented (config/bindings/console.py).
        "setConsoleConnectionsLogging",
        "setConsoleMaximumConcurrentConnections",
        "setConsoleOutputMaxMsgSize",
    }
)

#: Quiet tunables that are quiet with this first argument only (see the module's text).
QUIET_WITH: dict[str, object] = {
    "setSecurityPollSuffix": "",
}

_NOTHING_BLOCKED = (
    "no client is blocked: dynamic blocks and eBPF filters do not exist in triodist yet"
)
_NOTHING_THROTTLED = (
    "no client is throttled or banned for its connection or read rate "
    "(setMaxTCPConnectionsPerClient and the TCP bounds do hold)"
)
_NO_PROXY_PROTOCOL = (
    "triodist reads no proxy protocol header: a query carrying one is dropped as malformed"
)
_NO_WEB_SERVER = (
    "triodist has no web server or API yet: nothing listens, and nothing it would protect exists"
)

#: Not implemented yet, and a configuration that relies on them loses a protection:
#: after the usual warning, the reason (see the module's text).
SECURITY_NOT_YET: dict[str, str] = {
    # Dynamic blocks and eBPF: warn until they exist.
    "addBPFFilterDynBlocks": _NOTHING_BLOCKED,
    "addDynBlockSMT": _NOTHING_BLOCKED,
    "addDynBlocks": _NOTHING_BLOCKED,
    "addDynamicBlock": _NOTHING_BLOCKED,
    "dynBlockRulesGroup": _NOTHING_BLOCKED,
    "exceedNXDOMAINs": _NOTHING_BLOCKED,
    "exceedQRate": _NOTHING_BLOCKED,
    "exceedQTypeRate": _NOTHING_BLOCKED,
    "exceedRespByterate": _NOTHING_BLOCKED,
    "exceedServFails": _NOTHING_BLOCKED,
    "newBPFFilter": _NOTHING_BLOCKED,
    "newDynBPFFilter": _NOTHING_BLOCKED,
    "registerDynBPFFilter": _NOTHING_BLOCKED,
    "setDefaultBPFFilter": _NOTHING_BLOCKED,
    "setDynBlocksAction": _NOTHING_BLOCKED,
    "setDynBlocksPurgeInterval": _NOTHING_BLOCKED,
    "unregisterDynBPFFilter": _NOTHING_BLOCKED,
    # Connection and TLS session rates per client.
    "setBanDurationForExceedingMaxReadIOsPerQuery": _NOTHING_THROTTLED,
    "setBanDurationForExceedingTCPTLSRate": _NOTHING_THROTTLED,
    "setMaxTCPConnectionRatePerClient": _NOTHING_THROTTLED,
    "setMaxTCPReadIOsPerQuery": _NOTHING_THROTTLED,
    "setMaxTLSNewSessionRatePerClient": _NOTHING_THROTTLED,
    "setMaxTLSResumedSessionRatePerClient": _NOTHING_THROTTLED,
    "setTCPConnectionRateInterval": _NOTHING_THROTTLED,
    "setTCPConnectionsMaskV4": _NOTHING_THROTTLED,
    "setTCPConnectionsMaskV4Port": _NOTHING_THROTTLED,
    "setTCPConnectionsMaskV6": _NOTHING_THROTTLED,
    "setTCPConnectionsOverloadThreshold": _NOTHING_THROTTLED,
    # Capabilities: serve -u/-g drops every one (and without -u the process keeps all
    # of root's), so a configuration counting on one kept after the drop loses it.
    "addCapabilitiesToRetain": (
        "no capability is kept: serve -u/-g drops them all once everything is bound"
    ),
    # Who may query.
    "rmACL": "the netmask stays in the ACL",
    "setACLFromFile": "the ACL is not read from the file: the ACL set so far is in force",
    "setProxyProtocolACL": _NO_PROXY_PROTOCOL,
    "setProxyProtocolApplyACLToProxiedClients": _NO_PROXY_PROTOCOL,
    "setProxyProtocolMaximumPayloadSize": _NO_PROXY_PROTOCOL,
    # The web server's protections, for a web server that does not exist.
    "registerWebHandler": _NO_WEB_SERVER,
    "setAPIWritable": _NO_WEB_SERVER,
    "setWebserverConfig": _NO_WEB_SERVER,
}

#: Listeners not implemented yet: after the usual warning, an error naming the address
#: nobody listens on (``webserver`` included: no web server exists).
NOT_LISTENING: dict[str, str] = {
    "addDNSCryptBind": "DNSCrypt is not supported by triodist yet",
    "addDOH3Local": "DNS over HTTP/3 is not supported by triodist yet",
    "addDOHLocal": "DNS over HTTPS is not supported by triodist yet",
    "addDOQLocal": "DNS over QUIC is not supported by triodist yet",
    "webserver": "triodist has no web server or API yet",
}
