-- dnsdist's C interface for LuaJIT's FFI (``dnsdist_ffi_*``), written in Lua over
-- triodist's own objects.
--
-- A configuration's ``require("ffi")`` gets a table whose ``cdef``, ``new``, ``cast``,
-- ``string``, ``copy``, ``typeof``... are LuaJIT's own and whose ``C`` finds the
-- ``dnsdist_ffi_*`` names here, anything else in LuaJIT's C namespace.  dnsdist's
-- types (``dnsdist_ffi_raw_value_t``, ``dnsdist_ffi_ednsoption_t``, ...) are declared
-- with LuaJIT's ``ffi.cdef``, so ``ffi.new`` makes them as it does in dnsdist.
--
-- The ``dq`` a LuaFFI function gets is the query's view (rules/luaview.py), not a C
-- pointer: the functions below take it back and read the query through it.  Only the
-- dq of the FFI call running now is accepted (every call gets the same view, so one kept
-- in a global acts on the query of the call running when it is used); outside a call, or
-- any other value, is a Lua error that names the function.  So is a missing argument
-- or a NULL pointer where the function writes its result.  Buffers handed to Lua
-- (a name, an address, the EDNS options) are kept alive until the FFI call ends,
-- which is as long as dnsdist keeps its own (its dq lives for the call).
--
-- Called by config/ffi.py with LuaJIT's ffi module and ``host``, the Python helper
-- that reads what Lua cannot (addresses, tags, EDNS options).  Returns what Python
-- needs: the ffi table configurations get, and the functions that run a LuaFFI
-- function.

local real, host = ...
local C_real = real.C
local new, cast, fstring, typeof, sizeof = real.new, real.cast, real.string, real.typeof, real.sizeof

real.cdef[[
typedef struct dnsdist_ffi_dnsquestion_t dnsdist_ffi_dnsquestion_t;
typedef struct dnsdist_ffi_servers_list_t dnsdist_ffi_servers_list_t;
typedef struct dnsdist_ffi_server_t dnsdist_ffi_server_t;
typedef struct dnsdist_ffi_ednsoption {
  uint16_t optionCode;
  uint16_t len;
  const void* data;
} dnsdist_ffi_ednsoption_t;
typedef struct dnsdist_ffi_http_header {
  const char* name;
  const char* value;
} dnsdist_ffi_http_header_t;
typedef struct dnsdist_ffi_tag {
  const char* name;
  const char* value;
} dnsdist_ffi_tag_t;
typedef struct dnsdist_ffi_raw_value {
  const char* value;
  uint16_t size;
} dnsdist_ffi_raw_value_t;
]]

local NULL_CHARS = cast("const char *", nil)
local raw_value_size = sizeof("dnsdist_ffi_raw_value_t")

-- The FFI call running now: its dq, the servers of a policy's call, what
-- dnsdist_ffi_dnsquestion_set_result was given, and the buffers to keep alive.
local current = nil
local servers = nil
local result = nil
local anchors, anchored = {}, 0
local memo = {}
-- Buffers one call may make: every function caches what it made, so only a function
-- called with ever new arguments (get_tag with new labels) makes more.
local MAX_ANCHORS = 10000

-- What the servers_list argument of a policy is: a token, checked by identity.
local SERVERS_LIST = setmetatable({}, {
  __tostring = function() return "dnsdist_ffi_servers_list_t" end,
  __metatable = false,
})

-- The error names the configuration's line that called the function: the first frame
-- outside this file.
local function fail(name, message)
  local level, info = 2, nil
  while true do
    info = debug.getinfo(level, "S")
    if info == nil or info.source ~= "=triodist-ffi" then break end
    level = level + 1
  end
  error(name .. ": " .. message, info == nil and 0 or level)
end

local function the_dq(dq, name)
  if current == nil or not rawequal(dq, current) then
    fail(name, "expected the dq given to the LuaFFI function running now, got a " .. type(dq))
  end
  return dq
