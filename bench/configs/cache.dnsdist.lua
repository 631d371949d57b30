-- Scenario configuration for dnsdist: one backend, a packet cache on the default pool.
-- $LISTEN and $BACKEND are filled in by the benchmark (bench/proxies.py).

-- No security polling: the benchmark talks to loopback only.
setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

-- The health check asks for a name inside the benchmark zone, which the backend answers
-- NOERROR (the default check name is outside it and would be refused).
newServer{address="$BACKEND", checkName="bench.test."}

pc = newPacketCache(100000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60, dontAge=false})
getPool(""):setCache(pc)
