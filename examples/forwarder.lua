-- A minimal forwarder.
--
-- Listens on the loopback (UDP and TCP), accepts queries from the loopback
-- only, and forwards everything to two resolvers: the first one while it is
-- up, the second one otherwise.
--
--   triodist check-config -C examples/forwarder.lua
--   triodist serve -C examples/forwarder.lua

setLocal("127.0.0.1:5300")
addLocal("[::1]:5300")
setACL({"127.0.0.0/8", "::1/128"})

newServer({address = "192.0.2.53:53", name = "resolver1", order = 1})
newServer({address = "192.0.2.54:53", name = "resolver2", order = 2})
setServerPolicy(firstAvailable)

-- Answer SERVFAIL (rather than nothing) when no resolver is available.
setServFailWhenNoServer(true)
