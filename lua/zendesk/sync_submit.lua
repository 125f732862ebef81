-- zendesk.sync_submit: the submitting stage: what the answer to one bulk submission means for its
-- batch (a job in flight, a wait for a slot, two halves, later, again once, a stop, or every row
-- failed).
-- syntax: require "zendesk.sync_submit"   (adds Sync:handle_post to zendesk.sync_state)
local core = require "zendesk.core"

local type, tostring, require, floor, max = type, tostring, require, math.floor, math.max
local insert, format, os_time = table.insert, string.format, os.time
local Sync = require "zendesk.sync_state"
local read = require "zendesk.sync_read"
local new_batch = read.new_batch

local _M = {}

local PATH_MANY = require("zendesk.api").PATH_UPSERT_MANY
-- 409 DatabaseConflict answers to one batch (each after the core's retries) before the sync stops.
local MAX_CONFLICTS = 3

-- syntax: never_sent, may_have_arrived = transport_fate(err)
-- What the core reports of a transport failure: never_sent (err.sent == false: resolve, connect,
-- TLS set-up), the request cannot have become a job; may_have_arrived, a network failure after
-- which the request may have reached Zendesk (the core does not resend bulk submissions, so the
-- job may exist).
local function transport_fate(err)
  if err.kind ~= "network" then return false, false end
  return err.sent == false, err.sent ~= false
end
_M.transport_fate = transport_fate

-- The error a sync stops with when 429s refused every `what` for `waited` seconds.
function Sync:rate_limit_error(what, err, waited)
  return core.error{ kind = "rate_limited", status = err.status or 429, code = err.code,
    request_id = err.request_id, retry_after = err.retry_after, message = format(
    "Zendesk refused every %s with 429 for %d s (rate_limit_timeout %g s): stopped; resume later (last: %s)",
    what, floor(waited), self.rate_limit_timeout, tostring(err)) }
end

-- Whether a batch already holds rows on their second try.
local function batch_retried(batch)
  for i = 1, batch.n do
    if (batch.tries[i] or 1) >= 2 then return true end
  end
  return false
end

function Sync:handle_post(batch, res)
  local now = self.now()
  local value, err = res.value, res.err
  local js = type(value) == "table" and value.job_status
  if type(js) == "table" and type(js.id) == "string" then
    -- taken only after the core waited out refusals (429 TooManyJobs, 5xx): we are at the limit
    if type(res.meta) == "table" and (res.meta.attempts or 1) > 1 then self.too_many = true end
    local job = { batch = batch, id = js.id, at = now, seen = false, misses = 0 }
    self.sent = true
    self.refused_since = nil
    self.inflight[#self.inflight + 1] = job
    self.jobs = self.jobs + 1
    self:jwrite{ t = "job", b = batch.b, id = js.id, at = os_time() }
    if self.next_poll > now + self.poll_lo then self.next_poll = now + self.poll_lo end
    return
  end
  if not err then
    err = core.error{ kind = "http", code = "InvalidResponse", status = res.meta and res.meta.status,
                      request_id = res.meta and res.meta.request_id,
                      message = "answer to " .. PATH_MANY .. " has no job_status" }
  end
  local kind, status = err.kind, err.status
  if kind == "rate_limited" and err.retry_after_too_long then
    -- Zendesk asks for a longer pause than the client may sleep (max_retry_wait): stop, resumable
    self:fail(err)
    return
  end
  if kind == "rate_limited" then
    -- TooManyJobs (or the account's rate limit): wait for a slot, never fail the rows; but not
    -- for ever. Refusals while jobs of ours are in flight wait for those (bounded by job_timeout);
    -- with none in flight, nothing of ours holds the slots, and the wait is bounded here.
    self.too_many = true
    if #self.inflight > 0 then
      self.refused_since = nil
    else
      self.refused_since = self.refused_since or now
    end
    if self.refused_since and now - self.refused_since > self.rate_limit_timeout then
      self:fail(self:rate_limit_error("bulk submission", err, now - self.refused_since))
      return
    end
    -- the batch keeps its number: its batch record stands (a resume sends it again), and one
    -- refused record per batch tells why it waited, however many refusals there are
    if not batch.refused then
      batch.refused = true
      self:jwrite{ t = "refused", b = batch.b, why = tostring(err) }
    end
    insert(self.ready, 1, batch)
    local wait = type(err.retry_after) == "number" and err.retry_after or 1
    self.submit_after = max(self.submit_after, now + max(wait, 0.5))
    return
  end
  if kind == "http" and status == 413 and batch.n > 1 then
    -- too large a body: the same rows in two halves
    local a, b = new_batch(), new_batch()
    for i = 1, batch.n do
      local t = i <= floor(batch.n / 2) and a or b
      local n = t.n + 1
      t.n = n
      t.rows[n], t.users[n], t.keys[n], t.tries[n] = batch.rows[i], batch.users[i], batch.keys[i], batch.tries[i]
    end
    self:jwrite{ t = "retry", b = batch.b, status = "split", why = tostring(err) }
    insert(self.ready, 1, b)
    insert(self.ready, 1, a)
    return
  end
  if kind == "http" and status == 409 and (batch.conflicts or 0) < MAX_CONFLICTS then
    -- DatabaseConflict outlasting the core's retries is still no verdict on the rows: again later
    batch.conflicts = (batch.conflicts or 0) + 1
    self:jwrite{ t = "retry", b = batch.b, status = "refused", why = tostring(err) }
    batch.b = nil
    batch.not_before = now + batch.conflicts
    insert(self.ready, 1, batch)
    return
  end
  -- refused outright (no job): authentication, a 4xx other than a timeout, no connection or no
  -- TLS session (resolve, connect, handshake, certificate: the request was never sent)
  local never_sent, may_have_arrived = transport_fate(err)
  local refused = kind == "auth" or never_sent
    or (kind == "http" and (status or 0) >= 400 and status < 500 and status ~= 408)
  if not refused then self.sent = true end   -- the submission may have become a job
  -- the request may have arrived before the connection failed (the core does not resend bulk
  -- submissions then): the job may exist, so the rows wait, then go once more
  if (kind == "timeout" or may_have_arrived)
     and not batch_retried(batch) then
    self:job_lost(batch, "uncertain", "no answer to the submission: " .. tostring(err))
    return
  end
  if kind == "auth" and status == 403 then
    err.hint = "bulk imports are probably not enabled on this Zendesk account: they are off by default, "
      .. "and the account owner asks Zendesk Customer Support to enable them (the API user must also be "
      .. "an admin, or an agent whose role may manage end users)"
  end
  -- transient refusals the core already retried (5xx, 408, 409) say nothing about these rows:
  -- stop, so that a resume sends them, rather than settle them as failed
  if kind == "auth" or kind == "network" or kind == "timeout"
     or (kind == "http" and ((status or 0) >= 500 or status == 409 or status == 408)) then
    self:fail(err)
    return
  end
  if (kind == "http" or kind == "invalid_response") and (status or 0) >= 200 and status < 300 then
    -- an answer we could not read: the job may exist
    self:job_lost(batch, "uncertain", "the answer to the submission was unreadable: " .. tostring(err))
    return
  end
  -- the request itself was refused (400, 404, 413 for one user, 422...): these rows cannot go
  self:close_batch(batch, nil, function(i)
    return Sync.outcome(batch, i, "failed", { error = err.code, details = err.message, reason = tostring(err) })
  end)
end

return _M
