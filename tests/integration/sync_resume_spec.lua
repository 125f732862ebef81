-- The crash test: a real zendesk-sync process is killed with SIGKILL in the middle of a
-- 20,000-row sync, and --resume finishes it. Zendesk (the stand-in) must end up with every input
-- user exactly once, and the report must hold every row exactly once.
local standin = require "support.standin"
local journal = require "zendesk.journal"
local core = require "zendesk.core"

local ROOT = standin.ROOT
local q = standin.shell_quote
local N = 20000

local count_matches = standin.count_matches

local function sleep(s)
  os.execute("sleep " .. s)
end

describe("zendesk-sync killed with SIGKILL", function()
  local s, dir

  setup(function()
    s = standin.start()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. q(dir)))
  end)
  teardown(function()
    s:stop()
    os.execute("rm -rf " .. q(dir))
  end)

  it("is finished by --resume: every user once in Zendesk, every row once in the report", function()
    s:reset()
    s:config{ job_delay_ms = 40, per_user_limit = 0, rate_limit_per_minute = 0 }
    local input, jpath, report = dir .. "/users.csv", dir .. "/users.journal", dir .. "/report.csv"
    assert(os.execute("lua5.4 " .. q(ROOT .. "bench/gen_users.lua") .. " " .. N .. " csv > " .. q(input)))

    local env = "env LUA_PATH=" .. q(ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua;;")
      .. " LUA_CPATH=" .. q(ROOT .. "build/lua5.4/?.so;;")
      .. " ZENDESK_URL=" .. q(s.url) .. " ZENDESK_EMAIL=" .. q(standin.EMAIL)
      .. " ZENDESK_API_TOKEN=" .. q(standin.TOKEN)
    local cli = "lua5.4 " .. q(ROOT .. "bin/zendesk-sync")
    local out = standin.sh(env .. " " .. cli .. " -q --journal " .. q(jpath) .. " --report " .. q(report) .. " "
      .. q(input) .. " >/dev/null 2>&1 & echo $!")
    local pid = assert(tonumber(out:match("(%d+)")), out)

    -- kill it once the journal shows some finished jobs, well before the end
    local deadline = os.time() + 60
    while count_matches(jpath, '"t":"done"') < 15 do
      assert.is_true(os.time() < deadline, "the sync made no progress")
      sleep(0.05)
    end
    assert(os.execute("kill -9 " .. pid))
    sleep(0.2)
    -- gone, or a zombie nobody reaps yet (its parent shell has exited)
    local stat = standin.sh("ps -o stat= -p " .. pid):gsub("%s+", "")
    assert.is_true(stat == "" or stat:sub(1, 1) == "Z", "the sync survived kill -9")
    assert.equal("unfinished", journal.state(jpath))
    local done_before = count_matches(jpath, '"t":"done"')
    assert.is_true(done_before < N / 100, "the sync had finished before it was killed: nothing was tested")

    local _, code = standin.sh(env .. " " .. cli .. " -q --resume " .. q(jpath) .. " --report " .. q(report)
      .. " >/dev/null 2>&1")
    assert.equal(0, code)
    assert.equal("finished", journal.state(jpath))

    -- Zendesk holds exactly the input users
    local want = {}
    for line in io.lines(input) do
      local email = line:match("^[^,]*,([^,]+),")
      if email and email ~= "email" then want[email] = true end
    end
    local users = s:users()
    assert.equal(N, #users)
    local seen = {}
    for _, u in ipairs(users) do
      assert.is_true(want[u.email] or false, "unexpected user " .. tostring(u.email))
      assert.is_nil(seen[u.email], "user " .. tostring(u.email) .. " created twice")
      seen[u.email] = true
    end

    -- the report has each row once, and each with a final outcome
    local rows, n = {}, 0
    for line in io.lines(report) do
      local row, outcome = line:match("^(%d+),(%a+),")
      if row then
        row = tonumber(row)
        assert.is_nil(rows[row], "row " .. row .. " twice in the report")
        assert.is_true(outcome == "created" or outcome == "updated", "row " .. row .. ": " .. outcome)
        rows[row] = true
        n = n + 1
      end
    end
    assert.equal(N, n)
    for i = 1, N do assert.is_true(rows[i] or false, "row " .. i .. " missing from the report") end

    -- and no row whose result the journal knew was sent again: after the resume record, no batch
    -- (written before each submission) holds a row finished before it
    local known, resumed, batches_after = {}, false, 0
    for line in io.lines(jpath) do
      local rec = core.decode(line)
      if type(rec) == "table" then
        if rec.t == "resume" then
          resumed = true
        elseif rec.t == "done" and not resumed then
          for _, o in ipairs(rec.out) do known[o.r] = true end
        elseif rec.t == "batch" and resumed then
          batches_after = batches_after + 1
          for _, r in ipairs(journal.decode_rows(rec.rows)) do
            assert.is_nil(known[r], "row " .. r .. " was known and sent again")
          end
        end
      end
    end
    assert.is_true(resumed)
    assert.is_true(next(known) ~= nil and batches_after > 0)
  end)

  describe("through the API", function()
    local zendesk = require "zendesk"
    local client

    before_each(function()
      s:reset()
      s:config{ job_delay_ms = 50, per_user_limit = 0, rate_limit_per_minute = 0 }
      client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 1 }
    end)
    after_each(function() client:close() end)

    local function rows(n)
      local t = {}
      for i = 1, n do t[i] = { email = "api" .. i .. "@example.com", name = "Api " .. i } end
      return t
    end

    -- Stops the sync right after its first round of submissions, as a crash would.
    local function crash_after_submitting(input, jpath, rep)
      local ok, err = pcall(client.sync_users, client, input, {
        journal = jpath, report = rep, batch_size = 10, progress_interval = 0,
        on_progress = function(p) if p.in_flight > 0 then error("simulated crash") end end,
      })
      assert.is_false(ok)
      assert.matches("simulated crash", tostring(err))
      assert.equal("unfinished", journal.state(jpath))
    end

    local function posts()
      local n = 0
      for _, r in ipairs(s:requests()) do
        if r.method == "POST" and r.path:find("create_or_update_many", 1, true) then n = n + 1 end
      end
      return n
    end

    local function report_rows(rep)
      local seen, n = {}, 0
      for line in io.lines(rep) do
        local row = tonumber(line:match("^(%d+),"))
        if row then
          assert.is_nil(seen[row], "row " .. row .. " twice in the report")
          seen[row], n = true, n + 1
        end
      end
      return n
    end

    it("polls the jobs a stopped run submitted instead of sending their rows again", function()
      local input, jpath, rep = rows(30), dir .. "/p.journal", dir .. "/p.csv"
      crash_after_submitting(input, jpath, rep)
      assert.equal(3, posts())
      local report = assert(client:sync_users(input, { journal = jpath, report = rep, resume = true }))
      assert.equal(30, report.created)
      assert.equal(3, posts(), "rows of submitted jobs were sent again")
      assert.equal(30, report_rows(rep))
      assert.equal(30, #s:users())
    end)

    it("sends again the rows of submitted jobs that are gone when it resumes", function()
      local input, jpath, rep = rows(30), dir .. "/g.journal", dir .. "/g.csv"
      crash_after_submitting(input, jpath, rep)
      s:reset()   -- the jobs (and the users) vanish
      s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
      local report = assert(client:sync_users(input, { journal = jpath, report = rep, resume = true,
                                                       not_found_grace = 0.2, poll_interval = 0.05 }))
      assert.equal(30, report.created)
      assert.equal(30, report_rows(rep))
      assert.equal(30, #s:users())
    end)
  end)
end)
