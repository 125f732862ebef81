-- JSON helpers of the stand-in: hand-built output (exact ids, fixed key order,
-- Rails-style escapes) and big-integer-safe decoding of request bodies.
local cjson = require "cjson.safe"

local byte, find, format, gsub, sub = string.byte, string.find, string.format, string.gsub, string.sub
local concat, floor, type, tostring = table.concat, math.floor, type, tostring
local null = cjson.null

local _M = { null = null }

-- Zendesk (Rails) escapes <, > and & as \u003c, \u003e, \u0026; clients must cope.
local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
  ['<'] = '\\u003c', ['>'] = '\\u003e', ['&'] = '\\u0026',
}
local function esc(c)
  return escapes[c] or format("\\u%04x", byte(c))
end

local function str(s)
  return '"' .. gsub(s, '[%c"\\<>&]', esc) .. '"'
end
_M.str = str

local function num(n)
  if n == floor(n) and n > -2^53 and n < 2^53 then
    return format("%d", n)
  end
  local s = format("%.15g", n)
  if tonumber(s) ~= n then s = format("%.17g", n) end
  return s
end
_M.num = num

-- Any plain Lua value (no ids inside: those are spliced in as digit strings).
local function value(v)
  local t = type(v)
  if v == nil or v == null then return "null" end
  if t == "string" then return str(v) end
  if t == "boolean" then return v and "true" or "false" end
  if t == "number" then return num(v) end
  if t == "table" then
    if #v > 0 then
      local out = {}
      for i = 1, #v do out[i] = value(v[i]) end
      return "[" .. concat(out, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local out = {}
    for i, k in ipairs(keys) do out[i] = str(k) .. ":" .. value(v[k]) end
    return "{" .. concat(out, ",") .. "}"
  end
  return "null"
end
_M.value = value

function _M.array(list)
  local out = {}
  for i = 1, #list do out[i] = value(list[i]) end
  return "[" .. concat(out, ",") .. "]"
end

-- An id kept as a decimal string, or nil.
function _M.id(s)
  if s == nil or s == null then return "null" end
  return s
end

-- cjson decodes every number as a double: integer literals of 15 digits or more
-- (ids up to 2^63-1) are wrapped in quotes, outside strings, before decoding, so
-- they arrive as exact digit strings. `mark` is prepended inside the quotes.
local function quote_bigints(text, mark)
  if not find(text, "%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d") then return text end
  mark = mark or ""
  local out, n, last, i, len = {}, 0, 1, 1, #text
  while true do
    local q = find(text, '[%"%-%d]', i)
    if not q then break end
    if byte(text, q) == 34 then
      local j = q + 1
      while true do
        local k = find(text, '["\\]', j)
        if not k then return text end -- unterminated string: let the decoder complain
        if byte(text, k) == 92 then j = k + 2 else j = k break end
      end
      i = j + 1
    else
      local s, e = find(text, "^%-?%d+", q)
      if not s then
        i = q + 1
      else
        local nxt = sub(text, e + 1, e + 1)
        if nxt == "." or nxt == "e" or nxt == "E" then
          local _, fe = find(text, "^[%d%.eE%+%-]*", e + 1)
          i = fe + 1
        else
          local digits = sub(text, s, e)
          if #gsub(digits, "-", "") >= 15 then
            n = n + 1; out[n] = sub(text, last, s - 1)
            n = n + 1; out[n] = '"' .. mark .. digits .. '"'
            last = e + 1
          end
          i = e + 1
        end
      end
    end
    if i > len then break end
  end
  n = n + 1; out[n] = sub(text, last)
  return concat(out)
end
_M.quote_bigints = quote_bigints

-- Decodes a request body; returns the value or nil, err.
function _M.decode(text)
  if text == nil or text == "" then return nil, "empty body" end
  return cjson.decode(quote_bigints(text))
end

-- Canonical decimal id string from a decoded JSON value, or nil when the
-- value is not a non-negative integer ("" and null give nil).
function _M.id_of(v)
  local t = type(v)
  if t == "number" then
    if v >= 0 and v == floor(v) and v < 2^53 then return format("%d", v) end
    return nil
  end
  if t == "string" then
    local d = v:match("^%s*(%d+)%s*$")
    if not d then return nil end
    d = d:gsub("^0+", "")
    if d == "" then d = "0" end
    if #d > 19 or (#d == 19 and d > "9223372036854775807") then return nil end
    return d
  end
  return nil
end

-- Adds a small non-negative integer to a decimal string, exactly.
function _M.add(dec, n)
  local digits, carry, out = dec, n, {}
  for i = #digits, 1, -1 do
    local d = byte(digits, i) - 48 + carry
    out[#out + 1] = d % 10
    carry = floor(d / 10)
  end
  while carry > 0 do
    out[#out + 1] = carry % 10
    carry = floor(carry / 10)
  end
  local s = {}
  for i = #out, 1, -1 do s[#s + 1] = out[i] end
  return concat(s)
end

-- Orders decimal strings numerically.
function _M.id_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

_M.encode = cjson.encode
_M.raw_decode = cjson.decode

return _M
