-- @describe TTL response actions from dnsdist 1.8: SetMaxTTLResponseAction,
-- @describe SetMinTTLResponseAction, LimitTTLResponseAction (with and without types).
-- @query udp long.example.org A
-- @query udp short.example.org A
-- @query udp www.example.org A
-- @query udp alias.example.org A
-- @query udp nope.example.org A
-- @query tcp www.example.org AAAA
-- @query tcp www.example.org A
-- @query tcp long.example.org A
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

addResponseAction('long.example.org.', SetMaxTTLResponseAction(600))
addResponseAction('short.example.org.', SetMinTTLResponseAction(60))
addResponseAction(AndRule{QNameRule('www.example.org.'), TCPRule(false)}, SetMinTTLResponseAction(60))
addResponseAction('alias.example.org.', LimitTTLResponseAction(100, 1000))
addResponseAction('nope.example.org.', LimitTTLResponseAction(400, 1000))
addResponseAction(AndRule{QNameRule('www.example.org.'), TCPRule(true)}, LimitTTLResponseAction(100, 1000, {DNSQType.A}))
