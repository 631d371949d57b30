-- A production rules.lua, and its tests beside it (test_rules.py): run `pytest` here.
--
-- Two resolvers, the second used while the first is down; an ad domain refused;
-- answers cached; and every name outside our own zone checked by a filter, an
-- outside program over unix sockets, which answers "<queryID> allow" or
-- "<queryID> block" (block: NXDOMAIN). A name it does not answer within 500 ms
-- goes on unchecked (fail-open).

setLocal("0.0.0.0:53")
setACL({"127.0.0.0/8", "::1/128"})

newServer({address = "192.0.2.1:53", name = "resolver1", order = 1})
newServer({address = "192.0.2.2:53", name = "resolver2", order = 2})
setServerPolicy(firstAvailable)

getPool(""):setCache(newPacketCache(10000))

addAction(QNameRule("ads.example.org."), RCodeAction(DNSRCode.REFUSED))

-- The filter.
local asyncID = 0
local filter = newNetworkEndpoint("/run/triodist/filter.sock")

local function gotVerdict(endpointID, message, from)
  local queryID, verdict = message:match("^(%d+) (%a+)$")
  if queryID == nil then
    return
  end
  local ok, held = pcall(getAsynchronousObject, asyncID, tonumber(queryID))
  if not ok then
    return -- timed out already, or a verdict for no query of ours
  end
  if verdict == "block" then
    held:setRCode(DNSRCode.NXDOMAIN, true)
  end
  held:resume()
end

local verdicts = newNetworkListener()
verdicts:addUnixListeningEndpoint("/run/triodist/verdicts.sock", 0, gotVerdict)
verdicts:start()

-- Held under a counter, not the query's own ID, which two clients may share.
local nextQueryID = 0

local function check(dq)
  local queryID = nextQueryID
  nextQueryID = (nextQueryID + 1) % 65536
  if not dq:suspend(asyncID, queryID, 500) then
    return DNSAction.None -- too many held: goes on unchecked
  end
  local payload = string.char(math.floor(queryID / 256), queryID % 256) .. dq:getContent():sub(3)
  filter:send(payload)
  return DNSAction.None
end

addAction(NotRule(QNameSuffixRule("example.org.")), LuaAction(check))
