-- zendesk.sync_state: the sync engine's state (one table per run) and the outcome stage: the one
-- outcome constructor, finalize (where every row ends exactly once: counts, the journal, the
-- report writer, on_row, collect_rows), closing a batch ("done" record, finalize, settle), the
-- progress callback, the returned report, and closing every sink at the end.
-- syntax: local Sync = require "zendesk.sync_state"
local core = require "zendesk.core"
local journal = require "zendesk.journal"
local api = require "zendesk.api"

local type, tostring, pcall, setmetatable, max, min = type, tostring, pcall, setmetatable, math.max, math.min
local os_time = os.time
local null = core.null

-- Default of opts.rate_limit_timeout: how long 429s may refuse every submission (while no job of
-- ours is in flight) or every poll before the sync stops, resumably.
local RATE_LIMIT_TIMEOUT = 600

local Sync = {}
Sync.__index = Sync

-- syntax: S = Sync.new(client, opts, dry)   (opts checked by zendesk.sync)
function Sync.new(client, opts, dry)
  local now = client and client.now or core.now
  local S = setmetatable({
    client = client, core = client and client._core, now = now, sleep = client and client.sleep or core.sleep,
    dry_run = dry, batch_size = opts.batch_size or api.MAX_USERS, max_jobs = opts.max_jobs or 30,
    filter = opts.filter, on_row = opts.on_row, on_progress = opts.on_progress,
    rows = opts.collect_rows and {} or nil,   -- 100,000 outcomes are ~60 MB: only when asked
    counts = {}, total = 0, total_at_start = 0, read = 0, submitted = 0, jobs = 0, resubmitted = 0,
    poll_failures = 0,
    busy = {}, dkeys = {}, deferred = {}, ready = {}, inflight = {}, loose = {},
    retry = journal.ranges(), next_b = 1, eof = false, reading = true,
    poll_lo = opts.poll_interval or 0.25, poll_hi = opts.max_poll_interval or 5,
    grace = opts.not_found_grace or 30, submit_after = 0, next_poll = 0,
    job_timeout = opts.job_timeout or 1800, rate_limit_timeout = opts.rate_limit_timeout or RATE_LIMIT_TIMEOUT,
    progress_every = opts.progress_interval or 0.2, next_progress = 0,
    started = now(), cap_probe_at = 0,
  }, Sync)
  S.cap = S.max_jobs
  S.poll_interval = S.poll_lo
  return S
end

-- syntax: o = Sync.outcome(batch, i, outcome [, o])   (the outcome of row i of batch: row, email,
-- external_id from the user sent; o holds the other fields: error, reason, id...)
function Sync.outcome(batch, i, what, o)
  o = o or {}
  o.row, o.outcome = batch.rows[i], what
  local u = batch.users and batch.users[i]
  if u then
    o.email = type(u.email) == "string" and u.email or nil
    o.external_id = u.external_id ~= null and u.external_id or nil
  end
  return o
end

function Sync:fail(err)
  if not self.fatal then self.fatal = err end
end

-- After a fatal error the journal still takes what is known (job ids of the same round), unless
-- the journal itself is what failed.
function Sync:jwrite(rec)
  if not self.journal or self.jbroken then return end
  local ok, err = self.journal:write(rec)
  if not ok then
    self.jbroken = true
    self:fail(err)
  end
end

function Sync:jsync()
  if not self.journal or self.jbroken then return end
  if #self.loose > 0 then
    self:jwrite{ t = "rows", out = self.loose }
    self.loose = {}
  end
  local ok, err = self.journal:sync()
  if not ok then
    self.jbroken = true
    self:fail(err)
  end
end

