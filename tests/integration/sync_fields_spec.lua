-- client:sync_users with the account's user fields: one GET /user_fields when the input has a
-- custom-field column (none otherwise), CSV headers by key, title or user_fields.<key>, each cell
-- converted by its field's type, a cell that does not convert makes its row invalid (named by row
-- and column, never sent), a column the account lacks is fatal before anything is sent, identity
-- columns, empty cells omitted or cleared, JSON rows checked and not converted.
local standin = require "support.standin"
local zendesk = require "zendesk"

local tmpname, write_file = standin.tmpname, standin.write_file

local FIELDS = {
  { key = "vip", type = "checkbox", title = "VIP" },
  { key = "employee_number", type = "integer", title = "Employee number" },
  { key = "start_date", type = "date", title = "Start date" },
  { key = "level", type = "dropdown", title = "Level",
    options = { { name = "Gold Tier", value = "gold" }, { name = "Silver", value = "silver" } } },
  { key = "score", type = "decimal", title = "Score" },
  { key = "badge", type = "regexp", title = "Badge", regexp = "\\AB-[0-9]+\\z" },
  { key = "skills", type = "multiselect", title = "Skills", options = { "lua", "c", "sql" } },
  { key = "work_phone", type = "text", title = "Phone" },   -- a title that is also a fixed field
  { key = "legacy", type = "text", title = "Legacy", active = false },
}

