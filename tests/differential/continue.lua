-- @describe ContinueAction: the wrapped action takes effect and the rules go on
-- @describe (a later verdict still wins); non-terminal actions such as
-- @describe SetNoRecurseAction or SetTagAction inside it.
-- @query udp pool.cont.example.org A reached=1
-- @query udp spoofed.cont.example.org A
-- @query udp dropped.cont.example.org A
-- @query udp tagged.cont.example.org A expect=REFUSED
-- @query udp norec.cont.example.org A reached=1
-- @query udp rcode.cont.example.org A
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
newServer{address='{{BACKEND_B}}', pool='b'}

addAction('pool.cont.example.org.', ContinueAction(PoolAction('b')))
addAction('spoofed.cont.example.org.', ContinueAction(SpoofAction('192.0.2.61')))
addAction('spoofed.cont.example.org.', SpoofAction('192.0.2.62'))
addAction('dropped.cont.example.org.', ContinueAction(DropAction()))
addAction('tagged.cont.example.org.', ContinueAction(SetTagAction('cont', 'yes')))
addAction(TagRule('cont', 'yes'), RCodeAction(DNSRCode.REFUSED))
addAction('norec.cont.example.org.', ContinueAction(SetNoRecurseAction()))
addAction('rcode.cont.example.org.', ContinueAction(RCodeAction(DNSRCode.NOTIMP)))
