-- @describe A packet cache with its rule chains: cache-hit response actions,
-- @describe SetSkipCacheResponseAction, temporaryFailureTTL for SERVFAIL and
-- @describe REFUSED, truncated answers never cached, qname case and query ID
-- @describe served from one entry, negative answers cached, and pools with
-- @describe and without a cache.
-- @query udp www.example.org A reached=1
-- @query udp WWW.Example.ORG A reached=0
-- @query udp www.example.org AAAA reached=1
-- @query udp www.example.org AAAA reached=0
-- @query udp servfail.example.org A expect=SERVFAIL reached=1
-- @query udp servfail.example.org A expect=SERVFAIL reached=0
-- @query udp refused.example.org A expect=REFUSED reached=1
-- @query udp refused.example.org A expect=REFUSED reached=0
-- @query udp truncated.example.org A reached=1
-- @query udp truncated.example.org A reached=1
-- @query udp mail.example.org A reached=1
-- @query udp mail.example.org A expect=drop reached=0
-- @query udp ns1.example.org A reached=1
-- @query udp ns1.example.org A reached=1
-- @query udp nothing.example.org A expect=NXDOMAIN reached=1
-- @query udp nothing.example.org A expect=NXDOMAIN reached=0
-- @query udp alias.example.org A reached=1
-- @query udp alias.example.org A reached=0
-- @query udp nocache.example.org A expect=NXDOMAIN reached=1
-- @query udp nocache.example.org A expect=NXDOMAIN reached=1
-- @query udp txt.example.org TXT +do reached=1
-- @query udp txt.example.org TXT +do reached=0
-- @query udp txt.example.org TXT +edns reached=1
-- @query udp txt.example.org TXT payload=4000 reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
newServer{address='{{BACKEND_B}}', pool='plain'}
pc = newPacketCache(1000, {temporaryFailureTTL=30, maxTTL=600})
getPool(''):setCache(pc)

addAction('nocache.example.org.', PoolAction('plain'))
addResponseAction('ns1.example.org.', SetSkipCacheResponseAction())
addCacheHitResponseAction('mail.example.org.', DropResponseAction())
addCacheHitResponseAction(AllRule(), SetTagResponseAction('hit', 'yes'))
