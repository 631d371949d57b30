-- Asynchronous processing: every query waits while an external filter
-- (examples/async_filter.py) decides whether it may go on.
--
-- The protocol, over two unix datagram sockets:
--   triodist -> filter  one datagram per query: the query in DNS wire format,
--                       its ID field replaced by the queryID it is held under;
--   filter -> triodist  one datagram of text "<queryID> <verdict>", verdict being
--                       allow, refuse, nxdomain or drop.
-- A query the filter does not answer within 500 ms goes on unchanged (fail-open).
--
--   python examples/async_filter.py --listen /tmp/triodist-async/filter.sock \
--       --reply /tmp/triodist-async/triodist.sock --rules examples/async-filter.rules
--   triodist serve --config examples/async-filter.lua
--   dig @127.0.0.1 -p 5300 ads.example.org     # status: REFUSED
--
-- The socket paths can be changed; both programs must agree on them.  Their
-- directory is private: whichever program starts first creates it (mode 0700),
-- and both refuse one that another user owns or may write to, since that user
-- could put a socket of theirs in place of either program's.  Both programs
-- must run as the same user (or root): each drops datagrams from anyone else.

setLocal("127.0.0.1:5300")
setACL({"127.0.0.0/8", "::1/128"})
-- A burst of queries must reach triodist whole before it reads them: the kernel's
-- default receive buffer holds 256 small queries and drops the rest.  4 MiB
-- holds a burst of 1,000 (Linux grants at most net.core.rmem_max; a smaller grant is
-- logged as a warning).  docs/explanation/async.md, "Bursts".
setUDPSocketBufferSizes(4194304, 0)

newServer({address = "127.0.0.1:5301", name = "resolver"})

local asyncID = 0           -- all the queries this file suspends share one asyncID
local timeoutMs = 500
-- Set on the queries the filter answered in time; tags carry over to responses,
-- so a response rule can tell them apart: TagRule("filter", "checked").
local filteringTagName = "filter"
local filteringTagValue = "checked"

local filter = newNetworkEndpoint("/tmp/triodist-async/filter.sock")

-- The queryID is a counter rather than the query's own DNS ID: two queries in
-- flight with the same ID (a client can send them on purpose) would collide,
-- and the second one would go on unfiltered.  With a counter, a key comes back
-- only after 65536 suspensions, long after its 500 ms are over.
local nextQueryID = 0

local function passQueryToAsyncFilter(dq)
  local queryID = nextQueryID
  nextQueryID = (nextQueryID + 1) % 65536
  if not dq:suspend(asyncID, queryID, timeoutMs) then
    -- Not held (too many queries suspended, or this key still held): go on
    -- without the filter.
    return DNSAction.None
  end
  local payload = string.char(math.floor(queryID / 256), queryID % 256) .. dq:getContent():sub(3)
  -- If the filter is behind, the message waits in the endpoint's queue until it
  -- reads (docs/explanation/async.md, "Bursts"); if the filter is not running, or the queue is
  -- full, send() returns false and the query goes on when its 500 ms are over.
  filter:send(payload)
  -- When the query is resumed, it goes on as if this action had just returned
  -- Allow: no further rule, then the cache and the backend.
  return DNSAction.Allow
end

-- Responses are not sent to the filter: it judges names, and a response has the
-- same name as its query.  (dr:suspend() in a LuaResponseAction works the same way.)
addAction(AllRule(), LuaAction(passQueryToAsyncFilter))

local rcodes = {refuse = DNSRCode.REFUSED, nxdomain = DNSRCode.NXDOMAIN}

-- Defined before it is passed to addUnixListeningEndpoint below.  dnsdist's own
-- example passes gotAsyncResponse first and defines it afterwards: the value
-- passed is then nil (a global that does not exist yet), so no answer would
-- ever be handled; triodist stops such a configuration with an error.
local function gotAsyncResponse(endpointID, message, from)
  local id, verdict = message:match("^(%d+) (%a+)%s*$")
  local queryID = tonumber(id)
  if queryID == nil or queryID > 65535
      or (verdict ~= "allow" and verdict ~= "drop" and rcodes[verdict] == nil) then
    warnlog("async filter: ignoring malformed answer '" .. message:sub(1, 40) .. "'")
    return
  end
  -- The query may have timed out already: getAsynchronousObject is then an error.
  local ok, asyncObject = pcall(getAsynchronousObject, asyncID, queryID)
  if not ok then
    warnlog("async filter: answer '" .. message .. "' came too late: " .. tostring(asyncObject))
    return
  end
  if verdict == "drop" then
    asyncObject:drop()
    return
  end
  asyncObject:getDQ():setTag(filteringTagName, filteringTagValue)
  if verdict ~= "allow" then
    asyncObject:setRCode(rcodes[verdict], true)  -- true: no records in the answer
  end
  asyncObject:resume()
end

local listener = newNetworkListener()
listener:addUnixListeningEndpoint("/tmp/triodist-async/triodist.sock", 0, gotAsyncResponse)
listener:start()
