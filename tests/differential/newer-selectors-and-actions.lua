-- @describe Later dnsdist additions: QNameSuffixRule (1.9), TCResponseAction (1.9,
-- @describe UDP only), ClearRecordTypesResponseAction (1.8, one type or a list).
-- @query udp a.suffix.example.org A
-- @query tcp deep.a.suffix.example.org AAAA
-- @query udp www.other.test A
-- @query udp SUFFIX.example.org A
-- @query udp xsuffix.example.org A
-- @query udp mail.example.org A
-- @query tcp mail.example.org A
-- @query udp chain.example.org AAAA
-- @query udp multi.example.org ANY
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(QNameSuffixRule({'suffix.example.org', 'other.test'}), RCodeAction(DNSRCode.REFUSED))
addResponseAction(AndRule{QNameRule('mail.example.org.'), QTypeRule(DNSQType.A)}, TCResponseAction())
addResponseAction('chain.example.org.', ClearRecordTypesResponseAction({DNSQType.CNAME}))
addResponseAction('multi.example.org.', ClearRecordTypesResponseAction(DNSQType.AAAA))
