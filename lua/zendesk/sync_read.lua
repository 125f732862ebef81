-- zendesk.sync_read: the reading and ordering stage. Opens the source (zendesk.sources), takes
-- rows one at a time (filter, validation, the encoder's check), and orders them into batches so
-- that rows naming one user (email, external_id, id, email identities) are never in flight
-- together: a row whose user is busy waits (deferred) until the earlier row is settled.
-- syntax: local read = require "zendesk.sync_read"   (adds its methods to zendesk.sync_state)
local core = require "zendesk.core"

local error, type, tostring, pairs, ipairs, pcall = error, type, tostring, pairs, ipairs, pcall
local require, max, lower, match, io_open, io_type = require, math.max, string.lower, string.match, io.open, io.type
local huge, find = math.huge, string.find
local null = core.null
local users = require "zendesk.users"
local fields = require "zendesk.fields"
local Sync = require "zendesk.sync_state"

local _M = {}

-- Rows that wait for an earlier row naming the same user; past this many, reading pauses until
-- jobs finish, so that an input repeating one user over and over cannot fill memory.
local MAX_DEFERRED = 10000
-- Rows read between two rounds of a sync with a state.
local DELTA_ROUND = 2000
local EXTENSIONS = { csv = "csv", json = "json", ndjson = "ndjson", jsonl = "ndjson" }

local function io_err(msg, extra)
  local e = core.error{ kind = "io", message = msg }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end
_M.io_err = io_err

-- Opens the source with zendesk.sources. A path is opened here so that the bytes read so far
-- (for the ETA) can be asked of the handle. Returns reader, file (or nil), size (or nil) | nil, err.
local function open_source(source, ropts, schema)
  local sources = require "zendesk.sources"
  if schema then
    local o = {}
    for k, v in pairs(ropts) do o[k] = v end
    o.schema = schema
    ropts = o
  end
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
    local f, err, errno = io_open(source, "rb")
    if not f then return nil, io_err(err, { path = source, errno = errno }) end
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
      -- the account's answer (the schema could not be read; a column it does not have) as it is
      if type(rerr) == "table" and (rerr.kind or rerr.code) then return nil, rerr end
      return nil, io_err(tostring(rerr), { path = source })
    end
    return reader, f, size, fmt
  end
  local ok, reader, rerr = pcall(sources.open, source, ropts)
  if not ok then error(reader, 3) end
  if not reader then
    if type(rerr) == "table" and (rerr.kind or rerr.code) then return nil, rerr end
    return nil, io_err(tostring(rerr))
  end
  return reader, nil, nil, ropts.format
end
_M.open_source = open_source

local function describe_source(source, size, fmt)
  local t = type(source)
  if t == "string" then return { kind = "file", path = source, size = size, format = fmt } end
  if io_type(source) == "file" then return { kind = "stream", format = fmt } end
  if t == "table" then return { kind = "array", n = #source } end
  return { kind = "iterator" }
end
_M.describe_source = describe_source

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
_M.keys_of = keys_of

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
_M.new_batch = new_batch

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

-- The account's user fields (a zendesk.fields schema), read once per run (the client caches
-- them); nil, err when they cannot be read; nil without a client (a dry run without credentials).
function Sync:fields()
  if self.schema ~= nil then return self.schema or nil end
  local c = self.client
  if not c then self.schema = false return nil end
  local list, err = c:user_fields()
  if not list then return nil, err end
  self.schema = c._fields or false
  return self.schema or nil
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
  if self.delta then self.delta:saw(user or partial) end   -- present, even if invalid
  if self.finished and self.finished:contains(row) then
    return true   -- its outcome is in the journal already
  end
  if user == nil then
    local e, x
    if type(partial) == "table" then e, x = ident(partial) end
    -- a quote never closed: the reader skipped the rest of the input, whose people were not
    -- read (the leavers stage must not take them for leavers)
    if type(problem) == "string" and find(problem, "unterminated quoted field", 1, true) then
      self.input_cut = problem
    end
    self:finalize{ row = row, outcome = "invalid", email = e, external_id = x,
                   reason = problem or ("row " .. row .. ": unreadable") }
    return true
  end
  if self.filter and self.filter(user, row) == false then
    local e, x = ident(user)
    self:finalize{ row = row, outcome = "skipped", email = e, external_id = x }
    return true
  end
  if self.delta then
    -- the same canonical JSON as the last confirmed send (valid then, and validation
    -- depends on the content only): unchanged, not validated again, not sent
    local id = self.delta:unchanged(row, user)
    if id then
      local e, x = ident(user)
      self:finalize{ row = row, outcome = "unchanged", id = id, email = e, external_id = x }
      return true
    end
  end
  local ok, verr = users.validate(user, "row " .. row)
  if ok and not core.encode(user) then
    -- whatever else the encoder refuses (a function, NaN, a sparse array in a free-form field)
    -- would fail the whole batch at submission: it is this row's problem, found here (~2 us)
    local _, eerr = core.encode(user)
    local msg = type(eerr) == "table" and eerr.message or tostring(eerr)
    ok, verr = false, { message = "row " .. row .. (match(msg, "^value(.*)$") or (": " .. msg)) }
  end
  if ok and type(user.user_fields) == "table" and self.client then
    -- JSON, NDJSON, Lua tables (and CSV, after conversion) against the account's fields
    local schema, serr = self:fields()
    if serr then
      self:fail(serr)
      return false
    end
    if schema then ok, verr = fields.check_user(schema, user, "row " .. row) end
  end
  if not ok then
    local e, x = ident(user)
    self:finalize{ row = row, outcome = "invalid", email = e, external_id = x, reason = verr.message }
    return true
  end
  if self.delta then self.delta:will_send(row, user) end   -- new, changed or restored
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
  -- with a state most rows are unchanged and fill no batch: a round (submitting what is
  -- ready, polling) every DELTA_ROUND rows read, so that jobs run while the rest is compared
  local budget = self.delta and DELTA_ROUND or huge
  self.read_paused = false
  while not self.eof and #self.ready < want and #self.deferred < MAX_DEFERRED and not self.fatal do
    if not self:read_one() then
      self.eof = true
    end
    budget = budget - 1
    if budget <= 0 then
      self.read_paused = not self.eof
      break
    end
  end
  if self.current and #self.ready == 0 and (self.eof or #self.deferred >= MAX_DEFERRED) then
    self:seal()
  end
end

return _M
