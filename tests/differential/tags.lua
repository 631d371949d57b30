-- @describe SetTagAction and TagRule (with and without a value), tags carried from
-- @describe the query rules to the response rules, SetTagResponseAction.
-- @query udp tagged.example.org A expect=NOERROR reached=0
-- @query udp other.tagged.example.org A expect=REFUSED reached=0
-- @query tcp novalue.tagged.example.org A expect=SERVFAIL
-- @query udp untagged.example.org A expect=NXDOMAIN reached=1
-- query tag seen by a response rule: the backend's answer is dropped
-- @query udp www.example.org A expect=drop reached=1
-- @query udp mail.example.org A expect=NOERROR reached=1
-- response tag set, then a later response rule matches on it
-- @query udp txt.example.org TXT expect=drop reached=1
-- @query tcp txt.example.org TXT expect=drop
-- a tag set by a response rule is not visible to query rules of the next query
-- @query udp resp-only.example.org A expect=NXDOMAIN
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction('tagged.example.org.', SetTagAction('kind', 'special'))
addAction(AndRule{QNameRule('tagged.example.org.'), TagRule('kind', 'special')}, SpoofAction('192.0.2.77'))
addAction(TagRule('kind', 'special'), SetTagAction('kind', 'other'))
addAction(AndRule{QNameRule('other.tagged.example.org.'), TagRule('kind', 'other')}, RCodeAction(DNSRCode.REFUSED))
addAction(TagRule('kind'), RCodeAction(DNSRCode.SERVFAIL))

addAction('www.example.org.', SetTagAction('route', 'www'))
addResponseAction(TagRule('route', 'www'), DropResponseAction())

addResponseAction('txt.example.org.', SetTagResponseAction('resp', 'yes'))
addResponseAction(TagRule('resp', 'yes'), DropResponseAction())
addAction(TagRule('resp'), RCodeAction(DNSRCode.REFUSED))
