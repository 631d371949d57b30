-- Scenario configuration for triodist: the same as lua.dnsdist.lua, line for line.
-- forward.triodist.lua plus a Lua rule on every query that does nothing.
-- $LISTEN and $BACKEND are filled in by the benchmark (bench/proxies.py).

setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

newServer{address="$BACKEND", checkName="bench.test."}

addAction(AllRule(), LuaAction(function(dq) return DNSAction.None, "" end))
