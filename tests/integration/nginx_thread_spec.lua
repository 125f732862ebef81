-- zendesk.nginx_thread, the thread-pool half of zendesk.nginx, called directly (Lua 5.4, a
-- stand-in for ngx.shared): what a thread VM does with a call that carries no configuration,
-- after an eviction and after another thread rotated the OAuth tokens, which nginx_spec cannot
-- steer from outside.
local standin = require "support.standin"

-- enough of a lua_shared_dict for the thread module
local new_dict = require("support.fake_ngx").new_dict

describe("zendesk.nginx_thread", function()
  local s, thread, dict
  local saved_ngx = rawget(_G, "ngx")

  setup(function()
    s = standin.start()
  end)

  teardown(function()
    if s then s:stop() end
    rawset(_G, "ngx", saved_ngx)
    package.loaded["zendesk.nginx_thread"] = nil
  end)

  before_each(function()
    s:reset()
    s:config{ per_user_limit = 0, rate_limit_per_minute = 0 }
    dict = new_dict()
    rawset(_G, "ngx", { shared = { zd = dict } })
    package.loaded["zendesk.nginx_thread"] = nil   -- a fresh thread VM: no clients yet
    thread = require "zendesk.nginx_thread"
  end)

  local function token_cfg(agent)
    return { url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 0, user_agent = agent }
  end

  it("asks for the configuration without any I/O, then keeps it with the client", function()
    local user = { email = "ann@example.com", name = "Ann" }
    assert.same({ need_cfg = true }, thread.call("k1", nil, "zd", "upsert_user", user))
    assert.equal(0, s:stats().requests)

    local out = thread.call("k1", token_cfg("a"), "zd", "upsert_user", user)
    assert.is_true(out.meta.created)
    assert.equal(s:users()[1].id, out.value.id)

    out = thread.call("k1", nil, "zd", "upsert_user", { email = "ann@example.com", name = "Ann B" })
    assert.is_nil(out.need_cfg)
    assert.equal("Ann B", out.value.name)
    assert.equal(2, s:stats().requests)
  end)

  it("returns only the user fields asked for, meta complete", function()
    thread.call("k1", token_cfg("a"), "zd", "job_status", "V3-0")
    local out = thread.call("k1", nil, "zd", "upsert_user", { email = "ann@example.com", name = "Ann" }, { "id", "name" })
    assert.same({ id = s:users()[1].id, name = "Ann" }, out.value)
    assert.is_true(out.meta.created)
    assert.equal(201, out.meta.status)
    assert.is_string(out.meta.request_id)
  end)

  it("asks again for a configuration whose client was evicted", function()
    thread.call("k0", token_cfg("k0"), "zd", "job_status", "V3-0")
    for i = 1, 16 do   -- MAX_CLIENTS more configurations: k0 is the least recently used
      thread.call("k" .. i, token_cfg("k" .. i), "zd", "job_status", "V3-0")
    end
    assert.same({ need_cfg = true }, thread.call("k0", nil, "zd", "job_status", "V3-0"))
    -- k16 kept its client: the call reaches the stand-in, which knows no job V3-0 (a 404)
    local before = s:stats().requests
    local out = thread.call("k16", nil, "zd", "job_status", "V3-0")
    assert.is_nil(out.need_cfg)
    assert.equal(before + 1, s:stats().requests, "k16's call did not reach the stand-in")
    assert.is_table(out.err, "an unknown job is an error")
    assert.equal(404, out.err.status, tostring(out.err.message))
  end)

  it("rebuilds its client from the kept configuration when another thread rotated the tokens", function()
    local cfg = {
      url = s.url, max_retries = 0,
      oauth = { access_token = standin.OAUTH_ACCESS, refresh_token = standin.OAUTH_REFRESH,
                client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET },
    }
    local out = thread.call("ko", cfg, "zd", "upsert_user", { email = "o@example.com", name = "O" })
    assert.is_true(out.meta.created, tostring(out.err and out.err.message))
    -- another thread refreshes (the old pair dies at once) and publishes the new pair
    local r = s:http("POST", "/oauth/tokens", { auth = "none", body = { grant_type = "refresh_token",
      refresh_token = standin.OAUTH_REFRESH, client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } })
    assert.equal(200, r.status, r.body)
    local new = standin.decode(r.body)
    local gen = dict:incr("tokgen:ko", 1, 0)
    dict:set("tok:ko", gen .. "\n" .. new.access_token .. "\n" .. new.refresh_token)
    s:admin("DELETE", "/__admin/requests")

    out = thread.call("ko", nil, "zd", "upsert_user", { email = "o@example.com", name = "O2" }, { "name" })
    assert.same({ name = "O2" }, out.value)
    assert.is_nil(out.rotated)
    local seen = s:requests()
    assert.equal(1, #seen)   -- straight with the published token: no 401, no refresh
    assert.matches("create_or_update", seen[1].path)
  end)
end)
