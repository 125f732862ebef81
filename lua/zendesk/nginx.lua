-- zendesk.nginx: the zendesk client API inside nginx (Debian's lua module or OpenResty) without
-- blocking the event loop. Each Zendesk call runs the C core in an nginx thread pool
-- (ngx.run_worker_thread; the thread side is zendesk.nginx_thread), so the one transport, its
-- exact-integer JSON and its retry policy serve nginx too. The methods are zendesk.methods's, as
-- zendesk's are: their arguments are checked here, before any I/O, and only here. The account-wide
-- rate budget (zendesk.budget) is shared by all workers through a lua_shared_dict and waited for
-- with ngx.sleep; rotated OAuth tokens go to the caller's on_refresh.
local core = require "zendesk.core"
local users = require "zendesk.users"
local methods = require "zendesk.methods"
local options = require "zendesk.options"
local budget = require "zendesk.budget"

local ngx = ngx
local run_worker_thread = ngx.run_worker_thread  -- luacheck: ignore 143 (newer than luacheck's ngx_lua std)
local ngx_sleep, ngx_now, md5 = ngx.sleep, ngx.now, ngx.md5
local error, ipairs, pairs, pcall, setmetatable, getmetatable = error, ipairs, pairs, pcall, setmetatable, getmetatable
local type, tostring, format = type, tostring, string.format
local concat, sort = table.concat, table.sort

local _M = {
  _VERSION = core.version,
  null = core.null,
  array_mt = core.array_mt,
  object_mt = core.object_mt,
  is_error = core.is_error,
  validate_user = users.validate,
}

local Client = {}
local mt = { __index = Client }

local THREAD_MODULE = "zendesk.nginx_thread"
-- A pool thread asleep through a long Retry-After is a thread no other request can use: the core
-- waits at most this long in nginx; past it the error comes back with retry_after at once.
local DEFAULT_MAX_RETRY_WAIT = 5
-- This client's own options; every other one is the core's (checked by core.new below).
local OPTIONS = {
  pool = "string", dict = "string", rate_limit = { type = "number", min = 1 },
  max_wait = { type = "number", min = 0 }, on_event = "function",
}
local OAUTH_OPTIONS = { on_refresh = "function" }

-- ---- the client ----

local function check_self(self, method)
  if getmetatable(self) ~= mt then
    error("zendesk.nginx: call " .. method .. " as client:" .. method .. "(...)", 3)
  end
  if self.closed then
    error("zendesk.nginx: attempt to use a closed client", 3)
  end
end

-- Runs one core method in the thread pool, within the budget. Arguments and results are deep
-- copied between this VM and the thread's, so the configuration goes only to a thread VM that
-- has no core for it yet (it answers need_cfg without any I/O); it keeps it from then on.
local function run(self, method, a, b, c)
  local ticket, err = self.budget:acquire()
  if not ticket then return nil, err end
  local ok, done, out = pcall(run_worker_thread, self.pool, THREAD_MODULE, "call",
                              self.key, nil, self.dict_name, method, a, b, c)
  if ok and done and type(out) == "table" and out.need_cfg then
    ok, done, out = pcall(run_worker_thread, self.pool, THREAD_MODULE, "call",
                          self.key, self.cfg, self.dict_name, method, a, b, c)
  end
  self.budget:release(ticket, method, ok and done and out)
  if not ok or not done then
    local msg = tostring(ok and out or done)
    if msg:find("thread pool " .. self.pool .. " not found", 1, true) then
      msg = msg .. " (add `thread_pool " .. self.pool .. " threads=16;` to nginx.conf's main context)"
    end
    error("zendesk.nginx: " .. method .. ": " .. msg, 3)
  end
  if out.rotated and self.on_refresh then
    self.on_refresh(out.rotated)
  end
  if out.events and self.on_event then
    for _, ev in ipairs(out.events) do self.on_event(ev) end
  end
  if out.err then
    return nil, core.error(out.err)
  end
  return out.value, out.meta
end

-- A stable name for a configuration: the thread VMs key their cached clients by it and the
-- dict the newest OAuth tokens. A digest, so no credential is spelt out in a key.
local function canonical(v, out)
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    sort(keys)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      out[#out + 1] = k .. "="
      canonical(v[k], out)
      out[#out + 1] = ";"
    end
    out[#out + 1] = "}"
  else
    out[#out + 1] = format("%s:%q", type(v), tostring(v))
  end
  return out
end

-- syntax: client = zendesk_nginx.new(opts)
-- opts: those of zendesk.new, plus pool (thread pool name, "zendesk"), dict (lua_shared_dict
-- name, "zendesk"), rate_limit (requests/minute, at most; default: what Zendesk reports) and
-- max_wait (seconds a call may wait for budget, 10).
function _M.new(opts)
  if type(opts) ~= "table" then
    error("zendesk.nginx.new: options must be a table", 2)
  end
  local own, cfg = options.split(OPTIONS, opts, "zendesk.nginx.new")
  local on_refresh
  if type(cfg.oauth) == "table" then
    -- the function stays in this VM (it cannot cross to a thread): the rest is the core's
    local oauth_own, o = options.split(OAUTH_OPTIONS, cfg.oauth, "zendesk.nginx.new")
    on_refresh = oauth_own.on_refresh
    cfg.oauth = o
  end
  if cfg.max_retry_wait == nil then cfg.max_retry_wait = DEFAULT_MAX_RETRY_WAIT end
  -- the core checks its options here, in the worker, so a bad configuration fails at start-up
  local ok, c = pcall(core.new, cfg)
  if not ok then
    error((tostring(c):gsub("^zendesk%.new", "zendesk.nginx.new")), 2)
  end
  c:close()

  local dict_name = own.dict or "zendesk"
  local dict = ngx.shared[dict_name]
  if not dict then
    error("zendesk.nginx.new: no lua_shared_dict '" .. dict_name .. "' (add `lua_shared_dict "
      .. dict_name .. " 1m;` to the http block)", 2)
  end
  return setmetatable({
    cfg = cfg,
    key = md5(concat(canonical(cfg, {}))),
    pool = own.pool or "zendesk",
    dict_name = dict_name,
    budget = budget.new(dict, cfg.subdomain or cfg.url, own.rate_limit, own.max_wait or 10),
    on_event = own.on_event,
    on_refresh = on_refresh,
    sleep = ngx_sleep,
    now = ngx_now,
  }, mt)
end

-- upsert_user, upsert_users, job_status, job_statuses, request, wait_job: zendesk.methods (their
-- syntax and argument checks), each run in a pool thread by zendesk.nginx_thread; wait_job polls
-- with ngx.sleep between requests, so the worker serves other requests meanwhile.
-- upsert_user's fields: the core in the thread decodes only those, and only those are copied
-- back to this VM instead of the whole user (45 fields).
methods.build(Client, check_self, function(m)
  local name, wire = m.name, m.wire
  if wire then
    return function(self, a, b, c) return run(self, name, wire(a, b, c)) end
  end
  return function(self, a, b, c) return run(self, name, a, b, c) end
end)

-- syntax: ok = client:is_open()
function Client:is_open()
  return not self.closed
end

-- syntax: url = client:base_url()   (as configured: "https://<subdomain>.zendesk.com" or url)
function Client:base_url()
  if self.closed then return nil end
  return self.cfg.url or ("https://" .. self.cfg.subdomain .. ".zendesk.com")
end

-- syntax: client:close()
-- Idempotent. The kept-alive connections stay with the thread VMs, for the next client with
-- the same configuration (that is what makes the next request fast).
function Client:close()
  self.closed = true
end

mt.__tostring = function(self)
  return "zendesk.nginx client (" .. (self.cfg.subdomain or self.cfg.url) .. (self.closed and ", closed)" or ")")
end

_M.Client = Client
return _M
