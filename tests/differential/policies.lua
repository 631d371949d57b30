-- @describe Policies whose choice is deterministic: whashed and chashed (with a set
-- @describe perturbation and server ids, dnsdist's name hash), firstAvailable by order,
-- @describe a Lua policy returning a server, and a pool whose servers are all down
-- @describe (dropped, or SERVFAIL with setServFailWhenNoServer). Which backend each query
-- @describe reaches is compared.
-- @query udp n0.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n1.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n2.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n3.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n4.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n5.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n6.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n7.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n8.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n9.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n10.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp n11.wh.example.org A expect=NXDOMAIN reached=1
-- @query udp N3.WH.example.org A expect=NXDOMAIN reached=1
-- @query udp n0.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n1.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n2.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n3.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n4.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n5.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n6.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n7.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n8.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n9.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n10.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp n11.ch.example.org A expect=NXDOMAIN reached=1
-- @query udp N3.CH.example.org A expect=NXDOMAIN reached=1
-- @query udp n0.fa.example.org A expect=NXDOMAIN reached=1
-- @query tcp n0.lua.example.org A expect=NXDOMAIN reached=1
-- @query udp n1.fa.example.org A expect=NXDOMAIN reached=1
-- @query tcp n1.lua.example.org A expect=NXDOMAIN reached=1
-- @query udp n2.fa.example.org A expect=NXDOMAIN reached=1
-- @query tcp n2.lua.example.org A expect=NXDOMAIN reached=1
-- @query udp n1.down.example.org A expect=SERVFAIL reached=0
-- @query tcp n2.down.example.org A expect=SERVFAIL reached=0
setLocal('{{LISTEN}}')
setServFailWhenNoServer(true)
newServer{address='{{BACKEND}}', pool='wh', weight=1}
newServer{address='{{BACKEND_B}}', pool='wh', weight=3}
newServer{address='{{BACKEND}}', pool='ch', weight=50, id='6d3b1a8e-3d7c-4b1e-9c1a-000000000001'}
newServer{address='{{BACKEND_B}}', pool='ch', weight=50, id='6d3b1a8e-3d7c-4b1e-9c1a-000000000002'}
newServer{address='{{BACKEND}}', pool='fa', order=2}
newServer{address='{{BACKEND_B}}', pool='fa', order=1}
newServer{address='{{BACKEND}}', pool='lua', name='lua-a'}
newServer{address='{{BACKEND_B}}', pool='lua', name='lua-b'}
newServer{address='{{BACKEND_B}}', pool='down', name='down-b'}:setDown()
setWHashedPertubation(7)
setPoolServerPolicy(whashed, 'wh')
setPoolServerPolicy(chashed, 'ch')
setPoolServerPolicy(firstAvailable, 'fa')
-- Always the server named lua-b.
setPoolServerPolicyLua('named', function(servers, dq)
  for _, s in ipairs(servers) do
    if s:getName() == 'lua-b' then return s end
  end
end, 'lua')

for _, pool in ipairs({'wh', 'ch', 'fa', 'lua', 'down'}) do
  addAction(pool .. '.example.org.', PoolAction(pool))
end
