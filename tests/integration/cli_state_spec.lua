-- zendesk-sync --state (issue 16): a run killed with SIGKILL at several points and finished by
-- --resume leaves the state as if it had not been interrupted (every user once in the stand-in,
-- the state matching what it holds: a run after it sends nothing), every row once in the report;
-- --leavers suspend after a resume; the guard's exit status 2 and message; a dry run's counts.
local standin = require "support.standin"
local journal = require "zendesk.journal"
local state = require "zendesk.state"

local ROOT = standin.ROOT
local q = standin.shell_quote
local N = 3000

local count_matches = standin.count_matches

local function sleep(s) os.execute("sleep " .. s) end

describe("zendesk-sync --state", function()
  local s, dir, env, cli

  setup(function()
    s = standin.start()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. q(dir)))
    env = "env LUA_PATH=" .. q(ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua;;")
      .. " LUA_CPATH=" .. q(ROOT .. "build/lua5.4/?.so;;")
      .. " ZENDESK_URL=" .. q(s.url) .. " ZENDESK_EMAIL=" .. q(standin.EMAIL)
      .. " ZENDESK_API_TOKEN=" .. q(standin.TOKEN)
    cli = env .. " lua5.4 " .. q(ROOT .. "bin/zendesk-sync")
  end)
  teardown(function()
    s:stop()
    os.execute("rm -rf " .. q(dir))
  end)

  -- Starts a sync in the background, kills it with SIGKILL once the journal has `done` records.
  local function run_killed(args, jpath, done)
    os.remove(jpath)
    local out = standin.sh(cli .. " -q --journal " .. q(jpath) .. " " .. args .. " >/dev/null 2>&1 & echo $!")
    local pid = assert(tonumber(out:match("(%d+)")), out)
    local deadline = os.time() + 60
    while count_matches(jpath, '"t":"done"') < done do
      assert.is_true(os.time() < deadline, "the sync made no progress")
      sleep(0.02)
    end
    assert(os.execute("kill -9 " .. pid))
    sleep(0.2)
    assert.equal("unfinished", journal.state(jpath))
  end

  local function report_rows(path)
    local seen, n = {}, 0
    for line in io.lines(path) do
      local row, outcome = line:match("^(%d+),([%a_]+),")
      if row then
        assert.is_nil(seen[row], "row " .. row .. " twice in the report")
        seen[row], n = outcome, n + 1
      end
    end
    return seen, n
  end

  it("killed at several points then resumed: the state is as if uninterrupted", function()
    s:reset()
    s:config{ job_delay_ms = 30, per_user_limit = 0, rate_limit_per_minute = 0 }
    local input, st = dir .. "/users.csv", dir .. "/users.state"
    local jpath, report = dir .. "/users.journal", dir .. "/report.csv"
    assert(os.execute("lua5.4 " .. q(ROOT .. "bench/gen_users.lua") .. " " .. N .. " csv > " .. q(input)))

    for _, at in ipairs{ 1, 7, 8 } do   -- three points of the first run, each resumed then killed again
      if at == 1 then
        run_killed("--max-jobs 2 --state " .. q(st) .. " --report " .. q(report) .. " " .. q(input), jpath, at)
      else
        local out = standin.sh(cli .. " -q --max-jobs 2 --resume " .. q(jpath) .. " >/dev/null 2>&1 & echo $!")
        local pid = assert(tonumber(out:match("(%d+)")))
        local base = count_matches(jpath, '"t":"done"')
        local deadline = os.time() + 60
        while count_matches(jpath, '"t":"done"') < base + at do
          assert.is_true(os.time() < deadline, "the resume made no progress")
          sleep(0.02)
        end
        assert(os.execute("kill -9 " .. pid))
        sleep(0.2)
      end
    end
    local _, code = standin.sh(cli .. " -q --resume " .. q(jpath) .. " >/dev/null 2>&1")
    assert.equal(0, code)
    assert.equal("finished", journal.state(jpath))

    -- every user once in the stand-in, every row once in the report
    local zd, n = {}, 0
    for _, u in ipairs(s:users()) do
      assert.is_nil(zd[u.external_id], "twice in Zendesk: " .. tostring(u.external_id))
      zd[u.external_id], n = u, n + 1
    end
    assert.equal(N, n)
    local rows, nrows = report_rows(report)
    assert.equal(N, nrows)
    for _, o in pairs(rows) do assert.is_true(o == "created" or o == "updated", o) end

    -- the state holds every person with the id Zendesk holds
    local db = assert(state.open(st, { readonly = true }))
    assert.equal(N, db:count_all())
    for x, u in pairs(zd) do
      assert.equal(u.id, (db:lookup("x:" .. x:lower())), x)
    end
    db:close()

    -- as if uninterrupted: the same input again sends nothing
    local jobs = s:stats().jobs
    local out, code2 = standin.sh(cli .. " --state " .. q(st) .. " --journal " .. q(dir .. "/j2.journal") .. " "
      .. q(input) .. " 2>&1")
    assert.equal(0, code2, out)
    assert.matches(N .. " unchanged", out:gsub(",", ""))
    assert.equal(jobs, s:stats().jobs)
  end)

  it("a delta run (most rows unchanged) killed then resumed: every row once in the report", function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    local input, st = dir .. "/d.csv", dir .. "/d.state"
    local jpath, report = dir .. "/d2.journal", dir .. "/d2.csv"
    assert(os.execute("lua5.4 " .. q(ROOT .. "bench/gen_users.lua") .. " " .. N .. " csv > " .. q(input)))
    local _, code = standin.sh(cli .. " -q --state " .. q(st) .. " --journal " .. q(dir .. "/d1.journal") .. " "
      .. q(input) .. " >/dev/null 2>&1")
    assert.equal(0, code)
    -- night 2: every 5th row's name changed (600 rows, 6 jobs), the rest unchanged
    local night = dir .. "/d-night.csv"
    assert(os.execute("awk -F, 'NR > 1 && (NR - 1) % 5 == 0 { $1 = $1 \" Jr\" } { print }' OFS=, " .. q(input)
      .. " > " .. q(night)))
    s:config{ job_delay_ms = 100 }
    run_killed("--max-jobs 1 --state " .. q(st) .. " --report " .. q(report) .. " " .. q(night), jpath, 2)
    s:config{ job_delay_ms = 0 }
    local out, code2 = standin.sh(cli .. " -q --resume " .. q(jpath) .. " 2>&1")
    assert.equal(0, code2, out)
    local rows, n = report_rows(report)
    assert.equal(N, n)
    local by = {}
    for _, o in pairs(rows) do by[o] = (by[o] or 0) + 1 end
    assert.same({ updated = N / 5, unchanged = N - N / 5 }, by)
    local zd = 0
    for _ in ipairs(s:users()) do zd = zd + 1 end
    assert.equal(N, zd)
    -- as if uninterrupted: the same night again sends nothing
    local jobs = s:stats().jobs
    local out3, code3 = standin.sh(cli .. " -q --state " .. q(st) .. " --journal " .. q(dir .. "/d3.journal") .. " "
      .. q(night) .. " 2>&1")
    assert.equal(0, code3, out3)
    assert.equal(jobs, s:stats().jobs)
  end)

  it("dry run counts; the guard exits 2 and suspends nobody; --max-leavers lets them go", function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    local input, st = dir .. "/g.csv", dir .. "/g.state"
    assert(os.execute("lua5.4 " .. q(ROOT .. "bench/gen_users.lua") .. " 200 csv > " .. q(input)))
    local _, code = standin.sh(cli .. " -q --state " .. q(st) .. " --journal " .. q(dir .. "/g1.journal") .. " "
      .. q(input) .. " >/dev/null 2>&1")
    assert.equal(0, code)
    -- 20 of 200 removed (10% > 5%)
    local short = dir .. "/g-short.csv"
    assert(os.execute("head -n 181 " .. q(input) .. " > " .. q(short)))
    local dry = standin.sh(cli .. " -q --dry-run --state " .. q(st) .. " --leavers suspend " .. q(short) .. " 2>&1")
    assert.matches("0 new, 0 changed, 180 unchanged, 20 leaving", dry)
    local out, code2 = standin.sh(cli .. " -q --state " .. q(st) .. " --leavers suspend --journal "
      .. q(dir .. "/g2.journal") .. " " .. q(short) .. " 2>&1")
    assert.equal(2, code2, out)
    assert.matches("20 of the 200 people", out)
    assert.matches("%-%-max%-leavers 20", out)
    for _, u in ipairs(s:users()) do assert.is_falsy(u.suspended) end
    local out3, code3 = standin.sh(cli .. " -q --state " .. q(st) .. " --leavers suspend --max-leavers 20 --journal "
      .. q(dir .. "/g3.journal") .. " " .. q(short) .. " 2>&1")
    assert.equal(0, code3, out3)
    assert.matches("20 suspended", out3)
    local suspended = 0
    for _, u in ipairs(s:users()) do if u.suspended then suspended = suspended + 1 end end
    assert.equal(20, suspended)
  end)

  it("killed during the leavers stage then resumed: every leaver suspended once and reported once", function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    local input, st = dir .. "/l.csv", dir .. "/l.state"
    local jpath, report = dir .. "/l2.journal", dir .. "/l2.csv"
    assert(os.execute("lua5.4 " .. q(ROOT .. "bench/gen_users.lua") .. " 300 csv > " .. q(input)))
    local _, code = standin.sh(cli .. " -q --state " .. q(st) .. " --journal " .. q(dir .. "/l1.journal") .. " "
      .. q(input) .. " >/dev/null 2>&1")
    assert.equal(0, code)
    local short = dir .. "/l-short.csv"
    assert(os.execute("head -n 51 " .. q(input) .. " > " .. q(short)))   -- 250 of 300 leave: 3 jobs
    s:config{ job_delay_ms = 300 }
    local out = standin.sh(cli .. " -q --max-jobs 1 --state " .. q(st) .. " --leavers suspend --max-leavers 90% "
      .. "--journal " .. q(jpath) .. " --report " .. q(report) .. " " .. q(short) .. " >/dev/null 2>&1 & echo $!")
    local pid = assert(tonumber(out:match("(%d+)")), out)
    local function suspended()
      local n = 0
      for _, u in ipairs(s:users()) do if u.suspended then n = n + 1 end end
      return n
    end
    -- killed once the state records the first job's suspensions (the journal does not hold them)
    local function recorded()
      local db = state.open(st, { readonly = true })
      if not db then return 0 end
      -- a read may meet the writer's checkpoint (busy): then ask again
      local ok, n = pcall(function() return db:count_all() - db:count() end)
      db:close()
      return ok and n or 0
    end
    local deadline = os.time() + 60
    while recorded() < 100 do
      assert.is_true(os.time() < deadline, "no leaver was suspended")
      sleep(0.05)
    end
    assert(os.execute("kill -9 " .. pid))
    sleep(0.2)
    assert.is_true(suspended() < 250, "the leavers stage had finished before the kill: nothing was tested")
    assert.equal("unfinished", journal.state(jpath))
    s:config{ job_delay_ms = 0 }
    local out2, code2 = standin.sh(cli .. " -q --resume " .. q(jpath) .. " 2>&1")
    assert.equal(0, code2, out2)
    assert.equal(250, suspended())
    local rows, leavers, seen = 0, 0, {}
    for line in io.lines(report) do
      local row, outcome, id = line:match("^(%d*),([%a_]+),(%d*)")
      if outcome == "suspended" then
        assert.equal("", row)
        assert.is_nil(seen[id], "leaver " .. id .. " twice in the report")
        seen[id], leavers = true, leavers + 1
      elseif row and row ~= "" then
        rows = rows + 1
      end
    end
    assert.equal(50, rows)
    assert.equal(250, leavers)
    -- the state agrees: a run with the same input suspends nobody more and sends nothing
    local jobs = s:stats().jobs
    local out3, code3 = standin.sh(cli .. " -q --state " .. q(st) .. " --leavers suspend --journal "
      .. q(dir .. "/l3.journal") .. " " .. q(short) .. " 2>&1")
    assert.equal(0, code3, out3)
    assert.matches("0 suspended", out3)
    assert.equal(jobs, s:stats().jobs)
  end)
end)
