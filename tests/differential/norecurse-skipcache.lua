-- @describe SetNoRecurseAction (the backend sees RD cleared; the client gets its own RD back)
-- @describe and SetSkipCacheAction, without a packet cache (the cache itself is covered
-- @describe here: see cache-norecurse.lua).
-- @query udp www.example.org A reached=1
-- @query tcp www.example.org A reached=1
-- @query udp mail.example.org A reached=1
-- @query udp mail.example.org A reached=1
-- @query udp norec.example.org A reached=1
-- @query udp norec.example.org A -rd reached=1
-- @query tcp norec.example.org A +cd +do reached=1
-- @query udp nope.example.org A expect=NXDOMAIN reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addAction('mail.example.org.', SetSkipCacheAction())
addAction('norec.example.org.', SetNoRecurseAction())