end

local function the_list(list, name)
  if servers == nil or not rawequal(list, SERVERS_LIST) then
    fail(name, "expected the servers list given to the FFI policy running now")
  end
  return servers
end

local function out_pointer(ptr, name, what)
  if type(ptr) ~= "cdata" or ptr == nil then
    fail(name, "expected a pointer to store " .. what .. " into, got " .. tostring(ptr))
  end
  return ptr
end

local function count(value, name)
  local n = tonumber(value)
  if n == nil or n < 0 or n ~= math.floor(n) then
    fail(name, "expected a count, got " .. tostring(value))
  end
  return n
end

local function anchor(value, name)
  if anchored >= MAX_ANCHORS then
    fail(name, "too many buffers made in one FFI call (" .. MAX_ANCHORS .. ")")
  end
  anchored = anchored + 1
  anchors[anchored] = value
  return value
end

-- A string as a NUL-terminated C buffer that lives until the FFI call ends.
local function chars(s, name)
  local buf = anchor(new("char[?]", #s + 1, s), name)
  return cast("const char *", buf)
end

local function memoized(key, make, name)
  local value = memo[key]
  if value == nil then
    value = make(name)
    memo[key] = value
  end
  return value
end

-- The raw values an array of dnsdist_ffi_raw_value_t holds, as Lua strings.  An
-- array's own length bounds the count (a pointer's cannot be checked: as in dnsdist).
local function raw_values(values, n, name)
  if type(values) ~= "cdata" or values == nil then
    fail(name, "expected an array of dnsdist_ffi_raw_value_t, got " .. tostring(values))
  end
  n = count(n, name)
  if tostring(typeof(values)):find("%[") then
    local room = sizeof(values) / raw_value_size
    if n > room then
      fail(name, "count " .. n .. " is larger than the array (" .. room .. ")")
    end
  end
  local out = {}
  for i = 0, n - 1 do
    local entry = values[i]
    if entry.value == nil then
      out[i + 1] = ""
    else
      out[i + 1] = fstring(entry.value, entry.size)
    end
  end
  return out
end

local function address_out(bytes, addr, size, name)
  out_pointer(addr, name, "the address")
  out_pointer(size, name, "its size")
  addr[0] = chars(bytes, name)
  size[0] = #bytes
end

local F = {}

-- --- the query -------------------------------------------------------------------

function F.dnsdist_ffi_dnsquestion_get_qtype(dq)
  return the_dq(dq, "dnsdist_ffi_dnsquestion_get_qtype").qtype
end

function F.dnsdist_ffi_dnsquestion_get_qclass(dq)
  return the_dq(dq, "dnsdist_ffi_dnsquestion_get_qclass").qclass
end

function F.dnsdist_ffi_dnsquestion_get_qname_raw(dq, qname, size)
  local name = "dnsdist_ffi_dnsquestion_get_qname_raw"
  the_dq(dq, name)
  out_pointer(qname, name, "the name")
  out_pointer(size, name, "its size")
  local wire = memoized("qname", function() return host.qname_wire(dq) end, name)
  qname[0] = memoized("qname_buf", function(n) return chars(wire, n) end, name)
  size[0] = #wire
end

function F.dnsdist_ffi_dnsquestion_get_qname_hash(dq, init)
  local name = "dnsdist_ffi_dnsquestion_get_qname_hash"
  return host.qname_hash(the_dq(dq, name), count(init or 0, name))
end

function F.dnsdist_ffi_dnsquestion_get_localaddr(dq, addr, size)
  local name = "dnsdist_ffi_dnsquestion_get_localaddr"
  the_dq(dq, name)
  address_out(host.address(dq, "local", -1), addr, size, name)
end

function F.dnsdist_ffi_dnsquestion_get_remoteaddr(dq, addr, size)
  local name = "dnsdist_ffi_dnsquestion_get_remoteaddr"
  the_dq(dq, name)
  address_out(host.address(dq, "remote", -1), addr, size, name)
end

function F.dnsdist_ffi_dnsquestion_get_masked_remoteaddr(dq, addr, size, bits)
  local name = "dnsdist_ffi_dnsquestion_get_masked_remoteaddr"
  the_dq(dq, name)
  address_out(host.address(dq, "remote", count(bits, name)), addr, size, name)
end

function F.dnsdist_ffi_dnsquestion_get_local_port(dq)
  return host.port(the_dq(dq, "dnsdist_ffi_dnsquestion_get_local_port"), "local")
end

function F.dnsdist_ffi_dnsquestion_get_remote_port(dq)
  return host.port(the_dq(dq, "dnsdist_ffi_dnsquestion_get_remote_port"), "remote")
end

-- The dq's fields read as they are, and its flags set to true or false: one function
-- each, by dnsdist's name (which a misuse's error gives).
for _, pair in ipairs({
  {"rcode", "rcode"}, {"opcode", "opcode"}, {"len", "len"}, {"size", "len"}, {"tcp", "tcp"},
  {"skip_cache", "skipCache"}, {"use_ecs", "useECS"}, {"ecs_override", "ecsOverride"},
}) do
  local getter, field = "dnsdist_ffi_dnsquestion_get_" .. pair[1], pair[2]
  F[getter] = function(dq) return the_dq(dq, getter)[field] end
