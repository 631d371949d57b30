-- Scenario configuration for triodist: the same as forward.dnsdist.lua, line for line.
-- $LISTEN and $BACKEND are filled in by the benchmark (bench/proxies.py).

setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

newServer{address="$BACKEND", checkName="bench.test."}
