-- The Zendesk stand-in (tests/fake_zendesk): every behaviour its contract
-- promises, checked over real HTTP with curl against one instance per file.
local standin = require "support.standin"

local USER_KEYS = {
  "id", "url", "name", "email", "created_at", "updated_at", "time_zone", "iana_time_zone", "phone",
  "shared_phone_number", "photo", "locale_id", "locale", "organization_id", "role", "verified",
  "external_id", "tags", "alias", "active", "shared", "shared_agent", "last_login_at",
  "two_factor_auth_enabled", "signature", "details", "notes", "role_type", "custom_role_id",
  "moderator", "ticket_restriction", "only_private_comments", "restricted_agent", "suspended",
  "default_group_id", "report_csv", "user_fields",
}
local JOB_KEYS = { "id", "url", "total", "progress", "status", "message", "results" }
local UPSERT = "/api/v2/users/create_or_update.json"
local MANY = "/api/v2/users/create_or_update_many.json"
local RATE_HEADERS = {
  "x-rate-limit", "x-rate-limit-remaining", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
  "rate-limit", "rate-limit-remaining", "rate-limit-reset",
}

local function sleep(s)
  os.execute("sleep " .. s)
end

describe("the Zendesk stand-in", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() if s then s:stop() end end)
  before_each(function() s:reset() end)

  local function upsert(user, opts)
    opts = opts or {}
    opts.body = { user = user }
    return s:http("POST", opts.path or UPSERT, opts)
  end

  local function user_of(res)
    local v = assert(standin.decode(res.body), res.body)
    return v.user
  end

  local function submit(list)
    local res = s:http("POST", MANY, { body = { users = list } })
    assert.equal(200, res.status, res.body)
    return standin.decode(res.body).job_status, res
  end

  local function poll(id)
    return s:http("GET", "/api/v2/job_statuses/" .. id .. ".json")
  end

  -- Polls until the job is terminal; returns it and every status seen in order.
  local function wait_job(id, limit)
    local seen = {}
    for _ = 1, (limit or 300) do
      local res = poll(id)
      if res.status == 200 then
        local job = standin.decode(res.body).job_status
        if seen[#seen] ~= job.status then seen[#seen + 1] = job.status end
        if job.status == "completed" or job.status == "failed" or job.status == "killed" then return job, seen end
      end
      sleep(0.05)
    end
    error("job " .. id .. " did not finish")
  end

  describe("ctl", function()
    it("prints the base URL as the last line and reports status", function()
      local out, code = standin.sh(standin.shell_quote(standin.CTL) .. " start --port auto 2>/dev/null")
      assert.equal(0, code, out)
      local url = out:match("([^\n]+)%s*$")
      assert.matches("^http://127%.0%.0%.1:%d+$", url)
      local port = url:match(":(%d+)$")
      local st, scode = standin.sh(standin.shell_quote(standin.CTL) .. " status --port " .. port)
      assert.equal(0, scode)
      assert.matches(url, st, 1, true)
      local _, again = standin.sh(standin.shell_quote(standin.CTL) .. " start --port " .. port .. " 2>/dev/null")
      assert.are_not.equal(0, again)
      local _, stop = standin.sh(standin.shell_quote(standin.CTL) .. " stop --port " .. port)
      assert.equal(0, stop)
      local _, after = standin.sh(standin.shell_quote(standin.CTL) .. " status --port " .. port)
      assert.equal(3, after)
      local res = s:http("GET", "/__admin/health", { auth = "none", url = url .. "/__admin/health", timeout = 2 })
      assert.equal(0, res.status)
    end)

    it("runs two instances on two ports at once, each with its own state", function()
      local other = standin.start()
      local ok, err = pcall(function()
        assert.are_not.equal(s.port, other.port)
        assert.equal(201, upsert({ name = "Only here", email = "here@example.com" }).status)
        assert.equal(1, #s:users())
        assert.equal(0, #other:users())
        assert.equal(200, other:http("GET", "/__admin/health", { auth = "none" }).status)
      end)
      other:stop()
      assert(ok, err)
    end)

    it("serves HTTPS with a CA made at start: verified with --cacert, refused without", function()
      local t = standin.start{ tls = true }
      local ok, err = pcall(function()
        assert.matches("^https://127%.0%.0%.1:%d+$", t.url)
        assert.equal(standin.ROOT .. "tests/fake_zendesk/run/" .. t.port .. "/ca.pem", t.ca_file)
        assert.matches("^/", t.ca_file)
        assert.matches("ca_file: ", t.stderr, 1, true)
        local res = t:http("POST", UPSERT, { body = { user = { name = "Tls", email = "tls@example.com" } } })
        assert.equal(201, res.status)
        assert.equal(t.url .. "/api/v2/users/" .. user_of(res).id .. ".json", res.headers.location)
        local bad = t:http("GET", "/__admin/health", { auth = "none", tls_verify = false })
        assert.equal(0, bad.status)
        assert.equal(60, bad.exit) -- curl: peer certificate cannot be authenticated
        local localhost = t:http("GET", "/__admin/health",
          { auth = "none", url = "https://localhost:" .. t.port .. "/__admin/health" })
        assert.equal(200, localhost.status)
      end)
      t:stop()
      assert(ok, err)
    end)
  end)

  describe("authentication", function()
    it("accepts the API token over Basic auth", function()
      assert.equal(200, s:http("GET", "/api/v2/job_statuses.json").status)
    end)

    it("answers 401 Couldn't authenticate you for missing or bad credentials", function()
      local bad = {
        "none",
        "Basic " .. standin.base64(standin.EMAIL .. "/token:wrong"),
        "Basic " .. standin.base64("someone@example.com/token:" .. standin.TOKEN),
        "Basic " .. standin.base64(standin.EMAIL .. ":" .. standin.TOKEN), -- password auth is gone
      }
      for _, auth in ipairs(bad) do
        local res = s:http("GET", "/api/v2/users/1.json", { auth = auth })
        assert.equal(401, res.status, auth)
        assert.equal('{"error":"Couldn\'t authenticate you"}', res.body)
        assert.equal('Basic realm="Web Password"', res.headers["www-authenticate"])
        assert.equal("application/json; charset=utf-8", res.headers["content-type"])
      end
    end)

    it("accepts the default OAuth access token and refuses unknown ones with invalid_token", function()
      assert.equal(200, s:http("GET", "/api/v2/job_statuses", { auth = "bearer" }).status)
      local res = s:http("GET", "/api/v2/job_statuses", { auth = "Bearer nope" })
      assert.equal(401, res.status)
      assert.same({ error = "invalid_token",
        error_description = "The access token provided is expired, revoked, malformed or invalid for other reasons." },
        standin.decode(res.body))
    end)

    local function refresh(rt, form)
      local body
      if form then
        body = "grant_type=refresh_token&refresh_token=" .. rt .. "&client_id=" .. standin.CLIENT_ID
          .. "&client_secret=" .. standin.CLIENT_SECRET
        return s:http("POST", "/oauth/tokens", { auth = "none", body = body,
          headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
      end
      return s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "refresh_token",
        refresh_token = rt, client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } })
    end

    it("rotates on refresh: a new pair works, the old access and refresh tokens stop working", function()
      local res = refresh(standin.OAUTH_REFRESH)
      assert.equal(200, res.status, res.body)
      local tok = standin.decode_ordered(res.body)
      assert.same({ "access_token", "refresh_token", "token_type", "scope", "expires_in" }, standin.keys_of(tok))
      assert.equal("bearer", tok.token_type)
      assert.equal("read write", tok.scope)
      assert.equal(1800, tok.expires_in)
      assert.are_not.equal(standin.OAUTH_ACCESS, tok.access_token)
      assert.are_not.equal(standin.OAUTH_REFRESH, tok.refresh_token)
      assert.equal(200, s:http("GET", "/api/v2/job_statuses", { auth = "Bearer " .. tok.access_token }).status)
      assert.equal(401, s:http("GET", "/api/v2/job_statuses", { auth = "bearer" }).status)
      local old = refresh(standin.OAUTH_REFRESH)
      assert.equal(400, old.status)
      assert.equal("invalid_grant", standin.decode(old.body).error)
      assert.is_string(standin.decode(old.body).error_description)
      -- form-encoded works too, and rotates again
      local again = refresh(tok.refresh_token, true)
      assert.equal(200, again.status, again.body)
      assert.equal(401, s:http("GET", "/api/v2/job_statuses", { auth = "Bearer " .. tok.access_token }).status)
    end)

    it("issues an access token for client_credentials and refuses a wrong client secret", function()
      local res = s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "client_credentials",
        client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } })
      assert.equal(200, res.status)
      local tok = standin.decode(res.body)
      assert.is_nil(tok.refresh_token)
      assert.equal(200, s:http("GET", "/api/v2/job_statuses", { auth = "Bearer " .. tok.access_token }).status)
      local bad = s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "client_credentials",
        client_id = standin.CLIENT_ID, client_secret = "wrong" } })
      assert.equal(401, bad.status)
      assert.equal("invalid_client", standin.decode(bad.body).error)
    end)

    it("expires access tokens after token_ttl_s", function()
      s:config{ token_ttl_s = 2 } -- long enough for a loaded machine to use the token once
      local res = s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "client_credentials",
        client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } })
      local tok = standin.decode(res.body)
      assert.equal(2, tok.expires_in)
      assert.equal(200, s:http("GET", "/api/v2/job_statuses", { auth = "Bearer " .. tok.access_token }).status)
      sleep(2.1)
      local late = s:http("GET", "/api/v2/job_statuses", { auth = "Bearer " .. tok.access_token })
      assert.equal(401, late.status)
      assert.equal("invalid_token", standin.decode(late.body).error)
      assert.equal(401, s:http("GET", "/api/v2/job_statuses", { auth = "bearer" }).status)
    end)

    it("expire_tokens expires every access token now but keeps refresh tokens", function()
      s:config{ expire_tokens = true }
      assert.equal(401, s:http("GET", "/api/v2/job_statuses", { auth = "bearer" }).status)
      local res = refresh(standin.OAUTH_REFRESH)
      assert.equal(200, res.status)
      local tok = standin.decode(res.body)
      assert.equal(200, s:http("GET", "/api/v2/job_statuses", { auth = "Bearer " .. tok.access_token }).status)
    end)
  end)

  describe("create_or_update", function()
    it("creates with 201, an absolute Location and the full user in Zendesk's key order", function()
      local res = upsert{ name = "Ann", email = "ann@example.com", external_id = "ann-1", tags = { "vip" } }
      assert.equal(201, res.status)
      local doc = standin.decode_ordered(res.body)
      assert.same({ "user" }, standin.keys_of(doc))
      local u = doc.user
      assert.same(USER_KEYS, standin.keys_of(u))
      assert.equal(s.url .. "/api/v2/users/" .. u.id .. ".json", res.headers.location)
      assert.equal(s.url .. "/api/v2/users/" .. u.id .. ".json", u.url)
      assert.equal(36146830593, u.id)
      assert.equal("Ann", u.name)
      assert.equal("ann@example.com", u.email)
      assert.equal("ann-1", u.external_id)
      assert.same({ "vip" }, u.tags)
      -- Zendesk's defaults for a new end user
      assert.equal("end-user", u.role)
      assert.is_false(u.verified)
      assert.equal("en-US", u.locale)
      assert.equal(1, u.locale_id)
      assert.equal("requested", u.ticket_restriction)
      assert.is_true(u.restricted_agent)
      assert.is_true(u.active)
      assert.equal(standin.null, u.organization_id)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", u.created_at)
      assert.same({ "department", "employee_number", "level", "score", "start_date", "vip" },
        standin.keys_of(u.user_fields))
      assert.equal(standin.null, u.user_fields.level)
      assert.is_false(u.user_fields.vip)
      assert.equal("[]", upsert({ name = "NoTags", email = "nt@example.com" }).body:match('"tags":(%[%])'))
    end)

    it("accepts the path with and without .json", function()
      local bare = upsert({ name = "A", email = "a@example.com" }, { path = "/api/v2/users/create_or_update" })
      assert.equal(201, bare.status)
      assert.equal(200, upsert({ name = "A2", email = "a@example.com" }).status)
    end)

    it("updates the user matched by email with 200 and the same id", function()
      local id = user_of(upsert{ name = "Bob", email = "bob@example.com" }).id
      local res = upsert{ name = "Robert", email = "BOB@example.com" }
      assert.equal(200, res.status)
      local u = user_of(res)
      assert.equal(id, u.id)
      assert.equal("Robert", u.name)
      assert.is_nil(res.headers.location)
      assert.equal(1, #s:users())
    end)

    it("matches external_id case-insensitively and stores the request's case", function()
      local id = user_of(upsert{ name = "Cy", external_id = "abc-XYZ" }).id
      local res = upsert{ name = "Cy", external_id = "ABC-xyz" }
      assert.equal(200, res.status)
      assert.equal(id, user_of(res).id)
      assert.equal("ABC-xyz", user_of(res).external_id)
      assert.equal("ABC-xyz", s:users()[1].external_id)
    end)

    it("prefers external_id over email when they point at different users", function()
      local a = user_of(upsert{ name = "A", email = "a@example.com" }).id
      local b = user_of(upsert{ name = "B", external_id = "b-ext" }).id
      local res = upsert{ name = "B again", external_id = "b-ext", email = "b@example.com" }
      assert.equal(200, res.status)
      assert.equal(b, user_of(res).id)
      assert.are_not.equal(a, b)
      -- an email owned by another user cannot be added
      local dup = upsert{ name = "B", external_id = "b-ext", email = "a@example.com" }
      assert.equal(422, dup.status)
      local d = standin.decode(dup.body).details.email[1]
      assert.equal("DuplicateValue", d.error)
    end)

    it("never matches a deleted user: the same email and external_id create a new one", function()
      local id = user_of(upsert{ name = "Del", email = "del@example.com", external_id = "del-1" }).id
      local del = s:http("DELETE", "/api/v2/users/" .. id .. ".json")
      assert.equal(200, del.status)
      local res = upsert{ name = "Del", email = "del@example.com", external_id = "del-1" }
      assert.equal(201, res.status)
      assert.are_not.equal(id, user_of(res).id)
    end)

    it("looks a user up by an id key, even empty or null, and answers 404 when unknown", function()
      local id = user_of(upsert{ name = "Ida", email = "ida@example.com" }).id
      for _, body in ipairs{
        '{"user":{"id":"","name":"X","email":"x@example.com"}}',
        '{"user":{"id":null,"name":"X","email":"x@example.com"}}',
        '{"user":{"id":12345,"name":"X","email":"x@example.com"}}',
      } do
        local res = s:http("POST", UPSERT, { body = body })
        assert.equal(404, res.status, body)
        assert.equal('{"error":"RecordNotFound","description":"Not found"}', res.body)
      end
      local res = s:http("POST", UPSERT, { body = '{"user":{"id":' .. id .. ',"name":"Ida B"}}' })
      assert.equal(200, res.status)
      assert.equal("Ida B", user_of(res).name)
      assert.equal(1, #s:users())
    end)

    it("adds a changed email or phone as a secondary identity, keeping the primary", function()
      local u = user_of(upsert{ name = "Pri", email = "first@example.com", external_id = "pri", phone = "+15550001" })
      local res = upsert{ external_id = "pri", email = "second@example.com", phone = "+15550002" }
      assert.equal(200, res.status)
      local after = user_of(res)
      assert.equal("first@example.com", after.email)
      assert.equal("+15550001", after.phone)
      local ids = standin.decode(s:http("GET", "/api/v2/users/" .. u.id .. "/identities.json").body).identities
      local seen = {}
      for _, it in ipairs(ids) do seen[it.type .. ":" .. it.value] = it.primary end
      assert.is_true(seen["email:first@example.com"])
      assert.is_false(seen["email:second@example.com"])
      assert.is_true(seen["phone_number:+15550001"])
      assert.is_false(seen["phone_number:+15550002"])
      -- the secondary email now finds the same user
      assert.equal(u.id, user_of(upsert{ name = "Pri", email = "second@example.com" }).id)
    end)

    it("finds or creates an organization by name and sets organization_id directly", function()
      local a = user_of(upsert{ name = "O1", email = "o1@example.com", organization = { name = "Acme" } })
      local b = user_of(upsert{ name = "O2", email = "o2@example.com", organization = { name = "ACME" } })
      local c = user_of(upsert{ name = "O3", email = "o3@example.com", organization = { name = "Other" } })
      assert.is_number(a.organization_id)
      assert.equal(a.organization_id, b.organization_id)
      assert.are_not.equal(a.organization_id, c.organization_id)
      local res = s:http("POST", UPSERT,
        { body = '{"user":{"name":"O4","email":"o4@example.com","organization_id":9007199254740993}}' })
      assert.matches('"organization_id":9007199254740993,', res.body, 1, true)
    end)

    it("validates user_fields by type, lists every configured key, and warns on unknown keys", function()
      local res = upsert{ name = "F", email = "f@example.com", user_fields = {
        level = "gold", employee_number = 42, start_date = "2024-02-29", vip = true, department = "Ops",
        score = 4.5, shoe_size = 44 }, favourite_colour = "blue" }
      assert.equal(201, res.status, res.body)
      local uf = user_of(res).user_fields
      assert.same({ level = "gold", employee_number = 42, start_date = "2024-02-29", vip = true,
        department = "Ops", score = 4.5 }, uf)
      local warn = res.headers["x-zendesk-api-warn"]
      assert.matches('"user.favourite_colour"', warn, 1, true)
      assert.matches('"user.user_fields.shoe_size"', warn, 1, true)
      assert.matches(":unpermitted_keys=>", warn, 1, true)
      for field, v in pairs{ employee_number = "forty-two", start_date = "2023-02-30", vip = "yes", score = "x" } do
        local bad = upsert{ name = "F", email = "f@example.com", user_fields = { [field] = v } }
        assert.equal(422, bad.status, field)
        local e = standin.decode(bad.body)
        assert.equal("RecordInvalid", e.error)
        local found
        for _, entries in pairs(e.details) do
          for _, d in ipairs(entries) do if d.field_key == field then found = d end end
        end
        assert.is_table(found, bad.body)
        assert.is_string(found.description)
      end
      -- configured fields come from the config
      s:config{ user_fields = { tier = "integer" } }
      local t = user_of(upsert{ name = "T", email = "t@example.com", user_fields = { tier = 3 } })
      assert.same({ tier = 3 }, t.user_fields)
    end)

    it("answers 422 RecordInvalid in Zendesk's shapes for email, name and role", function()
      local res = upsert{ name = "William Bad", email = "badmail", external_id = "badmail" }
      assert.equal(422, res.status)
      assert.equal('{"error":"RecordInvalid","description":"Record validation errors","details":'
        .. '{"email":[{"description":"Email: badmail is not properly formatted"}]}}', res.body)
      local noname = standin.decode(upsert({ email = "noname@example.com" }).body)
      assert.equal("RecordInvalid", noname.error)
      assert.is_string(noname.details.name[1].description)
      assert.is_nil(noname.details.name[1].error)
      local role = upsert{ name = "R", email = "r@example.com", role = "overlord" }
      assert.equal(422, role.status)
      assert.equal("InvalidValue", standin.decode(role.body).details.role[1].error)
      assert.equal(0, #s:users())
    end)

    it("limits create_or_update per user, with its own header and a text/plain 429", function()
      s:config{ per_user_limit = 2 }
      local first = upsert{ name = "Lim", email = "lim@example.com" }
      assert.matches("^total=2; remaining=1; resets=%d+$", first.headers["zendesk-ratelimit-create-update-user"])
      local second = upsert{ name = "Lim", email = "lim@example.com" }
      assert.matches("^total=2; remaining=0; resets=%d+$", second.headers["zendesk-ratelimit-create-update-user"])
      local third = upsert{ name = "Lim", email = "lim@example.com" }
      assert.equal(429, third.status)
      assert.equal("text/plain; charset=UTF-8", third.headers["content-type"])
      assert.matches("^%d+$", third.headers["retry-after"])
      assert.is_true(tonumber(third.headers["retry-after"]) >= 1)
      assert.equal("You have exceeded the rate limit for updating a single unique user. Please wait and try again.",
        third.body)
      -- another user is not affected, and the account budget is not spent
      assert.equal(201, upsert({ name = "Other", email = "other@example.com" }).status)
      assert.equal(1, s:stats().per_user_limited)
      s:config{ per_user_limit = 0 }
      assert.equal(200, upsert({ name = "Lim", email = "lim@example.com" }).status)
    end)
  end)

  describe("create_or_update_many and jobs", function()
    it("answers 200 with a queued job_status: V3 id, absolute url, exact keys in order", function()
      local res = s:http("POST", MANY, { body = { users = { { name = "A", email = "a@example.com" } } } })
      assert.equal(200, res.status)
      local doc = standin.decode_ordered(res.body)
      assert.same({ "job_status" }, standin.keys_of(doc))
      local job = doc.job_status
      assert.same(JOB_KEYS, standin.keys_of(job))
      assert.matches("^V3%-%x+$", job.id)
      assert.equal(35, #job.id)
      assert.matches("^V3%-[0-9a-f]+$", job.id)
      assert.equal(s.url .. "/api/v2/job_statuses/" .. job.id .. ".json", job.url)
      assert.equal(1, job.total)
      assert.equal("queued", job.status)
      assert.equal(standin.null, job.progress)
      assert.equal(standin.null, job.message)
      assert.equal(standin.null, job.results)
    end)

    it("refuses more than 100 users with 400 TooManyValues", function()
      local list = {}
      for i = 1, 101 do list[i] = { name = "U", email = "u" .. i .. "@example.com" } end
      local res = s:http("POST", MANY, { body = { users = list } })
      assert.equal(400, res.status)
      assert.equal('{"error":"TooManyValues","description":"Maximum 100 users may be created per call"}', res.body)
    end)

    it("answers 403 when imports are disabled", function()
      s:config{ imports_enabled = false }
      local res = s:http("POST", MANY, { body = { users = { { name = "A", email = "a@example.com" } } } })
      assert.equal(403, res.status)
      local e = standin.decode(res.body).error
      assert.equal("Forbidden", e.title)
      assert.matches("You do not have access to this page", e.message, 1, true)
    end)

    it("answers 429 TooManyJobs with Retry-After past max_jobs queued or working", function()
      s:config{ max_jobs = 2, job_delay_ms = 3000 }
      submit{ { name = "A", email = "a@example.com" } }
      submit{ { name = "B", email = "b@example.com" } }
      local res = s:http("POST", MANY, { body = { users = { { name = "C", email = "c@example.com" } } } })
      assert.equal(429, res.status)
      assert.equal("TooManyJobs", standin.decode(res.body).error)
      assert.matches("^%d+$", res.headers["retry-after"])
      assert.equal(1, s:stats().too_many_jobs)
    end)

    it("goes queued -> working -> completed with results in request order", function()
      assert.equal(201, upsert({ name = "Existing", email = "old@example.com", external_id = "old" }).status)
      s:config{ job_delay_ms = 1000 } -- a phase long enough to be seen between polls
      local job = submit{
        { name = "New", email = "new@example.com", external_id = "n-1" },
        { name = "Bad", email = "not-an-email" },
        { name = "Old", external_id = "OLD" },
        { name = "New 2", email = "new2@example.com" },
      }
      assert.equal("queued", job.status)
      local working
      local done, seen
      for _ = 1, 200 do
        local j = standin.decode_ordered(poll(job.id).body).job_status
        assert.same(JOB_KEYS, standin.keys_of(j))
        if j.status == "working" then working = j end
        if j.status == "completed" then done = j break end
        sleep(0.05)
      end
      seen = working
      assert.is_table(seen, "the job was never seen working")
      assert.equal(2, seen.progress)
      assert.matches("^Creating User #2$", seen.message) -- row 2 failed while creating
      assert.equal(standin.null, seen.results)
      assert.is_table(done, "the job did not complete")
      assert.equal(4, done.progress)
      assert.equal(4, done.total)
      assert.matches("^Completed at %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d %+0000$", done.message)
      local r = done.results
      assert.equal(4, #r)
      assert.same({ "id", "status", "email", "external_id" }, standin.keys_of(r[1]))
      assert.equal("Created", r[1].status)
      assert.equal("new@example.com", r[1].email)
      assert.equal("n-1", r[1].external_id)
      assert.same({ "index", "status", "error", "details" }, standin.keys_of(r[2]))
      assert.equal(1, r[2].index)
      assert.equal("Failed", r[2].status)
      assert.equal("UserCreateError", r[2].error)
      assert.equal("Email: not-an-email is not properly formatted", r[2].details)
      assert.equal("Updated", r[3].status)
      assert.equal(36146830593, r[3].id)
      assert.equal("OLD", r[3].external_id)
      assert.equal("Created", r[4].status)
      assert.is_nil(r[4].external_id)
      assert.equal(3, #s:users())
    end)

    it("reports an update failure with the known id and UserUpdateError", function()
      local id = user_of(upsert{ name = "X", email = "x@example.com", external_id = "x" }).id
      s:config{ job_delay_ms = 0 }
      local job = submit{ { external_id = "x", role = "wizard" } }
      local done = wait_job(job.id)
      local r = done.results[1]
      assert.equal(0, r.index)
      assert.equal(id, r.id)
      assert.equal("Failed", r.status)
      assert.equal("UserUpdateError", r.error)
      assert.is_string(r.details)
    end)

    it("completes quickly via a timer when job_delay_ms is 0", function()
      s:config{ job_delay_ms = 0 }
      local job = submit{ { name = "A", email = "a@example.com" } }
      local done, seen = wait_job(job.id, 100)
      assert.equal("completed", done.status)
      assert.equal(1, done.progress)
      assert.is_true(#seen >= 1)
    end)

    it("lists jobs and shows several with show_many", function()
      s:config{ job_delay_ms = 0 }
      local a = submit{ { name = "A", email = "a@example.com" } }
      local b = submit{ { name = "B", email = "b@example.com" } }
      wait_job(a.id)
      wait_job(b.id)
      local many = s:http("GET", "/api/v2/job_statuses/show_many.json?ids=" .. a.id .. "," .. b.id .. ",V3-nope")
      assert.equal(200, many.status)
      local list = standin.decode(many.body).job_statuses
      assert.equal(2, #list)
      local all = standin.decode(s:http("GET", "/api/v2/job_statuses.json").body).job_statuses
      assert.equal(2, #all)
      assert.equal(b.id, all[1].id) -- newest first
    end)

    it("answers 404 to the first fresh_job_404_polls polls of a new job", function()
      s:config{ fresh_job_404_polls = 2, job_delay_ms = 0 }
      local job = submit{ { name = "A", email = "a@example.com" } }
      local first = poll(job.id)
      assert.equal(404, first.status)
      assert.equal('{"error":"RecordNotFound","description":"Not found"}', first.body)
      local many = s:http("GET", "/api/v2/job_statuses/show_many?ids=" .. job.id)
      assert.same({}, standin.decode(many.body).job_statuses)
      assert.equal(200, poll(job.id).status)
    end)

    it("forgets jobs after job_expiry_s", function()
      s:config{ job_expiry_s = 2, job_delay_ms = 0 }
      local job = submit{ { name = "A", email = "a@example.com" } }
      assert.equal(200, poll(job.id).status)
      sleep(2.1)
      assert.equal(404, poll(job.id).status)
    end)

    it("ends jobs as failed or killed on a job fault", function()
      s:config{ job_delay_ms = 0 }
      for _, how in ipairs{ "failed", "killed" } do
        s:fault{ job = how }
        local job = submit{ { name = "A", email = how .. "@example.com" } }
        local done = wait_job(job.id)
        assert.equal(how, done.status)
        assert.equal(standin.null, done.results)
        assert.is_string(done.message)
      end
      assert.equal(0, #s:users())
      local job = submit{ { name = "A", email = "ok@example.com" } }
      assert.equal("completed", wait_job(job.id).status)
    end)

    it("runs create_many and update_many with their own result shapes", function()
      s:config{ job_delay_ms = 0 }
      local res = s:http("POST", "/api/v2/users/create_many.json",
        { body = '{"users":[{"id":"","name":"testUser"},{"id":"","name":"testUser"}]}' })
      assert.equal(200, res.status)
      local created = wait_job(standin.decode(res.body).job_status.id)
      assert.same({ "id", "status" }, standin.keys_of(standin.decode_ordered(
        s:http("GET", "/api/v2/job_statuses/" .. created.id).body).job_status.results[1]))
      local id = created.results[1].id
      local upd = s:http("PUT", "/api/v2/users/update_many.json",
        { body = { users = { { id = id, name = "renamed" }, { id = 1, name = "ghost" } } } })
      assert.equal(200, upd.status)
      local done = wait_job(standin.decode(upd.body).job_status.id)
      assert.same({ id = id, action = "update", status = "Updated", success = true }, done.results[1])
      assert.equal("Failed", done.results[2].status)
      assert.equal(1, done.results[2].index)
      assert.equal("renamed", standin.decode(s:http("GET", "/api/v2/users/" .. id).body).user.name)
    end)
  end)

  describe("users endpoints", function()
    it("shows one user, several by ids or external_ids, and searches", function()
      local a = user_of(upsert{ name = "A", email = "a@example.com", external_id = "ea" })
      local b = user_of(upsert{ name = "B", email = "b@example.com", external_id = "eb" })
      local one = s:http("GET", "/api/v2/users/" .. a.id .. ".json")
      assert.equal(200, one.status)
      assert.same(a, user_of(one))
      assert.equal(404, s:http("GET", "/api/v2/users/1.json").status)
      local by_ids = standin.decode(s:http("GET", "/api/v2/users/show_many.json?ids=" .. b.id .. "," .. a.id).body)
      assert.equal(2, #by_ids.users)
      local by_ext = standin.decode(s:http("GET", "/api/v2/users/show_many?external_ids=EB,nope").body)
      assert.equal(1, #by_ext.users)
      assert.equal(b.id, by_ext.users[1].id)
      for _, q in ipairs{ "query=email:a@example.com", "query=external_id:EA", "external_id=ea",
                          "query=a%40example.com" } do
        local res = standin.decode_ordered(s:http("GET", "/api/v2/users/search.json?" .. q).body)
        assert.same({ "users", "next_page", "previous_page", "count" }, standin.keys_of(res), q)
        assert.equal(1, res.count, q)
        assert.equal(a.id, res.users[1].id, q)
      end
      local none = standin.decode(s:http("GET", "/api/v2/users/search.json?query=email:zz@example.com").body)
      assert.same({}, none.users)
      assert.equal(0, none.count)
    end)

    it("deletes a user: identifiers cleared, inactive, no longer found", function()
      local a = user_of(upsert{ name = "A", email = "a@example.com", external_id = "ea" })
      local res = s:http("DELETE", "/api/v2/users/" .. a.id .. ".json")
      assert.equal(200, res.status)
      local u = user_of(res)
      assert.equal(a.id, u.id)
      assert.equal(standin.null, u.email)
      assert.equal(standin.null, u.external_id)
      assert.is_false(u.active)
      assert.equal(0, standin.decode(s:http("GET", "/api/v2/users/search?external_id=ea").body).count)
      assert.equal(0, #s:users())
      assert.equal(1, #s:users(true))
    end)

    it("creates with POST /users and updates with PUT /users/{id}", function()
      local res = s:http("POST", "/api/v2/users.json", { body = '{"user":{"id":"","name":"testUser"}}' })
      assert.equal(201, res.status)
      local id = user_of(res).id
      assert.equal(s.url .. "/api/v2/users/" .. id .. ".json", res.headers.location)
      local put = s:http("PUT", "/api/v2/users/" .. id .. ".json", { body = { user = { tags = { "a", "b" } } } })
      assert.equal(200, put.status)
      assert.same({ "a", "b" }, user_of(put).tags)
      local missing = s:http("PUT", "/api/v2/users/9223372036854775807.json",
        { body = '{"user":{"id":9223372036854775807,"name":"testUser"}}' })
      assert.equal(404, missing.status)
    end)
  end)

  describe("headers and limits", function()
    it("sends every rate-limit spelling, request ids, the API version and the content type", function()
      local a = s:http("GET", "/api/v2/job_statuses.json")
      local b = s:http("GET", "/api/v2/job_statuses.json")
      for _, h in ipairs(RATE_HEADERS) do
        assert.matches("^%d+$", a.headers[h], 1, false)
      end
      assert.equal("700", a.headers["x-rate-limit"])
      assert.equal("700", a.headers["ratelimit-limit"])
      assert.equal("700", a.headers["rate-limit"])
      assert.equal(tonumber(a.headers["x-rate-limit-remaining"]) - 1, tonumber(b.headers["x-rate-limit-remaining"]))
      assert.is_string(a.headers["x-request-id"])
      assert.equal(a.headers["x-request-id"], a.headers["x-zendesk-request-id"])
      assert.are_not.equal(a.headers["x-request-id"], b.headers["x-request-id"])
      assert.equal("v2", a.headers["x-zendesk-api-version"])
      assert.equal("application/json; charset=utf-8", a.headers["content-type"])
      local created = upsert{ name = "H", email = "h@example.com" }
      for _, h in ipairs(RATE_HEADERS) do assert.is_string(created.headers[h], h) end
    end)

    it("limits the whole account across both workers, with a text/plain 429 and Retry-After", function()
      s:config{ rate_limit_per_minute = 5 }
      local results, workers = {}, {}
      local nworkers = 0
      for _ = 1, 10 do
        for _, r in ipairs(s:http_parallel(12, "GET", "/api/v2/job_statuses.json")) do
          results[#results + 1] = r
          if not workers[r.worker] then workers[r.worker] = true; nworkers = nworkers + 1 end
        end
        if nworkers >= 2 then break end
      end
      assert.equal(2, nworkers, "both workers should have answered")
      local ok, limited = 0, 0
      for _, r in ipairs(results) do
        if r.status == 200 then ok = ok + 1 elseif r.status == 429 then limited = limited + 1 end
      end
      assert.equal(5, ok)
      assert.equal(#results - 5, limited)
      assert.equal(limited, s:stats().rate_limited)
      local res = s:http("GET", "/api/v2/job_statuses.json")
      assert.equal(429, res.status)
      assert.equal("text/plain; charset=UTF-8", res.headers["content-type"])
      assert.matches("^%d+$", res.headers["retry-after"])
      local wait = tonumber(res.headers["retry-after"])
      assert.is_true(wait >= 1 and wait <= 60)
      assert.equal("0", res.headers["x-rate-limit-remaining"])
      s:config{ rate_limit_per_minute = 0 }
      assert.equal(200, s:http("GET", "/api/v2/job_statuses.json").status)
    end)

    it("compresses larger JSON answers for clients that accept gzip", function()
      for i = 1, 5 do upsert{ name = "G" .. i, email = "g" .. i .. "@example.com" } end
      local ids = {}
      for i, u in ipairs(s:users()) do ids[i] = u.id end
      local path = "/api/v2/users/show_many.json?ids=" .. table.concat(ids, ",")
      local gz = s:http("GET", path, { compressed = true })
      assert.equal(200, gz.status)
      assert.equal("gzip", gz.headers["content-encoding"])
      assert.equal(5, #standin.decode(gz.body).users)
      local plain = s:http("GET", path)
      assert.is_nil(plain.headers["content-encoding"])
      local small = s:http("GET", "/api/v2/users/1.json", { compressed = true })
      assert.is_nil(small.headers["content-encoding"])
    end)

    it("never creates the same user twice under concurrent upserts", function()
      s:config{ per_user_limit = 0 }
      local codes = {}
      local same = { body = { user = { name = "Same", email = "same@example.com" } } }
      for _, r in ipairs(s:http_parallel(16, "POST", UPSERT, same)) do
        codes[r.status] = (codes[r.status] or 0) + 1
      end
      assert.equal(1, codes[201])
      assert.equal(15, codes[200])
      assert.equal(1, #s:users())
    end)
  end)

  describe("exact ids", function()
    it("issues ids from id_start as exact integer literals in users, Location and job results", function()
      s:config{ id_start = 9007199254740993, job_delay_ms = 0 }
      local res = upsert{ name = "Big", email = "big@example.com" }
      assert.matches('^{"user":{"id":9007199254740993,', res.body)
      assert.equal(s.url .. "/api/v2/users/9007199254740993.json", res.headers.location)
      local job = submit{ { name = "Big2", email = "big2@example.com" }, { email = "big@example.com", name = "B" } }
      wait_job(job.id)
      local raw = poll(job.id).body
      assert.matches('"id":9007199254740994,"status":"Created"', raw, 1, true)
      assert.matches('"id":9007199254740993,"status":"Updated"', raw, 1, true)
      assert.not_matches("e%+", raw)
      assert.not_matches("%d%.0[,}]", raw)
      if math.type then
        assert.equal(9007199254740994, s:users()[2].id)
        assert.equal("integer", math.type(s:users()[2].id))
      end
      s:config{ id_start = "9223372036854775800" }
      assert.matches('"id":9223372036854775800,', upsert({ name = "Max", email = "max@example.com" }).body, 1, true)
    end)

    it("compares a body id exactly beyond 2^53 and records the raw body", function()
      s:config{ id_start = 9223372036854775806 }
      assert.equal(201, upsert({ name = "Near", email = "near@example.com" }).status)
      local body = '{"user":{"id":9223372036854775807,"name":"testUser"}}'
      local res = s:http("POST", UPSERT, { body = body })
      assert.equal(404, res.status)
      local found = s:http("POST", UPSERT, { body = '{"user":{"id":9223372036854775806,"name":"Found"}}' })
      assert.equal(200, found.status)
      local reqs = s:requests()
      assert.equal(body, reqs[#reqs - 1].body)
      assert.equal("/api/v2/users/create_or_update.json", reqs[#reqs - 1].path)
      assert.equal("POST", reqs[#reqs - 1].method)
      assert.equal("<redacted>", reqs[#reqs - 1].headers.authorization)
      assert.equal("application/json", reqs[#reqs - 1].headers["content-type"])
    end)
  end)

  describe("faults", function()
    it("answers a given status with headers, body and content type, for count requests after `after`", function()
      s:fault{ path = "/api/v2/users/create_or_update.json", status = 503, headers = { ["Retry-After"] = "7" },
        content_type = "text/html", body = "<html>down</html>", count = 2, after = 1 }
      local codes = {}
      for i = 1, 4 do codes[i] = upsert({ name = "F", email = "f@example.com" }).status end
      assert.same({ 201, 503, 503, 200 }, codes)
      s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "7" }, content_type = "text/html",
        body = "<html>down</html>" }
      local res = upsert{ name = "F", email = "f@example.com" }
      assert.equal("7", res.headers["retry-after"])
      assert.equal("text/html", res.headers["content-type"])
      assert.equal("<html>down</html>", res.body)
      s:fault{ path = UPSERT, status = 409 }
      assert.equal('{"error":"DatabaseConflict","description":"Database collision"}', upsert({ name = "F" }).body)
    end)

    it("matches a path prefix on segment boundaries, without .json, and an optional method", function()
      s:fault{ path = "/api/v2/job_statuses", status = 500, count = 2 }
      assert.equal(500, s:http("GET", "/api/v2/job_statuses/show_many.json?ids=x").status)
      assert.equal(500, s:http("GET", "/api/v2/job_statuses/V3-abc").status)
      assert.equal(200, s:http("GET", "/api/v2/job_statuses").status)
      s:fault{ path = "/api/v2/users/create_or_update", status = 502 }
      assert.equal(200, s:http("POST", MANY, { body = { users = {} } }).status)
      s:clear_faults()
      s:fault{ path = UPSERT, method = "GET", status = 500 }
      assert.equal(201, upsert({ name = "M", email = "m@example.com" }).status)
      local listed = select(2, s:admin("GET", "/__admin/faults")).faults
      assert.equal(1, #listed)
      assert.equal("GET", listed[1].method)
      s:clear_faults()
      assert.same({}, select(2, s:admin("GET", "/__admin/faults")).faults)
    end)

    it("reset: drops the connection mid-answer, a transport error for the client", function()
      s:fault{ path = UPSERT, action = "reset" }
      local res = upsert{ name = "R", email = "r@example.com" }
      assert.are_not.equal(0, res.exit)
      assert.equal(201, upsert({ name = "R", email = "r@example.com" }).status)
    end)

    it("invalid_json: 200 with a JSON content type and a body that is not JSON", function()
      s:fault{ path = UPSERT, action = "invalid_json" }
      local res = upsert{ name = "I", email = "i@example.com" }
      assert.equal(200, res.status)
      assert.equal(0, res.exit)
      assert.matches("^application/json", res.headers["content-type"])
      assert.is_nil((standin.decode(res.body)))
    end)

    it("truncate: 200 with a JSON body cut in half and a matching Content-Length", function()
      s:fault{ path = UPSERT, action = "truncate" }
      local res = upsert{ name = "T", email = "t@example.com" }
      assert.equal(200, res.status)
      assert.equal(0, res.exit)
      assert.equal(#res.body, tonumber(res.headers["content-length"]))
      assert.matches('^{"user":{"id":', res.body)
      assert.is_nil((standin.decode(res.body)))
    end)

    it("delay: sleeps delay_ms, then answers normally", function()
      s:fault{ path = UPSERT, action = "delay", delay_ms = 500 }
      local res = upsert{ name = "D", email = "d@example.com" }
      assert.equal(201, res.status)
      assert.is_true(res.time >= 0.45, "answered after " .. tostring(res.time) .. " s")
    end)

    it("hang: never answers", function()
      s:fault{ path = UPSERT, action = "hang" }
      local res = upsert({ name = "H", email = "h@example.com" }, { timeout = 1 })
      assert.equal(0, res.status)
      assert.equal(28, res.exit) -- curl: operation timed out
      assert.equal(201, upsert({ name = "H", email = "h@example.com" }).status)
    end)
  end)

  describe("admin", function()
    it("validates config and returns the full config", function()
      local status, body = s:admin("POST", "/__admin/config", { nope = 1 })
      assert.equal(400, status)
      assert.matches("unknown config key", body.error)
      local c = s:config{ job_delay_ms = 7 }
      assert.equal(7, c.job_delay_ms)
      for _, k in ipairs{ "job_delay_ms", "imports_enabled", "rate_limit_per_minute", "per_user_limit", "max_jobs",
                          "fresh_job_404_polls", "job_expiry_s", "token_ttl_s", "id_start", "user_fields" } do
        assert.is_not_nil(c[k], k)
      end
      assert.same(c, s:config())
    end)

    it("reset drops users, jobs, tokens, faults, recorded requests, stats and config", function()
      s:config{ job_delay_ms = 0, rate_limit_per_minute = 50 }
      upsert{ name = "A", email = "a@example.com" }
      local job = submit{ { name = "B", email = "b@example.com" } }
      wait_job(job.id)
      s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "refresh_token",
        refresh_token = standin.OAUTH_REFRESH, client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } })
      s:fault{ path = "/api/v2/users", status = 500, count = 100 }
      s:reset()
      assert.equal(0, #s:users(true))
      assert.equal(0, #s:requests())
      assert.same({ requests = 0, rate_limited = 0, per_user_limited = 0, jobs = 0, too_many_jobs = 0,
        faults = 0, users = 0, max_concurrent = 0, gzipped = 0 }, s:stats())
      assert.equal(100, s:config().job_delay_ms)
      assert.equal(700, s:config().rate_limit_per_minute)
      assert.equal(404, poll(job.id).status)
      assert.equal(200, s:http("GET", "/api/v2/job_statuses", { auth = "bearer" }).status)
      assert.equal(201, upsert({ name = "A", email = "a@example.com" }).status)
      assert.equal(36146830593, s:users()[1].id)
    end)

    it("records requests without the Authorization value", function()
      upsert{ name = "A", email = "a@example.com" }
      s:http("GET", "/api/v2/users/search.json?query=email:a@example.com", { auth = "bearer" })
      local reqs = s:requests()
      assert.equal(2, #reqs)
      assert.equal("GET", reqs[2].method)
      assert.equal("/api/v2/users/search.json", reqs[2].path)
      assert.equal("query=email:a@example.com", reqs[2].query)
      assert.equal("<redacted>", reqs[2].headers.authorization)
      local raw = select(2, s:admin("GET", "/__admin/requests"))
      assert.not_matches(standin.OAUTH_ACCESS, standin.encode(raw), 1, true)
      assert.not_matches(standin.base64(standin.EMAIL .. "/token:" .. standin.TOKEN), standin.encode(raw), 1, true)
    end)
  end)
end)
