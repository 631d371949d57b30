-- @describe Name selectors: QNameRule (exact), SuffixMatchNodeRule with
-- @describe newSuffixMatchNode, QNameSetRule with newDNSNameSet, RegexRule.
-- QNameRule matches the exact name only, case-insensitively
-- @query udp exact.example.org A expect=REFUSED reached=0
-- @query udp EXACT.Example.ORG A expect=REFUSED
-- @query udp sub.exact.example.org A expect=NXDOMAIN reached=1
-- SuffixMatchNodeRule: the suffix and everything below it
-- @query udp blocked.example.org A expect=drop reached=0
-- @query tcp deep.down.blocked.example.org AAAA expect=drop
-- @query udp notblocked.example.org A expect=NXDOMAIN
-- @query udp www.bad.test A expect=drop
-- QNameSetRule: members only, not their children
-- @query udp one.example.org A
-- @query udp two.example.org AAAA
-- @query udp sub.one.example.org A expect=NXDOMAIN
-- RegexRule on the name's text form
-- @query udp ads.example.org A expect=NXDOMAIN reached=0
-- @query udp ads42.www.example.org A expect=NXDOMAIN reached=0
-- @query udp noads.example.org A reached=1
-- @query udp www.example.org A expect=NOERROR reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(QNameRule('exact.example.org.'), RCodeAction(DNSRCode.REFUSED))

local smn = newSuffixMatchNode()
smn:add(newDNSName('blocked.example.org.'))
smn:add('bad.test')
addAction(SuffixMatchNodeRule(smn), DropAction())

local set = newDNSNameSet()
set:add(newDNSName('one.example.org.'))
set:add(newDNSName('two.example.org.'))
addAction(QNameSetRule(set), SpoofAction('192.0.2.111'))

addAction(RegexRule('^ads[0-9]*\\.'), RCodeAction(DNSRCode.NXDOMAIN))
