-- @describe RCodeAction with the usual rcodes, and the flags and EDNS of the
-- @describe answers it makes, over UDP and TCP.
-- @query udp nx.example.org A expect=NXDOMAIN reached=0
-- @query udp nx.example.org A -rd
-- @query udp nx.example.org A +do +cd
-- @query tcp nx.example.org A +edns
-- @query udp refused.rc.example.org A expect=REFUSED
-- @query tcp refused.rc.example.org A -rd expect=REFUSED
-- @query udp servfail.rc.example.org AAAA expect=SERVFAIL
-- @query udp notimp.rc.example.org A expect=NOTIMP
-- @query udp formerr.rc.example.org A expect=FORMERR
-- @query udp noerror.rc.example.org A expect=NOERROR reached=0
-- @query udp yxdomain.rc.example.org A expect=YXDOMAIN
-- @query udp notauth.rc.example.org A +do expect=NOTAUTH
-- @query udp www.example.org A expect=NOERROR reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction(QNameRule('nx.example.org.'), RCodeAction(DNSRCode.NXDOMAIN))
addAction(QNameRule('refused.rc.example.org.'), RCodeAction(DNSRCode.REFUSED))
addAction(QNameRule('servfail.rc.example.org.'), RCodeAction(DNSRCode.SERVFAIL))
addAction(QNameRule('notimp.rc.example.org.'), RCodeAction(DNSRCode.NOTIMP))
addAction(QNameRule('formerr.rc.example.org.'), RCodeAction(DNSRCode.FORMERR))
addAction(QNameRule('noerror.rc.example.org.'), RCodeAction(DNSRCode.NOERROR))
addAction(QNameRule('yxdomain.rc.example.org.'), RCodeAction(DNSRCode.YXDOMAIN))
addAction(QNameRule('notauth.rc.example.org.'), RCodeAction(9))
