-- @describe EDNS Client Subnet: a server with useClientSubnet gets each query with an OPT
-- @describe record carrying the client's subnet (32 bits of an IPv4 address here), and the
-- @describe client's answer loses it; the packet cache keys on the subnet, so two clients miss
-- @describe once each and the same client hits; SetDisableECSAction and dq.useECS from Lua
-- @describe send the query as it came; SetECSAction and SetECSPrefixLengthAction change the
-- @describe subnet, so the key: two clients a rule gives the same subnet share an answer.
-- the first client, then a second one (another subnet), then the first again (a hit)
-- @query udp www.example.org A expect=NOERROR reached=1
-- @query udp www.example.org A from=127.0.0.2 expect=NOERROR reached=1
-- @query udp www.example.org A expect=NOERROR reached=0
-- the client's own OPT record: kept in its answer, without the option
-- @query udp mail.example.org A +edns expect=NOERROR reached=1
-- @query tcp mail.example.org AAAA +edns payload=1400 expect=NOERROR reached=1
-- no subnet for these: the backend gets no OPT record
-- @query udp txt.example.org TXT expect=NOERROR reached=1
-- @query tcp multi.example.org TXT expect=NOERROR reached=1
-- a subnet set by a rule, the same for both clients: one backend query
-- @query udp alias.example.org A expect=NOERROR reached=1
-- @query udp alias.example.org A from=127.0.0.2 expect=NOERROR reached=0
-- 8 bits of the address: 127.0.0.1 and 127.0.0.3 are the same subnet
-- @query udp chain.example.org A expect=NOERROR reached=1
-- @query udp chain.example.org A from=127.0.0.3 expect=NOERROR reached=0
setLocal('{{LISTEN}}')
setECSSourcePrefixV4(32)
setECSOverride(false)
newServer{address='{{BACKEND}}', useClientSubnet=true}
pc = newPacketCache(1000)
getPool(""):setCache(pc)

addAction("txt.example.org.", SetDisableECSAction())
function noSubnet(dq)
  dq.useECS = false
  return DNSAction.None, ""
end
addAction("multi.example.org.", LuaAction(noSubnet))
addAction("alias.example.org.", SetECSAction("198.51.100.0/24"))
addAction("chain.example.org.", SetECSPrefixLengthAction(8, 48))
