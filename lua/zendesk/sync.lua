-- zendesk.sync: the sync workflow engine behind client:sync_users. It streams a source, validates
-- each row, batches rows into create_or_update_many jobs (at most max_jobs in flight), polls every
-- job in flight with one show_many request in the same concurrent round as new submissions, maps
-- each job result back to its input row, and keeps a journal that a resume finishes from.
-- The stages are modules (see _M.run at the end for the pipeline):
--   zendesk.sync_read    reading and ordering rows into batches
--   zendesk.sync_submit  the answer to a bulk submission
--   zendesk.sync_poll    polling jobs and mapping their results to rows
--   zendesk.sync_state   the run's state, the outcome constructor and the sinks (report, journal)
--   zendesk.sync_resume  what a resume takes from the journal it finishes
--   zendesk.sync_delta   with opts.state: unchanged rows not sent, confirmed rows recorded
--   zendesk.sync_leavers with opts.leavers = "suspend": who left is suspended, behind the guard
--
-- syntax: report, err = require("zendesk.sync").run(client, source, opts)
--   (client may be nil with opts.dry_run: a dry run needs no network and no credentials)
local core = require "zendesk.core"
local journal = require "zendesk.journal"
local report = require "zendesk.report"
local options = require "zendesk.options"
local Sync = require "zendesk.sync_state"
local read = require "zendesk.sync_read"
require "zendesk.sync_submit"   -- adds Sync:handle_post
require "zendesk.sync_poll"       -- adds Sync:handle_poll and the mapping of results
local resume = require "zendesk.sync_resume"
local api = require "zendesk.api"
local delta = require "zendesk.sync_delta"      -- the state store's delta stage
local leavers = require "zendesk.sync_leavers"  -- the leavers stage

local error, type, tostring, ipairs, pcall = error, type, tostring, ipairs, pcall
local floor, huge, max, min = math.floor, math.huge, math.max, math.min
local concat, remove = table.concat, table.remove
local match, format = string.match, string.format
local io_type, os_time = io.type, os.time

local _M = { _VERSION = core.version }

local PATH_MANY, PATH_STATUSES = api.PATH_UPSERT_MANY, api.PATH_JOB_STATUSES
local MAX_PATH = 2000   -- the core refuses paths over 2048 bytes
local io_err = read.io_err

-- After a TooManyJobs refusal, seconds between attempts at one more job in flight.
local PROBE_EVERY = 10

local NONNEG = { type = "number", min = 0 }
local OPTIONS = {
  batch_size = { type = "integer", min = 1, max = api.MAX_USERS },
  -- one request_many round carries a POST per free slot and the poll: the core runs 64 at most
  max_jobs = { type = "integer", min = 1, max = 60 },
  journal = "string", resume = "boolean",
  report = "string", collect_rows = "boolean", on_row = "function", on_progress = "function",
  filter = "function", dry_run = "boolean",
  format = "string", delimiter = "string", tag_separator = "string", columns = "table",
  field_types = "table", empty_cells = "string",
  state = "string", full = "boolean", leavers = "string", max_leavers = { pass = true },
  poll_interval = NONNEG, max_poll_interval = NONNEG, not_found_grace = NONNEG,
  progress_interval = NONNEG, job_timeout = NONNEG, rate_limit_timeout = NONNEG,
}
local READER_OPTIONS = resume.READER_OPTIONS

