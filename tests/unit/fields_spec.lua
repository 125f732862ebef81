-- zendesk.fields without a server: the schema of the account's user fields (by key and title),
-- each of the ten field types accepted and refused, Ruby regexps through PCRE2, CSV cells
-- converted by type, and GET /user_fields read across every page with a bounded cursor walk.
local fields = require "zendesk.fields"
local core = require "zendesk.core"

local DEFS = {
  { id = 1, key = "notes_short", type = "text", title = "Short Note" },
  { id = 2, key = "bio", type = "textarea", title = "Biography" },
  { id = 3, key = "vip", type = "checkbox", title = "VIP" },
  { id = 4, key = "start_date", type = "date", title = "Start date" },
  { id = 5, key = "employee_number", type = "integer", title = "Employee number" },
  { id = 6, key = "score", type = "decimal", title = "Score" },
  { id = 7, key = "badge", type = "regexp", title = "Badge", regexp_for_validation = "\\AB-[0-9]+\\z" },
  { id = 8, key = "level", type = "dropdown", title = "Level",
    custom_field_options = { { id = 81, name = "Gold Tier", raw_name = "Gold Tier", value = "gold" },
                             { id = 82, name = "Silver", raw_name = "Silver", value = "silver" } } },
  { id = 9, key = "skills", type = "multiselect", title = "Skills",
    custom_field_options = { { id = 91, name = "Lua", value = "lua" }, { id = 92, name = "C code", value = "c" } } },
  { id = 10, key = "manager", type = "lookup", title = "Manager" },
  { id = 11, key = "legacy", type = "text", title = "Legacy", active = false },
}

local S = fields.schema(DEFS)

-- value accepted and value refused for each of the ten types, with what the refusal says
local CASES = {
  { "notes_short", "hello", true, "must be a string %(a text field%)" },
  { "bio", "line 1\nline 2", true, "must be a string %(a textarea field%)" },
  { "vip", false, "yes", "must be true or false %(a checkbox field; also \"true\", \"false\", \"1\", \"0\"%), got 'yes'" },
  { "start_date", "2024-02-29", "2023-02-29", "must be a calendar date YYYY%-MM%-DD" },
  { "employee_number", 42, 4.5, "must be an integer %(an integer field%)" },
  { "score", -0.25, "1,5", "'1,5' is not a decimal number %(a decimal field%)" },
  { "badge", "B-12", "B-12x", "'B%-12x' does not match the field's pattern \\AB%-%[0%-9%]%+\\z" },
  { "level", "gold", "Gold Tier", "'Gold Tier' is not an option of the dropdown %(one of: gold, silver%)" },
  { "skills", { "lua", "c" }, { "lua", "cobol" }, "%[2%]: 'cobol' is not an option of the multiselect %(one of: lua, c%)" },
  { "manager", 123456789, -4, "must be the id of the related record %(a lookup field%)" },
}

