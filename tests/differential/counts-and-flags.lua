-- @describe Selectors on a query's shape and where it arrived (RecordsCountRule,
-- @describe RecordsTypeCountRule, QNameLabelsCountRule, QNameWireLengthRule, DSTPortRule),
-- @describe SetDisableValidationAction (the backend sees CD, the client its own flags,
-- @describe a spoof after it included), SetTempFailureCacheTTLAction and dq.tempFailureTTL
-- @describe against the cache's temporaryFailureTTL, and rules given as newRuleAction values
-- @describe to setRules (which replace those added before).
-- setRules replaced the first addAction: this name is not refused
-- @query udp gone.example.org A expect=NXDOMAIN reached=1
-- an OPT record (+edns) is one record in the additional section: refused
-- @query udp www.example.org A +edns expect=REFUSED reached=0
-- @query tcp www.example.org A +do expect=REFUSED reached=0
-- no OPT: the additional section is empty, the backend answers
-- @query udp www.example.org A expect=NOERROR reached=1
-- two labels or fewer (org., example.org.) or more than four: FORMERR
-- @query udp example.org A expect=FORMERR reached=0
-- @query udp a.b.c.d.example.org A expect=FORMERR reached=0
-- @query udp deep.empty.example.org A expect=NOERROR reached=1
-- a name of 26 bytes or more on the wire: NOTIMP (verylongname.example.org. is 26)
-- @query udp verylongname.example.org A expect=NOTIMP reached=0
-- @query udp mail.example.org A expect=NOERROR reached=1
-- the listener's port, for names under port.example.org
-- @query udp x.port.example.org A expect=SERVFAIL reached=0
-- CD for the backend, not for the client
-- @query udp alias.example.org A reached=1
-- @query tcp alias.example.org A +cd reached=1
-- a spoof after it: the client's flags, RD off
-- @query udp spoof.alias.example.org A -rd reached=0
-- @query udp spoof.alias.example.org A reached=0
-- SERVFAIL cached for 1 s by the action, REFUSED for the cache's 60 s
-- @query udp servfail.example.org A expect=SERVFAIL reached=1
-- @query udp servfail.example.org A expect=SERVFAIL reached=0
-- @query udp refused.example.org A expect=REFUSED reached=1
-- @query udp refused.example.org A expect=REFUSED reached=0
-- @sleep 1.5
-- @query udp servfail.example.org A expect=SERVFAIL reached=1
-- @query udp refused.example.org A expect=REFUSED reached=0
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
pc = newPacketCache(100, {temporaryFailureTTL=60})
getPool(''):setCache(pc)

addAction('gone.example.org.', RCodeAction(DNSRCode.REFUSED))

local port = tonumber(string.match('{{LISTEN}}', ':(%d+)$'))

function shortFailures(dq)
  if dq.tempFailureTTL ~= nil then
    return DNSAction.Spoof, '192.0.2.250'
  end
  dq.tempFailureTTL = 1
  return DNSAction.None, ''
end

setRules({
  newRuleAction(RecordsTypeCountRule(DNSSection.Additional, DNSQType.OPT, 1, 1), RCodeAction(DNSRCode.REFUSED), {name='opt'}),
  newRuleAction(AndRule{NotRule(RecordsCountRule(DNSSection.Additional, 0, 0)), RecordsCountRule(DNSSection.Question, 1, 1)}, DropAction()),
  newRuleAction(QNameLabelsCountRule(3, 4), RCodeAction(DNSRCode.FORMERR)),
  newRuleAction(QNameWireLengthRule(0, 25), RCodeAction(DNSRCode.NOTIMP)),
  newRuleAction(AndRule{DSTPortRule(port), makeRule('port.example.org.')}, RCodeAction(DNSRCode.SERVFAIL)),
  newRuleAction('alias.example.org.', SetDisableValidationAction()),
  newRuleAction('spoof.alias.example.org.', SpoofAction('192.0.2.7')),
  newRuleAction('servfail.example.org.', LuaAction(shortFailures)),
})
