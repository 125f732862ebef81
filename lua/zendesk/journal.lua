-- zendesk.journal: the append-only record of a sync, so that a crash (even kill -9) loses no
-- row and resubmits no row whose result is known. One JSON object per line; a line is written
-- before the action it announces (a batch's rows before its submission) and the file is
-- fsync'd at every batch boundary. It holds rows' outcomes, never credentials.
--
-- Records ("t" is the type):
--   {"t":"start","v":1,"time":T,"source":{...},"reader":{...},"batch_size":N,"max_jobs":N,"url":U}
--   {"t":"resume","time":T}
--   {"t":"batch","b":B,"rows":[[1,100],105],"try":1}   rows in submission order (runs as [a,b])
--   {"t":"job","b":B,"id":"V3-...","at":T}              the job that batch B became
--   {"t":"done","b":B,"id":J,"out":[O,...]}             final outcome of every row of batch B
--   {"t":"retry","b":B,"id":J,"status":"failed"|"killed"|"gone"|"uncertain","why":"..."}
--                                                       batch B's rows go again in a later batch
--   {"t":"refused","b":B,"why":"..."}                   batch B got a 429 (once per batch); it is sent
--                                                       again as B, its rows unchanged
--   {"t":"rows","out":[O,...]}                          invalid and skipped rows (never sent)
--   {"t":"fatal","message":"...","sent":B,"input":true}  /  {"t":"end","time":T,"counts":{...}}
--     (sent: false when no submission of the sync can have become a job, every one having been
--     refused; input: the sync stopped because its input is truncated or malformed)
-- An outcome O is {"r":row,"o":"created"|"updated"|"failed"|"invalid"|"skipped","id":..,
-- "e":email,"x":external_id,"err":error,"det":details,"why":reason}. A value that is not valid
-- UTF-8 (a row's bytes, which JSON cannot hold) is written {"hex":"<its bytes in hex>"} and read
-- back as the same bytes; any other text the encoder refuses is written with \xNN escapes, so
-- that nothing a row or a server holds can stop the journal.
local core = require "zendesk.core"
local users = require "zendesk.users"
local is_int = require("zendesk.options").is_int

local error, type, tostring, tonumber, setmetatable, getmetatable, ipairs, pairs, pcall =
      error, type, tostring, tonumber, setmetatable, getmetatable, ipairs, pairs, pcall
local floor = math.floor
local remove, insert = table.remove, table.insert
local byte, sub, char, format, gsub = string.byte, string.sub, string.char, string.format, string.gsub
local io_open, io_lines = io.open, io.lines

local _M = { _VERSION = core.version, FORMAT_VERSION = 1 }

local null = core.null
local utf8_bad, utf8_escape = users.utf8_bad, users.utf8_escape

local function hex_of(s)
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

local function bytes_of(h)
  return (gsub(h, "%x%x", function(x) return char(tonumber(x, 16)) end))
end

-- A copy of v with every string (key or value) the encoder would refuse escaped.
local function escaped(v, depth)
  local t = type(v)
  if t == "string" then return utf8_escape(v) end
  if t ~= "table" or depth > 32 then return v end
  local c = {}
  for k, x in pairs(v) do
    c[type(k) == "string" and utf8_escape(k) or k] = escaped(x, depth + 1)
  end
  return setmetatable(c, getmetatable(v))
end

-- errno: the third value of io.open, file:write, file:close (as liolib answers), when known
local function io_error(path, msg, errno)
  return core.error{ kind = "io", path = path, errno = errno, message = "journal " .. tostring(msg) }
end

---------------------------------------------------------------------------------------------------
-- A set of row numbers kept as sorted, disjoint, non-adjacent ranges: a 1,000,000-row sync that
-- finished in order is one range, not a million entries.

local Ranges = {}
Ranges.__index = Ranges

function _M.ranges()
  return setmetatable({ lo = {}, hi = {} }, Ranges)
end

-- Index of the first range whose hi >= x (#lo + 1 when none).
local function first_ending_at_or_after(self, x)
  local hi = self.hi
  local a, b = 1, #hi
  while a <= b do
    local m = floor((a + b) / 2)
    if hi[m] < x then a = m + 1 else b = m - 1 end
  end
  return a
end

function Ranges:add(a, b)
  b = b or a
  local lo, hi = self.lo, self.hi
  local i = first_ending_at_or_after(self, a - 1)
  if i > #lo or lo[i] > b + 1 then
    insert(lo, i, a)
    insert(hi, i, b)
    return
  end
  -- [a, b] touches range i (and maybe the ones after it): merge them into range i
  if a < lo[i] then lo[i] = a end
  if b > hi[i] then hi[i] = b end
  while i < #lo and lo[i + 1] <= hi[i] + 1 do
    if hi[i + 1] > hi[i] then hi[i] = hi[i + 1] end
    remove(lo, i + 1)
    remove(hi, i + 1)
  end
end

function Ranges:contains(x)
  local i = first_ending_at_or_after(self, x)
  return i <= #self.lo and self.lo[i] <= x
end

function Ranges:count()
  local n = 0
  for i = 1, #self.lo do n = n + self.hi[i] - self.lo[i] + 1 end
  return n
end

function Ranges:size()
  return #self.lo
end

-- Row lists of batches are written as runs: {1,2,3,7,9,10} -> {{1,3},7,{9,10}}.
function _M.encode_rows(rows)
  local out, i, n = {}, 1, #rows
  while i <= n do
    local j = i
    while j < n and rows[j + 1] == rows[j] + 1 do j = j + 1 end
    if j > i then out[#out + 1] = { rows[i], rows[j] } else out[#out + 1] = rows[i] end
    i = j + 1
  end
  return out
end

function _M.decode_rows(runs)
  local rows = {}
  for _, r in ipairs(runs) do
    if type(r) == "table" then
      for x = r[1], r[2] do rows[#rows + 1] = x end
    else
      rows[#rows + 1] = r
    end
  end
  return rows
end

---------------------------------------------------------------------------------------------------
-- Outcomes: the report's long names <-> the journal's short ones.

local SHORT = { row = "r", outcome = "o", id = "id", email = "e", external_id = "x", error = "err",
                details = "det", reason = "why" }

function _M.pack(o)
  local t = {}
  for long, short in pairs(SHORT) do
    local v = o[long]
    if type(v) == "string" and utf8_bad(v) then v = { hex = hex_of(v) } end
    if v ~= nil and v ~= null then t[short] = v end
  end
  return t
end

function _M.unpack(t)
  local o = {}
  for long, short in pairs(SHORT) do
    local v = t[short]
    if type(v) == "table" and type(v.hex) == "string" then v = bytes_of(v.hex) end
    if v ~= nil and v ~= null then o[long] = v end
  end
  return o
end

---------------------------------------------------------------------------------------------------
-- Writing

local Journal = {}
local journal_mt = { __index = Journal }

local function open_append(path)
  local f, err, errno = io_open(path, "a")
  if not f then return nil, io_error(path, err, errno) end
  f:setvbuf("full", 65536)
  return setmetatable({ file = f, path = path }, journal_mt)
end

-- syntax: j, err = journal.create(path, header)   (a new, empty journal: mode 0600, truncated)
function _M.create(path, header)
  if type(path) ~= "string" or path == "" then error("journal: path must be a non-empty string", 2) end
  local ok, err = core.create_private(path, true)
  if not ok then return nil, io_error(path, err) end
  local j, jerr = open_append(path)
  if not j then return nil, jerr end
  header.t, header.v = "start", _M.FORMAT_VERSION
  ok, err = j:write(header)
  if ok then ok, err = j:sync() end
  if not ok then
    j:close()
    return nil, err
  end
  return j
end

-- syntax: j, err = journal.append(path)   (an existing journal, to go on after a resume)
function _M.append(path)
  -- a crash can leave half a line at the end: end it, so the next record starts on its own line
  local f, err, errno = io_open(path, "rb")
  if not f then return nil, io_error(path, err, errno) end
  local size = f:seek("end")
  local last = ""
  if size and size > 0 then
    f:seek("set", size - 1)
    last = f:read(1)
  end
  f:close()
  -- tighten the mode of a journal that an older tool or a copy left readable
  local ok, perr = core.create_private(path, false)
  if not ok then return nil, io_error(path, perr) end
  local j, jerr = open_append(path)
  if not j then return nil, jerr end
  if last ~= "" and last ~= "\n" then
    local wok, werr = j.file:write("\n")
    if not wok then
      j:close()
      return nil, io_error(path, werr)
    end
  end
  return j
end

function Journal:write(rec)
  local line, err = core.encode(rec)
  if not line then line, err = core.encode(escaped(rec, 0)) end
  if not line then return nil, io_error(self.path, err) end
  local ok, werr = self.file:write(line, "\n")
  if not ok then return nil, io_error(self.path, werr) end
  return true
end

-- Makes everything written so far durable (flush + fsync).
function Journal:sync()
  local ok, err = core.fsync(self.file)
  if not ok then return nil, io_error(self.path, err) end
  return true
end

function Journal:close()
  local f = self.file
  if not f then return true end
  self.file = nil
  core.fsync(f)
  local ok, err = f:close()
  if not ok then return nil, io_error(self.path, err) end
  return true
end

---------------------------------------------------------------------------------------------------
-- Reading

-- syntax: header, err = journal.header(path)   (the start record: what the sync was reading)
function _M.header(path)
  local f, err, errno = io_open(path, "rb")
  if not f then return nil, io_error(path, err, errno) end
  local line = f:read("l")
  f:close()
  local rec = line and core.decode(line)
  if type(rec) ~= "table" or rec.t ~= "start" then
    return nil, io_error(path, path .. ": not a zendesk-sync journal")
  end
  if rec.v ~= _M.FORMAT_VERSION then
    return nil, io_error(path, path .. ": journal format " .. tostring(rec.v) .. " is not supported")
  end
  return rec
end

-- syntax: state, stop = journal.state(path)   -> "absent" | "finished" | "unfinished"
-- (unfinished: a sync stopped or was killed before its end record: --resume finishes it). When
-- it stopped on a fatal error, stop = {message =, sent = false | true, input = true | nil} (see
-- the fatal record): nothing can be in flight when sent is false or input is true.
function _M.state(path)
  local f = io_open(path, "rb")
  if not f then return "absent" end
  local size = f:seek("end") or 0
  f:seek("set", size > 65536 and size - 65536 or 0)
  local tail = f:read("a") or ""
  f:close()
  if size == 0 then return "unfinished" end
  -- the last line, found from the end: an unanchored pattern would be quadratic in its length
  local stop = #tail
  while stop > 0 and byte(tail, stop) == 10 do stop = stop - 1 end
  local start = stop
  while start > 0 and byte(tail, start) ~= 10 do start = start - 1 end
  local rec = stop > 0 and core.decode(sub(tail, start + 1, stop))
  if type(rec) == "table" and rec.t == "end" then return "finished" end
  if type(rec) == "table" and rec.t == "fatal" then
    return "unfinished", { message = rec.message, sent = rec.sent ~= false, input = rec.input == true or nil }
  end
  return "unfinished"
end

-- syntax: state, err = journal.load(path, on_outcome)
-- Reads a journal through once. on_outcome(outcome) is called for every row whose outcome is
-- final, exactly once per row. state = {header, finished (ranges), pending (batches submitted
-- as a job but without results: {b, id, rows, try, at}), retry (ranges: rows that already had one
-- job fail), unsent (batches written but never seen as a job: {b, rows, try}), next_batch,
-- ended, fatal, bad_lines, sent (whether a submission may have become a job)}.
function _M.load(path, on_outcome)
  local header, herr = _M.header(path)
  if not header then return nil, herr end
  local finished, retry = _M.ranges(), _M.ranges()
  local batches, order = {}, {}
  local st = { header = header, finished = finished, retry = retry, next_batch = 1, ended = false,
               bad_lines = 0, resumes = 0 }

  local function finish(list)
    if type(list) ~= "table" then return end
    for _, e in ipairs(list) do
      local r = type(e) == "table" and e.r
      if is_int(r) and not finished:contains(r) then
        finished:add(r)
        if on_outcome then on_outcome(_M.unpack(e)) end
      end
    end
  end

  local ok, lines = pcall(io_lines, path)
  if not ok then return nil, io_error(path, lines) end
  local first, unknown = true, false
  st.sent = false
  for line in lines do
    if first then
      first = false
    else
      local rec = core.decode(line)
      local t = type(rec) == "table" and rec.t
      if t == "batch" and is_int(rec.b) and type(rec.rows) == "table" then
        unknown = true   -- its submission's fate is known only from a later record
        batches[rec.b] = { b = rec.b, rows = _M.decode_rows(rec.rows), try = rec.try or 1 }
        order[#order + 1] = rec.b
        if rec.b >= st.next_batch then st.next_batch = rec.b + 1 end
      elseif t == "job" and batches[rec.b] then
        st.sent = true
        batches[rec.b].id, batches[rec.b].at = rec.id, rec.at
      elseif t == "done" then
        finish(rec.out)
        batches[rec.b] = nil
      elseif t == "retry" and batches[rec.b] then
        -- its rows went (or will go) again: a later batch or this resume carries them
        for _, r in ipairs(batches[rec.b].rows) do retry:add(r) end
        batches[rec.b] = nil
      elseif t == "rows" then
        finish(rec.out)
      elseif t == "resume" then
        st.resumes = st.resumes + 1
        st.ended, st.fatal = false, nil
      elseif t == "fatal" then
        st.fatal = rec.message
        if rec.sent == false then unknown = false else st.sent = true end
      elseif t == "end" then
        st.ended = true
      elseif not t then
        st.bad_lines = st.bad_lines + 1   -- half a line from a crash
      end
    end
  end

  if unknown then st.sent = true end

  -- Whatever is still open: submitted (poll it first) or only announced (send again).
  st.pending, st.unsent = {}, {}
  for _, b in ipairs(order) do
    local rec = batches[b]
    if rec then
      batches[b] = nil
      local live = {}
      for _, r in ipairs(rec.rows) do
        if not finished:contains(r) then live[#live + 1] = r end
      end
      rec.rows = live
      if #live > 0 then
        if rec.try >= 2 then for _, r in ipairs(live) do retry:add(r) end end
        if rec.id then st.pending[#st.pending + 1] = rec else st.unsent[#st.unsent + 1] = rec end
      end
    end
  end
  return st
end

return _M
