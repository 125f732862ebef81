-- zendesk.jobs: following a bulk job to its end. Polls adaptively (sooner when the job is
-- about to finish, rarer when it sits queued), tolerates the 404 of a job too fresh to be
-- visible, and turns failed/killed jobs into errors that carry the job.
local core = require "zendesk.core"
local options = require "zendesk.options"

local error, type, tostring = error, type, tostring
local max, min = math.max, math.min

local _M = { _VERSION = core.version }

function _M.id_of(job, level)
  if type(job) == "table" then job = job.id end
  if type(job) ~= "string" then
    error("expected a job id (string) or a job_status table, got " .. type(job), (level or 1) + 1)
  end
  return job
end

local TERMINAL_FAIL = { failed = true, killed = true }

-- Next poll delay: half the time the job still needs at its current pace, within bounds.
local function next_interval(job, rate, interval, lo, hi)
  if rate and rate > 0 and type(job.total) == "number" and type(job.progress) == "number" then
    return min(hi, max(lo, (job.total - job.progress) / rate / 2))
  end
  return min(hi, interval * 1.5)
end

local NONNEG = { type = "number", min = 0 }
local OPTIONS = {
  timeout = NONNEG, interval = NONNEG, max_interval = NONNEG, not_found_grace = NONNEG,
  on_progress = "function",
}

-- syntax: job, meta = zendesk.jobs.wait(client, job, {timeout = 600, on_progress = fn, interval = 0.25,
--                                                     max_interval = 10, not_found_grace = 30})
-- client: anything with the client's methods job_status and is_open, and its clock (now, sleep).
function _M.wait(client, job, opts)
  local id = _M.id_of(job, 2)
  opts = options.check(OPTIONS, opts, "wait_job")
  local timeout = opts.timeout or 600
  local lo = opts.interval or 0.25
  local hi = opts.max_interval or 10
  local grace = opts.not_found_grace or 30
  local on_progress = opts.on_progress
  local now, sleep = client.now, client.sleep
  local started = now()
  local deadline = started + timeout
  local interval = lo
  local last, last_progress, last_at
  while true do
    local js, res = client:job_status(id)
    if js then
      last = js
      if on_progress then
        on_progress(js)
        -- a callback that closed the client ends the wait cleanly, as it ends a call in the core
        if not client:is_open() then
          return nil, core.error{ kind = "closed", job = js, job_id = id,
            message = "the client was closed by on_progress while waiting for job " .. id }
        end
      end
      if js.status == "completed" then
        return js, res
      end
      if TERMINAL_FAIL[js.status] then
        local why = type(js.message) == "string" and (": " .. js.message) or ""
        return nil, core.error{ kind = "job", code = js.status, job = js, request_id = res.request_id,
          message = "job " .. id .. " ended " .. js.status .. why }
      end
      local t = now()
      local rate
      if type(js.progress) == "number" and last_progress and js.progress > last_progress then
        rate = (js.progress - last_progress) / max(t - last_at, 1e-3)
      end
      if type(js.progress) == "number" and js.progress ~= last_progress then
        last_progress, last_at = js.progress, t
      end
      interval = next_interval(js, rate, interval, lo, hi)
    elseif res.status == 404 and now() - started < grace then
      interval = lo   -- not visible yet: Zendesk answers 404 for a moment after creation
    else
      res.job_id = id
      return nil, res
    end
    if now() + interval > deadline then
      return nil, core.error{ kind = "timeout", job = last,
        message = "job " .. id .. " not finished after " .. tostring(timeout) .. " s" }
    end
    sleep(interval)
  end
end

return _M
