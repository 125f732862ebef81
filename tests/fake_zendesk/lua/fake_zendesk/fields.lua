-- Custom user fields of the stand-in: the `user_fields` config (the map form
-- {"vip": "checkbox"} and the ordered list form with details) normalised into field
-- definitions, the checks Zendesk applies to a value of each of the ten types, and the
-- GET /api/v2/user_fields representation.
local json = require "fake_zendesk.json"

local null = json.null
local str, num = json.str, json.num
local concat, format, floor = table.concat, string.format, math.floor
local type, tostring, pairs, ipairs, tonumber = type, tostring, pairs, ipairs, tonumber

local _M = {}

local TYPE_LIST = { "text", "textarea", "checkbox", "date", "integer", "decimal", "regexp", "dropdown",
  "lookup", "multiselect" }
local TYPES = {}
for _, t in ipairs(TYPE_LIST) do TYPES[t] = true end
_M.TYPES = TYPES
local WITH_OPTIONS = { dropdown = true, multiselect = true }

local FIELD_ID_BASE = "360000000000"  -- field ids: base + position
local OPTION_ID_BASE = "361000000000" -- option ids: base + running number over all fields
_M.CREATED_AT = "2024-01-15T09:30:00Z" -- every configured field's created_at / updated_at

local DEF_KEYS = {
  key = true, type = true, title = true, description = true, active = true, options = true, regexp = true,
  tag = true,
}

local function type_list()
  return concat(TYPE_LIST, ", ")
end

local function is_array(t)
  if next(t) == nil then return true end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
    n = n + 1
  end
  return n == #t
end

-- One option: "gold" or {name=, value=}; returns {name, value} or nil, message.
local function option_of(o, where)
  if type(o) == "string" then
    if o == "" then return nil, where .. ": an option value must be a non-empty string" end
    return { name = o, value = o }
  end
  if type(o) ~= "table" or type(o.value) ~= "string" or o.value == "" then
    return nil, where .. ": an option is a non-empty string or {\"name\": ..., \"value\": \"...\"}"
  end
  for k in pairs(o) do
    if k ~= "name" and k ~= "value" then return nil, where .. ": unknown option key '" .. tostring(k) .. "'" end
  end
  if o.name ~= nil and (type(o.name) ~= "string" or o.name == "") then
    return nil, where .. ": an option's name must be a non-empty string"
  end
  return { name = o.name or o.value, value = o.value }
end

-- One field from the config (`spec` a type name or a table) -> definition, or nil, message.
local function def_of(key, spec, where)
  if type(key) ~= "string" or not key:find("^[%w_]+$") or key:find("^%d+$") then
    return nil, where .. ": key must be letters, digits and underscores (not only digits), got "
      .. (type(key) == "string" and ("'" .. key .. "'") or type(key))
  end
  if type(spec) == "string" then spec = { type = spec } end
  if type(spec) ~= "table" then return nil, where .. ": a field is a type name or an object" end
  for k in pairs(spec) do
    if not DEF_KEYS[k] then return nil, where .. ": unknown field key '" .. tostring(k) .. "'" end
  end
  local t = spec.type
  if t == nil then t = "text" end
  if not TYPES[t] then return nil, where .. ": type must be one of " .. type_list() end
  local def = { key = key, type = t, active = true }
  for _, k in ipairs{ "title", "description", "tag" } do
    local v = spec[k]
    if v ~= nil and v ~= null then
      if type(v) ~= "string" then return nil, where .. ": " .. k .. " must be a string" end
      def[k] = v
    end
  end
  def.title = def.title or key
  if spec.active ~= nil then
    if type(spec.active) ~= "boolean" then return nil, where .. ": active must be true or false" end
    def.active = spec.active
  end
  if spec.options ~= nil and spec.options ~= null then
    if not WITH_OPTIONS[t] then return nil, where .. ": options are for dropdown and multiselect fields only" end
    if type(spec.options) ~= "table" or not is_array(spec.options) then
      return nil, where .. ": options must be a list"
    end
    local opts, seen = {}, {}
    for i, o in ipairs(spec.options) do
      local opt, err = option_of(o, where .. ".options[" .. i .. "]")
      if not opt then return nil, err end
      if seen[opt.value] then return nil, where .. ": option value '" .. opt.value .. "' twice" end
      seen[opt.value] = true
      opts[i] = opt
    end
    def.options = opts
  end
  if spec.regexp ~= nil and spec.regexp ~= null then
    if t ~= "regexp" then return nil, where .. ": regexp is for regexp fields only" end
    if type(spec.regexp) ~= "string" then return nil, where .. ": regexp must be a string" end
    def.regexp = spec.regexp
  end
  return def
