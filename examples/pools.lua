-- Pools: several groups of backends, each with its own load-balancing policy,
-- and rules that send queries to one pool or another.

setLocal("127.0.0.1:5300")
setACL({"127.0.0.0/8", "::1/128", "192.0.2.0/24"})

-- The default pool (no "pool" option): general-purpose resolvers.
newServer({address = "192.0.2.10:53", name = "general1"})
newServer({address = "192.0.2.11:53", name = "general2"})

-- The authoritative servers of the internal zone.
newServer({address = "192.0.2.20:5353", name = "internal1", pool = "internal", order = 1})
newServer({address = "192.0.2.21:5353", name = "internal2", pool = "internal", order = 2})

-- Bulk resolvers of different sizes, one of them also used for suspicious clients.
newServer({address = "192.0.2.30:53", name = "bulk-large", pool = {"bulk", "abuse"}, weight = 3})
newServer({address = "192.0.2.31:53", name = "bulk-small", pool = "bulk", weight = 1, qps = 200})

-- Policies: least outstanding by default, primary/backup for the internal zone,
-- weighted by name hash for bulk (so one name keeps hitting one server's cache).
setServerPolicy(leastOutstanding)
setPoolServerPolicy(firstAvailable, "internal")
setPoolServerPolicy(whashed, "bulk")
setPoolServerPolicy(roundrobin, "abuse")

-- Routing.
addAction(QNameSuffixRule({"corp.example.", "2.0.192.in-addr.arpa."}), PoolAction("internal"))
addAction(NetmaskGroupRule({"192.0.2.192/26"}), PoolAction("abuse"), {name = "suspicious"})
addAction(TagRule("bulk"), PoolAction("bulk"))
-- Up to 100 TXT queries a second go to the bulk pool; the rest stay in the default pool.
addAction(QTypeRule(DNSQType.TXT), QPSPoolAction(100, "bulk"))

-- A backend can be taken out of rotation by hand (the console's getServer(n):setDown()).
getServer("bulk-small"):setAuto()

-- No server left in the chosen pool: answer SERVFAIL instead of dropping.
setServFailWhenNoServer(true)
