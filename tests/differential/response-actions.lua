-- @describe Response rules: AllowResponseAction (stops the response rules),
-- @describe DropResponseAction, DelayResponseAction, LuaResponseAction verdicts
-- @describe (None, Drop, ServFail, HeaderModify, Allow), selectors on the answer's name.
-- @query udp www.example.org A expect=NOERROR reached=1
-- @query udp mail.example.org A expect=drop reached=1
-- @query tcp mail.example.org A expect=drop reached=1
-- @query udp mail.example.org AAAA expect=NOERROR
-- @query udp allowed.mail.example.org A expect=NXDOMAIN
-- @query udp slow.resp.example.org A mindelay=0.25 expect=NXDOMAIN
-- @query tcp slow.resp.example.org A maxdelay=0.2 expect=NXDOMAIN
-- @query udp lua-drop.example.org A expect=drop reached=1
-- @query udp lua-servfail.example.org A expect=SERVFAIL reached=1
-- @query tcp lua-servfail.example.org A +do expect=SERVFAIL
-- @query udp lua-header.example.org A expect=NXDOMAIN
-- @query udp lua-none.example.org A expect=REFUSED
-- @query udp lua-allow.example.org A expect=NXDOMAIN
-- @query udp txt.example.org TXT
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addResponseAction('allowed.mail.example.org.', AllowResponseAction())
addResponseAction(AndRule{QNameRule('mail.example.org.'), QTypeRule(DNSQType.A)}, DropResponseAction())
addResponseAction('allowed.mail.example.org.', DropResponseAction())
addResponseAction('slow.resp.example.org.', DelayResponseAction(300))

addResponseAction('lua-drop.example.org.', LuaResponseAction(function(dr) return DNSResponseAction.Drop end))
addResponseAction('lua-servfail.example.org.', LuaResponseAction(function(dr) return DNSResponseAction.ServFail end))
addResponseAction('lua-header.example.org.', LuaResponseAction(function(dr)
  dr.dh:setAA(false)
  dr.dh:setRA(true)
  dr.dh:setAD(true)
  return DNSResponseAction.HeaderModify
end))
addResponseAction('lua-none.example.org.', LuaResponseAction(function(dr) return DNSResponseAction.None, '' end))
addResponseAction('lua-none.example.org.', LuaResponseAction(function(dr)
  dr.rcode = DNSRCode.REFUSED
  return DNSResponseAction.HeaderModify
end))
addResponseAction('lua-allow.example.org.', LuaResponseAction(function(dr) return DNSResponseAction.Allow end))
addResponseAction('lua-allow.example.org.', DropResponseAction())