end

-- The config's `user_fields` (map or list) -> ordered list of definitions, or nil, message.
-- The map form is ordered by key; the list form keeps its order.
function _M.normalize(v)
  if type(v) ~= "table" then
    return nil, "user_fields must be an object {key: type} or a list of {key, type, ...}"
  end
  local defs = {}
  if is_array(v) then
    local seen = {}
    for i, spec in ipairs(v) do
      if type(spec) ~= "table" then return nil, "user_fields[" .. i .. "]: a field is an object {key, type, ...}" end
      local def, err = def_of(spec.key, spec, "user_fields[" .. i .. "]")
      if not def then return nil, err end
      if seen[def.key] then return nil, "user_fields[" .. i .. "]: key '" .. def.key .. "' twice" end
      seen[def.key] = true
      defs[#defs + 1] = def
    end
  else
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" then return nil, "user_fields: keys must be strings" end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local spec = v[k]
      if type(spec) == "table" and spec.key ~= nil and spec.key ~= k then
        return nil, "user_fields." .. k .. ": key '" .. tostring(spec.key) .. "' differs from its name"
      end
      if type(spec) == "table" then
        local copy = {}
        for kk, vv in pairs(spec) do if kk ~= "key" then copy[kk] = vv end end
        spec = copy
      end
      local def, err = def_of(k, spec, "user_fields." .. k)
      if not def then return nil, err end
      defs[#defs + 1] = def
    end
  end
  local opt_n = 0
  for i, def in ipairs(defs) do
    def.position = i - 1
    def.id = json.add(FIELD_ID_BASE, i)
    for _, o in ipairs(def.options or {}) do
      opt_n = opt_n + 1
      o.id = json.add(OPTION_ID_BASE, opt_n)
    end
  end
  return defs
end

-- Value checks -----------------------------------------------------------------

local function scalar_string(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return num(v) end
  return nil
end

local function valid_date(s)
  local y, m, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)")
  if not y then return nil end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m < 1 or m > 12 or d < 1 then return nil end
  local leap = y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)
  local mdays = { 31, leap and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if d > mdays[m] then return nil end
  local rest = s:sub(11)
  if rest ~= "" and not rest:find("^T%d%d:%d%d") then return nil end
  return s:sub(1, 10)
end

-- The strings Zendesk is seen to take for a checkbox: "1"/"0" on a user field (422 for
-- "True"/"False": Speedygeek/ZendeskApi_v2#157), lower-case "true"/"false" on a ticket field
-- (Speedygeek/ZendeskApi_v2#61). Anything else that is not a JSON boolean is refused.
local CHECKBOX_STRINGS = { ["1"] = true, ["0"] = false, ["true"] = true, ["false"] = false }

local INT64_MAX = "9223372036854775807"
local INT64_MIN = "9223372036854775808" -- magnitude of the smallest

-- A decimal integer string within signed 64 bits -> canonical form, or nil.
local function int64(s)
  local sign, digits = s:match("^%s*([%-+]?)(%d+)%s*$")
  if not digits then return nil end
  digits = digits:gsub("^0+(%d)", "%1")
  local limit = sign == "-" and INT64_MIN or INT64_MAX
  if #digits > #limit or (#digits == #limit and digits > limit) then return nil, "range" end
  if digits == "0" then return "0" end
  return (sign == "-" and "-" or "") .. digits
end

local function has_option(def, v)
  if not def.options then return true end -- a dropdown configured without options takes any value
  for _, o in ipairs(def.options) do if o.value == v then return true end end
  return false
end

-- Whether s matches the field's Ruby regexp (PCRE with "m": Ruby's ^ and $ are line
-- anchors; \A \z \Z mean the same in both; "u": characters, not bytes). An uncompilable pattern
-- checks nothing.
local function regexp_ok(def, s)
  if not def.regexp or not ngx then return true end
  local from, _, err = ngx.re.find(s, def.regexp, "mjou")
  if err then return true end
  return from ~= nil
end

-- One value for field `def` -> the JSON literal to store, or nil and the error description
-- (Zendesk's form: "<Title>: ...").
function _M.literal(def, v)
  local t, name = def.type, def.title
  if v == null then return t == "checkbox" and "false" or "null" end -- a cleared checkbox is unchecked
  if t == "text" or t == "textarea" then
    local s = scalar_string(v)
    if not s then return nil, name .. ": is invalid" end
    return str(s)
  elseif t == "regexp" then
    local s = scalar_string(v)
    if not s then return nil, name .. ": is invalid" end
    if s == "" then return "null" end
    if not regexp_ok(def, s) then return nil, name .. ": " .. s .. " is invalid" end
    return str(s)
  elseif t == "dropdown" then
    local s = scalar_string(v)
    if not s then return nil, name .. ": is invalid" end
    if s == "" then return "null" end
    if not has_option(def, s) then
      return nil, name .. ": " .. s .. " is not a valid option"
    end
    return str(s)
  elseif t == "multiselect" then
    if type(v) == "string" then v = { v } end
    if type(v) ~= "table" or not is_array(v) then return nil, name .. ": is invalid" end
    local out, seen = {}, {}
    for _, o in ipairs(v) do
      if type(o) ~= "string" then return nil, name .. ": is invalid" end
      if not has_option(def, o) then
        return nil, name .. ": " .. o .. " is not a valid option"
      end
      if not seen[o] then
        seen[o] = true
        out[#out + 1] = str(o)
      end
    end
    return "[" .. concat(out, ",") .. "]"
  elseif t == "integer" then
    if type(v) == "number" then
      if v ~= floor(v) or v ~= v or v == math.huge or v == -math.huge then
        return nil, name .. ": " .. num(v) .. " is not an integer"
      end
      if v >= 2^63 or v < -2^63 then return nil, name .. ": " .. num(v) .. " is out of range" end
      return num(v)
    end
    if type(v) == "string" then
      local d, why = int64(v)
      if d then return d end
      if why == "range" then return nil, name .. ": " .. v .. " is out of range" end
    end
    return nil, name .. ": is not a number"
  elseif t == "decimal" then
    if type(v) == "number" then
      if v ~= v or v == math.huge or v == -math.huge then return nil, name .. ": is not a number" end
      return num(v)
    end
    if type(v) == "string" and (v:find("^%s*[%-+]?%d+%.?%d*%s*$") or v:find("^%s*[%-+]?%.%d+%s*$")) then
      return num(tonumber(v))
    end
    return nil, name .. ": is not a number"
  elseif t == "date" then
    local d = type(v) == "string" and valid_date(v)
    if not d then return nil, name .. ": is not a valid date" end
    return str(d)
  elseif t == "checkbox" then
    if type(v) == "string" and CHECKBOX_STRINGS[v] ~= nil then v = CHECKBOX_STRINGS[v] end
    if type(v) ~= "boolean" then return nil, name .. ": is invalid" end
    return v and "true" or "false"
  elseif t == "lookup" then
    local id = json.id_of(v)
    if not id or id == "0" then return nil, name .. ": is invalid" end
    return id
  end
  return nil, name .. ": is invalid"
end

-- GET /api/v2/user_fields ----------------------------------------------------------

function _M.render(def, base)
  local opts = "null"
  if WITH_OPTIONS[def.type] then
    local parts = {}
    for i, o in ipairs(def.options or {}) do
      parts[i] = '{"id":' .. o.id .. ',"name":' .. str(o.name) .. ',"raw_name":' .. str(o.name)
        .. ',"value":' .. str(o.value) .. "}"
    end
    opts = "[" .. concat(parts, ",") .. "]"
  end
  local desc = def.description or ""
  local tag = json.value(def.tag)
  return concat({
    '{"id":', def.id,
    ',"url":', str(base .. "/api/v2/user_fields/" .. def.id .. ".json"),
    ',"key":', str(def.key),
    ',"type":', str(def.type),
    ',"title":', str(def.title),
    ',"raw_title":', str(def.title),
    ',"description":', str(desc),
    ',"raw_description":', str(desc),
    ',"position":', format("%d", def.position),
    ',"active":', def.active and "true" or "false",
    ',"system":false',
    ',"regexp_for_validation":', def.type == "regexp" and json.value(def.regexp) or "null",
    ',"custom_field_options":', opts,
    ',"tag":', tag,
    ',"created_at":', str(_M.CREATED_AT),
    ',"updated_at":', str(_M.CREATED_AT),
    "}",
  })
end

return _M
