-- Scenario configuration for dnsdist: forward.dnsdist.lua (the no-cache scenario) plus a
-- Lua rule on every query that does nothing: what running Lua on each query costs.
-- $LISTEN and $BACKEND are filled in by the benchmark (bench/proxies.py).

setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

newServer{address="$BACKEND", checkName="bench.test."}

addAction(AllRule(), LuaAction(function(dq) return DNSAction.None, "" end))
