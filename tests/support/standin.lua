-- Test helper: starts and stops the Zendesk stand-in (tests/fake_zendesk/ctl)
-- and talks to it over HTTP with the curl command line. Lua 5.4 and LuaJIT.
local cjson = require "cjson.safe"

local standin = {
  EMAIL = "admin@example.com",
  TOKEN = "stand-in-token",
  OAUTH_ACCESS = "stand-in-oauth",
  OAUTH_REFRESH = "stand-in-refresh",
  CLIENT_ID = "stand-in-client",
  CLIENT_SECRET = "stand-in-secret",
  null = cjson.null,
}

-- Repository root, from where this file lives (works with relative lpaths).
local function repo_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local root = src:match("^(.*)tests/support/standin%.lua$") or ""
  if root:sub(1, 1) ~= "/" then
    local p = io.popen("pwd")
    local cwd = p:read("*l")
    p:close()
    root = cwd .. "/" .. root:gsub("^%./", "")
  end
  return root
end
standin.ROOT = repo_root()
standin.CTL = standin.ROOT .. "tests/fake_zendesk/ctl"

package.path = standin.ROOT .. "tests/fake_zendesk/lua/?.lua;" .. package.path
local zjson = require "fake_zendesk.json"

local has_int = math.type ~= nil

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
standin.shell_quote = shell_quote

-- Runs a shell command; returns its stdout and exit code (same on 5.1 and 5.4).
local function sh(cmd)
  local p = assert(io.popen(cmd .. '; printf "\\n__EXIT:%s" "$?"', "r"))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.*)\n__EXIT:(%d+)$")
  return body or out, tonumber(code) or -1
end
standin.sh = sh

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- File helpers the specs share.
standin.read_file = read_file     -- contents, or nil when the file does not exist

-- The lines of a file that match a Lua pattern (0 when the file does not exist): a report or a
-- journal read while the process writing it may have been killed.
function standin.count_matches(path, pattern)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = 0
  for line in f:lines() do
    if line:find(pattern) then n = n + 1 end
  end
  f:close()
  return n
end
standin.write_file = write_file