describe("zendesk.fields", function()
  describe("the schema", function()
    it("indexes fields by key, by key in any case and by title (trimmed, any case)", function()
      assert.equal(11, #S.list)
      assert.equal("level", S.list[8].key)
      assert.equal("vip", fields.lookup(S, "vip").key)
      assert.equal("vip", fields.lookup(S, " VIP ").key)
      assert.equal("employee_number", fields.lookup(S, "employee number").key)
      assert.equal("start_date", fields.lookup(S, "  Start Date").key)
      assert.is_nil(fields.lookup(S, "start"))
      assert.same({ "gold", "silver" }, S.by_key.level.options)
      assert.is_false(S.by_key.legacy.active)
    end)

    it("does not guess between two fields with the same title", function()
      local s2 = fields.schema{ { key = "a", type = "text", title = "Team" }, { key = "b", type = "text", title = "team" } }
      assert.is_nil(fields.lookup(s2, "team"))
      assert.equal("a", fields.lookup(s2, "a").key)
    end)

    it("refuses what is not a field definition, naming it", function()
      assert.has_error(function() fields.schema{ { key = "x", type = 3 } } end,
        "user field definition 1: x: type must be a string, got number")
      assert.has_error(function() fields.schema{ { key = "x" }, { key = "x" } } end,
        "user field definition 2: key 'x' is defined twice")
      assert.has_error(function() fields.schema{ { type = "text" } } end,
        "user field definition 1: key must be a non-empty string")
    end)

    it("leaves a type newer than it knows to Zendesk, and says so", function()
      local s2 = fields.schema{ { key = "card", type = "partialcreditcard", title = "Card" }, { key = "vip", type = "checkbox" } }
      assert.equal(1, #s2.notes)
      assert.equal("card", s2.notes[1].field)
      assert.matches("type 'partialcreditcard' is not one this client knows", s2.notes[1].message)
      assert.is_true(fields.check_user(s2, { user_fields = { card = "XXXX1234" } }, "user"))
      assert.equal("XXXX1234", fields.convert(s2.by_key.card, "XXXX1234"))
      assert.equal("card", fields.lookup(s2, "Card").key)
      assert.is_nil(fields.check_user(s2, { user_fields = { vip = "x" } }, "user"))
    end)

    it("names the closest keys of a name it does not know", function()
      local near = fields.closest(S, "levle")
      assert.equal(3, #near)
      assert.equal("level", near[1])
      assert.same({ "employee_number" }, fields.closest(S, "employee_nr", 1))
    end)

    it("names the closest keys of a huge name in bounded work (a 1 MB header is not a hang) #lua54", function()
      local defs = {}
      for i = 1, 230 do defs[i] = { key = "field_number_" .. i, type = "text", title = "Field number " .. i } end
      local big = fields.schema(defs)
      -- counted in VM instructions, not time: the edit distance over 1 MB would take billions
      local budget = 2e8
      debug.sethook(function() budget = budget - 1e6; if budget < 0 then error("over budget", 2) end end, "", 1e6)
      local ok, near = pcall(fields.closest, big, ("x"):rep(1024 * 1024) .. "field_number_7")
      debug.sethook()
      assert.is_true(ok, tostring(near))
      assert.equal(3, #near)
      -- a long title does not cost more either
      budget = 2e8
      local long = fields.schema{ { key = "k", type = "text", title = ("t"):rep(1024 * 1024) } }
      debug.sethook(function() budget = budget - 1e6; if budget < 0 then error("over budget", 2) end end, "", 1e6)
      ok, near = pcall(fields.closest, long, ("x"):rep(1024 * 1024))
      debug.sethook()
      assert.is_true(ok, tostring(near))
      assert.same({ "k" }, near)
    end)
  end)

  describe("values of each of the ten types", function()
    for _, c in ipairs(CASES) do
      local key, good, bad, why = c[1], c[2], c[3], c[4]
      local t = S.by_key[key].type
      it(t .. ": accepted and refused", function()
        assert.is_nil(fields.check_value(S.by_key[key], good))
        assert.is_true(fields.check_user(S, { email = "a@x.io", user_fields = { [key] = good } }, "user"))
        local ok, err = fields.check_user(S, { email = "a@x.io", user_fields = { [key] = bad } }, "users[3]")
        assert.is_nil(ok)
        assert.equal("validation", err.kind)
        assert.equal("users[3].user_fields." .. key, err.path)
        assert.matches("^users%[3%]%.user_fields%." .. key .. ": " .. why, err.message)
        -- null clears any field
        assert.is_true(fields.check_user(S, { user_fields = { [key] = core.null } }, "user"))
      end)
    end

    it("integer: out of range", function()
      local msg = fields.check_value(S.by_key.employee_number, 2 ^ 63)
      assert.matches("out of range for an integer field", msg)
    end)

    it("date: not a calendar date in several ways", function()
      for _, d in ipairs{ "2023-13-01", "2023-04-31", "24-01-01", "2024-01-01 10:00", "2023-02-29T10:00:00Z", "" } do
        assert.matches("calendar date", fields.check_value(S.by_key.start_date, d), d)
      end
      assert.is_nil(fields.check_value(S.by_key.start_date, "2000-02-29"))
      assert.matches("calendar date", fields.check_value(S.by_key.start_date, "1900-02-29"))
    end)

    it("takes what Zendesk coerces, and no more (never stricter than Zendesk)", function()
      local function ok(key, v) assert.is_nil(fields.check_value(S.by_key[key], v), key .. " " .. tostring(v)) end
      local function no(key, v) assert.is_not_nil(fields.check_value(S.by_key[key], v), key .. " " .. tostring(v)) end
      ok("notes_short", 12); ok("bio", 1.5)
      for _, v in ipairs{ "true", "false", "1", "0" } do ok("vip", v) end
      for _, v in ipairs{ "True", "yes", "", 1 } do no("vip", v) end
      ok("start_date", "2024-02-29T10:00:00Z")
      ok("employee_number", "-12"); no("employee_number", "12.0"); no("employee_number", "99999999999999999999")
      ok("score", "3."); ok("score", ".5"); ok("score", "-0.25"); no("score", "0x10")
      ok("badge", ""); ok("level", ""); no("level", "GOLD")
      ok("skills", "lua"); no("skills", "cobol")
      ok("manager", "77"); no("manager", "0"); no("manager", "-77")
      -- a dropdown with no options takes any string
      assert.is_nil(fields.check_value(fields.schema{ { key = "d", type = "dropdown" } }.by_key.d, "any"))
    end)

    it("refuses an unknown key (naming the closest) and an inactive field", function()
      local _, err = fields.check_user(S, { user_fields = { levle = "gold" } }, "user")
      assert.matches("^user%.user_fields%.levle: unknown user field %(the account has no field with this key; "
                     .. "closest: level, ", err.message)
      _, err = fields.check_user(S, { user_fields = { legacy = "x" } }, "user")
      assert.equal("user.user_fields.legacy: the field is inactive in the account (it cannot be set)", err.message)
      -- clearing an inactive field is not setting it
      assert.is_true(fields.check_user(S, { user_fields = { legacy = core.null } }, "user"))
    end)

    it("lists every bad user of a list with its index", function()
      local ok, err = fields.check_list(S, { { user_fields = { vip = true } }, { user_fields = { vip = "x" } },
                                             { user_fields = { level = "bronze" } } }, "users")
      assert.is_nil(ok)
      assert.equal(2, #err.errors)
      assert.equal(2, err.errors[1].index)
      assert.equal("users[2].user_fields.vip", err.errors[1].path)
      assert.equal("users[3].user_fields.level", err.errors[2].path)
    end)
  end)

  describe("Ruby regexps", function()
    local function def(src) return fields.schema{ { key = "r", type = "regexp", regexp_for_validation = src } } end

    it("reads ^ and $ as line anchors, \\A and \\z as the string's, (?m) as dot-matches-newline", function()
      local d = def("^B-[0-9]+$").by_key.r
      assert.is_nil(fields.check_value(d, "x\nB-1\ny"))      -- Ruby: matches on a line
      d = def("\\AB-[0-9]+\\z").by_key.r
      assert.is_not_nil(fields.check_value(d, "x\nB-1"))
      assert.is_not_nil(fields.check_value(d, "B-1\n"))     -- \z: the very end
      d = def("\\AB-[0-9]+\\Z").by_key.r
      assert.is_nil(fields.check_value(d, "B-1\n"))        -- \Z: before a final newline
      d = def("\\Aa(?m:.)b\\z").by_key.r
      assert.is_nil(fields.check_value(d, "a\nb"))
      d = def("\\Aa.b\\z").by_key.r
      assert.is_not_nil(fields.check_value(d, "a\nb"))
      d = def("\\A\\h+\\z").by_key.r                         -- Ruby's \h: a hex digit
      assert.is_nil(fields.check_value(d, "00ff"))
      assert.is_not_nil(fields.check_value(d, "00fg"))
      d = def("\\A[\\h-]+\\z").by_key.r
      assert.is_nil(fields.check_value(d, "ab-12"))
      d = def("\\A.{3}\\z").by_key.r                         -- UTF-8: a character, not a byte
      assert.is_nil(fields.check_value(d, "zoë"))
    end)

    it("leaves to Zendesk a Ruby class PCRE2 reads otherwise: && intersection, a nested class", function()
      -- Ruby: [a-z&&[^aeiou]] is a consonant, [a[bc]] is a, b or c; PCRE2 compiles both, meaning
      -- other things (a literal & and [, then a literal ]), and would refuse what Zendesk takes
      for _, src in ipairs{ "\\A[a-z&&[^aeiou]]+\\z", "\\A[a[bc]]+\\z", "\\A[^[x]y]\\z" } do
        local s = def(src)
        assert.equal(1, #s.notes, src)
        assert.matches("cannot be compiled here", s.notes[1].message)
        assert.is_nil(fields.check_value(s.by_key.r, "b"), src)
        assert.equal("b", fields.convert(s.by_key.r, "b", ";"))
      end
      -- a POSIX bracket and an escaped [ inside a class are the same in both: still checked
      local d = def("\\A[[:alpha:]\\[]+\\z").by_key.r
      assert.is_nil(fields.check_value(d, "ab["))
      assert.is_not_nil(fields.check_value(d, "a1"))
      assert.equal(0, #def("\\A[[:alpha:]\\[]+\\z").notes)
    end)

    it("leaves to Zendesk a non-ASCII value where Ruby's POSIX brackets and \\b are Unicode and PCRE2's are not", function()
      -- Ruby (Onigmo, default (?d)): [[:alpha:]], \b use Unicode; \w, \d, \s are ASCII
      local d = def("\\A[[:alpha:]]+\\z").by_key.r
      assert.is_nil(fields.check_value(d, "caf\u{e9}"))               -- Ruby takes it
      assert.is_not_nil(fields.check_value(d, "caf1"))                 -- ASCII: still checked here
      d = def("\\Acaf\u{e9}\\b").by_key.r
      assert.is_nil(fields.check_value(d, "caf\u{e9}"))
      d = def("\\A\\w+\\z").by_key.r                                   -- ASCII \w in both
      assert.is_not_nil(fields.check_value(d, "caf\u{e9}"))
    end)

    it("leaves a pattern it cannot compile to Zendesk and says so once", function()
      local s = fields.schema{ { key = "r", type = "regexp", regexp_for_validation = "\\A(?<open" },
                               { key = "ok", type = "regexp", regexp_for_validation = "\\Ax\\z" } }
      assert.equal(1, #s.notes)
      assert.equal("r", s.notes[1].field)
      assert.matches("its validation regexp \\A%(%?<open cannot be compiled here", s.notes[1].message)
      assert.is_nil(fields.check_value(s.by_key.r, "anything"))
      assert.is_not_nil(fields.check_value(s.by_key.ok, "y"))
    end)

    it("refuses a value that is not UTF-8, naming the byte, instead of raising PCRE2's error", function()
      local d = def("\\AB-[0-9]+\\z").by_key.r
      assert.equal("'B-1\xe9' is not valid UTF-8 (byte 4)", fields.check_value(d, "B-1\xe9"))
      assert.same({ nil, "is not valid UTF-8 (byte 1)" }, { fields.convert(d, "\xffB-1", ";") })
      local ok, err = fields.check_user(fields.schema{ { key = "r", type = "regexp", regexp_for_validation = "x" } },
                                        { user_fields = { r = "x\xc3" } }, "users[2]")
      assert.is_nil(ok)
      assert.equal("users[2].user_fields.r: 'x\xc3' is not valid UTF-8 (byte 2)", err.message)
    end)

    it("leaves to Zendesk a value whose match PCRE2 gives up on (its match limit), never raising", function()
      local d = def("\\A(a+)+\\z").by_key.r
      assert.is_nil(fields.check_value(d, ("a"):rep(40) .. "b"))
      assert.equal(("a"):rep(40) .. "b", fields.convert(d, ("a"):rep(40) .. "b", ";"))
      assert.is_not_nil(fields.check_value(d, "b"))         -- a plain mismatch is still refused
    end)

    it("loads without lua-rex-pcre2 and says that regexp fields are not checked", function()
      local saved_f, saved_rex = package.loaded["zendesk.fields"], package.loaded.rex_pcre2
      local saved_pre = package.preload.rex_pcre2
      package.loaded["zendesk.fields"], package.loaded.rex_pcre2 = nil, nil
      package.preload.rex_pcre2 = function() error("hidden by the spec") end
      local ok, f = pcall(require, "zendesk.fields")
      package.loaded["zendesk.fields"], package.loaded.rex_pcre2 = saved_f, saved_rex
      package.preload.rex_pcre2 = saved_pre
      assert.is_true(ok, tostring(f))
      assert.is_nil(f.regex_engine)
      local s = f.schema(DEFS)
      assert.equal(1, #s.notes)
      assert.matches("lua%-rex%-pcre2 is not installed: the values of regexp fields are not checked locally",
                     s.notes[1].message)
      assert.is_nil(f.check_value(s.by_key.badge, "not a badge"))
      -- the other types are still checked
      assert.is_not_nil(f.check_value(s.by_key.vip, "yes"))
      -- a schema without regexp fields has nothing to say
      assert.equal(0, #f.schema{ { key = "vip", type = "checkbox" } }.notes)
    end)
  end)

  describe("CSV cells", function()
    local function conv(key, cell) return fields.convert(S.by_key[key], cell, ";") end

    it("converts each type, and names what is wrong", function()
      assert.equal("hello", conv("notes_short", "hello"))
      assert.equal("007", conv("bio", "007"))
      for cell, want in pairs{ ["true"] = true, YES = true, ["1"] = true, False = false, no = false, ["0"] = false } do
        assert.equal(want, conv("vip", cell), cell)
      end
      assert.same({ nil, "is not a boolean (true/false, yes/no, 1/0)" }, { conv("vip", "maybe") })
      assert.equal("2024-03-01", conv("start_date", "2024-03-01"))
      assert.equal("2024-03-01", conv("start_date", "2024-03-01T23:59:59+02:00"))
      assert.equal("2024-03-01", conv("start_date", "2024-03-01 09:30:00"))   -- a spreadsheet's date and time
      assert.same({ nil, "is not a valid date" }, { conv("start_date", "2024-02-30") })
      assert.same({ nil, "is not a date (YYYY-MM-DD)" }, { conv("start_date", "01/03/2024") })
      assert.equal(42, conv("employee_number", "42"))
      if math.type then assert.equal("integer", math.type(conv("employee_number", "42"))) end
      assert.same({ nil, "is not an integer" }, { conv("employee_number", "4.2") })
      assert.equal(-0.25, conv("score", "-0.25"))
      assert.same({ nil, "is not a decimal number" }, { conv("score", "0x10") })
      assert.equal("B-7", conv("badge", "B-7"))
      assert.same({ nil, "does not match the field's pattern \\AB-[0-9]+\\z" }, { conv("badge", "b-7") })
      assert.equal("gold", conv("level", "gold"))
      assert.equal("gold", conv("level", "gold tier"))     -- the option's name, mapped to its value
      assert.same({ nil, "is not an option (one of: gold, silver)" }, { conv("level", "bronze") })
      assert.same({ "lua", "c" }, conv("skills", "lua; C code"))
      assert.equal(core.array_mt, getmetatable(conv("skills", "lua")))
      assert.same({ nil, "has 'cobol', which is not an option (one of: lua, c)" }, { conv("skills", "lua;cobol") })
      assert.equal(77, conv("manager", "77"))
      assert.same({ nil, "is not the id of a record (a positive integer)" }, { conv("manager", "Ann") })
    end)

    it("refuses an integer cell one past the 64-bit range at either end, never rounding it #lua54", function()
      assert.equal(math.mininteger, conv("employee_number", "-9223372036854775808"))
      assert.equal(math.maxinteger, conv("employee_number", "9223372036854775807"))
      assert.same({ nil, "is out of the 64-bit integer range" }, { conv("employee_number", "-9223372036854775809") })
      assert.same({ nil, "is out of the 64-bit integer range" }, { conv("employee_number", "9223372036854775808") })
      assert.same({ nil, "is not the id of a record (a positive integer)" }, { conv("manager", "-9223372036854775809") })
      assert.is_not_nil(fields.check_value(S.by_key.employee_number, "-9223372036854775809"))
    end)

    it("takes any value for a dropdown or multiselect the account lists with no options, cell or JSON alike", function()
      local s = fields.schema{ { key = "d", type = "dropdown" }, { key = "m", type = "multiselect", custom_field_options = {} } }
      assert.is_nil(fields.check_value(s.by_key.d, "anything"))
      assert.equal("anything", fields.convert(s.by_key.d, "anything", ";"))
      assert.is_nil(fields.check_value(s.by_key.m, { "a", "b" }))
      assert.is_nil(fields.check_value(s.by_key.m, "a"))
      assert.same({ "a", "b" }, fields.convert(s.by_key.m, "a;b", ";"))
      assert.is_not_nil(fields.check_value(s.by_key.m, { 1 }))          -- still an array of strings
    end)

    it("takes a type alone (opts.field_types) with no options or pattern to check", function()
      assert.equal("anything", fields.convert({ type = "dropdown" }, "anything"))
      assert.same({ "a", "b" }, fields.convert({ type = "multiselect" }, "a|b", "|"))
    end)
  end)

  describe("reading every page", function()
    -- a server of n fields in pages of up to 100, cursors as Zendesk words them
    local function server(n, opts)
      opts = opts or {}
      local calls = {}
      local function request(path)
        calls[#calls + 1] = path
        assert.matches("^/api/v2/user_fields%.json%?page%%5Bsize%%5D=100", path)
        local after = tonumber(path:match("page%%5Bafter%%5D=c(%d+)") or "0")
        local list = {}
        for i = after + 1, math.min(after + 100, n) do
          list[#list + 1] = { id = i, key = "f" .. i, type = "text", title = "F " .. i }
        end
        local more = after + 100 < n
        local cursor = opts.stuck and "c100" or ("c" .. (after + 100))
        return { user_fields = list, meta = { has_more = more, after_cursor = more and cursor or nil },
                 links = { next = more and ("https://acme.zendesk.com/api/v2/user_fields.json?page[after]=" .. cursor)
                   or nil } }
      end
      return request, calls
    end

    it("reads more than 100 fields across pages, in order", function()
      local request, calls = server(250)
      local list = assert(fields.fetch(request, "/api/v2/user_fields.json"))
      assert.equal(250, #list)
      assert.equal(3, #calls)
      for i = 1, 250 do assert.equal("f" .. i, list[i].key) end
      assert.matches("page%%5Bafter%%5D=c200", calls[3])
    end)

    it("follows links.next when there is no cursor", function()
      local seen = {}
      local function request(path)
        seen[#seen + 1] = path
        if #seen == 1 then
          return { user_fields = { { key = "a" } }, meta = { has_more = true },
                   links = { next = "https://acme.zendesk.com/api/v2/user_fields.json?page%5Bafter%5D=xyz" } }
        end
        return { user_fields = { { key = "b" } }, meta = { has_more = false } }
      end
      local list = assert(fields.fetch(request, "/api/v2/user_fields.json"))
      assert.equal(2, #list)
      assert.equal("/api/v2/user_fields.json?page%5Bafter%5D=xyz", seen[2])
    end)

    it("stops on a cursor that comes back instead of looping", function()
      local request, calls = server(1000, { stuck = true })
      local list, err = fields.fetch(request, "/api/v2/user_fields.json")
      assert.is_nil(list)
      assert.matches("the cursor c100 came back again", err.message)
      assert.equal(2, #calls)
    end)

    it("stops after MAX_PAGES pages", function()
      local request, calls = server(1e9)
      local list, err = fields.fetch(request, "/api/v2/user_fields.json")
      assert.is_nil(list)
      assert.matches("more than " .. fields.MAX_PAGES .. " pages of user fields", err.message)
      assert.equal(fields.MAX_PAGES, #calls)
    end)

    it("passes a failed request's error through, and refuses an answer without user_fields", function()
      local e = core.error{ kind = "auth", status = 401, message = "no" }
      local list, err = fields.fetch(function() return nil, e end, "/api/v2/user_fields.json")
      assert.is_nil(list)
      assert.equal(e, err)
      list, err = fields.fetch(function() return { users = {} } end, "/api/v2/user_fields.json")
      assert.is_nil(list)
      assert.matches("the answer has no user_fields array", err.message)
    end)
  end)
end)
