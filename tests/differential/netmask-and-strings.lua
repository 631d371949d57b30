-- @describe NetmaskGroupRule with newNMG, and plain strings and tables given
-- @describe where a selector is expected (suffix match, or netmask match when
-- @describe the text parses as a netmask; a table mixing both keeps the netmasks only).
-- NetmaskGroupRule(newNMG)
-- @query udp www.example.org A from=127.0.0.5 expect=REFUSED reached=0
-- @query tcp www.example.org A from=127.0.0.6 expect=REFUSED
-- @query udp www.example.org A from=127.0.0.7 expect=NOERROR
-- a netmask string
-- @query udp www.example.org A from=127.0.0.8 expect=NXDOMAIN reached=0
-- a name string: suffix match
-- @query udp string.example.org A expect=NOERROR reached=0
-- @query udp sub.string.example.org AAAA expect=NOERROR
-- @query udp xstring.example.org A expect=NXDOMAIN reached=1
-- a table of names
-- @query udp a.names.example.org A expect=SERVFAIL
-- @query udp deep.b.names.example.org A expect=SERVFAIL
-- @query udp c.names.example.org A expect=NXDOMAIN
-- a table mixing a netmask and a name: only the netmask counts
-- @query udp mixed.example.org A expect=NXDOMAIN
-- @query udp www.example.org A from=127.0.0.12 expect=NOTIMP
-- NetmaskGroupRule(nmg, false): matches the destination address (ours: 127.0.0.1)
-- @query udp dest.example.org A expect=FORMERR
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

local nmg = newNMG()
nmg:addMask('127.0.0.5/32')
nmg:addMask('127.0.0.6')
addAction(NetmaskGroupRule(nmg), RCodeAction(DNSRCode.REFUSED))
addAction('127.0.0.8/32', RCodeAction(DNSRCode.NXDOMAIN))
addAction('string.example.org', SpoofAction({'192.0.2.88', '2001:db8::88'}))
addAction({'a.names.example.org.', 'b.names.example.org.'}, RCodeAction(DNSRCode.SERVFAIL))
addAction({'mixed.example.org.', '127.0.0.12'}, RCodeAction(DNSRCode.NOTIMP))
local here = newNMG()
here:addMask('127.0.0.1/32')
addAction(AndRule{QNameRule('dest.example.org.'), NetmaskGroupRule(here, false)}, RCodeAction(DNSRCode.FORMERR))
