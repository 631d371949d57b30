-- @describe Rate limits: MaxQPSIPRule (per client address, matches above the rate),
-- @describe MaxQPSRule (matches while under the rate), QPSAction (drops above the rate).
-- @sleep 1.1
-- MaxQPSIPRule(2): the third query from one address within the second is refused
-- @query udp ipqps.example.org A from=127.0.0.1 expect=NXDOMAIN
-- @query udp ipqps.example.org A from=127.0.0.1 expect=NXDOMAIN
-- @query udp ipqps.example.org A from=127.0.0.1 expect=REFUSED reached=0
-- @query tcp ipqps.example.org A from=127.0.0.1 expect=REFUSED
-- ... another address has its own bucket
-- @query udp ipqps.example.org A from=127.0.0.2 expect=NXDOMAIN
-- @query udp ipqps.example.org A from=127.0.0.2 expect=NXDOMAIN
-- @query udp ipqps.example.org A from=127.0.0.2 expect=REFUSED
-- MaxQPSRule(3): the first three are spoofed, then it stops matching
-- @query udp global.example.org A expect=NOERROR reached=0
-- @query udp global.example.org A from=127.0.0.2 expect=NOERROR
-- @query udp global.example.org A expect=NOERROR
-- @query udp global.example.org A expect=NXDOMAIN reached=1
-- QPSAction(2): two pass, then drops
-- @query udp qpsaction.example.org A expect=NXDOMAIN
-- @query udp qpsaction.example.org A expect=NXDOMAIN
-- @query udp qpsaction.example.org A expect=drop reached=0
-- after a second the buckets are full again
-- @sleep 1.1
-- @query udp ipqps.example.org A expect=NXDOMAIN
-- @query udp global.example.org A expect=NOERROR
-- @query udp qpsaction.example.org A expect=NXDOMAIN
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(AndRule{QNameRule('ipqps.example.org.'), MaxQPSIPRule(2)}, RCodeAction(DNSRCode.REFUSED))
addAction(AndRule{QNameRule('global.example.org.'), MaxQPSRule(3)}, SpoofAction('192.0.2.3'))
addAction('qpsaction.example.org.', QPSAction(2))
