-- @describe LogAction and LogResponseAction writing text files, DelayAction
-- @describe (UDP only in dnsdist), and that logging does not stop the rules.
-- @query udp www.example.org A expect=NOERROR
-- @query tcp www.example.org AAAA expect=NOERROR
-- @query udp nope.example.org A expect=NXDOMAIN
-- @query udp logged.example.org MX expect=REFUSED
-- @query udp delayed.example.org A mindelay=0.25 expect=NXDOMAIN
-- @query tcp delayed.example.org A maxdelay=0.2 expect=NXDOMAIN
-- @query udp delayed.spoof.example.org A mindelay=0.25 expect=NOERROR reached=0
-- @query udp delayed.drop.example.org A expect=drop
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(NotRule(QNameRule('probe.example.org.')), LogAction('{{OUTDIR}}/queries.log', false, true, false))
addResponseAction(NotRule(QNameRule('probe.example.org.')), LogResponseAction('{{OUTDIR}}/responses.log', true, false))
addAction('logged.example.org.', RCodeAction(DNSRCode.REFUSED))
addAction('delayed.example.org.', DelayAction(300))
addAction('delayed.spoof.example.org.', DelayAction(300))
addAction('delayed.spoof.example.org.', SpoofAction('192.0.2.31'))
addAction('delayed.drop.example.org.', DelayAction(300))
addAction('delayed.drop.example.org.', DropAction())
