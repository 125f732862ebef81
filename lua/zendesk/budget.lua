-- zendesk.budget: the account's request budget, shared by every nginx worker through a
-- lua_shared_dict (zendesk.nginx takes a ticket before each call and gives it back with what the
-- answer said). Zendesk counts an account's requests per minute; a call waits for room with
-- ngx.sleep, at most max_wait seconds, then fails with kind = "rate_limited" and retry_after.
-- syntax: b = budget.new(dict, account, rate_limit, max_wait)
--         ticket, err = b:acquire()          (waits; nil, err past max_wait)
--         b:release(ticket, method, out)     (out: the thread's answer {meta =} or {err =}, or nil)
local core = require "zendesk.core"

local ngx = ngx
local ngx_sleep, ngx_now, update_time = ngx.sleep, ngx.now, ngx.update_time
local setmetatable, type, format = setmetatable, type, string.format
local ceil, max = math.ceil, math.max

local _M = { _VERSION = core.version }

local Budget = {}
local mt = { __index = Budget }

local WINDOW = 60   -- Zendesk counts an account's requests per minute
local SLACK = 2     -- seconds two views of one window may differ by (whole-second resets, latency)

function _M.new(dict, account, rate_limit, max_wait)
  return setmetatable({ dict = dict, prefix = "rl:" .. account .. ":", rate_limit = rate_limit,
                        max_wait = max_wait }, mt)
end

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
function Budget:acquire()
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
local function learn(self, rl)
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

function Budget:release(ticket, method, out)
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
  learn(self, info.rate_limit)
  local err = out.err
  if err and err.status == 429 and account_wide(err, method) then
    local wait = type(err.retry_after) == "number" and err.retry_after or 1
    d:set(p .. "block", ngx_now() + wait, wait)
  end
end

return _M
