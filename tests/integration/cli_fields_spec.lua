-- bin/zendesk-sync with custom user fields (issue 15, "Done when"): the stand-in configured with a
-- checkbox, an integer, a date, a dropdown, a decimal, a regexp and a multiselect field; a CSV with
-- headers as bare keys and as user_fields.<key>, no typing options: valid rows are created with
-- typed values, rows with a bad value are invalid in the report (row and column) and never reach
-- the stand-in. Also --dry-run with and without the account, --field-type, --empty-cells and a
-- column the account lacks.
local standin = require "support.standin"

local ROOT = standin.ROOT
local q = standin.shell_quote
local tmpname, read_file, write_file = standin.tmpname, standin.read_file, standin.write_file

local FIELDS = {
  { key = "vip", type = "checkbox", title = "VIP" },
  { key = "employee_number", type = "integer", title = "Employee number" },
  { key = "start_date", type = "date", title = "Start date" },
  { key = "level", type = "dropdown", title = "Level",
    options = { { name = "Gold", value = "gold" }, { name = "Silver", value = "silver" } } },
  { key = "score", type = "decimal", title = "Score" },
  { key = "badge", type = "regexp", title = "Badge", regexp = "\\AB-[0-9]{2,}\\z" },
  { key = "skills", type = "multiselect", title = "Skills", options = { "lua", "c", "sql" } },
}

local CSV = table.concat({
  "email,name,vip,user_fields.employee_number,Start Date,level,user_fields.score,badge,user_fields.skills",
  "ann@example.com,Ann,yes,1001,2024-02-29,gold,4.5,B-10,lua;sql",
  "bob@example.com,Bob,No,1002,2024-03-01,Silver,0.25,B-20,c",
  "cat@example.com,Cat,perhaps,1003,2024-03-01,gold,1,B-30,lua",
  "dan@example.com,Dan,true,1004,2024-02-30,gold,1,B-40,lua",
  "eve@example.com,Eve,false,1005,2024-03-01,gold,1,B-5,lua",
  "fay@example.com,Fay,1,1006,2024-03-01,bronze,1,B-60,lua",
  "gus@example.com,Gus,0,12.5,2024-03-01,gold,1,B-70,lua",
  "hal@example.com,Hal,0,1008,2024-03-01,gold,1,B-80,lua;rust",
  "ivy@example.com,Ivy,0,1009,2024-03-01,gold,lots,B-90,lua",
}, "\n") .. "\n"

local workdir

