-- Shared state of the stand-in: lua_shared_dict access, configuration, the
-- cross-worker lock, id issuing, statistics and reset.
local json = require "fake_zendesk.json"
local fields = require "fake_zendesk.fields"

local ngx = ngx
local zd = ngx.shared.zd         -- users, orgs, jobs, tokens, limits, faults, config
local meta = ngx.shared.zd_meta  -- counters that survive a reset (generation, cache versions)
local reqlog = ngx.shared.zd_req -- recorded requests (LRU eviction is fine here)

local _M = { zd = zd, meta = meta, reqlog = reqlog }

_M.EMAIL = "admin@example.com"
_M.TOKEN = "stand-in-token"
_M.OAUTH_ACCESS = "stand-in-oauth"
_M.OAUTH_REFRESH = "stand-in-refresh"
_M.CLIENT_ID = "stand-in-client"
_M.CLIENT_SECRET = "stand-in-secret"

local DEFAULT_USER_FIELDS = {
  level = "dropdown", employee_number = "integer", start_date = "date",
  vip = "checkbox", department = "text", score = "decimal",
}

local function defaults()
  local uf = {}
  for k, v in pairs(DEFAULT_USER_FIELDS) do uf[k] = v end
  return {
    job_delay_ms = 100,
    imports_enabled = true,
    rate_limit_per_minute = 700,
    per_user_limit = 5,
    max_jobs = 30,
    fresh_job_404_polls = 0,
    job_expiry_s = 86400,
    token_ttl_s = 1800,
    id_start = "36146830593",
    user_fields = uf,
  }
end
_M.defaults = defaults

local NUMERIC = {
  job_delay_ms = true, rate_limit_per_minute = true, per_user_limit = true, max_jobs = true,
  fresh_job_404_polls = true, job_expiry_s = true, token_ttl_s = true,
}
-- Keys computed from the stored config (never stored, never shown by GET /__admin/config).
local DERIVED = { fields = true, field_by_key = true, field_names = true }

-- Per-worker cache of the decoded config, refreshed when its version moves.
local cfg_cache, cfg_ver = nil, -1

function _M.config()
  local v = meta:get("config_ver") or 0
  if v ~= cfg_ver or not cfg_cache then
    local raw = zd:get("config")
    local c = raw and json.raw_decode(raw) or defaults()
    -- validated when stored; a definition that no longer normalises leaves no fields
    c.fields = fields.normalize(c.user_fields) or {}
    c.field_by_key = {}
    local names = {}
    for _, def in ipairs(c.fields) do
      c.field_by_key[def.key] = def
      if def.active then names[#names + 1] = def.key end
    end
    table.sort(names) -- the user JSON lists the active fields by key, as the recordings show
    c.field_names = names
    cfg_cache, cfg_ver = c, v
  end
  return cfg_cache
end

local function store_config(c)
  local copy = {}
  for k, v in pairs(c) do if not DERIVED[k] then copy[k] = v end end
  zd:set("config", json.encode(copy))
  meta:incr("config_ver", 1, 0)
end

-- Full config as JSON, id_start spliced in as an exact integer literal.
function _M.config_json()
  local c = _M.config()
  local copy = {}
  for k, v in pairs(c) do
    if not DERIVED[k] and k ~= "id_start" then copy[k] = v end
  end
  local body = json.value(copy)
  return '{"id_start":' .. c.id_start .. "," .. body:sub(2)
end

-- Applies a decoded POST /__admin/config body; returns true or nil, message.
function _M.update_config(body)
  if type(body) ~= "table" then return nil, "body must be a JSON object" end
  local c = {}
  for k, v in pairs(_M.config()) do c[k] = v end
  local expire = false
  for k, v in pairs(body) do
    if NUMERIC[k] then
      if type(v) ~= "number" or v < 0 then return nil, k .. " must be a non-negative number" end
      c[k] = v
    elseif k == "imports_enabled" then
      if type(v) ~= "boolean" then return nil, k .. " must be a boolean" end
      c[k] = v
    elseif k == "id_start" then
      local id = json.id_of(v)
      if not id or id == "0" then return nil, "id_start must be a positive integer (number or digit string)" end
      c[k] = id
    elseif k == "user_fields" then
      local ok, msg = fields.normalize(v)
      if not ok then return nil, msg end
      c[k] = v
    elseif k == "expire_tokens" then
      expire = v == true
    else
      return nil, "unknown config key: " .. tostring(k)
    end
  end
  if c.id_start ~= _M.config().id_start then
    zd:set("id:base", c.id_start)
    zd:set("id:n", -1)
  end
  store_config(c)
  if expire then zd:incr("tok:gen", 1, 0) end
  return true
end

-- Cross-worker mutex on the shared dict. Critical sections never yield, so the
-- holder is always running on the other core: spin briefly, then sleep.
local function lock()
  for i = 1, 100000 do
    if zd:add("lock", true, 2) then return true end
    if i % 200 == 0 then
      local ok = pcall(ngx.sleep, 0.001)
      if not ok then return true end -- no yielding possible here: the 2 s expiry bounds the wait
    end
  end
  return nil
end

local function unlock(ok, ...)
  zd:delete("lock")
  if not ok then error((...), 0) end
  return ...
end

-- Runs fn(...) holding the lock; returns what fn returns (errors re-raised).
function _M.locked(fn, ...)
  lock()
  return unlock(pcall(fn, ...))
end

function _M.generation()
  return meta:get("gen") or 0
end

-- Next user id: id_start + n, skipping ids already taken (id_start may be moved).
function _M.next_user_id()
  local base = zd:get("id:base") or _M.config().id_start
  while true do
    local n = zd:incr("id:n", 1, -1)
    local id = json.add(base, n)
    if not zd:get("u:" .. id) then return id end
  end
end

local BASES = { ident = "10000000000", org = "22000000000" }
function _M.next_aux_id(kind)
  local n = zd:incr("aux:" .. kind, 1, 0)
  return json.add(BASES[kind], n)
end

function _M.stat(name, by)
  zd:incr("st:" .. name, by or 1, 0)
end

function _M.stats_json()
  local function g(k) return zd:get("st:" .. k) or 0 end
  return string.format(
    '{"requests":%d,"rate_limited":%d,"per_user_limited":%d,"jobs":%d,"too_many_jobs":%d,"faults":%d,"users":%d,'
      .. '"max_concurrent":%d,"gzipped":%d}',
    g("requests"), g("rate_limited"), g("per_user_limited"), g("jobs"), g("too_many_jobs"),
    g("faults"), zd:get("ulist:n") or 0, g("max_concurrent"), g("gzipped"))
end

-- Default OAuth pair; the access token's age counts from here.
local function seed_tokens()
  zd:set("tok:a:" .. _M.OAUTH_ACCESS, ngx.now() .. "|" .. (zd:get("tok:gen") or 0))
  zd:set("tok:r:" .. _M.OAUTH_REFRESH, _M.OAUTH_ACCESS)
end
_M.seed_tokens = seed_tokens

function _M.init()
  if not zd:get("config") then
    store_config(defaults())
    seed_tokens()
  end
end

function _M.reset()
  meta:incr("gen", 1, 0)
  zd:flush_all()
  zd:flush_expired()
  reqlog:flush_all()
  reqlog:flush_expired()
  store_config(defaults())
  meta:incr("faults_ver", 1, 0)
  seed_tokens()
end

return _M
