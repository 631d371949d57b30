-- @describe SpoofAction with one and several addresses (A, AAAA, mixed, options),
-- @describe SpoofCNAMEAction, SpoofRawAction; types the spoof has no data for
-- @describe fall through to the backend.
-- @query udp one.spoof.example.org A expect=NOERROR reached=0
-- @query udp one.spoof.example.org A -rd
-- @query udp one.spoof.example.org A +do +cd
-- @query tcp one.spoof.example.org A
-- @query udp one.spoof.example.org AAAA reached=1
-- @query udp one.spoof.example.org MX reached=1
-- @query udp one.spoof.example.org ANY
-- @query udp many.spoof.example.org A
-- @query udp many.spoof.example.org AAAA
-- @query tcp many.spoof.example.org A +edns
-- @query udp six.spoof.example.org AAAA
-- @query udp six.spoof.example.org A reached=1
-- @query udp ttl.spoof.example.org A
-- @query udp ttl.spoof.example.org A +do
-- @query udp cname.spoof.example.org A reached=0
-- @query udp cname.spoof.example.org MX -rd
-- @query tcp cname.spoof.example.org AAAA +do
-- @query udp raw.spoof.example.org TXT
-- @query udp raw.spoof.example.org TXT +do
-- @query tcp raw.spoof.example.org TXT +edns
-- @query udp raw.spoof.example.org A
-- @query udp raws.spoof.example.org TXT +do
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction('one.spoof.example.org.', SpoofAction('192.0.2.101'))
addAction('many.spoof.example.org.', SpoofAction({'192.0.2.102', '192.0.2.103', '2001:db8::102'}))
addAction('six.spoof.example.org.', SpoofAction({'2001:db8::6', '2001:db8::7'}))
addAction('ttl.spoof.example.org.', SpoofAction('192.0.2.104', {ttl=300}))
addAction('cname.spoof.example.org.', SpoofCNAMEAction('www.example.org.'))
addAction('raws.spoof.example.org.', SpoofRawAction({'\005hello', '\005world'}))
addAction('raw.spoof.example.org.', SpoofRawAction('\011hello world'))
