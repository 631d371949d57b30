-- Rate limiting per client network, with trusted networks exempt.
--
-- MaxQPSIPRule(qps, v4Mask, v6Mask, burst) matches the queries of one client
-- network (a /32 and a /64 by default) beyond its rate.

setLocal("127.0.0.1:5300", {reusePort = true})
setACL({"127.0.0.0/8", "::1/128", "192.0.2.0/24"})

newServer({address = "192.0.2.1:53", name = "resolver1"})
newServer({address = "192.0.2.2:53", name = "resolver2"})
newServer({address = "192.0.2.9:53", name = "tarpit", pool = "slow"})

-- Monitoring and the office network are never limited.
local trusted = newNMG()
trusted:addMask("127.0.0.0/8")
trusted:addMask("192.0.2.0/28")
addAction(NetmaskGroupRule(trusted), AllowAction(), {name = "trusted"})

-- ANY is a favourite of amplification attacks: at most 2 a second per client over UDP,
-- then the client must come back over TCP.
addAction(AndRule({QTypeRule(DNSQType.ANY), MaxQPSIPRule(2)}), TCAction())

-- More than 50 queries a second from one address: slow it down.
addAction(MaxQPSIPRule(50, 32, 64, 100), DelayAction(200), {name = "slow-down"})

-- More than 200 a second from one /24 (or /48): send it to the tarpit pool.
addAction(MaxQPSIPRule(200, 24, 48), PoolAction("slow"), {name = "tarpit"})

-- More than 1000 a second from one /24: refuse.
addAction(MaxQPSIPRule(1000, 24, 48), RCodeAction(DNSRCode.REFUSED), {name = "refuse"})

-- A global ceiling for the whole server: beyond 5000 queries a second, drop.
-- (MaxQPSRule matches the queries within its rate, so NotRule selects the excess.)
addAction(NotRule(MaxQPSRule(5000)), DropAction(), {name = "global-ceiling"})

-- TCP connections: at most 10 per client, 100 queries each, 30 seconds each.
setMaxTCPConnectionsPerClient(10)
setMaxTCPQueriesPerConnection(100)
setMaxTCPConnectionDuration(30)
setTCPRecvTimeout(5)
setTCPSendTimeout(5)