end

for _, pair in ipairs({
  {"skip_cache", "skipCache"}, {"use_ecs", "useECS"}, {"ecs_override", "ecsOverride"},
}) do
  local setter, field = "dnsdist_ffi_dnsquestion_set_" .. pair[1], pair[2]
  F[setter] = function(dq, value) the_dq(dq, setter)[field] = value and true or false end
end

function F.dnsdist_ffi_dnsquestion_get_ecs_prefix_length(dq)
  return the_dq(dq, "dnsdist_ffi_dnsquestion_get_ecs_prefix_length").ecsPrefixLength
end

function F.dnsdist_ffi_dnsquestion_set_ecs_prefix_length(dq, value)
  local name = "dnsdist_ffi_dnsquestion_set_ecs_prefix_length"
  the_dq(dq, name).ecsPrefixLength = count(value, name) % 65536
end

function F.dnsdist_ffi_dnsquestion_get_add_xpf(dq)
  the_dq(dq, "dnsdist_ffi_dnsquestion_get_add_xpf")
  return false -- triodist adds no XPF record
end

function F.dnsdist_ffi_dnsquestion_is_temp_failure_ttl_set(dq)
  return the_dq(dq, "dnsdist_ffi_dnsquestion_is_temp_failure_ttl_set").tempFailureTTL ~= nil
end

function F.dnsdist_ffi_dnsquestion_get_temp_failure_ttl(dq)
  return the_dq(dq, "dnsdist_ffi_dnsquestion_get_temp_failure_ttl").tempFailureTTL or 0
end

function F.dnsdist_ffi_dnsquestion_set_temp_failure_ttl(dq, ttl)
  local name = "dnsdist_ffi_dnsquestion_set_temp_failure_ttl"
  the_dq(dq, name).tempFailureTTL = count(ttl, name) % 4294967296
end

function F.dnsdist_ffi_dnsquestion_unset_temp_failure_ttl(dq)
  the_dq(dq, "dnsdist_ffi_dnsquestion_unset_temp_failure_ttl").tempFailureTTL = nil
end

function F.dnsdist_ffi_dnsquestion_get_do(dq)
  return the_dq(dq, "dnsdist_ffi_dnsquestion_get_do"):getDO()
end

function F.dnsdist_ffi_dnsquestion_get_sni(dq, sni, size)
  local name = "dnsdist_ffi_dnsquestion_get_sni"
  the_dq(dq, name)
  out_pointer(sni, name, "the SNI")
  out_pointer(size, name, "its size")
  local text = dq:getServerNameIndication()
  sni[0] = memoized("sni", function(n) return chars(text, n) end, name)
  size[0] = #text
