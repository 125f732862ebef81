-- client:user_fields against the stand-in: every page read, cached per client, refreshed on
-- demand; with the schema, upsert_user and upsert_users check user_fields before any request,
-- each of the ten field types accepted (stored typed at the stand-in) and refused (nothing sent).
local standin = require "support.standin"
local zendesk = require "zendesk"

local FIELDS = {
  { key = "note", type = "text", title = "Note" },
  { key = "bio", type = "textarea", title = "Biography" },
  { key = "vip", type = "checkbox", title = "VIP" },
  { key = "start_date", type = "date", title = "Start date" },
  { key = "employee_number", type = "integer", title = "Employee number" },
  { key = "score", type = "decimal", title = "Score" },
  { key = "badge", type = "regexp", title = "Badge", regexp = "\\AB-[0-9]+\\z" },
  { key = "level", type = "dropdown", title = "Level",
    options = { { name = "Gold Tier", value = "gold" }, { name = "Silver", value = "silver" } } },
  { key = "skills", type = "multiselect", title = "Skills", options = { "lua", "c" } },
  { key = "manager", type = "lookup", title = "Manager" },
  { key = "legacy", type = "text", title = "Legacy", active = false },
}

-- per type: the key, a value Zendesk takes (and the stand-in stores as is), one it refuses, and
-- what the refusal says
local CASES = {
  { "note", "hello", true, "must be a string %(a text field%)" },
  { "bio", "two\nlines", false, "must be a string %(a textarea field%)" },
  { "vip", true, "yes", "must be true or false %(a checkbox field" },
  { "start_date", "2024-02-29", "2023-02-29", "must be a calendar date YYYY%-MM%-DD" },
  { "employee_number", 1234, 12.5, "must be an integer %(an integer field%)" },
  { "score", 4.75, "4,75", "'4,75' is not a decimal number %(a decimal field%)" },
  { "badge", "B-42", "b-42", "'b%-42' does not match the field's pattern \\AB%-%[0%-9%]%+\\z" },
  { "level", "gold", "Gold Tier", "'Gold Tier' is not an option of the dropdown %(one of: gold, silver%)" },
  { "skills", { "lua", "c" }, { "lua", "go" }, "%[2%]: 'go' is not an option of the multiselect %(one of: lua, c%)" },
  { "manager", 36146830593, "Ann", "must be the id of the related record %(a lookup field%)" },
}

