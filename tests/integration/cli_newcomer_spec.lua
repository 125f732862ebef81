-- What a new user hits first with bin/zendesk-sync (issue 11): it runs from a checkout with no
-- environment set up, --resume needs nothing but the journal and the credentials, a sync that
-- stopped before sending anything does not block the next run, a broken input is not something
-- to resume, and its errors name the CLI's options, not the Lua API's.
local standin = require "support.standin"
local sources = require "zendesk.sources"

local ROOT = standin.ROOT
local q = standin.shell_quote
local tmpname, read_file, write_file = standin.tmpname, standin.read_file, standin.write_file

-- Runs the CLI as a user of the checkout would: the script itself (its shebang picks the
-- interpreter), with only PATH and the given variables in the environment: no LUA_PATH, no
-- LUA_CPATH. Returns exit code, stdout, stderr.
local function run(workdir, args, env, opts)
  opts = opts or {}
  local out, err = tmpname(), tmpname()
  local parts = { "env -i", "PATH=" .. q(os.getenv("PATH")) }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  if opts.interpreter then parts[#parts + 1] = opts.interpreter end
  parts[#parts + 1] = q(opts.script or (ROOT .. "bin/zendesk-sync"))
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local cmd = "cd " .. q(workdir) .. " && " .. table.concat(parts, " ") .. " >" .. q(out) .. " 2>" .. q(err)
    .. " </dev/null"
  local _, code = standin.sh(cmd)
  local o, e = read_file(out) or "", read_file(err) or ""
  os.remove(out)
  os.remove(err)
  return code, o, e
end

local function plain(s) return (s:gsub("%p", "%%%0")) end

describe("zendesk-sync for a new user", function()
  local s, dir, creds

  local function path(name) return dir .. "/" .. name end

  local function csv(name, header, rows)
    write_file(path(name), header .. "\n" .. table.concat(rows, "\n") .. "\n")
    return path(name)
  end

  local function people(name, n, first)
    local rows = {}
    for i = 1, n do
      local k = (first or 0) + i
      rows[i] = ("P%d,p%d@example.com,x%d"):format(k, k, k)
    end
    return csv(name, "name,email,external_id", rows)
  end

  local function with(t)
    local e = {}
    for k, v in pairs(creds) do e[k] = v end
    for k, v in pairs(t or {}) do e[k] = v end
    return e
  end

  local function api_requests()
    local n = 0
    for _, r in ipairs(s:requests()) do if r.path:find("^/api/") then n = n + 1 end end
    return n
  end

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
    creds = { ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN }
    os.execute("rm -rf " .. q(dir) .. "/* " .. q(dir) .. "/.[!.]*")
  end)

  describe("from a checkout", function()
    it("--help works with no LUA_PATH or LUA_CPATH set", function()
      local code, out, err = run(dir, { "--help" }, {})
      assert.equal(0, code, err)
      assert.matches("Usage: zendesk%-sync", out)
    end)

    it("syncs with no module paths set, also through a symlink to the script", function()
      local file = people("a.csv", 3)
      local code, out, err = run(dir, { file }, with{ ZENDESK_URL = s.url })
      assert.equal(0, code, err)
      assert.matches("3 created", out)
      assert(os.execute("ln -s " .. q(ROOT .. "bin/zendesk-sync") .. " " .. q(path("zs"))))
      code, out, err = run(dir, { "--journal", path("b.journal"), people("b.csv", 2, 3) }, with{ ZENDESK_URL = s.url },
                           { script = path("zs") })
      assert.equal(0, code, err)
      assert.matches("2 created", out)
      assert.equal(5, #s:users())
    end)

    it("installed outside a checkout, uses the normal module paths and says what is missing", function()
      assert(os.execute("mkdir -p " .. q(path("prefix/bin")) .. " && cp " .. q(ROOT .. "bin/zendesk-sync") .. " "
                        .. q(path("prefix/bin/zendesk-sync"))))
      local script = path("prefix/bin/zendesk-sync")
      local code, out, err = run(dir, { "--help" }, {}, { script = script })
      local _, installed = standin.sh("env -i PATH=" .. q(os.getenv("PATH")) .. " lua5.4 -e 'require \"zendesk\"' 2>/dev/null")
      if installed ~= 0 then   -- not installed on this machine: the CLI says so
        assert.equal(2, code)
        assert.equal("", out)
        assert.matches("^zendesk%-sync: cannot load the zendesk module %([^\n]*%): install lua%-zendesk, or set "
                       .. "LUA_PATH and LUA_CPATH\n$", err)
      else
        assert.equal(0, code, err)
      end
      code, out, err = run(dir, { "--help" }, { LUA_PATH = ROOT .. "lua/?.lua;;", LUA_CPATH = ROOT .. "build/lua5.4/?.so;;" },
                           { script = script })
      assert.equal(0, code, err)
      assert.matches("Usage: zendesk%-sync", out)
    end)

    it("uses the checkout's modules even when LUA_PATH points elsewhere", function()
      local code, out, err = run(dir, { "--help" }, { LUA_PATH = "/nonexistent/?.lua;;", LUA_CPATH = "/nonexistent/?.so;;" })
      assert.equal(0, code, err)
      assert.matches("Usage: zendesk%-sync", out)
    end)
  end)

  describe("--resume", function()
    -- an unfinished journal with two batches: the first done, the second in flight when the
    -- polls of its job began to be refused
    local function interrupted(name)
      local file = people(name .. ".csv", 150)
      local journal = path(name .. ".journal")
      s:fault{ path = "/api/v2/job_statuses", status = 401, count = 1000, after = 1 }
      local code, _, err = run(dir, { "--journal", journal, "--batch-size", "100", "--max-jobs", "1", file },
                               with{ ZENDESK_URL = s.url })
      assert.equal(2, code, err)
      s:clear_faults()
      return file, journal, err
    end

    it("takes the account from the journal: only the credentials are in the environment", function()
      local _, journal = interrupted("r")
      assert.is_nil(read_file(journal):find(standin.TOKEN, 1, true))
      local code, out, err = run(dir, { "--resume", journal }, creds)
      assert.equal(0, code, err)
      assert.matches("150 rows", out)
      assert.equal(150, #s:users())
    end)

    it("refuses another account given with --url or --subdomain, with advice that is not the same command",
       function()
      local _, journal = interrupted("m")
      local before = api_requests()
      for _, args in ipairs{ { "--url", "http://127.0.0.1:1" }, { "--subdomain", "elsewhere" } } do
        args[#args + 1] = "--resume"
        args[#args + 1] = journal
        local code, out, err = run(dir, args, creds)
        assert.equal(2, code, table.concat(args, " "))
        assert.equal("", out)
        assert.matches("zendesk%-sync: [^\n]+\n$", err)
        assert.matches(plain(s.url), err)                 -- the account the journal belongs to
        assert.matches("leave out " .. plain(args[1]), err)
        assert.is_nil(err:find("finish with", 1, true), err)
      end
      -- the environment naming another account is refused the same way, naming the variable
      local code, _, err = run(dir, { "--resume", journal }, with{ ZENDESK_URL = "http://127.0.0.1:1" })
      assert.equal(2, code)
      assert.matches("ZENDESK_URL", err)
      assert.matches(plain(s.url), err)
      assert.is_nil(err:find("finish with", 1, true), err)
      assert.equal(before, api_requests())
      -- the same account given explicitly is fine
      code, _, err = run(dir, { "--url", s.url, "--resume", journal }, creds)
      assert.equal(0, code, err)
      assert.equal(150, #s:users())
    end)
  end)

  describe("a sync that stopped", function()
    it("before any row was sent (bad token, imports disabled) does not block the next plain run", function()
      local file = people("f.csv", 3)
      local journal = path("f.journal")
      local code, out, err = run(dir, { "--journal", journal, file },
                                 with{ ZENDESK_URL = s.url, ZENDESK_API_TOKEN = "wrong-token" })
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("401", err)
      assert.matches("no row was sent", err)
      assert.is_nil(err:find("--resume", 1, true), err)
      s:config{ imports_enabled = false }
      code, out, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("403", err)
      assert.matches("no row was sent", err)
      s:config{ imports_enabled = true }
      code, out, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = s.url })
      assert.equal(0, code, err)
      assert.matches("3 created", out)
      assert.equal(3, #s:users())
    end)

    it("on a certificate the client cannot verify, before any row, does not block the next run", function()
      local tls = standin.start{ tls = true }
      local ok, perr = pcall(function()
        tls:config{ job_delay_ms = 0 }
        local file = people("tls.csv", 2)
        local journal = path("tls.journal")
        local code, out, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = tls.url })
        assert.equal(2, code)
        assert.equal("", out)
        assert.matches("no row was sent", err)
        code, out, err = run(dir, { "--journal", journal, file },
                             with{ ZENDESK_URL = tls.url, ZENDESK_CA_FILE = tls.ca_file })
        assert.equal(0, code, err)
        assert.matches("2 created", out)
      end)
      tls:stop()
      assert(ok, perr)
    end)

    it("with rows in flight still blocks the next plain run, and --resume finishes it", function()
      local file = people("g.csv", 120)
      local journal = path("g.journal")
      s:fault{ path = "/api/v2/job_statuses", status = 401, count = 1000 }
      local code, _, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("%-%-resume " .. plain(journal), err)
      s:clear_faults()
      code, _, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("did not finish", err)
      code, _, err = run(dir, { "--resume", journal }, creds)
      assert.equal(0, code, err)
      assert.equal(120, #s:users())
    end)

    it("on a truncated or malformed input says so, does not advise --resume, and does not block", function()
      local cases = {
        { "t.json", '[{"name":"A","email":"a@example.com"},{"name":"B","em' },
        { "t2.json", '[{"name":"A","email":"a@example.com"} {"name":"B"}]' },
        -- a quote that never closes: the record would be longer than sources.MAX_RECORD
        { "t.csv", 'name,email\nA,a@example.com\n"B,b@example.com\n' .. ("C,c@example.com\n"):rep(300000) },
      }
      for _, c in ipairs(cases) do
        local file = path(c[1])
        write_file(file, c[2])
        local journal = file .. ".journal"
        local code, out, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = s.url })
        assert.equal(2, code, c[1])
        assert.equal("", out, c[1])
        assert.matches("zendesk%-sync: [^\n]+\n$", err)
        assert.matches(plain(file), err, 1, c[1])
        assert.matches("truncated or malformed", err, 1, c[1])
        assert.is_nil(err:find("resume", 1, true), err)
        -- fixed, the same command runs
        write_file(file, c[1]:find("csv") and "name,email\nA,a@example.com\nB,b@example.com\n"
                           or '[{"name":"A","email":"a@example.com"},{"name":"B","email":"b@example.com"}]')
        code, out, err = run(dir, { "--journal", journal, file }, with{ ZENDESK_URL = s.url })
        assert.equal(0, code, c[1] .. ": " .. err)
        assert.matches("2 rows", out)
      end
    end)
  end)

  describe("messages", function()
    it("an unknown CSV column is mapped or ignored with --column", function()
      for _, c in ipairs{ { "favourite_colour", 9 }, { "Shoe Size", 2 } } do
        local headers = { "name", "email", "external_id", "role", "phone", "notes", "alias", "locale" }
        table.insert(headers, c[2], c[1])
        local row = {}
        for i = 1, #headers do row[i] = i == 2 and "a@example.com" or "x" end
        local file = csv("c.csv", table.concat(headers, ","), { table.concat(row, ",") })
        local code, out, err = run(dir, { file }, with{ ZENDESK_URL = s.url })
        assert.equal(2, code)
        assert.equal("", out)
        assert.equal(("zendesk-sync: %s: unknown CSV column '%s' (column %d): map it with --column '%s=FIELD' "
                      .. "or ignore it with --column '%s='\n"):format(file, c[1], c[2], c[1], c[1]), err)
      end
      -- the Lua API keeps its own wording
      local ok, lerr = pcall(sources.open, path("c.csv"))
      assert.is_false(ok)
      assert.matches('opts.columns = {%["Shoe Size"%] = false}', tostring(lerr))
      -- issue 15: a header that is no fixed field may be one of the account's user fields, so the
      -- CLI reads them (one GET /user_fields a run); nothing else reached the API
      local other = 0
      for _, r in ipairs(s:requests()) do
        if r.path:find("^/api/") and not (r.method == "GET" and r.path:find("^/api/v2/user_fields")) then
          other = other + 1
        end
      end
      assert.equal(0, other)
      assert.equal(2, api_requests())
    end)

    it("other option problems name the CLI's options", function()
      local file = csv("d.csv", "name,email,Mail", { "A,a@example.com,b@example.com" })
      local code, _, err = run(dir, { "--column", "Mail=email", file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("both map to email", err)
      assert.matches("%-%-column 'Mail='", err)
      code, _, err = run(dir, { "--column", "Mail=mail", file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("%-%-column 'Mail=mail': unknown field 'mail'", err)
      code, _, err = run(dir, { "--delimiter", ";;", file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("%-%-delimiter", err)
      code, _, err = run(dir, { "--tag-separator", "", file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("%-%-tag%-separator", err)
      local data = path("people.data")
      write_file(data, "name,email\nA,a@example.com\n")
      for _, args in ipairs{ { data }, { "--dry-run", data } } do
        code, _, err = run(dir, args, with{ ZENDESK_URL = s.url })
        assert.equal(2, code)
        assert.matches("pass %-%-format csv|json|ndjson", err)
      end
      for _, e in ipairs{ err } do assert.is_nil(e:find("opts.", 1, true), e) end
      -- one object per line in a .json file: the reader's advice is the option
      local lines = path("lines.json")
      write_file(lines, '{"name":"A","email":"a@example.com"}\n{"name":"B","email":"b@example.com"}\n')
      for _, args in ipairs{ { lines }, { "--dry-run", lines }, { "--format", "json", data } } do
        code, _, err = run(dir, args, with{ ZENDESK_URL = s.url })
        assert.equal(2, code)
        assert.matches("expected a JSON array %('%['%) at byte 1, found [%w ]+: for one object per line pass "
                       .. "%-%-format ndjson\n$", err)
        assert.is_nil(err:find("use format", 1, true), err)
        assert.is_nil(err:find("truncated", 1, true), err)
      end
      assert.equal(0, api_requests())
    end)

    it("--report or --journal in a directory that does not exist names the directory", function()
      local file = people("e.csv", 1)
      local code, out, err = run(dir, { "--report", "out/x.csv", file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("directory 'out' does not exist", err)
      code, out, err = run(dir, { "--journal", "nowhere/j", file }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.equal("", out)
      assert.matches("directory 'nowhere' does not exist", err)
      assert.equal(0, api_requests())
    end)

    it("without --report, the summary does not point at a report", function()
      local rows = {}
      for i = 1, 14 do rows[i] = ("B%d,not-an-email-%d,x%d"):format(i, i, i) end
      local file = csv("bad.csv", "name,email,external_id", rows)
      for _, args in ipairs{ { "--dry-run", file }, { "--dry-run", "-q", file }, { file } } do
        local code, out = run(dir, args, with{ ZENDESK_URL = s.url })
        assert.equal(1, code)
        assert.matches("and 4 more", out)
        assert.is_nil(out:find("see the report", 1, true), table.concat(args, " "))
      end
      local code, out = run(dir, { "--report", path("rep.csv"), file }, with{ ZENDESK_URL = s.url })
      assert.equal(1, code)
      assert.matches("and 4 more %(see the report", out)
    end)

    it("an NDJSON line that is not JSON says so, in the CLI and in the Lua API", function()
      local file = path("n.ndjson")
      write_file(file, '{"name":"A","email":"a@example.com"}\nnot json at all\ntrue story\n{name: 1}\n'
                       .. 'null\n')
      local code, out = run(dir, { "--dry-run", file }, {})
      assert.equal(1, code)
      assert.matches("row 2: invalid: line 2: not JSON: ", out)
      assert.matches("row 3: invalid: line 3: not JSON: ", out)
      assert.matches("row 4: invalid: line 4: invalid JSON: expected a string key", out)
      assert.matches("row 5: invalid: line 5: expected a JSON object, got null", out)
      local r = sources.open(file)
      local problems = {}
      for row, user, problem in r:rows() do problems[row] = user and "ok" or problem end
      r:close()
      assert.equal("ok", problems[1])
      assert.matches("^line 2: not JSON: ", problems[2])
      assert.is_nil(problems[2]:find("null", 1, true))
      assert.matches("^line 3: not JSON: ", problems[3])
      -- a broken object is invalid JSON, in the decoder's words (not its error's tostring)
      assert.equal("line 4: invalid JSON: expected a string key at character 2", problems[4])
      assert.equal("line 5: expected a JSON object, got null", problems[5])
    end)

    it("a 403 on the bulk submission explains bulk imports, keeping Zendesk's text and the request id", function()
      s:config{ imports_enabled = false }
      local code, _, err = run(dir, { people("i.csv", 2) }, with{ ZENDESK_URL = s.url })
      assert.equal(2, code)
      assert.matches("You do not have access", err)
      assert.matches("bulk imports are probably not enabled", err)
      assert.matches("Zendesk Customer Support", err)
      assert.matches("%[request_id [%x]+%-LCL%]", err)
    end)

    it("an answer without a job status keeps its request id, in the report and the CLI line", function()
      s:fault{ path = "/api/v2/users/create_or_update_many", status = 200, body = "{}", count = 10 }
      local report = path("rid.csv")
      local code, out = run(dir, { "--report", report, people("rid_in.csv", 1) }, with{ ZENDESK_URL = s.url })
      assert.equal(1, code)
      assert.matches("row 1: failed: [^\n]*no job_status[^\n]*%[request_id [%x]+%-LCL%]", out)
      assert.matches("%[request_id [%x]+%-LCL%]", read_file(report))
    end)

    it("tostring(err) of a sync stopped by poll answers without job statuses keeps the request id", function()
      local zendesk = require "zendesk"
      s:fault{ path = "/api/v2/job_statuses", status = 200, body = "{}", count = 100 }
      local client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
      local report, err = client:sync_users({ { email = "poll@example.com", name = "Poll" } },
                                            { poll_interval = 0.01, max_poll_interval = 0.02, collect_rows = false })
      client:close()
      assert.is_nil(report)
      assert.matches("no job_statuses", tostring(err))
      assert.matches("%[request_id [%x]+%-LCL%]$", tostring(err))
    end)
  end)
end)

-- folded from tests/cli_newcomer_jit.lua (issue 11): `luajit bin/zendesk-sync` from a checkout,
-- with no module paths in the environment, finds build/luajit and syncs (needs `make LUA=luajit
-- build`, which `make test` does); the shebang still says lua5.4
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
    local jit_run = { interpreter = "luajit" }
    local code, out, err = run(dir, { "--help" }, {}, jit_run)
    assert.equal(0, code, err)
    assert.matches("Usage: zendesk%-sync", out)
    local file = dir .. "/jit.csv"
    local rows = { "name,email,external_id" }
    for i = 1, 120 do rows[#rows + 1] = ("J%d,j%d@example.com,jx%d"):format(i, i, i) end
    write_file(file, table.concat(rows, "\n") .. "\n")
    local report = dir .. "/jit-report.csv"
    code, out, err = run(dir, { "--report", report, file },
                         { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN },
                         jit_run)
    assert.equal(0, code, err)
    assert.matches("120 rows", out)
    assert.matches("120 created", out)
    assert.equal(120, #s:users())
    local lines = 0
    for _ in io.lines(report) do lines = lines + 1 end
    assert.equal(121, lines)
  end)
end)
