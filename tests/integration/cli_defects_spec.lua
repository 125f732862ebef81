-- Issue 12 through bin/zendesk-sync, as a real process against the stand-in: a resume refuses
-- another input of the same size (10), endless 429s end with exit 2 and a resume hint (12), a
-- report or journal that is the input is refused (13), an input that is no file names its path
-- (19), and a stale $PWD does not move the journal (20).
local standin = require "support.standin"
local journal = require "zendesk.journal"

local ROOT = standin.ROOT
local q = standin.shell_quote
local tmpname, read_file, write_file = standin.tmpname, standin.read_file, standin.write_file

-- Runs zendesk-sync in `cwd` with only the given environment (plus PATH and the module paths).
-- Returns exit code, stdout, stderr. `background` starts it and returns its pid instead.
local function run(cwd, args, env, opts)
  opts = opts or {}
  local out, err = tmpname(), tmpname()
  local parts = { "env -i", "PATH=" .. q(os.getenv("PATH")),
    "LUA_PATH=" .. q(ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua;;"),
    "LUA_CPATH=" .. q(ROOT .. "build/lua5.4/?.so;;") }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "lua5.4 " .. q(ROOT .. "bin/zendesk-sync")
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  -- exec: a background run's pid is the zendesk-sync process itself, the one to kill
  local cmd = "cd " .. q(cwd) .. " && " .. (opts.background and "exec " or "") .. (opts.prefix or "")
    .. table.concat(parts, " ")
    .. " >" .. q(out) .. " 2>" .. q(err) .. " </dev/null"
  if opts.background then
    local o = standin.sh("(" .. cmd .. ") >/dev/null 2>&1 & echo $!")
    return assert(tonumber(o:match("(%d+)")), o)
  end
  local _, code = standin.sh(cmd)
  local o, e = read_file(out) or "", read_file(err) or ""
  os.remove(out)
  os.remove(err)
  return code, o, e
end

local function count_lines(path, plain)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = 0
  for line in f:lines() do
    if line:find(plain, 1, true) then n = n + 1 end
  end
  f:close()
  return n
end

local function make_csv(path, n, reverse)
  local out = { "name,email,external_id" }
  for i = 1, n do
    local k = reverse and (n + 1 - i) or i
    out[#out + 1] = ("User %05d,user%05d@x.io,e%05d"):format(k, k, k)
  end
  write_file(path, table.concat(out, "\n") .. "\n")
end

describe("zendesk-sync (issue 12)", function()
  local s, dir, env

  setup(function()
    s = standin.start()
    dir = tmpname(".d")
    assert(os.execute("mkdir -m 700 " .. q(dir)))
  end)
  teardown(function()
    s:stop()
    os.execute("rm -rf " .. q(dir))
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    env = { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN }
    os.execute("rm -rf " .. q(dir) .. "/*")
  end)

  it("10. --resume refuses the same rows reversed (same size) after a kill -9, and takes the original", function()
    s:config{ job_delay_ms = 40, per_user_limit = 0, rate_limit_per_minute = 0 }
    local input, jpath = dir .. "/people.csv", dir .. "/people.journal"
    make_csv(input, 2000)
    local size = #read_file(input)
    local pid = run(dir, { "-q", "--batch-size", "10", "--max-jobs", "2", "--journal", jpath, input }, env,
                    { background = true })
    local deadline = os.time() + 60
    while count_lines(jpath, '"t":"done"') < 5 do
      assert.is_true(os.time() < deadline, "the sync made no progress")
      os.execute("sleep 0.05")
    end
    assert(os.execute("kill -9 " .. pid))
    os.execute("sleep 0.3")
    assert.equal("unfinished", journal.state(jpath))
    assert.is_true(count_lines(jpath, '"t":"done"') < 200, "finished before the kill: nothing tested")

    make_csv(input, 2000, true)
    assert.equal(size, #read_file(input))
    local before = #s:users()
    local code, out, err = run(dir, { "-q", "--resume", jpath }, env)
    assert.equal(2, code, out .. err)
    assert.matches("^zendesk%-sync: [^\n]*people%.csv changed since the journal was written[^\n]*\n$", err)
    assert.equal(before, #s:users())

    make_csv(input, 2000)
    code, out, err = run(dir, { "-q", "--resume", jpath }, env)
    assert.equal(0, code, out .. err)
    local seen, n = {}, 0
    for _, u in ipairs(s:users()) do
      assert.is_nil(seen[u.email], "twice: " .. tostring(u.email))
      seen[u.email] = true
      n = n + 1
    end
    assert.equal(2000, n)
  end)

  it("12. 429 on every submission ends with exit 2, a hint and a short journal", function()
    s:fault{ path = "/api/v2/users/create_or_update_many", status = 429, headers = { ["Retry-After"] = "0" },
             content_type = "text/plain", body = "Too many jobs", count = 1000000 }
    local input, jpath = dir .. "/two.csv", dir .. "/two.journal"
    make_csv(input, 2)
    local code, out, err = run(dir, { "-q", "--rate-limit-timeout", "1", "--journal", jpath, input }, env)
    assert.equal(2, code, out .. err)
    assert.matches("refused every bulk submission", err)
    -- every submission was refused, so no row can be in flight: the next plain run may start
    -- afresh (issue 11), and --resume finishes the journal just as well
    assert.matches("no row was sent: run the same command again", err)
    assert.is_true(count_lines(jpath, '"t":') <= 4)
    s:clear_faults()
    code = run(dir, { "-q", "--resume", jpath }, env)
    assert.equal(0, code)
    assert.equal(2, #s:users())
    local code2, _, err2 = run(dir, { "--rate-limit-timeout", "soon", input }, env)
    assert.equal(2, code2)
    assert.matches("%-%-rate%-limit%-timeout", err2)
  end)

  it("13. --report or --journal equal to the input is refused and the input is kept", function()
    local input = dir .. "/people.csv"
    make_csv(input, 200)
    local text = read_file(input)
    assert(os.execute("ln -s people.csv " .. q(dir .. "/link.csv")))
    for _, args in ipairs{ { "--report", input, input }, { "--report", "people.csv", "people.csv" },
                           { "--report", "link.csv", "people.csv" }, { "--journal", "people.csv", "people.csv" },
                           { "--journal", "./people.csv", "link.csv" } } do
      local code, out, err = run(dir, args, env)
      assert.equal(2, code, table.concat(args, " "))
      assert.equal("", out)
      assert.matches("^zendesk%-sync: [^\n]*is the input file[^\n]*\n$", err)
      assert.equal(text, read_file(input))
    end
    assert.equal(0, #s:users())
  end)

  it("19. an input that is a directory, a FIFO or missing: exit 2, the message names the path", function()
    assert(os.execute("mkdir " .. q(dir .. "/folder.csv") .. " && mkfifo " .. q(dir .. "/pipe.csv")))
    for _, case in ipairs{ { "folder.csv", "[Ii]s a directory" }, { "pipe.csv", "not a regular file" },
                           { "missing.csv", "No such file" } } do
      local path = dir .. "/" .. case[1]
      for _, args in ipairs{ { path }, { case[1] } } do
        local code, out, err = run(dir, args, env, { prefix = "timeout 20 " })
        assert.equal(2, code, case[1] .. ": " .. out .. err)
        assert.matches((path:gsub("%p", "%%%0")), err)
        assert.matches(case[2], err)
        assert.is_nil(err:find("<csv input>", 1, true))
      end
    end
  end)

  it("20. a stale $PWD does not move the journal or the paths it records", function()
    local a, other = dir .. "/a", dir .. "/other"
    assert(os.execute("mkdir " .. q(a) .. " " .. q(other)))
    make_csv(a .. "/people.csv", 3)
    env.PWD = other
    local code, out, err = run(a, { "people.csv" }, env)
    assert.equal(0, code, out .. err)
    assert.equal("", standin.sh("ls -A " .. q(other)))
    local jpath = a .. "/people.csv.journal"
    assert.equal("finished", journal.state(jpath))
    assert.matches("journal: +" .. jpath:gsub("%p", "%%%0"), out)
    local header = assert(journal.header(jpath))
    assert.equal(a .. "/people.csv", header.source.path)
    -- and --resume from yet another directory, with a stale $PWD again, finds the same files
    os.remove(jpath)
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    -- a fatal 403 after the first of three one-row batches
    s:fault{ path = "/api/v2/users/create_or_update_many", status = 403, after = 1, count = 100 }
    code = run(a, { "--report", "out.csv", "--batch-size", "1", "--max-jobs", "1", "people.csv" }, env)
    assert.equal(2, code)
    assert.equal("unfinished", journal.state(a .. "/people.csv.journal"))
    s:clear_faults()
    code, out, err = run(other, { "--resume", a .. "/people.csv.journal" }, { ZENDESK_URL = s.url,
      ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN, PWD = dir })
    assert.equal(0, code, out .. err)
    assert.equal(3, #s:users())
    assert.matches("^row,outcome", read_file(a .. "/out.csv"))
    assert.equal("", standin.sh("ls -A " .. q(other)))
  end)
end)
