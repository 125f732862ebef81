-- The JSON layer of the core: exact integers both ways, arrays vs objects, and
-- validation errors that name the path of the bad value.
local core = require "zendesk.core"
local cjson = require "cjson"
-- Zendesk's array keys (tags, identities...) are the codec's configuration, set by zendesk.api
-- (core.json_config) since issue 14 P2
require "zendesk.api"

describe("zendesk.core JSON encoding", function()
  it("writes integers exactly, up to 2^63-1 #lua54", function()
    assert.equal('{"id":123456789012345}', core.encode{ id = 123456789012345 })
    assert.equal('[9007199254740993]', core.encode{ 9007199254740993 })
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
    local t = { string.rep("x", 4194304) }
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
  it("returns every integral number as a Lua integer, nested too #lua54", function()
    local v = core.decode('{"job_status":{"total":2,"results":[{"id":36146830593,"index":0},' ..
                          '{"id":421941820731,"status":"Created"}]},"user_fields":{"level":3}}')
    assert.equal("integer", math.type(v.job_status.total))
    assert.equal("integer", math.type(v.job_status.results[1].id))
    assert.equal(36146830593, v.job_status.results[1].id)
    assert.equal(421941820731, v.job_status.results[2].id)
    assert.equal("integer", math.type(v.user_fields.level))
    assert.equal("/users/36146830593", "/users/" .. v.job_status.results[1].id)
  end)

  it("keeps ids above 2^53 exact #lua54", function()
    local v = core.decode('{"a":9007199254740993,"b":9223372036854775807,"c":[-9223372036854775807]}')
    assert.equal(9007199254740993, v.a)
    assert.equal(math.maxinteger, v.b)
    assert.equal(-math.maxinteger, v.c[1])
  end)

  it("keeps fractions as floats and handles a bare number #lua54", function()
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

  it("reads numbers as JSON writes them #lua54", function()
    local v = core.decode('[0,-0,1.0,1e3,-1E+2,2.5e-1,1e300,-9223372036854775808,'
      .. '9223372036854775808,123456789012345678901234567890,0.1]')
    assert.same({ 0, 0, 1, 1000, -100, 0.25 }, { table.unpack(v, 1, 6) })
    for i = 1, 5 do assert.equal("integer", math.type(v[i]), "element " .. i) end
    assert.equal(1e300, v[7])
    assert.equal(math.mininteger, v[8])
    assert.equal("integer", math.type(v[8]))
    assert.equal("float", math.type(v[9]))       -- 2^63 does not fit: a float, not a wrap
    assert.equal(2^63, v[9])
    assert.equal(1.2345678901234568e29, v[10])
    assert.equal(0.1, v[11])
    -- a number longer than 64 characters
    local long = "1" .. string.rep("0", 80) .. ".5"
    assert.equal(tonumber(long), core.decode(long))
  end)

  it("reads escapes, surrogate pairs and raw bytes in strings", function()
    assert.equal('a"b\\c/\b\f\n\r\t', core.decode([["a\"b\\c\/\b\f\n\r\t"]]))
    assert.equal("\u{1F600}\u{e9}\0x", core.decode([["\ud83d\ude00\u00E9\u0000x"]]))
    assert.equal("tab\there", core.decode('"tab\there"'))          -- a raw control byte, kept
    assert.equal(("\xff\xfe"), core.decode('"\xff\xfe"'))          -- bytes are not checked as UTF-8
    local long = string.rep("x", 5000) .. "\\n" .. string.rep("y", 5000)
    assert.equal(string.rep("x", 5000) .. "\n" .. string.rep("y", 5000), core.decode('"' .. long .. '"'))
  end)

  it("refuses what is not JSON, saying where", function()
    local cases = {
      "", " ", "{", "[1,]", "[1 2]", '{"a":}', '{"a" 1}', "{a:1}", "01", "-", "1.", ".5", "1e",
      "+1", "0x10", "NaN", "Infinity", "tru", "nul", '"abc', '"\\x"', '"\\u12"', '"\\ud800"',
      '"\\udc00x"', '"\\ud800\\u0041"', '"a\0b"', "[] []", '{"a":1}x', "[" .. string.rep("[", 1000) .. string.rep("]", 1001),
    }
    for _, text in ipairs(cases) do
      local v, err = core.decode(text)
      assert.is_nil(v, text)
      assert.equal("validation", err.kind)
      assert.matches("^invalid JSON: .+ at character %d+$", err.message, 1, false)
    end
    local _, err = core.decode('{"id": 1, "name": x}')
    assert.equal("invalid JSON: expected a value at character 19", err.message)
    -- 1,000 levels are fine, and each takes Lua stack slots of its own (valgrind sees a write
    -- past the stack if a level does not ask for them)
    assert.is_table(core.decode(string.rep("[", 1000) .. string.rep("]", 1000)))
    local deep = core.decode(string.rep('{"a":', 997) .. '{"a":[1,{"b":2}]}' .. string.rep("}", 997))
    for _ = 1, 998 do deep = deep.a end   -- 998 objects, the array and {"b":2}: 1,000 levels
    assert.same({ 1, { b = 2 } }, deep)
    assert.is_table(core.decode(string.rep('[1,', 999) .. '2' .. string.rep("]", 999)))
  end)

  it("reads large objects and arrays (past the part gathered on the stack)", function()
    local parts, arr = {}, {}
    for i = 1, 5000 do
      parts[#parts + 1] = string.format('"k%d":%d', i, i)
      arr[i] = tostring(i * 3)
    end
    local o = core.decode("{" .. table.concat(parts, ",") .. ',"k7":"last"}')
    assert.equal(1, o.k1)
    assert.equal(5000, o.k5000)
    assert.equal("last", o.k7)   -- a repeated key: the last wins
    local a = core.decode("[" .. table.concat(arr, ",") .. "]")
    assert.equal(5000, #a)
    assert.equal(15000, a[5000])
    local small = core.decode('{"a":1,"b":2,"a":3}')
    assert.equal(3, small.a)
  end)

  it("agrees with lua-cjson on random documents #lua54", function()
    -- cjson reads every number as a double; exact integers here are below 2^53 so both agree
    local oracle = cjson.new()
    -- ZD_SEED=<n> replays a run; the seed is printed so that a failure can be replayed
    local seed = tonumber(os.getenv("ZD_SEED") or "") or os.time()
    math.randomseed(seed)
    io.stdout:write("\ncore_json_spec: random documents from ZD_SEED=", string.format("%d", seed), "\n")
    local function rstring()
      local out = {}
      for _ = 1, math.random(0, 12) do
        local r = math.random(1, 10)
        if r == 1 then out[#out + 1] = "\\u" .. string.format("%04x", math.random(1, 0xd7ff))
        elseif r == 2 then out[#out + 1] = ({ "\\n", "\\\"", "\\\\", "\\/", "\\t" })[math.random(1, 5)]
        elseif r == 3 then out[#out + 1] = "é"
        else out[#out + 1] = string.char(math.random(0x20, 0x7e)):gsub('[\\"]', "x") end
      end
      return '"' .. table.concat(out) .. '"'
    end
    local function rnumber()
      local r = math.random(1, 5)
      if r == 1 then return tostring(math.random(-2^31, 2^31)) end
      if r == 2 then return tostring(math.random(0, 2^52)) end
      if r == 3 then return string.format("%.3f", math.random() * 1000) end
      if r == 4 then return string.format("%de%d", math.random(1, 9), math.random(-5, 5)) end
      return "-0"
    end
    local function rvalue(depth)
      local r = math.random(1, depth > 4 and 4 or 7)
      if r == 1 then return rstring() end
      if r == 2 then return rnumber() end
      if r == 3 then return ({ "true", "false", "null" })[math.random(1, 3)] end
      if r == 4 then return rstring() end
      local ws = ({ "", " ", "\n\t ", "\r\n" })[math.random(1, 4)]
      local out = {}
      for _ = 1, math.random(0, depth == 0 and 80 or 6) do
        out[#out + 1] = r <= 5 and rvalue(depth + 1) or (rstring() .. ws .. ":" .. ws .. rvalue(depth + 1))
      end
      local sep = ws .. "," .. ws
      if r <= 5 then return "[" .. ws .. table.concat(out, sep) .. ws .. "]" end
      return "{" .. ws .. table.concat(out, sep) .. ws .. "}"
    end
    local function normal(v)   -- cjson's doubles as the integers the core gives
      if type(v) == "number" and v == math.floor(v) and v > -2^63 and v < 2^63 then
        return math.tointeger(v)
      elseif type(v) == "table" then
        local t = {}
        for k, x in pairs(v) do t[k] = normal(x) end
        return t
      end
      return v
    end
    for i = 1, 300 do
      local text = rvalue(0)
      local want = normal(oracle.decode(text))
      local got, err = core.decode(text)
      assert(err == nil, "seed " .. seed .. ", document " .. i .. ": " .. tostring(err))
      assert.same(want, got, "seed " .. seed .. ", document " .. i .. ": " .. text)
    end
  end)
end)
