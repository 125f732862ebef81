-- The stand-in's PUT /api/v2/users/update_many (issue 16): one user object applied to the users
-- named by ?ids= or ?external_ids=, or a batch of rows each with its own id; suspension stored,
-- shown and restored; the same job machinery, limits and faults as create_or_update_many.
-- Over real HTTP with curl against one instance for the file.
local standin = require "support.standin"

local UPSERT = "/api/v2/users/create_or_update.json"
local MANY = "/api/v2/users/create_or_update_many.json"
local UPDATE_MANY = "/api/v2/users/update_many.json"

local function sleep(s)
  os.execute("sleep " .. s)
end

describe("stand-in update_many", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0 }
  end)

  local function upsert(user)
    local res = s:http("POST", UPSERT, { body = { user = user } })
    assert.is_true(res.status == 200 or res.status == 201, res.body)
    return standin.decode(res.body).user
  end

  local function wait_job(id)
    for _ = 1, 300 do
      local res = s:http("GET", "/api/v2/job_statuses/" .. id .. ".json")
      if res.status == 200 then
        local job = standin.decode(res.body).job_status
        if job.status == "completed" or job.status == "failed" or job.status == "killed" then return job end
      end
      sleep(0.05)
    end
    error("job " .. id .. " did not finish")
  end

  -- Submits, checks the queued job_status, waits; returns the finished job.
  local function update_many(query, body)
    local res = s:http("PUT", UPDATE_MANY .. query, { body = body })
    assert.equal(200, res.status, res.body)
    local job = standin.decode(res.body).job_status
    assert.equal("queued", job.status)
    assert.equal(standin.null, job.results)
    return wait_job(job.id), job
  end

  local function admin_user(id)
    for _, u in ipairs(s:users()) do
      if u.id == id then return u end
    end
  end

  local function three()
    return upsert{ name = "A", email = "a@example.com", external_id = "hr-a" },
      upsert{ name = "B", email = "b@example.com", external_id = "hr-b" },
      upsert{ name = "C", email = "c@example.com", external_id = "hr-c" }
  end

  it("suspends the users named by ?ids= with one user object, in the user JSON and /__admin/users", function()
    local a, b, c = three()
    assert.is_false(a.suspended)
    local job = update_many("?ids=" .. a.id .. "," .. c.id, { user = { suspended = true } })
    assert.equal("completed", job.status)
    assert.equal(2, job.total)
    assert.same({ id = a.id, action = "update", status = "Updated", success = true }, job.results[1])
    assert.same({ id = c.id, action = "update", status = "Updated", success = true }, job.results[2])
    assert.same({ "id", "action", "status", "success" }, standin.keys_of(standin.decode_ordered(
      s:http("GET", "/api/v2/job_statuses/" .. job.id).body).job_status.results[1]))
    assert.is_true(admin_user(a.id).suspended)
    assert.is_false(admin_user(b.id).suspended)
    assert.is_true(admin_user(c.id).suspended)
    local shown = standin.decode(s:http("GET", "/api/v2/users/" .. c.id .. ".json").body).user
    assert.is_true(shown.suspended)
    -- nothing else of the user moved
    assert.equal("C", shown.name)
    assert.equal("c@example.com", shown.email)
    assert.equal("hr-c", shown.external_id)
  end)

  it("restores with suspended=false through update_many, create_or_update and create_or_update_many", function()
    local a, b, c = three()
    update_many("?ids=" .. a.id .. "," .. b.id .. "," .. c.id, { user = { suspended = true } })
    for _, u in ipairs{ a, b, c } do assert.is_true(admin_user(u.id).suspended) end

    update_many("?ids=" .. a.id, { user = { suspended = false } })
    assert.is_false(admin_user(a.id).suspended)

    local res = s:http("POST", UPSERT, { body = { user = { email = "b@example.com", suspended = false } } })
    assert.equal(200, res.status, res.body)
    assert.is_false(standin.decode(res.body).user.suspended)
    assert.is_false(admin_user(b.id).suspended)

    local sub = s:http("POST", MANY, { body = { users = { { external_id = "HR-C", suspended = false } } } })
    assert.equal(200, sub.status, sub.body)
    local done = wait_job(standin.decode(sub.body).job_status.id)
    assert.equal("Updated", done.results[1].status)
    assert.is_false(admin_user(c.id).suspended)
    -- a suspended user is still matched (suspension is not deletion)
    update_many("?ids=" .. a.id, { user = { suspended = true } })
    local again = s:http("POST", UPSERT, { body = { user = { email = "a@example.com", name = "A2" } } })
    assert.equal(200, again.status)
    assert.equal(a.id, standin.decode(again.body).user.id)
    assert.is_true(admin_user(a.id).suspended)
  end)

  it("names users by ?external_ids= (case-insensitive); an unknown one is a Failed row", function()
    local a, b = three()
    local job = update_many("?external_ids=HR-A,nobody,hr-b", { user = { suspended = true } })
    assert.equal("completed", job.status)
    assert.equal(3, job.total)
    assert.same({ id = a.id, action = "update", status = "Updated", success = true }, job.results[1])
    assert.same({ index = 1, external_id = "nobody", status = "Failed", error = "RecordNotFound",
      details = "Not found" }, job.results[2])
    assert.same({ id = b.id, action = "update", status = "Updated", success = true }, job.results[3])
    assert.is_true(admin_user(a.id).suspended)
    assert.is_true(admin_user(b.id).suspended)
    assert.equal(3, #s:users())
  end)

  it("an unknown or deleted id is a Failed row naming it; the others are still updated", function()
    local a, b = three()
    assert.equal(200, s:http("DELETE", "/api/v2/users/" .. b.id .. ".json").status)
    local job = update_many("?ids=1," .. a.id .. "," .. b.id, { user = { suspended = true } })
    assert.equal("completed", job.status)
    assert.same({ index = 0, id = 1, status = "Failed", error = "RecordNotFound", details = "Not found" },
      job.results[1])
    assert.equal("Updated", job.results[2].status)
    assert.same({ index = 2, id = b.id, status = "Failed", error = "RecordNotFound", details = "Not found" },
      job.results[3])
    assert.is_true(admin_user(a.id).suspended)
    assert.equal(2, #s:users())
  end)

  it("the shared object cannot retarget the update: an id inside it is ignored", function()
    local a, b = three()
    update_many("?ids=" .. a.id, { user = { id = b.id, suspended = true } })
    assert.is_true(admin_user(a.id).suspended)
    assert.is_false(admin_user(b.id).suspended)
    local job = update_many("?external_ids=nobody", { user = { id = b.id, suspended = true } })
    assert.same({ index = 0, external_id = "nobody", status = "Failed", error = "RecordNotFound",
      details = "Not found" }, job.results[1])
    assert.is_false(admin_user(b.id).suspended)
  end)

  it("the batch form applies each row's own changes", function()
    local a, b = three()
    local job = update_many("", { users = { { id = a.id, suspended = true }, { id = b.id, name = "Bee" } } })
    assert.equal("Updated", job.results[1].status)
    assert.equal("Updated", job.results[2].status)
    assert.is_true(admin_user(a.id).suspended)
    local ub = admin_user(b.id)
    assert.is_false(ub.suspended)
    assert.equal("Bee", ub.name)
  end)

  it("a row that fails validation is a UserUpdateError row with a string detail", function()
    local a = three()
    local job = update_many("?ids=" .. a.id, { user = { role = "boss" } })
    assert.equal("Failed", job.results[1].status)
    assert.equal("UserUpdateError", job.results[1].error)
    assert.equal(a.id, job.results[1].id)
    assert.matches("Role", job.results[1].details)
  end)

  it("takes 100 ids a request; 101 is 400 TooManyValues and no job", function()
    local ids = {}
    for i = 1, 101 do ids[i] = tostring(36146830593 + i) end
    local over = s:http("PUT", UPDATE_MANY .. "?ids=" .. table.concat(ids, ","), { body = { user = { suspended = true } } })
    assert.equal(400, over.status)
    assert.equal("TooManyValues", standin.decode(over.body).error)
    local xs = {}
    for i = 1, 101 do xs[i] = "x" .. i end
    local over_x = s:http("PUT", UPDATE_MANY .. "?external_ids=" .. table.concat(xs, ","),
      { body = { user = { suspended = true } } })
    assert.equal(400, over_x.status)
    local rows = {}
    for i = 1, 101 do rows[i] = { id = ids[i], suspended = true } end
    assert.equal(400, s:http("PUT", UPDATE_MANY, { body = { users = rows } }).status)
    assert.equal(0, s:stats().jobs)
    ids[101] = nil
    local job = update_many("?ids=" .. table.concat(ids, ","), { user = { suspended = true } })
    assert.equal(100, job.total)
    assert.equal(100, #job.results)
    assert.equal(1, s:stats().jobs)
  end)

  it("answers 400 for a missing body or an empty id list", function()
    local a = three()
    local nobody = s:http("PUT", UPDATE_MANY .. "?ids=" .. a.id, { body = "" })
    assert.equal(400, nobody.status)
    assert.equal("ParameterMissing", standin.decode(nobody.body).error)
    for _, q in ipairs{ "?ids=", "?ids", "?external_ids=", "?ids=,,%20" } do
      assert.equal(400, s:http("PUT", UPDATE_MANY .. q, { body = { user = { suspended = true } } }).status, q)
    end
    assert.equal(400, s:http("PUT", UPDATE_MANY, { body = { user = { suspended = true } } }).status)
    assert.equal(0, s:stats().jobs)
  end)

  it("counts toward max_jobs with the other bulk jobs", function()
    local a = three()
    s:config{ max_jobs = 1, job_delay_ms = 2000 }
    local first = s:http("POST", MANY, { body = { users = { { name = "D", email = "d@example.com" } } } })
    assert.equal(200, first.status)
    local res = s:http("PUT", UPDATE_MANY .. "?ids=" .. a.id, { body = { user = { suspended = true } } })
    assert.equal(429, res.status)
    assert.equal("TooManyJobs", standin.decode(res.body).error)
    assert.is_string(res.headers["retry-after"])
    assert.equal(1, s:stats().too_many_jobs)
  end)

  it("is not behind the bulk-import gate (it changes existing users only)", function()
    local a = three()
    s:config{ imports_enabled = false }
    assert.equal(403, s:http("POST", MANY, { body = { users = { { name = "D", email = "d@example.com" } } } }).status)
    local job = update_many("?ids=" .. a.id, { user = { suspended = true } })
    assert.equal("Updated", job.results[1].status)
  end)

  it("faults, auth and the account rate limit apply to it", function()
    local a = three()
    s:fault{ path = "/api/v2/users/update_many", method = "PUT", status = 503, headers = { ["Retry-After"] = "1" } }
    local res = s:http("PUT", UPDATE_MANY .. "?ids=" .. a.id, { body = { user = { suspended = true } } })
    assert.equal(503, res.status)
    assert.equal("1", res.headers["retry-after"])
    assert.is_false(admin_user(a.id).suspended)
    assert.equal(401, s:http("PUT", UPDATE_MANY .. "?ids=" .. a.id,
      { auth = "none", body = { user = { suspended = true } } }).status)
    -- three upserts counted so far (the faulted request and the 401 are not): the 4th passes
    s:config{ rate_limit_per_minute = 4 }
    local first = s:http("PUT", UPDATE_MANY .. "?ids=" .. a.id, { body = { user = { suspended = true } } })
    assert.equal(200, first.status)
    local limited = s:http("PUT", UPDATE_MANY .. "?ids=" .. a.id, { body = { user = { suspended = false } } })
    assert.equal(429, limited.status)
    assert.is_string(limited.headers["retry-after"])
    local hits = 0
    for _, r in ipairs(s:requests()) do
      if r.method == "PUT" and r.path == UPDATE_MANY then hits = hits + 1 end
    end
    assert.equal(4, hits)
  end)
end)