-- A fresh temporary path (not created), with an optional extension.
function standin.tmpname(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. (ext or "")
end

-- The permission bits of a file, as stat prints them ("600").
function standin.mode_of(path)
  return (sh("stat -c %a " .. standin.shell_quote(path)):gsub("%s+$", ""))
end

-- JSON ----------------------------------------------------------------------

local array_mt = {}
-- Marks a table to be encoded as a JSON array even when empty.
function standin.array(t)
  return setmetatable(t or {}, array_mt)
end

local function encode(v)
  local t = type(v)
  if v == nil or v == cjson.null then return "null" end
  if t == "boolean" then return v and "true" or "false" end
  if t == "number" then
    if has_int and math.type(v) == "integer" then return string.format("%d", v) end
    if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return string.format("%.0f", v) end
    return string.format("%.17g", v)
  end
  if t == "string" then return cjson.encode(v) end
  if t == "table" then
    local n = #v
    if n > 0 or getmetatable(v) == array_mt then
      local out = {}
      for i = 1, n do out[i] = encode(v[i]) end
      return "[" .. table.concat(out, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local out = {}
    for i, k in ipairs(keys) do out[i] = cjson.encode(k) .. ":" .. encode(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  error("cannot encode a " .. t .. " as JSON", 2)
end
-- Encodes integers exactly (Lua 5.4 integers up to 2^63-1), unlike cjson 2.1.0.
standin.encode = encode

local BIG = "#bigint#"

local function exact(v)
  local t = type(v)
  if t == "string" and v:sub(1, #BIG) == BIG then
    local digits = v:sub(#BIG + 1)
    local n = tonumber(digits)
    if has_int then return math.tointeger(n) or n end
    if math.abs(n) < 2 ^ 53 then return n end
    return digits -- LuaJIT: beyond 2^53 only the digits are exact
  elseif t == "number" then
    if has_int and v == math.floor(v) and math.abs(v) < 2 ^ 63 then return math.tointeger(v) or v end
    return v
  elseif t == "table" then
    for k, x in pairs(v) do v[k] = exact(x) end
  end
  return v
end

-- Decodes JSON with integers exact: big literals are quoted before cjson sees
-- them, then every integral number becomes a Lua integer (5.4).
function standin.decode(text)
  if type(text) ~= "string" then return nil, "not a string" end
  local v, err = cjson.decode(zjson.quote_bigints(text, BIG))
  if v == nil then return nil, err end
  return exact(v)
end

-- A small JSON parser that keeps each object's key order (standin.keys_of)
-- and integers exact; for comparing shapes with recorded Zendesk answers.
local key_order = setmetatable({}, { __mode = "k" })

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

function standin.decode_ordered(text)
  local pos = 1
  local function fail(what)
    error(string.format("JSON: %s at byte %d", what, pos), 0)
  end
  local function ws()
    pos = text:find("[^ \t\r\n]", pos) or #text + 1
  end
  local parse
  local function str()
    local out, i = {}, pos + 1
    while true do
      local s = text:find('["\\]', i)
      if not s then fail("unterminated string") end
      out[#out + 1] = text:sub(i, s - 1)
      if text:sub(s, s) == '"' then pos = s + 1 break end
      local c = text:sub(s + 1, s + 1)
      if c == "u" then
        local cp = tonumber(text:sub(s + 2, s + 5), 16) or fail("bad \\u escape")
        local nxt = s + 6
        if cp >= 0xD800 and cp < 0xDC00 and text:sub(nxt, nxt + 1) == "\\u" then
          local lo = tonumber(text:sub(nxt + 2, nxt + 5), 16)
          if lo and lo >= 0xDC00 and lo < 0xE000 then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            nxt = nxt + 6
          end
        end
        out[#out + 1] = utf8_char(cp)
        i = nxt
      else
        out[#out + 1] = ESC[c] or fail("bad escape")
        i = s + 2
      end
    end
    return table.concat(out)
  end
  function parse()
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj, keys = {}, {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1 key_order[obj] = keys return obj end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        ws()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        keys[#keys + 1] = k
        obj[k] = parse()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then break end
        if d ~= "," then fail("expected ',' or '}'") end
      end
      key_order[obj] = keys
      return obj
    elseif c == "[" then
      local arr, n = {}, 0
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return setmetatable(arr, array_mt) end
      while true do
        n = n + 1
        arr[n] = parse()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then break end
        if d ~= "," then fail("expected ',' or ']'") end
      end
      return setmetatable(arr, array_mt)
    elseif c == '"' then
      return str()
    elseif text:find("^true", pos) then pos = pos + 4 return true
    elseif text:find("^false", pos) then pos = pos + 5 return false
    elseif text:find("^null", pos) then pos = pos + 4 return cjson.null
    end
    local s, e = text:find("^%-?%d+%.?%d*[eE]?[%+%-]?%d*", pos)
    if not s then fail("unexpected character") end
    local lit = text:sub(s, e)
    pos = e + 1
    if lit:find("^%-?%d+$") then
      local n = tonumber(lit)
      if has_int then return math.tointeger(n) or n end
      if math.abs(n) >= 2 ^ 53 then return lit end
      return n
    end
    return tonumber(lit)
  end
  local ok, v = pcall(parse)
  if not ok then return nil, v end
  ws()
  if pos <= #text then return nil, "JSON: trailing data at byte " .. pos end
  return v
end

-- The keys of an object from decode_ordered, in document order.
function standin.keys_of(obj)
  return key_order[obj]
end

-- Starting and stopping --------------------------------------------------------

local Standin = {}
Standin.__index = Standin

-- opts: tls (boolean), port (number; nil picks a free one).
function standin.start(opts)
  opts = opts or {}
  local errfile = os.tmpname()
  local cmd = shell_quote(standin.CTL) .. " start --port " .. (opts.port and tostring(opts.port) or "auto")
    .. (opts.tls and " --tls" or "") .. " 2>" .. shell_quote(errfile)
  local out, code = sh(cmd)
  local err = read_file(errfile) or ""
  os.remove(errfile)
  local url = out:match("([^\n]+)%s*$")
  if code ~= 0 or not url or not url:match("^https?://") then
    error("the Zendesk stand-in did not start (" .. cmd .. ", exit " .. code .. "):\n" .. out .. "\n" .. err, 2)
  end
  local s = setmetatable({ url = url, tls = opts.tls and true or false, stderr = err }, Standin)
  s.port = tonumber(url:match(":(%d+)$"))
  if s.tls then
    s.ca_file = err:match("ca_file: ([^\n]+)") or (standin.ROOT .. "tests/fake_zendesk/run/" .. s.port .. "/ca.pem")
  end
  return s
end

function Standin:stop()
  local out, code = sh(shell_quote(standin.CTL) .. " stop --port " .. self.port .. " 2>&1")
  if code ~= 0 then error("ctl stop failed: " .. out, 2) end
  return true
end

-- HTTP ------------------------------------------------------------------------

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  return ((s:gsub(".", function(c)
    local b, r = c:byte(), ""
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return B64:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
standin.base64 = base64

standin.BASIC = "Basic " .. base64(standin.EMAIL .. "/token:" .. standin.TOKEN)

local function tls_args(self)
  return self.tls and (" --cacert " .. shell_quote(self.ca_file)) or ""
end

local function parse_headers(raw)
  local headers, list, status_line = {}, {}, nil
  -- with redirects/100-continue several blocks may appear: keep the last
  for block in (raw or ""):gmatch("(HTTP/[^\r\n]*\r?\n.-)\r?\n\r?\n") do
    headers, list = {}, {}
    status_line = block:match("^(HTTP/[^\r\n]*)")
    for name, value in block:gmatch("\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
      local k = name:lower()
      list[#list + 1] = { name, value }
      if headers[k] then headers[k] = headers[k] .. ", " .. value else headers[k] = value end
    end
  end
  return headers, list, status_line
end

-- One HTTP request. opts: body (string, or table -> JSON), auth ("basic" default,
-- "none", "bearer" for the default OAuth token, or a full Authorization value),
-- headers {name = value}, compressed (curl --compressed), timeout (s), url (absolute),
-- tls_verify = false (skip --cacert). Returns {status, headers (lowercase keys),
-- header_list, body, exit (curl exit code), time (s)}; status 0 on transport errors.
function Standin:http(method, path, opts)
  opts = opts or {}
  local hfile, bfile = os.tmpname(), os.tmpname()
  local parts = { "curl -sS -X " .. method, "-D " .. shell_quote(hfile), "-o " .. shell_quote(bfile),
    "-w '%{http_code} %{time_total}'", "--max-time " .. (opts.timeout or 20) }
  local auth = opts.auth or "basic"
  if auth == "basic" then
    parts[#parts + 1] = "-H " .. shell_quote("Authorization: " .. standin.BASIC)
  elseif auth == "bearer" then
    parts[#parts + 1] = "-H " .. shell_quote("Authorization: Bearer " .. standin.OAUTH_ACCESS)
  elseif auth ~= "none" then
    parts[#parts + 1] = "-H " .. shell_quote("Authorization: " .. auth)
  end
  local infile
  if opts.body ~= nil then
    local body = type(opts.body) == "table" and encode(opts.body) or opts.body
    infile = os.tmpname()
    write_file(infile, body)
    parts[#parts + 1] = "--data-binary @" .. shell_quote(infile)
    if not (opts.headers and (opts.headers["Content-Type"] or opts.headers["content-type"])) then
      parts[#parts + 1] = "-H 'Content-Type: application/json'"
    end
  end
  for k, v in pairs(opts.headers or {}) do
    parts[#parts + 1] = "-H " .. shell_quote(k .. ": " .. v)
  end
  if opts.compressed then parts[#parts + 1] = "--compressed" end
  if opts.tls_verify ~= false then parts[#parts + 1] = tls_args(self) end
  parts[#parts + 1] = shell_quote(opts.url or (self.url .. path))
  local out, exit = sh(table.concat(parts, " ") .. " 2>/dev/null")
  local res = { exit = exit, body = read_file(bfile) or "" }
  local code, total = out:match("(%d%d%d) ([%d%.]+)%s*$")
  res.status = tonumber(code) or 0
  res.time = tonumber(total)
  res.headers, res.header_list = parse_headers(read_file(hfile))
  os.remove(hfile)
  os.remove(bfile)
  if infile then os.remove(infile) end
  function res.json()
    return standin.decode(res.body)
  end
  return res
end

-- n requests at once, each on its own connection (separate curl processes).
-- Returns a list of {status = n, worker = "<pid>"} in completion order.
function Standin:http_parallel(n, method, path, opts)
  opts = opts or {}
  local body = ""
  if opts.body ~= nil then
    local infile = os.tmpname()
    write_file(infile, type(opts.body) == "table" and encode(opts.body) or opts.body)
    body = " -H 'Content-Type: application/json' --data-binary @" .. shell_quote(infile)
    opts.infile = infile
  end
  local one = "curl -s -o /dev/null -X " .. method .. " -H " .. shell_quote("Authorization: " .. standin.BASIC)
    .. body .. tls_args(self) .. " -w '%{http_code} %header{x-stand-in-worker}\\n' " .. shell_quote(self.url .. path)
  local cmd = "for i in $(seq 1 " .. n .. "); do " .. one .. " & done; wait"
  local out = sh(cmd)
  if opts.infile then os.remove(opts.infile) end
  local results = {}
  for code, worker in out:gmatch("(%d%d%d) ?([^\n]*)") do
    results[#results + 1] = { status = tonumber(code), worker = worker }
  end
  return results
end

-- Admin -----------------------------------------------------------------------

-- Generic admin call: returns status, decoded body (or the raw text).
function Standin:admin(method, path, body)
  local res = self:http(method, path, { auth = "none", body = body })
  if res.status == 0 then
    error("stand-in admin " .. method .. " " .. path .. ": no answer (curl exit " .. res.exit .. ")", 2)
  end
  local v = standin.decode(res.body)
  if v == nil then v = res.body end
  return res.status, v
end

local function ok(self, method, path, body)
  local status, v = self:admin(method, path, body)
  if status ~= 200 then
    error("stand-in admin " .. method .. " " .. path .. " answered " .. status .. ": " .. encode(v), 3)
  end
  return v
end

function Standin:reset()
  return ok(self, "POST", "/__admin/reset")
end

function Standin:config(t)
  if t == nil then return ok(self, "GET", "/__admin/config") end
  return ok(self, "POST", "/__admin/config", t)
end

function Standin:fault(t)
  return ok(self, "POST", "/__admin/faults", t).fault
end

function Standin:clear_faults()
  return ok(self, "DELETE", "/__admin/faults")
end

function Standin:users(include_deleted)
  return ok(self, "GET", "/__admin/users" .. (include_deleted and "?deleted=1" or "")).users
end

function Standin:requests()
  return ok(self, "GET", "/__admin/requests").requests
end

function Standin:stats()
  return ok(self, "GET", "/__admin/stats")
end

return standin
