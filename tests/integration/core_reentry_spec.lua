-- Re-entry (issue 12, point 1): a callback the core calls in the middle of a call (on_event,
-- on_refresh) that closes the client, or calls it again. Closing ends the call cleanly with a
-- "closed" error (the transfers are freed after libcurl let go of them, never under it); any
-- other call on the same client from such a callback is refused, and the refusal is raised
-- from the outer call once it is over. Runs under valgrind and ASan (core_ prefix).
local standin = require "support.standin"
local zendesk = require "zendesk"

local UPSERT = "/api/v2/users/create_or_update"

describe("re-entry from callbacks", function()
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

  local function emails()
    local out = {}
    for _, u in ipairs(s:users()) do out[#out + 1] = u.email end
    table.sort(out)
    return out
  end

  local function upserts()
    local n = 0
    for _, r in ipairs(s:requests()) do if r.path:find(UPSERT, 1, true) then n = n + 1 end end
    return n
  end

  describe("on_event", function()
    it("closing the client ends the call with a closed error, no retry sent", function()
      s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "0" } }
      local c
      c = client{ on_event = function() c:close() end }
      local user, err = c:upsert_user{ email = "ann@example.com", name = "Ann" }
      assert.is_nil(user)
      assert.is_table(err)
      assert.equal("closed", err.kind)
      assert.matches("closed", tostring(err))
      assert.is_false(c._core:is_open())
      assert.equal(1, upserts(), "the retry must not go out after close")
      assert.has_error(function() c:upsert_user{ email = "ann@example.com", name = "Ann" } end,
                       "attempt to use a closed zendesk client")
      c:close()   -- still idempotent
    end)

    it("closing from on_event ends every call of a request_many cleanly", function()
      s:fault{ path = "/api/v2/users/1", status = 503, headers = { ["Retry-After"] = "0" } }
      local c
      c = client{ on_event = function() c:close() end }
      local reqs = {}
      for i = 1, 5 do reqs[i] = { "GET", "/api/v2/users/" .. i .. ".json" } end
      reqs[6] = { "GET", "no-slash" }
      local res = c._core:request_many(reqs)
      assert.equal(6, #res)
      for i = 1, 5 do
        assert.is_table(res[i].err, "request " .. i)
        assert.is_nil(res[i].value)
      end
      assert.equal("closed", res[1].err.kind)
      assert.equal("validation", res[6].err.kind)
      assert.is_false(c._core:is_open())
    end)

    it("a closing callback that then raises: the callback's error is raised, the client is closed", function()
      s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "0" } }
      local c
      c = client{ on_event = function() c:close() error("stop here") end }
      assert.has_error(function() c:upsert_user{ email = "ann@example.com", name = "Ann" } end)
      assert.is_false(c._core:is_open())
    end)

    it("another call on the same client is refused, raised after the outer call", function()
      s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "0" } }
      local c
      c = client{ on_event = function() c:upsert_user{ email = "bob@example.com", name = "Bob" } end }
      local ok, msg = pcall(c.upsert_user, c, { email = "ann@example.com", name = "Ann" })
      assert.is_false(ok)
      assert.matches("callback", tostring(msg))
      assert.matches("upsert", tostring(msg))
      assert.same({}, emails(), "neither the inner nor the outer retry may go out")
      -- the client is still usable afterwards, and its buffers are its own again
      s:clear_faults()
      local user, meta = c:upsert_user{ email = "cy@example.com", name = "Cy" }
      assert.is_table(user, tostring(meta))
      assert.equal("cy@example.com", user.email)
      c:close()
    end)

    it("a callback that catches the refusal lets the outer call finish with its own answer", function()
      s:fault{ path = UPSERT, status = 503, headers = { ["Retry-After"] = "0" } }
      local inner
      local c
      c = client{ on_event = function()
        inner = { pcall(c.upsert_user, c, { email = "bob@example.com", name = "Bob" }) }
      end }
      local user, meta = c:upsert_user{ email = "ann@example.com", name = "Ann" }
      assert.is_table(user, tostring(meta))
      assert.equal("ann@example.com", user.email)
      assert.equal(2, meta.attempts)
      assert.is_false(inner[1])
      assert.matches("callback", tostring(inner[2]))
      assert.same({ "ann@example.com" }, emails())
      c:close()
    end)

    it("every method is refused from a callback, request_many included", function()
      s:fault{ path = "/api/v2/users/7", status = 503, headers = { ["Retry-After"] = "0" } }
      local c, tried
      c = client{ on_event = function()
        tried = {}
        for name, f in pairs{
          request = function() return c:request("GET", "/api/v2/users/8.json") end,
          request_many = function() return c._core:request_many{ { "GET", "/api/v2/users/8.json" } } end,
          upsert_users = function() return c:upsert_users{ { email = "d@example.com", name = "D" } } end,
          job_status = function() return c:job_status("V3-abc") end,
          job_statuses = function() return c:job_statuses{ "V3-abc" } end,
        } do
          local ok, msg = pcall(f)
          tried[name] = (not ok) and tostring(msg):find("callback", 1, true) ~= nil
        end
      end }
      local res = c._core:request_many{ { "GET", "/api/v2/users/7.json" }, { "GET", "/api/v2/users/9.json" } }
      assert.equal(2, #res)
      assert.equal(404, res[1].err.status)   -- the stand-in has no user 7: the retry went, and got its answer
      assert.same({ request = true, request_many = true, upsert_users = true, job_status = true,
                    job_statuses = true }, tried)
      c:close()
    end)
  end)

  describe("on_refresh", function()
    local function oauth_client(on_refresh, on_event)
      return zendesk.new{
        url = s.url, max_retries = 0, on_event = on_event,
        oauth = { access_token = standin.OAUTH_ACCESS, refresh_token = standin.OAUTH_REFRESH,
                  client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET, on_refresh = on_refresh },
      }
    end

    it("closing the client in on_refresh ends the call with a closed error", function()
      local c, seen
      c = oauth_client(function(t) seen = t.access_token c:close() end)
      s:config{ expire_tokens = true }
      local user, err = c:upsert_user{ email = "o@example.com", name = "O" }
      assert.is_nil(user)
      assert.equal("closed", err.kind)
      assert.is_string(seen)
      assert.is_false(c._core:is_open())
      assert.same({}, emails())
    end)

    it("closing the client in the token_refresh event ends the call with a closed error", function()
      local c
      c = oauth_client(nil, function(e) if e.type == "token_refresh" then c:close() end end)
      s:config{ expire_tokens = true }
      local user, err = c:upsert_user{ email = "o@example.com", name = "O" }
      assert.is_nil(user)
      assert.equal("closed", err.kind)
      assert.is_false(c._core:is_open())
    end)

    it("a call from on_refresh is refused and raised after the outer call", function()
      local c
      c = oauth_client(function() c:upsert_user{ email = "p@example.com", name = "P" } end)
      s:config{ expire_tokens = true }
      local ok, msg = pcall(c.upsert_user, c, { email = "o@example.com", name = "O" })
      assert.is_false(ok)
      assert.matches("callback", tostring(msg))
      assert.same({}, emails())
      c:close()
    end)
  end)

  describe("wait_job's on_progress (between two polls, not inside a transfer)", function()
    it("closing the client ends the wait with a closed error, not a raise", function()
      s:config{ job_delay_ms = 2000 }
      local c = client()
      local job = assert(c:upsert_users{ { email = "w@example.com", name = "W" } })
      local calls = 0
      local js, err = c:wait_job(job, { interval = 0.05, on_progress = function() calls = calls + 1 c:close() end })
      assert.is_nil(js)
      assert.is_table(err)
      assert.equal("closed", err.kind)
      assert.equal(1, calls)
    end)

    it("a call on the client from on_progress is allowed (no transfer is running)", function()
      s:config{ job_delay_ms = 200 }
      local c = client()
      local job = assert(c:upsert_users{ { email = "w@example.com", name = "W" } })
      local got
      local js = assert(c:wait_job(job, { interval = 0.05, on_progress = function(j)
        got = got or assert(c:job_status(j.id))
      end }))
      assert.equal("completed", js.status)
      assert.equal(job.id, got.id)
      c:close()
    end)
  end)
end)
