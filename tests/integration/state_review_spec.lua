-- sync_users with a state: defects found by an adversarial review, pinned against the stand-in.
-- A person present in the input under another key than the state's (an external_id added or
-- removed) is no leaver even when their row is not confirmed this run; a person twice in one
-- input leaves Zendesk with the last row every night, as a run without a state does.
local standin = require "support.standin"
local zendesk = require "zendesk"
local tmpname = standin.tmpname

local function person(i, suffix)
  return { email = ("p%d@example.com"):format(i), external_id = ("EMP-%d"):format(i),
           name = ("Person %d%s"):format(i, suffix or "") }
end

local function people(n)
  local t = {}
  for i = 1, n do t[i] = person(i) end
  return t
end

local function by_email(s)
  local t = {}
  for _, u in ipairs(s:users()) do
    assert.is_nil(t[u.email], "two users with email " .. tostring(u.email))
    t[u.email] = u
  end
  return t
end

describe("sync_users with a state (review)", function()
  local s, client, path

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
    path = tmpname(".state")
    os.remove(path)
  end)
  after_each(function()
    for _, suf in ipairs{ "", "-wal", "-shm" } do os.remove(path .. suf) end
  end)

  local function run(rows, opts)
    opts = opts or {}
    opts.state = path
    opts.collect_rows = true
    opts.poll_interval = 0.02
    return client:sync_users(rows, opts)
  end

  it("an external_id added on an invalid row: the person keyed by email is present, not suspended", function()
    local rows = people(30)
    rows[5].external_id = nil
    assert(run(rows))                      -- the state keys person 5 by email
    rows = people(30)                      -- now with EMP-5, and a role Zendesk has not
    rows[5].role = "bogus"
    local r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r.invalid)
    assert.equal(0, r.suspended)
    assert.is_falsy(by_email(s)["p5@example.com"].suspended)
  end)

  it("an external_id dropped on an invalid row: the person keyed by external_id is present", function()
    assert(run(people(30)))                -- the state keys person 5 by EMP-5
    local rows = people(29)                -- person 30 did leave
    rows[5].external_id = nil
    rows[5].role = "bogus"
    -- a dry run counts one leaving
    local d = assert(client:sync_users(rows, { state = path, dry_run = true, leavers = "suspend" }))
    assert.equal(1, d.leaving)
    local r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r.invalid)
    assert.equal(1, r.suspended)
    local zd = by_email(s)
    assert.is_falsy(zd["p5@example.com"].suspended)
    assert.is_true(zd["p30@example.com"].suspended)
  end)

  it("refuses a report or journal on the state file, whatever the spelling, and leaves the state whole",
     function()
    local dir = path:match("^(.*)/") or "."
    local base = path:match("([^/]*)$")
    local st = dir .. "/" .. base .. ".csv"   -- a name a report may have
    local function runs(opts)
      opts.state, opts.collect_rows, opts.poll_interval = st, true, 0.02
      return client:sync_users(people(5), opts)
    end
    local ok, err = pcall(function()
      -- a first run, the state not there yet: the same refusal, and nothing is created
      local r0, e0 = runs{ report = dir .. "/./" .. base .. ".csv" }
      assert.is_nil(r0)
      assert.matches("is the state file", tostring(e0))
      assert.is_nil(io.open(st, "rb"))
      assert(runs{})
      for _, o in ipairs{ { report = st }, { report = dir .. "/./" .. base .. ".csv" }, { journal = st },
                          { journal = dir .. "/../" .. dir:match("([^/]*)$") .. "/" .. base .. ".csv" } } do
        local r, e = runs(o)
        assert.is_nil(r, next(o) .. " " .. tostring(o.report or o.journal))
        assert.equal("validation", e.kind)
        assert.matches("state", tostring(e))
        local f = assert(io.open(st, "rb"))
        assert.equal("SQLite format 3\0", f:read(16))
        f:close()
      end
      -- another name of the same file: a journal written through a link appends to the state
      assert(os.execute("ln -s '" .. st .. "' '" .. st .. ".link'"))
      local r1, e1 = runs{ journal = st .. ".link" }
      assert.is_nil(r1)
      assert.matches("is the state file", tostring(e1))
      local r = assert(runs{})
      assert.equal(5, r.unchanged)
    end)
    for _, suf in ipairs{ "", "-wal", "-shm", ".link" } do os.remove(st .. suf) end
    assert(ok, err)
  end)

  it("a resume refuses a state other than the one its journal's run used (or none, or one added)", function()
    local jpath = tmpname(".journal")
    local other = tmpname(".state")
    os.remove(other)
    local ok, err = pcall(function()
      assert(run(people(5)))
      -- a run with the state and a journal, stopped by a callback after its first job
      local crashed = pcall(run, people(250), { journal = jpath, on_row = function(o)
        if o.row == 1 then error("simulated crash") end
      end })
      assert.is_false(crashed)
      assert.equal("unfinished", require("zendesk.journal").state(jpath))
      for _, st in ipairs{ other, false } do
        local r, e = client:sync_users(people(250), { journal = jpath, resume = true, state = st or nil,
                                                      poll_interval = 0.02 })
        assert.is_nil(r, tostring(st))
        assert.matches("state", tostring(e))
      end
      assert.is_nil(io.open(other, "rb"))       -- refused before the other state was created
      -- the same state, spelled otherwise, resumes
      local r = assert(client:sync_users(people(250), { journal = jpath, resume = true,
                                                        state = path:gsub("^(.*)/", "%1/./"), poll_interval = 0.02 }))
      assert.equal(250, r.total)
      -- and a journal written without a state refuses one on resume
      local j2 = tmpname(".journal")
      pcall(client.sync_users, client, people(250), { journal = j2, poll_interval = 0.02, on_row = function(o)
        if o.row == 1 then error("simulated crash") end
      end })
      local r2, e2 = client:sync_users(people(250), { journal = j2, resume = true, state = path, poll_interval = 0.02 })
      os.remove(j2)
      assert.is_nil(r2)
      assert.matches("state", tostring(e2))
    end)
    os.remove(jpath)
    for _, suf in ipairs{ "", "-wal", "-shm" } do os.remove(other .. suf) end
    assert(ok, err)
  end)

  it("a person this tool suspended whose row says suspended = true stays suspended (the input's word)", function()
    assert(run(people(40)))
    local rows = people(40)
    table.remove(rows, 3)
    assert(run(rows, { leavers = "suspend" }))
    assert.is_true(by_email(s)["p3@example.com"].suspended)
    rows = people(40)
    rows[3].suspended = true
    local r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(0, r.restored)
    assert.is_true(by_email(s)["p3@example.com"].suspended)
    -- the row with suspended = false next: an ordinary change (the input suspended them last)
    rows[3].suspended = false
    r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r.updated)
    assert.is_false(by_email(s)["p3@example.com"].suspended)
  end)

  it("a leaver whose suspension Zendesk does not confirm stays active in the state and goes again", function()
    assert(run(people(40)))
    local zd = by_email(s)
    local gone = zd["p3@example.com"].id
    -- an agent deleted person 3 in Zendesk: the suspension of that id fails
    assert.equal(200, s:http("DELETE", "/api/v2/users/" .. gone .. ".json").status)
    local rows = people(40)
    table.remove(rows, 4)
    table.remove(rows, 3)
    local r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r.suspended)
    assert.equal(1, r.failed)
    for _, o in ipairs(r.rows) do
      if o.outcome == "failed" then assert.equal(gone, o.id) end
    end
    local st = assert(require("zendesk.state").open(path, { readonly = true }))
    assert.is_false(select(3, st:lookup("x:emp-3")))
    assert.is_true(select(3, st:lookup("x:emp-4")))
    st:close()
    local r2 = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r2.failed)
    assert.equal(0, r2.suspended)
  end)

  it("a row nested too deep or cyclic is that row's problem (invalid), not an error of the sync", function()
    local deep = {}
    local cur = deep
    for _ = 1, 80 do cur.x = {} cur = cur.x end
    local cyclic = {}
    cyclic.self = cyclic
    local rows = people(6)
    rows[2].user_fields = { deep = deep }
    rows[4].user_fields = { loop = cyclic }
    local ok, r = pcall(run, rows)
    assert.is_true(ok, tostring(r))
    assert(r)
    assert.equal(6, r.total)
    assert.equal(2, r.invalid)
    assert.equal(4, r.created)
    local bad = {}
    for _, o in ipairs(r.rows) do
      if o.outcome == "invalid" then bad[#bad + 1] = o.row end
    end
    table.sort(bad)
    assert.same({ 2, 4 }, bad)
    -- and from a file: an NDJSON row nested deeper than the state's hash goes, but not deeper than the reader's
    local nd = tmpname(".ndjson")
    local lines = {}
    for i = 1, 3 do
      local u = ('{"email":"n%d@example.com","name":"N%d"'):format(i, i)
      if i == 2 then u = u .. ',"user_fields":{"f":' .. ("["):rep(200) .. ("]"):rep(200) .. "}" end
      lines[i] = u .. "}"
    end
    standin.write_file(nd, table.concat(lines, "\n") .. "\n")
    local ok2, r2 = pcall(run, nd)
    os.remove(nd)
    assert.is_true(ok2, tostring(r2))
    assert(r2)
    assert.equal(3, r2.total)
    assert.equal(1, r2.invalid)
  end)

  it("an input that cannot be read to its end suspends nobody, whatever max_leavers allows", function()
    assert(run(people(30)))
    local js = tmpname(".json")
    local items = {}
    for i = 1, 10 do
      items[i] = ('{"email":"p%d@example.com","external_id":"EMP-%d","name":"Person %d"}'):format(i, i, i)
    end
    -- a JSON array cut inside its eleventh object: the reader cannot read it to its end
    standin.write_file(js, "[" .. table.concat(items, ",") .. ',{"email":"p11@exa')
    local r, err = run(js, { leavers = "suspend", max_leavers = "100%" })
    os.remove(js)
    assert.is_nil(r)
    assert.truthy(err)
    assert.equal(0, err.report.suspended)
    for _, q in ipairs(s:requests()) do
      assert.is_nil(q.path:find("/users/update_many", 1, true), "a suspension was sent: " .. q.path)
    end
    for _, u in ipairs(s:users()) do assert.is_falsy(u.suspended, u.email) end
  end)

  it("a stray quote that swallows the end of a CSV input suspends nobody, whatever max_leavers allows", function()
    assert(run(people(30)))
    local csv = tmpname(".csv")
    local lines = { "email,external_id,name" }
    for i = 1, 30 do
      lines[#lines + 1] = ("p%d@example.com,EMP-%d,%sPerson %d"):format(i, i, i == 27 and '"' or "", i)
    end
    standin.write_file(csv, table.concat(lines, "\n") .. "\n")
    local r, err = run(csv, { leavers = "suspend", max_leavers = "100%" })
    os.remove(csv)
    assert.is_nil(r)
    assert.matches("quoted field", tostring(err))
    assert.matches("nobody was suspended", tostring(err))
    assert.equal(0, err.report.suspended)
    for _, u in ipairs(s:users()) do assert.is_falsy(u.suspended, u.email) end
  end)

  it("the CLI: a stray quote's run exits 2 like the guard, and says nobody was suspended", function()
    local q = standin.shell_quote
    local ROOT = standin.ROOT
    local cli = "env LUA_PATH=" .. q(ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua;;")
      .. " LUA_CPATH=" .. q(ROOT .. "build/lua5.4/?.so;;")
      .. " ZENDESK_URL=" .. q(s.url) .. " ZENDESK_EMAIL=" .. q(standin.EMAIL)
      .. " ZENDESK_API_TOKEN=" .. q(standin.TOKEN) .. " lua5.4 " .. q(ROOT .. "bin/zendesk-sync")
    local csv = tmpname(".csv")
    local function write(quote_at)
      local lines = { "email,external_id,name" }
      for i = 1, 30 do
        lines[#lines + 1] = ("p%d@example.com,EMP-%d,%sPerson %d"):format(i, i, i == quote_at and '"' or "", i)
      end
      standin.write_file(csv, table.concat(lines, "\n") .. "\n")
    end
    local j1, j2 = tmpname(".journal"), tmpname(".journal")
    write(nil)
    local out, code = standin.sh(cli .. " -q --state " .. q(path) .. " --journal " .. q(j1) .. " " .. q(csv) .. " 2>&1")
    assert.equal(0, code, out)
    write(28)
    out, code = standin.sh(cli .. " -q --state " .. q(path) .. " --journal " .. q(j2)
      .. " --leavers suspend --max-leavers 100% " .. q(csv) .. " 2>&1")
    os.remove(csv)
    os.remove(j1)
    os.remove(j2)
    assert.equal(2, code, out)
    assert.matches("line 29: unterminated quoted field", out)
    assert.matches("nobody was suspended", out)
    assert.matches("this run: 0 created, 0 updated, 27 unchanged, 0 failed, 1 invalid; nobody suspended", out,
                   1, true)
    for _, u in ipairs(s:users()) do assert.is_falsy(u.suspended, u.email) end
  end)

  it("a state written before the alt column is upgraded by a run, and refused with a reason by a dry run",
     function()
    local sqlite = require "zendesk.sqlite"
    local state = require "zendesk.state"
    local db = assert(sqlite.open(path))
    assert(db:exec([[CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
      CREATE TABLE people(key TEXT PRIMARY KEY, id INTEGER NOT NULL, hash TEXT NOT NULL, at INTEGER NOT NULL,
        run INTEGER NOT NULL, suspended INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
      INSERT INTO meta VALUES ('version', '1');
      INSERT INTO people VALUES ('x:emp-1', 7, 'h', 1, 1, 0);]]))
    db:close()
    local st0, err = state.open(path, { readonly = true })
    assert.is_nil(st0)
    assert.matches("without %-%-dry%-run to upgrade", tostring(err))
    local st = assert(state.open(path, { url = "http://example" }))
    assert.equal(7, (st:lookup("x:emp-1")))
    assert.equal(1, st:leaving())
    st:close()
  end)

  it("a person twice in one input: Zendesk holds the last row after every run, as without a state", function()
    local function input()
      local rows = people(10)
      rows[#rows + 1] = person(3, " (second row)")   -- the same person again, later: the last word
      return rows
    end
    for night = 1, 3 do
      local r = assert(run(input()))
      assert.equal(11, r.total)
      assert.equal(0, r.failed)
      assert.equal("Person 3 (second row)", by_email(s)["p3@example.com"].name, "night " .. night)
    end
  end)
end)
