-- A filtering resolver front end: block lists, walled-garden answers and a
-- few protocol hygiene rules in front of one recursive resolver.
--
-- Rules run in the order they are added; the first one whose action stops
-- processing (drop, answer, pool, allow) decides.

setLocal("127.0.0.1:5300")
setACL({"127.0.0.0/8", "::1/128", "192.0.2.0/24"})

newServer({address = "192.0.2.1:53", name = "resolver"})

-- Clients that may see the internal zone.
local lan = newNMG()
lan:addMask("127.0.0.0/8")
lan:addMask("192.0.2.0/25")

-- 1. Malware and phishing domains: drop silently, no answer at all.
local malware = newSuffixMatchNode()
for _, name in ipairs({"malware.example.", "phishing.example.", "c2.example.net."}) do
  malware:add(name)
end
addAction(SuffixMatchNodeRule(malware), DropAction(), {name = "malware"})

-- 2. Advertising and tracking: NXDOMAIN, as if the names did not exist.
local ads = newSuffixMatchNode()
ads:add(newDNSName("ads.example."))
ads:add("tracker.example.")
ads:add("metrics.example.")
ads:add("pixel.example.net.")
addAction(SuffixMatchNodeRule(ads, true), RCodeAction(DNSRCode.NXDOMAIN), {name = "ads"})

-- 3. Exact names sent to a block page (A and AAAA), everything else about them refused.
local walled = newDNSNameSet()
walled:add(newDNSName("casino.example."))
walled:add(newDNSName("www.casino.example."))
addAction(AndRule({QNameSetRule(walled), QTypeRule(DNSQType.A)}),
          SpoofAction({"192.0.2.80"}, {ttl = 300, aa = true}))
addAction(AndRule({QNameSetRule(walled), QTypeRule(DNSQType.AAAA)}),
          SpoofAction("2001:db8::80", {ttl = 300, aa = true}))
addAction(QNameSetRule(walled), RCodeAction(DNSRCode.REFUSED))

-- 4. A search engine forced to its safe-search host name.
addAction(QNameRule("search.example."), SpoofCNAMEAction("safe.search.example."))

-- 5. The internal zone is only for the LAN.
addAction(AndRule({QNameSuffixRule({"corp.example.", "2.0.192.in-addr.arpa."}),
                   NotRule(NetmaskGroupRule(lan))}),
          RCodeAction(DNSRCode.REFUSED))

-- 6. Protocol hygiene: no ANY over UDP, no CHAOS class, no zone transfers,
--    no dynamic updates, no names made of long digit runs.
addAction(AndRule({QTypeRule(DNSQType.ANY), TCPRule(false)}), TCAction())
addAction(QClassRule(DNSClass.CHAOS), RCodeAction(DNSRCode.REFUSED))
addAction(OrRule({QTypeRule(DNSQType.AXFR), QTypeRule(DNSQType.IXFR)}), RCodeAction(DNSRCode.REFUSED))
addAction(OpcodeRule(DNSOpcode.Update), RCodeAction(DNSRCode.NOTIMP))
addAction(RegexRule("^[0-9]{12,}\\."), DropAction())

-- Log every answer made here rather than by the resolver (in verbose mode only).
addSelfAnsweredResponseAction(AllRule(), LogResponseAction("", false, true, true))
