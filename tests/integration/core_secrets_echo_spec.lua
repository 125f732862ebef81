-- Issue 12, points 4 to 6: a server that echoes a credential (the token, the Basic header's
-- base64, a Bearer token, the OAuth client secret, tokens before and after a refresh) never gets
-- it to the caller: not through a success body (upsert, job results, polls, request), not
-- through an event, a journal, a report, tostring(err); and a cut never leaves a prefix of one.
local standin = require "support.standin"
local zendesk = require "zendesk"
local journal = require "zendesk.journal"

local TOKEN = standin.TOKEN
local B64 = standin.base64(standin.EMAIL .. "/token:" .. TOKEN)
local UPSERT = "/api/v2/users/create_or_update"

-- every string reachable from v (keys, values, tostring of errors)
local function strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do strings(k, out, seen); strings(x, out, seen) end
    local mt = getmetatable(v)
    if mt and mt.__tostring then out[#out + 1] = tostring(v) end
  elseif type(v) == "string" then
    out[#out + 1] = v
  end
  return out
end

-- The first leak in the strings of v: a whole secret anywhere, or a prefix of 4+ characters of
-- one at the end of a string (where a cut leaves it). nil when clean.
local function leak(v, secrets)
  for _, s in ipairs(strings(v)) do
    for _, secret in ipairs(secrets) do
      if s:find(secret, 1, true) then return ("%q holds %s"):format(s, secret) end
      for k = #secret - 1, 4, -1 do
        if s:sub(-k) == secret:sub(1, k) then
          return ("%q ends in a %d-character prefix of %s"):format(s, k, secret)
        end
      end
    end
  end
  return nil
end

local function assert_clean(v, secrets)
  local l = leak(v, secrets)
  assert(l == nil, l)
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local d = f:read("a")
  f:close()
  return d
end

describe("echoed credentials (issue 12)", function()
  local s, events, c

  setup(function() s = standin.start() end)
  teardown(function() s:stop() end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    events = {}
    c = zendesk.new{ url = s.url, email = standin.EMAIL, token = TOKEN, max_retries = 2, retry_base_delay = 0,
      on_event = function(e) events[#events + 1] = e end }
  end)
  after_each(function() c:close() end)

  it("the leak check itself sees a secret and a prefix at a cut end", function()
    assert.is_string(leak({ "x " .. TOKEN }, { TOKEN }))
    assert.is_string(leak({ { "x " .. TOKEN:sub(1, 4) } }, { TOKEN }))
    assert.is_nil(leak({ "x " .. TOKEN:sub(1, 3), "[redacted]" }, { TOKEN }))
  end)

  describe("point 4: success answers", function()
    it("upsert_user: a 200 whose user echoes the token, the Basic base64 and escaped spellings", function()
      local esc = "\\u0073" .. TOKEN:sub(2)                  -- \u0073 is "s"
      local body = '{"user":{"id":7,"email":"a@example.com","name":"n ' .. TOKEN .. '","notes":"Basic ' .. B64
        .. '","details":"' .. esc .. '","' .. TOKEN .. '":"key","nested":[{"deep":"x' .. esc:gsub("%-", "\\u002d")
        .. '"}]}}'
      s:fault{ path = UPSERT, status = 200, body = body, content_type = "application/json" }
      local u, meta = c:upsert_user{ email = "a@example.com", name = "A" }
      assert.is_table(u)
      assert.equal(7, u.id)
      assert.matches("%[redacted%]", u.name)
      assert_clean({ u, meta, events }, { TOKEN, B64 })
    end)

    it("upsert_user with fields: the kept fields are scrubbed too", function()
      s:fault{ path = UPSERT, status = 200, content_type = "application/json",
        body = '{"user":{"id":7,"name":"\\u0073' .. TOKEN:sub(2) .. '","email":"a@example.com"}}' }
      local u = c:upsert_user({ email = "a@example.com", name = "A" }, { fields = { "id", "name" } })
      assert.equal(7, u.id)
      assert_clean(u, { TOKEN })
    end)

    it("request(): any success body, a bare JSON string included", function()
      s:fault{ path = "/api/v2/users/me", status = 200, content_type = "application/json",
        body = '{"user":{"authorization":"Basic ' .. B64 .. '"}}' }
      local v, meta = c:request("GET", "/api/v2/users/me.json")
      assert.is_table(v)
      assert_clean({ v, meta }, { TOKEN, B64 })
      s:fault{ path = "/api/v2/users/me", status = 200, content_type = "application/json",
        body = '"' .. TOKEN .. '"' }
      v = c:request("GET", "/api/v2/users/me.json")
      assert.is_string(v)
      assert_clean(v, { TOKEN })
    end)

    it("wait_job: a failed job whose message echoes the token gives a clean error and tostring", function()
      s:fault{ job = "failed", message = "Authorization: Basic " .. B64 .. " (" .. TOKEN .. ")" }
      local job = assert(c:upsert_users{ { email = "a@example.com", name = "A" } })
      local js, err = c:wait_job(job, { interval = 0.01 })
      assert.is_nil(js)
      assert.equal("job", err.kind)
      assert.matches("redacted", tostring(err))
      assert_clean({ job, err, tostring(err), events }, { TOKEN, B64 })
    end)

    it("wait_job, job_status, job_statuses: results echoing it in error, details and status", function()
      s:fault{ job = "completed", message = "done " .. TOKEN,
        result = { error = "Bad " .. TOKEN, details = "Basic " .. B64, status = TOKEN } }
      local job = assert(c:upsert_users{ { email = "a@example.com", name = "A" }, { email = "b@example.com", name = "B" } })
      local js = assert(c:wait_job(job, { interval = 0.01 }))
      assert.equal("completed", js.status)
      assert.equal(2, #js.results)
      local one = assert(c:job_status(job.id))
      local many = assert(c:job_statuses{ job.id })
      assert.equal(1, #many)
      assert_clean({ job, js, one, many, events }, { TOKEN, B64 })
    end)

    it("a poll answer with the token spelled with JSON escapes", function()
      local job = assert(c:upsert_users{ { email = "a@example.com", name = "A" } })
      s:fault{ path = "/api/v2/job_statuses", status = 200, content_type = "application/json", count = 5,
        body = '{"job_status":{"id":"' .. job.id .. '","status":"completed","total":1,"progress":1,'
          .. '"message":"' .. TOKEN:gsub("%-", "\\u002d") .. '","results":[{"index":0,"status":"Failed",'
          .. '"error":"e","details":"stand\\u002din\\/token ' .. TOKEN:gsub("n", "\\u006e") .. '"}]}}' }
      local js = assert(c:wait_job(job, { interval = 0.01 }))
      assert.equal("completed", js.status)
      assert_clean(js, { TOKEN })
    end)

    it("sync_users: on_row, the CSV report, the journal and the returned report", function()
      local dir = standin.tmpname("")
      os.execute("mkdir -p " .. dir)
      local rep, jpath = dir .. "/report.csv", dir .. "/sync.journal"
      s:fault{ job = "completed", count = 10, message = "m " .. TOKEN,
        result = { status = "Failed", error = "E " .. TOKEN, details = "Basic " .. B64 } }
      local seen = {}
      local report, err = c:sync_users({ { email = "a@example.com", name = "A" }, { email = "b@example.com", name = "B" } },
        { journal = jpath, report = rep, batch_size = 2, poll_interval = 0.01, collect_rows = true,
          on_row = function(o) seen[#seen + 1] = o end })
      assert.is_table(report, tostring(err))
      assert.equal(2, #seen)
      assert.equal("failed", seen[1].outcome)
      local rtext, jtext = read(rep), read(jpath)
      assert.matches("redacted", rtext)
      assert.matches('"done"', jtext)
      assert.equal("finished", journal.state(jpath))
      assert_clean({ report, seen, rtext, jtext, events }, { TOKEN, B64 })
      os.execute("rm -rf " .. dir)
    end)
  end)

  describe("point 4: OAuth", function()
    it("the client secret, the old tokens and the new pair after a refresh stay secret", function()
      local fresh = {}
      local ev = {}
      local o = zendesk.new{ url = s.url, max_retries = 1, retry_base_delay = 0,
        on_event = function(e) ev[#ev + 1] = e end,
        oauth = { access_token = standin.OAUTH_ACCESS, refresh_token = standin.OAUTH_REFRESH,
          client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET,
          on_refresh = function(t) fresh[#fresh + 1] = t end } }
      s:config{ expire_tokens = true }
      local u = assert(o:upsert_user{ email = "a@example.com", name = "A" })
      assert.equal(1, #fresh)
      local access, refresh = fresh[1].access_token, fresh[1].refresh_token
      assert.is_string(access)
      assert.is_string(refresh)
      local secrets = { access, refresh, standin.OAUTH_ACCESS, standin.OAUTH_REFRESH, standin.CLIENT_SECRET }
      local out = { u }
      local echo = table.concat(secrets, " | ")
      s:fault{ path = UPSERT, status = 200, content_type = "application/json",
        body = '{"user":{"id":9,"name":"Bearer ' .. access .. '","notes":"' .. echo .. '"}}' }
      out[#out + 1] = { o:upsert_user{ email = "a@example.com", name = "A" } }
      s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "0", ["X-Request-Id"] = refresh },
        body = echo, content_type = "text/plain" }
      out[#out + 1] = { o:upsert_user{ email = "a@example.com", name = "A" } }
      s:fault{ job = "failed", message = echo }
      local job = assert(o:upsert_users{ { email = "a@example.com", name = "A" } })
      local js, err = o:wait_job(job, { interval = 0.01 })
      assert.is_nil(js)
      out[#out + 1] = { job, err, tostring(err), ev }
      o:close()
      assert.is_true(#ev >= 2)
      assert_clean(out, secrets)
    end)
  end)

  describe("point 5: events", function()
    it("a retry event's request id and every other string field are scrubbed", function()
      s:fault{ path = UPSERT, status = 503, count = 1, body = "busy",
        headers = { ["Retry-After"] = "0", ["X-Request-Id"] = "rid-" .. TOKEN } }
      s:fault{ path = UPSERT, status = 429, count = 1, body = "slow",
        headers = { ["Retry-After"] = "0", ["X-Request-Id"] = B64 } }
      local u, meta = c:upsert_user{ email = "a@example.com", name = "A" }
      assert.is_table(u)
      assert.equal(2, #events)
      assert.equal("retry", events[1].type)
      assert.matches("redacted", events[1].request_id)
      assert_clean({ events, meta }, { TOKEN, B64 })
    end)
  end)

  describe("point 6: scrub, then cut", function()
    it("a text body of any length before the token: no prefix of it at the cut", function()
      local errs = {}
      for n = 180, 200 do
        s:fault{ path = UPSERT, status = 400, content_type = "text/plain", body = string.rep("x", n) .. TOKEN .. " tail" }
        local u, err = c:upsert_user{ email = "a@example.com", name = "A" }
        assert.is_nil(u)
        assert.equal(400, err.status)
        errs[#errs + 1] = { err, tostring(err) }
      end
      assert_clean(errs, { TOKEN })
    end)

    it("a request id of any length before the token: no prefix of it at the cut, error and success", function()
      local out = {}
      for n = 80, 96 do
        local rid = string.rep("r", n) .. TOKEN
        s:fault{ path = UPSERT, status = 400, headers = { ["X-Request-Id"] = rid } }
        out[#out + 1] = { c:upsert_user{ email = "a@example.com", name = "A" } }
        s:fault{ path = UPSERT, status = 200, headers = { ["X-Request-Id"] = rid }, content_type = "application/json",
          body = '{"user":{"id":3,"name":"A"}}' }
        out[#out + 1] = { c:upsert_user{ email = "a@example.com", name = "A" } }
        s:fault{ path = UPSERT, status = 503, headers = { ["X-Request-Id"] = rid, ["Retry-After"] = "0" }, count = 1 }
        out[#out + 1] = { c:upsert_user{ email = "a@example.com", name = "A" } }
      end
      assert.is_true(#events >= 17)
      for _, r in ipairs(out) do if r[2] and r[2].kind then out[#out + 1] = tostring(r[2]) end end
      assert_clean({ out, events }, { TOKEN })
    end)

    it("long Location and warning headers of a success: no prefix at the cut", function()
      local out = {}
      for n = 500, 512 do
        s:fault{ path = UPSERT, status = 201, content_type = "application/json", body = '{"user":{"id":3,"name":"A"}}',
          headers = { Location = "https://x/" .. string.rep("l", n - 10) .. TOKEN,
                      ["X-Zendesk-API-Warn"] = string.rep("w", n) .. B64 } }
        out[#out + 1] = { c:upsert_user{ email = "a@example.com", name = "A" } }
      end
      assert_clean(out, { TOKEN, B64 })
    end)
  end)
end)
