-- Issue 12, the core's points: answer shapes (3), loopback (7), percent-encoded paths (8),
-- no resend of non-idempotent requests (11), the answer size cap and buffer release (14, 18),
-- one-line tostring (16), Retry-After digits only (17). Runs under valgrind and ASan.
local standin = require "support.standin"
local zendesk = require "zendesk"
local core = require "zendesk.core"

local UPSERT = "/api/v2/users/create_or_update"
local MANY = "/api/v2/users/create_or_update_many"
local JSON = "application/json; charset=utf-8"

describe("core defects (issue 12)", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() s:stop() end)
  before_each(function()
    s:reset()
    s:config{ per_user_limit = 0, job_delay_ms = 0 }
  end)

  local function client(opts)
    local o = { url = s.url, email = standin.EMAIL, token = standin.TOKEN, retry_base_delay = 0.01 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return zendesk.new(o)
  end

  local function count_requests(path)
    local n = 0
    for _, r in ipairs(s:requests()) do if r.path:find(path, 1, true) then n = n + 1 end end
    return n
  end

  describe("answer shapes (3)", function()
    local BAD_USERS = {
      ['{"user":{"id":"36146830593","email":"a@example.com"}}'] = "user.id",
      ['{"user":{"id":1.5,"email":"a@example.com"}}'] = "user.id",
      ['{"user":{"id":-3,"email":"a@example.com"}}'] = "user.id",
      ['{"user":{"id":0,"email":"a@example.com"}}'] = "user.id",
      ['{"user":{"id":null,"email":"a@example.com"}}'] = "user.id",
      ['{"user":{"id":true}}'] = "user.id",
      ['{"user":{"id":{"n":1}}}'] = "user.id",
      ['{"user":{"email":"a@example.com"}}'] = "user.id",
      ['{"user":[{"id":1}]}'] = "user",
      ['{"user":"ann"}'] = "user",
      ['{"user":null}'] = "user",
      ['{"users":[]}'] = "user",
      ["[1,2]"] = "user",
      ["null"] = "user",
    }

    it("a 200 or 201 whose user is not an object with a positive integer id is invalid_response", function()
      local c = client{ max_retries = 0 }
      for body, field in pairs(BAD_USERS) do
        for _, status in ipairs{ 200, 201 } do
          s:fault{ path = UPSERT, status = status, content_type = JSON, body = body }
          local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
          assert.is_nil(user, body)
          assert.equal("invalid_response", err.kind, body)
          assert.equal(status, err.status, body)
          assert.matches(field, err.message, 1, true)
          assert.is_string(err.request_id, body)
          assert.equal(1, err.attempts)
          assert.matches("^zendesk: invalid_response", tostring(err))
        end
      end
      c:close()
    end)

    it("checks the id with fields too, even when fields leaves id out", function()
      local c = client{ max_retries = 0 }
      for _, fields in ipairs{ { "id" }, { "name" }, { "name", "email" } } do
        for body in pairs(BAD_USERS) do
          s:fault{ path = UPSERT, status = 200, content_type = JSON, body = body }
          local user, err = c:upsert_user({ email = "a@example.com", name = "A" }, { fields = fields })
          assert.is_nil(user, body)
          assert.equal("invalid_response", err.kind, body)
        end
      end
      -- a good answer still comes back with just the fields asked for
      s:fault{ path = UPSERT, status = 200, content_type = JSON, body = '{"user":{"id":12,"name":"A","email":"a@x.io"}}' }
      assert.same({ name = "A" }, c:upsert_user({ email = "a@example.com", name = "A" }, { fields = { "name" } }))
      s:fault{ path = UPSERT, status = 200, content_type = JSON, body = '{"user":{"id":12,"name":"A","email":"a@x.io"}}' }
      assert.same({ id = 12 }, c:upsert_user({ email = "a@example.com", name = "A" }, { fields = { "id" } }))
      local user = assert(c:upsert_user({ email = "real@example.com", name = "R" }, { fields = { "email" } }))
      assert.same({ email = "real@example.com" }, user)
      c:close()
    end)

    local BAD_JOBS = {
      '{"job_status":{"id":5,"status":"queued"}}',
      '{"job_status":{"id":"V3-abc"}}',
      '{"job_status":{"status":"queued"}}',
      '{"job_status":{"id":"V3-abc","status":7}}',
      '{"job_status":[]}',
      '{"job_status":"V3-abc"}',
      '{"job":{"id":"V3-abc","status":"queued"}}',
    }

    it("a job_status without a string id and status is invalid_response (upsert_users, job_status)", function()
      local c = client{ max_retries = 0 }
      for _, body in ipairs(BAD_JOBS) do
        s:fault{ path = MANY, status = 200, content_type = JSON, body = body }
        local job, err = c:upsert_users{ { email = "a@example.com", name = "A" } }
        assert.is_nil(job, body)
        assert.equal("invalid_response", err.kind, body)
        assert.matches("job_status", err.message, 1, true)
        s:fault{ path = "/api/v2/job_statuses/V3-abc", status = 200, content_type = JSON, body = body }
        job, err = c:job_status("V3-abc")
        assert.is_nil(job, body)
        assert.equal("invalid_response", err.kind, body)
      end
      -- the real thing still passes
      local job = assert(c:upsert_users{ { email = "a@example.com", name = "A" } })
      assert.is_string(job.id)
      assert.is_table(c:job_status(job.id))
      c:close()
    end)
  end)

  describe("loopback (7)", function()
    local function try(url)
      return pcall(core.new, { url = url, email = "a@example.com", token = "t" })
    end

    it("counts only 127.0.0.0/8, [::1] and localhost as loopback", function()
      for _, url in ipairs{ "http://127.attacker.example", "http://127.0.0.1.nip.io", "http://127.0.0.1.nip.io:8080",
                            "http://localhost.attacker.example", "http://127.0.0.256",
                            "http://127.0.0.1.2", "http://1270.0.0.1", "http://127-0-0-1.example",
                            "http://[::2]", "http://128.0.0.1", "http://localhost1" } do
        local ok, err = try(url)
        assert.is_false(ok, url)
        assert.matches("refusing plain http", tostring(err), 1, true)
      end
      for _, url in ipairs{ "http://127.0.0.1", "http://127.0.0.1:8089", "http://127.1.2.3", "http://127.255.255.255",
                            "http://localhost", "http://localhost:9000", "http://[::1]", "http://[::1]:9000" } do
        local ok, c = try(url)
        assert.is_true(ok, url .. ": " .. tostring(c))
        c:close()
      end
      local ok, c = pcall(core.new, { url = "http://127.attacker.example", email = "a@example.com", token = "t",
                                      allow_insecure_http = true })
      assert.is_true(ok, tostring(c))
      c:close()
    end)
  end)

  describe("percent-encoded paths (8)", function()
    it("refuses %2e, %2f, %5c in any case, dot segments and paths outside /api/v2/", function()
      local c = client()
      local bad = { "/api/v2/users/%2e%2e/%2e%2e/%2e%2e/__admin/config", "/api/v2/users/%2E%2E/%2E%2E/__admin/config",
                    "/api/v2/users/.%2e/.%2E/__admin/config", "/api/v2/users/%2e./x", "/api/v2/users%2f..%2f..%2fx",
                    "/api/v2/users%2F..", "/api/v2/users/%5c..%5cx", "/api/v2/users/%5C", "/api/v2/./users",
                    "/api/v2/users/.", "/api/v2/%252e%252e/x", "/api/v2/users/%00", "/api/v2/users/%zz",
                    "/api/v2/users/%2", "/__admin/config", "/api/v3/users", "/api/v2", "/apiv2/users", "/" }
      for _, path in ipairs(bad) do
        local v, err = c:request("GET", path)
        assert.is_nil(v, path)
        assert.equal("validation", err.kind, path)
      end
      local res = c._core:request_many{ { "GET", bad[1] }, { "GET", "/api/v2/users/1.json" }, { "GET", bad[5] } }
      assert.equal("validation", res[1].err.kind)
      assert.equal(404, res[2].err.status)
      assert.equal("validation", res[3].err.kind)
      assert.equal(1, #s:requests(), "only the good path may go out")
      -- escapes elsewhere are fine: in the query, and of other characters
      local v, meta = c:request("GET", "/api/v2/users/search.json?query=email%3Aa%40example.com%2Fx")
      assert.is_table(v, tostring(meta))
      c:close()
    end)
  end)

  describe("no resend of non-idempotent requests (11)", function()
    it("a POST that timed out after it was sent is not sent again, and the error says so", function()
      s:fault{ path = "/api/v2/users/create_many", action = "delay", delay_ms = 2500 }
      local c = client{ timeout = 1, max_retries = 3 }
      local v, err = c:request("POST", "/api/v2/users/create_many.json",
                               { users = { { email = "once@example.com", name = "Once" } } })
      assert.is_nil(v)
      assert.equal("timeout", err.kind)
      assert.equal(1, err.attempts)
      assert.matches("not resent: the server may have received it", err.message, 1, true)
      assert.matches("not resent", tostring(err), 1, true)
      c:close()
      core.sleep(2.5)   -- the delayed request completes on the server
      assert.equal(1, count_requests("/api/v2/users/create_many"))
      assert.equal(1, #s:users())
    end)

    it("applies to POST and PATCH in general, through request_many too", function()
      s:fault{ path = "/api/v2/users", method = "POST", action = "delay", delay_ms = 1500, count = 2 }
      s:fault{ path = "/api/v2/users/1", method = "PATCH", action = "delay", delay_ms = 1500, count = 2 }
      local c = client{ timeout = 0.5, max_retries = 3 }
      local res = c._core:request_many{ { "POST", "/api/v2/users.json", { user = { email = "p@example.com", name = "P" } } },
                                       { "PATCH", "/api/v2/users/1.json", { user = { name = "P" } } } }
      for i = 1, 2 do
        assert.equal("timeout", res[i].err.kind)
        assert.equal(1, res[i].err.attempts)
        assert.matches("not resent", res[i].err.message, 1, true)
      end
      c:close()
    end)

    it("idempotent requests (GET, PUT, DELETE, create_or_update) are still resent", function()
      local c = client{ timeout = 0.5, max_retries = 3 }
      s:fault{ path = "/api/v2/users/search", action = "delay", delay_ms = 1500 }
      local v, meta = c:request("GET", "/api/v2/users/search.json?query=x")
      assert.is_table(v, tostring(meta))
      assert.equal(2, meta.attempts)
      s:fault{ path = UPSERT, action = "delay", delay_ms = 1500 }
      v, meta = c:request("POST", UPSERT .. ".json", { user = { email = "u@example.com", name = "U" } })
      assert.is_table(v, tostring(meta))
      assert.equal(2, meta.attempts)
      c:close()
    end)

    it("a POST that cannot have arrived (connection refused) is resent", function()
      local c = zendesk.new{ url = "http://127.0.0.1:1", email = "a@example.com", token = "t",
                             max_retries = 2, retry_base_delay = 0.01 }
      local v, err = c:request("POST", "/api/v2/users/create_many.json", { users = {} })
      assert.is_nil(v)
      assert.equal("network", err.kind)
      assert.equal(3, err.attempts)
      assert.is_nil(err.message:find("not resent", 1, true))
      c:close()
    end)
  end)

  describe("answer size (14, 18)", function()
    local BIG = 9 * 1024 * 1024

    it("an answer over max_answer_bytes (8 MiB by default) is invalid_response 'answer too large', not retried", function()
      s:fault{ path = "/api/v2/users/1", status = 200, content_type = JSON, body = '{"user":{"id":1}}', pad = BIG,
               count = 5 }
      local c = client()
      local v, err = c:request("GET", "/api/v2/users/1.json")
      assert.is_nil(v)
      assert.equal("invalid_response", err.kind)
      assert.equal(200, err.status)
      assert.equal(1, err.attempts)
      assert.matches("answer too large %(%d+ bytes received, limit 8388608%)", err.message)
      assert.is_nil(err.message:find("Failure writing", 1, true))
      assert.matches("answer too large", tostring(err), 1, true)
      c:close()
    end)

    it("max_answer_bytes sets the cap; below it the answer is read", function()
      local c = client{ max_answer_bytes = 100000 }
      s:fault{ path = "/api/v2/users/1", status = 200, content_type = JSON, body = '{"user":{"id":1}}', pad = 150000 }
      local v, err = c:request("GET", "/api/v2/users/1.json")
      assert.is_nil(v)
      assert.equal("invalid_response", err.kind)
      assert.matches("limit 100000", err.message, 1, true)
      s:fault{ path = "/api/v2/users/1", status = 200, content_type = JSON, body = '{"user":{"id":1}}', pad = 90000 }
      v, err = c:request("GET", "/api/v2/users/1.json")
      assert.same({ user = { id = 1 } }, v, tostring(err))
      -- an upsert answer and an error answer are capped the same way
      s:fault{ path = UPSERT, status = 500, content_type = JSON, body = '{"error":"X"}', pad = 150000, count = 9 }
      v, err = c:upsert_user{ email = "a@example.com", name = "A" }
      assert.is_nil(v)
      assert.equal("invalid_response", err.kind)
      c:close()
      for _, bad in ipairs{ 0, -1, 1.5, "8M", 2 ^ 40 } do
        assert.has_error(function() client{ max_answer_bytes = bad } end)
      end
    end)

    it("releases answer buffers above 64 KiB after each call", function()
      local c = client()
      s:fault{ path = "/api/v2/users/1", status = 200, content_type = JSON, body = '{"user":{"id":1}}',
               pad = 2 * 1024 * 1024, count = 60 }
      local reqs = {}
      for i = 1, 60 do reqs[i] = { "GET", "/api/v2/users/1.json" } end
      local res = c._core:request_many(reqs)
      for i = 1, 60 do assert.same({ user = { id = 1 } }, res[i].value, tostring(res[i].err)) end
      assert.is_true(c._core:held_bytes() <= 60 * 2 * 64 * 1024, "buffers kept: " .. c._core:held_bytes())
      s:fault{ path = UPSERT, status = 200, content_type = JSON, body = '{"user":{"id":5}}', pad = 1024 * 1024 }
      assert(c:upsert_user{ email = "a@example.com", name = "A" })
      assert.is_true(c._core:held_bytes() <= 60 * 2 * 64 * 1024, "buffers kept: " .. c._core:held_bytes())
      -- small buffers stay for the next call
      assert(c:upsert_user{ email = "b@example.com", name = "B" })
      assert.is_true(c._core:held_bytes() > 0)
      c:close()
    end)
  end)

  describe("tostring (16)", function()
    it("is one line whatever the server sent in error, description, details or message", function()
      local c = client{ max_retries = 0 }
      local nasty = '{"error":"Record\\r\\nInvalid\\u0007","description":"line one\\nline two\\u0000\\u001b[31m",'
        .. '"details":{"email\\n":[{"description":"bad\\r\\nX-Injected: 1"}],"name":[{"description":"a\\u2028b\\u0085c"}]}}'
      s:fault{ path = UPSERT, status = 422, content_type = JSON, body = nasty }
      local _, err = c:upsert_user{ email = "a@example.com", name = "A" }
      local text = tostring(err)
      assert.is_nil(text:find("[%c\127]"), text)
      assert.is_nil(text:find("\226\128\168", 1, true), text)
      assert.is_nil(text:find("\194\133", 1, true), text)
      assert.matches("line one", text, 1, true)
      assert.matches("\\n", text, 1, true)
      -- errors the Lua layer makes, and a table made by hand
      text = tostring(core.error{ kind = "job\n", code = "failed\r", message = "job V3-1 ended failed: a\nb",
                                  request_id = "r\n1", status = 500 })
      assert.is_nil(text:find("[%c\127]"), text)
      -- a 500 text page with CR/LF
      s:fault{ path = UPSERT, status = 500, content_type = "text/plain", body = "oops\r\n\r\nmore\tthere" }
      _, err = c:upsert_user{ email = "a@example.com", name = "A" }
      assert.is_nil(tostring(err):find("[%c\127]"), tostring(err))
      c:close()
    end)
  end)

  describe("Retry-After (17)", function()
    it("is digits only: 1.5, 0x10, 1e1, +5, -1 are not a delay", function()
      local c = client{ max_retries = 0 }
      for _, v in ipairs{ "1.5", "0x10", "1e1", "+5", "-1", "5s", "0.0", "1,2", "16 16", "inf", "nan" } do
        s:fault{ path = UPSERT, status = 429, headers = { ["Retry-After"] = v }, content_type = "text/plain", body = "slow" }
        local _, err = c:upsert_user{ email = "a@example.com", name = "A" }
        assert.equal("rate_limited", err.kind, v)
        assert.is_nil(err.retry_after, v)
        assert.is_nil(tostring(err):find("retry after", 1, true), v)
      end
      for v, want in pairs{ ["16"] = 16, [" 3 "] = 3, ["0"] = 0, ["007"] = 7 } do
        s:fault{ path = UPSERT, status = 429, headers = { ["Retry-After"] = v }, content_type = "text/plain", body = "slow" }
        local _, err = c:upsert_user{ email = "a@example.com", name = "A" }
        assert.equal(want, err.retry_after, v)
      end
      c:close()
    end)

    it("a Retry-After that is not a delay backs off instead of waiting it", function()
      local events = {}
      local c = client{ max_retries = 1, on_event = function(e) events[#events + 1] = e end }
      s:fault{ path = UPSERT, status = 429, headers = { ["Retry-After"] = "0x10" }, content_type = "text/plain", body = "slow" }
      assert(c:upsert_user{ email = "a@example.com", name = "A" })
      assert.equal(1, #events)
      assert.is_true(events[1].wait <= 0.01, "waited " .. events[1].wait)
      c:close()
    end)
  end)
end)
