-- zendesk.nginx in a real nginx: examples/nginx.conf and its handlers, run against the stand-in.
-- The spec is nginx's client (curl); nginx runs the LuaJIT core (make LUA=luajit).
local standin = require "support.standin"
local nginx = require "support.nginx"

local decode = standin.decode

local function signup_bodies(n, prefix)
  local bodies = {}
  for i = 1, n do
    bodies[i] = string.format('{"email":"%s%d@example.com","name":"User %d"}', prefix, i, i)
  end
  return bodies
end

local function count(answers)
  local by = {}
  for _, a in ipairs(answers) do by[a.status] = (by[a.status] or 0) + 1 end
  return by
end

local function show(by)
  local parts = {}
  for k, v in pairs(by) do parts[#parts + 1] = k .. "=" .. v end
  table.sort(parts)
  return table.concat(parts, " ")
end

describe("zendesk.nginx", function()
  local s, ng
  local token_file = os.tmpname()

  setup(function()
    s = standin.start()
    nginx.write_file(token_file, standin.TOKEN .. "\n")
  end)

  teardown(function()
    if ng then ng:stop() end
    if s then s:stop() end
    os.remove(token_file)
  end)

  before_each(function()
    s:reset()
    s:clear_faults()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0, imports_enabled = true,
              token_ttl_s = 1800 }
  end)

  after_each(function()
    if ng then ng:stop() end
    ng = nil
  end)

  local function start(opts)
    opts.env = opts.env or { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN_FILE = token_file }
    ng = nginx.start(opts)
    return ng
  end

  describe("the example handlers", function()
    -- one nginx for the group: these tests need no fresh rate budget or thread VMs
    local app
    setup(function()
      app = nginx.start{ workers = 2, init = "max_wait = 5, max_retries = 1, retry_base_delay = 0.01,",
                         env = { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN_FILE = token_file } }
    end)
    teardown(function()
      if app then app:stop() end
    end)

    it("answer /health without Zendesk", function()
      local r = app:request("GET", "/health")
      assert.equal(200, r.status)
      assert.same({ status = "ok" }, decode(r.body))
      assert.equal(0, s:stats().requests)
    end)

    it("sign a user up with the exact Zendesk id, then find the same user again", function()
      local r = app:request("POST", "/signup", '{"email":"ann@example.com","name":"Ann"}')
      assert.equal(201, r.status, r.body)
      local body = decode(r.body)
      assert.is_true(body.created)
      local stored = s:users()
      assert.equal(1, #stored)
      assert.equal(stored[1].id, body.id)
      assert.truthy(r.body:find('"id":' .. string.format("%d", stored[1].id), 1, true), r.body)

      r = app:request("POST", "/signup", '{"email":"ann@example.com","name":"Ann B"}')
      assert.equal(200, r.status, r.body)
      assert.same({ id = stored[1].id, created = false }, decode(r.body))
      assert.equal("Ann B", s:users()[1].name)
    end)

    it("answer 400 naming the problem for bad JSON, bad emails and fields the public may not set", function()
      local r = app:request("POST", "/signup", '{"email": "ann@example.com",')
      assert.equal(400, r.status)
      assert.matches("not valid JSON", decode(r.body).message)

      r = app:request("POST", "/signup", '{"email":"ann.example.com","name":"Ann"}')
      assert.equal(400, r.status)
      local body = decode(r.body)
      assert.equal("email", body.field)
      assert.matches("ann.example.com' is not a valid email address", body.message, 1, true)

      r = app:request("POST", "/signup", '{"email":"ann@example.com","role":"admin"}')
      assert.equal(400, r.status)
      assert.equal("role", decode(r.body).field)

      r = app:request("POST", "/signup", '{"name":"Ann"}')
      assert.equal(400, r.status)
      assert.equal("email", decode(r.body).field)

      r = app:request("POST", "/signup", '{"email":"ann@example.com"}')
      assert.equal(400, r.status)
      assert.equal("name", decode(r.body).field)

      r = app:request("POST", "/signup", '["ann@example.com"]')
      assert.equal(400, r.status)
      assert.equal(0, s:stats().requests)   -- none of these cost a Zendesk request
    end)

    it("answer 502 with Zendesk's error code and request id when Zendesk fails", function()
      s:fault{ path = "/api/v2/users/create_or_update", status = 500, count = 2 }
      local r = app:request("POST", "/signup", '{"email":"ann@example.com","name":"Ann"}')
      assert.equal(502, r.status, r.body)
      local body = decode(r.body)
      assert.equal("InternalServerError", body.code)
      assert.equal(500, body.status)
      assert.matches("%-LCL$", body.request_id)
      assert.equal(2, #s:requests())   -- the core's one retry (max_retries = 1), then the answer

      s:fault{ path = "/api/v2/users/create_or_update", status = 422, count = 1,
               body = '{"error":"RecordInvalid","description":"Record validation errors","details":'
                 .. '{"email":[{"description":"Email: ann@example.com is already being used","error":"DuplicateValue"}]}}' }
      r = app:request("POST", "/signup", '{"email":"ann@example.com","name":"Ann"}')
      assert.equal(502, r.status, r.body)
      body = decode(r.body)
      assert.equal("RecordInvalid", body.code)
      assert.equal("DuplicateValue", body.details.email[1].error)
      assert.matches("%-LCL$", body.request_id)
    end)

    it("retry a failed upsert in the core and log the retry from the worker", function()
      s:fault{ path = "/api/v2/users/create_or_update", status = 500, count = 1 }
      local r = app:request("POST", "/signup", '{"email":"ann@example.com","name":"Ann"}')
      assert.equal(201, r.status, r.body)
      assert.matches("zendesk: POST /api/v2/users/create_or_update.json: HTTP 500, attempt 1 retried after",
                     app:error_log(), 1, true)
    end)

    it("wait for a bulk job with ngx.sleep when asked to", function()
      s:config{ job_delay_ms = 300 }
      local r = app:request("POST", "/bulk?wait=1", '[{"email":"a@example.com","name":"A"},{"email":"b@example.com","name":"B"}]')
      assert.equal(200, r.status, r.body)
      local js = decode(r.body)
      assert.equal("completed", js.status)
      assert.equal(2, #js.results)
      assert.equal("Created", js.results[2].status)
      assert.is_true(s:stats().requests >= 2)   -- the submission and at least one poll
    end)

    it("submit a bulk import and report its job, with each row's exact id", function()
      local r = app:request("POST", "/bulk", '[{"email":"a@example.com","name":"A"},{"external_id":"e2","name":"B"}]')
      assert.equal(202, r.status, r.body)
      local job = decode(r.body)
      assert.matches("^V3%-%x+$", job.job_id)
      assert.equal("/jobs/" .. job.job_id, job.url)
      local js
      for _ = 1, 50 do
        r = app:request("GET", job.url)
        assert.equal(200, r.status, r.body)
        js = decode(r.body)
        if js.status == "completed" then break end
        os.execute("sleep 0.05")
      end
      assert.equal("completed", js.status)
      local ids = {}
      for _, u in ipairs(s:users()) do
        ids[type(u.email) == "string" and u.email or u.external_id] = u.id
      end
      assert.equal(ids["a@example.com"], js.results[1].id)
      assert.equal(ids.e2, js.results[2].id)

      r = app:request("GET", "/jobs/V3-0123456789abcdef0123456789abcdef")
      assert.equal(404, r.status)
      assert.equal("RecordNotFound", decode(r.body).code)
    end)

    it("answer 400 for bulk bodies that are not 1 to 100 valid users", function()
      local r = app:request("POST", "/bulk", '{"email":"a@example.com"}')
      assert.equal(400, r.status)
      r = app:request("POST", "/bulk", "[]")
      assert.equal(400, r.status)
      local many = {}
      for i = 1, 101 do many[i] = '{"email":"u' .. i .. '@example.com"}' end
      r = app:request("POST", "/bulk", "[" .. table.concat(many, ",") .. "]")
      assert.equal(400, r.status)
      assert.matches("got 101", decode(r.body).message)
      r = app:request("POST", "/bulk", '[{"email":"a@example.com"},{"email":"nope"}]')
      assert.equal(400, r.status)
      assert.matches("users%[2%]%.email", decode(r.body).message)
      assert.equal(0, s:stats().requests)
    end)

    it("keep credentials out of the logs", function()
      s:fault{ path = "/api/v2/users/create_or_update", status = 401, count = 1 }
      local r = app:request("POST", "/signup", '{"email":"ann@example.com","name":"Ann"}')
      assert.equal(502, r.status)
      local logs = app:error_log() .. app:access_log()
      assert.truthy(logs:find("sign-up failed", 1, true))
      assert.falsy(logs:find(standin.TOKEN, 1, true))
    end)
  end)

  describe("the client, through a test location", function()
    -- tests/support/nginx_probe.lua: a client of its own, one worker, its thread trips counted
    local function upsert(user, opts)
      local body = standin.encode{ user = user, opts = opts }
      local r = ng:request("POST", "/t/upsert", body)
      assert.equal(200, r.status, r.body)
      return decode(r.body)
    end
    local function calls()
      return decode(ng:request("GET", "/t/calls").body)
    end

    it("returns only the user fields asked for, with the exact id and a complete meta", function()
      start{ workers = 1, probe = true }
      local out = upsert({ email = "ann@example.com", name = "Ann" }, { fields = { "id", "email" } })
      assert.is_true(out.ok, out.error)
      local stored = s:users()[1]
      assert.same({ id = stored.id, email = "ann@example.com" }, out.user)
      assert.is_true(out.created)

      out = upsert({ email = "ann@example.com", name = "Ann B" }, { fields = { "id" } })
      assert.same({ id = stored.id }, out.user)
      assert.is_false(out.created)

      -- without opts (or without fields): the whole user, as before
      out = upsert({ email = "ann@example.com", name = "Ann C" })
      assert.equal(stored.id, out.user.id)
      assert.equal("Ann C", out.user.name)
      local n = 0
      for _ in pairs(out.user) do n = n + 1 end
      assert.is_true(n > 20, n .. " fields")
      out = upsert({ email = "ann@example.com", name = "Ann D" }, {})
      assert.equal("Ann D", out.user.name)
      -- the example's sign-up asks for the id only and still answers it exactly
      local r = ng:request("POST", "/signup", '{"email":"bo@example.com","name":"Bo"}')
      assert.equal(201, r.status, r.body)
      assert.equal(s:users()[2].id, decode(r.body).id)
    end)

    it("raises an error naming the argument for bad opts, before any request", function()
      start{ workers = 1, probe = true }
      local user = { email = "ann@example.com", name = "Ann" }
      local cases = {
        { "yes", "upsert_user: argument 'opts' must be a table, got string" },
        { { field = { "id" } }, "upsert_user: unknown option 'field' (upsert_user takes fields)" },
        { { fields = "id" }, "upsert_user: option 'fields' must be an array of 1 to 64 user field names" },
        { { fields = { 1 } }, "upsert_user: option 'fields': element 1 must be a field name, got '1'" },
        { { fields = { "id", true } }, "option 'fields': element 2 must be a field name, got 'true'" },
        { { fields = { id = "id" } }, "option 'fields' must be an array of 1 to 64 user field names" },
        { { fields = {} }, "option 'fields' must be an array of 1 to 64 user field names" },
      }
      for _, c in ipairs(cases) do
        local out = upsert(user, c[1])
        assert.is_false(out.ok)
        assert.truthy(out.error:find(c[2], 1, true), out.error)
      end
      assert.equal(0, s:stats().requests)
      assert.equal(0, calls().calls)
    end)

    it("sends the configuration to a thread VM once: it asks on its first call, then reuses its client", function()
      start{ workers = 1, probe = true }
      -- one at a time: nginx hands the same (most recently freed) thread VM each call
      local out = upsert({ email = "first@example.com", name = "First" }, { fields = { "id" } })
      assert.is_true(out.created, out.error)
      assert.same({ calls = 2, with_cfg = 1, need_cfg = 1 }, calls())
      assert.equal(1, s:stats().requests)   -- the trip that asked for cfg sent nothing
      for i = 1, 5 do
        out = upsert({ email = "again" .. i .. "@example.com", name = "Again" }, { fields = { "id" } })
        assert.is_true(out.created, out.error)
      end
      assert.same({ calls = 5, with_cfg = 0, need_cfg = 0 }, calls())
      assert.equal(6, s:stats().requests)

      -- side by side: every new thread VM asks once (at most one per request in flight)
      local bodies = {}
      for i = 1, 80 do
        bodies[i] = string.format('{"user":{"email":"par%d@example.com","name":"P %d"},"opts":{"fields":["id"]}}', i, i)
      end
      local answers = nginx.parallel(ng.url .. "/t/upsert", bodies, 10)
      assert.equal(80, count(answers)[200], show(count(answers)))
      local c = calls()
      assert.equal(86, #s:users())
      assert.equal(c.need_cfg, c.with_cfg)
      assert.equal(80 + c.need_cfg, c.calls)
      assert.is_true(c.need_cfg <= 10, c.need_cfg .. " trips for cfg")
    end)
  end)

  it("keeps the event loop free while Zendesk is slow", function()
    start{ workers = 1, init = "max_wait = 5," }
    -- one sign-up first, so the account's limit is known and the next ones go out together
    assert.equal(201, ng:request("POST", "/signup", '{"email":"warm@example.com","name":"Warm"}').status)
    -- (the delay leaves /health seconds to answer, and the last of the 8 curls seconds to start, on
    -- a machine loaded by the other lane of make test: what is checked is the order)
    local delay = 6
    s:fault{ path = "/api/v2/users/create_or_update", action = "delay", delay_ms = delay * 1000, count = 100 }
    local out, wait = nginx.parallel_background(ng.url .. "/signup", signup_bodies(8, "slow"), 8)
    os.execute("sleep 0.3")
    local r = ng:request("GET", "/health")
    local finished_before = nginx.answers_in(nginx.read_file(out))
    local answers = wait(30)
    assert.equal(200, r.status)
    assert.equal(0, #finished_before, "an upsert finished before /health answered")
    assert.equal(8, #answers)
    for _, a in ipairs(answers) do
      assert.equal(201, a.status)
      assert.is_true(a.time >= delay)
    end
    -- the one worker had the 8 slow upserts out at the stand-in at the same time
    assert.equal(8, s:stats().max_concurrent, "the 8 upserts did not run side by side")
  end)

  it("completes 1,000 sign-ups at concurrency 50 without an error, over reused connections", function()
    start{ workers = 2, init = "max_wait = 10," }
    local function sockets(state, filter)
      return tonumber(standin.sh("ss -Htan state " .. state .. " '( " .. filter .. " )' | wc -l"):match("%d+"))
    end
    local to_standin = "dport = :" .. s.port
    local closed_before = sockets("time-wait", to_standin .. " or sport = :" .. s.port)
    local answers, secs = nginx.parallel(ng.url .. "/signup", signup_bodies(1000, "bulk"), 50)
    local by = count(answers)
    assert.equal(1000, by[201], show(by))
    assert.equal(1000, #s:users())
    -- each thread VM kept its connection: a handful are open, none was opened per request
    local open = sockets("established", to_standin)
    assert.is_true(open >= 1 and open <= 64, open .. " connections to the stand-in")
    assert.is_true(sockets("time-wait", to_standin .. " or sport = :" .. s.port) - closed_before < 20)
    print(string.format("\n  nginx: 1,000 sign-ups at concurrency 50 in %.2f s = %.0f sign-ups/s", secs, 1000 / secs))
  end)

  it("shares the account's rate budget between workers: no 429 from Zendesk, a clear 503 instead", function()
    s:config{ rate_limit_per_minute = 30 }
    start{ workers = 2, init = "max_wait = 2," }
    local answers = nginx.parallel(ng.url .. "/signup", signup_bodies(45, "budget"), 15)
    local by = count(answers)
    assert.equal(45, #answers)
    assert.equal(0, s:stats().rate_limited, show(by))
    assert.equal(45, (by[201] or 0) + (by[503] or 0), show(by))
    assert.is_true((by[201] or 0) >= 25 and (by[201] or 0) <= 30, show(by))
    assert.equal(2, ng:workers_seen("/signup"))
    local r = ng:request("POST", "/signup", '{"email":"late@example.com","name":"Late"}')
    assert.equal(503, r.status)
    local after = tonumber(r.headers["retry-after"])
    assert.is_true(after >= 1 and after <= 61, tostring(after))
    local body = decode(r.body)
    assert.equal("rate_limited", body.error)
    assert.equal(after, body.retry_after)
  end)

  it("holds every worker back while Zendesk says Retry-After, then goes on", function()
    start{ workers = 2, init = "max_wait = 5, max_retries = 0," }
    assert.equal(201, ng:request("POST", "/signup", '{"email":"first@example.com","name":"First"}').status)
    -- an account-wide 429 (job statuses have no per-user limit that could explain it)
    s:fault{ path = "/api/v2/job_statuses/V3-0123456789abcdef0123456789abcdef", status = 429,
             headers = { ["Retry-After"] = "2" }, count = 1 }
    local r = ng:request("GET", "/jobs/V3-0123456789abcdef0123456789abcdef")
    assert.equal(503, r.status, r.body)
    assert.equal("2", r.headers["retry-after"])
    local answers = nginx.parallel(ng.url .. "/signup", signup_bodies(6, "after"), 6)
    assert.equal(6, count(answers)[201], show(count(answers)))
    for _, a in ipairs(answers) do assert.is_true(a.time > 1, "sent during the Retry-After") end
    -- they slept on timers: a wait rounded down to ngx.sleep(0) would spin on a frozen clock
    assert.falsy(ng:error_log():find("ngx.sleep(0)", 1, true))
  end)

  it("does not hold the account back for a 429 that may be one user's limit", function()
    start{ workers = 2, init = "max_wait = 5, max_retries = 0," }
    assert.equal(201, ng:request("POST", "/signup", '{"email":"first@example.com","name":"First"}').status)
    s:fault{ path = "/api/v2/users/create_or_update", status = 429, headers = { ["Retry-After"] = "30" }, count = 1,
             body = "You have exceeded the rate limit for updating a single unique user." }
    local r = ng:request("POST", "/signup", '{"email":"first@example.com","name":"Again"}')
    assert.equal(503, r.status, r.body)
    assert.equal("30", r.headers["retry-after"])
    -- held back, it would wait 30 s, past max_wait, and answer 503: a 201 is the account not held
    r = ng:request("POST", "/signup", '{"email":"other@example.com","name":"Other"}')
    assert.equal(201, r.status, r.body)
    local last = s:requests()
    assert.matches('"other@example.com"', last[#last].body, 1, true)
  end)

  it("shares rotated OAuth tokens between workers and threads, and saves the newest pair", function()
    local oauth_file = os.tmpname()
    nginx.write_file(oauth_file, string.format(
      '{"access_token":"%s","refresh_token":"%s","client_id":"%s","client_secret":"%s"}',
      standin.OAUTH_ACCESS, standin.OAUTH_REFRESH, standin.CLIENT_ID, standin.CLIENT_SECRET))
    start{ workers = 2, init = "max_wait = 5,", env = { ZENDESK_URL = s.url, ZENDESK_OAUTH_FILE = oauth_file } }
    -- every worker and many thread VMs hold a client with the first pair
    local answers = nginx.parallel(ng.url .. "/signup", signup_bodies(40, "warm"), 20)
    assert.equal(40, count(answers)[201])
    -- expire every access token: concurrent requests now race to refresh with one refresh token
    s:config{ token_ttl_s = 1 }
    os.execute("sleep 1.2")
    answers = nginx.parallel(ng.url .. "/signup", signup_bodies(40, "rotated"), 20)
    local by = count(answers)
    s:config{ token_ttl_s = 1800 }
    assert.equal(40, by[201], show(by))

    local saved = decode(nginx.read_file(oauth_file))
    os.remove(oauth_file)
    assert.are_not.equal(standin.OAUTH_REFRESH, saved.refresh_token)
    assert.equal(standin.CLIENT_ID, saved.client_id)
    -- the saved pair is the live one: it works, and its refresh token is the one not yet spent
    local r = s:http("GET", "/api/v2/users/" .. string.format("%d", s:users()[1].id) .. ".json",
                     { auth = "Bearer " .. saved.access_token })
    assert.equal(200, r.status)
    r = s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "refresh_token",
      refresh_token = saved.refresh_token, client_id = saved.client_id, client_secret = saved.client_secret } })
    assert.equal(200, r.status, r.body)
    local logs = ng:error_log()
    assert.truthy(logs:find("OAuth tokens rotated", 1, true))
    assert.falsy(logs:find(saved.access_token, 1, true))
    assert.falsy(logs:find(saved.refresh_token, 1, true))
  end)
end)
