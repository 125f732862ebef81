-- zendesk.sync_resume: the resume stage: what a sync that finishes a journal takes from it. The
-- journal's start record (its header) is read once, here; it gives the reader options, the batch
-- size, the input path, the account, and the input's size and digest; the journal's records give
-- the rows already settled, the jobs still in flight and the batches to send again.
-- syntax: local resume = require "zendesk.sync_resume"
local core = require "zendesk.core"
local journal = require "zendesk.journal"
local is_int = require("zendesk.options").is_int

local type, tostring, ipairs = type, tostring, ipairs
local max, format = math.max, string.format
local os_time = os.time
local null = core.null

local _M = {}

_M.READER_OPTIONS = { "format", "delimiter", "tag_separator", "columns", "field_types", "empty_cells" }

-- syntax: header, source = resume.header(S, client, source, opts, ropts) | nil, err
-- Reads the journal's header; fills ropts (the reader options the caller did not give) and
-- S.batch_size from it; answers the source to read (the journal's input path when none is given).
function _M.header(S, client, source, opts, ropts)
  local header, herr = journal.header(opts.journal)
  if not header then return nil, herr end
  for _, k in ipairs(_M.READER_OPTIONS) do
    if ropts[k] == nil and type(header.reader) == "table" and header.reader[k] ~= null then
      ropts[k] = header.reader[k]
    end
  end
  if opts.batch_size == nil and is_int(header.batch_size) then S.batch_size = header.batch_size end
  local src = type(header.source) == "table" and header.source or {}
  if source == nil and src.kind == "file" then source = src.path end
  local url = client:base_url()
  if header.url and url and header.url ~= url then
    return nil, core.error{ kind = "validation", code = "AccountMismatch", journal = opts.journal,
      journal_url = header.url, url = url,
      message = "journal " .. opts.journal .. " belongs to a sync against " .. tostring(header.url)
        .. ", not " .. url }
  end
  return header, source
end

-- syntax: ok, err = resume.check_input(header, path, size, digest)   (the input the journal was
-- written for: same size, same content digest)
function _M.check_input(header, source, size, digest)
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
  return true
end

-- syntax: ok, err = resume.load(S, path)
-- Replays the journal (its settled rows are finalized again: counts, report, on_row), reopens it
-- for appending, and puts the jobs it left in flight back in flight.
function _M.load(S, path)
  local st, lerr = journal.load(path, function(o) S:finalize(o, true) end)
  if not st then return nil, lerr end
  if S.fatal then return nil, S.fatal end
  S.finished, S.retry, S.next_b, S.resumed = st.finished, st.retry, st.next_batch, true
  S.sent = st.sent
  S.total_at_start = S.total
  local j, jerr = journal.append(path)
  if not j then return nil, jerr end
  S.journal, S.journal_path = j, path
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
  return true
end

return _M