end

function F.dnsdist_ffi_dnsquestion_get_tag(dq, label)
  local name = "dnsdist_ffi_dnsquestion_get_tag"
  the_dq(dq, name)
  if label == nil then fail(name, "expected a label") end
  label = type(label) == "string" and label or fstring(label)
  local value = host.tag(dq, label)
  if value == nil then return NULL_CHARS end
  return memoized("tag:" .. label .. "=" .. value, function(n) return chars(value, n) end, name)
end

function F.dnsdist_ffi_dnsquestion_set_tag(dq, label, value)
  local name = "dnsdist_ffi_dnsquestion_set_tag"
  the_dq(dq, name)
  if label == nil or value == nil then fail(name, "expected a label and a value") end
  label = type(label) == "string" and label or fstring(label)
  value = type(value) == "string" and value or fstring(value)
  dq:setTag(label, value)
end

function F.dnsdist_ffi_dnsquestion_get_tag_array(dq, out)
  local name = "dnsdist_ffi_dnsquestion_get_tag_array"
  the_dq(dq, name)
  out_pointer(out, name, "the tags")
  local tags = host.tags(dq)
  local n = #tags
  if n == 0 then return 0 end
  local array = anchor(new("dnsdist_ffi_tag_t[?]", n), name)
  for i = 1, n do
    array[i - 1].name = chars(tags[i][1], name)
    array[i - 1].value = chars(tags[i][2], name)
  end
  out[0] = array
  return n
end

