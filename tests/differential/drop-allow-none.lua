-- @describe Rule order and verdicts: AllowAction stops the rules and forwards,
-- @describe NoneAction does nothing and goes on, DropAction drops; AllRule.
-- @query udp www.example.org A expect=drop reached=0
-- @query tcp www.example.org A expect=drop
-- @query udp allowed.example.org A expect=NXDOMAIN reached=1
-- @query tcp allowed.example.org A -rd expect=NXDOMAIN
-- @query udp none.example.org A expect=drop reached=0
-- @query udp mail.example.org A expect=NOERROR reached=1
-- @query udp mail.example.org AAAA expect=drop
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(QNameRule('none.example.org.'), NoneAction())
addAction(QNameRule('allowed.example.org.'), AllowAction())
addAction(AndRule{QNameRule('mail.example.org.'), QTypeRule(DNSQType.A)}, AllowAction())
addAction(QNameRule('probe.example.org.'), AllowAction())
addAction(AllRule(), DropAction())
addAction(QNameRule('allowed.example.org.'), RCodeAction(DNSRCode.REFUSED))
