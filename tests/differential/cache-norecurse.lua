-- @describe A packet cache with SetSkipCacheAction, and SetNoRecurseAction
-- @describe (the backend sees RD cleared; what the client gets back). The cache
-- @describe keeps UDP and TCP answers apart, and answers with and without DO.
-- @query udp www.example.org A reached=1
-- @query udp www.example.org A reached=0
-- @query tcp www.example.org A reached=1
-- @query tcp www.example.org A reached=0
-- @query udp www.example.org A -rd reached=1
-- @query udp mail.example.org A reached=1
-- @query udp mail.example.org A reached=1
-- @query udp norec.example.org A reached=1
-- @query udp norec.example.org A -rd
-- @query tcp norec.example.org A +cd +do
-- @query udp txt.example.org TXT +do reached=1
-- @query udp txt.example.org TXT +do reached=0
-- @query udp txt.example.org TXT reached=1
-- @query udp nope.example.org A expect=NXDOMAIN reached=1
-- @query udp nope.example.org A expect=NXDOMAIN reached=0
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}
getPool(''):setCache(newPacketCache(1000))

addAction('mail.example.org.', SetSkipCacheAction())
addAction('norec.example.org.', SetNoRecurseAction())
