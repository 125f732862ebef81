-- zendesk.sync_leavers: the leavers stage of a sync with a state (opts.leavers = "suspend").
-- Once the input has been read completely without a fatal error, everyone in the
-- state not present in it (a valid or an invalid row both count as present) and not already
-- suspended by this tool is suspended with PUT update_many.json?ids=... {"user":{"suspended":
-- true}}, at most api.MAX_USERS ids a job, the jobs followed like the sync's own. Only people
-- this state synced are touched. The guard: more leavers than opts.max_leavers (a count, or a
-- percentage of the people in the state; default 5%) and nobody is suspended.
-- syntax: local leavers = require "zendesk.sync_leavers"; err = leavers.run(S, opts)
local core = require "zendesk.core"
local api = require "zendesk.api"
local max_leavers_of = require("zendesk.sync_delta").max_leavers_of

local type, tostring, ipairs = type, tostring, ipairs
local floor, max, min, concat, format, sub = math.floor, math.max, math.min, table.concat, string.format, string.sub

local _M = {}

local PATH_UPDATE_MANY, PATH_STATUSES = api.PATH_UPDATE_MANY, api.PATH_JOB_STATUSES
local MAX_IDS, MAX_JOB_IDS = api.MAX_USERS, api.MAX_JOB_IDS
local SUSPEND = { user = { suspended = true } }

-- The report's email / external_id of a state key ("x:..." or "e:...", case-folded).
local function leaver_outcome(l, what, extra)
  local o = extra or {}
  o.outcome, o.id = what, l.id
  if sub(l.key, 1, 2) == "x:" then o.external_id = sub(l.key, 3) else o.email = sub(l.key, 3) end
  return o
end

-- How many may leave: the guard's limit and what it was computed from.
function _M.limit(opts, people)
  local lim = max_leavers_of(opts.max_leavers, 4)
  if lim.count then return lim.count, tostring(lim.count) end
  return floor(people * lim.percent / 100), format("%g%% of %d", lim.percent, people)
end

local function record(S, l, what, extra)
  local o = leaver_outcome(l, what, extra)
  S:finalize(o)
end

-- One finished job: the ids its results confirm are suspended (one transaction), the others
-- are reported failed and stay active in the state, so the next run tries them again.
local function job_done(S, job, js)
  local st = S.delta.st
  local ok_ids = {}
  if type(js.results) == "table" then
    for _, r in ipairs(js.results) do
      if type(r) == "table" and r.id ~= nil and (r.success == true or r.status == "Updated") then
        ok_ids[tostring(r.id)] = true
      end
    end
  end
  local outs = {}
  for _, l in ipairs(job.list) do
    if js.status == "completed" and ok_ids[tostring(l.id)] then
      st:mark_suspended(l.key, l.id)
      outs[#outs + 1] = { l, "suspended" }
    else
      outs[#outs + 1] = { l, "failed", { error = "NotSuspended", reason = format(
        "job %s (%s) did not confirm the suspension of user %s", job.id, tostring(js.status), tostring(l.id)) } }
    end
  end
  local ok, err = st:commit()
  if not ok then return S:fail(err) end
  for _, x in ipairs(outs) do record(S, x[1], x[2], x[3]) end
end

