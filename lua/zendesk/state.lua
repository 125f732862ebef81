-- zendesk.state: the sync's state store, one SQLite file per sync. It remembers, per
-- person (keyed as the sync keys users: external_id, else email, case-folded), the Zendesk id,
-- a hash of the canonical JSON of what was last sent and confirmed, when, in which run, and
-- whether this tool suspended them. Reached through prepared statements only
-- (zendesk.sqlite); no SQL is ever built from row data.
--
-- Tables:
--   meta(k, v)         'account' (the base URL the state belongs to), 'version', 'run'
--   people(key, id, hash, at, run, suspended, alt)   alt: the email key of a person keyed by
--                                      external_id (a row naming only the email is them too)
--   pending(row, key, hash, restore)   rows of this run submitted, their results not yet
--                                      confirmed (so that a resume can record them)
--   temp.seen(key)     people present in this input (not durable: a resume reads the input again)
--
-- syntax: st, err = state.open(path, { url = base_url, readonly = bool })
local core = require "zendesk.core"
local ok_sqlite, sqlite = pcall(require, "zendesk.sqlite")

local type, tostring, tonumber, pairs, ipairs, error = type, tostring, tonumber, pairs, ipairs, error
local setmetatable = setmetatable
local lower, format = string.lower, string.format
local os_time = os.time
local null = core.null

local _M = { VERSION = 1 }

local State = {}
State.__index = State

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS people(key TEXT PRIMARY KEY, id INTEGER NOT NULL, hash TEXT NOT NULL, at INTEGER NOT NULL,
  run INTEGER NOT NULL, suspended INTEGER NOT NULL DEFAULT 0, alt TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS people_id ON people(id);
CREATE TABLE IF NOT EXISTS pending(row INTEGER PRIMARY KEY, key TEXT NOT NULL, hash TEXT NOT NULL,
  restore INTEGER NOT NULL DEFAULT 0);
]]

-- Rows marked seen between commits of the temporary table.
local SEEN_BATCH = 10000

