-- Bulk upserts and jobs: create_or_update_many answers a job_status; job_status,
-- job_statuses and wait_job follow it to the end.
local standin = require "support.standin"
-- the core has no Zendesk methods since issue 14 P2: zendesk.api builds them from core:request
local api = require "zendesk.api"
local zendesk = require "zendesk"

describe("bulk upserts and jobs", function()
  local s, client

  setup(function() s = standin.start() end)
  teardown(function()
    if client then client:close() end
    if s then s:stop() end
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0 }
    if client then client:close() end
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 0 }
  end)

  local function users(n, prefix)
    local t = {}
    for i = 1, n do t[i] = { email = (prefix or "u") .. i .. "@example.com", name = "User " .. i } end
    return t
  end

  it("submits up to 100 users and returns the queued job #lua54", function()
    local job, meta = client:upsert_users(users(100))
    assert.is_table(job, tostring(meta))
    assert.equal(200, meta.status)
    assert.matches("^V3%-%x+$", job.id)
    assert.equal("queued", job.status)
    assert.equal(100, job.total)
    assert.equal("integer", math.type(job.total))
  end)

  it("waits for a job and maps results in request order #lua54", function()
    assert(client:upsert_user{ email = "u2@example.com", name = "Existing" })
    local list = users(3)
    list[3] = { email = "u3@example.com", name = "Three", role = "agent" }
    local job = assert(client:upsert_users(list))
    local seen = {}
    local done = assert(client:wait_job(job, { timeout = 30, on_progress = function(j) seen[#seen + 1] = j.status end }))
    assert.equal("completed", done.status)
    assert.equal(3, #done.results)
    assert.equal("Created", done.results[1].status)
    assert.equal("Updated", done.results[2].status)
    assert.equal("integer", math.type(done.results[1].id))
    -- on_progress saw each poll's status, in the job's order, ending with the completed one
    local rank = { queued = 1, working = 2, completed = 3 }
    assert.equal("completed", seen[#seen])
    for i, st in ipairs(seen) do
      assert.is_number(rank[st], "status " .. tostring(st))
      if i > 1 then assert.is_true(rank[seen[i - 1]] <= rank[st], table.concat(seen, ", ")) end
    end
  end)

  it("reports failed rows inside a completed job", function()
    local job = assert(api.upsert_users(client._core, { { email = "ok@example.com", name = "Ok" },
                                               { email = "not-an-email", name = "Bad" } }))
    local done = assert(client:wait_job(job, { timeout = 30 }))
    assert.equal("completed", done.status)
    assert.equal("Failed", done.results[2].status)
    assert.equal(1, done.results[2].index)
    assert.is_string(done.results[2].details)
  end)

  it("polls several jobs at once with job_statuses", function()
    local a = assert(client:upsert_users(users(2, "a")))
    local b = assert(client:upsert_users(users(2, "b")))
    local list, meta = client:job_statuses{ a.id, b.id }
    assert.is_table(list, tostring(meta))
    assert.equal(2, #list)
    local ids = { [list[1].id] = true, [list[2].id] = true }
    assert.is_true(ids[a.id] and ids[b.id])
  end)

  it("refuses job ids that would change the path", function()
    local js, err = client:job_status("../users/1")
    assert.is_nil(js)
    assert.equal("validation", err.kind)
  end)

  it("gives a clear error when bulk imports are disabled (403)", function()
    s:config{ imports_enabled = false }
    local job, err = client:upsert_users(users(2))
    assert.is_nil(job)
    assert.equal("auth", err.kind)
    assert.equal(403, err.status)
    assert.equal("Forbidden", err.code)
    assert.matches("You do not have access", err.message)
  end)

  it("tolerates the 404 of a job too fresh to be visible", function()
    s:config{ fresh_job_404_polls = 2 }
    local job = assert(client:upsert_users(users(1)))
    local done = assert(client:wait_job(job, { timeout = 30, interval = 0.05 }))
    assert.equal("completed", done.status)
  end)

  it("turns a failed or killed job into a job error carrying the job", function()
    for _, how in ipairs{ "failed", "killed" } do
      s:fault{ job = how }
      local job = assert(client:upsert_users(users(1, how)))
      local done, err = client:wait_job(job, { timeout = 30, interval = 0.05 })
      assert.is_nil(done)
      assert.equal("job", err.kind)
      assert.equal(how, err.code)
      assert.equal(job.id, err.job.id)
      assert.matches("ended " .. how, tostring(err))
    end
  end)

  it("gives up at the deadline with a timeout error", function()
    s:config{ job_delay_ms = 5000 }
    local job = assert(client:upsert_users(users(1)))
    local done, err = client:wait_job(job, { timeout = 0.5, interval = 0.1 })
    assert.is_nil(done)
    assert.equal("timeout", err.kind)
    assert.equal(job.id, err.job.id)
  end)

  it("runs several requests concurrently with request_many", function()
    s:fault{ path = "/api/v2/users/show_many", action = "delay", delay_ms = 600, count = 4 }
    local res = client._core:request_many{
      { "GET", "/api/v2/users/show_many.json?ids=1" },
      { "GET", "/api/v2/users/show_many.json?ids=2" },
      { "GET", "/api/v2/users/show_many.json?ids=3" },
      { "GET", "/api/v2/users/show_many.json?ids=4" },
      { "GET", "bad path" },
    }
    for i = 1, 4 do
      assert.is_table(res[i].value, tostring(res[i].err))
      assert.equal(200, res[i].meta.status)
    end
    assert.equal("validation", res[5].err.kind)
    -- the stand-in had the four delayed requests in hand at the same time
    assert.equal(4, s:stats().max_concurrent, "requests did not run concurrently")
  end)
end)
