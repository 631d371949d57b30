-- @describe dr:editTTLs from a LuaResponseAction: each record's section, class and type
-- @describe are given to the function, its TTL becomes what the function returns (0
-- @describe leaves it), the OPT record is never touched, and an error stops the edit.
-- @query udp www.example.org A
-- @query tcp www.example.org A
-- @query udp www.example.org AAAA
-- @query udp example.org MX +edns
-- @query udp multi.example.org TXT +do
-- @query udp alias.example.org A
-- @query udp nope.example.org A expect=NXDOMAIN
-- @query udp stop.example.org A expect=NXDOMAIN
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

-- section * 1000 + type * 10 + 1 for class IN; 0 (TTL left as it is) for AAAA.
function edit(section, qclass, qtype, ttl)
  if qtype == 28 then return 0 end
  return section * 1000 + qtype * 10 + (qclass == 1 and 1 or 0)
end

function editAll(dr)
  dr:editTTLs(edit)
  return DNSResponseAction.None, ""
end

-- A function that fails at the first record: nothing is changed, the answer goes out.
function failing(section, qclass, qtype, ttl)
  error("no TTL today")
end

function editFailing(dr)
  dr:editTTLs(failing)
  return DNSResponseAction.None, ""
end

addResponseAction('stop.example.org.', LuaResponseAction(editFailing))
addResponseAction(NotRule(QNameRule('stop.example.org.')), LuaResponseAction(editAll))