describe("client:user_fields", function()
  local s, client

  local function new_client(extra)
    local o = { url = s.url, email = standin.EMAIL, token = standin.TOKEN }
    for k, v in pairs(extra or {}) do o[k] = v end
    return zendesk.new(o)
  end

  local function field_gets()
    local n = 0
    for _, r in ipairs(s:requests()) do
      if r.path:find("^/api/v2/user_fields") then n = n + 1 end
    end
    return n
  end

  setup(function()
    s = standin.start()
  end)
  teardown(function()
    if client then client:close() end
    s:stop()
  end)
  before_each(function()
    s:reset()
    s:config{ user_fields = FIELDS, job_delay_ms = 0 }
    if client then client:close() end
    client = new_client()
  end)

  it("reads more than 100 fields across every page, once per client, again on refresh", function()
    local many = {}
    for i = 1, 230 do many[i] = { key = "f" .. i, type = i % 2 == 0 and "integer" or "text", title = "Field " .. i } end
    s:config{ user_fields = many }
    local list = assert(client:user_fields())
    assert.equal(230, #list)
    for i = 1, 230 do assert.equal("f" .. i, list[i].key) end
    assert.equal("integer", list[230].type)
    assert.equal(3, field_gets())
    -- cached: the same list, no request
    assert.equal(list, client:user_fields())
    assert.equal(3, field_gets())
    -- the last page's field is checked like the first
    local _, err = client:upsert_user{ email = "a@example.com", user_fields = { f230 = "x" } }
    assert.equal("user.user_fields.f230: 'x' is not an integer (an integer field)", err.message)
    local refreshed = assert(client:user_fields{ refresh = true })
    assert.equal(230, #refreshed)
    assert.equal(6, field_gets())
    -- another client asks for itself
    local other = new_client()
    assert.equal(230, #assert(other:user_fields()))
    other:close()
    assert.equal(9, field_gets())
  end)

  it("answers the definitions as Zendesk gives them", function()
    local list = assert(client:user_fields())
    assert.equal(#FIELDS, #list)
    assert.equal("level", list[8].key)
    assert.equal("dropdown", list[8].type)
    assert.equal("gold", list[8].custom_field_options[1].value)
    assert.equal("Gold Tier", list[8].custom_field_options[1].name)
    assert.equal("\\AB-[0-9]+\\z", list[7].regexp_for_validation)
    assert.is_false(list[11].active)
  end)

  it("checks nothing before the schema is read (Zendesk decides)", function()
    local u, err = client:upsert_user{ email = "early@example.com", name = "E", user_fields = { level = "platinum" } }
    assert.is_nil(u)
    assert.equal("http", err.kind)     -- the stand-in's 422: the request was made
    assert.equal(1, #s:requests())
  end)

  for _, c in ipairs(CASES) do
    local key, good, bad, why = c[1], c[2], c[3], c[4]
    it(key .. ": the good value is sent and stored typed, the bad one refused before any request", function()
      assert(client:user_fields())
      local before = #s:requests()
      local u, err = client:upsert_user{ email = key .. "@example.com", name = key, user_fields = { [key] = bad } }
      assert.is_nil(u)
      assert.equal("validation", err.kind)
      assert.equal("user.user_fields." .. key, err.path)
      assert.matches("^user%.user_fields%." .. key .. ": " .. why, err.message)
      assert.equal(before, #s:requests())
      -- in a bulk call, with its index
      local job
      job, err = client:upsert_users{ { email = "ok@example.com" }, { email = "b@example.com", user_fields = { [key] = bad } } }
      assert.is_nil(job)
      assert.equal("users[2].user_fields." .. key, err.errors[1].path)
      assert.equal(2, err.errors[1].index)
      assert.equal(before, #s:requests())

      local meta
      u, meta = client:upsert_user{ email = key .. "@example.com", name = key, user_fields = { [key] = good } }
      assert.is_table(u, tostring(meta))
      assert.same(good, u.user_fields[key])
      local stored = s:users()[1]
      assert.same(good, stored.user_fields[key])
      if key == "employee_number" and math.type then assert.equal("integer", math.type(stored.user_fields[key])) end
    end)
  end

  it("agrees with the stand-in on every probe value: never refuses what Zendesk takes", function()
    s:config{ per_user_limit = 0 }
    local fields = require "zendesk.fields"
    local schema = fields.schema(assert(client:user_fields()))
    local raw = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }   -- no schema: no check
    local PROBES = {
      note = { "x", 12, 1.5, true, "" }, bio = { "a\nb", 3, false },
      vip = { true, false, "true", "false", "1", "0", "True", "yes", "", 1, 0 },
      start_date = { "2024-02-29", "2023-02-29", "2024-02-29T10:00:00Z", "2024-2-1", "", 20240229 },
      employee_number = { 7, -7, "7", "-7", "+7", 7.5, "7.5", "x", "", 1e20 },
      score = { 1.5, "1.5", "3.", ".5", "-0.25", "1,5", "x", "", true },
      badge = { "B-1", "b-1", "", 5, "B-1\nB-2" },
      level = { "gold", "silver", "Gold Tier", "GOLD", "", 3 },
      skills = { { "lua" }, { "lua", "c" }, { "go" }, "lua", "go" },
      manager = { 5, "5", 0, "0", -5, "x", 5.5 },
    }
    local n, agreed = 0, 0
    for key, values in pairs(PROBES) do
      for i, v in ipairs(values) do
        n = n + 1
        local local_ok = fields.check_value(schema.by_key[key], v) == nil
        local u, err = raw:upsert_user{ email = ("probe%d.%s@example.com"):format(i, key), name = "P",
                                        user_fields = { [key] = v } }
        assert(u or (err and err.status == 422), tostring(err))
        local server_ok = u ~= nil
        assert.equal(server_ok, local_ok, ("%s = %s: the stand-in %s, the client %s"):format(key,
          standin.encode(v), server_ok and "takes it" or "refuses it", local_ok and "takes it" or "refuses it"))
        agreed = agreed + 1
      end
    end
    raw:close()
    assert.equal(n, agreed)
    assert.is_true(n >= 60)
  end)

  it("refuses an unknown key (naming the closest) and an inactive field, before any request", function()
    assert(client:user_fields())
    local before = #s:requests()
    local _, err = client:upsert_user{ email = "a@example.com", user_fields = { levl = "gold" } }
    assert.matches("^user%.user_fields%.levl: unknown user field %(the account has no field with this key; "
                   .. "closest: level,", err.message)
    _, err = client:upsert_user{ email = "a@example.com", user_fields = { legacy = "x" } }
    assert.equal("user.user_fields.legacy: the field is inactive in the account (it cannot be set)", err.message)
    assert.equal(before, #s:requests())
    -- zendesk.null clears any field
    local u, meta = client:upsert_user{ email = "a@example.com", name = "A", user_fields = { level = zendesk.null } }
    assert.is_table(u, tostring(meta))
  end)

  it("takes the definitions given, and says once that a regexp it cannot compile is left to Zendesk", function()
    local events = {}
    local c = new_client{ on_event = function(e) events[#events + 1] = e end }
    local given = { { key = "note", type = "regexp", regexp_for_validation = "\\A\\p{NoSuchProperty}+\\z" },
                    { key = "vip", type = "checkbox" } }
    assert.equal(given, c:user_fields{ definitions = given })
    assert.equal(1, #events)
    assert.equal("user_fields", events[1].type)
    assert.equal("note", events[1].field)
    assert.matches("cannot be compiled here .*Zendesk checks its values", events[1].message)
    -- not checked here: the value goes to the stand-in (a text field there), which takes it
    local u, meta = c:upsert_user{ email = "r@example.com", name = "R", user_fields = { note = "anything" } }
    assert.is_table(u, tostring(meta))
    -- the other field still is
    local _, err = c:upsert_user{ email = "r@example.com", user_fields = { vip = "yes" } }
    assert.equal("validation", err.kind)
    assert.equal(1, #events)
    assert.equal(0, field_gets())
    c:close()
  end)

  it("passes a failed read through, and misuse raises", function()
    local bad = zendesk.new{ url = s.url, email = standin.EMAIL, token = "wrong", max_retries = 0 }
    local list, err = bad:user_fields()
    assert.is_nil(list)
    assert.equal(401, err.status)
    bad:close()
    assert.has_error(function() client:user_fields{ refesh = true } end, "user_fields: unknown option 'refesh'")
    assert.has_error(function() client:user_fields{ definitions = { "x" } } end,
      "user_fields: option 'definitions': user field definition 1: expected a table, got string")
  end)
end)
