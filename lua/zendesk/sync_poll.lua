-- zendesk.sync_poll: the polling and mapping stage: one show_many answer for every job in flight,
-- each finished job's results mapped back to its input rows, and what becomes of the rows of a
-- job that failed, was killed, vanished or is stuck.
-- syntax: require "zendesk.sync_poll"   (adds its methods to zendesk.sync_state)
local core = require "zendesk.core"
local journal = require "zendesk.journal"
local is_int = require("zendesk.options").is_int

local type, tostring, ipairs, require, floor = type, tostring, ipairs, require, math.floor
local max, min, insert, format = math.max, math.min, table.insert, string.format
local null = core.null
local Sync = require "zendesk.sync_state"
local new_batch = require("zendesk.sync_read").new_batch

local _M = {}

-- A batch whose submission got an unreadable answer may have become a job: its rows wait about
-- twice as long as jobs take (UNCERTAIN_WAIT before any job finished) before going again, so that
-- the two copies are not in flight at once.
local UNCERTAIN_WAIT = 5
-- Consecutive unusable poll answers (after the core's own retries) before giving up.
local MAX_POLL_FAILURES = 10

local LOST_CODES = { failed = "JobFailed", killed = "JobKilled", gone = "JobGone", uncertain = "JobUncertain" }

local function result_outcome(job, i, r)
  local batch = job.batch
  if type(r) ~= "table" then
    return Sync.outcome(batch, i, "failed", { reason = format(
      "no result for this row: job %s answered %d results for %d users", job.id, job.nresults or 0, batch.n) })
  end
  local o = Sync.outcome(batch, i, "failed")
  if o.email == nil and type(r.email) == "string" then o.email = r.email end
  if o.external_id == nil and r.external_id ~= nil and r.external_id ~= null then o.external_id = r.external_id end
  if r.id ~= null then o.id = r.id end
  if r.status == "Created" then
    o.outcome = "created"
  elseif r.status == "Updated" then
    o.outcome = "updated"
  else
    if type(r.error) == "string" then o.error = r.error end
    if r.details ~= nil and r.details ~= null then
      o.details = type(r.details) == "string" and r.details or core.encode(r.details)
    end
    o.reason = o.details or o.error or ("job result status " .. tostring(r.status))
  end
  return o
end

function Sync:job_done(job, js)
  local batch = job.batch
  local n = batch.n
  local results = type(js.results) == "table" and js.results or {}
  job.nresults = #results
  -- Zendesk answers in request order; a Failed entry also names its 0-based index
  local slot = {}
  for i, r in ipairs(results) do
    local at = (type(r) == "table" and is_int(r.index) and r.index >= 0 and r.index < n) and r.index + 1 or i
    if at <= n and slot[at] == nil then slot[at] = r end
  end
  self:close_batch(batch, job.id, function(i) return result_outcome(job, i, slot[i]) end)
end


-- A job that ended failed or killed, was gone, or a submission of unknown fate: its rows go
-- again once; a row on its second try ends failed.
function Sync:job_lost(batch, status, why, job_id)
  local again = new_batch()
  local final, packed = {}, {}
  for i = 1, batch.n do
    if (batch.tries[i] or 1) >= 2 then
      local o = Sync.outcome(batch, i, "failed", { error = LOST_CODES[status] or "JobFailed",
                                                    reason = why .. " (already resubmitted once)" })
      final[#final + 1] = o
      packed[#packed + 1] = journal.pack(o)
      if batch.keys then self:release(batch.keys[i]) end
    else
      local n = again.n + 1
      again.n = n
      again.rows[n], again.tries[n] = batch.rows[i], (batch.tries[i] or 1) + 1
      if batch.users then again.users[n], again.keys[n] = batch.users[i], batch.keys[i] end
    end
  end
  if #packed > 0 then self:jwrite{ t = "rows", out = packed } end
  self:jwrite{ t = "retry", b = batch.b, id = job_id, status = status, why = why }
  for _, o in ipairs(final) do self:finalize(o) end
  if again.n > 0 then
    self.resubmitted = self.resubmitted + again.n
    if batch.users then
      if status == "uncertain" then
        local d = self.job_time and min(60, max(1, 2 * self.job_time + self.poll_lo)) or UNCERTAIN_WAIT
        again.not_before = self.now() + d
      end
      insert(self.ready, 1, again)
    else
      -- a job of the run being resumed: its rows are read from the source again
      for i = 1, again.n do self.retry:add(again.rows[i]) end
    end
  end
  self:promote()
end

function Sync:job_stuck(job)
  local batch = job.batch
  local why = format("job %s made no progress for %d s (still %s): its rows are not sent again while it may run",
                     job.id, floor(self.job_timeout), tostring(job.status or "queued"))
  self:close_batch(batch, job.id, function(i)
    return Sync.outcome(batch, i, "failed", { error = "JobTimeout", reason = why })
  end)
end

-- One poll: the show_many answers for every job in flight (in chunks when the ids would make
-- too long a URL), as {jobs, res} pairs.
function Sync:handle_poll(chunks)
  local now = self.now()
  local by_id, failure = {}, nil
  for _, chunk in ipairs(chunks) do
    local res = chunk.res
    local list = type(res.value) == "table" and res.value.job_statuses
    if res.err or type(list) ~= "table" then
      failure = res.err or core.error{ kind = "http", code = "InvalidResponse", status = res.meta and res.meta.status,
                                       request_id = res.meta and res.meta.request_id,
                                       message = "show_many answer has no job_statuses" }
    else
      for _, js in ipairs(list) do
        if type(js) == "table" and type(js.id) == "string" then by_id[js.id] = js end
      end
    end
  end
  if failure then
    local kind = failure.kind
    if kind == "auth" or kind == "network" or kind == "timeout" then
      self:fail(failure)
      return
    end
    -- the account's rate limit is waited out (up to rate_limit_timeout); anything else (a broken
    -- answer, a 5xx the core gave up on) is tried again a few times before the sync stops
    if kind == "rate_limited" then
      self.poll_refused_since = self.poll_refused_since or now
      if now - self.poll_refused_since > self.rate_limit_timeout then
        self:fail(self:rate_limit_error("job status poll", failure, now - self.poll_refused_since))
        return
      end
    else
      self.poll_failures = self.poll_failures + 1
      if self.poll_failures > MAX_POLL_FAILURES then
        self:fail(failure)
        return
      end
    end
    local wait = type(failure.retry_after) == "number" and failure.retry_after or self.poll_interval
    self.next_poll = now + max(wait, self.poll_lo)
    return
  end
  self.poll_failures = 0
  self.poll_refused_since = nil
  local ended, moved = {}, false
  for _, chunk in ipairs(chunks) do
    for _, job in ipairs(chunk.jobs) do
      local js = by_id[job.id]
      if js then
        job.seen, job.misses = true, 0
        local st = js.status
        if st == "completed" then
          ended[job] = true
          local took = now - job.at
          self.job_time = self.job_time and (0.8 * self.job_time + 0.2 * took) or took
          self:job_done(job, js)
          moved = true
        elseif st == "failed" or st == "killed" then
          ended[job] = true
          local msg = type(js.message) == "string" and (": " .. js.message) or ""
          self:job_lost(job.batch, st, "job " .. job.id .. " ended " .. st .. msg, job.id)
          moved = true
        elseif js.progress ~= job.progress or js.status ~= job.status then
          job.progress, job.status, job.changed = js.progress, js.status, now
          moved = true
        elseif now - (job.changed or job.at) > self.job_timeout then
          -- stuck: it may still run, so its rows must not go again (two copies in flight)
          ended[job] = true
          self:job_stuck(job)
          moved = true
        end
      else
        job.misses = job.misses + 1
        -- a new job may answer 404 for a moment; a job seen before, or missing for long, is gone
        if job.seen or (job.misses >= 3 and now - job.at >= self.grace) then
          ended[job] = true
          self:job_lost(job.batch, "gone", "job " .. job.id .. " expired or vanished before its results were read",
                        job.id)
          moved = true
        end
      end
    end
  end
  local keep = {}
  for _, job in ipairs(self.inflight) do
    if not ended[job] then keep[#keep + 1] = job end
  end
  self.inflight = keep
  if moved then
    self.poll_interval = max(self.poll_lo, self.poll_interval * 0.7)
  else
    self.poll_interval = min(self.poll_hi, self.poll_interval * 1.5)
  end
  self.next_poll = now + self.poll_interval
end


return _M
