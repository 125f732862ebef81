-- zendesk.sync_delta: the delta stage of a sync with a state (opts.state). Every row
-- read marks its person present; a valid row is compared with the state (same key and hash as
-- the last confirmed send: unchanged, not sent); what is sent is recorded as pending just before
-- its submission, and as synced only where the sync maps a job's per-row results (close_batch),
-- in one transaction per confirmed job. A row Zendesk did not confirm is never recorded.
-- syntax: local delta = require "zendesk.sync_delta"   (S.delta after delta.attach)
local is_int = require("zendesk.options").is_int

local type, tostring, error, setmetatable, tonumber, require = type, tostring, error, setmetatable, tonumber, require
local pcall = pcall
local match, format = string.match, string.format

local _M = {}

local Delta = {}
Delta.__index = Delta

-- syntax: limit = delta.max_leavers_of(v)   ({count = N} or {percent = P}); raises on a bad value
function _M.max_leavers_of(v, level)
  if v == nil then return { percent = 5 } end
  if is_int(v) and v >= 0 then return { count = v } end
  if type(v) == "string" then
    local n = tonumber(match(v, "^%s*(%d+%.?%d*)%s*$"))
    if n and is_int(n) then return { count = n } end
    local p = tonumber(match(v, "^%s*(%d+%.?%d*)%s*%%%s*$"))
    if p and p <= 100 then return { percent = p } end
  end
  error(format("sync_users: option 'max_leavers' must be a count (a non-negative integer) or a percentage "
    .. "such as \"5%%\", got %s", tostring(v)), level or 3)
end

-- syntax: ok, err = delta.attach(S, client, opts)   (nothing without opts.state)
function _M.attach(S, client, opts)
  if not opts.state then return true end
  local state = require "zendesk.state"
  local st, err = state.open(opts.state, { url = client and client:base_url() or nil, readonly = S.dry_run })
  if not st then return nil, err end
  local ok, run = pcall(st.start_run, st, opts.resume)
  if not ok then
    st:close()
    return nil, run
  end
  S.delta = setmetatable({ st = st, state = state, full = opts.full == true, wait = {}, path = opts.state,
                           counts = { new = 0, changed = 0, unchanged = 0 } }, Delta)
  return true
end

-- Any row read (valid, invalid, skipped, or finished before a resume): its person is present.
-- A person the state does not know under the row's key may be there under its other key (keyed
-- by email before the row carried an external_id): then every key the row names is marked, so
-- that they are no leaver even if this row is invalid. Notes whether an earlier row of this
-- input had the same key (self.again: see unchanged) and keeps the lookup for unchanged.
function Delta:saw(user)
  local state, st = self.state, self.st
  local key = state.key_of(user)
  self.again, self.l_key = false, nil
  if not key then return end
  self.again = not st:saw(key)
  local id, hash, suspended = st:lookup(key)
  self.l_key, self.l_id, self.l_hash, self.l_susp = key, id, hash, suspended
  if not id then
    local ks = state.keys_of(user)
    for i = 2, #ks do st:saw(ks[i]) end
  end
end

-- A row read (before validation): answers the Zendesk id when its canonical JSON has the hash
-- of the last confirmed send and this tool did not suspend them (unchanged: not sent); otherwise
-- keeps what it found for will_send.
function Delta:unchanged(row, user)
  local state = self.state
  local key = state.key_of(user)
  self.row, self.key, self.hash, self.id, self.suspended = row, key, nil, nil, false
  if not key then return nil end
  -- a value the hash cannot take (nested too deep, cyclic) is the row's problem: validation
  -- refuses it as invalid; it is never unchanged and, sent anyway, never recorded
  local ok, hash = pcall(state.hash, user)
  if not ok then hash = nil end
  local id, last, suspended
  if self.l_key == key then
    id, last, suspended = self.l_id, self.l_hash, self.l_susp
  else
    id, last, suspended = self.st:lookup(key)
  end
  self.hash, self.id, self.suspended = hash, id, suspended or false
  -- a person named by an earlier row of this input is sent again whatever the state says:
  -- that row may have been sent (it differed), and the last row must be the last word in
  -- Zendesk, as in a run without a state
  if hash and id and not suspended and last == hash and not self.full and not self.again then
    self.counts.unchanged = self.counts.unchanged + 1
    return id
  end
  return nil
end

-- The same row, valid, about to be sent: counted new or changed; what to record once Zendesk
-- confirms it is kept until its submission; suspended = false is added for a person this tool
-- suspended (not part of the hash: the next run sees the row unchanged).
function Delta:will_send(row, user)
  local c = self.counts
  if self.row ~= row or not self.key then
    c.new = c.new + 1
    return
  end
  if self.id then c.changed = c.changed + 1 else c.new = c.new + 1 end
  -- (a row that says suspended itself has the last word: true keeps them suspended, no restore)
  local restore = false
  if self.suspended then
    if user.suspended == nil then user.suspended = false end
    restore = user.suspended == false
  end
  if not self.st.readonly and self.hash then self.wait[row] = { self.key, self.hash, restore } end
end

-- A batch about to be submitted: its rows are pending, committed before the request goes.
function Delta:submitting(batch)
  local wait, st = self.wait, self.st
  for i = 1, batch.n do
    local row = batch.rows[i]
    local w = wait[row]
    if w then
      st:pend(row, w[1], w[2], w[3])
      wait[row] = nil
    end
  end
  local ok, err = st:commit()
  if not ok then error(err, 0) end
end

-- The outcomes of a job's rows, before they are journaled: those Zendesk confirmed are recorded
-- (one transaction); a restored person is reported "restored".
function Delta:confirm(outs)
  local st, any = self.st, false
  for i = 1, #outs do
    local o = outs[i]
    if (o.outcome == "created" or o.outcome == "updated") and is_int(o.id) then
      any = true
      if st:confirm(o.row, o.id, nil, o.email) then o.outcome = "restored" end
    end
  end
  if any then
    local ok, err = st:commit()
    if not ok then error(err, 0) end
  end
end

function Delta:close()
  if not self.st then return true end
  local ok, err = self.st:close()
  self.st = nil
  return ok, err
end

-- The report's delta counts (a dry run's "leaving" is how many the leavers stage would touch).
function Delta:counts_into(r)
  local c = self.counts
  r.new, r.changed = c.new, c.changed
  r.leaving = self.leaving
  r.state = self.path
end

_M.Delta = Delta
return _M
