-- @describe Trailing data made and read by rules: dq:setTrailingData and dq:getTrailingData
-- @describe (read back in a spoofed CNAME), TrailingDataRule after them, the bound of 4096
-- @describe bytes over UDP and 65535 over TCP, and trailing data removed before forwarding.
-- set, then read back by the next rule
-- @query udp echo.example.org A expect=NOERROR reached=0
-- @query tcp echo.example.org A expect=NOERROR reached=0
-- set, then matched by TrailingDataRule
-- @query udp marked.example.org A expect=REFUSED reached=0
-- @query tcp marked.example.org A expect=REFUSED reached=0
-- no trailing data: TrailingDataRule does not match, the query goes to the backend
-- @query udp www.example.org A expect=NOERROR reached=1
-- exactly the bound: accepted (then removed, and NOTIMP); one byte more: refused (SERVFAIL)
-- @query udp full.example.org A expect=NOTIMP reached=0
-- @query tcp full.example.org A expect=NOTIMP reached=0
-- @query udp over.example.org A expect=SERVFAIL reached=0
-- @query tcp over.example.org A expect=SERVFAIL reached=0
-- set, then removed: the backend gets the bare query
-- @query udp mail.example.org A expect=NOERROR reached=1
-- @query tcp mail.example.org A expect=NOERROR reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

function setTail(dq)
  if not dq:setTrailingData("Tail") then return DNSAction.ServFail, "" end
  return DNSAction.None, ""
end
function echoTail(dq)
  return DNSAction.Spoof, "x-" .. dq:getTrailingData() .. ".echo.example.org."
end
function fill(extra)
  return function(dq)
    local room = 4096 - dq.len
    if dq.tcp then room = 65535 - dq.len end
    if not dq:setTrailingData(string.rep("A", room + extra)) then
      return DNSAction.ServFail, ""
    end
    return DNSAction.None, ""
  end
end
function dropTail(dq)
  dq:setTrailingData("")
  return DNSAction.None, ""
end

addAction({'echo.example.org.', 'marked.example.org.', 'mail.example.org.'}, LuaAction(setTail))
addAction('echo.example.org.', LuaAction(echoTail))
addAction(AndRule{QNameRule('marked.example.org.'), TrailingDataRule()}, RCodeAction(DNSRCode.REFUSED))
addAction(AndRule{QNameRule('www.example.org.'), TrailingDataRule()}, RCodeAction(DNSRCode.REFUSED))
addAction('full.example.org.', LuaAction(fill(0)))
addAction('over.example.org.', LuaAction(fill(1)))
addAction('full.example.org.', LuaAction(dropTail))
addAction(AndRule{QNameRule('full.example.org.'), NotRule(TrailingDataRule())}, RCodeAction(DNSRCode.NOTIMP))
addAction('mail.example.org.', LuaAction(dropTail))
