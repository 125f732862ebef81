-- client:sync_users against the stand-in over real HTTP: every row ends in exactly one outcome
-- mapped from its job's result, duplicate users are never in flight together, TooManyJobs is
-- waited out, lost jobs go again once, every source kind streams, dry runs send nothing, and
-- the report and journal files are private and complete.
local standin = require "support.standin"
local zendesk = require "zendesk"
local core = require "zendesk.core"
local journal = require "zendesk.journal"
local tmpname, read_file, write_file, mode_of = standin.tmpname, standin.read_file, standin.write_file, standin.mode_of

local function by_row(report)
  local t = {}
  for _, o in ipairs(report.rows) do
    assert.is_nil(t[o.row], "row " .. o.row .. " has two outcomes")
    t[o.row] = o
  end
  return t
end

local function users_by_email(s)
  local t = {}
  for _, u in ipairs(s:users()) do
    if u.email then t[u.email] = u end
  end
  return t
end

-- The create_or_update_many bodies the stand-in received, decoded, in arrival order.
local function bulk_bodies(s)
  local out = {}
  for _, r in ipairs(s:requests()) do
    if r.method == "POST" and r.path:find("create_or_update_many", 1, true) then
      out[#out + 1] = standin.decode(r.body).users
    end
  end
  return out
end

describe("sync_users", function()
  local s, client

  setup(function() s = standin.start() end)
  teardown(function()
    if client then client:close() end
    s:stop()
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    if client then client:close() end
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 2,
                          retry_base_delay = 0.05 }
  end)

  it("maps every job result back to its row: created, updated, failed, invalid, skipped", function()
    local old = assert(client:upsert_user{ email = "u2@example.com", name = "Old name" })
    local rows = {
      { email = "new1@example.com", name = "New 1" },                  -- 1 created
      { email = "U2@example.com", name = "Two" },                       -- 2 updated (case-insensitive)
      { email = "bad", name = "Bad" },                                  -- 3 invalid locally
      { email = "noname@example.com" },                                 -- 4 failed in the job (no name)
      { external_id = "ext-5", name = "Five" },                         -- 5 created
      { name = "Nobody" },                                              -- 6 invalid: nothing to match on
      { email = "skip@example.com", name = "Skip" },                    -- 7 skipped by the filter
      { email = "new8@example.com", name = "Eight", favourite = "x" },  -- 8 invalid: unknown field
      { email = "new9@example.com", name = "Nine", role = "agent" },    -- 9 created
    }
    local seen = {}
    local report = assert(client:sync_users(rows, {
      batch_size = 2, collect_rows = true,
      filter = function(u) return u.email ~= "skip@example.com" end,
      on_row = function(o) seen[#seen + 1] = o.row end,
    }))
    assert.same({ created = 3, updated = 1, failed = 1, invalid = 3, skipped = 1, total = 9 },
      { created = report.created, updated = report.updated, failed = report.failed, invalid = report.invalid,
        skipped = report.skipped, total = report.total })
    local r = by_row(report)
    assert.equal("created", r[1].outcome)
    assert.equal("updated", r[2].outcome)
    assert.equal("invalid", r[3].outcome)
    assert.matches("row 3%.email", r[3].reason)
    assert.equal("failed", r[4].outcome)
    assert.is_string(r[4].error)
    assert.matches("Name", r[4].details)
    assert.equal("created", r[5].outcome)
    assert.equal("invalid", r[6].outcome)
    assert.equal("skipped", r[7].outcome)
    assert.equal("invalid", r[8].outcome)
    assert.matches("favourite", r[8].reason)
    assert.equal("created", r[9].outcome)
    table.sort(seen)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, seen)

    local stored = users_by_email(s)
    assert.equal(r[1].id, stored["new1@example.com"].id)
    assert.equal("integer", math.type(r[1].id))
    assert.equal(old.id, r[2].id)
    assert.equal("Two", stored["u2@example.com"].name)
    assert.equal(r[9].id, stored["new9@example.com"].id)
    assert.equal("agent", stored["new9@example.com"].role)
    assert.is_nil(stored["noname@example.com"])
    assert.is_nil(stored["skip@example.com"])
    assert.is_nil(stored["new8@example.com"])
    local ext5
    for _, u in ipairs(s:users()) do if u.external_id == "ext-5" then ext5 = u end end
    assert.equal(r[5].id, ext5.id)
    -- invalid and skipped rows were never sent
    for _, body in ipairs(bulk_bodies(s)) do
      for _, u in ipairs(body) do
        assert.is_not.equal("bad", u.email)
        assert.is_not.equal("skip@example.com", u.email)
        assert.is_not.equal("Nobody", u.name)
      end
    end
  end)

  it("never puts two rows of one user in the same job or in two jobs in flight at once", function()
    s:config{ job_delay_ms = 150 }
    -- watch the rounds: which job each submission became and when each was seen completed
    local real = client._core
    local calls, completed_at = 0, {}
    local submitted = {}   -- {call, job id, keys}
    client._core = setmetatable({
      request_many = function(_, reqs)
        calls = calls + 1
        local res = real:request_many(reqs)
        for i, q in ipairs(reqs) do
          local v = res[i].value
          if q[1] == "POST" and v and v.job_status then
            local keys = {}
            for _, u in ipairs(q[3].users) do
              if u.email then keys[#keys + 1] = "e:" .. u.email:lower() end
              if u.external_id then keys[#keys + 1] = "x:" .. tostring(u.external_id):lower() end
            end
            submitted[#submitted + 1] = { call = calls, id = v.job_status.id, keys = keys }
          elseif q[1] == "GET" and v then
            for _, js in ipairs(v.job_statuses) do
              if js.status == "completed" and not completed_at[js.id] then completed_at[js.id] = calls end
            end
          end
        end
        return res
      end,
    }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })

    local rows = {
      { email = "a@example.com", name = "A1" }, { email = "A@Example.com", name = "A2" },
      { email = "b@example.com", name = "B" }, { external_id = "X-1", name = "X1" },
      { external_id = "x-1", name = "X2" }, { email = "c@example.com", name = "C" },
      { email = "a@EXAMPLE.com", name = "A3" }, { email = "d@example.com", external_id = "X-1", name = "X3" },
      { email = "e@example.com", name = "E" }, { email = "f@example.com", name = "F" },
    }
    local report = client:sync_users(rows, { batch_size = 3, max_jobs = 5 })
    client._core = real
    assert.is_table(report)
    assert.equal(10, report.total)
    assert.equal(0, report.failed)

    -- in the stand-in's record: no body names one user twice
    local bodies = bulk_bodies(s)
    assert.equal(4, #bodies)   -- {1,3,4} {6,9,10}, then {2,5} once 1 and 4 are done, then {7,8}
    for _, body in ipairs(bodies) do
      local keys = {}
      for _, u in ipairs(body) do
        for _, k in ipairs{ u.email and "e:" .. u.email:lower(), u.external_id and "x:" .. u.external_id:lower() } do
          if k then
            assert.is_nil(keys[k], "one job names " .. k .. " twice")
            keys[k] = true
          end
        end
      end
    end
    -- and a later job naming a user went only after the earlier job naming it had completed
    for i = 1, #submitted do
      for j = i + 1, #submitted do
        local a, b = submitted[i], submitted[j]
        local shared = false
        for _, ka in ipairs(a.keys) do
          for _, kb in ipairs(b.keys) do shared = shared or ka == kb end
        end
        if shared then
          assert.is_truthy(completed_at[a.id], "job " .. a.id .. " never seen completed")
          assert.is_true(b.call > completed_at[a.id],
            "job " .. b.id .. " was submitted while " .. a.id .. " (same user) was in flight")
        end
      end
    end
    -- the input order of one user's rows is kept: the last row wins
    local stored = users_by_email(s)
    assert.equal("A3", stored["a@example.com"].name)
    local x1
    for _, u in ipairs(s:users()) do if u.external_id == "X-1" or u.external_id == "x-1" then x1 = u end end
    assert.equal("X3", x1.name)
    assert.equal(1, #(function()
      local n = {}
      for _, u in ipairs(s:users()) do if u.email == "a@example.com" then n[#n + 1] = u end end
      return n
    end)())
  end)

  it("waits for a job slot when Zendesk answers TooManyJobs, and sends each row once", function()
    s:config{ max_jobs = 2, job_delay_ms = 100 }
    local rows = {}
    for i = 1, 200 do rows[i] = { email = "bp" .. i .. "@example.com", name = "BP " .. i } end
    local report, err = client:sync_users(rows, { batch_size = 20, max_jobs = 6, collect_rows = true })
    assert.is_table(report, tostring(err))
    assert.equal(200, report.created)
    assert.equal(0, report.failed)
    local st = s:stats()
    assert.is_true(st.too_many_jobs >= 1, "the stand-in never refused a job: nothing was tested")
    local stored = users_by_email(s)
    for i = 1, 200 do assert.is_table(stored["bp" .. i .. "@example.com"]) end
    assert.equal(200, #s:users())
    local r = by_row(report)
    for i = 1, 200 do assert.equal("created", r[i].outcome) end
  end)

  it("resubmits the rows of a failed job once", function()
    s:fault{ job = "failed", count = 1 }
    local rows = {}
    for i = 1, 4 do rows[i] = { email = "f" .. i .. "@example.com", name = "F" .. i } end
    local report = assert(client:sync_users(rows, { batch_size = 4 }))
    assert.equal(4, report.created)
    assert.equal(4, report.resubmitted)
    assert.equal(2, #bulk_bodies(s))
    assert.equal(4, #s:users())
  end)

  it("fails the rows of a job killed again after its resubmission, with the reason", function()
    s:fault{ job = "killed", count = 2 }
    local rows = {}
    for i = 1, 3 do rows[i] = { email = "k" .. i .. "@example.com", name = "K" .. i } end
    local report = assert(client:sync_users(rows, { batch_size = 3, collect_rows = true }))
    assert.equal(3, report.failed)
    assert.equal(2, #bulk_bodies(s))
    for _, o in ipairs(report.rows) do
      assert.equal("failed", o.outcome)
      assert.matches("killed", o.reason)
      assert.matches("resubmitted once", o.reason)
    end
  end)

  it("names each row's email and external_id as the input wrote them, whatever Zendesk's answer holds", function()
    s:fault{ job = "killed", count = 2 }
    local rows = {
      { email = "K1@example.com", external_id = "EXT-K1", name = "K1" },
      { external_id = "ext-k2", name = "K2" },
    }
    local report = assert(client:sync_users(rows, { batch_size = 2, collect_rows = true }))
    local r = by_row(report)
    -- a killed job has no per-row results: only the input can name the rows
    assert.equal("failed", r[1].outcome)
    assert.equal("K1@example.com", r[1].email)
    assert.equal("EXT-K1", r[1].external_id)
    assert.equal("ext-k2", r[2].external_id)
    assert.is_nil(r[2].email)
    -- Zendesk answers the stored (lower-case) address; the report keeps the row's own spelling
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    assert(client:upsert_user{ email = "case@example.com", name = "Case" })
    report = assert(client:sync_users({ { email = "CASE@Example.com", name = "Case 2" } }, { collect_rows = true }))
    assert.equal("updated", report.rows[1].outcome)
    assert.equal("CASE@Example.com", report.rows[1].email)
  end)

  it("resubmits the rows of a job that expired before its results were read", function()
    s:config{ job_expiry_s = 0 }
    local report = assert(client:sync_users({ { email = "gone@example.com", name = "Gone" } },
      { not_found_grace = 0.2, poll_interval = 0.05, collect_rows = true }))
    assert.equal(1, report.failed)
    assert.equal(2, #bulk_bodies(s))
    assert.matches("expired", report.rows[1].reason)
  end)

  it("sends again, once the first copy would be done, a batch whose submission answer was unreadable", function()
    s:fault{ path = "/api/v2/users/create_or_update_many", action = "invalid_json", count = 1, after = 1 }
    local rows = {}
    for i = 1, 6 do rows[i] = { email = "u" .. i .. "@example.com", name = "U" .. i } end
    local report = assert(client:sync_users(rows, { batch_size = 2, max_jobs = 1 }))
    assert.equal(6, report.created)
    assert.equal(2, report.resubmitted)
    assert.equal(4, #bulk_bodies(s))
    assert.equal(6, #s:users())
  end)

  it("gives up on a job stuck without progress, without sending its rows again", function()
    s:config{ job_delay_ms = 30000 }
    local report = assert(client:sync_users({ { email = "stuck@example.com", name = "Stuck" } },
      { job_timeout = 0.5, poll_interval = 0.1, max_poll_interval = 0.2, collect_rows = true }))
    assert.equal(1, report.failed)
    assert.equal("JobTimeout", report.rows[1].error)
    assert.matches("no progress", report.rows[1].reason)
    assert.equal(1, #bulk_bodies(s))
  end)

  it("marks the rows a job answered no result for as failed instead of dropping them", function()
    local real = client._core
    client._core = setmetatable({
      request_many = function(_, reqs)
        local res = real:request_many(reqs)
        for _, r in ipairs(res) do
          local list = r.value and r.value.job_statuses
          for _, js in ipairs(list or {}) do
            if js.status == "completed" then js.results[#js.results] = nil end
          end
        end
        return res
      end,
    }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
    local rows = {}
    for i = 1, 3 do rows[i] = { email = "m" .. i .. "@example.com", name = "M" .. i } end
    local report = client:sync_users(rows, { batch_size = 3, collect_rows = true })
    client._core = real
    assert.equal(2, report.created)
    assert.equal(1, report.failed)
    local r = by_row(report)
    assert.equal("failed", r[3].outcome)
    assert.matches("no result for this row", r[3].reason)
  end)

  describe("streams every kind of source", function()
    local function check(report, n)
      assert.is_table(report)
      assert.equal(n, report.created)
      local stored = users_by_email(s)
      for i = 1, n do assert.is_table(stored["src" .. i .. "@example.com"], "src" .. i) end
    end

    it("CSV, with a custom column mapping and tag separator", function()
      local path = tmpname(".csv")
      write_file(path, "Full Name,Mail,Labels,Ignored\n"
        .. "Src One,src1@example.com,a|b,x\nSrc Two,src2@example.com,c,y\n\"Src, Three\",src3@example.com,,z\n")
      local report = client:sync_users(path, { columns = { ["Full Name"] = "name", Mail = "email", Labels = "tags",
                                                           Ignored = false }, tag_separator = "|" })
      os.remove(path)
      check(report, 3)
      local u = users_by_email(s)["src1@example.com"]
      assert.same({ "a", "b" }, u.tags)
      assert.equal("Src, Three", users_by_email(s)["src3@example.com"].name)
    end)

    it("a JSON array", function()
      local path = tmpname(".json")
      write_file(path, '[{"email":"src1@example.com","name":"One"},\n{"email":"src2@example.com","name":"Two"}]')
      check(client:sync_users(path), 2)
      os.remove(path)
    end)

    it("NDJSON, including a broken line", function()
      local path = tmpname(".ndjson")
      write_file(path, '{"email":"src1@example.com","name":"One"}\n{"email": oops}\n{"email":"src2@example.com","name":"Two"}\n')
      local report = client:sync_users(path)
      os.remove(path)
      check(report, 2)
      assert.equal(1, report.invalid)
      assert.equal(3, report.total)
    end)

    it("a file handle with an explicit format", function()
      local path = tmpname(".txt")
      write_file(path, "name,email\nOne,src1@example.com\n")
      local f = assert(io.open(path, "rb"))
      check(client:sync_users(f, { format = "csv" }), 1)
      f:close()
      os.remove(path)
    end)

    it("a Lua iterator", function()
      local i = 0
      local report = client:sync_users(function()
        i = i + 1
        if i <= 4 then return { email = "src" .. i .. "@example.com", name = "It " .. i } end
      end)
      check(report, 4)
    end)
  end)

  it("dry_run validates every row and sends nothing", function()
    local seen = {}
    local report = assert(client:sync_users({
      { email = "d1@example.com", name = "D1" }, { email = "nope", name = "D2" },
    }, { dry_run = true, on_row = function(o) seen[#seen + 1] = o end }))
    assert.equal(1, report.would_send)
    assert.equal(1, report.invalid)
    assert.equal("would_send", seen[1].outcome)
    assert.equal("d1@example.com", seen[1].user.email)
    for _, r in ipairs(s:requests()) do
      assert.is_nil(r.path:find("^/api/"), "a dry run sent " .. r.method .. " " .. r.path)
    end
    assert.equal(0, #s:users())
    -- and without any client at all
    local r2 = assert(require("zendesk.sync").run(nil, { { email = "d3@example.com" } }, { dry_run = true }))
    assert.equal(1, r2.would_send)
  end)

  for _, ext in ipairs{ ".csv", ".json" } do
    it("writes a " .. ext .. " report with every row once, mode 0600, and a private journal", function()
      local rep, jpath = tmpname(ext), tmpname(".journal")
      local rows = {}
      for i = 1, 250 do rows[i] = { email = "r" .. i .. "@example.com", name = "R, \"" .. i .. "\"" } end
      rows[7] = { email = "broken", name = "x" }
      local report = assert(client:sync_users(rows, { report = rep, journal = jpath, batch_size = 40,
                                                      collect_rows = false }))
      assert.is_nil(report.rows)
      assert.equal(249, report.created)
      assert.equal("600", mode_of(rep))
      assert.equal("600", mode_of(jpath))
      local seen = {}
      if ext == ".csv" then
        local lines = {}
        for line in io.lines(rep) do lines[#lines + 1] = line end
        assert.equal("row,outcome,id,email,external_id,error,details,reason", lines[1])
        for i = 2, #lines do
          local n, outcome = lines[i]:match("^(%d+),(%a+),")
          n = tonumber(n)
          assert.is_nil(seen[n], "row " .. tostring(n) .. " twice")
          seen[n] = outcome
        end
      else
        local list = assert(core.decode(read_file(rep)))
        for _, o in ipairs(list) do
          assert.is_nil(seen[o.row], "row " .. o.row .. " twice")
          seen[o.row] = o.outcome
          if o.outcome == "created" then assert.equal("integer", math.type(o.id)) end
        end
      end
      for i = 1, 250 do assert.equal(i == 7 and "invalid" or "created", seen[i], "row " .. i) end
      local j = read_file(jpath)
      assert.is_nil(j:find(standin.TOKEN, 1, true))
      assert.is_nil(j:find(standin.BASIC:sub(7), 1, true))
      assert.equal("finished", journal.state(jpath))
      os.remove(rep)
      os.remove(jpath)
    end)
  end

  it("stops on a fatal error with nil, err after journalling, and a resume finishes the work", function()
    s:config{ imports_enabled = false }
    local jpath, rep = tmpname(".journal"), tmpname(".csv")
    local rows = {}
    for i = 1, 30 do rows[i] = { email = "fx" .. i .. "@example.com", name = "FX" .. i } end
    rows[3] = { email = "not valid", name = "x" }
    local report, err = client:sync_users(rows, { journal = jpath, report = rep, batch_size = 10 })
    assert.is_nil(report)
    assert.equal("auth", err.kind)
    assert.equal(403, err.status)
    assert.equal("unfinished", journal.state(jpath))
    assert.matches('"t":"fatal"', read_file(jpath))

    s:config{ imports_enabled = true }
    local progress
    report = assert(client:sync_users(rows, { journal = jpath, report = rep, resume = true, batch_size = 10,
                                              on_progress = function(p) progress = p end }))
    assert.equal(29, report.created)
    assert.equal(1, report.invalid)
    assert.equal(30, report.total)
    assert.is_true(progress.final)
    assert.equal(30, progress.done)
    local n = 0
    local seen = {}
    for line in io.lines(rep) do
      local row = tonumber(line:match("^(%d+),"))
      if row then
        assert.is_nil(seen[row], "row " .. row .. " twice in the report")
        seen[row] = true
        n = n + 1
      end
    end
    assert.equal(30, n)
    assert.equal(29, #s:users())
    os.remove(jpath)
    os.remove(rep)
  end)

  it("raises on misuse", function()
    -- each names what is wrong (busted strips the position before matching)
    local at = "^"
    assert.error_matches(function() client:sync_users({}, { batch_size = 101 }) end,
      at .. "sync_users: option 'batch_size' must be an integer from 1 to 100$")
    assert.error_matches(function() client:sync_users({}, { bogus = 1 }) end, at .. "sync_users: unknown option 'bogus'$")
    assert.error_matches(function() client:sync_users({}, { resume = true }) end,
      at .. "sync_users: option 'resume' needs option 'journal'")
    assert.error_matches(function() client:sync_users({}, { report = "out.txt" }) end,
      at .. "sync_users: option 'report' must name a %.csv or %.json file$")
    assert.error_matches(function() client:sync_users(42) end,
      "bad argument #1 .*path, file handle, array or iterator expected, got number")
  end)
end)
