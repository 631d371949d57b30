-- Lua actions, Lua rules and response actions: tagging, answering from Lua,
-- and capping the TTLs that clients see.

setLocal("127.0.0.1:5300")
setACL({"127.0.0.0/8", "::1/128", "192.0.2.0/24"})

newServer({address = "192.0.2.1:53", name = "resolver"})
newServer({address = "192.0.2.2:53", name = "lab", pool = "lab"})

-- A small static table answered from Lua.
local hosts = {
  ["printer.home.example."] = "192.0.2.40",
  ["nas.home.example."] = "192.0.2.41",
}

local function answerHosts(dq)
  local address = hosts[dq.qname:toString():lower()]
  if address ~= nil and dq.qtype == DNSQType.A then
    return DNSAction.Spoof, address
  end
  return DNSAction.None, ""
end
addAction(QNameSuffixRule("home.example."), LuaAction(answerHosts))

-- Tag queries from the lab network and route them to the lab pool.
local function tagLab(dq)
  dq:setTag("origin", "lab")
  return DNSAction.None
end
addAction(NetmaskGroupRule("192.0.2.128/25"), LuaAction(tagLab))
addAction(TagRule("origin", "lab"), PoolAction("lab"))

-- A Lua selector: queries without recursion desired, from outside the loopback.
local function nonRecursive(dq)
  return not dq.dh:getRD() and not dq.remoteaddr:toString():find("^127%.")
end
addAction(LuaRule(nonRecursive), RCodeAction(DNSRCode.REFUSED))

-- Names longer than 200 octets are refused from Lua.
addAction(AllRule(), LuaAction(function(dq)
  if dq.qname:wirelength() > 200 then
    return DNSAction.Refused
  end
  return DNSAction.None
end))

-- Responses: no TTL above one hour or below 30 seconds; AAAA records at most 5 minutes.
addResponseAction(AllRule(), SetMaxTTLResponseAction(3600))
addResponseAction(AllRule(), SetMinTTLResponseAction(30))
addResponseAction(QTypeRule(DNSQType.AAAA), LimitTTLResponseAction(0, 300, {DNSQType.AAAA}))

-- A response rule in Lua: log the resolver's SERVFAILs, then turn them into REFUSED
-- answers for lab clients.
local function watchServfail(dr)
  if dr.rcode == DNSRCode.SERVFAIL then
    warnlog("SERVFAIL for " .. dr.qname:toString() .. " from " .. dr.remoteaddr:toString())
    if dr:getTag("origin") == "lab" then
      dr.rcode = DNSRCode.REFUSED
    end
  end
  return DNSResponseAction.None
end
addResponseAction(RCodeRule(DNSRCode.SERVFAIL), LuaResponseAction(watchServfail))

-- Strip HINFO records from every answer.
addResponseAction(AllRule(), ClearRecordTypesResponseAction({DNSQType.HINFO}))
