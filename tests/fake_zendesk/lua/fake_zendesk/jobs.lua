-- Bulk jobs of the stand-in: submission, the job limit, processing in two
-- timer-driven phases (queued -> working -> completed), and job_status output.
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"
local users = require "fake_zendesk.users"
local faults = require "fake_zendesk.faults"

local ngx = ngx
local zd = state.zd
local str, value = json.str, json.value
local concat, ceil, max = table.concat, math.ceil, math.max

local _M = {}

-- Key of a row of update_many?external_ids=...: the external id that names its target (a
-- key no JSON body can carry, so a client cannot set it).
_M.BY_EXTERNAL_ID = {}

-- kind -> what each row does and how it is reported
local KINDS = {
  create_or_update = { mode = "create_or_update", working = nil, fail = nil },
  create = { mode = "create", working = "Creating User #", fail = "UserCreateError" },
  update = { mode = "update", working = "Updating user #", fail = "UserUpdateError" },
}

local function load(id)
  local raw = zd:get("j:" .. id)
  return raw and json.raw_decode(raw)
end

local function save(job)
  local cfg = state.config()
  local ok, err = zd:safe_set("j:" .. job.id, json.encode(job), max(cfg.job_expiry_s, 60) + 3600)
  if not ok then ngx.log(ngx.ERR, "cannot store job ", job.id, ": ", err) end
end

function _M.render(job)
  return concat({
    '{"id":', str(job.id),
    ',"url":', str(job.url),
    ',"total":', job.total ~= nil and json.num(job.total) or "null",
    ',"progress":', job.progress ~= nil and json.num(job.progress) or "null",
    ',"status":', str(job.status),
    ',"message":', value(job.message),
    ',"results":', job.results or "null",
    "}",
  })
end

local function result_entry(kind, index, u, res)
  if res.kind == "created" or res.kind == "updated" then
    local rec = res.rec
    if kind == "update" then
      return '{"id":' .. rec.id .. ',"action":"update","status":"Updated","success":true}'
    end
    local e = '{"id":' .. rec.id .. ',"status":' .. (res.kind == "created" and '"Created"' or '"Updated"')
    if rec.email then e = e .. ',"email":' .. str(rec.email) end
    if rec.external_id then e = e .. ',"external_id":' .. str(rec.external_id) end
    return e .. "}"
  end
  local id = res.id or (type(u) == "table" and json.id_of(u.id)) or nil
  local xid = type(u) == "table" and u[_M.BY_EXTERNAL_ID] or nil
  local code, details
  if res.kind == "not_found" then
    code, details = "RecordNotFound", "Not found"
  elseif res.kind == "invalid" then
    code = KINDS[kind].fail or (res.id and "UserUpdateError" or "UserCreateError")
    details = users.errs_text(res.errs)
  else
    code, details = KINDS[kind].fail or "UserCreateError", "Invalid user"
  end
  local e = '{"index":' .. (index - 1)
  if id then e = e .. ',"id":' .. id end
  if xid and not id then e = e .. ',"external_id":' .. str(xid) end
  return e .. ',"status":"Failed","error":' .. str(code) .. ',"details":' .. str(details) .. "}"
end

