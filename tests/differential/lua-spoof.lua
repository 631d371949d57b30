-- @describe Spoofing from Lua: dq:spoof with a table of addresses or of raw rdata,
-- @describe DNSAction.SpoofRaw returned by a LuaAction (AA kept from dh:setAA), and
-- @describe LuaJIT's FFI: LuaFFIAction and LuaFFIRule with dnsdist_ffi_* functions
-- @describe (qtype, qname, EDNS options, tags, set_result, spoof_raw, spoof_addrs,
-- @describe set_rcode); getStatisticsCounters() as a Lua table.
-- @query udp addrs.ls.example.org A expect=NOERROR reached=0
-- @query tcp addrs.ls.example.org AAAA expect=NOERROR reached=0
-- @query udp addrs.ls.example.org A +do
-- @query udp addrs.ls.example.org MX reached=1
-- @query udp empty.ls.example.org A reached=1
-- @query udp raw.ls.example.org TXT expect=NOERROR reached=0
-- @query udp raw.ls.example.org TXT +do
-- @query udp rawaa.ls.example.org SRV reached=0
-- @query udp mixed.ls.example.org A expect=SERVFAIL reached=0
-- @query udp spoofraw.ls.example.org A expect=NOERROR reached=0
-- @query tcp spoofraw.ls.example.org A
-- @query udp spoofraw-empty.ls.example.org A reached=1
-- @query udp ffi-raw.ls.example.org A expect=NOERROR reached=0
-- @query udp ffi-raw.ls.example.org TXT expect=NOERROR reached=0
-- @query udp ffi-raw.ls.example.org MX reached=1
-- @query udp ffi-addrs.ls.example.org AAAA expect=NOERROR reached=0
-- @query udp ffi-result.ls.example.org A expect=NOERROR reached=0
-- @query udp ffi-qname.ls.example.org A expect=NOERROR reached=0
-- @query udp ffi-edns.ls.example.org A expect=NOERROR
-- @query udp ffi-edns.ls.example.org A +edns
-- @query udp ffi-rcode.ls.example.org A expect=REFUSED reached=0
-- @query udp ffi-tag.ls.example.org A expect=NOERROR reached=0
-- @query udp ffi-rule.ls.example.org A expect=NXDOMAIN reached=0
-- @query udp stats.ls.example.org A expect=NOERROR reached=0
-- @query udp www.example.org A expect=NOERROR reached=1
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

local ffi = require("ffi")
local C = ffi.C

local function spoof_table(dq)
  local name = dq.qname:toString()
  if name == 'addrs.ls.example.org.' then
    dq:spoof({newCA('192.0.2.1'), newCA('2001:db8::1')})
  elseif name == 'empty.ls.example.org.' then
    dq:spoof({})
  elseif name == 'raw.ls.example.org.' then
    dq:spoof({'\003one\003two', '\005three'})
  elseif name == 'rawaa.ls.example.org.' then
    dq.dh:setAA(true)
    dq:spoof({'\000\001\000\002\000\053\003srv\007example\003org\000'})
  elseif name == 'mixed.ls.example.org.' then
    dq:spoof({newCA('192.0.2.1'), '\192\000\002\001'})
  end
  return DNSAction.HeaderModify
end
local spoofed = newDNSNameSet()
for _, label in ipairs({'addrs', 'empty', 'raw', 'rawaa', 'mixed'}) do
  spoofed:add(newDNSName(label .. '.ls.example.org.'))
end
addAction(QNameSetRule(spoofed), LuaAction(spoof_table))

addAction('spoofraw.ls.example.org.', LuaAction(function(dq)
  return DNSAction.SpoofRaw, '\192\000\002\007,\192\000\002\008'
end))
addAction('spoofraw-empty.ls.example.org.', LuaAction(function(dq)
  return DNSAction.SpoofRaw, ''
end))

local function raw_values(list)
  local values = ffi.new('dnsdist_ffi_raw_value_t[?]', #list)
  for i, str in ipairs(list) do
    values[i - 1].value = str
    values[i - 1].size = #str
  end
  return values
end

local keep = {}
addAction('ffi-raw.ls.example.org.', LuaFFIAction(function(dq)
  local qtype = C.dnsdist_ffi_dnsquestion_get_qtype(dq)
  if qtype == DNSQType.A then
    keep = {'\192\000\002\010', '\192\000\002\011'}
  elseif qtype == DNSQType.TXT then
    keep = {'\020a comma, in the text'}
  else
    return DNSAction.None
  end
  C.dnsdist_ffi_dnsquestion_spoof_raw(dq, raw_values(keep), #keep)
  return DNSAction.HeaderModify
end))

addAction('ffi-addrs.ls.example.org.', LuaFFIAction(function(dq)
  keep = {'\192\000\002\012', '\032\001\013\184\000\000\000\000\000\000\000\000\000\000\000\012'}
  C.dnsdist_ffi_dnsquestion_spoof_addrs(dq, raw_values(keep), #keep)
  return DNSAction.HeaderModify
end))

local function result(dq, text)
  local buf = ffi.new('char[?]', #text + 1)
  ffi.copy(buf, text)
  C.dnsdist_ffi_dnsquestion_set_result(dq, buf, #text)
  return DNSAction.Spoof
end

addAction('ffi-result.ls.example.org.', LuaFFIAction(function(dq)
  return result(dq, '192.0.2.13')
end))

addAction('ffi-qname.ls.example.org.', LuaFFIAction(function(dq)
  local ptr = ffi.new('const char *[1]')
  local size = ffi.new('size_t[1]')
  C.dnsdist_ffi_dnsquestion_get_qname_raw(dq, ptr, size)
  local wire = ffi.string(ptr[0], size[0])
  -- 9ffi-qname2ls7example3org0: 26 bytes, the first label's length (9) first
  return result(dq, '192.0.2.' .. #wire .. ',192.0.2.' .. wire:byte(1) .. '0')
end))

addAction('ffi-edns.ls.example.org.', LuaFFIAction(function(dq)
  local options = ffi.new('const dnsdist_ffi_ednsoption_t *[1]')
  local count = tonumber(C.dnsdist_ffi_dnsquestion_get_edns_options(dq, options))
  return result(dq, '192.0.2.' .. (100 + count))
end))

addAction('ffi-rcode.ls.example.org.', LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_set_rcode(dq, DNSRCode.REFUSED)
  return DNSAction.HeaderModify
end))

addAction('ffi-tag.ls.example.org.', LuaFFIAction(function(dq)
  C.dnsdist_ffi_dnsquestion_set_tag(dq, 'colour', 'blue')
  local missing = C.dnsdist_ffi_dnsquestion_get_tag(dq, 'none')
  local value = ffi.string(C.dnsdist_ffi_dnsquestion_get_tag(dq, 'colour'))
  if missing == nil and value == 'blue' then
    return result(dq, '192.0.2.14')
  end
  return result(dq, '192.0.2.15')
end))

addAction(LuaFFIRule(function(dq)
  local ptr = ffi.new('const char *[1]')
  local size = ffi.new('size_t[1]')
  C.dnsdist_ffi_dnsquestion_get_qname_raw(dq, ptr, size)
  return ffi.string(ptr[0], size[0]):find('ffi%-rule') ~= nil
end), RCodeAction(DNSRCode.NXDOMAIN))

addAction('stats.ls.example.org.', LuaAction(function(dq)
  local counters = getStatisticsCounters()
  if counters['queries'] > 0 and counters['rule-drop'] == 0 then
    return DNSAction.Spoof, '192.0.2.16'
  end
  return DNSAction.Spoof, '192.0.2.17'
end))
