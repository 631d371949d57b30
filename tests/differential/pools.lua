-- @describe PoolAction to named pools (newServer{pool=...}, one pool name or
-- @describe several), the default pool, and a pool without servers.
-- @query udp whoami.example.org TXT
-- @query udp b.whoami.example.org TXT
-- @query tcp whoami.example.org TXT +do
-- @query udp whoami.example.org TXT -rd from=127.0.0.9
-- @query udp other.example.org A expect=NXDOMAIN reached=1
-- @query udp empty.pool.example.org A expect=drop reached=0
-- @query tcp empty.pool.example.org A expect=drop
-- @query udp c.example.org A expect=NXDOMAIN
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
newServer{address='{{BACKEND_B}}', pool='b'}
newServer{address='{{BACKEND_B}}', pool={'c', 'd'}}

addAction(AndRule{QTypeRule(DNSQType.TXT), NotRule(RDRule())}, PoolAction('d'))
addAction(AndRule{QNameRule('whoami.example.org.'), TCPRule(true)}, PoolAction('c'))
addAction('b.whoami.example.org.', PoolAction('b'))
addAction('empty.pool.example.org.', PoolAction('nobody'))
addAction('c.example.org.', PoolAction('c'))
