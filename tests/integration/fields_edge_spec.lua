-- Edge cases of the account's user fields found in review: bytes that are not UTF-8 in a column
-- whose field has a validation regexp, integers just outside the 64-bit range.
local standin = require "support.standin"
local zendesk = require "zendesk"

local tmpname, write_file = standin.tmpname, standin.write_file

local FIELDS = {
  { key = "badge", type = "regexp", title = "Badge", regexp = "\\AB-[0-9]+\\z" },
  { key = "employee_number", type = "integer", title = "Employee number" },
  { key = "skills", type = "multiselect", title = "Skills", options = { "lua", "c" } },
}

describe("user fields, edge cases", function()
  local s, client, dir

  local function file(name, text)
    local p = dir .. "/" .. name
    write_file(p, text)
    return p
  end

  local function by_email()
    local t = {}
    for _, u in ipairs(s:users()) do if u.email then t[u.email] = u end end
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

  it("a cell that is not UTF-8 in a regexp column makes its row invalid; the sync goes on", function()
    local p = file("latin1.csv", "email,name,badge\n"
      .. "ann@example.com,Ann,B-1\n"
      .. "bob@example.com,Bob,B-2\xe9\n"
      .. "cat@example.com,Cat,B-3\n")
    local report = assert(sync(p))
    assert.equal(2, report.created)
    assert.equal(1, report.invalid)
    local bob
    for _, o in ipairs(report.rows) do if o.row == 2 then bob = o end end
    assert.equal("invalid", bob.outcome)
    assert.matches("column 'badge' %(user_fields%.badge%): invalid UTF%-8", bob.reason)
    local users = by_email()
    assert.is_nil(users["bob@example.com"])
    assert.equal("B-3", users["cat@example.com"].user_fields.badge)
  end)

  it("upsert_users refuses a regexp field's value that is not UTF-8 with a validation error", function()
    assert(client:user_fields())
    local ok, res, err = pcall(client.upsert_users, client, {
      { email = "ann@example.com", user_fields = { badge = "B-1" } },
      { email = "bob@example.com", user_fields = { badge = "\xe9B-2" } },
    })
    assert.is_true(ok, tostring(res))
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.matches("users%[2%]%.user_fields%.badge: .*UTF%-8", err.message)
    assert.equal(0, #s:requests() - 1)   -- only the GET of the fields
  end)
  it("empty_cells = 'null' clears the tags of an empty tags cell (to []), and leaves them by default", function()
    local first = file("tags1.csv", "email,name,tags\nann@example.com,Ann,a;b\n")
    assert.equal(1, assert(sync(first)).created)
    local empty = file("tags2.csv", "email,name,tags\nann@example.com,Ann,\n")
    assert.equal(1, assert(sync(empty)).updated)
    assert.same({ "a", "b" }, by_email()["ann@example.com"].tags)
    assert.equal(1, assert(sync(empty, { empty_cells = "null" })).updated)
    assert.same({}, by_email()["ann@example.com"].tags)
  end)

  it("an integer or lookup cell one past -2^63 makes its row invalid, never a rounded id #lua54", function()
    local p = file("ints.csv", "email,name,employee_number,organization_id,mgr\n"
      .. "ann@example.com,Ann,-9223372036854775808,,\n"
      .. "bob@example.com,Bob,-9223372036854775809,,\n"
      .. "cat@example.com,Cat,,-9223372036854775809,\n"
      .. "dan@example.com,Dan,,,-9223372036854775809\n")
    local sync_mod = require "zendesk.sync"
    local report = assert(sync_mod.run(nil, p, { dry_run = true, collect_rows = true,
      field_types = { employee_number = "integer", mgr = "lookup" } }))
    local o = {}
    for _, r in ipairs(report.rows) do o[r.row] = r end
    assert.equal("would_send", o[1].outcome)
    assert.equal(math.mininteger, o[1].user.user_fields.employee_number)
    assert.equal("invalid", o[2].outcome)
    assert.matches("user_fields%.employee_number%): '%-9223372036854775809' is out of the 64%-bit integer range", o[2].reason)
    assert.equal("invalid", o[3].outcome)
    assert.matches("organization_id: '%-9223372036854775809' is out of the 64%-bit integer range", o[3].reason)
    assert.equal("invalid", o[4].outcome)
    assert.matches("user_fields%.mgr%): '%-9223372036854775809' is not the id of a record", o[4].reason)
  end)

  it("a refused value's quote is cut on a character boundary, so the reason stays UTF-8", function()
    s:config{ user_fields = { { key = "level", type = "dropdown", options = { "gold" } } } }
    local p = file("long.json", '[{"email":"cat@example.com","name":"Cat","user_fields":{"level":"'
      .. ("\u{e9}"):rep(40) .. '"}}]')
    local report = assert(sync(p))
    assert.equal(1, report.invalid)
    local reason = report.rows[1].reason
    assert.matches("is not an option of the dropdown", reason)
    assert.is_nil(require("zendesk.core").utf8_check(reason), reason)
  end)

  it("a CSV whose rows name their email only in identities.email syncs again as an update, not a failure", function()
    local p = file("idonly.csv", "name,identities.email,identities.phone_number\n"
      .. "Ann,ann@example.com;ann.lee@example.com,+15550001\n")
    local first = assert(sync(p))
    assert.equal(1, first.created)
    local again = assert(sync(p))
    assert.equal(0, again.failed, again.rows[1].reason)
    assert.equal(1, again.updated)
    assert.equal(1, #s:users())
    local ann = s:users()[1]
    assert.equal("ann@example.com", ann.email)       -- the first email identity is the primary
    local got = {}
    for _, idn in ipairs(ann.identities) do got[#got + 1] = idn.type .. ":" .. idn.value end
    table.sort(got)
    assert.same({ "email:ann.lee@example.com", "email:ann@example.com", "phone_number:+15550001" }, got)
  end)

  it("a multiselect cell of separators only leaves the field alone, as a tags cell does", function()
    assert.equal(1, assert(sync(file("ms1.csv", "email,name,skills,tags\nann@example.com,Ann,lua;c,x\n"))).created)
    local report = assert(sync(file("ms2.csv", "email,name,skills,tags\nann@example.com,Ann, ; ;,;\n"),
      { empty_cells = "null" }))
    assert.equal(1, report.updated)
    local ann = by_email()["ann@example.com"]
    assert.same({ "lua", "c" }, ann.user_fields.skills)
    assert.same({ "x" }, ann.tags)
    -- typed by hand (field_types), the same
    local sync_mod = require "zendesk.sync"
    report = assert(sync_mod.run(nil, file("ms3.csv", "email,skills\nann@example.com,;\n"),
      { dry_run = true, collect_rows = true, field_types = { skills = "multiselect" } }))
    assert.is_nil(report.rows[1].user.user_fields)
  end)

  it("a column typed by hand (field_types) that the account lacks is still fatal before anything is sent", function()
    local p = file("typed_typo.csv", "email,name,badgee\nann@example.com,Ann,B-1\nbob@example.com,Bob,B-2\n")
    local report, err = sync(p, { field_types = { badgee = "text" } })
    assert.is_nil(report)
    assert.equal("UnknownUserField", err.code)
    assert.equal("badgee", err.key)
    assert.equal("badge", err.closest[1])
    for _, r in ipairs(s:requests()) do assert.equal("GET", r.method) end
    assert.equal(0, #s:users())
    -- typed by hand in another case than the account's key: the account's key, the hand's type
    local types = { SKILLS = "multiselect" }
    report = assert(sync(file("typed_case.csv", "email,name,Skills\nann@example.com,Ann,lua;c\n"),
      { field_types = types }))
    assert.equal(1, report.created, report.rows[1].reason)
    assert.same({ "lua", "c" }, by_email()["ann@example.com"].user_fields.skills)
    assert.same({ SKILLS = "multiselect" }, types)                    -- the caller's table is left alone
  end)
end)
