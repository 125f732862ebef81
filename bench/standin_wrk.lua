-- wrk script: single create_or_update upserts against the Zendesk stand-in,
-- each with a distinct email (thread id + counter), over kept-alive connections.
-- usage: wrk -t2 -c32 -d10s -s bench/standin_wrk.lua http://127.0.0.1:8089
-- luacheck: globals tid run statuses
local counter = 0
local threads = {}
local thread_seq = 0

function setup(thread)
  thread_seq = thread_seq + 1
  thread:set("tid", thread_seq)
  thread:set("run", tostring(os.time()))
  table.insert(threads, thread)
end

function init()
  tid = tid or 0
  statuses = {}
end

local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json",
  -- admin@example.com/token:stand-in-token
  ["Authorization"] = "Basic YWRtaW5AZXhhbXBsZS5jb20vdG9rZW46c3RhbmQtaW4tdG9rZW4=",
}

function request()
  counter = counter + 1
  local email = string.format("bench-%s-%d-%d@example.com", run, tid, counter)
  local body = string.format('{"user":{"name":"Bench User %d","email":"%s","external_id":"bench-%s-%d-%d"}}',
    counter, email, run, tid, counter)
  return wrk.format("POST", "/api/v2/users/create_or_update.json", headers, body)
end

function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary)
  local bad = 0
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s or {}) do
      if code ~= 201 then bad = bad + n end
      io.write(string.format("thread %d: %d x HTTP %d\n", t:get("tid"), n, code))
    end
  end
  io.write(string.format("upserts/s: %.0f  (non-201 answers: %d, socket errors: %d)\n",
    summary.requests / (summary.duration / 1e6), bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