-- Every row ends here exactly once.
function Sync:finalize(o, from_journal)
  local c = self.counts
  c[o.outcome] = (c[o.outcome] or 0) + 1
  self.total = self.total + 1
  if self.finished and o.row then self.finished:add(o.row) end   -- a leaver has no row
  if not from_journal and self.journal and (o.outcome == "invalid" or o.outcome == "skipped") then
    local loose = self.loose
    loose[#loose + 1] = journal.pack(o)
    if #loose >= 100 then
      self:jwrite{ t = "rows", out = loose }
      self.loose = {}
    end
  end
  if self.rows then self.rows[#self.rows + 1] = o end
  if self.writer and not self.wbroken then
    local ok, err = self.writer:write(o)
    if not ok then
      self.wbroken = true
      self:fail(err)
    end
  end
  if self.on_row then self.on_row(o) end
end

-- syntax: S:close_batch(batch, job_id, make)   make(i) -> the outcome of row i: one "done" record
-- (written before the rows are finalized: a resume never counts them twice), then every row
-- finalized, then the batch's users freed
function Sync:close_batch(batch, job_id, make)
  local outs, packed = {}, {}
  for i = 1, batch.n do
    local o = make(i)
    outs[i] = o
  end
  -- what Zendesk confirmed is recorded in the state (one transaction) before the
  -- journal's "done": a crash in between polls the job again and records the same
  if self.delta then self.delta:confirm(outs) end
  for i = 1, batch.n do packed[i] = journal.pack(outs[i]) end
  self:jwrite{ t = "done", b = batch.b, id = job_id, out = packed }
  for i = 1, batch.n do self:finalize(outs[i]) end
  self:settle(batch)
end

-- The rows of a finished batch free their users for the rows that wait on them.
function Sync:settle(batch)
  if batch.keys then
    for i = 1, batch.n do self:release(batch.keys[i]) end
  end
  self:promote()
end

-- Progress and the report

function Sync:progress(final)
  local cb = self.on_progress
  if not cb then return end
  local now = self.now()
  if not final and now < self.next_progress then return end
  self.next_progress = now + self.progress_every
  local elapsed = now - self.started
  local c = self.counts
  local done_here = self.total - self.total_at_start
  local rate = elapsed > 0 and done_here / elapsed or 0
  local bytes
  local f = self.pos_file
  if f and not final then
    local ok, pos = pcall(f.seek, f, "cur")
    bytes = ok and pos and pos - self.pos_base or nil
  end
  -- the rows the whole input holds, estimated from the share of its bytes read so far
  local eta, fraction
  if self.size and self.size > 0 and bytes and bytes > 0 and self.read > 0 then
    local expected = max(self.read, self.read * self.size / bytes)
    fraction = min(1, self.total / expected)
    if rate > 0 then eta = max(0, (expected - self.total) / rate) end
  end
  if final or (self.eof and #self.inflight == 0 and #self.ready == 0) then eta, fraction = 0, 1 end
  cb{
    read = self.read, submitted = self.submitted, done = self.total, total = self.total,
    created = c.created or 0, updated = c.updated or 0, failed = c.failed or 0,
    invalid = c.invalid or 0, skipped = c.skipped or 0, would_send = c.would_send,
    unchanged = c.unchanged or 0, suspended = c.suspended or 0, restored = c.restored or 0,
    rate = rate, eta = eta, fraction = fraction, bytes = bytes, size = self.size,
    in_flight = #self.inflight, deferred = #self.deferred, elapsed = elapsed, final = final or false,
    dry_run = self.dry_run,
  }
end

function Sync:result()
  local c = self.counts
  local elapsed = self.now() - self.started
  local r = {
    created = c.created or 0, updated = c.updated or 0, failed = c.failed or 0,
    invalid = c.invalid or 0, skipped = c.skipped or 0, total = self.total, rows = self.rows,
    unchanged = c.unchanged or 0, suspended = c.suspended or 0, restored = c.restored or 0,
    jobs = self.jobs, resubmitted = self.resubmitted, duration = elapsed,
    rate = elapsed > 0 and (self.total - self.total_at_start) / elapsed or 0,
    journal = self.journal_path, report = self.report_path, resumed = self.resumed or nil,
  }
  if self.dry_run then r.would_send = c.would_send or 0 end
  if self.delta then self.delta:counts_into(r) end
  return r
end


function Sync.finish(S)
  if S.journal then
    S:jsync()
    if S.fatal then
      -- sent = false: no submission of this sync can have become a job (all were refused), so a
      -- new sync may replace this journal; input: the input is broken, nothing is in flight
      local input = type(S.fatal) == "table" and S.fatal.input == true and #S.inflight == 0 or nil
      S:jwrite{ t = "fatal", message = tostring(S.fatal), sent = S.sent or false, input = input }
    else
      S:jwrite{ t = "end", time = os_time(), counts = {
        created = S.counts.created or 0, updated = S.counts.updated or 0, failed = S.counts.failed or 0,
        invalid = S.counts.invalid or 0, skipped = S.counts.skipped or 0, unchanged = S.counts.unchanged or 0,
        suspended = S.counts.suspended or 0, restored = S.counts.restored or 0, total = S.total } }
    end
    local ok, err = S.journal:close()
    if not ok then S:fail(err) end
    S.journal = nil
  end
  if S.delta then
    local ok, err = S.delta:close()
    if not ok then S:fail(err) end
  end
  if S.writer then
    local ok, err = S.writer:close()
    if not ok then S:fail(err) end
    S.writer = nil
  end
  if S.reader then
    S.reader:close()
    S.reader = nil
  end
  if S.file then
    S.file:close()
    S.file = nil
  end
end

return Sync
