-- Scenario configuration for triodist only: forward.triodist.lua (the no-cache scenario),
-- plus every query suspended and sent to an external component (bench/async_responder.py),
-- and resumed when the component answers. dnsdist 1.7.3 has no asynchronous processing
-- (it came in 1.8), so there is no dnsdist counterpart; the comparison is with no-cache.
-- $LISTEN, $BACKEND, $RESPONDER and $LISTENER are filled in by the benchmark.

setSecurityPollSuffix('')

setLocal("$LISTEN")
setACL({"127.0.0.0/8"})

newServer{address="$BACKEND", checkName="bench.test."}

local asyncID = 0
local timeoutMs = 1000
-- A counter, not the DNS ID: dnsperf reuses IDs among the queries in flight, and a key
-- already held refuses the second suspension. A key comes back after 65536 suspensions,
-- long after its 1000 ms at any rate triodist reaches.
local nextQueryID = 0

-- Read by the benchmark (a "counters" datagram on the listening socket, answered in the
-- log): the server's own async-* statistics cannot be read from outside the process.
local suspended, notSuspended, unsent, resumed, late = 0, 0, 0, 0, 0

local responder = newNetworkEndpoint("$RESPONDER")

local function suspendAndSend(dq)
  local queryID = nextQueryID
  nextQueryID = (nextQueryID + 1) % 65536
  if not dq:suspend(asyncID, queryID, timeoutMs) then
    notSuspended = notSuspended + 1  -- a collision, or setMaxSuspended reached
    return DNSAction.None
  end
  suspended = suspended + 1
  local payload = string.char(math.floor(queryID / 256), queryID % 256) .. dq:getContent():sub(3)
  if not responder:send(payload) then
    unsent = unsent + 1  -- the component's queue is full: this query waits for its timeout
  end
  return DNSAction.Allow
end

addAction(AllRule(), LuaAction(suspendAndSend))

local function gotAnswer(endpointID, message, from)
  local queryID = tonumber(message:match("^(%d+) accept$"))
  if queryID == nil then
    if message == "counters" then
      infolog(string.format(
        "async-bench counters: suspended=%d not-suspended=%d unsent=%d resumed=%d late=%d",
        suspended, notSuspended, unsent, resumed, late))
    end
    return
  end
  local ok, obj = pcall(getAsynchronousObject, asyncID, queryID)
  if not ok then
    late = late + 1  -- the query had timed out already
    return
  end
  if obj:resume() then
    resumed = resumed + 1
  end
end

local listener = newNetworkListener()
listener:addUnixListeningEndpoint("$LISTENER", 0, gotAnswer)
listener:start()
