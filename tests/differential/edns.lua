-- @describe EDNS: the OPT record of answers the server makes itself (payload size from
-- @describe setPayloadSizeOnSelfGeneratedAnswers, the query's DO bit, no options, none without
-- @describe EDNS), ERCodeAction, NegativeAndSOAAction, ERCodeRule on responses, EDNSOptionRule and
-- @describe EDNSVersionRule on queries that do not match them, SetEDNSOptionAction (an answer to a
-- @describe query without EDNS has none), dq:getEDNSOptions() on queries without options.
-- @query udp refused.edns.example.org A payload=4096 expect=REFUSED reached=0
-- @query tcp refused.edns.example.org A +do payload=4096 expect=REFUSED
-- @query udp refused.edns.example.org A -rd expect=REFUSED
-- @query udp spoof.edns.example.org A +do payload=512 expect=NOERROR reached=0
-- @query tcp spoof.edns.example.org A payload=4096 expect=NOERROR
-- @query udp tc.edns.example.org A +do payload=4096 expect=NOERROR reached=0
-- @query udp badvers.edns.example.org A +edns expect=BADVERS
-- @query tcp badvers.edns.example.org A expect=NOERROR
-- @query udp nxd.soa.edns.example.org A +do expect=NXDOMAIN
-- @query tcp nodata.soa.edns.example.org A payload=4096 expect=NOERROR
-- @query udp nodata.soa.edns.example.org A expect=NOERROR
-- @query udp www.example.org A +do payload=4096 expect=NOERROR reached=1
-- @query udp option.edns.example.org A reached=1
-- @query tcp option.edns.example.org A +do reached=1
-- @query udp option.edns.example.org A +edns reached=1
-- @query udp lua.edns.example.org A expect=NOERROR reached=0
-- @query udp lua.edns.example.org A +do payload=4096 expect=NOERROR reached=0
-- @query udp nosuch.ercode.edns.example.org A +edns expect=drop reached=1
-- @query udp nosuch.ercode.edns.example.org A expect=NXDOMAIN reached=1
-- @query udp www.example.org A +edns reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
setPayloadSizeOnSelfGeneratedAnswers(1400)

addAction(EDNSOptionRule(EDNSOptionCode.COOKIE), DropAction())
addAction(EDNSVersionRule(0), DropAction())
addAction('refused.edns.example.org.', RCodeAction(DNSRCode.REFUSED))
addAction('spoof.edns.example.org.', SpoofAction({'192.0.2.1', '192.0.2.2'}))
addAction('tc.edns.example.org.', TCAction())
addAction('badvers.edns.example.org.', ERCodeAction(DNSRCode.BADVERS))
addAction('nxd.soa.edns.example.org.', NegativeAndSOAAction(true, 'example.org.', 42, 'ns1.example.org.', 'hostmaster.example.org.', 1, 2, 3, 4, 5))
addAction('nodata.soa.edns.example.org.', NegativeAndSOAAction(false, 'example.org.', 42, 'ns1.example.org.', 'hostmaster.example.org.', 1, 2, 3, 4, 5))
addAction('option.edns.example.org.', SetEDNSOptionAction(EDNSOptionCode.COOKIE, 'deadbeefdeadc0de'))

function countOptions(dq)
  local options = dq:getEDNSOptions()
  if next(options) == nil then
    return DNSAction.Spoof, '192.0.2.10'
  end
  return DNSAction.Spoof, '192.0.2.11'
end
addAction('lua.edns.example.org.', LuaAction(countOptions))

-- NXDOMAIN with an OPT record (extended bits 0) is dropped; without EDNS it is not NXDOMAIN
-- for ERCodeRule, and passes.
addResponseAction(AndRule{makeRule('ercode.edns.example.org.'), ERCodeRule(DNSRCode.NXDOMAIN)}, DropResponseAction())
