-- bin/zendesk-sync under LuaJIT (issue 11): `luajit bin/zendesk-sync` from a checkout, with no
-- module paths in the environment, finds build/luajit and syncs; the shebang still says lua5.4.
local standin = require "support.standin"

local ROOT = standin.ROOT
local q = standin.shell_quote
local tmpname, read_file, write_file = standin.tmpname, standin.read_file, standin.write_file

local function run(dir, args, env)
  local out, err = tmpname(), tmpname()
  local parts = { "cd", q(dir), "&& env -i", "PATH=" .. q(os.getenv("PATH")) }
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "luajit " .. q(ROOT .. "bin/zendesk-sync")
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local _, code = standin.sh(table.concat(parts, " ") .. " >" .. q(out) .. " 2>" .. q(err) .. " </dev/null")
  local o, e = read_file(out) or "", read_file(err) or ""
  os.remove(out)
  os.remove(err)
  return code, o, e
end

describe("zendesk-sync under LuaJIT", function()
  local s, dir

  setup(function()
    s = standin.start()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    dir = tmpname(".d")
    assert(os.execute("mkdir -m 700 " .. q(dir)))
  end)
  teardown(function()
    s:stop()
    os.execute("rm -rf " .. q(dir))
  end)

  it("starts with the shebang's interpreter named in the script", function()
    assert.matches("^#!/usr/bin/env lua5%.4\n", read_file(ROOT .. "bin/zendesk-sync"))
  end)

  it("prints --help and syncs a file with its report, from a checkout with no module paths set", function()
    local code, out, err = run(dir, { "--help" }, {})
    assert.equal(0, code, err)
    assert.matches("Usage: zendesk%-sync", out)
    local file = dir .. "/jit.csv"
    local rows = { "name,email,external_id" }
    for i = 1, 120 do rows[#rows + 1] = ("J%d,j%d@example.com,jx%d"):format(i, i, i) end
    write_file(file, table.concat(rows, "\n") .. "\n")
    local report = dir .. "/jit-report.csv"
    code, out, err = run(dir, { "--report", report, file },
                         { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN })
    assert.equal(0, code, err)
    assert.matches("120 rows", out)
    assert.matches("120 created", out)
    assert.equal(120, #s:users())
    local lines = 0
    for _ in io.lines(report) do lines = lines + 1 end
    assert.equal(121, lines)
  end)
end)
