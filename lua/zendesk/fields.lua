-- zendesk.fields: the account's custom user fields (GET /api/v2/user_fields) as a schema: read
-- across every page, indexed by key and by title, and used to check a user's user_fields before
-- any request and to turn a CSV cell into the value its field's type takes.
--
-- syntax: list, err = fields.fetch(request)        request(path) -> body, meta | nil, err
-- syntax: schema = fields.schema(list)              raises on a list that is not field definitions
-- syntax: def = schema.by_key[key]; def = fields.lookup(schema, header)
-- syntax: msg = fields.check_value(def, v)          nil when v is a value def takes
-- syntax: ok, err = fields.check_user(schema, user, path)
-- syntax: ok, err = fields.check_list(schema, list, path)
-- syntax: value, why = fields.convert(def, cell, tag_separator)
-- syntax: keys = fields.closest(schema, name [, n])
--
-- A definition (def) is {key, type, title, active, id, options = {value, ...}, names =
-- {lower(name) -> value}, values = {value -> true} (names, values: nil when it lists no options),
-- regexp = source, re = compiled | false,
-- unchecked = why the regexp is not checked here}.
-- Zendesk's regexp_for_validation is a Ruby regexp: it is compiled with PCRE2 (lua-rex-pcre2),
-- with Ruby's meaning of ^ and $ (line anchors: MULTILINE), of (?m) (dot matches a newline: PCRE2's
-- s) and of \h (a hex digit). A pattern PCRE2 cannot compile, one it would read otherwise (a class
-- intersection &&, a class nested in a class), or every pattern when lua-rex-pcre2
-- is not installed, is not checked here: Zendesk decides; schema.notes says so, one line each.
local core = require "zendesk.core"
local options = require "zendesk.options"
local is_int = options.is_int

local type, tostring, tonumber, pairs, ipairs, pcall, error, next, setmetatable = type, tostring, tonumber,
  pairs, ipairs, pcall, error, next, setmetatable
local byte, sub, find, match, lower, format, gsub = string.byte, string.sub, string.find, string.match,
  string.lower, string.format, string.gsub
local concat, sort = table.concat, table.sort
local min, huge = math.min, math.huge
local tointeger = math.tointeger
local null, array_mt = core.null, core.array_mt

local _M = { _VERSION = core.version }

_M.TYPES = { text = true, textarea = true, checkbox = true, date = true, integer = true, decimal = true,
             regexp = true, dropdown = true, multiselect = true, lookup = true }
_M.TYPE_LIST = "text, textarea, checkbox, date, integer, decimal, regexp, dropdown, multiselect, lookup"

-- Pages of GET /user_fields read at most (100 fields each): a server that never says has_more =
-- false stops here instead of looping.
_M.MAX_PAGES = 200
local PAGE = "page%5Bsize%5D=100"

local rex
do
  local ok, r = pcall(require, "rex_pcre2")
  rex = ok and type(r) == "table" and r or nil
end
_M.regex_engine = rex and ("PCRE2 " .. tostring(rex.version and rex.version() or "")) or nil

---------------------------------------------------------------------------------------------------
-- Ruby regexps with PCRE2

