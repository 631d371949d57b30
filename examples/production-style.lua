-- A configuration in the style of those running in production with dnsdist:
-- encrypted listeners, a packet cache, the web server and console, health
-- checks, dynamic blocks.  Some of that is not in triodist yet: this file
-- loads, and each such function or option is reported once with a warning
-- ("...: not supported by triodist yet, ignored") and has no effect.  The
-- plain DNS listeners, the ACL, the servers and their health checks, the
-- pools, the packet cache and the rules work.

-- Listeners: plain DNS works; DNS over TLS and over HTTPS are ignored for now.
setLocal("127.0.0.1:5300", {reusePort = true})
addLocal("[::1]:5300", {reusePort = true, tcpFastOpenQueueSize = 64})
addTLSLocal("127.0.0.1:8853", "/etc/dnsdist/cert.pem", "/etc/dnsdist/key.pem",
            {reusePort = true, minTLSVersion = "tls1.2"})
addDOHLocal("127.0.0.1:8443", "/etc/dnsdist/cert.pem", "/etc/dnsdist/key.pem", "/dns-query",
            {reusePort = true, customResponseHeaders = {["x-served-by"] = "edge1"}})

setACL({"127.0.0.0/8", "::1/128"})
addACL("192.0.2.0/24")

-- Console and web server (not yet).
controlSocket("127.0.0.1:5199")
setKey("MXNeLFWHUe4363BBKrY06cAsH8NWNb+Se2eXU5+Bb74=")
setConsoleACL({"127.0.0.1/32"})
webserver("127.0.0.1:8083")
setWebserverConfig({password = "change-me", apiKey = "change-me-too", acl = "127.0.0.1/32"})

-- Tunables that mean nothing to triodist are accepted quietly.
setMaxUDPOutstanding(65535)
setMaxTCPClientThreads(10)
setRingBuffersSize(100000)
setSecurityPollSuffix("")
setVerboseHealthChecks(true)

-- Backends, with health-check options (honoured) and TLS options (not yet).
newServer({address = "192.0.2.1:53", name = "resolver1", pool = "", checkInterval = 10,
           checkName = "health.example.", checkType = "A", mustResolve = true,
           maxCheckFailures = 3, useClientSubnet = false})
newServer({address = "192.0.2.2:853", name = "resolver2-dot", tls = "openssl",
           subjectName = "resolver.example", validateCertificates = true})
newServer({address = "192.0.2.3:53", name = "internal", pool = "internal", order = 1})
setServerPolicy(leastOutstanding)

-- Packet cache on the default pool.
local pc = newPacketCache(100000, {maxTTL = 86400, minTTL = 0, temporaryFailureTTL = 60,
                                   staleTTL = 60, dontAge = false})
getPool(""):setCache(pc)

-- Client subnet (not yet).
setECSSourcePrefixV4(24)
setECSSourcePrefixV6(56)

-- Rules.
addAction(QNameSuffixRule("corp.example."), PoolAction("internal"))
addAction(AndRule({MaxQPSIPRule(100, 32, 64), NotRule(NetmaskGroupRule("127.0.0.0/8"))}),
          DropAction())
addAction(QTypeRule(DNSQType.ANY), RCodeAction(DNSRCode.REFUSED))
addResponseAction(AllRule(), SetMaxTTLResponseAction(86400))

-- Dynamic blocks, applied every second from maintenance() (not yet: apply() does nothing).
local dbr = dynBlockRulesGroup()
dbr:setQueryRate(300, 10, "Exceeded query rate", 60)
dbr:setRCodeRate(DNSRCode.NXDOMAIN, 50, 10, "Exceeded NXD rate", 60)
dbr:setQTypeRate(DNSQType.ANY, 5, 10, "Exceeded ANY rate", 60)
dbr:setResponseByteRate(100000, 10, "Exceeded resp BW rate", 60)

function maintenance()
  dbr:apply()
end

infolog("configuration loaded")
