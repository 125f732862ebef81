-- No credential ever reaches an error, its tostring, an event or a message, even when the
-- server echoes it back.
local standin = require "support.standin"
-- the core has no Zendesk methods since issue 14 P2: zendesk.api builds them from core:request
local api = require "zendesk.api"
local zendesk = require "zendesk"

describe("credentials stay secret", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() s:stop() end)
  before_each(function() s:reset() end)

  -- recursively flattens every string reachable from v
  local function dump(v, out, seen)
    out, seen = out or {}, seen or {}
    if type(v) == "table" and not seen[v] then
      seen[v] = true
      for k, x in pairs(v) do dump(k, out, seen); dump(x, out, seen) end
      local mt = getmetatable(v)
      if mt and mt.__tostring then out[#out + 1] = tostring(v) end
    elseif type(v) == "string" then
      out[#out + 1] = v
    end
    return out
  end

  local function assert_clean(captured, secrets)
    local text = table.concat(dump(captured), "\n")
    for _, secret in ipairs(secrets) do
      assert.is_nil(text:find(secret, 1, true), "secret leaked: " .. secret)
    end
  end

  it("keeps an API token out of errors and events, whatever the failure", function()
    local secret = "SECRET-token-7f3a9c"
    local captured = {}
    local c = zendesk.new{ url = s.url, email = standin.EMAIL, token = secret, max_retries = 1,
      retry_base_delay = 0.01, timeout = 0.5, on_event = function(e) captured[#captured + 1] = e end }
    local function try(user)
      local u, err = c:upsert_user(user)
      captured[#captured + 1] = { u, err, tostring(err) }
    end
    try{ email = "a@example.com", name = "A" }                          -- 401
    s:fault{ path = "/api/v2/users/create_or_update", status = 500, body = "token " .. secret .. " rejected", count = 2 }
    try{ email = "a@example.com", name = "A" }
    s:fault{ path = "/api/v2/users/create_or_update", status = 400, content_type = "text/plain",
             body = "bad auth header Basic " .. secret }
    try{ email = "a@example.com", name = "A" }
    s:fault{ path = "/api/v2/users/create_or_update", action = "hang", count = 2 }
    try{ email = "a@example.com", name = "A" }
    try{ email = "bad@", name = "A" }
    captured[#captured + 1] = tostring(c)
    c:close()
    -- each failure came back, and its message kept what the server said around the secret
    local tries = {}
    for _, v in ipairs(captured) do
      if type(v) == "table" and v.type == nil and v[3] then tries[#tries + 1] = v end
    end
    assert.equal(5, #tries)
    assert.equal(401, tries[1][2].status)
    assert.equal(500, tries[2][2].status)
    assert.matches("token .* rejected", tries[2][3])
    assert.equal(400, tries[3][2].status)
    assert.matches("bad auth header Basic ", tries[3][3], 1, true)
    assert.equal("timeout", tries[4][2].kind)
    assert.is_table(tries[5][2])
    assert.matches("email", tries[5][3])
    local retries = 0
    for _, v in ipairs(captured) do if type(v) == "table" and v.type == "retry" then retries = retries + 1 end end
    assert.equal(2, retries, "one retry each for the 500 and the hang")
    assert_clean(captured, { secret })
  end)

  it("keeps OAuth tokens and the client secret out of errors and events", function()
    local captured = {}
    local secrets = { "SECRET-refresh-a1b2", "SECRET-client-c3d4" }
    local c = zendesk.new{ url = s.url, max_retries = 0,
      on_event = function(e) captured[#captured + 1] = e end,
      oauth = { access_token = "SECRET-access-e5f6", refresh_token = secrets[1], client_id = standin.CLIENT_ID,
                client_secret = secrets[2] } }
    secrets[3] = "SECRET-access-e5f6"
    local u, err = c:upsert_user{ email = "a@example.com", name = "A" }
    captured[#captured + 1] = { u, err, tostring(err) }
    s:fault{ path = "/api/v2/users/create_or_update", status = 500, body = "echo SECRET-access-e5f6 SECRET-client-c3d4" }
    u, err = c:upsert_user{ email = "a@example.com", name = "A" }
    captured[#captured + 1] = { u, err, tostring(err) }
    c:close()
    assert_clean(captured, secrets)
    assert.matches("%[redacted%]", tostring(err))
  end)

  it("scrubs a credential echoed deep inside an error body, in keys and values", function()
    local secret = "SECRET-deep-9z8y"
    local body = '{"error":"RecordInvalid","details":' .. string.rep('{"a":', 12) .. '{"x' .. secret .. 'y":"v ' .. secret
      .. '"}' .. string.rep("}", 12) .. "}"
    s:fault{ path = "/api/v2/users/create_or_update", status = 422, content_type = "application/json", body = body }
    local c = zendesk.new{ url = s.url, email = standin.EMAIL, token = secret, max_retries = 0 }
    local u, err = api.upsert_user(c._core, { email = "a@example.com", name = "A" })
    c:close()
    assert.is_nil(u)
    assert.equal(422, err.status)
    assert_clean({ err, tostring(err) }, { secret })
  end)

  it("does not print credentials in option errors", function()
    local ok, msg = pcall(zendesk.new, { url = "http://127.0.0.1:9", email = "a@b.c", token = "SECRET-x\r\n" })
    assert.is_false(ok)
    assert.is_nil(msg:find("SECRET", 1, true))
  end)
end)
