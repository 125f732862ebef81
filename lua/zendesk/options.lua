-- zendesk.options: the one checker for option tables. Every Lua module that takes options
-- (zendesk.new, sync_users, sources.open, wait_job, zendesk.nginx.new) describes them in a small
-- schema and calls check; an unknown key or a wrong type raises the same way everywhere:
--   "<where>: unknown option '<key>'"
--   "<where>: option '<key>' must be a <type>, got <type>"
--   "<where>: option '<key>' must be an integer from <lo> to <hi>"
--   "<where>: option '<key>' must be a non-negative number"
--   "<where>: option '<key>' must be a number at least <lo> | at most <hi> | from <lo> to <hi>, got <v>"
-- A schema maps each key to a spec: a Lua type name ("string", "table", ...), or a table
-- { type = "integer" | "number" | <type name>, min =, max =, pass = true (left to another checker,
-- such as the C core's for zendesk.new) }.
local error, floor, format, huge, pairs, tostring, type = error, math.floor, string.format, math.huge, pairs,
  tostring, type

local _M = {}

-- syntax: ok = options.is_int(v)   (math.type is Lua 5.3+; this layer also runs under LuaJIT)
local function is_int(v)
  return type(v) == "number" and v == floor(v) and v > -huge and v < huge
end
_M.is_int = is_int

local function article(t)
  return (t:find("^[aeiou]") and "an " or "a ") .. t
end

local function check_one(where, k, v, spec, level)
  if type(spec) == "string" then spec = { type = spec } end
  if spec.pass then return end
  local want = spec.type
  if want == "integer" then
    if not (is_int(v) and (spec.min == nil or v >= spec.min) and (spec.max == nil or v <= spec.max)) then
      if spec.min and spec.max then
        error(format("%s: option '%s' must be an integer from %d to %d", where, k, spec.min, spec.max), level)
      end
      error(format("%s: option '%s' must be an integer, got %s", where, k, tostring(v)), level)
    end
  elseif want == "number" then
    if type(v) ~= "number" then
      error(format("%s: option '%s' must be a number, got %s", where, k, type(v)), level)
    end
    if spec.min == 0 and not (v >= 0 and v < huge) then
      error(format("%s: option '%s' must be a non-negative number", where, k), level)
    end
    if v ~= v or (spec.min and v < spec.min) or (spec.max and v > spec.max) then
      local lo, hi = spec.min, spec.max
      local range = lo and hi and format("from %g to %g", lo, hi) or lo and format("at least %g", lo)
        or hi and format("at most %g", hi) or "(not NaN)"
      error(format("%s: option '%s' must be a number %s, got %s", where, k, range, tostring(v)), level)
    end
  elseif type(v) ~= want then
    error(format("%s: option '%s' must be %s, got %s", where, k, article(want), type(v)), level)
  end
end

-- syntax: opts = options.check(schema, opts, where [, level])
-- Raises (at level, default 3: the caller of the function that called check) on an unknown key or
-- a wrong value; returns opts, or {} for nil. A non-table opts raises
-- "<where>: argument 'opts' must be a table".
function _M.check(schema, opts, where, level)
  level = level or 3
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(where .. ": argument 'opts' must be a table, got " .. type(opts), level)
  end
  for k, v in pairs(opts) do
    local spec = type(k) == "string" and schema[k] or nil
    if spec == nil then
      error(where .. ": unknown option '" .. tostring(k) .. "'", level)
    end
    check_one(where, k, v, spec, level + 1)
  end
  return opts
end

-- syntax: own, rest = options.split(schema, opts, where [, level])
-- For a module that hands the options it does not know to another checker (zendesk.new to the C
-- core, which refuses an unknown key in the same words): the keys of schema are checked as check
-- does and returned in own; every other key goes to rest, unchecked. opts must be a table.
function _M.split(schema, opts, where, level)
  level = level or 3
  local own, rest = {}, {}
  for k, v in pairs(opts) do
    local spec = type(k) == "string" and schema[k] or nil
    if spec == nil then
      rest[k] = v
    else
      check_one(where, k, v, spec, level + 1)
      own[k] = v
    end
  end
  return own, rest
end

return _M