-- The PCRE2 spelling of a Ruby regexp, or nil and why it has none.
-- Its second answer is true when the pattern has a POSIX bracket or \b/\B: Ruby reads those with
-- Unicode, PCRE2 (no UCP, so that \d \w \s stay ASCII as in Ruby) with ASCII; they agree on an
-- ASCII subject only.
local function ruby_to_pcre(src)
  local out, i, n, class = {}, 1, #src, 0
  local ascii_only = false
  while i <= n do
    local c = sub(src, i, i)
    if c == "\\" then
      local d = sub(src, i + 1, i + 1)
      if d == "h" then
        out[#out + 1] = class > 0 and "0-9a-fA-F" or "[0-9a-fA-F]"
      elseif d == "b" or d == "B" then
        if class == 0 then ascii_only = true end
        out[#out + 1] = c .. d
      elseif d == "H" then
        if class > 0 then return nil, "\\H inside a character class" end
        out[#out + 1] = "[^0-9a-fA-F]"
      else
        out[#out + 1] = c .. d
      end
      i = i + 2
    elseif c == "[" and class > 0 then
      -- inside a class: a POSIX bracket [:alpha:] means the same on ASCII; a nested class is
      -- a union in Ruby and a literal [ in PCRE2 (which then compiles to another pattern)
      local posix = match(src, "^%[:%^?%a+:%]", i)
      if not posix then return nil, "a character class inside a class (Ruby's union) has no PCRE2 form" end
      out[#out + 1] = posix
      i = i + #posix
      -- only [:xdigit:] and [:ascii:] are ASCII in Ruby too ([:digit:] is Unicode Nd there)
      if not find(posix, "^%[:%^?xdigit:%]$") and not find(posix, "^%[:%^?ascii:%]$") then ascii_only = true end
    elseif c == "&" and class > 0 and sub(src, i + 1, i + 1) == "&" then
      return nil, "a class intersection (&&) has no PCRE2 form"
    elseif c == "[" then
      class = class + 1
      out[#out + 1] = c
      i = i + 1
      -- a ] right after [ or [^ is a literal
      if sub(src, i, i) == "^" then out[#out + 1] = "^"; i = i + 1 end
      if sub(src, i, i) == "]" then out[#out + 1] = "]"; i = i + 1 end
    elseif c == "]" and class > 0 then
      class = class - 1
      out[#out + 1] = c
      i = i + 1
    elseif c == "(" and class == 0 and sub(src, i + 1, i + 1) == "?" then
      -- inline options (?mix-mix) and (?mix-mix:...): Ruby's m is PCRE2's s
      local flags, stop = match(src, "^([imx%-]+)([:)])", i + 2)
      if flags then
        out[#out + 1] = "(?" .. gsub(flags, "m", "s") .. stop
        i = i + 2 + #flags + 1
      else
        out[#out + 1] = "(?"
        i = i + 2
      end
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return concat(out), ascii_only
end
_M.ruby_to_pcre = ruby_to_pcre

-- compiled, or false and why it is not checked here
-- compiled and whether it is checked on ASCII values only, or false and why it is not checked here
local function compile(src)
  if not rex then return false, "lua-rex-pcre2 is not installed" end
  local p, why = ruby_to_pcre(src)
  if not p then return false, why end
  local f = rex.flags()
  local ok, re = pcall(rex.new, p, f.MULTILINE + f.UTF)
  if not ok or not re then return false, tostring(re) end
  return re, nil, why
end

---------------------------------------------------------------------------------------------------
-- The schema

local function trim(s) return match(s, "^%s*(.-)%s*$") end

local function bad_def(i, msg) error(format("user field definition %d: %s", i, msg), 3) end

-- syntax: schema = fields.schema(list)   (list: what GET /user_fields answers, in its order)
function _M.schema(list)
  if type(list) ~= "table" then error("user fields: expected an array of field definitions, got " .. type(list), 2) end
  local S = { list = {}, by_key = {}, by_lkey = {}, by_title = {}, notes = {} }
  for i, f in ipairs(list) do
    if type(f) ~= "table" then bad_def(i, "expected a table, got " .. type(f)) end
    local key, t = f.key, f.type or "text"
    if type(key) ~= "string" or key == "" then bad_def(i, "key must be a non-empty string") end
    if type(t) ~= "string" then bad_def(i, key .. ": type must be a string, got " .. type(t)) end
    if not _M.TYPES[t] then
      -- a type newer than this module: its values go to Zendesk unchecked, cells as text
      S.notes[#S.notes + 1] = { field = key, message = format(
        "user field %s: type '%s' is not one this client knows (%s): Zendesk checks its values", key, t,
        _M.TYPE_LIST) }
    end
    if S.by_key[key] then bad_def(i, "key '" .. key .. "' is defined twice") end
    local def = { key = key, type = t, id = f.id, active = f.active ~= false,
                  title = type(f.title) == "string" and f.title or key }
    if t == "dropdown" or t == "multiselect" then
      local opts = f.custom_field_options
      def.options, def.values, def.names = {}, {}, {}
      if type(opts) == "table" then
        for _, o in ipairs(opts) do
          if type(o) == "table" and type(o.value) == "string" then
            def.options[#def.options + 1] = o.value
            def.values[o.value] = true
            local nm = type(o.name) == "string" and lower(trim(o.name)) or nil
            if nm and def.names[nm] == nil then def.names[nm] = o.value end
          end
        end
      end
      -- no options listed: nothing to check a value against here, so any value goes (Zendesk decides)
      if #def.options == 0 then def.values, def.names = nil, nil end
    elseif t == "regexp" then
      local src = f.regexp_for_validation
      if type(src) == "string" and src ~= "" then
        def.regexp = src
        local re, why, ascii_only = compile(src)
        def.re, def.ascii_only = re, ascii_only or nil
        if not re then
          def.unchecked = why
          if rex then
            S.notes[#S.notes + 1] = { field = key, message = format(
              "user field %s: its validation regexp %s cannot be compiled here (%s): Zendesk checks its values",
              key, src, why) }
          end
        end
      end
    end
    S.list[#S.list + 1] = def
    S.by_key[key] = def
    local lk = lower(key)
    S.by_lkey[lk] = S.by_lkey[lk] == nil and def or false
    local lt = lower(trim(def.title))
    if lt ~= "" then S.by_title[lt] = S.by_title[lt] == nil and def or false end
    if t == "regexp" and not rex then S.no_engine = true end
  end
  if S.no_engine then
    S.notes[#S.notes + 1] = { message = "user fields: lua-rex-pcre2 is not installed: the values of regexp fields "
      .. "are not checked locally (Zendesk checks them)" }
  end
  return S
end

-- syntax: def = fields.lookup(schema, name)   (a key, exactly or in any case, or a title, trimmed
-- and in any case; nil when none, or when several fields answer to it)
function _M.lookup(S, name)
  local d = S.by_key[name]
  if d then return d end
  local ln = lower(trim(name))
  return S.by_lkey[ln] or S.by_title[ln] or nil
end

local function distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = byte(a, i)
    for j = 1, lb do
      local cost = ca == byte(b, j) and 0 or 1
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

-- syntax: keys = fields.closest(schema, name [, n])   (the n, default 3, keys nearest to name)
-- Names and titles are compared on their first NEAR_LEN bytes: the distance costs the product of
-- the lengths, and a header of megabytes would otherwise hold the run for hours.
local NEAR_LEN = 64
function _M.closest(S, name, n)
  n = n or 3
  local ln, scored = lower(sub(name, 1, NEAR_LEN)), {}
  for i, d in ipairs(S.list) do
    local s = distance(ln, lower(sub(d.key, 1, NEAR_LEN)))
    local st = distance(ln, lower(sub(d.title, 1, NEAR_LEN)))
    scored[#scored + 1] = { key = d.key, score = s < st and s or st, i = i }
  end
  sort(scored, function(x, y) if x.score ~= y.score then return x.score < y.score end return x.i < y.i end)
  local out = {}
  for i = 1, min(n, #scored) do out[i] = scored[i].key end
  return out
end

---------------------------------------------------------------------------------------------------
-- Values

local function show(v)
  local s = type(v) == "string" and v or tostring(v)
  if #s > 60 then
    -- cut before a UTF-8 continuation byte never: the message stays valid UTF-8
    local cut = 57
    while cut > 1 and (byte(s, cut + 1) or 0) >= 0x80 and (byte(s, cut + 1) or 0) < 0xC0 do cut = cut - 1 end
    s = sub(s, 1, cut) .. "..."
  end
  return "'" .. gsub(s, "%c", " ") .. "'"
end

local DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- A calendar date YYYY-MM-DD: true, or nil
local function calendar_date(s)
  local y, m, d = match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  if not y then return nil end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  local last = DAYS[m]
  if m == 2 and y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) then last = 29 end
  return last ~= nil and d >= 1 and d <= last
end

-- Zendesk's integer fields hold a signed 64-bit integer; a double is exact only below 2^53
local INT_MAX = tointeger and 2 ^ 63 or 2 ^ 53

local CHECKBOX_STRINGS = { ["true"] = true, ["false"] = true, ["1"] = true, ["0"] = true }

local function option_list(def)
  local o = def.options
  if #o == 0 then return "(the field has no options)" end
  if #o > 10 then return concat(o, ", ", 1, 10) .. ", ... (" .. #o .. " options)" end
  return concat(o, ", ")
end

-- true when v matches def's pattern (or the pattern is not checked here), else false and why.
-- The pattern is compiled for UTF-8: a subject that is not UTF-8 would make PCRE2 raise, so it is
-- refused first (no JSON carries it to Zendesk); any other failure of the match itself (PCRE2's
-- match or depth limit on a pattern that backtracks without end) leaves the value to Zendesk.
local utf8_check = core.utf8_check
local function regexp_ok(def, v)
  if not def.re then return true end
  local at = utf8_check(v)
  if at then return false, format("is not valid UTF-8 (byte %d)", at) end
  if def.ascii_only and find(v, "[\128-\255]") then return true end
  local ok, m = pcall(def.re.exec, def.re, v)
  if not ok then return true end
  if m == nil then return false, "does not match the field's pattern " .. def.regexp end
  return true
end

local MAX_EXACT = 2 ^ 53

local function to_integer(s)
  if not find(s, "^[+-]?%d+$") then return nil, "is not an integer" end
  local n = tonumber(s)
  if tointeger then
    -- Lua reads a decimal integer past the 64-bit range as a float; -2^63-1 rounds to -2^63,
    -- which math.tointeger takes: only an integer read as an integer is in range
    if math.type(n) ~= "integer" then return nil, "is out of the 64-bit integer range" end
  elseif n >= MAX_EXACT or n <= -MAX_EXACT then
    return nil, "is too large to be exact under LuaJIT (2^53 or more)"
  end
  return n
end

local function to_decimal(s)
  local mant, exp = match(s, "^[+-]?([%d%.]+)(.*)$")
  if not mant or not find(mant, "%d") or find(mant, "%..*%.")
     or (exp ~= "" and not find(exp, "^[eE][+-]?%d+$")) then
    return nil, "is not a decimal number"
  end
  local n = tonumber(s)
  if not n or n ~= n or n == huge or n == -huge then return nil, "is out of range" end
  return n
end

-- syntax: msg = fields.check_value(def, v)   (v not zendesk.null: null clears any field)
function _M.check_value(def, v)
  local t, tv = def.type, type(v)
  -- what Zendesk takes, and coerces, as the stand-in's README shows it: a check here is never
  -- stricter than Zendesk (a refusal here would be a row Zendesk takes)
  if t == "text" or t == "textarea" then
    if tv ~= "string" and not (tv == "number" and v == v and v ~= huge and v ~= -huge) then
      return "must be a string (a " .. t .. " field), got " .. show(v)
    end
  elseif t == "checkbox" then
    if tv ~= "boolean" and not CHECKBOX_STRINGS[v] then
      return "must be true or false (a checkbox field; also \"true\", \"false\", \"1\", \"0\"), got " .. show(v)
    end
  elseif t == "integer" then
    if tv == "string" then
      local _, why = to_integer(v)
      if why then return show(v) .. " " .. why .. " (an integer field)" end
    elseif not is_int(v) then
      return "must be an integer (an integer field), got " .. show(v)
    elseif (tointeger and not tointeger(v)) or v >= INT_MAX or v < -INT_MAX then
      return format("is out of range for an integer field (%s)",
        tointeger and "-2^63 to 2^63-1" or "below 2^53 in magnitude under LuaJIT")
    end
  elseif t == "decimal" then
    if tv == "string" then
      local _, why = to_decimal(v)
      if why then return show(v) .. " " .. why .. " (a decimal field)" end
    elseif tv ~= "number" or v ~= v or v == huge or v == -huge then
      return "must be a finite number (a decimal field), got " .. show(v)
    end
  elseif t == "date" then
    local d = tv == "string" and (match(v, "^(%d%d%d%d%-%d%d%-%d%d)T%d%d:%d%d") or v)
    if not d or not calendar_date(d) then
      return "must be a calendar date YYYY-MM-DD (a date field), got " .. show(v)
    end
  elseif t == "regexp" then
    if tv == "number" then v = tostring(v)
    elseif tv ~= "string" then return "must be a string (a regexp field), got " .. show(v) end
    if v ~= "" then
      local ok, why = regexp_ok(def, v)
      if not ok then return show(v) .. " " .. why end
    end
  elseif t == "dropdown" then
    if tv ~= "string" or (v ~= "" and def.values and not def.values[v]) then
      return show(v) .. " is not an option of the dropdown (one of: " .. option_list(def) .. ")"
    end
  elseif t == "multiselect" then
    if tv == "string" then
      if def.values and not def.values[v] then
        return show(v) .. " is not an option of the multiselect (one of: " .. option_list(def) .. ")"
      end
      return
    end
    if tv ~= "table" then return "must be an array of option values (a multiselect field), got " .. show(v) end
    local n = #v
    for k in next, v do
      if not is_int(k) or k < 1 or k > n then
        return "must be an array of option values (found key " .. show(k) .. ")"
      end
    end
    for i = 1, n do
      if type(v[i]) ~= "string" or (def.values and not def.values[v[i]]) then
        return format("[%d]: %s is not an option of the multiselect (one of: %s)", i, show(v[i]), option_list(def))
      end
    end
  elseif t == "lookup" then
    local id = tv == "string" and find(v, "^%d+$") and to_integer(v) or v
    if not is_int(id) or id <= 0 then
      return "must be the id of the related record (a lookup field), got " .. show(v)
    end
  end
end

local function fail(path, key, msg)
  local where = (path and path .. "." or "") .. "user_fields." .. key
  return nil, core.error{ kind = "validation", field = "user_fields", key = key, path = where,
                          message = where .. ": " .. msg }
end

-- syntax: ok, err = fields.check_user(schema, user, path)
-- Checks user.user_fields against the schema (the user is otherwise valid: zendesk.users).
local function bad_value(S, k, v)
  local def = S.by_key[k]
  if not def then return true end
  if v == null then return false end
  return not def.active or _M.check_value(def, v) ~= nil
end

function _M.check_user(S, user, path)
  local uf = type(user) == "table" and user.user_fields
  if type(uf) ~= "table" or uf == null then return true end
  -- most users are fine: one pass without allocating; the message comes from a second pass in
  -- key order, so that the same bad user gives the same message every time
  local any = false
  for k, v in next, uf do
    if bad_value(S, tostring(k), v) then any = true break end
  end
  if not any then return true end
  local keys = {}
  for k in pairs(uf) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  for _, k in ipairs(keys) do
    local def = S.by_key[k]
    if not def then
      local near = _M.closest(S, k)
      return fail(path, k, "unknown user field (the account has no field with this key"
        .. (#near > 0 and "; closest: " .. concat(near, ", ") or "") .. ")")
    end
    local v = uf[k]
    if v ~= null then
      if not def.active then return fail(path, k, "the field is inactive in the account (it cannot be set)") end
      local msg = _M.check_value(def, v)
      if msg then return fail(path, k, msg) end
    end
  end
  return true
end

-- syntax: ok, err = fields.check_list(schema, list, path)   (errors = {{index, path, message}})
function _M.check_list(S, list, path)
  local bad = {}
  for i = 1, #list do
    local ok, err = _M.check_user(S, list[i], path .. "[" .. i .. "]")
    if not ok then
      err.index = i
      bad[#bad + 1] = err
    end
  end
  if #bad == 0 then return true end
  local msgs = {}
  for i = 1, min(#bad, 5) do msgs[i] = bad[i].message end
  local more = #bad > 5 and ("; and " .. (#bad - 5) .. " more") or ""
  return nil, core.error{ kind = "validation", path = bad[1].path, field = "user_fields", errors = bad,
                          message = concat(msgs, "; ") .. more }
end

---------------------------------------------------------------------------------------------------
-- CSV cells

local CHECKBOX = { ["true"] = true, ["1"] = true, yes = true, ["false"] = false, ["0"] = false, no = false }

local function to_date(s)
  -- ISO 8601 with a time: the date part (Zendesk stores the day)
  local d = match(s, "^(%d%d%d%d%-%d%d%-%d%d)[T ]%d%d:%d%d") or s
  if not find(d, "^%d%d%d%d%-%d%d%-%d%d$") then return nil, "is not a date (YYYY-MM-DD)" end
  if not calendar_date(d) then return nil, "is not a valid date" end
  return d
end

local function split(v, sep)
  local out, p = {}, 1
  while true do
    local s, e = find(v, sep, p, true)
    local piece = trim(sub(v, p, (s or 0) - 1))
    if piece ~= "" then out[#out + 1] = piece end
    if not s then break end
    p = e + 1
  end
  return out
end
_M.split = split

-- syntax: value, why = fields.convert(def, cell, tag_separator)
-- cell: a non-empty, trimmed CSV cell; def: a definition, or {type = ...} (opts.field_types: no
-- options, no pattern, so the value is taken as is). why: what is wrong with the cell.
function _M.convert(def, v, sep)
  local t = def.type
  if t == "integer" then
    local n, why = to_integer(v)
    if n == nil then return nil, why end
    return n
  elseif t == "decimal" then
    return to_decimal(v)
  elseif t == "checkbox" then
    local b = CHECKBOX[lower(v)]
    if b == nil then return nil, "is not a boolean (true/false, yes/no, 1/0)" end
    return b
  elseif t == "date" then
    return to_date(v)
  elseif t == "lookup" then
    local n = to_integer(v)
    if not n or n <= 0 then return nil, "is not the id of a record (a positive integer)" end
    return n
  elseif t == "dropdown" then
    if not def.values or def.values[v] then return v end
    local by_name = def.names[lower(v)]
    if by_name then return by_name end
    return nil, "is not an option (one of: " .. option_list(def) .. ")"
  elseif t == "multiselect" then
    local list = setmetatable(split(v, sep or ";"), array_mt)
    if def.values then
      for i, x in ipairs(list) do
        if not def.values[x] then
          local by_name = def.names[lower(x)]
          if not by_name then
            return nil, format("has %s, which is not an option (one of: %s)", show(x), option_list(def))
          end
          list[i] = by_name
        end
      end
    end
    return list
  elseif t == "regexp" then
    local ok, why = regexp_ok(def, v)
    if not ok then return nil, why end
  end
  return v
end

---------------------------------------------------------------------------------------------------
-- Reading the account's fields

local function next_path(body, base)
  local meta, links = type(body.meta) == "table" and body.meta, type(body.links) == "table" and body.links
  if meta then
    if meta.has_more ~= true then return nil end
    local c = meta.after_cursor
    if type(c) == "string" and c ~= "" then
      return base .. "?" .. PAGE .. "&page%5Bafter%5D=" .. gsub(c, "[^%w%-%._~]", function(ch)
        return format("%%%02X", byte(ch))
      end), c
    end
    local nx = links and links.next
    if type(nx) == "string" then
      local p = match(nx, "^https?://[^/]+(/.*)$") or (sub(nx, 1, 1) == "/" and nx)
      if p then return p, nx end
    end
    return nil, nil, "has_more is true but neither meta.after_cursor nor links.next says where"
  end
  -- offset pagination (next_page), when a server answers that way
  local np = body.next_page
  if type(np) == "string" then
    local p = match(np, "^https?://[^/]+(/.*)$")
    if p then return p, np end
  end
  return nil
end

-- syntax: list, err = fields.fetch(request, path)   (request(path) -> body, meta | nil, err;
-- path: api.PATH_USER_FIELDS)
-- Every page of GET /user_fields, in order; a cursor seen twice or more than MAX_PAGES pages is
-- an error, never a loop.
function _M.fetch(request, path)
  local list, seen = {}, {}
  local p = path .. "?" .. PAGE
  for page = 1, _M.MAX_PAGES do
    local body, err = request(p)
    if not body then return nil, err end
    if type(body) ~= "table" or type(body.user_fields) ~= "table" then
      return nil, core.error{ kind = "http", message = "GET " .. p .. ": the answer has no user_fields array" }
    end
    for _, f in ipairs(body.user_fields) do list[#list + 1] = f end
    local np, cursor, why = next_path(body, path)
    if why then return nil, core.error{ kind = "http", message = "GET " .. p .. ": " .. why } end
    if not np then return list end
    if seen[cursor] then
      return nil, core.error{ kind = "http", message = format(
        "GET %s: the cursor %s came back again after page %d: stopped instead of looping", p, cursor, page) }
    end
    seen[cursor] = true
    p = np
  end
  return nil, core.error{ kind = "http", message = format(
    "GET %s: more than %d pages of user fields: stopped", path, _M.MAX_PAGES) }
end

---------------------------------------------------------------------------------------------------
-- The client's cache (client:user_fields)

local CLIENT_OPTS = { refresh = "boolean", definitions = "table" }

-- syntax: list, err = fields.of_client(client, opts)
-- The account's definitions, fetched once per client (opts.refresh: again), or given
-- (opts.definitions: a list in GET /user_fields' shape, for a client that knows them already).
-- The schema is client._fields; each fetch tells client.on_event what is not checked locally.
function _M.of_client(client, opts)
  opts = options.check(CLIENT_OPTS, opts, "user_fields", 4)
  local list = opts.definitions
  if not list then
    if client._fields and not opts.refresh then return client._fields.raw end
    local api = require "zendesk.api"
    local c = client._core
    local err
    list, err = _M.fetch(function(p) return api.request(c, "GET", p) end, api.PATH_USER_FIELDS)
    if not list then return nil, err end
  end
  local ok, S = pcall(_M.schema, list)
  if not ok then
    if opts.definitions then error("user_fields: option 'definitions': " .. tostring(S), 3) end
    return nil, core.error{ kind = "http", message = "GET " .. "user_fields: " .. tostring(S) }
  end
  S.raw = list
  client._fields = S
  local on_event = client.on_event
  if on_event then
    for _, note in ipairs(S.notes) do
      on_event{ type = "user_fields", field = note.field, message = note.message }
    end
  end
  return list
end

return _M