-- A resumed run: the people it suspended before it stopped are reported again (the journal does
-- not hold them: they have no input row), so that the report lists every leaver once.
local function report_earlier(S)
  local st, after = S.delta.st, ""
  while true do
    local list = st:suspended_in_run(after, 1000)
    if #list == 0 then return end
    for _, l in ipairs(list) do record(S, l, "suspended") end
    after = list[#list].key
  end
end

-- Submits the leavers in jobs (at most S.max_jobs in flight) and follows them to the end.
local function suspend_all(S)
  local st = S.delta.st
  local after, more = "", true
  local queue, inflight = {}, {}
  local refused_since
  local poll_at = 0
  while not S.fatal do
    while more and #queue + #inflight < S.max_jobs do
      local list = st:leavers(after, MAX_IDS)
      if #list == 0 then more = false break end
      after = list[#list].key
      queue[#queue + 1] = list
    end
    if #queue == 0 and #inflight == 0 then break end
    local now = S.now()
    local reqs, posted = {}, {}
    if now >= (S.leavers_submit_after or 0) then
      for _, list in ipairs(queue) do
        local ids = {}
        for i, l in ipairs(list) do ids[i] = tostring(l.id) end
        reqs[#reqs + 1] = { "PUT", PATH_UPDATE_MANY .. "?ids=" .. concat(ids, ","), SUSPEND }
        posted[#posted + 1] = list
      end
      queue = {}
    end
    local polled
    if #inflight > 0 and now >= poll_at then
      polled = {}
      for i = 1, min(#inflight, MAX_JOB_IDS) do polled[i] = inflight[i] end
      local ids = {}
      for i, j in ipairs(polled) do ids[i] = j.id end
      reqs[#reqs + 1] = { "GET", PATH_STATUSES .. concat(ids, ",") }
    end
    if #reqs > 0 then
      local res = api.request_many(S.core, reqs)
      for i, list in ipairs(posted) do
        local r = res[i]
        local js = type(r.value) == "table" and r.value.job_status
        if type(js) == "table" and type(js.id) == "string" then
          inflight[#inflight + 1] = { id = js.id, list = list, changed = now }
          S.jobs = S.jobs + 1
          refused_since = nil
          poll_at = min(poll_at, now + S.poll_lo)
        else
          local err = r.err or core.error{ kind = "http", code = "InvalidResponse",
                                           message = "answer to " .. PATH_UPDATE_MANY .. " has no job_status" }
          if err.kind == "rate_limited" and not err.retry_after_too_long then
            refused_since = refused_since or now
            if now - refused_since > S.rate_limit_timeout then return S:fail(err) end
            queue[#queue + 1] = list
            S.leavers_submit_after = now + max(type(err.retry_after) == "number" and err.retry_after or 1, 0.5)
          else
            return S:fail(err)
          end
        end
      end
      if polled then
        local r = res[#reqs]
        local list = type(r.value) == "table" and r.value.job_statuses
        if type(list) ~= "table" then
          if r.err and r.err.kind ~= "rate_limited" then return S:fail(r.err) end
        else
          local by_id = {}
          for _, js in ipairs(list) do
            if type(js) == "table" and type(js.id) == "string" then by_id[js.id] = js end
          end
          local keep = {}
          for _, job in ipairs(inflight) do
            local js = by_id[job.id]
            if js and (js.status == "completed" or js.status == "failed" or js.status == "killed") then
              job_done(S, job, js)
            elseif js and js.progress ~= job.progress then
              job.progress, job.changed = js.progress, now
              keep[#keep + 1] = job
            elseif now - job.changed > S.job_timeout then
              -- stuck or gone: its people stay active in the state, the next run tries them again
              job_done(S, job, { status = js and js.status or "gone" })
            else
              keep[#keep + 1] = job
            end
          end
          inflight = keep
        end
        poll_at = S.now() + S.poll_lo
      end
    else
      local wake = min(poll_at, S.leavers_submit_after or poll_at)
      local d = wake - S.now()
      if d > 0 then S.sleep(min(d, 1)) end
    end
    S:progress(false)
  end
end

-- syntax: err = leavers.run(S, opts)   after the loop: counts the leavers (S.delta.leaving);
-- with opts.leavers == "suspend" (not a dry run), the guard, then the suspensions. Answers the
-- guard's error (the run ends with it, nobody suspended), else nil.
function _M.run(S, opts)
  local d = S.delta
  if not d or S.fatal or S.read_error or not S.eof then return nil end
  d.leaving = d.st:leaving()
  if S.dry_run or opts.leavers ~= "suspend" then return nil end
  if S.resumed then report_earlier(S) end
  if d.leaving == 0 then return nil end
  if S.input_cut then
    return core.error{ kind = "validation", code = "InputCut", leaving = d.leaving, message = format(
      "%s: the rest of the input after it was not read, so %d people of the state %s may only look absent: "
      .. "nobody was suspended. Fix the input, then run again", S.input_cut, d.leaving, d.path) }
  end
  local people = d.st:count()
  local limit, from = _M.limit(opts, people)
  if d.leaving > limit then
    return core.error{ kind = "validation", code = "TooManyLeavers", leaving = d.leaving, limit = limit,
      people = people, message = format(
      "%d of the %d people in the state %s are not in this input, more than max_leavers (%s = %d): nobody was "
      .. "suspended. If the input is complete and they did leave, run again with a larger max_leavers "
      .. "(--max-leavers %d, or a percentage such as --max-leavers %d%%); if the input is incomplete, fix it first",
      d.leaving, people, d.path, from, limit, d.leaving, floor(d.leaving * 100 / max(people, 1)) + 1) }
  end
  suspend_all(S)
  return nil
end

_M.leaver_outcome = leaver_outcome
return _M
