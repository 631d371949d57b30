-- Scenario configuration for triodist: the same as cache.dnsdist.lua, line for line.
-- $LISTEN and $BACKEND are filled in by the benchmark (bench/proxies.py).

setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

newServer{address="$BACKEND", checkName="bench.test."}

pc = newPacketCache(100000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60, dontAge=false})
getPool(""):setCache(pc)
