-- zendesk.nginx_thread: the half of zendesk.nginx that runs in nginx's thread pool (through
-- ngx.run_worker_thread), where the C core may block on libcurl without stalling the event loop.
-- It calls the core directly, through zendesk.api, the method named in zendesk.methods's table:
-- the worker has checked the arguments already, so nothing is validated again here. It keeps one
-- core handle per configuration in this thread VM, so its kept-alive connection is reused by
-- later calls, and publishes rotated OAuth tokens in the lua_shared_dict the moment they arrive,
-- because Zendesk deletes the old pair at once and every other thread needs the new.
-- Only plain data crosses back to the worker: one table holding the value, its meta or the
-- error, the events to replay and the rotated pair for the caller's on_refresh.
-- Each crossing is a deep copy (ngx_http_lua_xcopy), so the worker sends the configuration only
-- when this VM asks for it (it keeps it with the core) and may ask for only some user fields.
-- luacheck: read globals ngx
local core = require "zendesk.core"
local api = require "zendesk.api"
local methods = require "zendesk.methods"

local next, pairs, pcall, error, tonumber, tostring = next, pairs, pcall, error, tonumber, tostring
local is_error = core.is_error

local _M = { _VERSION = core.version }

-- Configurations a thread VM keeps core handles for; an application with more (one per tenant)
-- drops the least recently used rather than growing without bound.
local MAX_CORES = 16

local cores, count, tick = {}, 0, 0
local pending   -- what the hooks of the call in progress collect

-- The answer to a call without cfg for a configuration this VM has no core for (its first
-- call, or its core was evicted): nothing was sent, the worker calls again with cfg.
local NEED_CFG = { need_cfg = true }

-- The newest token pair of a configuration: generation, access token, refresh token.
local function shared_tokens(dict, key)
  local v = dict:get("tok:" .. key)
  if not v then return 0 end
  local gen, access, refresh = v:match("^(%d+)\n([^\n]*)\n(.*)$")
  return tonumber(gen), access, refresh ~= "" and refresh or nil
end

local function publish(dict, key, access, refresh)
  local gen = dict:incr("tokgen:" .. key, 1, 0)
  if gen then
    dict:set("tok:" .. key, gen .. "\n" .. access .. "\n" .. (refresh or ""))
  end
  return gen or 0
end

local function drop(key)
  cores[key].core:close()
  cores[key] = nil
  count = count - 1
end

local function evict()
  local oldest, at
  for k, e in pairs(cores) do
    if not at or e.used < at then oldest, at = k, e.used end
  end
  drop(oldest)
end

local function build(key, cfg, dict)
  local entry = { gen = 0, cfg = cfg }   -- cfg kept for the rebuild after a token rotation
  local opts = {}
  for k, v in pairs(cfg) do opts[k] = v end
  opts.on_event = function(ev)
    local list = pending.events
    list[#list + 1] = ev
  end
  if cfg.oauth then
    local o = {}
    for k, v in pairs(cfg.oauth) do o[k] = v end
    local gen, access, refresh = shared_tokens(dict, key)
    if gen > 0 then
      o.access_token, o.refresh_token = access, refresh
    end
    entry.gen, entry.access, entry.refresh = gen, o.access_token, o.refresh_token
    o.on_refresh = function(t)
      entry.access, entry.refresh = t.access_token, t.refresh_token or entry.refresh
      entry.gen = publish(dict, key, entry.access, entry.refresh)
      pending.rotated = t
    end
    opts.oauth = o
  end
  entry.core = core.new(opts)
  if count >= MAX_CORES then evict() end
  cores[key] = entry
  count = count + 1
  return entry
end

-- The cached core for key, rebuilt when another thread has rotated the tokens since.
local function core_for(key, cfg, dict)
  local entry = cores[key]
  if entry and cfg.oauth then
    local gen, access = shared_tokens(dict, key)
    if gen > entry.gen then
      if access == entry.access then
        entry.gen = gen   -- this thread's own rotation, already in use
      else
        drop(key)
        entry = nil
      end
    end
  end
  entry = entry or build(key, cfg, dict)
  tick = tick + 1
  entry.used = tick
  return entry
end

-- syntax: out = call(key, cfg, dict_name, method, a, b, c)
-- out = {value =, meta =} or {err =}, plus events = {...} and rotated = {...} when there were any;
-- {need_cfg = true} when cfg is nil and this VM has no core for key. method is a name of
-- zendesk.methods's table and a, b, c its arguments as they cross (its wire: for upsert_user, b
-- is nil or the array of the user fields to return).
function _M.call(key, cfg, dict_name, method, a, b, c)
  local m = methods.get(method)
  local fn = m and m.api and api[m.api]
  if not fn then
    error("zendesk.nginx_thread: unknown method '" .. tostring(method) .. "'", 2)
  end
  local entry = cores[key]
  if not entry and not cfg then return NEED_CFG end
  cfg = cfg or entry.cfg
  if m.unwire then a, b, c = m.unwire(a, b, c) end
  local dict = ngx.shared[dict_name]
  pending = { events = {} }
  entry = core_for(key, cfg, dict)
  local ok, value, meta = pcall(fn, entry.core, a, b, c)
  if ok and value == nil and cfg.oauth and is_error(meta) and meta.status == 401 and not pending.rotated then
    -- another thread may have spent the refresh token we held: its new pair is published the
    -- moment its refresh answers, which can be a moment after ours failed
    local gen = shared_tokens(dict, key)
    for _ = 1, 10 do
      if gen > entry.gen then break end
      core.sleep(0.05)
      gen = shared_tokens(dict, key)
    end
    if gen > entry.gen then
      entry = core_for(key, cfg, dict)
      ok, value, meta = pcall(fn, entry.core, a, b, c)
    end
  end
  local out = pending
  pending = nil
  if not ok then
    error(value, 0)
  end
  if next(out.events) == nil then out.events = nil end
  if value == nil and is_error(meta) then
    out.err = meta   -- its metatable stays behind; the worker puts core.error's back
  else
    out.value, out.meta = value, meta
  end
  return out
end

return _M