local function check_opts(opts)
  opts = options.check(OPTIONS, opts, "sync_users", 4)
  if opts.resume and not opts.journal then
    error("sync_users: option 'resume' needs option 'journal' (the journal to finish)", 3)
  end
  -- the state store's options
  if opts.leavers ~= nil and opts.leavers ~= "ignore" and opts.leavers ~= "suspend" then
    error("sync_users: option 'leavers' must be \"ignore\" or \"suspend\", got " .. tostring(opts.leavers), 3)
  end
  delta.max_leavers_of(opts.max_leavers, 4)
  for _, k in ipairs{ "full", "leavers", "max_leavers" } do
    if opts[k] ~= nil and not opts.state then
      error("sync_users: option '" .. k .. "' needs option 'state' (the state file)", 3)
    end
  end
  if opts.report and not report.format_of(opts.report) then
    error("sync_users: option 'report' must name a .csv or .json file", 3)
  end
  return opts
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
      if self.delta then self.delta:submitting(batch) end   -- pending, committed before it goes
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
  local res = api.request_many(self.core, reqs)
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
      -- (read_paused: fill stopped for a round with input left: read on, no wait and no
      -- partial batch yet)
      if not self.read_paused and not self:idle_wait() and self.reading and not self:done() then
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
  local header
  if opts.resume then
    header, source = resume.header(S, client, source, opts, ropts)
    if not header then return nil, source end
    -- the state the interrupted run used, and no other: its pending rows (by row number) are
    -- what this resume records, and a stranger's would pair keys with the wrong Zendesk ids
    local hs = type(header.state) == "string" and header.state or nil
    local same = hs == opts.state
    if not same and hs and opts.state then
      local a = core.file_id(hs)
      same = (a ~= nil and a == core.file_id(opts.state)) or same_new_path(hs, opts.state)
    end
    if not same then
      return nil, core.error{ kind = "validation", code = "StateMismatch", journal = opts.journal, message = format(
        "journal %s was written by a run %s, this resume has %s: resume with the same state (option 'state')",
        opts.journal, hs and "with the state " .. hs or "without a state",
        opts.state and "the state " .. opts.state or "none") }
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

  -- nor the state: a report renamed over it or a journal appended to it destroys it
  if opts.state then
    local sid = core.file_id(opts.state)
    local others = { { "input", type(source) == "string" and source or nil, input_id } }
    for _, o in ipairs(outputs) do others[#others + 1] = o end
    for _, o in ipairs(others) do
      local what, p = o[1], o[2]
      local pid = o[3] or (p and core.file_id(p))
      if (sid and pid and sid == pid) or (p and same_new_path(p, opts.state)) then
        return nil, core.error{ kind = "validation", path = p, message = format(
          "%s %s is the state file %s: refused, it would destroy the state (give them different paths)",
          what, tostring(p), opts.state) }
      end
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
  -- the account's user fields, loaded (one request, or none when the client has them) once a
  -- CSV header or a row needs them; a dry run without a client has none
  local reader, file, size, fmt = read.open_source(source, ropts, S.client and function() return S:fields() end)
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
    local ok, cerr = resume.check_input(header, source, size, digest)
    if not ok then return nil, cerr end
  end

  -- the state (refused when it belongs to another account), before anything is written
  local dok, derr = delta.attach(S, client, opts)
  if not dok then return nil, derr end

  if opts.report then
    local w, werr = report.open(opts.report)
    if not w then return nil, werr end
    S.writer, S.report_path = w, opts.report
  end

  if opts.resume then
    local ok, lerr = resume.load(S, opts.journal)
    if not ok then return nil, lerr end
  elseif opts.journal and not S.dry_run then
    local described = read.describe_source(source, size, fmt)
    described.digest = digest
    local first = {
      time = os_time(), source = described,
      reader = ropts, batch_size = S.batch_size, max_jobs = S.max_jobs, url = client:base_url(),
      report = opts.report,
      -- a resume of the CLI takes these again from here
      state = opts.state, full = opts.full, leavers = opts.leavers,
      max_leavers = opts.max_leavers and tostring(opts.max_leavers) or nil,
    }
    local j, jerr = journal.create(opts.journal, first)
    if not j then return nil, jerr end
    S.journal, S.journal_path = j, opts.journal
  end
  return true
end


function _M.run(client, source, opts)
  opts = check_opts(opts)
  local dry = opts.dry_run == true
  if not dry and (type(client) ~= "table" or client._core == nil) then
    error("sync_users: a zendesk client is required (or opts.dry_run = true)", 2)
  end
  local S = Sync.new(client, opts, dry)
  if dry and opts.resume then error("sync_users: 'dry_run' and 'resume' do not go together", 2) end

  local ok, started, serr = pcall(start, S, client, source, opts)
  if not ok then
    S:finish()
    error(started, 0)
  end
  if not started then
    S:finish()
    return nil, serr
  end

  local lok, lerr = pcall(dry and Sync.dry_loop or Sync.loop, S)
  if not lok and S.delta and type(lerr) == "table" and lerr.state == S.delta.path then
    -- the state store failed (disk full, locked): a fatal error like the journal's
    S:fail(lerr)
    lok = true
  end
  if not lok then
    -- a callback of the caller raised: keep what is known, then let the error through
    S:fail(core.error{ kind = "validation", message = "sync stopped by an error: " .. tostring(lerr) })
    S:finish()
    error(lerr, 0)
  end
  if not S.fatal and S.read_error then S:fail(S.read_error) end
  -- the leavers stage (only after the whole input was read without a fatal error)
  local lok2, guard = pcall(leavers.run, S, opts)
  if not lok2 then
    S:fail(guard)
    guard = nil
  end
  S:progress(true)
  S:finish()
  if guard and not S.fatal then
    guard.report = S:result()
    return nil, guard
  end
  if S.fatal then
    local err = S.fatal
    if type(err) == "table" then err.report = S:result() end
    return nil, err
  end
  return S:result()
end

_M.keys_of = read.keys_of
return _M
