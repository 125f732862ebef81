-- The one retry policy: 429/503 obey Retry-After (bounded by max_retry_wait), 409/5xx and
-- transport errors back off with jitter, max_retries bounds it all, each retry is an event.
local standin = require "support.standin"
-- the core has no Zendesk methods since issue 14 P2: zendesk.api builds them from core:request
local api = require "zendesk.api"
local zendesk = require "zendesk"

local UPSERT = "/api/v2/users/create_or_update"

describe("retries", function()
  local s, events

  setup(function() s = standin.start() end)
  teardown(function() s:stop() end)
  before_each(function()
    s:reset()
    s:config{ per_user_limit = 0 }
    events = {}
  end)

  local function client(opts)
    local o = { url = s.url, email = standin.EMAIL, token = standin.TOKEN, retry_base_delay = 0.01,
                on_event = function(e) events[#events + 1] = e end }
    for k, v in pairs(opts or {}) do o[k] = v end
    return zendesk.new(o)
  end

  it("waits out a 429 with Retry-After: 1 and retries", function()
    s:fault{ path = UPSERT, status = 429, headers = { ["Retry-After"] = "1" }, content_type = "text/plain",
             body = "You have exceeded the rate limit" }
    local c = client()
    local t0 = c.now()
    local user, meta = c:upsert_user{ email = "a@example.com", name = "A" }
    local waited = c.now() - t0
    c:close()
    assert.is_table(user, tostring(meta))
    assert.equal(2, meta.attempts)
    assert.equal(1, #events)
    assert.same({ "retry", 429, 1 }, { events[1].type, events[1].status, events[1].wait })
    assert.is_true(waited >= 0.9, "the client must wait Retry-After before retrying")
  end)

  it("honours max_retries", function()
    s:fault{ path = UPSERT, status = 500, count = 10 }
    local c = client{ max_retries = 2 }
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal(500, err.status)
    assert.equal(3, err.attempts)
    assert.equal(2, #events)
    local reqs = 0
    for _, r in ipairs(s:requests()) do if r.path:find(UPSERT, 1, true) then reqs = reqs + 1 end end
    assert.equal(3, reqs)
  end)

  it("backs off on 409, 500, 502, 504 and succeeds when the fault passes", function()
    for _, status in ipairs{ 409, 500, 502, 504 } do
      s:fault{ path = UPSERT, status = status, count = 2 }
      events = {}
      local c = client{ max_retries = 3 }
      local user, meta = c:upsert_user{ email = status .. "@example.com", name = "A" }
      c:close()
      assert.is_table(user, "status " .. status .. ": " .. tostring(meta))
      assert.equal(3, meta.attempts)
      assert.equal(2, #events)
      assert.equal(status, events[1].status)
      assert.is_true(events[1].wait >= 0 and events[1].wait <= 0.01)
    end
  end)

  it("retries a 503 with Retry-After, and one without it", function()
    local c = client()
    s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "0" } }
    local user, meta = c:upsert_user{ email = "a@example.com", name = "A" }
    assert.is_table(user, tostring(meta))
    assert.equal(2, meta.attempts)
    assert.equal(0, events[1].wait)
    s:fault{ path = UPSERT, status = 503 }
    user, meta = c:upsert_user{ email = "b@example.com", name = "B" }
    c:close()
    assert.is_table(user, tostring(meta))
    assert.equal(2, meta.attempts)
    assert.equal(503, events[2].status)
  end)

  it("does not sleep past max_retry_wait: a longer Retry-After is returned to the caller", function()
    s:fault{ path = UPSERT, status = 429, headers = { ["Retry-After"] = "120" }, content_type = "text/plain",
             body = "You have exceeded the rate limit for updating a single unique user." }
    local c = client{ max_retry_wait = 5 }
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal("rate_limited", err.kind)
    assert.equal(120, err.retry_after)
    assert.matches("exceeded the rate limit", err.message)
    assert.equal(0, #events)
  end)

  it("does not retry other 4xx answers", function()
    local c = client()
    local _, err = api.upsert_user(c._core, { email = "bad", name = "A" })
    c:close()
    assert.equal(422, err.status)
    assert.equal(1, err.attempts)
    assert.equal(0, #events)
  end)

  it("retries a connection reset and reports it as a network error when it persists", function()
    s:fault{ path = UPSERT, action = "reset", count = 5 }
    local c = client{ max_retries = 1 }
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal("network", err.kind)
    assert.equal(2, err.attempts)
  end)

  it("times out on a server that never answers, and retries within bounds", function()
    s:fault{ path = UPSERT, action = "hang", count = 2 }
    local c = client{ timeout = 0.5, max_retries = 1 }
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal("timeout", err.kind)
    assert.equal(2, err.attempts)
    assert.equal("timeout", events[1].reason)
  end)

  it("turns invalid JSON in a 200 into an error, not a crash", function()
    s:fault{ path = UPSERT, action = "invalid_json" }
    local c = client()
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal("InvalidJSON", err.code)
    assert.equal(200, err.status)
  end)

  it("turns a JSON answer that is not the expected object (a proxy's null) into an error", function()
    s:fault{ path = UPSERT, status = 200, content_type = "application/json", body = "null" }
    local c = client()
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal("InvalidResponse", err.code)
    assert.equal(200, err.status)
  end)

  it("reads an error answer whose JSON is not an object (null) as text", function()
    s:fault{ path = UPSERT, status = 500, content_type = "application/json", body = "null", count = 5 }
    local c = client{ max_retries = 0 }
    local user, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.is_nil(user)
    assert.equal(500, err.status)
    assert.equal("null", err.message)
  end)

  it("does not resend a bulk submission the server may have received, but does resend an upsert", function()
    local MANY = "/api/v2/users/create_or_update_many"
    -- the timeout leaves the retry that must succeed a second on a loaded machine
    s:fault{ path = MANY, action = "delay", delay_ms = 2500 }
    local c = client{ timeout = 1, max_retries = 2 }
    local job, err = c:upsert_users{ { email = "b1@example.com", name = "B" } }
    assert.is_nil(job)
    assert.equal("timeout", err.kind)
    assert.equal(1, err.attempts)
    s:fault{ path = UPSERT, action = "delay", delay_ms = 2500 }
    local user, meta = c:upsert_user{ email = "u1@example.com", name = "U" }
    c:close()
    assert.is_table(user, tostring(meta))
    assert.equal(2, meta.attempts)
    local posts = 0
    for _, r in ipairs(s:requests()) do
      if r.path:find(MANY, 1, true) then posts = posts + 1 end
    end
    assert.equal(1, posts)
  end)

  it("does resend a bulk submission whose connection was refused", function()
    local c = zendesk.new{ url = "http://127.0.0.1:9", email = standin.EMAIL, token = standin.TOKEN,
                           max_retries = 2, retry_base_delay = 0.01 }
    local job, err = c:upsert_users{ { email = "b1@example.com", name = "B" } }
    c:close()
    assert.is_nil(job)
    assert.equal("network", err.kind)
    assert.equal(3, err.attempts)
  end)

  it("reads an HTML error page into a readable message", function()
    s:fault{ path = UPSERT, status = 502, content_type = "text/html",
             body = "<html><body><h1>502 Bad Gateway</h1>\n<p>upstream</p></body></html>", count = 5 }
    local c = client{ max_retries = 0 }
    local _, err = c:upsert_user{ email = "a@example.com", name = "A" }
    c:close()
    assert.equal(502, err.status)
    assert.equal("502 Bad Gateway upstream", err.message)
  end)

  it("re-raises an error thrown by on_event, after cleaning up", function()
    s:fault{ path = UPSERT, status = 500 }
    local c = client{ on_event = function() error("stop here") end }
    assert.error_matches(function() c:upsert_user{ email = "a@example.com", name = "A" } end, "stop here")
    -- the client is still usable afterwards
    local user = c:upsert_user{ email = "b@example.com", name = "B" }
    c:close()
    assert.is_table(user)
  end)
end)