-- A job fault's result echoes, added after the entry's own fields (a repeated key: the last wins).
local function with_echo(job, e)
  if not job.echo_result then return e end
  local extra = {}
  for k, v in pairs(job.echo_result) do extra[#extra + 1] = str(k) .. ":" .. str(v) end
  table.sort(extra)
  return e:sub(1, -2) .. "," .. concat(extra, ",") .. "}"
end

-- Processes rows from..to; returns false when a reset happened meanwhile.
local function run_rows(job, list, results, from, to)
  local spec = KINDS[job.kind]
  local last
  for i = from, to do
    local u = list[i]
    local res
    if type(u) ~= "table" then
      res = { kind = "invalid_row" }
    else
      local opts = { mode = spec.mode, gen = job.gen }
      if spec.mode == "update" then
        local xid = u[_M.BY_EXTERNAL_ID]
        if xid then
          local rec = users.find_by_external_id(xid)
          opts.id = rec and rec.id
        else
          opts.id = json.id_of(u.id)
        end
        if not opts.id then res = { kind = "not_found" } end
      end
      res = res or users.apply(u, opts)
    end
    if res.kind == "aborted" then return false end
    results[i] = with_echo(job, result_entry(job.kind, i, u, res))
    last = res
  end
  if last then
    local word = spec.working
    if not word then
      local creating = last.kind == "created" or (last.kind ~= "updated" and not last.id)
      word = creating and "Creating User #" or "Updating user #"
    end
    job.message = job.echo_message or (word .. to)
  end
  return true
end

local function finish(job)
  zd:incr("jobs:active", -1, 0)
  save(job)
end

local phase2

local function phase1(premature, id, list)
  if premature then return end
  local job = load(id)
  if not job or job.gen ~= state.generation() then return end
  if job.fault then
    job.status, job.message = job.fault, job.echo_message or (job.fault == "killed" and "Job killed" or "Job failed")
    return finish(job)
  end
  local results = {}
  local half = ceil(job.total / 2)
  if half > 0 and not run_rows(job, list, results, 1, half) then return end
  job.status, job.progress = "working", half
  if job.total == 0 then
    job.message = job.echo_message
  end
  save(job)
  local ok, err = ngx.timer.at(state.config().job_delay_ms / 1000, phase2, id, list, results)
  if not ok then
    ngx.log(ngx.ERR, "cannot schedule job ", id, ": ", err)
    job.status, job.message = "failed", "Job failed"
    finish(job)
  end
end

phase2 = function(premature, id, list, results)
  if premature then return end
  local job = load(id)
  if not job or job.gen ~= state.generation() then return end
  if not run_rows(job, list, results, job.progress + 1, job.total) then return end
  job.status, job.progress = "completed", job.total
  job.message = job.echo_message or ("Completed at " .. os.date("!%Y-%m-%d %H:%M:%S +0000", ngx.time()))
  job.results = "[" .. concat(results, ",") .. "]"
  finish(job)
end

local seq = 0
local function new_id()
  seq = seq + 1
  return "V3-" .. ngx.md5(ngx.now() .. ":" .. ngx.worker.pid() .. ":" .. seq .. ":" .. math.random())
end

-- Queues a job over `list` (decoded user objects). Returns the job, or nil and
-- "too_many" when max_jobs jobs are already queued or working.
function _M.submit(kind, list, base)
  local cfg = state.config()
  local active = zd:incr("jobs:active", 1, 0)
  if active > cfg.max_jobs then
    zd:incr("jobs:active", -1, 0)
    state.stat("too_many_jobs")
    return nil, "too_many"
  end
  local id = new_id()
  local outcome, f = faults.take_job_outcome() -- taken only by accepted jobs
  local job = {
    id = id, url = base .. "/api/v2/job_statuses/" .. id .. ".json", total = #list,
    status = "queued", kind = kind, created = ngx.now(), gen = state.generation(),
    fault = outcome ~= "completed" and outcome or nil,
    echo_message = f and f.message, echo_result = f and f.result, message = f and f.message,
  }
  save(job)
  local n = zd:incr("jl:n", 1, 0)
  zd:safe_set("jl:" .. n, id, max(cfg.job_expiry_s, 60) + 3600)
  state.stat("jobs")
  local ok, err = ngx.timer.at(cfg.job_delay_ms / 1000, phase1, id, list)
  if not ok then
    ngx.log(ngx.ERR, "cannot schedule job ", id, ": ", err)
    job.status, job.message = "failed", "Job failed"
    finish(job)
  end
  return job
end

-- Seconds a client should wait before submitting again.
function _M.retry_after()
  return max(1, ceil(2 * state.config().job_delay_ms / 1000))
end

-- A job as a poll sees it: nil when unknown, expired, or still "fresh".
function _M.poll(id)
  local job = load(id)
  if not job then return nil end
  local cfg = state.config()
  if ngx.now() >= job.created + cfg.job_expiry_s then return nil end
  if cfg.fresh_job_404_polls > 0 then
    local polls = zd:incr("jp:" .. id, 1, 0, max(cfg.job_expiry_s, 60) + 3600)
    if polls <= cfg.fresh_job_404_polls then return nil end
  end
  return job
end

-- The last 100 jobs, newest first.
function _M.recent()
  local cfg = state.config()
  local n = zd:get("jl:n") or 0
  local out = {}
  for i = n, 1, -1 do
    if #out >= 100 then break end
    local id = zd:get("jl:" .. i)
    local job = id and load(id)
    if job and ngx.now() < job.created + cfg.job_expiry_s then out[#out + 1] = job end
  end
  return out
end

return _M
