-- @describe Selector shortcuts dnsdist takes: a DNSName, a table of DNSNames, a number
-- @describe as its text, and makeRule (the same rules as objects, in NotRule and
-- @describe AndRule); a DNSName for a response rule.
-- a DNSName: suffix match
-- @query udp dname.example.org A expect=REFUSED reached=0
-- @query tcp deep.dname.example.org A expect=REFUSED reached=0
-- @query udp xdname.example.org A expect=NXDOMAIN reached=1
-- a table of DNSNames
-- @query udp t1.example.org A expect=SERVFAIL reached=0
-- @query udp a.t2.example.org AAAA expect=SERVFAIL reached=0
-- makeRule of a table of strings, negated: everything but these under notmr
-- @query udp www.notmr.example.org A expect=NXDOMAIN
-- @query udp other.notmr.example.org A expect=FORMERR reached=0
-- makeRule of a netmask and of a DNSName, and-ed
-- @query udp both.example.org A expect=NOTIMP reached=0
-- @query udp both.example.org A from=127.0.0.9 expect=NXDOMAIN
-- a number in a table is a name
-- @query udp 42 A expect=REFUSED reached=0
-- a DNSName for a response rule: the answer is dropped after the backend
-- @query udp www.example.org A expect=NOERROR
-- @query udp mail.example.org A expect=drop reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(newDNSName('dname.example.org.'), RCodeAction(DNSRCode.REFUSED))
addAction({newDNSName('t1.example.org.'), newDNSName('t2.example.org.')}, RCodeAction(DNSRCode.SERVFAIL))
addAction(AndRule{makeRule('notmr.example.org.'), NotRule(makeRule({'www.notmr.example.org.', 'mail.notmr.example.org.'}))}, RCodeAction(DNSRCode.FORMERR))
addAction(AndRule{makeRule('127.0.0.1/32'), makeRule(newDNSName('both.example.org.'))}, RCodeAction(DNSRCode.NOTIMP))
addAction({42}, RCodeAction(DNSRCode.REFUSED))
addResponseAction(newDNSName('mail.example.org.'), DropResponseAction())