local function run(args, env)
  local out, err = tmpname(), tmpname()
  local parts = { "env -i", "PATH=" .. q(os.getenv("PATH")),
    "LUA_PATH=" .. q(ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua;;"),
    "LUA_CPATH=" .. q(ROOT .. "build/lua5.4/?.so;;") }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "lua5.4 " .. q(ROOT .. "bin/zendesk-sync")
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local cmd = "cd " .. q(workdir) .. " && " .. table.concat(parts, " ") .. " >" .. q(out) .. " 2>" .. q(err)
    .. " </dev/null"
  local _, code = standin.sh(cmd)
  local o, e = read_file(out) or "", read_file(err) or ""
  os.remove(out)
  os.remove(err)
  return code, o, e
end

describe("zendesk-sync with the account's user fields", function()
  local s, dir, env

  local function file(name, text)
    local p = dir .. "/" .. name
    write_file(p, text)
    return p
  end

  local function requests(method, prefix)
    local n = 0
    for _, r in ipairs(s:requests()) do
      if (method == nil or r.method == method) and r.path:find(prefix, 1, true) == 1 then n = n + 1 end
    end
    return n
  end

  setup(function()
    s = standin.start()
    dir = tmpname(".d")
    assert(os.execute("mkdir -m 700 " .. q(dir)))
    workdir = dir
  end)
  teardown(function()
    s:stop()
    os.execute("rm -rf " .. q(dir))
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, user_fields = FIELDS }
    env = { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN }
    os.execute("rm -f " .. q(dir) .. "/*")
  end)

  it("syncs a CSV of custom fields with no typing options: typed values, bad rows invalid and never sent", function()
    local input = file("hr.csv", CSV)
    local report = dir .. "/report.json"
    local code, out, err = run({ "-q", "--report", report, input }, env)
    assert.equal(1, code, out .. err)
    assert.matches("9 rows in .*: 2 created, 0 updated, 0 failed, 7 invalid", out)
    assert.equal(1, requests("GET", "/api/v2/user_fields"))

    local users = {}
    for _, u in ipairs(s:users()) do users[u.email] = u end
    local n = 0
    for _ in pairs(users) do n = n + 1 end
    assert.equal(2, n)   -- the invalid rows never reached the stand-in
    local ann, bob = users["ann@example.com"], users["bob@example.com"]
    assert.is_true(ann.user_fields.vip)
    assert.is_false(bob.user_fields.vip)
    assert.equal(1001, ann.user_fields.employee_number)
    if math.type then assert.equal("integer", math.type(ann.user_fields.employee_number)) end
    assert.equal("2024-02-29", ann.user_fields.start_date)
    assert.equal("gold", ann.user_fields.level)
    assert.equal("silver", bob.user_fields.level)       -- the option's name, mapped to its value
    assert.equal(4.5, ann.user_fields.score)
    assert.equal("B-10", ann.user_fields.badge)
    assert.same({ "lua", "sql" }, ann.user_fields.skills)
    assert.same({ "c" }, bob.user_fields.skills)

    local rows = standin.decode(read_file(report))
    local by_row = {}
    for _, r in ipairs(rows) do by_row[r.row] = r end
    local want = {
      [3] = "column 'vip' %(user_fields%.vip%): 'perhaps' is not a boolean",
      [4] = "column 'Start Date' %(user_fields%.start_date%): '2024%-02%-30' is not a valid date",
      [5] = "column 'badge' %(user_fields%.badge%): 'B%-5' does not match the field's pattern",
      [6] = "column 'level' %(user_fields%.level%): 'bronze' is not an option %(one of: gold, silver%)",
      [7] = "user_fields%.employee_number: '12%.5' is not an integer",
      [8] = "user_fields%.skills: 'lua;rust' has 'rust', which is not an option %(one of: lua, c, sql%)",
      [9] = "user_fields%.score: 'lots' is not a decimal number",
    }
    for row, why in pairs(want) do
      assert.equal("invalid", by_row[row].outcome, row)
      assert.matches("^line " .. (row + 1) .. ": " .. why, by_row[row].reason)
    end
    assert.equal("created", by_row[1].outcome)
    assert.equal("created", by_row[2].outcome)
    -- the summary names them too
    assert.matches("row 3: invalid: line 4: column 'vip'", out)
  end)

  it("a column the account lacks stops before anything is sent, naming the closest keys", function()
    local input = file("typo.csv", "email,name,user_fields.levle\nann@example.com,Ann,gold\n")
    local code, out, err = run({ input }, env)
    assert.equal(2, code)
    assert.equal("", out)
    assert.equal(("zendesk-sync: %s: column 'user_fields.levle' (column 3): the account has no user field 'levle' "
      .. "(closest keys: level, vip, score); nothing was sent\n"):format(input), err)
    assert.equal(0, requests("POST", "/api/"))
    assert.equal(0, #s:users())
  end)

  it("--dry-run without credentials types columns with --field-type, and needs it for custom columns", function()
    local input = file("dry.csv", "email,vip,employee_number,skills\nann@example.com,YES,7,a;b\nbob@example.com,x,8,\n")
    local code, out, err = run({ "--dry-run", input }, {})
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches("unknown CSV column 'vip' %(column 2%): map it with %-%-column 'vip=FIELD' %(a custom field: "
                   .. "%-%-field%-type 'vip=TYPE'%)", err)
    code, out, err = run({ "--dry-run", "--field-type", "vip=checkbox", "--field-type", "employee_number=integer",
                           "--field-type", "user_fields.skills=multiselect", input }, {})
    assert.equal(1, code, err)
    assert.matches('row 1: would send {[^\n]*"user_fields":{[^\n]*"vip":true', out)
    assert.matches('row 1: would send {[^\n]*"employee_number":7[,}]', out)
    assert.matches('row 1: would send {[^\n]*"skills":%["a","b"%]', out)
    assert.matches("row 2: invalid: line 3: column 'vip' %(user_fields%.vip%): 'x' is not a boolean", out)
    assert.equal(0, #s:requests())
    code, out, err = run({ "--dry-run", "--field-type", "vip=bool", input }, {})
    assert.equal("", out)
    assert.equal(2, code)
    assert.matches("%-%-field%-type vip=bool: unknown type 'bool'", err)
  end)

  it("--dry-run with credentials uses the account's fields and only reads", function()
    local input = file("hr.csv", CSV)
    local code, out = run({ "--dry-run", input }, env)
    assert.equal(1, code)
    assert.matches("dry run of 9 rows: 2 would be sent, 7 invalid", out)
    assert.matches('row 2: would send {[^\n]*"level":"silver"', out)
    for _, r in ipairs(s:requests()) do assert.equal("GET", r.method, r.path) end
    assert.equal(1, requests("GET", "/api/v2/user_fields"))
    assert.equal(0, #s:users())
  end)

  it("says once which field's values it leaves to Zendesk", function()
    s:config{ user_fields = { { key = "vip", type = "checkbox" },
                              { key = "code", type = "regexp", regexp = "\\A\\p{NoSuchProperty}+\\z" } } }
    local input = file("codes.csv", "email,vip,code\nann@example.com,yes,anything\nbob@example.com,no,else\n")
    local code, out, err = run({ "--dry-run", input }, env)
    assert.equal(0, code, out .. err)
    local _, n = err:gsub("zendesk%-sync: user field code: its validation regexp [^\n]* cannot be compiled here "
                          .. "%([^\n]*%): Zendesk checks its values\n", "")
    assert.equal(1, n, err)
    assert.matches('row 1: would send {[^\n]*"code":"anything"', out)
  end)

  it("--empty-cells null clears a field an empty cell would leave alone", function()
    assert.equal(0, (run({ file("a.csv", "email,external_id,name,level,details\nann@example.com,hr-1,Ann,gold,Tea\n") },
                         env)))
    local empty = file("b.csv", "email,external_id,name,level,details\nann@example.com,,Ann,,\n")
    assert.equal(0, (run({ "--journal", dir .. "/b1.journal", empty }, env)))
    local ann = s:users()[1]
    assert.equal("gold", ann.user_fields.level)
    assert.equal("Tea", ann.details)
    local code, out, err = run({ "--empty-cells", "null", "--journal", dir .. "/b2.journal", empty }, env)
    assert.equal(0, code, out .. err)
    ann = s:users()[1]
    assert.equal(standin.decode("null"), ann.user_fields.level)
    assert.equal(standin.decode("null"), ann.details)
    assert.equal("hr-1", ann.external_id)   -- what a row is matched on is never cleared
  end)
end)
