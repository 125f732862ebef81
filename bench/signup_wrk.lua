-- signup_wrk.lua: a fixed number of sign-ups for wrk, each with a distinct email, either through
-- examples/nginx.conf (POST /signup with the user as JSON) or straight to the stand-in
-- (POST /api/v2/users/create_or_update.json with {"user": ...} and Basic auth).
--   BENCH_MODE=signup|direct BENCH_TOTAL=1000 BENCH_THREADS=2 BENCH_RUN=tag \
--     wrk -t2 -c50 -d120s -s bench/signup_wrk.lua URL
-- wrk runs for a duration, not a count, so: each thread stops its own loop after its share of
-- answers, the last thread to finish sends wrk SIGINT (which ends its sleep and the run), and
-- the rate is taken from the threads' own monotonic clocks (first request to last answer), not
-- from wrk's runtime, which includes up to 100 ms of winding down.
-- luacheck: globals tid run slots_addr nslots quota answers statuses t_start t_end
local ffi = require "ffi"
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } zd_timespec;
  int clock_gettime(int clk, zd_timespec *ts);
  int getpid(void);
  int kill(int pid, int sig);
]]
local CLOCK_MONOTONIC, SIGINT = 1, 2

local MODE = os.getenv("BENCH_MODE") or "signup"
local TOTAL = tonumber(os.getenv("BENCH_TOTAL") or "1000")
local NTHREADS = tonumber(os.getenv("BENCH_THREADS") or "2")
local RUN = os.getenv("BENCH_RUN") or tostring(os.time())

local ts = ffi.new("zd_timespec")
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- setup() runs in wrk's main Lua state: it owns the per-thread "finished" flags, and hands
-- each thread their address (threads have Lua states of their own, in the same process).
local threads = {}
local slots = ffi.new("int[?]", NTHREADS)

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
  thread:set("run", RUN)
  thread:set("slots_addr", tonumber(ffi.cast("intptr_t", slots)))
  thread:set("nslots", NTHREADS)
end

local my_slots
function init()
  quota = math.ceil(TOTAL / nslots)
  answers = 0
  statuses = {}
  my_slots = ffi.cast("int *", slots_addr)
end

local path, headers
if MODE == "direct" then
  path = "/api/v2/users/create_or_update.json"
  headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
    -- admin@example.com/token:stand-in-token
    ["Authorization"] = "Basic YWRtaW5AZXhhbXBsZS5jb20vdG9rZW46c3RhbmQtaW4tdG9rZW4=",
  }
else
  path = "/signup"
  headers = { ["Content-Type"] = "application/json" }
end

local counter = 0
function request()
  if counter == 0 then t_start = now() end
  counter = counter + 1
  local user = string.format('{"email":"signup-%s-%d-%d@example.com","name":"Sign Up %d"}', run, tid, counter, counter)
  if MODE == "direct" then user = '{"user":' .. user .. '}' end
  return wrk.format("POST", path, headers, user)
end

function response(status)
  statuses[status] = (statuses[status] or 0) + 1
  answers = answers + 1
  if answers == quota then
    t_end = now()
    wrk.thread:stop()
    my_slots[tid - 1] = 1
    for i = 0, nslots - 1 do
      if my_slots[i] == 0 then return end
    end
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  elseif answers > quota then
    t_end = now()   -- answers read in the same loop turn still count
  end
end

function done(summary, latency)
  local bad, n, first, last, finished = 0, 0, math.huge, 0, true
  for _, t in ipairs(threads) do
    for code, k in pairs(t:get("statuses") or {}) do
      if code ~= 200 and code ~= 201 then bad = bad + k end
    end
    n = n + (t:get("answers") or 0)
    first = math.min(first, t:get("t_start") or math.huge)
    if t:get("t_end") then last = math.max(last, t:get("t_end")) else finished = false end
  end
  -- a thread that never got its share ran until wrk's -d: then wrk's own runtime is the truth
  local seconds = finished and last - first or summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("requests %d seconds %.6f rps %.1f p50_ms %.2f p99_ms %.2f non2xx %d socket_errors %d\n",
    n, seconds, n / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad,
    e.connect + e.read + e.write + e.timeout))
end