describe("sync_users with the account's user fields", function()
  local s, client, dir

  local function file(name, text)
    local p = dir .. "/" .. name
    write_file(p, text)
    return p
  end

  local function count(method, prefix)
    local n = 0
    for _, r in ipairs(s:requests()) do
      if r.method == method and r.path:find(prefix, 1, true) == 1 then n = n + 1 end
    end
    return n
  end

  local function by_email()
    local t = {}
    for _, u in ipairs(s:users()) do if u.email then t[u.email] = u end end
    return t
  end

  local function outcomes(report)
    local t = {}
    for _, o in ipairs(report.rows) do t[o.row] = o end
    return t
  end

  setup(function()
    s = standin.start()
    dir = tmpname(".d")
    os.execute("mkdir -p " .. standin.shell_quote(dir))
  end)
  teardown(function()
    if client then client:close() end
    s:stop()
    os.execute("rm -rf " .. standin.shell_quote(dir))
  end)
  before_each(function()
    s:reset()
    s:config{ user_fields = FIELDS, job_delay_ms = 0 }
    if client then client:close() end
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
  end)

  local function sync(path, opts)
    opts = opts or {}
    opts.collect_rows = true
    opts.poll_interval = 0
    return client:sync_users(path, opts)
  end

  it("types every cell by its field, by key, title or user_fields.<key>; bad rows are invalid and never sent",
    function()
    local p = file("people.csv", table.concat({
      "email,name,VIP,employee_number,Start Date,user_fields.level,score,user_fields.badge,skills,phone",
      "ann@example.com,Ann,yes,1001,2024-02-29,gold,4.5,B-1,lua;sql,+15550001",
      "bob@example.com,Bob,FALSE,1002,2024-03-01T09:00:00Z,Gold Tier,-0.25,B-22,c,",
      "cat@example.com,Cat,maybe,1003,2024-03-01,silver,1,B-3,,",
      "dan@example.com,Dan,1,10x4,2023-02-29,platinum,1,B-4,,",
      "eve@example.com,Eve,0,1005,2024-03-01,silver,1,b-5,lua;cobol,",
      "fay@example.com,Fay,no,,,,,,,",
    }, "\n") .. "\n")
    local report = assert(sync(p))
    assert.equal(3, report.created)
    assert.equal(3, report.invalid)
    assert.equal(1, count("GET", "/api/v2/user_fields"))

    local users = by_email()
    local ann, bob, fay = users["ann@example.com"], users["bob@example.com"], users["fay@example.com"]
    assert.is_true(ann.user_fields.vip)
    assert.equal(1001, ann.user_fields.employee_number)
    if math.type then assert.equal("integer", math.type(ann.user_fields.employee_number)) end
    assert.equal("2024-02-29", ann.user_fields.start_date)
    assert.equal("gold", ann.user_fields.level)
    assert.equal(4.5, ann.user_fields.score)
    assert.equal("B-1", ann.user_fields.badge)
    assert.same({ "lua", "sql" }, ann.user_fields.skills)
    assert.equal("+15550001", ann.phone)               -- "phone" is the fixed field, not the title
    assert.is_false(bob.user_fields.vip)
    assert.equal("2024-03-01", bob.user_fields.start_date)
    assert.equal("gold", bob.user_fields.level)          -- the option's name, mapped to its value
    assert.same({ "c" }, bob.user_fields.skills)
    assert.is_false(fay.user_fields.vip)
    assert.equal(zendesk.null, fay.user_fields.level)    -- an empty cell omits the field

    -- the bad rows: invalid, named by row and column, never at the stand-in
    for _, e in ipairs{ "cat@example.com", "dan@example.com", "eve@example.com" } do assert.is_nil(users[e], e) end
    assert.equal(3, #s:users())
    local o = outcomes(report)
    assert.equal("invalid", o[3].outcome)
    assert.equal("cat@example.com", o[3].email)
    assert.equal("line 4: column 'VIP' (user_fields.vip): 'maybe' is not a boolean (true/false, yes/no, 1/0)",
                 o[3].reason)
    assert.equal("line 5: column 'employee_number' (user_fields.employee_number): '10x4' is not an integer; "
      .. "column 'Start Date' "
      .. "(user_fields.start_date): '2023-02-29' is not a valid date; user_fields.level: 'platinum' is not an "
      .. "option (one of: gold, silver)", o[4].reason)
    assert.equal("line 6: user_fields.badge: 'b-5' does not match the field's pattern \\AB-[0-9]+\\z; column "
      .. "'skills' (user_fields.skills): 'lua;cobol' has 'cobol', which is not an option (one of: lua, c, sql)", o[5].reason)
  end)

  it("a custom-field column the account lacks is fatal before anything is sent, naming the closest keys",
    function()
    local p = file("typo.csv", "email,user_fields.levle,vip\nann@example.com,gold,yes\n")
    local report, err = sync(p, { journal = dir .. "/typo.journal" })
    assert.is_nil(report)
    assert.equal("UnknownUserField", err.code)
    assert.equal("user_fields.levle", err.column)
    assert.equal("level", err.closest[1])
    assert.matches("column 'user_fields.levle' %(column 2%): the account has no user field 'levle' %(closest keys: "
                   .. "level, ", tostring(err))
    assert.equal(0, count("POST", "/api/v2/"))
    assert.equal(0, #s:users())
    assert.is_nil(io.open(dir .. "/typo.journal"))
    -- a bare header that is neither a fixed field nor a field of the account: unknown column
    p = file("typo2.csv", "email,levle\nann@example.com,gold\n")
    local ok, e2 = pcall(sync, p)
    assert.is_false(ok)
    assert.equal("UnknownColumn", e2.code)
    assert.matches("the account's closest user fields: level", e2.message)
    assert.equal(0, count("POST", "/api/v2/"))
  end)

  it("reads no schema for an input of fixed fields only", function()
    local p = file("fixed.csv", "email,name,phone,tags\nann@example.com,Ann,+1555,a;b\n")
    local report = assert(sync(p))
    assert.equal(1, report.created)
    assert.equal(0, count("GET", "/api/v2/user_fields"))
  end)

  it("stops before anything is sent when the schema cannot be read", function()
    local bad = zendesk.new{ url = s.url, email = standin.EMAIL, token = "wrong", max_retries = 0 }
    local p = file("auth.csv", "email,vip\nann@example.com,yes\n")
    local report, err = bad:sync_users(p, {})
    bad:close()
    assert.is_nil(report)
    assert.equal(401, err.status)
    assert.equal(0, count("POST", "/api/v2/"))
  end)

  it("turns identities.<type> columns into identities, several values split on the tag separator", function()
    local p = file("ids.csv", "external_id,name,identities.email,Identities.Phone_Number\n"
      .. "x1,Ann,ann@example.com|ann.lee@example.com,+15550001\n"
      .. "x2,Bob,,\n")
    local report = assert(sync(p, { tag_separator = "|" }))
    assert.equal(2, report.created)
    local users = by_email()
    local ann = users["ann@example.com"]
    local got = {}
    for _, idn in ipairs(ann.identities) do got[#got + 1] = idn.type .. ":" .. idn.value end
    table.sort(got)
    assert.same({ "email:ann.lee@example.com", "email:ann@example.com", "phone_number:+15550001" }, got)
    assert.equal(0, count("GET", "/api/v2/user_fields"))
  end)

  it("omits the field of an empty cell by default, clears it with empty_cells = 'null'", function()
    local first = file("first.csv", "email,name,level,details\nann@example.com,Ann,gold,Likes tea\n")
    assert.equal(1, assert(sync(first)).created)
    local empty = file("empty.csv", "email,name,level,details\nann@example.com,Ann,,\n")
    assert.equal(1, assert(sync(empty)).updated)
    local ann = by_email()["ann@example.com"]
    assert.equal("gold", ann.user_fields.level)
    assert.equal("Likes tea", ann.details)
    assert.equal(1, assert(sync(empty, { empty_cells = "null" })).updated)
    ann = by_email()["ann@example.com"]
    assert.equal(zendesk.null, ann.user_fields.level)
    assert.equal(zendesk.null, ann.details)
    assert.has_error(function() sync(empty, { empty_cells = "clear" }) end)
  end)

  it("checks JSON rows against the schema without converting them", function()
    local p = file("people.json", [[
[{"email": "ann@example.com", "name": "Ann", "user_fields": {"vip": true, "level": "gold", "employee_number": 7}},
 {"email": "bob@example.com", "name": "Bob", "user_fields": {"vip": "yes"}},
 {"email": "cat@example.com", "name": "Cat", "user_fields": {"legacy": "x"}},
 {"email": "dan@example.com", "name": "Dan", "user_fields": {"levle": "gold"}},
 {"email": "eve@example.com", "name": "Eve"}]
]])
    local report = assert(sync(p))
    assert.equal(2, report.created)
    assert.equal(3, report.invalid)
    assert.equal(1, count("GET", "/api/v2/user_fields"))
    local o = outcomes(report)
    assert.equal("row 2.user_fields.vip: must be true or false (a checkbox field; also \"true\", \"false\", \"1\", "
                 .. "\"0\"), got 'yes'", o[2].reason)
    assert.equal("row 3.user_fields.legacy: the field is inactive in the account (it cannot be set)", o[3].reason)
    assert.matches("^row 4%.user_fields%.levle: unknown user field", o[4].reason)
    local users = by_email()
    assert.is_nil(users["bob@example.com"])
    assert.equal(7, users["ann@example.com"].user_fields.employee_number)
  end)

  it("a dry run with a client reads the schema (GET only) and sends nothing", function()
    local p = file("dry.csv", "email,vip,level\nann@example.com,yes,Silver\nbob@example.com,perhaps,gold\n")
    local report = assert(sync(p, { dry_run = true }))
    assert.equal(1, report.would_send)
    assert.equal(1, report.invalid)
    local o = outcomes(report)
    assert.same({ vip = true, level = "silver" }, o[1].user.user_fields)
    for _, r in ipairs(s:requests()) do assert.equal("GET", r.method) end
    assert.equal(1, count("GET", "/api/v2/user_fields"))
  end)

  it("a resume reads the fields again and types the rest the same way (empty_cells from the journal)", function()
    local lines = { "email,name,vip,employee_number,level" }
    for i = 1, 40 do lines[#lines + 1] = ("p%02d@example.com,P%d,%s,%d,%s"):format(i, i, i % 2 == 0 and "yes" or "no",
      1000 + i, i % 3 == 0 and "" or "Gold Tier") end
    local p = file("resume.csv", table.concat(lines, "\n") .. "\n")
    local jpath = dir .. "/resume.journal"
    local before = {}
    for i = 1, 40 do before[i] = { email = ("p%02d@example.com"):format(i), name = "P", user_fields = { level = "silver" } } end
    assert(client:wait_job(assert(client:upsert_users(before)), { timeout = 30 }))
    s:fault{ path = "/api/v2/users/create_or_update_many", status = 403, after = 2, count = 1000 }
    local fields_client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
    local report, err = fields_client:sync_users(p, { journal = jpath, batch_size = 10, max_jobs = 1, poll_interval = 0,
                                                      empty_cells = "null" })
    fields_client:close()
    assert.is_nil(report)
    assert.equal("auth", err.kind)
    s:clear_faults()
    local fresh = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
    report = assert(fresh:sync_users(nil, { journal = jpath, resume = true, poll_interval = 0 }))
    fresh:close()
    assert.equal(40, report.total)
    assert.equal(0, report.invalid)
    assert.equal(2, count("GET", "/api/v2/user_fields"))   -- once a run
    local users = by_email()
    for i = 1, 40 do
      local u = users[("p%02d@example.com"):format(i)]
      assert.equal(i % 2 == 0, u.user_fields.vip, i)
      assert.equal(1000 + i, u.user_fields.employee_number)
      assert.equal(i % 3 == 0 and zendesk.null or "gold", u.user_fields.level)
    end
  end)

  it("opts.field_types types a column without the account; with it, the account still checks", function()
    local p = file("typed.csv", "email,level,employee_number,skills\nann@example.com,anything,12,a;b\n")
    local types = { level = "dropdown", employee_number = "integer", skills = "multiselect" }
    -- without a client (a dry run): no request at all
    local sync_mod = require "zendesk.sync"
    local report = assert(sync_mod.run(nil, p, { dry_run = true, collect_rows = true, field_types = types }))
    assert.equal(1, report.would_send)
    assert.same({ level = "anything", employee_number = 12, skills = { "a", "b" } }, report.rows[1].user.user_fields)
    if math.type then assert.equal("integer", math.type(report.rows[1].user.user_fields.employee_number)) end
    assert.equal(0, #s:requests())
    -- with one: 'anything' is not an option of the account's dropdown
    report = assert(sync(p, { dry_run = true, field_types = types }))
    assert.equal(1, report.invalid)
    assert.matches("row 1%.user_fields%.level: 'anything' is not an option of the dropdown", report.rows[1].reason)
  end)
end)
