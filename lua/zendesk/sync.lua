-- zendesk.sync: the sync workflow engine behind client:sync_users. It streams a source, validates
-- each row, batches rows into create_or_update_many jobs (at most max_jobs in flight), polls every
-- job in flight with one show_many request in the same concurrent round as new submissions, maps
-- each job result back to its input row, and keeps a journal that a resume finishes from.
--
-- syntax: report, err = require("zendesk.sync").run(client, source, opts)
--   (client may be nil with opts.dry_run: a dry run needs no network and no credentials)
local core = require "zendesk.core"
local users = require "zendesk.users"
local journal = require "zendesk.journal"
local report = require "zendesk.report"

local error, type, tostring, pairs, ipairs, pcall, require, setmetatable =
      error, type, tostring, pairs, ipairs, pcall, require, setmetatable
local floor, huge, max, min = math.floor, math.huge, math.max, math.min
local concat, remove, insert = table.concat, table.remove, table.insert
local lower, match, format = string.lower, string.match, string.format
local io_open, io_type, os_time = io.open, io.type, os.time

local _M = { _VERSION = core.version }

local null = core.null
local PATH_MANY = "/api/v2/users/create_or_update_many.json"
local PATH_STATUSES = "/api/v2/job_statuses/show_many.json?ids="
local MAX_PATH = 2000   -- the core refuses paths over 2048 bytes

