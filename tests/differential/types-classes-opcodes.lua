-- @describe QTypeRule (by constant and by name), QClassRule and OpcodeRule,
-- @describe combined with AndRule.
-- @query udp www.example.org MX expect=NOTIMP
-- @query udp www.example.org A expect=NOERROR
-- @query udp txt.example.org TXT expect=REFUSED
-- @query tcp txt.example.org TXT expect=REFUSED
-- @query udp version.bind TXT class=CH expect=NOERROR
-- @query udp hostname.bind TXT class=CH expect=NOTAUTH
-- @query udp www.example.org A class=CH expect=NOTAUTH
-- @query udp example.org SOA opcode=NOTIFY expect=NOTIMP reached=0
-- @query udp example.org SOA opcode=UPDATE
-- @query udp www.example.org AAAA -rd
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(AndRule{QClassRule(DNSClass.CHAOS), QNameRule('version.bind.')}, SpoofRawAction('\008triodist'))
addAction(QClassRule(DNSClass.CHAOS), RCodeAction(DNSRCode.NOTAUTH))
addAction(QTypeRule(DNSQType.MX), RCodeAction(DNSRCode.NOTIMP))
addAction(QTypeRule('TXT'), RCodeAction(DNSRCode.REFUSED))
addAction(OpcodeRule(DNSOpcode.Notify), RCodeAction(DNSRCode.NOTIMP))
