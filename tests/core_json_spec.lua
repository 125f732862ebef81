-- The JSON layer of the core: exact integers both ways, arrays vs objects, and
-- validation errors that name the path of the bad value.
local core = require "zendesk.core"
local cjson = require "cjson"

describe("zendesk.core JSON encoding", function()
  it("writes integers exactly, up to 2^63-1", function()
    assert.equal('{"id":123456789012345}', core.encode{ id = 123456789012345 })
    assert.equal('[9007199254740993]', core.encode{ (1 << 53) + 1 })
    assert.equal('[9223372036854775807,-9223372036854775808]', core.encode{ math.maxinteger, math.mininteger })
  end)

  it("writes an integral float (an id that went through cjson) as an integer", function()
    assert.equal('[36146830593]', core.encode{ 36146830593.0 })
    assert.equal('[1.5]', core.encode{ 1.5 })
    assert.equal('[0.1]', core.encode{ 0.1 })
  end)

  it("sends empty tags and identities as [] and other empty tables as {}", function()
    local s = core.encode{ tags = {}, identities = {}, agent_brand_ids = {}, user_fields = {} }
    local back = cjson.decode(s)
    assert.matches('"tags":%[%]', s)
    assert.matches('"identities":%[%]', s)
    assert.matches('"agent_brand_ids":%[%]', s)
    assert.matches('"user_fields":{}', s)
    assert.is_table(back.user_fields)
  end)

  it("lets a metatable force the shape of an empty table", function()
    assert.equal('{"x":[]}', core.encode{ x = setmetatable({}, core.array_mt) })
    assert.equal('{"tags":{}}', core.encode{ tags = setmetatable({}, core.object_mt) })
  end)

  it("writes zendesk.null as null", function()
    assert.equal('{"phone":null}', core.encode{ phone = core.null })
    assert.equal(cjson.null, core.null)
  end)

  it("escapes strings and keeps valid UTF-8 as it is", function()
    assert.equal('["a\\"b\\\\c\\n\\u0001é漢"]', core.encode{ 'a"b\\c\n\1é漢' })
  end)

  local function bad(value, root)
    local s, err = core.encode(value, root)
    assert.is_nil(s)
    assert.equal("validation", err.kind)
    return err.message
  end

  it("refuses a cycle, naming its path", function()
    local u = { user_fields = {} }
    u.user_fields.me = u
    assert.matches("^user%.user_fields%.me: cycle", bad(u, "user"))
  end)

  it("refuses NaN and infinities with the path of the value", function()
    local users = { { name = "a" }, { name = "b" }, { user_fields = { level = 0 / 0 } } }
    assert.equal("users[3].user_fields.level: NaN is not a valid JSON number", bad(users, "users"))
    assert.matches("inf", bad({ x = math.huge }))
  end)

  it("refuses non-string keys in an object and mixed tables", function()
    assert.matches("^user.user_fields: non%-string key 1.5", bad({ user_fields = { [1.5] = "x" } }, "user"))
    assert.matches("mixes array items and named fields", bad({ 1, 2, x = 3 }))
    assert.matches("key of type boolean", bad({ [true] = 1 }))
    assert.matches("sparse array", bad({ [1] = "a", [3] = "c" }))
  end)

  it("refuses invalid UTF-8, naming the path", function()
    assert.matches("^users%[2%]%.name: invalid UTF%-8", bad({ { name = "ok" }, { name = "\xff\xfe" } }, "users"))
    assert.matches("invalid UTF%-8", bad({ "\xed\xa0\x80" }))  -- a UTF-16 surrogate
    assert.matches("invalid UTF%-8", bad({ "\xc0\xaf" }))      -- overlong
  end)

  it("refuses functions and userdata", function()
    assert.matches("cannot encode a function", bad({ f = print }))
  end)

  it("refuses a table reused so often that its JSON would explode", function()
    -- 2^5 copies of a 4 MiB string as text (a long string, so that valgrind gets there fast;
    -- { "x" } doubled 40 times fails the same way, in 2 s natively and 50 s under valgrind)
    local t = { string.rep("x", 1 << 22) }
    for _ = 1, 5 do t = { t, t } end
    local msg = bad(t, "body")
    assert.matches("more than 64 MiB", msg)
  end)

  it("refuses nesting deeper than it can follow", function()
    local t = {}
    local cur = t
    for _ = 1, 100 do cur.x = {}; cur = cur.x end
    assert.matches("nested too deeply", bad(t))
  end)
end)

describe("zendesk.core JSON decoding", function()
  it("returns every integral number as a Lua integer, nested too", function()
    local v = core.decode('{"job_status":{"total":2,"results":[{"id":36146830593,"index":0},' ..
                          '{"id":421941820731,"status":"Created"}]},"user_fields":{"level":3}}')
    assert.equal("integer", math.type(v.job_status.total))
    assert.equal("integer", math.type(v.job_status.results[1].id))
    assert.equal(36146830593, v.job_status.results[1].id)
    assert.equal(421941820731, v.job_status.results[2].id)
    assert.equal("integer", math.type(v.user_fields.level))
    assert.equal("/users/36146830593", "/users/" .. v.job_status.results[1].id)
  end)

  it("keeps ids above 2^53 exact", function()
    local v = core.decode('{"a":9007199254740993,"b":9223372036854775807,"c":[-9223372036854775807]}')
    assert.equal((1 << 53) + 1, v.a)
    assert.equal(math.maxinteger, v.b)
    assert.equal(-math.maxinteger, v.c[1])
  end)

  it("keeps fractions as floats and handles a bare number", function()
    local v = core.decode('{"score":2.5}')
    assert.equal("float", math.type(v.score))
    assert.equal("integer", math.type(core.decode("7")))
  end)

  it("reads raw UTF-8 and \\u escapes alike", function()
    local v = core.decode('{"name":"Zo\\u00eb \\u0026 Zoë \\u003c"}')
    assert.equal("Zoë & Zoë <", v.name)
  end)

  it("decodes null as zendesk.null", function()
    assert.equal(core.null, core.decode('{"x":null}').x)
  end)

  it("answers invalid JSON with nil and a validation error", function()
    local v, err = core.decode('{"id": 1,')
    assert.is_nil(v)
    assert.equal("validation", err.kind)
    assert.matches("invalid JSON", tostring(err))
  end)

  it("round-trips a user table", function()
    local u = { id = 9223372036854775807, tags = { "a" }, user_fields = { n = 1, d = 1.25 } }
    assert.same(u, core.decode(core.encode(u)))
  end)
end)
