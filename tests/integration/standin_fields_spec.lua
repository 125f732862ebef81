-- The stand-in's custom user fields and identities (issue 15): GET /api/v2/user_fields in
-- Zendesk's shape with cursor and offset pagination, the user_fields config in its map and
-- list forms, each of the ten field types accepted and refused at create_or_update and in a
-- bulk job, inactive fields, and identities stored as Zendesk stores them.
-- Over real HTTP with curl against one instance for the file.
local standin = require "support.standin"

local UPSERT = "/api/v2/users/create_or_update.json"
local MANY = "/api/v2/users/create_or_update_many.json"
local FIELDS = "/api/v2/user_fields.json"
local FIELD_KEYS = { "id", "url", "key", "type", "title", "raw_title", "description", "raw_description",
  "position", "active", "system", "regexp_for_validation", "custom_field_options", "tag", "created_at",
  "updated_at" }

local function sleep(s)
  os.execute("sleep " .. s)
end

-- The ten types: a field definition (list form), values accepted with what is stored,
-- values refused.
local TEN = {
  { def = { key = "f_text", type = "text" },
    good = { { "hello", "hello" }, { 42, "42" }, { standin.null, standin.null } }, bad = { true, { 1, 2 } } },
  { def = { key = "f_area", type = "textarea" },
    good = { { "line 1\nline 2", "line 1\nline 2" } }, bad = { false } },
  { def = { key = "f_check", type = "checkbox" },
    good = { { true, true }, { false, false }, { "1", true }, { "0", false }, { "true", true }, { "false", false },
      { standin.null, false } },
    bad = { "True", "FALSE", "yes", "", 1 } },
  { def = { key = "f_date", type = "date" },
    good = { { "2024-02-29", "2024-02-29" }, { "2000-02-29", "2000-02-29" }, { "2024-03-01T10:00:00Z", "2024-03-01" } },
    bad = { "2023-02-29", "1900-02-29", "2024-13-01", "01/02/2024", 20240101 } },
  { def = { key = "f_int", type = "integer" },
    good = { { 42, 42 }, { "-7", -7 }, { "007", 7 } },
    bad = { 4.5, "4.5", "x", "9223372036854775808", 1e20, true } },
  { def = { key = "f_dec", type = "decimal" },
    good = { { 4.5, 4.5 }, { "-0.25", -0.25 }, { 3, 3 } }, bad = { "x", "1.2.3", true } },
  { def = { key = "f_re", type = "regexp", regexp = "\\AB-[0-9]+\\z" },
    good = { { "B-12", "B-12" } }, bad = { "B-12x", "b-12", "B-1\nB-2", 12 } },
  { def = { key = "f_drop", type = "dropdown", options = { "gold", { name = "Silver", value = "silver" } } },
    good = { { "gold", "gold" }, { "silver", "silver" } }, bad = { "Silver", "bronze", true } },
  { def = { key = "f_multi", type = "multiselect", options = { "a", "b", "c" } },
    good = { { { "a", "c" }, { "a", "c" } }, { "b", { "b" } } }, bad = { { "a", "z" }, 5, { 1 } } },
  { def = { key = "f_look", type = "lookup" },
    good = { { 36146830593, 36146830593 }, { "12", 12 } }, bad = { "abc", -1, 0, 1.5 } },
}

local function ten_defs()
  local list = {}
  for i, t in ipairs(TEN) do list[i] = t.def end
  return list
end

