-- Single upserts against the stand-in over real HTTP: created vs updated, what meta
-- carries, exact integer ids both ways, arrays, and Zendesk's error shapes.
local standin = require "support.standin"
-- the core has no Zendesk methods since issue 14 P2: zendesk.api builds them from core:request
local api = require "zendesk.api"
local zendesk = require "zendesk"
local cjson = require "cjson"

describe("client:upsert_user", function()
  local s, client

  setup(function()
    s = standin.start()
  end)
  teardown(function()
    if client then client:close() end
    s:stop()
  end)
  before_each(function()
    s:reset()
    if client then client:close() end
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 0 }
  end)

  it("creates a user (201) and then updates it (200)", function()
    local user, meta = client:upsert_user{ email = "ann@example.com", name = "Ann" }
    assert.is_table(user, tostring(meta))
    assert.equal(201, meta.status)
    assert.is_true(meta.created)
    assert.equal("Ann", user.name)
    assert.matches("^https?://.*/api/v2/users/" .. user.id .. "%.json$", meta.location)
    assert.is_string(meta.request_id)
    local again, meta2 = client:upsert_user{ email = "ann@example.com", name = "Ann B" }
    assert.equal(200, meta2.status)
    assert.is_false(meta2.created)
    assert.equal(user.id, again.id)
    assert.equal("Ann B", again.name)
    assert.equal(1, #s:users())
  end)

  -- folded from tests/core_smoke_jit.lua: under LuaJIT, where numbers are doubles, an id is
  -- still a whole number that prints without an exponent or a fraction
  it("returns ids as whole numbers that print as such, under either VM", function()
    local user, meta = client:upsert_user{ email = "jit@example.com", name = "Jit", tags = {} }
    assert.is_table(user, tostring(meta))
    assert.equal(201, meta.status)
    assert.equal(user.id, math.floor(user.id))
    assert.equal(tostring(user.id), ("%d"):format(user.id))
    local again, meta2 = client:upsert_user{ email = "jit@example.com", name = "Jit 2" }
    assert.equal(200, meta2.status)
    assert.equal(user.id, again.id)
  end)

  it("returns ids as exact Lua integers #lua54", function()
    s:config{ id_start = 9007199254740993 }
    local user = assert(client:upsert_user{ external_id = "E1", name = "Big" })
    assert.equal("integer", math.type(user.id))
    assert.equal(9007199254740993, user.id)
    assert.equal("/users/9007199254740993", "/users/" .. user.id)
    assert.equal("integer", math.type(user.locale_id))
  end)

  it("sends ids exactly: 123456789012345 and 2^53 + 1 arrive unchanged #lua54", function()
    client:upsert_user{ email = "org@example.com", name = "O", organization_id = 123456789012345,
                        custom_role_id = 9007199254740993 }
    local reqs = s:requests()
    local body = reqs[#reqs].body
    assert.matches('"organization_id":123456789012345[,}]', body)
    assert.matches('"custom_role_id":9007199254740993[,}]', body)
    assert.not_matches("e%+", body)
  end)

  it("sends tags = {} as [] and the user under a 'user' key", function()
    client:upsert_user{ email = "t@example.com", name = "T", tags = {}, identities = {} }
    local reqs = s:requests()
    local raw = reqs[#reqs].body
    assert.matches('"tags":%[%]', raw)
    assert.matches('"identities":%[%]', raw)
    assert.is_table(cjson.decode(raw).user)
    assert.equal("application/json", reqs[#reqs].headers["content-type"])
  end)

  it("hands Zendesk's 422 details to the caller as a table", function()
    local user, err = api.upsert_user(client._core, { email = "badmail", name = "Bad" })
    assert.is_nil(user)
    assert.equal("http", err.kind)
    assert.equal(422, err.status)
    assert.equal("RecordInvalid", err.code)
    assert.is_table(err.details.email)
    assert.matches("not properly formatted", err.details.email[1].description)
    assert.is_string(err.request_id)
    assert.is_number(err.rate_limit.remaining)  -- errors carry the budget headers too
    assert.matches("^zendesk: http 422 RecordInvalid: .*%(email: .*not properly formatted%)", tostring(err))
    assert.not_matches("\n", tostring(err))
  end)

  it("answers 401 with an auth error", function()
    local bad = zendesk.new{ url = s.url, email = standin.EMAIL, token = "wrong-token-value", max_retries = 0 }
    local user, err = bad:upsert_user{ email = "x@example.com", name = "X" }
    bad:close()
    assert.is_nil(user)
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
    assert.equal("Couldn't authenticate you", err.code)
  end)

  it("answers an unknown id with 404 RecordNotFound", function()
    local user, err = client:upsert_user{ id = 9223372036854775807, email = "x@example.com" }
    assert.is_nil(user)
    assert.equal(404, err.status)
    assert.equal("RecordNotFound", err.code)
  end)

  it("exposes the rate-limit headers in meta #lua54", function()
    local _, meta = assert(client:upsert_user{ email = "r@example.com", name = "R" })
    assert.equal("integer", math.type(meta.rate_limit.limit))
    assert.is_number(meta.rate_limit.remaining)
    assert.equal(5, meta.endpoint_limit.total)
  end)

  it("keeps unknown user_fields' warning from Zendesk in meta.warn", function()
    local _, meta = assert(client:upsert_user{ email = "w@example.com", name = "W",
                                               user_fields = { no_such_field = "x" } })
    assert.matches("no_such_field", meta.warn)
  end)

  it("sends Accept-Encoding and decodes a gzip-compressed answer", function()
    -- ten users make a show_many answer of several kilobytes, which the stand-in compresses
    local ids = {}
    for i = 1, 10 do
      local u = assert(client:upsert_user{ email = "gz" .. i .. "@example.com", name = "Gzip " .. i })
      ids[i] = u.id
    end
    local before = s:stats().gzipped
    local body, meta = client:request("GET", "/api/v2/users/show_many.json?ids=" .. table.concat(ids, ","))
    assert.is_table(body, tostring(meta))
    assert.equal(200, meta.status)
    local reqs = s:requests()
    assert.matches("gzip", reqs[#reqs].headers["accept-encoding"] or "", 1, true)
    assert.equal(before + 1, s:stats().gzipped, "the stand-in did not compress the answer")
    assert.equal(10, #body.users)
    for i, u in ipairs(body.users) do
      assert.equal(ids[i], u.id)
      assert.equal("gz" .. i .. "@example.com", u.email)
    end
  end)

  it("sends the default User-Agent naming the library and libcurl", function()
    client:upsert_user{ email = "ua@example.com", name = "U" }
    local reqs = s:requests()
    local ua = reqs[#reqs].headers["user-agent"]
    assert.matches("^lua%-zendesk/%d+%.%d+%.%d+ libcurl/%d", ua)
  end)

  describe("with fields", function()
    it("returns only the fields asked for, with meta whole #lua54", function()
      s:config{ id_start = 9007199254740993 }
      local user, meta = client:upsert_user({ email = "f@example.com", name = "F", tags = { "x" } },
                                            { fields = { "id", "tags", "no_such_field" } })
      assert.is_table(user, tostring(meta))
      assert.same({ "id", "tags" }, (function() local k = {} for n in pairs(user) do k[#k + 1] = n end table.sort(k) return k end)())
      assert.equal(9007199254740993, user.id)
      assert.equal("integer", math.type(user.id))
      assert.same({ "x" }, user.tags)
      assert.equal(201, meta.status)
      assert.is_true(meta.created)
      assert.is_string(meta.request_id)
      local again, meta2 = client:upsert_user({ email = "f@example.com", name = "F2" }, { fields = { "name" } })
      assert.same({ name = "F2" }, again)
      assert.is_false(meta2.created)
      -- none of them there: an empty user, not an error
      local none = client:upsert_user({ email = "f@example.com", name = "F3" }, { fields = { "no_such_field" } })
      assert.same({}, none)
    end)

    it("reads the answer as strictly as without fields", function()
      local function answer(body)
        s:fault{ path = "/api/v2/users/create_or_update.json", status = 200, content_type = "application/json", body = body }
        return client:upsert_user({ email = "g@example.com", name = "G" }, { fields = { "id", "name", "tags" } })
      end
      -- escaped keys and values, nested skipped values, a repeated key, other top-level keys
      local u = assert(answer('{"before":{"id":1},"user":{"url":"x\\"y","n\\u0061me":"G\\u00e9",'
        .. '"photo":{"a":[1,2.5,{"b":null}],"c":"\\ud83d\\ude00"},"id":36146830593,"tags":["t"],'
        .. '"id":36146830594,"active":true,"x":-1e3},"after":[{"id":2}]}'))
      assert.same({ id = 36146830594, name = "Gé", tags = { "t" } }, u)
      -- invalid JSON inside a skipped value is still invalid JSON
      for _, bad in ipairs{ '{"user":{"id":1,"photo":[1,]}}', '{"user":{"id":1,"url":"\\x"}}',
                            '{"user":{"id":1,"url":"\\ud800"}}', '{"user":{"id":1,"v":01}}',
                            '{"user":{"id":1,"v":tru}}', '{"user":{"id":1,"v":"a}}' } do
        local v, err = answer(bad)
        assert.is_nil(v, bad)
        assert.equal("InvalidJSON", err.code, bad)
      end
      -- an answer without the user object is the same error as without fields
      local v, err = answer('{"users":[]}')
      assert.is_nil(v)
      assert.equal("InvalidResponse", err.code)
      -- fields apply to the user object only, not to an object inside an array under "user"
      -- (the json_decode fuzz target found it); such an answer is no user at all (issue 12.3)
      v, err = answer('{"user":[{"id":1,"url":"u"}]}')
      assert.is_nil(v)
      assert.equal("invalid_response", err.kind)
    end)

    it("refuses options it does not know, naming them", function()
      local u = { email = "o@example.com", name = "O" }
      assert.has_error(function() client:upsert_user(u, "id") end,
        "upsert_user: argument 'opts' must be a table, got string")
      assert.has_error(function() client:upsert_user(u, { field = { "id" } }) end,
        "upsert_user: unknown option 'field' (upsert_user takes fields)")
      assert.has_error(function() client:upsert_user(u, { fields = {} }) end,
        "upsert_user: option 'fields' must be an array of 1 to 64 user field names")
      assert.has_error(function() client:upsert_user(u, { fields = { "id", 7 } }) end,
        "upsert_user: option 'fields': element 2 must be a field name, got '7'")
      assert.equal(0, #s:requests())
    end)
  end)
end)
