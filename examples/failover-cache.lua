-- Two resolvers that fail over, and a packet cache in front of them.
--
-- Each backend is health-checked every 2 s; after 3 failed checks it is marked
-- down ("Marking downstream ... as 'down'") and traffic moves to the other one;
-- 2 good checks bring it back.  Repeated questions are answered from the cache;
-- when both backends are down, answers that expired less than an hour ago are
-- still served, with a TTL of 30 s.  Try it with two resolvers on 127.0.0.1:
--   triodist serve --config examples/failover-cache.lua
setLocal("127.0.0.1:5300")
setACL({"127.0.0.0/8", "::1/128"})

newServer{address = "127.0.0.1:5301", name = "resolver-a", order = 1,
          checkName = "example.org.", checkType = "SOA", checkInterval = 2,
          checkTimeout = 500, maxCheckFailures = 3, rise = 2, mustResolve = true}
newServer{address = "127.0.0.1:5302", name = "resolver-b", order = 2,
          checkName = "example.org.", checkType = "SOA", checkInterval = 2,
          checkTimeout = 500, maxCheckFailures = 3, rise = 2, mustResolve = true}
-- The first backend by order that is up (and under its qps limit, if any).
setServerPolicy(firstAvailable)

pc = newPacketCache(100000, {maxTTL = 86400, minTTL = 0, temporaryFailureTTL = 10,
                             maxNegativeTTL = 300, staleTTL = 30})
getPool(""):setCache(pc)
setStaleCacheEntriesTTL(3600)

-- Never cache the answers for names under internal.example. (they change often).
addAction(QNameSuffixRule("internal.example."), SetSkipCacheAction())
