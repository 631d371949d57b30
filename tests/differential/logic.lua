-- @describe Combinators and flag selectors: AndRule, OrRule, NotRule, RDRule,
-- @describe TCPRule (true and false), TCAction over UDP and TCP.
-- AndRule{QNameRule, RDRule}
-- @query udp and.example.org A expect=REFUSED
-- @query udp and.example.org A -rd expect=NXDOMAIN
-- OrRule{QTypeRule(MX), QTypeRule(SRV)} under a suffix
-- @query udp or.example.org MX expect=NOTIMP
-- @query udp or.example.org SRV expect=NOTIMP
-- @query udp or.example.org A expect=NXDOMAIN
-- NotRule(TCPRule(true)) = UDP only, TCPRule(false) also UDP
-- @query udp not.example.org A expect=SERVFAIL
-- @query tcp not.example.org A expect=NXDOMAIN
-- @query udp udp.example.org A expect=FORMERR
-- @query tcp udp.example.org A expect=NXDOMAIN
-- TCPRule(true) alone
-- @query tcp tcponly.example.org A expect=REFUSED
-- @query udp tcponly.example.org A expect=NXDOMAIN
-- TCAction: UDP gets TC, TCP is forwarded
-- @query udp tc.example.org A reached=0
-- @query udp tc.example.org A -rd +do
-- @query tcp tc.example.org A reached=1
-- NotRule(RDRule()) as a filter on non-recursive queries
-- @query udp www.example.org A -rd expect=REFUSED
-- @query udp www.example.org A expect=NOERROR
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(AndRule{QNameRule('and.example.org.'), RDRule()}, RCodeAction(DNSRCode.REFUSED))
addAction(AndRule{QNameRule('or.example.org.'), OrRule{QTypeRule(DNSQType.MX), QTypeRule(DNSQType.SRV)}}, RCodeAction(DNSRCode.NOTIMP))
addAction(AndRule{QNameRule('not.example.org.'), NotRule(TCPRule(true))}, RCodeAction(DNSRCode.SERVFAIL))
addAction(AndRule{QNameRule('udp.example.org.'), TCPRule(false)}, RCodeAction(DNSRCode.FORMERR))
addAction(AndRule{QNameRule('tcponly.example.org.'), TCPRule(true)}, RCodeAction(DNSRCode.REFUSED))
addAction('tc.example.org.', TCAction())
addAction(AndRule{QNameRule('www.example.org.'), NotRule(RDRule())}, RCodeAction(DNSRCode.REFUSED))