function F.dnsdist_ffi_dnsquestion_get_edns_options(dq, out)
  local name = "dnsdist_ffi_dnsquestion_get_edns_options"
  the_dq(dq, name)
  out_pointer(out, name, "the options")
  local array, n = unpack(memoized("edns", function(fname)
    local options = host.edns_options(dq)
    local total = #options
    if total == 0 then return {nil, 0} end
    local made = anchor(new("dnsdist_ffi_ednsoption_t[?]", total), fname)
    for i = 1, total do
      local code, data = options[i][1], options[i][2]
      made[i - 1].optionCode = code
      made[i - 1].len = #data
      if #data > 0 then
        made[i - 1].data = anchor(new("char[?]", #data + 1, data), fname)
      end
    end
    return {made, total}
  end, name))
  -- As dnsdist: ``out`` is left alone when there is no option.
  if n > 0 then out[0] = array end
  return n
end

function F.dnsdist_ffi_dnsquestion_get_http_headers(dq, out)
  the_dq(dq, "dnsdist_ffi_dnsquestion_get_http_headers")
  return 0 -- no DNS over HTTPS in triodist: no headers, as dnsdist for other queries
end

local function no_http(name)
  F[name] = function(dq)
    the_dq(dq, name)
    return NULL_CHARS
  end
end
no_http("dnsdist_ffi_dnsquestion_get_http_path")
no_http("dnsdist_ffi_dnsquestion_get_http_query_string")
no_http("dnsdist_ffi_dnsquestion_get_http_host")
no_http("dnsdist_ffi_dnsquestion_get_http_scheme")

function F.dnsdist_ffi_dnsquestion_set_http_response(dq)
  the_dq(dq, "dnsdist_ffi_dnsquestion_set_http_response") -- not DoH: nothing, as dnsdist
end

function F.dnsdist_ffi_dnsquestion_send_trap(dq)
  the_dq(dq, "dnsdist_ffi_dnsquestion_send_trap") -- no SNMP agent: nothing, as dnsdist
end

function F.dnsdist_ffi_dnsquestion_set_result(dq, str, size)
  local name = "dnsdist_ffi_dnsquestion_set_result"
  the_dq(dq, name)
  if type(str) == "string" then
    result = str:sub(1, size and count(size, name) or #str)
  elseif type(str) == "cdata" and str ~= nil then
    result = fstring(str, count(size, name))
  else
    fail(name, "expected a string, got " .. tostring(str))
  end
end

function F.dnsdist_ffi_dnsquestion_set_rcode(dq, rcode)
  local name = "dnsdist_ffi_dnsquestion_set_rcode"
  host.set_rcode(the_dq(dq, name), count(rcode, name))
end

function F.dnsdist_ffi_dnsquestion_spoof_raw(dq, values, n)
  local name = "dnsdist_ffi_dnsquestion_spoof_raw"
  the_dq(dq, name)
  host.spoof_raw(dq, raw_values(values, n, name))
end

function F.dnsdist_ffi_dnsquestion_spoof_addrs(dq, values, n)
  local name = "dnsdist_ffi_dnsquestion_spoof_addrs"
  the_dq(dq, name)
  host.spoof_addrs(dq, raw_values(values, n, name))
end

function F.dnsdist_ffi_dnsquestion_get_trailing_data(dq, out)
  local name = "dnsdist_ffi_dnsquestion_get_trailing_data"
  the_dq(dq, name)
  out_pointer(out, name, "the data")
  local data = dq:getTrailingData()
  if #data > 0 then out[0] = chars(data, name) end
  return #data
end

function F.dnsdist_ffi_dnsquestion_set_trailing_data(dq, data, size)
  local name = "dnsdist_ffi_dnsquestion_set_trailing_data"
  the_dq(dq, name)
  if type(data) == "cdata" and data ~= nil then
    data = fstring(data, count(size, name))
  elseif type(data) == "string" then
    data = data:sub(1, size and count(size, name) or #data)
  else
    fail(name, "expected the data, got " .. tostring(data))
  end
  return dq:setTrailingData(data)
end

-- --- a policy's servers -----------------------------------------------------------

local function server_of(server, name)
  if type(server) ~= "cdata" then
    fail(name, "expected a server from dnsdist_ffi_servers_list_get_server, got " .. type(server))
  end
  if servers == nil then
    fail(name, "a server is only valid during the FFI policy call that got it")
  end
  local place = tonumber(cast("uintptr_t", server))
  local found = servers[place]
  if found == nil then
    fail(name, "expected a server from dnsdist_ffi_servers_list_get_server")
  end
  return found, place
end

function F.dnsdist_ffi_servers_list_get_count(list)
  return #the_list(list, "dnsdist_ffi_servers_list_get_count")
end

function F.dnsdist_ffi_servers_list_get_server(list, idx, out)
  local name = "dnsdist_ffi_servers_list_get_server"
  local all = the_list(list, name)
  local i = count(idx, name)
  if i >= #all then
    fail(name, "index " .. i .. " out of range (" .. #all .. " servers)")
  end
  out_pointer(out, name, "the server")
  -- The server's 1-based place in the list, as an opaque pointer (the struct has no
  -- fields Lua could read): server_of turns it back.
  out[0] = cast("const dnsdist_ffi_server_t *", i + 1)
end

function F.dnsdist_ffi_server_get_outstanding(server)
  return server_of(server, "dnsdist_ffi_server_get_outstanding"):getOutstanding()
end

function F.dnsdist_ffi_server_is_up(server)
  return server_of(server, "dnsdist_ffi_server_is_up"):isUp()
end

function F.dnsdist_ffi_server_get_name(server)
  local name = "dnsdist_ffi_server_get_name"
  local s, place = server_of(server, name)
  return memoized("name:" .. place, function(n) return chars(s:getName(), n) end, name)
end

function F.dnsdist_ffi_server_get_name_with_addr(server)
  local name = "dnsdist_ffi_server_get_name_with_addr"
  local s, place = server_of(server, name)
  return memoized("name_with_addr:" .. place, function(n)
    return chars(s:getNameWithAddr(), n)
  end, name)
end

function F.dnsdist_ffi_server_get_weight(server)
  return server_of(server, "dnsdist_ffi_server_get_weight").weight
end

function F.dnsdist_ffi_server_get_order(server)
  return server_of(server, "dnsdist_ffi_server_get_order").order
end

function F.dnsdist_ffi_server_get_latency(server)
  return server_of(server, "dnsdist_ffi_server_get_latency"):getLatency()
end

-- --- ffi.C and ffi ----------------------------------------------------------------

-- A dnsdist_ffi_* name triodist lacks is a function that fails when called, naming
-- itself: a configuration that only mentions it still loads, as in dnsdist.
local function missing(name)
  return function()
    error(name .. ": not supported by triodist (docs/reference/ffi.md lists the "
      .. "dnsdist_ffi_* functions it has)", 2)
  end
end

local C = setmetatable({}, {
  __index = function(C, key)
    local found = F[key]
    if found ~= nil then
      rawset(C, key, found) -- found directly from now on
      return found
    end
    if type(key) == "string" and key:sub(1, 12) == "dnsdist_ffi_" then
      return missing(key)
    end
    return C_real[key]
  end,
  __newindex = function(_, key, value)
    C_real[key] = value
  end,
  __tostring = function() return "ffi.C (with dnsdist's functions)" end,
})

local ffi = setmetatable({C = C}, {__index = real})

-- --- running a LuaFFI function ----------------------------------------------------

-- Runs f(first, second) as the FFI call of ``dq`` (and of ``list``'s servers), then
-- lets its buffers go, whatever happened.  A nested call keeps the outer call's state.
local function run(f, dq, list, first, second)
  if current ~= nil then
    local saved = {current, servers, result, anchors, anchored, memo}
    current, servers, result, anchors, anchored, memo = dq, list, nil, {}, 0, {}
    local ok, value = pcall(f, first, second)
    local set = result
    current, servers, result, anchors, anchored, memo = unpack(saved, 1, 6)
    if not ok then error(value, 0) end
    return value, set
  end
  current, servers, result = dq, list, nil
  local ok, value = pcall(f, first, second)
  local set = result
  current, servers, result = nil, nil, nil
  -- New tables only when the call used them: most calls make no buffer.
  if anchored > 0 then anchors, anchored = {}, 0 end
  if next(memo) ~= nil then memo = {} end
  if not ok then error(value, 0) end
  return value, set
end

-- A LuaFFIAction's or LuaFFIResponseAction's function: its verdict (a number) and
-- what it gave dnsdist_ffi_dnsquestion_set_result.
local function action(f, dq)
  local verdict, set = run(f, dq, nil, dq)
  local number = tonumber(verdict)
  if number == nil then
    error("the LuaFFI action's function returned " .. tostring(verdict) .. ", not a number", 0)
  end
  return number, set or ""
end

-- A LuaFFIRule's function: whether it matches.
local function rule(f, dq)
  return run(f, dq, nil, dq) and true or false
end

-- An FFI server policy's function(servers_list, dq): the 0-based index it chose, or
-- nil for a value that is not a number.
local function policy(f, list, dq)
  local chosen = run(f, dq, list, SERVERS_LIST, dq)
  return tonumber(chosen)
end

-- The code of a per-thread function: a chunk that returns the function.  It runs in
-- an environment of its own (its globals stay its own), reading the configuration's.
local function load_code(code, chunkname)
  local env = setmetatable({}, {__index = _G})
  local chunk, message = load(code, chunkname, "t", env)
  if chunk == nil then return nil, message end
  local ok, f = pcall(chunk)
  if not ok then return nil, tostring(f) end
  if type(f) ~= "function" then
    return nil, "the code returned " .. type(f) .. ", not a function"
  end
  return f
end

local names = {}
for name in pairs(F) do names[#names + 1] = name end
table.sort(names)

return {ffi = ffi, action = action, rule = rule, policy = policy, load_code = load_code,
        names = names}
