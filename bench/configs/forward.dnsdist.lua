-- Scenario configuration for dnsdist: plain forwarding to one backend, no cache.
-- $LISTEN and $BACKEND are filled in by the benchmark (bench/proxies.py).

setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

newServer{address="$BACKEND", checkName="bench.test."}
