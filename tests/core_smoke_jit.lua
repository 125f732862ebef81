-- The LuaJIT flavour (what OpenResty loads) against the stand-in: a real upsert, a bulk
-- job, ids as exact numbers.
local standin = require "support.standin"
local zendesk = require "zendesk"

describe("LuaJIT build", function()
  local s, client

  setup(function()
    s = standin.start()
    s:config{ job_delay_ms = 0 }
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
  end)
  teardown(function()
    client:close()
    s:stop()
  end)

  it("runs under LuaJIT", function()
    assert.is_not_nil(jit, "this spec must run under LuaJIT")
    assert.matches("luajit", package.cpath)
  end)

  it("upserts a user", function()
    local user, meta = client:upsert_user{ email = "jit@example.com", name = "Jit", tags = {} }
    assert.is_table(user, tostring(meta))
    assert.equal(201, meta.status)
    assert.equal(user.id, math.floor(user.id))
    assert.equal(tostring(user.id), ("%d"):format(user.id))
    local again, meta2 = client:upsert_user{ email = "jit@example.com", name = "Jit 2" }
    assert.equal(200, meta2.status)
    assert.equal(user.id, again.id)
  end)

  it("submits and waits for a bulk job", function()
    local job = assert(client:upsert_users{ { email = "j1@example.com", name = "J1" }, { external_id = "J2", name = "J2" } })
    local done = assert(client:wait_job(job, { timeout = 30, interval = 0.05 }))
    assert.equal("completed", done.status)
    assert.equal(2, #done.results)
  end)

  it("reports errors with the same shapes", function()
    local _, err = client._core:upsert{ email = "bad", name = "B" }
    assert.equal(422, err.status)
    assert.equal("RecordInvalid", err.code)
    assert.matches("^zendesk: http 422", tostring(err))
  end)
end)