-- Rows that wait for an earlier row naming the same user; past this many, reading pauses until
-- jobs finish, so that an input repeating one user over and over cannot fill memory.
local MAX_DEFERRED = 10000
-- A batch whose submission got an unreadable answer may have become a job: its rows wait about
-- twice as long as jobs take (UNCERTAIN_WAIT before any job finished) before going again, so that
-- the two copies are not in flight at once.
local UNCERTAIN_WAIT = 5
-- After a TooManyJobs refusal, seconds between attempts at one more job in flight.
local PROBE_EVERY = 10
-- 409 DatabaseConflict answers to one batch (each after the core's retries) before the sync stops.
local MAX_CONFLICTS = 3
-- Consecutive unusable poll answers (after the core's own retries) before giving up.
local MAX_POLL_FAILURES = 10
-- Default of opts.rate_limit_timeout: how long 429s may refuse every submission (while no job of
-- ours is in flight) or every poll before the sync stops, resumably.
local RATE_LIMIT_TIMEOUT = 600

local OPTIONS = {
  batch_size = "number", max_jobs = "number", journal = "string", resume = "boolean",
  report = "string", collect_rows = "boolean", on_row = "function", on_progress = "function",
  filter = "function", dry_run = "boolean",
  format = "string", delimiter = "string", tag_separator = "string", columns = "table",
  field_types = "table",
  poll_interval = "number", max_poll_interval = "number", not_found_grace = "number",
  progress_interval = "number", job_timeout = "number", rate_limit_timeout = "number",
}
local READER_OPTIONS = { "format", "delimiter", "tag_separator", "columns", "field_types" }
local EXTENSIONS = { csv = "csv", json = "json", ndjson = "ndjson", jsonl = "ndjson" }

local function is_int(v)
  return type(v) == "number" and v == floor(v) and v > -huge and v < huge
end

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("sync_users: argument 'opts' must be a table", 3) end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error("sync_users: unknown option '" .. tostring(k) .. "'", 3) end
    if type(v) ~= want then
      error("sync_users: option '" .. k .. "' must be a " .. want .. ", got " .. type(v), 3)
    end
  end
  local function int_in(k, lo, hi)
    local v = opts[k]
    if v ~= nil and not (is_int(v) and v >= lo and v <= hi) then
      error(format("sync_users: option '%s' must be an integer from %d to %d", k, lo, hi), 4)
    end
  end
  int_in("batch_size", 1, 100)
  -- one request_many round carries a POST per free slot and the poll: the core runs 64 at most
  int_in("max_jobs", 1, 60)
  for _, k in ipairs{ "poll_interval", "max_poll_interval", "not_found_grace", "progress_interval", "job_timeout",
                      "rate_limit_timeout" } do
    if opts[k] ~= nil and not (opts[k] >= 0 and opts[k] < huge) then
      error("sync_users: option '" .. k .. "' must be a non-negative number", 3)
    end
  end
  if opts.resume and not opts.journal then
    error("sync_users: option 'resume' needs option 'journal' (the journal to finish)", 3)
  end
  if opts.report and not report.format_of(opts.report) then
    error("sync_users: option 'report' must name a .csv or .json file", 3)
  end
  return opts
end

local function io_err(msg, extra)
  local e = core.error{ kind = "io", message = msg }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

---------------------------------------------------------------------------------------------------
-- The source

-- Opens the source with zendesk.sources. A path is opened here so that the bytes read so far
-- (for the ETA) can be asked of the handle. Returns reader, file (or nil), size (or nil) | nil, err.
local function open_source(source, ropts)
  local sources = require "zendesk.sources"
  if type(source) == "string" then
    local fmt = ropts.format
    if not fmt then
      local ext = match(source, "%.(%w+)$")
      fmt = ext and EXTENSIONS[lower(ext)]
    end
    if not fmt then
      -- sources.open explains what is wrong with the name
      local ok, e = pcall(sources.open, source, ropts)
      if ok and e then e:close() end
      error(ok and "sync_users: cannot tell the format of '" .. source .. "'" or e, 3)
    end
    local f, err = io_open(source, "rb")
    if not f then return nil, io_err(err, { path = source }) end
    local size = f:seek("end")
    f:seek("set", 0)
    local o = {}
    for k, v in pairs(ropts) do o[k] = v end
    o.format, o.name = fmt, source
    local ok, reader, rerr = pcall(sources.open, f, o)
    if not ok then
      f:close()
      error(reader, 3)
    end
    if not reader then
      f:close()
      return nil, io_err(tostring(rerr), { path = source })
    end
    return reader, f, size, fmt
  end
  local ok, reader, rerr = pcall(sources.open, source, ropts)
  if not ok then error(reader, 3) end
  if not reader then return nil, io_err(tostring(rerr)) end
  return reader, nil, nil, ropts.format
end

-- Whether two paths name one place, when it may not exist yet ("x.csv", "./x.csv", "d/../x.csv"):
-- the same name in the same directory.
local function same_new_path(a, b)
  local da, na = match(a, "^(.*)/([^/]*)$")
  local db, nb = match(b, "^(.*)/([^/]*)$")
  da, na = da or ".", na or a
  db, nb = db or ".", nb or b
  if na ~= nb then return false end
  local ia = core.file_id(da == "" and "/" or da)
  return ia ~= nil and ia == core.file_id(db == "" and "/" or db)
end

local function describe_source(source, size, fmt)
  local t = type(source)
  if t == "string" then return { kind = "file", path = source, size = size, format = fmt } end
  if io_type(source) == "file" then return { kind = "stream", format = fmt } end
  if t == "table" then return { kind = "array", n = #source } end
  return { kind = "iterator" }
end

-- Every key that Zendesk may match a row's user on (email, external_id, email identities),
-- case-insensitively: rows sharing one are never in flight together.
local function keys_of(user)
  local ks = {}
  local e = user.email
  if type(e) == "string" then ks[#ks + 1] = "e:" .. lower(e) end
  local x = user.external_id
  if x ~= nil and x ~= null then ks[#ks + 1] = "x:" .. lower(tostring(x)) end
  if user.id ~= nil and user.id ~= null then ks[#ks + 1] = "i:" .. tostring(user.id) end
  local ids = user.identities
  if type(ids) == "table" then
    for _, idn in ipairs(ids) do
      if type(idn) == "table" and idn.type == "email" and type(idn.value) == "string" then
        ks[#ks + 1] = "e:" .. lower(idn.value)
      end
    end
  end
  return ks
end

local function base_url(client)
  return client:base_url()
end

---------------------------------------------------------------------------------------------------
-- The engine's state

local Sync = {}
local sync_mt = { __index = Sync }

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
  if self.finished then self.finished:add(o.row) end
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

function Sync:hold(ks)
  local busy = self.busy
  for i = 1, #ks do busy[ks[i]] = (busy[ks[i]] or 0) + 1 end
end

function Sync:release(ks)
  local busy = self.busy
  for i = 1, #ks do
    local k = ks[i]
    local n = (busy[k] or 1) - 1
    busy[k] = n > 0 and n or nil
  end
end

local function new_batch()
  return { rows = {}, users = {}, keys = {}, tries = {}, n = 0, not_before = 0 }
end

function Sync:seal()
  local cur = self.current
  if cur and cur.n > 0 then
    self.ready[#self.ready + 1] = cur
    self.current = nil
  end
end

function Sync:add_to_batch(row, user, ks, try)
  local cur = self.current
  if not cur then
    cur = new_batch()
    self.current = cur
  end
  local n = cur.n + 1
  cur.n = n
  cur.rows[n], cur.users[n], cur.keys[n], cur.tries[n] = row, user, ks, try
  self:hold(ks)
  if n >= self.batch_size then self:seal() end
end

-- Rows that waited for an earlier row of the same user, in input order, once it is done.
function Sync:promote()
  local deferred = self.deferred
  if #deferred == 0 then return end
  local keep, blocked, busy, dkeys = {}, {}, self.busy, self.dkeys
  for _, d in ipairs(deferred) do
    local free = true
    for _, k in ipairs(d.keys) do
      if busy[k] or blocked[k] then free = false break end
    end
    if free then
      for _, k in ipairs(d.keys) do
        local n = dkeys[k] - 1
        dkeys[k] = n > 0 and n or nil
      end
      self:add_to_batch(d.row, d.user, d.keys, d.try)
    else
      keep[#keep + 1] = d
      for _, k in ipairs(d.keys) do blocked[k] = true end
    end
  end
  self.deferred = keep
end

function Sync:accept(row, user)
  local ks = keys_of(user)
  local busy, dkeys = self.busy, self.dkeys
  for _, k in ipairs(ks) do
    if busy[k] or dkeys[k] then
      for _, k2 in ipairs(ks) do dkeys[k2] = (dkeys[k2] or 0) + 1 end
      self.deferred[#self.deferred + 1] = { row = row, user = user, keys = ks,
                                            try = self.retry:contains(row) and 2 or 1 }
      return
    end
  end
  self:add_to_batch(row, user, ks, self.retry:contains(row) and 2 or 1)
end

-- The email and external_id a report shows for a row, when they are what they should be.
local function ident(user)
  local e, x = user.email, user.external_id
  local tx = type(x)
  return type(e) == "string" and e or nil, (tx == "string" or tx == "number") and x or nil
end

-- Takes one row from the reader; false at the end of the input.
function Sync:read_one()
  local row, user, problem, partial = self.reader:next()
  if row == nil then return false end
  if row == false then
    -- the input cannot be read to its end (truncated, malformed, an I/O error): a resume would
    -- stop at the same place
    self.read_error = io_err(tostring(user), { input = true, source_error = problem })
    return false
  end
  self.read = self.read + 1
  if self.finished and self.finished:contains(row) then
    return true   -- its outcome is in the journal already
  end
  if user == nil then
    local e, x
    if type(partial) == "table" then e, x = ident(partial) end
    self:finalize{ row = row, outcome = "invalid", email = e, external_id = x,
                   reason = problem or ("row " .. row .. ": unreadable") }
    return true
  end
  if self.filter and self.filter(user, row) == false then
    local e, x = ident(user)
    self:finalize{ row = row, outcome = "skipped", email = e, external_id = x }
    return true
  end
  local ok, verr = users.validate(user, "row " .. row)
  if ok and not core.encode(user) then
    -- whatever else the encoder refuses (a function, NaN, a sparse array in a free-form field)
    -- would fail the whole batch at submission: it is this row's problem, found here (~2 us)
    local _, eerr = core.encode(user)
    local msg = type(eerr) == "table" and eerr.message or tostring(eerr)
    ok, verr = false, { message = "row " .. row .. (match(msg, "^value(.*)$") or (": " .. msg)) }
  end
  if not ok then
    local e, x = ident(user)
    self:finalize{ row = row, outcome = "invalid", email = e, external_id = x, reason = verr.message }
    return true
  end
  if self.dry_run then
    self.submitted = self.submitted + 1
    self:finalize{ row = row, outcome = "would_send", email = user.email, external_id = user.external_id,
                   user = user }
    return true
  end
  self:accept(row, user)
  return true
end

function Sync:fill()
  local want = max(1, self.cap - #self.inflight)
  while not self.eof and #self.ready < want and #self.deferred < MAX_DEFERRED and not self.fatal do
    if not self:read_one() then
      self.eof = true
    end
  end
  if self.current and #self.ready == 0 and (self.eof or #self.deferred >= MAX_DEFERRED) then
    self:seal()
  end
end

---------------------------------------------------------------------------------------------------
-- Jobs

-- curl codes of transfers that never sent the request: resolve (5, 6), connect (7), TLS
-- handshake (35), certificates (51, 58, 60, 77)
local NOT_SENT = { [5] = true, [6] = true, [7] = true, [35] = true, [51] = true, [58] = true, [60] = true,
                   [77] = true }

local LOST_CODES = { failed = "JobFailed", killed = "JobKilled", gone = "JobGone", uncertain = "JobUncertain" }

local function result_outcome(job, i, r)
  local batch = job.batch
  local user = batch.users and batch.users[i]
  local o = { row = batch.rows[i] }
  if user then
    o.email = type(user.email) == "string" and user.email or nil
    o.external_id = user.external_id ~= null and user.external_id or nil
  end
  if type(r) ~= "table" then
    o.outcome = "failed"
    o.reason = format("no result for this row: job %s answered %d results for %d users",
                      job.id, job.nresults or 0, batch.n)
    return o
  end
  if o.email == nil and type(r.email) == "string" then o.email = r.email end
  if o.external_id == nil and r.external_id ~= nil and r.external_id ~= null then o.external_id = r.external_id end
  if r.id ~= null then o.id = r.id end
  if r.status == "Created" then
    o.outcome = "created"
  elseif r.status == "Updated" then
    o.outcome = "updated"
  else
    o.outcome = "failed"
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
  local outs, packed = {}, {}
  for i = 1, n do
    local o = result_outcome(job, i, slot[i])
    outs[i], packed[i] = o, journal.pack(o)
  end
  self:jwrite{ t = "done", b = batch.b, id = job.id, out = packed }
  for i = 1, n do self:finalize(outs[i]) end
  self:settle(batch)
end

-- The rows of a finished batch free their users for the rows that wait on them.
function Sync:settle(batch)
  if batch.keys then
    for i = 1, batch.n do self:release(batch.keys[i]) end
  end
  self:promote()
end

-- A job that ended failed or killed, was gone, or a submission of unknown fate: its rows go
-- again once; a row on its second try ends failed.
function Sync:job_lost(batch, status, why, job_id)
  local again = new_batch()
  local final, packed = {}, {}
  for i = 1, batch.n do
    if (batch.tries[i] or 1) >= 2 then
      local o = { row = batch.rows[i], outcome = "failed", error = LOST_CODES[status] or "JobFailed",
                  reason = why .. " (already resubmitted once)" }
      local u = batch.users and batch.users[i]
      if u then
        o.email = type(u.email) == "string" and u.email or nil
        o.external_id = u.external_id ~= null and u.external_id or nil
      end
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
  local outs, packed = {}, {}
  for i = 1, batch.n do
    local o = { row = batch.rows[i], outcome = "failed", error = "JobTimeout", reason = why }
    local u = batch.users and batch.users[i]
    if u then
      o.email = type(u.email) == "string" and u.email or nil
      o.external_id = u.external_id ~= null and u.external_id or nil
    end
    outs[i], packed[i] = o, journal.pack(o)
  end
  self:jwrite{ t = "done", b = batch.b, id = job.id, out = packed }
  for i = 1, batch.n do self:finalize(outs[i]) end
  self:settle(batch)
end

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
  local refused = kind == "auth" or (kind == "network" and NOT_SENT[err.curl_code])
    or (kind == "http" and (status or 0) >= 400 and status < 500 and status ~= 408)
  if not refused then self.sent = true end   -- the submission may have become a job
  -- the request may have arrived before the connection failed (the core does not resend bulk
  -- submissions then): the job may exist, so the rows wait, then go once more
  if (kind == "timeout" or (kind == "network" and err.curl_code ~= 6 and err.curl_code ~= 7))
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
  local packed, outs = {}, {}
  for i = 1, batch.n do
    local u = batch.users[i]
    local o = { row = batch.rows[i], outcome = "failed", email = type(u.email) == "string" and u.email or nil,
                external_id = u.external_id ~= null and u.external_id or nil,
                error = err.code, details = err.message, reason = tostring(err) }
    outs[i], packed[i] = o, journal.pack(o)
  end
  self:jwrite{ t = "done", b = batch.b, out = packed }
  for i = 1, batch.n do self:finalize(outs[i]) end
  self:settle(batch)
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

---------------------------------------------------------------------------------------------------
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
    jobs = self.jobs, resubmitted = self.resubmitted, duration = elapsed,
    rate = elapsed > 0 and (self.total - self.total_at_start) / elapsed or 0,
    journal = self.journal_path, report = self.report_path, resumed = self.resumed or nil,
  }
  if self.dry_run then r.would_send = c.would_send or 0 end
  return r
end

---------------------------------------------------------------------------------------------------
-- The loop

function Sync:round()
  local now = self.now()
  local reqs, posts = {}, {}
  if not self.fatal then
    local free = self.cap - #self.inflight
    local ready = self.ready
    while free > 0 and #ready > 0 and ready[1].not_before <= now and now >= self.submit_after do
      local batch = remove(ready, 1)
      if not batch.b then   -- a batch refused by a 429 goes again under its own record
        batch.b = self.next_b
        self.next_b = self.next_b + 1
        local try = 1
        for i = 1, batch.n do if batch.tries[i] > try then try = batch.tries[i] end end
        -- written (and fsync'd below) before the submission: a crash in between resubmits, never loses
        self:jwrite{ t = "batch", b = batch.b, rows = journal.encode_rows(batch.rows), try = try }
        if try == 1 then self.submitted = self.submitted + batch.n end
      end
      reqs[#reqs + 1] = { "POST", PATH_MANY, { users = batch.users } }
      posts[#posts + 1] = batch
      free = free - 1
    end
  end
  local chunks
  if #self.inflight > 0 and now >= self.next_poll and not self.fatal then
    -- one request for every job in flight, split only where the URL would pass the core's limit
    chunks = {}
    local jobs, ids, len = {}, {}, #PATH_STATUSES
    for _, job in ipairs(self.inflight) do
      if #ids > 0 and len + #job.id + 1 > MAX_PATH then
        chunks[#chunks + 1] = { jobs = jobs, at = #reqs + 1 }
        reqs[#reqs + 1] = { "GET", PATH_STATUSES .. concat(ids, ",") }
        jobs, ids, len = {}, {}, #PATH_STATUSES
      end
      jobs[#jobs + 1], ids[#ids + 1] = job, job.id
      len = len + #job.id + 1
    end
    chunks[#chunks + 1] = { jobs = jobs, at = #reqs + 1 }
    reqs[#reqs + 1] = { "GET", PATH_STATUSES .. concat(ids, ",") }
  end
  if #reqs == 0 then return false end
  self:jsync()
  if self.fatal then return true end
  local res = self.core:request_many(reqs)
  self.too_many = false
  for i, batch in ipairs(posts) do self:handle_post(batch, res[i]) end
  if self.too_many then
    -- the account holds fewer jobs than we thought (other clients may use slots too): halve the
    -- jobs we keep in flight, and probe one more every PROBE_EVERY seconds without a refusal
    self.cap = max(1, min(floor(self.cap / 2), #self.inflight))
    self.cap_probe_at = self.now() + PROBE_EVERY
  elseif self.cap < self.max_jobs and self.now() >= self.cap_probe_at then
    self.cap = self.cap + 1
    self.cap_probe_at = self.now() + PROBE_EVERY
  end
  if chunks then
    for _, c in ipairs(chunks) do c.res = res[c.at] end
    self:handle_poll(chunks)
  end
  -- the job ids just learnt are what lets a resume poll instead of resubmit: on disk now, not
  -- in a stdio buffer that a kill -9 during the next idle wait would lose
  self:jsync()
  return true
end

function Sync:idle_wait()
  local now = self.now()
  local wake = huge
  if #self.inflight > 0 then wake = min(wake, self.next_poll) end
  if #self.ready > 0 and #self.inflight < self.cap then
    wake = min(wake, max(self.ready[1].not_before, self.submit_after))
  end
  if wake == huge then return false end
  local d = wake - now
  if d > 0 then self.sleep(min(d, 1)) end
  return true
end

function Sync:done()
  return self.eof and not self.current and #self.ready == 0 and #self.deferred == 0 and #self.inflight == 0
end

function Sync:loop()
  while not self.fatal do
    if self.reading then
      self:fill()
    elseif #self.inflight == 0 then
      self.reading = true   -- the resumed run's own jobs are settled: now the input
      self:fill()
    end
    if not self:round() then
      if self.reading and self:done() then break end
      if not self:idle_wait() and self.reading and not self:done() then
        -- nothing in flight or waiting: whatever is left must go as a (partial) batch
        self:seal()
        if #self.ready == 0 and not self.current and #self.deferred > 0 then self:promote() self:seal() end
      end
    end
    self:progress(false)
  end
end

function Sync:dry_loop()
  while not self.fatal do
    if not self:read_one() then break end
    self:progress(false)
  end
  self.eof = true
end

---------------------------------------------------------------------------------------------------
-- Entry point

local function start(S, client, source, opts)
  local ropts = {}
  for _, k in ipairs(READER_OPTIONS) do ropts[k] = opts[k] end
  local st
  if opts.resume then
    local header, herr = journal.header(opts.journal)
    if not header then return nil, herr end
    for _, k in ipairs(READER_OPTIONS) do
      if ropts[k] == nil and type(header.reader) == "table" and header.reader[k] ~= null then
        ropts[k] = header.reader[k]
      end
    end
    if opts.batch_size == nil and is_int(header.batch_size) then S.batch_size = header.batch_size end
    local src = type(header.source) == "table" and header.source or {}
    if source == nil and src.kind == "file" then source = src.path end
    local url = base_url(client)
    if header.url and url and header.url ~= url then
      return nil, core.error{ kind = "validation", code = "AccountMismatch", journal = opts.journal,
        journal_url = header.url, url = url,
        message = "journal " .. opts.journal .. " belongs to a sync against " .. tostring(header.url)
          .. ", not " .. url }
    end
  end
  if source == nil then error("sync_users: argument 'source' is required", 3) end

  local keeps_journal = opts.journal and not S.dry_run
  if type(source) == "string" then
    local id, kind = core.file_id(source)
    if not id then return nil, io_err(source .. ": " .. kind, { path = source }) end
    if kind == "directory" then
      return nil, io_err(source .. ": is a directory, not a file of users", { path = source })
    end
    if kind ~= "file" and keeps_journal then
      return nil, io_err(format("%s is not a regular file (%s): a sync with a journal reads its input twice "
        .. "(once to digest it, for a resume)", source, kind), { path = source })
    end
  end
  -- nothing the sync writes may be its input (a report or journal over it would destroy it)
  local input_id = (type(source) == "string" or io_type(source) == "file") and core.file_id(source) or nil
  local outputs = { { "report", opts.report }, { "journal", keeps_journal and opts.journal },
                    { "report's temporary file", opts.report and report.temp_path(opts.report) } }
  for _, o in ipairs(outputs) do
    local what, p = o[1], o[2]
    if p and input_id and core.file_id(p) == input_id then
      return nil, core.error{ kind = "validation", path = p, message = format(
        "%s %s is the input file%s: refused, it would overwrite it", what, p,
        type(source) == "string" and " " .. source or "") }
    end
  end
  if opts.report and keeps_journal then
    local rid = core.file_id(opts.report)
    if (rid and rid == core.file_id(opts.journal)) or same_new_path(opts.report, opts.journal) then
      return nil, core.error{ kind = "validation", path = opts.report, message = format(
        "journal %s is the report file %s: give them different paths", opts.journal, opts.report) }
    end
  end

  if io_type(source) == "file" then
    -- before the reader buffers anything: where the caller's handle starts and ends
    local cur = source:seek("cur")
    local last = cur and source:seek("end")
    if last then
      source:seek("set", cur)
      S.pos_file, S.pos_base, S.size = source, cur, last - cur
    end
  end
  local reader, file, size, fmt = open_source(source, ropts)
  if not reader then return nil, file end
  S.reader, S.file = reader, file
  if file then S.pos_file, S.pos_base, S.size = file, 0, size end

  -- The content digest of a file input: the whole file is digested (in C, one extra streamed
  -- pass) before the run reads its first row, and again before a resume, so that the start
  -- record holds it and a resume refuses any other content, even of the same size. A file
  -- rewritten while the first run reads it is not detected.
  local digest
  if keeps_journal and type(source) == "string" then
    local derr
    digest, derr = core.digest(source)
    if not digest then return nil, io_err(derr, { path = source }) end
  end
  if opts.resume and type(source) == "string" then
    local header = journal.header(opts.journal)
    local src = type(header.source) == "table" and header.source or {}
    if is_int(src.size) and size and src.size ~= size then
      return nil, core.error{ kind = "validation", message = format(
        "%s has %d bytes, the journal was written for %d: the input changed, a resume would map rows wrongly",
        source, size, src.size) }
    end
    if type(src.digest) == "string" and src.digest ~= digest then
      return nil, core.error{ kind = "validation", message = format(
        "%s changed since the journal was written (content digest %s, the journal has %s): a resume would map "
        .. "rows wrongly; resume with the file it was written for, or start a new sync", source,
        tostring(digest), src.digest) }
    end
  end

  if opts.report then
    local w, werr = report.open(opts.report)
    if not w then return nil, werr end
    S.writer, S.report_path = w, opts.report
  end

  if opts.resume then
    local lerr
    st, lerr = journal.load(opts.journal, function(o) S:finalize(o, true) end)
    if not st then return nil, lerr end
    if S.fatal then return nil, S.fatal end
    S.finished, S.retry, S.next_b, S.resumed = st.finished, st.retry, st.next_batch, true
    S.sent = st.sent
    S.total_at_start = S.total
    local j, jerr = journal.append(opts.journal)
    if not j then return nil, jerr end
    S.journal, S.journal_path = j, opts.journal
    S:jwrite{ t = "resume", time = os_time() }
    for _, rec in ipairs(st.unsent) do
      -- never seen as a job: its rows are read and sent again (the retry set keeps their try)
      S:jwrite{ t = "retry", b = rec.b, status = "unsent", why = "no job id was recorded before the stop" }
    end
    local now = S.now()
    for _, rec in ipairs(st.pending) do
      local batch = { b = rec.b, rows = rec.rows, n = #rec.rows, tries = {}, not_before = 0 }
      for i = 1, batch.n do batch.tries[i] = rec.try end
      local age = is_int(rec.at) and max(0, os_time() - rec.at) or S.grace
      S.inflight[#S.inflight + 1] = { batch = batch, id = rec.id, at = now - age, seen = false, misses = 0 }
    end
    S.reading = #S.inflight == 0
    S.next_poll = now
    S:jsync()
  elseif opts.journal and not S.dry_run then
    local described = describe_source(source, size, fmt)
    described.digest = digest
    local header = {
      time = os_time(), source = described,
      reader = ropts, batch_size = S.batch_size, max_jobs = S.max_jobs, url = base_url(client),
      report = opts.report,
    }
    local j, jerr = journal.create(opts.journal, header)
    if not j then return nil, jerr end
    S.journal, S.journal_path = j, opts.journal
  end
  return true
end

local function finish(S)
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
        invalid = S.counts.invalid or 0, skipped = S.counts.skipped or 0, total = S.total } }
    end
    local ok, err = S.journal:close()
    if not ok then S:fail(err) end
    S.journal = nil
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

function _M.run(client, source, opts)
  opts = check_opts(opts)
  local dry = opts.dry_run == true
  if not dry and (type(client) ~= "table" or client._core == nil) then
    error("sync_users: a zendesk client is required (or opts.dry_run = true)", 2)
  end
  local now = client and client.now or core.now
  local S = setmetatable({
    client = client, core = client and client._core, now = now, sleep = client and client.sleep or core.sleep,
    dry_run = dry, batch_size = opts.batch_size or 100, max_jobs = opts.max_jobs or 30,
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
  }, sync_mt)
  S.cap = S.max_jobs
  S.poll_interval = S.poll_lo
  if dry and opts.resume then error("sync_users: 'dry_run' and 'resume' do not go together", 2) end

  local ok, started, serr = pcall(start, S, client, source, opts)
  if not ok then
    finish(S)
    error(started, 0)
  end
  if not started then
    finish(S)
    return nil, serr
  end

  local lok, lerr = pcall(dry and Sync.dry_loop or Sync.loop, S)
  if not lok then
    -- a callback of the caller raised: keep what is known, then let the error through
    S:fail(core.error{ kind = "validation", message = "sync stopped by an error: " .. tostring(lerr) })
    finish(S)
    error(lerr, 0)
  end
  if not S.fatal and S.read_error then S:fail(S.read_error) end
  S:progress(true)
  finish(S)
  if S.fatal then
    local err = S.fatal
    if type(err) == "table" then err.report = S:result() end
    return nil, err
  end
  return S:result()
end

_M.keys_of = keys_of
return _M
