-- The C/Lua line of issue 14 P2: the core knows HTTP (per-request options, transport outcomes in
-- its own fields), zendesk.api knows Zendesk (paths, caps, which calls may go twice). Each test
-- pins one fact a mutation on either side could otherwise change silently.
local standin = require "support.standin"
local core = require "zendesk.core"
local api = require "zendesk.api"
local submit = require "zendesk.sync_submit"

describe("the core/api line", function()
  local s, c

  setup(function() s = standin.start() end)
  teardown(function()
    if c then c:close() end
    if s then s:stop() end
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0 }
    if c then c:close() end
    c = core.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 2, retry_base_delay = 0 }
  end)

  local function posts_to(path)
    local n = 0
    for _, r in ipairs(s:requests()) do
      if r.method == "POST" and r.path:find(path, 1, true) then n = n + 1 end
    end
    return n
  end

  local USERS = { { email = "a@example.com", name = "A" }, { email = "b@example.com", name = "B" } }

  it("a bulk submission whose connection drops after sending is not resent, and says it may have arrived", function()
    s:fault{ path = api.PATH_UPSERT_MANY, method = "POST", action = "reset", count = 1 }
    local job, err = api.upsert_users(c, USERS)
    assert.is_nil(job)
    assert.equal("network", err.kind)
    assert.is_true(err.sent, "the request left: it may have reached Zendesk")
    assert.is_true(err.not_resent)
    assert.matches("not resent: the server may have received it", err.message, 1, true)
    assert.equal(1, posts_to("create_or_update_many"), "a bulk submission went twice")
    -- the sync reads the core's fields, not curl codes
    local never_sent, may_have_arrived = submit.transport_fate(err)
    assert.is_false(never_sent)
    assert.is_true(may_have_arrived)
  end)

  it("an upsert (create_or_update, resend = true in zendesk.api) is sent again after the same drop", function()
    s:fault{ path = api.PATH_UPSERT, method = "POST", action = "reset", count = 1 }
    local user, meta = api.upsert_user(c, { email = "c@example.com", name = "C" })
    assert.is_table(user, tostring(meta))
    assert.equal(2, meta.attempts)
    assert.equal(2, posts_to("create_or_update.json"))
  end)

  it("a refused connection reports sent = false, and the sync reads it as never sent", function()
    local dead = core.new{ url = "http://127.0.0.1:9", email = standin.EMAIL, token = standin.TOKEN, max_retries = 0 }
    local job, err = api.upsert_users(dead, USERS)
    dead:close()
    assert.is_nil(job)
    assert.equal("network", err.kind)
    assert.is_false(err.sent)
    assert.is_nil(err.not_resent)
    local never_sent, may_have_arrived = submit.transport_fate(err)
    assert.is_true(never_sent)
    assert.is_false(may_have_arrived)
  end)

  it("the core's POST default is not to resend; ropts.resend = true resends", function()
    s:fault{ path = "/api/v2/users/create_many.json", method = "POST", action = "reset", count = 1 }
    local v, err = c:request("POST", "/api/v2/users/create_many.json", { users = USERS })
    assert.is_nil(v)
    assert.is_true(err.not_resent)
    assert.equal(1, posts_to("create_many"))
    s:fault{ path = "/api/v2/users/create_many.json", method = "POST", action = "reset", count = 1 }
    local _, meta = c:request("POST", "/api/v2/users/create_many.json", { users = USERS }, { resend = true })
    assert.equal(2, meta.attempts)
    assert.equal(3, posts_to("create_many"))
  end)

  it("the core knows no /api/v2 prefix: zendesk.api refuses other paths, the core sends them", function()
    local v, err = api.request(c, "GET", "/other/users.json")
    assert.is_nil(v)
    assert.equal("validation", err.kind)
    assert.matches("must be under /api/v2/", err.message, 1, true)
    local res = api.request_many(c, { { "GET", "/other/x.json" }, { "GET", api.PATH_JOB_STATUS .. "V3-none.json" } })
    assert.equal("validation", res[1].err.kind)
    assert.equal(404, res[2].err.status, "the good request of the batch still went")
    local _, cerr = c:request("GET", "/other/users.json")
    assert.equal("http", cerr.kind, "the core checks the path's form only, not its prefix")
    assert.equal(404, cerr.status)
    local _, derr = c:request("GET", "/api/v2/../other")
    assert.equal("validation", derr.kind)
  end)

  it("ropts answer, shape and keep: the value, its checked shape, only the kept fields", function()
    local user, meta = c:request("POST", api.PATH_UPSERT, { email = "d@example.com", name = "D" },
                                 { wrap = "user", answer = "user", shape = "record", keep = { "name" } })
    assert.is_table(user, tostring(meta))
    assert.same({ name = "D" }, user)
    local v, err = c:request("POST", api.PATH_UPSERT, { email = "e@example.com", name = "E" },
                             { wrap = "user", answer = "job_status", shape = "job" })
    assert.is_nil(v)
    assert.equal("invalid_response", err.kind)
    assert.matches('"job_status" is missing, not an object', err.message, 1, true)
    assert.has_error(function() c:request("GET", "/api/v2/x.json", nil, { wrapp = "user" }) end,
                     "zendesk: unknown request option 'wrapp'")
  end)

  it("the codec's array keys are the caller's configuration (core.json_config)", function()
    assert.equal('{"tags":[]}', core.encode{ tags = {} })
    local before = core.json_config{ arrays = { labels = true } }
    local ok, a, b = pcall(function() return core.encode{ tags = {} }, core.encode{ labels = {} } end)
    core.json_config{ arrays = before }
    assert.is_true(ok, tostring(a))
    assert.equal('{"tags":{}}', a)
    assert.equal('{"labels":[]}', b)
  end)
end)
