-- OAuth: a 401 invalid_token refreshes once through /oauth/tokens, the NEW pair reaches
-- on_refresh (the old refresh token is dead), and the request is retried.
local standin = require "support.standin"
local zendesk = require "zendesk"

describe("OAuth", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  local function oauth_client(extra, on_refresh, events)
    local o = {
      url = s.url, max_retries = 0,
      oauth = { access_token = standin.OAUTH_ACCESS, refresh_token = standin.OAUTH_REFRESH,
                client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET, on_refresh = on_refresh },
      on_event = events and function(e) events[#events + 1] = e end,
    }
    for k, v in pairs(extra or {}) do o.oauth[k] = v end
    return zendesk.new(o)
  end

  it("uses the bearer token", function()
    local c = oauth_client()
    local user, meta = c:upsert_user{ email = "o@example.com", name = "O" }
    c:close()
    assert.is_table(user, tostring(meta))
  end)

  it("refreshes an expired token, hands the new pair to on_refresh and retries", function()
    local pairs_seen, events = {}, {}
    local c = oauth_client(nil, function(t) pairs_seen[#pairs_seen + 1] = t end, events)
    assert(c:upsert_user{ email = "o@example.com", name = "O" })
    s:config{ expire_tokens = true }
    local user, meta = c:upsert_user{ email = "o@example.com", name = "O2" }
    assert.is_table(user, tostring(meta))
    assert.equal("O2", user.name)
    assert.equal(1, #pairs_seen)
    local new = pairs_seen[1]
    assert.is_string(new.access_token)
    assert.is_string(new.refresh_token)
    assert.are_not.equal(standin.OAUTH_ACCESS, new.access_token)
    assert.are_not.equal(standin.OAUTH_REFRESH, new.refresh_token)
    assert.equal("token_refresh", events[#events].type)
    -- the rotated pair keeps working, and the old refresh token is refused by the server
    assert(c:upsert_user{ email = "o@example.com", name = "O3" })
    c:close()
    s:config{ expire_tokens = true }
    local stale = oauth_client()
    local _, err = stale:upsert_user{ email = "o@example.com", name = "O4" }
    stale:close()
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
    assert.matches("token refresh failed", err.message)
  end)

  it("refreshes once per request: a refused refresh ends in an auth error", function()
    local called = 0
    local c = oauth_client({ refresh_token = "not-a-valid-refresh" }, function() called = called + 1 end)
    s:config{ expire_tokens = true }
    local user, err = c:upsert_user{ email = "o@example.com", name = "O" }
    c:close()
    assert.is_nil(user)
    assert.equal("auth", err.kind)
    assert.equal("invalid_token", err.code)
    assert.equal(0, called)
  end)

  it("gets a token with client_credentials when there is no refresh token", function()
    local got
    local c = zendesk.new{ url = s.url, max_retries = 0,
      oauth = { client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET,
                on_refresh = function(t) got = t end } }
    local user, meta = c:upsert_user{ email = "cc@example.com", name = "C" }
    c:close()
    assert.is_table(user, tostring(meta))
    assert.is_string(got.access_token)
  end)

  it("raises an error thrown by on_refresh, keeping the new tokens", function()
    local c = oauth_client(nil, function() error("could not store tokens") end)
    s:config{ expire_tokens = true }
    assert.has_error(function() c:upsert_user{ email = "o@example.com", name = "O" } end)
    local user = c:upsert_user{ email = "o@example.com", name = "O" }
    c:close()
    assert.is_table(user)
  end)
end)
