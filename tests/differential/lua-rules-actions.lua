-- @describe LuaRule and LuaAction: verdicts with and without the second value
-- @describe (Spoof with an address, Pool with a name, Nxdomain, Refused, ServFail,
-- @describe Drop, Truncate, Allow, None, HeaderModify, NoRecurse).
-- @query udp lua.example.org A expect=REFUSED
-- @query udp deep.lua.example.org A expect=REFUSED
-- @query udp nolua.example.org A expect=NXDOMAIN
-- @query udp spoof.la.example.org A expect=NOERROR reached=0
-- @query tcp spoof.la.example.org A +do
-- @query udp spoof.la.example.org AAAA
-- @query udp spoof6.la.example.org AAAA
-- @query udp pool.la.example.org A reached=1
-- @query udp nx.la.example.org A expect=NXDOMAIN reached=0
-- @query udp refused.la.example.org A expect=REFUSED
-- @query udp servfail.la.example.org A expect=SERVFAIL
-- @query udp drop.la.example.org A expect=drop reached=0
-- @query udp tc.la.example.org A reached=0
-- @query tcp tc.la.example.org A
-- @query udp allow.la.example.org A expect=NXDOMAIN reached=1
-- @query udp none.la.example.org A expect=SERVFAIL
-- @query udp header.la.example.org A -rd reached=0
-- @query udp norecurse.la.example.org A reached=1
-- @query udp www.example.org A expect=NOERROR
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
newServer{address='{{BACKEND_B}}', pool='b'}

local luazone = newDNSName('lua.example.org.')
addAction(LuaRule(function(dq) return dq.qname:isPartOf(luazone) end), RCodeAction(DNSRCode.REFUSED))

local verdicts = {
  ['spoof.la.example.org.'] = function(dq) return DNSAction.Spoof, '192.0.2.42' end,
  ['spoof6.la.example.org.'] = function(dq) return DNSAction.Spoof, '2001:db8::42' end,
  ['pool.la.example.org.'] = function(dq) return DNSAction.Pool, 'b' end,
  ['nx.la.example.org.'] = function(dq) return DNSAction.Nxdomain end,
  ['refused.la.example.org.'] = function(dq) return DNSAction.Refused end,
  ['servfail.la.example.org.'] = function(dq) return DNSAction.ServFail end,
  ['drop.la.example.org.'] = function(dq) return DNSAction.Drop end,
  ['tc.la.example.org.'] = function(dq) return DNSAction.Truncate end,
  ['allow.la.example.org.'] = function(dq) return DNSAction.Allow, '' end,
  ['none.la.example.org.'] = function(dq) return DNSAction.None end,
  ['header.la.example.org.'] = function(dq)
    dq.dh:setQR(true)
    dq.rcode = DNSRCode.NOTAUTH
    return DNSAction.HeaderModify
  end,
  ['norecurse.la.example.org.'] = function(dq) return DNSAction.NoRecurse end,
}

addAction(AllRule(), LuaAction(function(dq)
  local f = verdicts[dq.qname:toString()]
  if f == nil then
    return DNSAction.None, ''
  end
  return f(dq)
end))
addAction('none.la.example.org.', RCodeAction(DNSRCode.SERVFAIL))
addAction('allow.la.example.org.', RCodeAction(DNSRCode.SERVFAIL))
