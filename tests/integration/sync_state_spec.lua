-- sync_users with a state store (issue 16) against the stand-in: a first run creates everyone,
-- a second with no change sends no bulk job, a third sends only what changed and suspends only
-- who left, a returner is restored, the guard suspends nobody, a state of another account is
-- refused, a dry run counts without writing, and the state records only what Zendesk confirmed.
local standin = require "support.standin"
local zendesk = require "zendesk"
local state = require "zendesk.state"
local tmpname = standin.tmpname

local function person(i, suffix)
  return { email = ("p%d@example.com"):format(i), external_id = ("EMP-%d"):format(i),
           name = ("Person %d%s"):format(i, suffix or "") }
end

local function people(n, opts)
  opts = opts or {}
  local t = {}
  for i = 1, n do
    if not (opts.drop and opts.drop[i]) then
      t[#t + 1] = person(i, opts.change and opts.change[i] and " (changed)" or nil)
    end
  end
  return t
end

-- What the stand-in received since the last mark: bulk upsert bodies and update_many paths.
local function traffic(s, since)
  local upserts, updates = {}, {}
  local reqs = s:requests()
  for i = (since or 0) + 1, #reqs do
    local r = reqs[i]
    if r.method == "POST" and r.path:find("create_or_update_many", 1, true) then
      for _, u in ipairs(standin.decode(r.body).users) do upserts[#upserts + 1] = u end
    elseif r.method == "PUT" and r.path:find("update_many", 1, true) then
      updates[#updates + 1] = { path = r.path, query = r.query, body = standin.decode(r.body) }
    end
  end
  return upserts, updates, #reqs
end

local function by_external(s)
  local t, n = {}, 0
  for _, u in ipairs(s:users()) do
    if u.external_id then
      assert.is_nil(t[u.external_id], "two users with external_id " .. tostring(u.external_id))
      t[u.external_id] = u
      n = n + 1
    end
  end
  return t, n
end

local function outcomes(report)
  local t = {}
  for _, o in ipairs(report.rows) do t[o.outcome] = (t[o.outcome] or 0) + 1 end
  return t
end

describe("sync_users with a state", function()
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
    opts.state = opts.state == nil and path or opts.state or nil
    opts.collect_rows = true
    opts.poll_interval = 0.02
    return client:sync_users(rows, opts)
  end

  it("creates everyone, then sends nothing when nothing changed, then only what changed; suspends only leavers",
     function()
    local r1 = assert(run(people(60)))
    assert.equal(60, r1.created)
    assert.equal(60, r1.new)
    local users, n = by_external(s)
    assert.equal(60, n)

    local jobs_before = s:stats().jobs
    local _, _, mark = traffic(s)
    local r2 = assert(run(people(60), { leavers = "suspend" }))
    assert.equal(60, r2.unchanged)
    assert.equal(0, r2.created + r2.updated)
    assert.equal(0, r2.jobs)
    assert.equal(jobs_before, s:stats().jobs)   -- no bulk job at all
    local up2, upd2
    up2, upd2, mark = traffic(s, mark)
    assert.equal(0, #up2)
    assert.equal(0, #upd2)

    -- 2 changed, 2 removed (of 60: within the default 5% guard)
    local r3 = assert(run(people(60, { change = { [5] = true, [7] = true }, drop = { [10] = true, [11] = true } }),
                          { leavers = "suspend" }))
    local up3, upd3 = traffic(s, mark)
    assert.equal(2, #up3)
    local sent = { up3[1].external_id, up3[2].external_id }
    table.sort(sent)
    assert.same({ "EMP-5", "EMP-7" }, sent)
    assert.equal(2, r3.updated)
    assert.equal(56, r3.unchanged)
    assert.equal(2, r3.suspended)
    assert.equal(1, #upd3)
    assert.same({ user = { suspended = true } }, upd3[1].body)
    local ids = {}
    for id in assert(upd3[1].query:match("ids=([%d,%%C]+)"), upd3[1].query):gsub("%%2C", ","):gmatch("%d+") do
      ids[tonumber(id)] = true
    end
    assert.same({ [users["EMP-10"].id] = true, [users["EMP-11"].id] = true }, ids)
    local after = by_external(s)
    for x, u in pairs(after) do
      assert.equal(x == "EMP-10" or x == "EMP-11", u.suspended == true, x)
    end
    local susp = {}
    for _, o in ipairs(r3.rows) do
      if o.outcome == "suspended" then susp[#susp + 1] = o.external_id end
    end
    table.sort(susp)
    assert.same({ "emp-10", "emp-11" }, susp)

    -- a fourth run with the same input: nobody is suspended twice, nothing is sent
    local _, _, mark4 = traffic(s)
    local r4 = assert(run(people(60, { change = { [5] = true, [7] = true }, drop = { [10] = true, [11] = true } }),
                          { leavers = "suspend" }))
    assert.equal(0, r4.suspended)
    local up4, upd4 = traffic(s, mark4)
    assert.equal(0, #up4 + #upd4)
  end)

  it("restores a returner: sent with suspended = false even when nothing else changed", function()
    assert(run(people(40)))
    assert(run(people(40, { drop = { [3] = true } }), { leavers = "suspend" }))
    assert.is_true(by_external(s)["EMP-3"].suspended)
    local _, _, mark = traffic(s)
    local r = assert(run(people(40), { leavers = "suspend" }))
    local up = traffic(s, mark)
    assert.equal(1, #up)
    assert.equal("EMP-3", up[1].external_id)
    assert.is_false(up[1].suspended)
    assert.equal(1, r.restored)
    assert.equal(39, r.unchanged)
    assert.equal(1, outcomes(r).restored)
    assert.is_false(by_external(s)["EMP-3"].suspended or false)
    -- and the next run sees them unchanged (the flag is not part of the hash)
    local r2 = assert(run(people(40), { leavers = "suspend" }))
    assert.equal(40, r2.unchanged)
  end)

  it("guard: too many leavers suspends nobody and says how to proceed", function()
    assert(run(people(100)))
    local drop = {}
    for i = 1, 6 do drop[i] = true end   -- 6% > 5%
    local _, _, mark = traffic(s)
    local r, err = run(people(100, { drop = drop }), { leavers = "suspend" })
    assert.is_nil(r)
    assert.equal("TooManyLeavers", err.code)
    assert.equal(6, err.leaving)
    assert.matches("6 of the 100 people", tostring(err))
    assert.matches("max.leavers", tostring(err))
    local _, upd = traffic(s, mark)
    assert.equal(0, #upd)
    for _, u in pairs(by_external(s)) do assert.is_falsy(u.suspended) end
    -- a count above it lets them go
    local r2 = assert(run(people(100, { drop = drop }), { leavers = "suspend", max_leavers = 6 }))
    assert.equal(6, r2.suspended)
  end)

  it("an invalid row still names someone present: not a leaver", function()
    assert(run(people(30)))
    local rows = people(30)
    rows[4].email = "not an email"
    local r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r.invalid)
    assert.equal(0, r.suspended)
    assert.is_falsy(by_external(s)["EMP-4"].suspended)
  end)

  it("a row the reader cannot take (invalid UTF-8) still names someone present: not a leaver", function()
    local csv = tmpname(".csv")
    local function write(bad)
      local lines = { "email,external_id,name" }
      for i = 1, 30 do
        lines[#lines + 1] = ("p%d@example.com,EMP-%d,%s"):format(i, i,
          (bad and i == 4) and "Bad \255 name" or ("Person " .. i))
      end
      standin.write_file(csv, table.concat(lines, "\n") .. "\n")
    end
    write(false)
    assert(run(csv))
    write(true)
    local r = assert(run(csv, { leavers = "suspend" }))
    os.remove(csv)
    assert.equal(1, r.invalid)
    assert.equal(29, r.unchanged)
    assert.equal(0, r.suspended)
    assert.is_falsy(by_external(s)["EMP-4"].suspended)
  end)

  it("a person keyed anew (an external_id added) is one person: the old key is no leaver", function()
    local rows = people(20)
    rows[5].external_id = nil
    assert(run(rows))
    local id5 = by_external(s)
    assert.is_nil(id5["EMP-5"])
    rows = people(20)   -- EMP-5 given to the user Zendesk matched by email
    local r = assert(run(rows, { leavers = "suspend" }))
    assert.equal(1, r.updated)
    assert.equal(0, r.suspended)
    local zd = by_external(s)
    assert.is_falsy(zd["EMP-5"].suspended)
    local st = assert(state.open(path, { readonly = true }))
    assert.equal(20, st:count_all())
    assert.is_nil(st:lookup("e:p5@example.com"))
    assert.equal(zd["EMP-5"].id, (st:lookup("x:emp-5")))
    st:close()
  end)

  it("a failed row is not recorded: it goes again next run", function()
    assert(run(people(10)))
    local rows = people(10)
    rows[2].name = "Person 2 (changed)"
    rows[2].email = "p3@example.com"   -- EMP-3's address: Zendesk refuses the row (DuplicateValue)
    local r = assert(run(rows))
    assert.equal(1, r.failed, require("zendesk.core").encode(r.rows))
    local _, _, mark = traffic(s)
    local r2 = assert(run(rows))
    local up = traffic(s, mark)
    assert.equal(1, #up)
    assert.equal(1, r2.failed)
    assert.equal(9, r2.unchanged)
  end)

  it("--full sends every row and refreshes the state", function()
    assert(run(people(20)))
    local _, _, mark = traffic(s)
    local r = assert(run(people(20), { full = true }))
    local up = traffic(s, mark)
    assert.equal(20, #up)
    assert.equal(20, r.updated)
    assert.equal(0, r.unchanged)
  end)

  it("a dry run counts new, changed, unchanged and leaving and writes nothing", function()
    assert(run(people(50)))
    local before = standin.read_file(path)
    local _, _, mark = traffic(s)
    local rows = people(52, { change = { [1] = true }, drop = { [2] = true, [3] = true } })
    local r = assert(client:sync_users(rows, { state = path, dry_run = true, leavers = "suspend" }))
    assert.equal(2, r.new)
    assert.equal(1, r.changed)
    assert.equal(47, r.unchanged)
    assert.equal(2, r.leaving)
    assert.equal(3, r.would_send)
    assert.equal(before, standin.read_file(path))
    assert.is_nil(io.open(path .. "-wal", "rb"))   -- nothing beside it either
    assert.is_nil(io.open(path .. "-shm", "rb"))
    local up, upd = traffic(s, mark)
    assert.equal(0, #up + #upd)
  end)

  it("a state that cannot be written stops the sync with an error naming it, resumably (no raise)", function()
    assert(run(people(5)))
    local jpath = tmpname(".journal")
    local blocker
    local rows = people(250, { change = { [1] = true } })
    local r, err = run(rows, { journal = jpath, on_row = function(o)
      if not blocker and o.row == 1 then
        -- another process's lock on the state: the sync's next write waits, then fails
        blocker = assert(require("zendesk.sqlite").open(path))
        assert(blocker:exec("PRAGMA busy_timeout = 0; BEGIN EXCLUSIVE"))
      end
    end })
    if blocker then blocker:exec("ROLLBACK") blocker:close() end
    assert.is_nil(r)
    assert.equal("io", err.kind)
    assert.equal(path, err.state)
    assert.matches("state " .. path:gsub("%p", "%%%0"), tostring(err))
    assert.equal("unfinished", require("zendesk.journal").state(jpath))
    -- once the lock is gone, a resume finishes it
    local r2 = assert(run(rows, { journal = jpath, resume = true }))
    assert.equal(250, r2.total)
    os.remove(jpath)
  end)

  it("refuses a state that belongs to another account", function()
    assert(run(people(3)))
    local other = zendesk.new{ url = s.url:gsub("127%.0%.0%.1", "localhost"), email = standin.EMAIL,
                               token = standin.TOKEN }
    local _, _, mark = traffic(s)
    local r, err = other:sync_users(people(3), { state = path })
    other:close()
    assert.is_nil(r)
    assert.equal("StateAccountMismatch", err.code)
    assert.matches("belongs to the account", tostring(err))
    local up = traffic(s, mark)
    assert.equal(0, #up)
  end)

  it("refuses a file that is not a state, and leaves it alone", function()
    standin.write_file(path, "email,name\na@example.com,A\n")
    local r, err = run(people(2))
    assert.is_nil(r)
    assert.equal("NotAState", err.code)
    assert.equal("email,name\na@example.com,A\n", standin.read_file(path))
  end)

  it("the state holds what Zendesk holds: ids and hashes of the confirmed rows", function()
    assert(run(people(25)))
    local st = assert(state.open(path, { readonly = true }))
    local zd = by_external(s)
    for i = 1, 25 do
      local id, hash, suspended = st:lookup("x:emp-" .. i)
      assert.equal(zd["EMP-" .. i].id, id)
      assert.equal(state.hash(person(i)), hash)
      assert.is_false(suspended)
    end
    assert.equal(25, st:count())
    st:close()
  end)
end)