describe("stand-in user fields", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
  end)

  local function get(path)
    local res = s:http("GET", path)
    assert.equal(200, res.status, path .. ": " .. res.body)
    return standin.decode_ordered(res.body)
  end

  local function upsert(user)
    return s:http("POST", UPSERT, { body = { user = user } })
  end

  local function wait_job(id)
    for _ = 1, 300 do
      local res = s:http("GET", "/api/v2/job_statuses/" .. id .. ".json")
      if res.status == 200 then
        local job = standin.decode(res.body).job_status
        if job.status == "completed" or job.status == "failed" or job.status == "killed" then return job end
      end
      sleep(0.05)
    end
    error("job " .. id .. " did not finish")
  end

  local function many_fields(n)
    local list = {}
    for i = 1, n do list[i] = { key = string.format("k%03d", n - i), type = "text" } end
    return list
  end

  describe("GET /api/v2/user_fields", function()
    it("answers every field in the configured order, in Zendesk's shape", function()
      s:config{ user_fields = {
        { key = "level", type = "dropdown", title = "Level", description = "Support tier",
          options = { "gold", { name = "Silver tier", value = "silver" } } },
        { key = "badge", type = "regexp", regexp = "\\AB-[0-9]+\\z" },
        { key = "vip", type = "checkbox", active = false, tag = "vip_user" },
        { key = "tags_of", type = "multiselect", options = { "x" } },
      } }
      local doc = get(FIELDS)
      assert.same({ "user_fields", "next_page", "previous_page", "count" }, standin.keys_of(doc))
      local f = doc.user_fields
      assert.equal(4, #f)
      assert.equal(4, doc.count)
      assert.equal(standin.null, doc.next_page)
      for i, field in ipairs(f) do
        assert.same(FIELD_KEYS, standin.keys_of(field), "field " .. i)
        assert.equal(i - 1, field.position)
        assert.is_false(field.system)
        assert.equal("integer", math.type(field.id))
        assert.equal(s.url .. "/api/v2/user_fields/" .. field.id .. ".json", field.url)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", field.created_at)
      end
      assert.same({ "level", "badge", "vip", "tags_of" }, { f[1].key, f[2].key, f[3].key, f[4].key })
      assert.same({ "dropdown", "regexp", "checkbox", "multiselect" }, { f[1].type, f[2].type, f[3].type, f[4].type })
      assert.equal("Level", f[1].title)
      assert.equal("Level", f[1].raw_title)
      assert.equal("Support tier", f[1].description)
      assert.equal("badge", f[2].title) -- title defaults to the key
      assert.is_true(f[1].active)
      assert.is_false(f[3].active)
      assert.equal("vip_user", f[3].tag)
      assert.equal(standin.null, f[1].tag)
      local opts = f[1].custom_field_options
      assert.equal(2, #opts)
      assert.same({ "id", "name", "raw_name", "value" }, standin.keys_of(opts[1]))
      assert.same({ "gold", "gold", "gold" }, { opts[1].name, opts[1].raw_name, opts[1].value })
      assert.same({ "Silver tier", "Silver tier", "silver" }, { opts[2].name, opts[2].raw_name, opts[2].value })
      assert.are_not.equal(opts[1].id, opts[2].id)
      assert.equal("x", f[4].custom_field_options[1].value)
      assert.are_not.equal(opts[1].id, f[4].custom_field_options[1].id)
      assert.equal(standin.null, f[2].custom_field_options)
      assert.equal("\\AB-[0-9]+\\z", f[2].regexp_for_validation)
      assert.equal(standin.null, f[1].regexp_for_validation)
    end)

    it("needs credentials like every other route", function()
      local res = s:http("GET", FIELDS, { auth = "none" })
      assert.equal(401, res.status)
      assert.equal(200, s:http("GET", "/api/v2/user_fields", { auth = "bearer" }).status)
    end)

    it("pages with cursors: page[size] up to 100, links.next until has_more is false", function()
      s:config{ user_fields = many_fields(250) }
      local keys, seen, pages = {}, {}, {}
      local url = s.url .. FIELDS .. "?page%5Bsize%5D=100"
      while url do
        local res = s:http("GET", nil, { url = url })
        assert.equal(200, res.status, res.body)
        local doc = standin.decode_ordered(res.body)
        assert.same({ "user_fields", "meta", "links" }, standin.keys_of(doc))
        assert.same({ "has_more", "after_cursor", "before_cursor" }, standin.keys_of(doc.meta))
        assert.same({ "prev", "next" }, standin.keys_of(doc.links))
        pages[#pages + 1] = doc
        for _, f in ipairs(doc.user_fields) do
          assert.is_nil(seen[f.key], f.key .. " twice")
          seen[f.key] = true
          keys[#keys + 1] = f.key
        end
        url = doc.meta.has_more and doc.links.next or nil
        assert.is_true(#pages <= 3)
      end
      assert.equal(3, #pages)
      assert.same({ 100, 100, 50 }, { #pages[1].user_fields, #pages[2].user_fields, #pages[3].user_fields })
      assert.same({ true, true, false }, { pages[1].meta.has_more, pages[2].meta.has_more, pages[3].meta.has_more })
      assert.equal(standin.null, pages[3].links.next)
      assert.equal(standin.null, pages[1].links.prev)
      assert.is_string(pages[2].links.prev)
      assert.equal(250, #keys)
      for i, k in ipairs(keys) do assert.equal(string.format("k%03d", 250 - i), k) end -- configured order
      -- the prev link of page 3 gives page 2 again
      local back = standin.decode(s:http("GET", nil, { url = pages[3].links.prev }).body)
      assert.equal(100, #back.user_fields)
      assert.equal(pages[2].user_fields[1].key, back.user_fields[1].key)
      assert.equal(pages[2].user_fields[100].key, back.user_fields[100].key)
    end)

    it("defaults page[size] to 100 and refuses more than 100", function()
      s:config{ user_fields = many_fields(150) }
      local first = get(FIELDS .. "?page%5Bsize%5D=7")
      assert.equal(7, #first.user_fields)
      local after = get(FIELDS .. "?page%5Bafter%5D=" .. first.meta.after_cursor)
      assert.equal(100, #after.user_fields)
      assert.equal("k142", after.user_fields[1].key)
      assert.is_true(after.meta.has_more)
      for _, q in ipairs{ "?page%5Bsize%5D=101", "?page%5Bsize%5D=0", "?page%5Bsize%5D=x",
                          "?page%5Bafter%5D=bogus" } do
        local res = s:http("GET", FIELDS .. q)
        assert.equal(400, res.status, q)
        assert.equal("InvalidPaginationParameter", standin.decode(res.body).errors[1].code, q)
      end
    end)

    it("pages by offset when no cursor parameter is given (next_page until null, count)", function()
      s:config{ user_fields = many_fields(230) }
      local doc = get(FIELDS)
      assert.equal(100, #doc.user_fields)
      assert.equal(230, doc.count)
      local n, url = #doc.user_fields, doc.next_page
      local pages = 1
      while url ~= standin.null do
        local d = standin.decode(s:http("GET", nil, { url = url }).body)
        n = n + #d.user_fields
        url = d.next_page
        pages = pages + 1
        assert.is_true(pages <= 3)
      end
      assert.equal(230, n)
      assert.equal(3, pages)
      assert.equal(30, #get(FIELDS .. "?page=3&per_page=100").user_fields)
    end)

    it("lists the map form ordered by key", function()
      s:config{ user_fields = { vip = "checkbox", level = { type = "dropdown", options = { "gold" } }, age = "integer" } }
      local f = get("/api/v2/user_fields").user_fields
      assert.same({ "age", "level", "vip" }, { f[1].key, f[2].key, f[3].key })
      assert.same({ "integer", "dropdown", "checkbox" }, { f[1].type, f[2].type, f[3].type })
      assert.equal("gold", f[2].custom_field_options[1].value)
      assert.equal(standin.null, f[1].custom_field_options)
    end)
  end)

  describe("the user_fields config", function()
    it("refuses a malformed one with a 400 naming the field, and keeps the old one", function()
      s:config{ user_fields = { { key = "keep", type = "text" } } }
      local cases = {
        { { { key = "x", type = "nope" } }, "user_fields%[1%]: type must be one of" },
        { { { key = "x" }, { key = "x", type = "date" } }, "user_fields%[2%]: key 'x' twice" },
        { { { key = "x", type = "text", options = { "a" } } }, "user_fields%[1%]: options are for dropdown" },
        { { { key = "x", type = "dropdown", options = { "a", "a" } } }, "option value 'a' twice" },
        { { { key = "x", type = "dropdown", options = { 5 } } }, "user_fields%[1%]%.options%[1%]" },
        { { { key = "x", type = "dropdown", options = { { name = "A" } } } }, "user_fields%[1%]%.options%[1%]" },
        { { { key = "x", type = "text", regexp = "a" } }, "regexp is for regexp fields only" },
        { { { key = "x", type = "checkbox", active = "no" } }, "active must be true or false" },
        { { { key = "has space", type = "text" } }, "key must be letters, digits and underscores" },
        { { { key = "x", type = "text", colour = "red" } }, "unknown field key 'colour'" },
        { { { type = "text" } }, "user_fields%[1%]: key must be" },
        { { "text" }, "user_fields%[1%]: a field is an object" },
        { { x = "nope" }, "user_fields%.x: type must be one of" },
        { "text", "user_fields must be an object" },
      }
      for i, c in ipairs(cases) do
        local status, body = s:admin("POST", "/__admin/config", { user_fields = c[1] })
        assert.equal(400, status, "case " .. i)
        assert.matches(c[2], body.error, nil, false)
      end
      local f = get(FIELDS).user_fields
      assert.equal(1, #f)
      assert.equal("keep", f[1].key)
    end)

    it("takes {name, value} options and strings; GET /__admin/config answers the form given", function()
      local list = { { key = "level", type = "dropdown", options = { "gold", { name = "Silver", value = "silver" } } } }
      s:config{ user_fields = list }
      assert.same(list, s:config().user_fields)
      s:config{ user_fields = { vip = "checkbox" } }
      assert.same({ vip = "checkbox" }, s:config().user_fields)
    end)
  end)

  describe("values", function()
    local function base_errors(res)
      assert.equal(422, res.status, res.body)
      local e = standin.decode(res.body)
      assert.equal("RecordInvalid", e.error)
      return e.details.base or {}
    end

    it("accepts each of the ten types' valid values at create_or_update and stores them typed", function()
      s:config{ user_fields = ten_defs() }
      local n = 0
      for _, t in ipairs(TEN) do
        for _, g in ipairs(t.good) do
          n = n + 1
          local res = upsert{ name = "U" .. n, email = "good" .. n .. "@example.com", user_fields = { [t.def.key] = g[1] } }
          assert.equal(201, res.status, t.def.key .. ": " .. res.body)
          local uf = standin.decode(res.body).user.user_fields
          assert.same(g[2], uf[t.def.key], t.def.key)
          if type(g[2]) == "number" and math.type(g[2]) == "integer" then
            assert.equal("integer", math.type(uf[t.def.key]), t.def.key)
          end
        end
      end
      -- every field is listed in every user; unset: checkbox false, the others null
      local u = standin.decode(upsert{ name = "Z", email = "z@example.com" }.body).user
      for _, t in ipairs(TEN) do
        local want = standin.null
        if t.def.type == "checkbox" then want = false end
        assert.equal(want, u.user_fields[t.def.key], t.def.key)
      end
      assert.equal(n + 1, #s:users())
    end)

    it("refuses each of the ten types' invalid values at create_or_update: 422 naming the field", function()
      s:config{ user_fields = ten_defs() }
      for _, t in ipairs(TEN) do
        for j, v in ipairs(t.bad) do
          local res = upsert{ name = "B", email = "bad@example.com", user_fields = { [t.def.key] = v } }
          local base = base_errors(res)
          assert.equal(1, #base, t.def.key .. " bad " .. j .. ": " .. res.body)
          assert.equal(t.def.key, base[1].field_key)
          assert.equal("InvalidValue", base[1].error)
          assert.matches("^" .. t.def.key .. ": ", base[1].description)
        end
      end
      assert.equal(0, #s:users())
      -- an update is checked the same way and changes nothing
      assert.equal(201, upsert{ name = "B", email = "bad@example.com", user_fields = { f_int = 1 } }.status)
      local res = upsert{ email = "bad@example.com", name = "Renamed", user_fields = { f_int = "one", f_text = "t" } }
      assert.equal(1, #base_errors(res))
      local stored = s:users()[1]
      assert.equal("B", stored.name)
      assert.equal(1, stored.user_fields.f_int)
      assert.equal(standin.null, stored.user_fields.f_text)
    end)

    it("checks the same values in a bulk job: Created rows typed, Failed rows naming the field", function()
      s:config{ user_fields = ten_defs() }
      local rows, want = {}, {}
      for _, t in ipairs(TEN) do
        for _, g in ipairs(t.good) do
          rows[#rows + 1] = { name = "G", email = "g" .. #rows .. "@example.com", user_fields = { [t.def.key] = g[1] } }
          want[#rows] = { ok = true, key = t.def.key, stored = g[2] }
        end
        for _, v in ipairs(t.bad) do
          rows[#rows + 1] = { name = "B", email = "b" .. #rows .. "@example.com", user_fields = { [t.def.key] = v } }
          want[#rows] = { ok = false, key = t.def.key }
        end
      end
      assert.is_true(#rows <= 100)
      local res = s:http("POST", MANY, { body = { users = rows } })
      assert.equal(200, res.status, res.body)
      local job = wait_job(standin.decode(res.body).job_status.id)
      assert.equal("completed", job.status)
      assert.equal(#rows, #job.results)
      local by_email = {}
      for _, u in ipairs(s:users()) do by_email[u.email] = u end
      for i, w in ipairs(want) do
        local r = job.results[i]
        if w.ok then
          assert.equal("Created", r.status, i .. " " .. w.key)
          assert.same(w.stored, by_email[rows[i].email].user_fields[w.key], i .. " " .. w.key)
        else
          assert.equal("Failed", r.status, i .. " " .. w.key)
          assert.equal(i - 1, r.index)
          assert.equal("UserCreateError", r.error)
          assert.is_string(r.details)
          assert.matches(w.key, r.details, 1, true)
          assert.is_nil(by_email[rows[i].email], rows[i].email)
        end
      end
    end)

    it("Ruby regexps: ^ and $ are line anchors; an uncompilable pattern checks nothing", function()
      s:config{ user_fields = {
        { key = "line", type = "regexp", regexp = "^B-[0-9]+$" },
        { key = "broken", type = "regexp", regexp = "([a-z" },
      } }
      local ok = upsert{ name = "R", email = "r@example.com", user_fields = { line = "note\nB-1", broken = "anything" } }
      assert.equal(201, ok.status, ok.body)
      local uf = standin.decode(ok.body).user.user_fields
      assert.equal("note\nB-1", uf.line)
      assert.equal("anything", uf.broken)
      local bad = upsert{ name = "R2", email = "r2@example.com", user_fields = { line = "note B-1" } }
      assert.equal("line", base_errors(bad)[1].field_key)
    end)

    it("Ruby regexps count characters, not bytes: \\A.{3}\\z takes 'zoë' and refuses 'zoëe'", function()
      s:config{ user_fields = { { key = "three", type = "regexp", regexp = "\\A.{3}\\z" } } }
      local ok = upsert{ name = "Z", email = "z@example.com", user_fields = { three = "zo\u{eb}" } }
      assert.equal(201, ok.status, ok.body)
      assert.equal("zo\u{eb}", standin.decode(ok.body).user.user_fields.three)
      local bad = upsert{ name = "Z2", email = "z2@example.com", user_fields = { three = "zo\u{eb}e" } }
      assert.equal("three", base_errors(bad)[1].field_key)
    end)

    it("ignores an inactive field's value and names it in X-Zendesk-API-Warn", function()
      s:config{ user_fields = {
        { key = "vip", type = "checkbox", active = false },
        { key = "level", type = "dropdown", options = { "gold" } },
      } }
      local res = upsert{ name = "I", email = "i@example.com", user_fields = { vip = true, level = "gold" } }
      assert.equal(201, res.status, res.body)
      assert.matches('"user.user_fields.vip"', res.headers["x-zendesk-api-warn"], 1, true)
      local uf = standin.decode(res.body).user.user_fields
      assert.same({ level = "gold" }, uf)
      -- a value the type would refuse is not checked either: the field takes no value at all
      local again = upsert{ email = "i@example.com", user_fields = { vip = "not a boolean" } }
      assert.equal(200, again.status, again.body)
      assert.is_nil(s:users()[1].user_fields.vip)
    end)

    it("a dropdown configured without options takes any value (the map form)", function()
      s:config{ user_fields = { level = "dropdown" } }
      local res = upsert{ name = "D", email = "d@example.com", user_fields = { level = "anything" } }
      assert.equal(201, res.status)
      assert.equal("anything", standin.decode(res.body).user.user_fields.level)
    end)
  end)

  describe("identities", function()
    local function idents(u)
      local out = {}
      for i, it in ipairs(u.identities) do
        out[i] = it.type .. "=" .. it.value .. (it.primary and " primary" or "")
      end
      return out
    end

    local function by_name(name)
      for _, u in ipairs(s:users()) do if u.name == name then return u end end
    end

    it("stores create_or_update identities; the first email and phone become the primary ones", function()
      local res = upsert{ name = "Roger", identities = {
        { type = "twitter", value = "tester84" },
        { type = "email", value = "Test@User.com" },
        { type = "phone_number", value = "+15551230000" },
        { type = "email", value = "second@user.com" },
        { type = "email", value = "test@user.com" }, -- the same again: stored once
        { type = "email", value = "SECOND@user.com" },
      } }
      assert.equal(201, res.status, res.body)
      local u = standin.decode(res.body).user
      assert.equal("test@user.com", u.email)
      assert.equal("+15551230000", u.phone)
      local stored = by_name("Roger")
      assert.same({ "email=test@user.com primary", "email=second@user.com", "phone_number=+15551230000 primary",
        "twitter=tester84" }, idents(stored))
      assert.equal("integer", math.type(stored.identities[1].id))
      -- the identities route shows the same
      local route = standin.decode(s:http("GET", "/api/v2/users/" .. u.id .. "/identities.json").body)
      assert.equal(4, route.count)
      assert.equal(stored.identities[2].id, route.identities[2].id)
      -- matched by a secondary email afterwards
      local upd = upsert{ email = "second@user.com", name = "Roger W" }
      assert.equal(200, upd.status)
      assert.equal(u.id, standin.decode(upd.body).user.id)
    end)

    it("keeps `email` primary when identities add others; an update adds them as secondary", function()
      assert.equal(201, upsert{ name = "Ann", email = "ann@example.com", phone = "+100",
        identities = { { type = "email", value = "ann2@example.com" }, { type = "phone_number", value = "+200" } } }.status)
      assert.same({ "email=ann@example.com primary", "email=ann2@example.com", "phone_number=+100 primary",
        "phone_number=+200" }, idents(by_name("Ann")))
      assert.equal(200, upsert{ email = "ann@example.com", identities = {
        { type = "google", value = "ann@gmail.com" }, { type = "email", value = "ann3@example.com" } } }.status)
      local after = by_name("Ann")
      assert.equal("ann@example.com", after.email)
      assert.same({ "email=ann@example.com primary", "email=ann2@example.com", "phone_number=+100 primary",
        "phone_number=+200", "email=ann3@example.com", "google=ann@gmail.com" }, idents(after))
    end)

    it("refuses an unknown type, a blank value, a bad email or another user's email", function()
      assert.equal(201, upsert{ name = "Owner", email = "owner@example.com" }.status)
      local cases = {
        { { type = "fax", value = "123" }, "identities", "InvalidValue" },
        { { type = "twitter", value = " " }, "identities", "BlankValue" },
        { { value = "x" }, "identities", "InvalidValue" },
        { { type = "email", value = "not-an-email" }, "email", nil },
        { { type = "email", value = "OWNER@example.com" }, "email", "DuplicateValue" },
      }
      for i, c in ipairs(cases) do
        local res = upsert{ name = "New", identities = { c[1] } }
        assert.equal(422, res.status, "case " .. i .. ": " .. res.body)
        local d = standin.decode(res.body).details[c[2]]
        assert.is_table(d, "case " .. i .. ": " .. res.body)
        assert.equal(c[3], d[1].error, "case " .. i)
      end
      assert.equal(1, #s:users())
    end)

    it("stores identities from a bulk job the same way", function()
      local res = s:http("POST", MANY, { body = { users = {
        { name = "Bulk1", external_id = "e1", identities = { { type = "email", value = "b1@example.com" },
          { type = "facebook", value = "fb.b1" } } },
        { name = "Bulk2", identities = { { type = "phone_number", value = "+300" } } },
        { name = "Bulk3", identities = { { type = "fax", value = "1" } } },
      } } })
      assert.equal(200, res.status, res.body)
      local job = wait_job(standin.decode(res.body).job_status.id)
      assert.equal("Created", job.results[1].status)
      assert.equal("b1@example.com", job.results[1].email)
      assert.equal("Created", job.results[2].status)
      assert.equal("Failed", job.results[3].status)
      assert.matches("fax", job.results[3].details, 1, true)
      local b1 = by_name("Bulk1")
      assert.equal("b1@example.com", b1.email)
      assert.same({ "email=b1@example.com primary", "facebook=fb.b1" }, idents(b1))
      local b2 = by_name("Bulk2")
      assert.equal("+300", b2.phone)
      assert.equal(standin.null, b2.email)
      assert.same({ "phone_number=+300 primary" }, idents(b2))
      assert.is_nil(by_name("Bulk3"))
    end)
  end)
end)
