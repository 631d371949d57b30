-- @describe addSelfAnsweredResponseAction: rules for the answers the server makes
-- @describe itself (spoofs, RCodeAction, TCAction), and which do not apply to
-- @describe forwarded answers; ordinary response rules do not see self answers.
-- @query udp spoof.self.example.org A expect=drop reached=0
-- @query tcp spoof.self.example.org A expect=drop
-- @query udp keep.self.example.org A expect=NOERROR
-- @query udp rc.self.example.org A expect=SERVFAIL
-- @query udp slow.self.example.org A mindelay=0.25 expect=NOERROR
-- @query udp lua.self.example.org A expect=REFUSED
-- @query udp www.example.org A expect=NOERROR reached=1
-- @query udp forwarded.self.example.org A expect=NXDOMAIN reached=1
-- @query udp tc.self.example.org A expect=drop
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction('spoof.self.example.org.', SpoofAction('192.0.2.21'))
addAction('keep.self.example.org.', SpoofAction('192.0.2.22'))
addAction('rc.self.example.org.', RCodeAction(DNSRCode.NXDOMAIN))
addAction('slow.self.example.org.', SpoofAction('192.0.2.23'))
addAction('lua.self.example.org.', SpoofAction('192.0.2.24'))
addAction('tc.self.example.org.', TCAction())

addSelfAnsweredResponseAction('spoof.self.example.org.', DropResponseAction())
addSelfAnsweredResponseAction('rc.self.example.org.', LuaResponseAction(function(dr)
  dr.rcode = DNSRCode.SERVFAIL
  return DNSResponseAction.HeaderModify
end))
addSelfAnsweredResponseAction('slow.self.example.org.', DelayResponseAction(300))
addSelfAnsweredResponseAction('lua.self.example.org.', LuaResponseAction(function(dr)
  dr.rcode = DNSRCode.REFUSED
  return DNSResponseAction.None
end))
addSelfAnsweredResponseAction('forwarded.self.example.org.', DropResponseAction())
addSelfAnsweredResponseAction('tc.self.example.org.', DropResponseAction())
-- ordinary response rules see forwarded answers only
addResponseAction('keep.self.example.org.', DropResponseAction())
addResponseAction('www.example.org.', SetTagResponseAction('seen', 'yes'))