-- state: the state file, on every error of the store (the sync stops with it, resumably,
-- rather than raising it as a callback's error)
local function err_of(path, msg, code)
  return core.error{ kind = code and "validation" or "io", code = code, path = path, state = path,
                     message = "state " .. path .. ": " .. tostring(msg) }
end

---------------------------------------------------------------------------------------------------
-- Keys and hashes

-- The key of a user as the sync keys users: external_id, else email, case-folded; nil when
-- the row names neither.
function _M.key_of(user)
  if type(user) ~= "table" then return nil end
  local x = user.external_id
  local tx = type(x)
  if tx == "string" and x ~= "" then return "x:" .. lower(x) end
  if tx == "number" then return "x:" .. lower(tostring(x)) end
  local e = user.email
  if type(e) == "string" and e ~= "" then return "e:" .. lower(e) end
  return nil
end

-- Every key a row names its person by (external_id and email, as key_of forms them, and the
-- addresses of its email identities): Zendesk matches a row to a user on any of them, so a
-- person the state keys by email is present in a row that now also carries an external_id
-- (and the other way round), even when that row is invalid or not confirmed this run.
function _M.keys_of(user)
  local ks = {}
  if type(user) ~= "table" then return ks end
  local x = user.external_id
  local tx = type(x)
  if (tx == "string" and x ~= "") or tx == "number" then ks[#ks + 1] = "x:" .. lower(tostring(x)) end
  local e = user.email
  if type(e) == "string" and e ~= "" then ks[#ks + 1] = "e:" .. lower(e) end
  local ids = user.identities
  if type(ids) == "table" then
    for _, idn in ipairs(ids) do
      if type(idn) == "table" and idn.type == "email" and type(idn.value) == "string" and idn.value ~= "" then
        ks[#ks + 1] = "e:" .. lower(idn.value)
      end
    end
  end
  return ks
end

-- Canonical JSON (zendesk.sqlite, in C): object keys sorted by bytes, arrays in order, strings
-- escaped as JSON, integral numbers below 2^53 as integers (the same text, and so the same hash,
-- under Lua 5.4 and LuaJIT). Equal tables give equal text whatever order their keys were set in.
function _M.canonical(v)
  return sqlite.canonical(v, null)
end

-- syntax: h = state.hash(user)   (16 hex digits: FNV-1a 64 of the canonical JSON, streamed)
function _M.hash(user)
  return sqlite.digest(user, null)
end

---------------------------------------------------------------------------------------------------
-- Opening

local STATEMENTS = {
  get_meta = "SELECT v FROM meta WHERE k = ?",
  set_meta = "INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)",
  lookup = "SELECT id, hash, suspended FROM people WHERE key = ?",
  count = "SELECT count(*) FROM people WHERE suspended = 0",
  count_all = "SELECT count(*) FROM people",
  seen = "INSERT OR IGNORE INTO temp.seen(key) VALUES (?)",
  leaving = "SELECT count(*) FROM people WHERE suspended = 0 AND key NOT IN (SELECT key FROM temp.seen) "
    .. "AND (alt IS NULL OR alt NOT IN (SELECT key FROM temp.seen))",
  leavers = "SELECT key, id FROM people WHERE suspended = 0 AND key > ? AND key NOT IN (SELECT key FROM temp.seen) "
    .. "AND (alt IS NULL OR alt NOT IN (SELECT key FROM temp.seen)) ORDER BY key LIMIT ?",
  pend = "INSERT OR REPLACE INTO pending(row, key, hash, restore) VALUES (?, ?, ?, ?)",
  pending = "SELECT key, hash, restore FROM pending WHERE row = ?",
  unpend = "DELETE FROM pending WHERE row = ?",
  clear_pending = "DELETE FROM pending",
  record = "INSERT INTO people(key, id, hash, at, run, suspended, alt) VALUES (?, ?, ?, ?, ?, 0, ?) "
    .. "ON CONFLICT(key) DO UPDATE SET id = excluded.id, hash = excluded.hash, at = excluded.at, "
    .. "run = excluded.run, suspended = 0, alt = excluded.alt",
  rekey = "DELETE FROM people WHERE id = ? AND key <> ?",
  suspend = "UPDATE people SET suspended = 1, at = ?, run = ? WHERE key = ? AND id = ?",
  suspended_in = "SELECT key, id FROM people WHERE suspended = 1 AND run = ? AND key > ? ORDER BY key LIMIT ?",
}

-- syntax: st, err = state.open(path, opts)   opts.url: the account (required unless readonly and
-- the file is new); opts.readonly: a dry run (nothing written; a missing file is an empty state)
function _M.open(path, opts)
  opts = opts or {}
  if type(path) ~= "string" or path == "" then error("state: path must be a non-empty string", 2) end
  if not ok_sqlite then
    return nil, err_of(path, "the SQLite binding zendesk.sqlite is not built or installed (" .. tostring(sqlite) .. ")")
  end
  local exists = core.file_id(path) ~= nil
  local db, derr
  if opts.readonly and not exists then
    db, derr = sqlite.open(":memory:")
  else
    if exists then
      -- not a SQLite file (a CSV given by mistake): refused before anything is written to it
      local f = io.open(path, "rb")
      local head = f and f:read(16)
      if f then f:close() end
      if head and head ~= "" and head ~= "SQLite format 3\0" then
        return nil, err_of(path, "is not a state file (not an SQLite database): refused, it would be overwritten",
                           "NotAState")
      end
    end
    -- a dry run reads a state no run is writing: without its -wal / -shm files (nothing is
    -- created beside it) when its WAL is empty, as a finished run leaves it; a WAL a killed run
    -- left is read the ordinary way
    local wal = io.open(path .. "-wal", "rb")
    local wal_size = wal and wal:seek("end") or 0
    if wal then wal:close() end
    db, derr = sqlite.open(path, opts.readonly, opts.readonly and wal_size == 0)
  end
  if not db then return nil, err_of(path, derr) end
  local st = setmetatable({ db = db, path = path, readonly = opts.readonly or false, in_tx = false,
                            seen_n = 0, q = {} }, State)
  local function fail(e, code)
    db:close()
    return nil, err_of(path, e, code)
  end
  local ok, e = db:exec("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -4096; PRAGMA temp_store = FILE;")
  if not ok then return fail(e) end
  if not opts.readonly then
    -- WAL: a commit is one append; synchronous NORMAL survives a killed process (the OS has it);
    -- a power cut may lose the last commits, which only makes rows go again
    ok, e = db:exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
    if not ok then return fail(e) end
  end
  if not opts.readonly or not exists then
    ok, e = db:exec(SCHEMA)
    if not ok then return fail(e) end
  end
  -- a state written before people had the alt column (the second key of a person keyed by
  -- external_id) takes it now; a dry run cannot write, and says so
  local probe = db:prepare("SELECT alt FROM people LIMIT 0")
  if probe then
    probe:close()
  elseif opts.readonly then
    return fail("was written by an earlier version of this sync: run it once without --dry-run to upgrade it",
                "StateVersion")
  else
    ok, e = db:exec("ALTER TABLE people ADD COLUMN alt TEXT")
    if not ok then return fail(e) end
  end
  ok, e = db:exec("CREATE TEMP TABLE IF NOT EXISTS seen(key TEXT PRIMARY KEY) WITHOUT ROWID")
  if not ok then return fail(e) end
  for name, sql in pairs(STATEMENTS) do
    local s, serr = db:prepare(sql)
    if not s then return fail(serr) end
    st.q[name] = s
  end
  local version = st.q.get_meta:run("version")
  if version == true then
    if not opts.readonly then
      st.q.set_meta:run("version", tostring(_M.VERSION))
      if opts.url then st.q.set_meta:run("account", opts.url) end
    end
  elseif tonumber(version) ~= _M.VERSION then
    return fail(format("has format version %s, this sync reads %d", tostring(version), _M.VERSION), "StateVersion")
  end
  local account = st.q.get_meta:run("account")
  if account ~= true and opts.url and account ~= opts.url then
    local e2 = err_of(path, format("belongs to the account %s, not %s: refused (give each account its own "
                                   .. "state file)", account, opts.url), "StateAccountMismatch")
    e2.state_url, e2.url = account, opts.url
    db:close()
    return nil, e2
  end
  st.account = account ~= true and account or opts.url
  local run = st.q.get_meta:run("run")
  st.run = tonumber(run ~= true and run or 0) or 0
  return st
end

---------------------------------------------------------------------------------------------------
-- Transactions: one open write transaction at a time; commit ends it.

function State:begin()
  if self.in_tx then return true end
  local ok, e = self.db:exec(self.readonly and "BEGIN" or "BEGIN IMMEDIATE")
  if not ok then return nil, err_of(self.path, e) end
  self.in_tx = true
  return true
end

function State:commit()
  if not self.in_tx then return true end
  self.in_tx = false
  self.seen_n = 0
  local ok, e = self.db:exec("COMMIT")
  if not ok then return nil, err_of(self.path, e) end
  return true
end

-- Every statement's answer goes through must: nil (an SQLite error) raises the store's error,
-- which the sync turns into a fatal, resumable stop (zendesk.sync). The statements' first
-- columns are never NULL, so nil means an error.
local function must(self, a, ...)
  if a == nil then
    local e = ...
    if type(e) == "table" then error(e, 0) end
    error(err_of(self.path, e), 0)
  end
  return a, ...
end

-- syntax: st:start_run(resume)   a new run clears what an earlier run left pending and takes the
-- next run number; a resume keeps both
function State:start_run(resume)
  if self.readonly then return self.run + 1 end
  if not resume then
    must(self, self:begin())
    must(self, self.q.clear_pending:run())
    self.run = self.run + 1
    must(self, self.q.set_meta:run("run", tostring(self.run)))
    if self.account then must(self, self.q.set_meta:run("account", self.account)) end
    must(self, self:commit())
  end
  return self.run
end

-- syntax: id, hash, suspended = st:lookup(key)   (nil when the state has no such person)
function State:lookup(key)
  local id, hash, suspended = self.q.lookup:run(key)
  if id == true then return nil end
  if id == nil then must(self, nil, hash) end
  return id, hash, suspended == 1
end

-- Marks a person present in this input (temporary table; committed in batches); answers
-- whether the key was new in this input (false: an earlier row named it already).
function State:saw(key)
  must(self, self:begin())
  must(self, self.q.seen:run(key))
  local fresh = self.db:changes() > 0
  local n = self.seen_n + 1
  self.seen_n = n
  if n >= SEEN_BATCH then must(self, self:commit()) end
  return fresh
end

-- Rows about to be submitted: what to record once Zendesk confirms them.
function State:pend(row, key, hash, restore)
  must(self, self:begin())
  must(self, self.q.pend:run(row, key, hash, restore and 1 or 0))
end

-- syntax: restored = st:confirm(row, id [, now [, email]])   records a row Zendesk confirmed
-- (created or updated, with its id; email: the address sent, kept as the person's second key
-- when they are keyed by external_id); answers whether it was a restore; false when the row
-- was not pending
function State:confirm(row, id, now, email)
  local key, hash, restore = must(self, self.q.pending:run(row))
  if key == true then return false end
  must(self, self:begin())
  local alt = nil
  if key:sub(1, 2) == "x:" and type(email) == "string" and email ~= "" then alt = "e:" .. lower(email) end
  must(self, self.q.record:run(key, id, hash, now or os_time(), self.run, alt))
  -- one Zendesk user, one person: a row that now keys them otherwise (an external_id added to a
  -- person keyed by email) replaces the old key, which would otherwise look like a leaver
  must(self, self.q.rekey:run(id, key))
  must(self, self.q.unpend:run(row))
  return restore == 1
end

function State:mark_suspended(key, id, now)
  must(self, self:begin())
  must(self, self.q.suspend:run(now or os_time(), self.run, key, id))
end

-- People in the state not suspended by us.
function State:count()
  local n = must(self, self.q.count:run())
  return n
end

function State:count_all()
  local n = must(self, self.q.count_all:run())
  return n
end

-- People not suspended by us and not seen in this input.
function State:leaving()
  must(self, self:commit())
  local n = must(self, self.q.leaving:run())
  return n
end

-- syntax: list = st:leavers(after, limit)  {{key=, id=}, ...} in key order, after the key `after`
function State:leavers(after, limit)
  local list = {}
  local ok, e = pcall(function()
    for key, id in self.q.leavers:each(after or "", limit) do list[#list + 1] = { key = key, id = id } end
  end)
  if not ok then must(self, nil, e) end
  return list
end

-- syntax: list = st:suspended_in_run(after, limit)   people this run suspended already (a resume
-- reports them again: they are not in the journal), in key order after `after`
function State:suspended_in_run(after, limit)
  local list = {}
  local ok, e = pcall(function()
    for key, id in self.q.suspended_in:each(self.run, after or "", limit) do
      list[#list + 1] = { key = key, id = id }
    end
  end)
  if not ok then must(self, nil, e) end
  return list
end

function State:close()
  if not self.db then return true end
  local ok, e = true, nil
  if self.in_tx then ok, e = self:commit() end
  for name in pairs(STATEMENTS) do
    if self.q[name] then self.q[name]:close() end
  end
  self.db:close()
  self.db = nil
  return ok, e
end

return _M
