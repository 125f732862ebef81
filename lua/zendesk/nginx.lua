-- zendesk.nginx: the zendesk client API inside nginx (Debian's lua module or OpenResty) without
-- blocking the event loop. Each Zendesk call runs the C core in an nginx thread pool
-- (ngx.run_worker_thread; the thread side is zendesk.nginx_thread), so the one transport, its
-- exact-integer JSON and its retry policy serve nginx too. This side checks input before any
-- I/O, shares the account-wide rate budget between all workers through a lua_shared_dict and
-- waits for it with ngx.sleep, and hands rotated OAuth tokens to the caller's on_refresh.
local core = require "zendesk.core"
local users = require "zendesk.users"
local jobs = require "zendesk.jobs"

local ngx = ngx
local run_worker_thread = ngx.run_worker_thread  -- luacheck: ignore 143 (newer than luacheck's ngx_lua std)
local ngx_sleep, ngx_now, update_time, md5 = ngx.sleep, ngx.now, ngx.update_time, ngx.md5
local error, ipairs, pairs, pcall, setmetatable, getmetatable = error, ipairs, pairs, pcall, setmetatable, getmetatable
local type, tostring, format = type, tostring, string.format
local ceil, max = math.ceil, math.max
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
local WINDOW = 60   -- Zendesk counts an account's requests per minute
local SLACK = 2     -- seconds two views of one window may differ by (whole-second resets, latency)
-- A pool thread asleep through a long Retry-After is a thread no other request can use: the core
-- waits at most this long in nginx; past it the error comes back with retry_after at once.
local DEFAULT_MAX_RETRY_WAIT = 5
local NGINX_OPTIONS = {
  pool = "string", dict = "string", rate_limit = "number", max_wait = "number",
}

-- ---- the account's rate budget, shared by every worker ----
--
-- Requests are counted per window in the dict with incr (atomic across workers). A window is
-- anchored to Zendesk's own (now + ratelimit-reset) as soon as an answer tells it, and only ever
-- extended, so ours never reopens before Zendesk's has. Keys, under "rl:<account>:":
--   seq         the current window's number      end:<seq>  its end (ngx.now() seconds)
--   n:<seq>     requests counted in it            open:<seq> taken by the worker that ends it
--   limit       the limit Zendesk last reported   block      no request before this time (an
--                                                            account-wide 429)
--   inflight    requests under way                probe      the one request sent while the
--                                                            limit is not known yet

-- Returns the live window's number and end, or nil, nil and the number of the last one.
local function current_window(d, p, t)
  local seq = d:get(p .. "seq")
  if seq then
    local e = d:get(p .. "end:" .. seq)
    if e and e > t then return seq, e end
  end
  return nil, nil, seq or 0
end

-- Replaces window `old` by a new one ending at e with n requests counted; only one worker wins.
local function open_window(d, p, old, e, n)
  if not d:add(p .. "open:" .. old, true, 2 * WINDOW) then return nil end
  local seq, ttl = old + 1, e - ngx_now() + WINDOW
  d:set(p .. "end:" .. seq, e, ttl)
  if n > 0 then d:set(p .. "n:" .. seq, n, ttl) end
  d:set(p .. "seq", seq)
  return seq, e
end

local function rate_error(self, wait, limit)
  local s = ceil(wait)
  return core.error{
    kind = "rate_limited", retry_after = s,
    message = format("rate budget spent%s: the next request slot is in %d s, longer than max_wait (%g s)",
      limit and format(" (%d requests/min)", limit) or "", s, self.max_wait),
  }
end

-- Waits (ngx.sleep) until the budget has room; returns a ticket, or nil, err past max_wait.
local function acquire(self)
  local d, p = self.dict, self.prefix
  local deadline = ngx_now() + self.max_wait
  while true do
    update_time()   -- ngx.now() is the event loop's cached time: a wait must see the clock move
    local t = ngx_now()
    local wait, limit
    local block = d:get(p .. "block")
    if block and block > t then
      wait = block - t
    else
      local learned = d:get(p .. "limit")
      limit = self.rate_limit
      if learned and (not limit or learned < limit) then limit = learned end
      if not limit then
        -- one request at a time until an answer tells the limit: a burst of first requests
        -- could otherwise spend the whole budget before anyone knows it
        if d:add(p .. "probe", true, 60) then return "probe" end
        wait = 0.02
      else
        local seq, e, last = current_window(d, p, t)
        if not seq then
          seq, e = open_window(d, p, last, t + WINDOW, 0)
        end
        if not seq then
          wait = 0.001   -- another worker is opening the window
        else
          local key = p .. "n:" .. seq
          local n = d:incr(key, 1, 0, e - t + WINDOW)
          if not n or n <= limit then   -- a full dict must not stop the traffic
            d:incr(p .. "inflight", 1, 0, 600)
            return seq
          end
          d:incr(key, -1, 0)
          wait = e - t
        end
      end
    end
    if t + wait > deadline then return nil, rate_error(self, wait, limit) end
    -- at least 1 ms: ngx.sleep rounds down to whole milliseconds, and ngx.sleep(0) only yields
    ngx_sleep(max(wait, 0.001))
  end
end

-- Learns from an answer's rate-limit headers: the limit, the window's end, what Zendesk counted.
local function sync(self, rl)
  local d, p = self.dict, self.prefix
  if type(rl) ~= "table" or type(rl.limit) ~= "number" then return end
  d:set(p .. "limit", rl.limit)
  if type(rl.remaining) ~= "number" or type(rl.reset) ~= "number" then return end
  local t = ngx_now()
  local server_end, used = t + rl.reset, rl.limit - rl.remaining
  local seq, e, last = current_window(d, p, t)
  if seq and server_end - e <= SLACK and e - server_end <= SLACK then
    if server_end > e then d:set(p .. "end:" .. seq, server_end, server_end - t + WINDOW) end
    local key = p .. "n:" .. seq
    local n = d:get(key) or 0
    if used > n then d:incr(key, used - n, 0, server_end - t + WINDOW) end   -- others use the account too
  else
    -- no window yet, or Zendesk's is another one: take Zendesk's, with what is still under way
    local inflight = max(0, d:get(p .. "inflight") or 0)
    open_window(d, p, seq or last, server_end, used + inflight)
  end
end

-- Whether a 429 says the whole account is out of budget (then every worker holds back).
local function account_wide(err, method)
  local rl = err.rate_limit
  if type(rl) == "table" and type(rl.remaining) == "number" then
    return rl.remaining <= 0
  end
  -- Without the headers, a 429 from create_or_update may be its per-user limit (5 updates a
  -- minute for one user): holding every call back for it would let one busy address stall
  -- the account. Too many queued jobs is not a request rate either.
  return not err.endpoint_limit and method ~= "upsert_user" and err.code ~= "TooManyJobs"
end

local function release(self, ticket, method, out)
  local d, p = self.dict, self.prefix
  if ticket == "probe" then
    d:delete(p .. "probe")
  else
    d:incr(p .. "inflight", -1, 0, 600)
  end
  local info = out and (out.meta or out.err)
  if type(info) ~= "table" then return end
  if type(info.attempts) == "number" and info.attempts > 1 then
    -- the core's retries were requests too
    local seq = current_window(d, p, ngx_now())
    if seq then d:incr(p .. "n:" .. seq, info.attempts - 1, 0, 2 * WINDOW) end
  end
  sync(self, info.rate_limit)
  local err = out.err
  if err and err.status == 429 and account_wide(err, method) then
    local wait = type(err.retry_after) == "number" and err.retry_after or 1
    d:set(p .. "block", ngx_now() + wait, wait)
  end
end

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
-- has no client for it yet (it answers need_cfg without any I/O); it keeps it from then on.
local function run(self, method, a, b, c)
  local ticket, err = acquire(self)
  if not ticket then return nil, err end
  local ok, done, out = pcall(run_worker_thread, self.pool, THREAD_MODULE, "call",
                              self.key, nil, self.dict_name, method, a, b, c)
  if ok and done and type(out) == "table" and out.need_cfg then
    ok, done, out = pcall(run_worker_thread, self.pool, THREAD_MODULE, "call",
                          self.key, self.cfg, self.dict_name, method, a, b, c)
  end
  release(self, ticket, method, ok and done and out)
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

local function check_function(v, name)
  if v ~= nil and type(v) ~= "function" then
    error("zendesk.nginx.new: option '" .. name .. "' must be a function", 3)
  end
  return v
end

-- syntax: client = zendesk_nginx.new(opts)
-- opts: those of zendesk.new, plus pool (thread pool name, "zendesk"), dict (lua_shared_dict
-- name, "zendesk"), rate_limit (requests/minute, at most; default: what Zendesk reports) and
-- max_wait (seconds a call may wait for budget, 10).
function _M.new(opts)
  if type(opts) ~= "table" then
    error("zendesk.nginx.new: options must be a table", 2)
  end
  local own, cfg = {}, {}
  for k, v in pairs(opts) do
    if NGINX_OPTIONS[k] then
      if type(v) ~= NGINX_OPTIONS[k] then
        error("zendesk.nginx.new: option '" .. k .. "' must be a " .. NGINX_OPTIONS[k], 2)
      end
      own[k] = v
    elseif k ~= "on_event" then
      cfg[k] = v
    end
  end
  local on_event = check_function(opts.on_event, "on_event")
  local on_refresh
  if type(opts.oauth) == "table" then
    local o = {}
    for k, v in pairs(opts.oauth) do
      if k ~= "on_refresh" then o[k] = v end
    end
    on_refresh = check_function(opts.oauth.on_refresh, "oauth.on_refresh")
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
  if own.rate_limit and own.rate_limit < 1 then
    error("zendesk.nginx.new: option 'rate_limit' must be at least 1 (requests per minute)", 2)
  end
  if own.max_wait and own.max_wait < 0 then
    error("zendesk.nginx.new: option 'max_wait' must not be negative", 2)
  end
  local self = setmetatable({
    cfg = cfg,
    key = md5(concat(canonical(cfg, {}))),
    pool = own.pool or "zendesk",
    dict = dict,
    dict_name = dict_name,
    prefix = "rl:" .. (cfg.subdomain or cfg.url) .. ":",
    rate_limit = own.rate_limit,
    max_wait = own.max_wait or 10,
    on_event = on_event,
    on_refresh = on_refresh,
    sleep = ngx_sleep,
    now = ngx_now,
  }, mt)
  return self
end

-- syntax: user, meta = client:upsert_user(user [, {fields = {"id", ...}}])
-- opts.fields: the top-level user fields to return (say {"id"}); the core in the thread decodes
-- only those, and only those are copied back to this VM instead of the whole user (45 fields).
function Client:upsert_user(user, opts)
  check_self(self, "upsert_user")
  users.check_upsert_opts(opts, "upsert_user")
  local ok, err = users.check_upsert_arg(user, "upsert_user")
  if not ok then return nil, err end
  return run(self, "upsert_user", user, opts and opts.fields)
end

-- syntax: job_status, meta = client:upsert_users(list)   (1 to 100 users)
function Client:upsert_users(list)
  check_self(self, "upsert_users")
  local ok, err = users.check_upsert_many_arg(list, "upsert_users")
  if not ok then return nil, err end
  return run(self, "upsert_users", list)
end

-- syntax: job_status, meta = client:job_status(id_or_job)
function Client:job_status(id)
  check_self(self, "job_status")
  return run(self, "job_status", jobs.id_of(id, 2))
end

-- syntax: job_statuses, meta = client:job_statuses(ids)
function Client:job_statuses(ids)
  check_self(self, "job_statuses")
  if type(ids) ~= "table" then
    error("job_statuses: argument 'ids' must be an array of job ids", 2)
  end
  return run(self, "job_statuses", ids)
end

-- syntax: job_status, meta = client:wait_job(id_or_job, {timeout =, on_progress =})
-- Polls with ngx.sleep between requests: the worker serves other requests meanwhile.
function Client:wait_job(job, opts)
  check_self(self, "wait_job")
  return jobs.wait(self, job, opts)
end

-- syntax: body, meta = client:request(method, path, body)
function Client:request(method, path, body)
  check_self(self, "request")
  if type(method) ~= "string" or type(path) ~= "string" then
    error("request: arguments 'method' and 'path' must be strings", 2)
  end
  return run(self, "request", method, path, body)
end

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
