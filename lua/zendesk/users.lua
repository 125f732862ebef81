-- zendesk.users: checks a user table against what Zendesk accepts, before any I/O, so a
-- bad row fails locally with a message naming the field instead of costing a request.
local core = require "zendesk.core"
local MAX_USERS = require("zendesk.api").MAX_USERS

local floor, huge = math.floor, math.huge
local concat, pairs, next, rawget, type, tostring = table.concat, pairs, next, rawget, type, tostring
local byte, format, strsub = string.byte, string.format, string.sub
-- the metatable itself, even behind a __metatable field
local getmt = debug and debug.getmetatable or getmetatable

local _M = { _VERSION = core.version }

local null = core.null
local array_mt, object_mt = core.array_mt, core.object_mt

-- The first byte (1-based) of s that the JSON encoder would refuse as UTF-8 (an overlong form,
-- a UTF-16 surrogate, above U+10FFFF, a stray or missing continuation byte), or nil: the
-- encoder's own rules, in C, where a Lua pattern scan would cost several times a whole check.
local utf8_bad = core.utf8_check
_M.utf8_bad = utf8_bad

-- s with every byte the encoder would refuse written as \xNN, for text that must go out
-- whatever it holds (a journal message, a JSON report); s itself when it is valid.
function _M.utf8_escape(s)
  local bad = utf8_bad(s)
  if not bad then return s end
  local out, pos = {}, 1
  while bad do
    out[#out + 1] = strsub(s, pos, pos + bad - 2)
    out[#out + 1] = format("\\x%02x", byte(s, pos + bad - 1))
    pos = pos + bad
    bad = utf8_bad(strsub(s, pos))
  end
  out[#out + 1] = strsub(s, pos)
  return concat(out)
end

-- A table is read by the encoder raw. One whose metatable changes what indexing, pairs or #
-- see would be checked as one thing and sent as another: refused (the encoder's own shape
-- markers, zendesk.array_mt and object_mt, change nothing of that and are fine).
local function disguised(t)
  local mt = getmt(t)
  return mt ~= nil and mt ~= array_mt and mt ~= object_mt and type(mt) == "table"
    and (rawget(mt, "__index") ~= nil or rawget(mt, "__pairs") ~= nil or rawget(mt, "__len") ~= nil)
end
local DISGUISED = "a table with a metatable (__index, __pairs or __len) is not accepted: " ..
                  "the encoder sends its raw fields"

-- Looks through a field's value as the encoder will (raw): answers where inside it ("", "[2]",
-- ".department") and what is wrong, or nothing. Below the second level each table is looked at
-- once (seen), so a table shared many times over costs no more than its size, and a cycle,
-- which the encoder refuses, is found.
local function raw_problem(v, depth, seen)
  local t = type(v)
  if t == "string" then
    local bad = utf8_bad(v)
    if bad then return "", "invalid UTF-8 (byte " .. bad .. ")" end
  elseif t == "table" then
    if disguised(v) then return "", DISGUISED end
    -- the encoder takes 64 levels from the request body down; a field starts 3 or 4 below it
    if depth > 56 then return "", "nested too deeply (more than 56 levels)" end
    if depth >= 2 then
      seen = seen or {}
      local st = seen[v]
      if st == "open" then return "", "contains itself (a cycle)" end
      if st then return end
      seen[v] = "open"
    end
    for k, x in next, v do
      local kt = type(k)
      if kt == "string" then
        local bad = utf8_bad(k)
        if bad then return "", "invalid UTF-8 in a key (byte " .. bad .. ")" end
      end
      local xt, sub, msg = type(x), nil, nil
      if xt == "string" then
        local bad = utf8_bad(x)
        if bad then sub, msg = "", "invalid UTF-8 (byte " .. bad .. ")" end
      elseif xt == "table" then
        sub, msg = raw_problem(x, depth + 1, seen)
      end
      -- the path is built only for the one that fails: most users have none
      if msg then return (kt == "string" and "." .. k or "[" .. tostring(k) .. "]") .. sub, msg end
    end
    if depth >= 2 then seen[v] = "done" end
  end
end

-- path: where the user is ("user", "users[3]", "row 12"); sub: inside the field ("[2]", ".name")
local function fail(path, field, message, sub)
  local where = (path and (path .. "." .. field) or field) .. (sub or "")
  return nil, core.error{ kind = "validation", field = field, path = where, message = where .. ": " .. message }
end

local function is_integer(v)
  return type(v) == "number" and v == floor(v) and v > -huge and v < huge
end

local function show(v)
  local s = tostring(v)
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return "'" .. s .. "'"
end

-- valid_email(s) -> true | false. Deliberately simple: Zendesk has the last word, this only
-- catches what can never work. The rules are in src/email.c (one pass in C: the 9 to 13 pattern
-- calls of the Lua version cost ~28,000 instructions per address, about a tenth of an upsert).
_M.valid_email = core.valid_email

local ROLES = { ["end-user"] = true, agent = true, admin = true }
local TICKET_RESTRICTIONS = { organization = true, groups = true, assigned = true, requested = true }
local IDENTITY_TYPES = {
  email = true, twitter = true, facebook = true, google = true, phone_number = true,
  agent_forwarding = true, sdk = true, messaging = true,
}

local checks = {}

local function string_field(v) if type(v) ~= "string" then return "must be a string" end end
local function integer_field(v) if not is_integer(v) then return "must be an integer, got " .. show(v) end end
local function boolean_field(v) if type(v) ~= "boolean" then return "must be true or false, got " .. show(v) end end
local function any_field() end

for _, k in pairs{ "name", "alias", "details", "notes", "locale", "time_zone", "signature",
                   "remote_photo_url", "phone" } do
  checks[k] = string_field
end
for _, k in pairs{ "organization_id", "locale_id", "custom_role_id", "default_group_id" } do
  checks[k] = integer_field
end
for _, k in pairs{ "verified", "suspended", "moderator", "only_private_comments",
                   "shared_phone_number", "skip_verify_email" } do
  checks[k] = boolean_field
end
-- read-only fields of a user fetched from Zendesk: sending one back is harmless, Zendesk ignores it
for _, k in pairs{ "url", "created_at", "updated_at", "active", "shared", "shared_agent",
                   "last_login_at", "two_factor_auth_enabled", "role_type", "report_csv",
                   "restricted_agent", "chat_only", "iana_time_zone", "photo" } do
  checks[k] = any_field
end

function checks.id(v)
  if not is_integer(v) or v <= 0 then return "must be a positive integer, got " .. show(v) end
end

function checks.email(v)
  if type(v) ~= "string" then return "must be a string" end
  if not _M.valid_email(v) then return show(v) .. " is not a valid email address" end
end

function checks.external_id(v)
  if type(v) ~= "string" and not is_integer(v) then return "must be a string" end
  if v == "" then return "must not be empty" end
end

function checks.role(v)
  if not ROLES[v] then return show(v) .. " is not a role (end-user, agent or admin)" end
end

function checks.ticket_restriction(v)
  if not TICKET_RESTRICTIONS[v] then
    return show(v) .. " is not one of organization, groups, assigned, requested"
  end
end

local function array_of(v, each)
  if type(v) ~= "table" then return "must be an array" end
  local n = #v
  for k in pairs(v) do
    if not is_integer(k) or k < 1 or k > n then return "must be an array (found key " .. show(k) .. ")" end
  end
  for i = 1, n do
    local msg, sub = each(v[i], i)
    if msg then return msg, sub end
  end
end

function checks.tags(v)
  return array_of(v, function(t, i)
    if type(t) ~= "string" or t == "" then return "must be a non-empty string", "[" .. i .. "]" end
  end)
end

function checks.agent_brand_ids(v)
  return array_of(v, function(t, i)
    if not is_integer(t) then return "must be an integer", "[" .. i .. "]" end
  end)
end

function checks.identities(v)
  return array_of(v, function(idn, i)
    local at = "[" .. i .. "]"
    if type(idn) ~= "table" then return "must be a table {type =, value =}", at end
    if not IDENTITY_TYPES[idn.type] then return show(idn.type) .. " is not an identity type", at .. ".type" end
    if type(idn.value) ~= "string" or idn.value == "" then return "must be a non-empty string", at .. ".value" end
    if idn.type == "email" and not _M.valid_email(idn.value) then
      return show(idn.value) .. " is not a valid email address", at .. ".value"
    end
  end)
end

function checks.organization(v)
  if type(v) ~= "table" then return "must be a table {name = ...}" end
  if v.name ~= nil and (type(v.name) ~= "string" or v.name == "") then return "must be a non-empty string", ".name" end
  if v.name == nil and v.id == nil then return "needs a name" end
end

function checks.user_fields(v)
  if type(v) ~= "table" then return "must be a table keyed by user field key" end
  for k, x in pairs(v) do
    if type(k) ~= "string" then return "keys must be user field keys (strings), got " .. show(k) end
    local t = type(x)
    if not (t == "string" or t == "number" or t == "boolean" or x == null) then
      return "must be a string, number, boolean or zendesk.null, got a " .. t, "." .. k
    end
    if t == "number" and x ~= x then return "is NaN", "." .. k end
  end
end

-- Returns true, or nil and a validation error naming the field (path.field).
function _M.validate(user, path)
  if type(user) ~= "table" then
    return nil, core.error{ kind = "validation", path = path,
                            message = (path or "user") .. ": must be a table, got " .. type(user) }
  end
  if disguised(user) then
    return nil, core.error{ kind = "validation", path = path, message = (path or "user") .. ": " .. DISGUISED }
  end
  for k, v in next, user do
    if type(k) ~= "string" then
      return fail(path, tostring(k), "field names must be strings")
    end
    local check = checks[k]
    if not check then
      local bad = utf8_bad(k)
      if bad then
        return fail(path, _M.utf8_escape(k), "invalid UTF-8 in the field name (byte " .. bad .. ")")
      end
      return fail(path, k, "unknown user field (misspelt? custom fields go in user_fields)")
    end
    local tv = type(v)
    if tv == "string" then
      local bad = utf8_bad(v)
      if bad then return fail(path, k, "invalid UTF-8 (byte " .. bad .. ")") end
    elseif tv == "table" then
      local inside, problem = raw_problem(v, 0)
      if problem then
        return fail(path, k, problem, inside)
      end
    end
    if v ~= null then
      local msg, sub = check(v)
      if msg then
        return fail(path, k, msg, sub)
      end
    end
  end
  -- an upsert needs something to match on, or every run would create the user again
  local has_key = (user.email ~= nil and user.email ~= null) or (user.external_id ~= nil and user.external_id ~= null)
    or user.id ~= nil
  if not has_key and type(user.identities) == "table" then
    for _, idn in pairs(user.identities) do
      if type(idn) == "table" and idn.type == "email" then has_key = true end
    end
  end
  if not has_key then
    return nil, core.error{ kind = "validation", field = "email", path = path,
      message = (path or "user") .. ": needs an email or an external_id to be matched"
        .. " (else every run creates it again)" }
  end
  return true
end

-- The checks every client flavour (zendesk, zendesk.nginx) makes before a single upsert:
-- misuse raises at the caller of the method; a bad user returns nil, err.
function _M.check_upsert_arg(user, method)
  if type(user) ~= "table" then
    error(method .. ": argument 'user' must be a table, got " .. type(user), 3)
  end
  return _M.validate(user, "user")
end

-- upsert_user's options ({fields = {"id", ...}}, or nil): misuse raises at the caller.
function _M.check_upsert_opts(opts, method)
  if opts == nil then return end
  if type(opts) ~= "table" then
    error(method .. ": argument 'opts' must be a table, got " .. type(opts), 3)
  end
  for k in pairs(opts) do
    if k ~= "fields" then
      error(method .. ": unknown option '" .. tostring(k) .. "' (upsert_user takes fields)", 3)
    end
  end
  local f = opts.fields
  if f == nil then return end
  if type(f) ~= "table" or #f < 1 or #f > 64 then
    error(method .. ": option 'fields' must be an array of 1 to 64 user field names", 3)
  end
  for i = 1, #f do
    if type(f[i]) ~= "string" or f[i] == "" then
      error(method .. ": option 'fields': element " .. i .. " must be a field name, got " .. show(f[i]), 3)
    end
  end
end

-- The same before a bulk upsert of 1 to MAX_USERS (api.lua) users.
function _M.check_upsert_many_arg(list, method)
  if type(list) ~= "table" then
    error(method .. ": argument 'users' must be an array of user tables, got " .. type(list), 3)
  end
  if disguised(list) then
    return nil, core.error{ kind = "validation", path = "users", message = "users: " .. DISGUISED }
  end
  local n = #list
  if n < 1 or n > MAX_USERS then
    error(method .. ": expected 1 to " .. MAX_USERS .. " users, got " .. n, 3)
  end
  return _M.validate_list(list, "users")
end

-- Validates an array of users; the error lists every bad entry (errors = {{index, path, message}}).
function _M.validate_list(list, path)
  local bad = {}
  for i = 1, #list do
    local ok, err = _M.validate(list[i], path .. "[" .. i .. "]")
    if not ok then
      err.index = i
      bad[#bad + 1] = err
    end
  end
  if #bad == 0 then
    return true
  end
  local msgs = {}
  for i = 1, #bad > 5 and 5 or #bad do msgs[i] = bad[i].message end
  local more = #bad > 5 and ("; and " .. (#bad - 5) .. " more") or ""
  return nil, core.error{ kind = "validation", path = bad[1].path, field = bad[1].field, errors = bad,
                          message = concat(msgs, "; ") .. more }
end

return _M
