-- Issue 12, the points of the Lua layer: validation sees the tables the encoder sends (2), one
-- row with bad UTF-8 is that row's problem only and never stops the journal (9), a resume refuses
-- an input whose content changed (10), endless 429s end, resumably (12), a report or journal
-- that is the input is refused and reports are renamed into place (13), rows are not collected
-- unless asked (15), and an input that is no file says which path (19). Real HTTP to the stand-in.
local standin = require "support.standin"
local zendesk = require "zendesk"
local core = require "zendesk.core"
local journal = require "zendesk.journal"
local tmpname, read_file, write_file = standin.tmpname, standin.read_file, standin.write_file
local q = standin.shell_quote

local MANY = "/api/v2/users/create_or_update_many"
local STATUSES = "/api/v2/job_statuses"

local function api_requests(s)
  local n = 0
  for _, r in ipairs(s:requests()) do
    if r.path:find("^/api/") then n = n + 1 end
  end
  return n
end

local function lines_of(path)
  local n = 0
  for _ in io.lines(path) do n = n + 1 end
  return n
end

local function emails(s)
  local t, n = {}, 0
  for _, u in ipairs(s:users()) do
    assert.is_nil(t[u.email], "user " .. tostring(u.email) .. " twice")
    t[u.email] = u
    n = n + 1
  end
  return t, n
end

describe("issue 12 (Lua layer)", function()
  local s, client, dir

  local function new_client(extra)
    local o = { url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 2,
                retry_base_delay = 0.01 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return zendesk.new(o)
  end

  setup(function()
    s = standin.start()
    dir = tmpname(".d")
    assert(os.execute("mkdir -m 700 " .. q(dir)))
  end)
  teardown(function()
    s:stop()
    if client then pcall(client.close, client) end
    os.execute("rm -rf " .. q(dir))
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    if client then client:close() end
    client = new_client()
    os.execute("rm -rf " .. q(dir) .. "/*")
  end)

  -------------------------------------------------------------------------------------------------
  describe("2. validation and encoding see the same table", function()
    it("refuses a user whose email comes through __index, and sends nothing, call after call", function()
      local u = setmetatable({ name = "Proto" }, { __index = { email = "p@x.io" } })
      for _ = 1, 3 do
        local user, err = client:upsert_user(u)
        assert.is_nil(user)
        assert.equal("validation", err.kind)
        assert.equal("user", err.path)
        assert.matches("^user: ", err.message)
        assert.matches("metatable", err.message)
      end
      assert.equal(0, #s:users())
      assert.equal(0, api_requests(s))
    end)

    it("refuses __pairs and __len, and such tables anywhere inside the user, naming the path", function()
      local ok_user = { email = "a@x.io", name = "A" }
      local cases = {
        { "user", setmetatable({ email = "a@x.io", name = "A", bogus = 1 },
            { __pairs = function() return next, ok_user, nil end }) },
        { "user.user_fields", { email = "a@x.io", name = "A",
            user_fields = setmetatable({}, { __index = { department = "Sales" } }) } },
        { "user.identities[1]", { name = "A", identities = {
            setmetatable({}, { __index = { type = "email", value = "i@x.io" } }) } } },
        { "user.identities", { email = "a@x.io", name = "A",
            identities = setmetatable({}, { __len = function() return 1 end, __index = function() return {} end }) } },
        { "user.tags", { email = "a@x.io", name = "A", tags = setmetatable({}, { __len = function() return 2 end }) } },
        { "user.organization", { email = "a@x.io", name = "A",
            organization = setmetatable({}, { __index = { name = "Org" } }) } },
        { "user.photo", { email = "a@x.io", name = "A", photo = { thumbnails = {
            setmetatable({}, { __index = { url = "x" } }) } } } },
      }
      for _, c in ipairs(cases) do
        local path, u = c[1], c[2]
        local user, err = client:upsert_user(u)
        assert.is_nil(user, path)
        assert.equal("validation", err.kind, path)
        assert.equal(path == "user.photo" and "user.photo.thumbnails[1]" or path, err.path)
        assert.matches("metatable", err.message, 1, true)
      end
      assert.equal(0, api_requests(s))
    end)

    it("still takes zendesk.array_mt and zendesk.object_mt, the encoder's own shape markers", function()
      local user = assert(client:upsert_user{ email = "shape@x.io", name = "Shape",
        tags = setmetatable({}, zendesk.array_mt), user_fields = setmetatable({}, zendesk.object_mt) })
      assert.is_number(user.id)
    end)

    it("upsert_users refuses such a user (or list) before any request", function()
      local job, err = client:upsert_users{ { email = "b@x.io", name = "B" },
        setmetatable({ name = "C" }, { __index = { email = "c@x.io" } }) }
      assert.is_nil(job)
      assert.equal("validation", err.kind)
      assert.equal("users[2]", err.path)
      local list = setmetatable({}, { __index = function(_, i) if i == 1 then return { email = "d@x.io", name = "D" } end end,
                                      __len = function() return 1 end })
      job, err = client:upsert_users(list)
      assert.is_nil(job)
      assert.equal("users", err.path)
      assert.equal(0, api_requests(s))
    end)

    it("a cycle or nesting the encoder refuses makes the row invalid, alone; a shared table is fine", function()
      local cyc = {}
      cyc.self = cyc
      local deep = {}
      local cur = deep
      for _ = 1, 70 do cur.next = {}; cur = cur.next end
      local shared, wide = { url = "x" }, {}
      for i = 1, 30 do wide[i] = { a = shared, b = shared } end
      local rows = { { email = "c1@x.io", name = "C1", photo = cyc }, { email = "c2@x.io", name = "C2", photo = deep },
                     { email = "c3@x.io", name = "C3", photo = { thumbnails = wide } }, { email = "c4@x.io", name = "C4" } }
      local seen = {}
      local report = assert(client:sync_users(rows, { on_row = function(o) seen[o.row] = o end }))
      assert.equal(2, report.created)
      assert.matches("row 1%.photo[%.%w]*: contains itself", seen[1].reason)
      assert.matches("row 2%.photo[%.%w]*: nested too deeply", seen[2].reason)
      assert.equal("created", seen[3].outcome)
    end)

    it("anything else the encoder refuses makes the row invalid, alone, and the batch goes", function()
      local bad = { print, 0 / 0, math.huge, { 1, a = 2 }, { [1] = 1, [3] = 3 }, { [true] = 1 }, io.stdout }
      local rows = {}
      for i, v in ipairs(bad) do rows[i] = { email = "e" .. i .. "@x.io", name = "E" .. i, photo = v } end
      rows[#rows + 1] = { email = "ok@x.io", name = "OK", photo = zendesk.null }
      local seen = {}
      local report = assert(client:sync_users(rows, { on_row = function(o) seen[o.row] = o end }))
      assert.equal(1, report.created)
      assert.equal(#bad, report.invalid)
      for i = 1, #bad do assert.matches("^row " .. i .. "%.photo: ", seen[i].reason) end
      assert.equal(1, #s:users())
    end)

    it("sync_users makes such a row invalid, alone", function()
      local rows = { { email = "r1@x.io", name = "R1" },
                     setmetatable({ name = "R2" }, { __index = { email = "r2@x.io" } }),
                     { email = "r3@x.io", name = "R3", user_fields = setmetatable({}, { __index = { department = "x" } }) },
                     { email = "r4@x.io", name = "R4" } }
      local seen = {}
      local report = assert(client:sync_users(rows, { on_row = function(o) seen[o.row] = o end }))
      assert.equal(2, report.created)
      assert.equal(2, report.invalid)
      assert.equal("invalid", seen[2].outcome)
      assert.matches("row 2: .*metatable", seen[2].reason)
      assert.equal("invalid", seen[3].outcome)
      assert.matches("row 3%.user_fields: .*metatable", seen[3].reason)
      local _, n = emails(s)
      assert.equal(2, n)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("9. one bad byte is its own row's problem", function()
    local BAD = {
      ["lone continuation byte"] = "\128", ["0xFF"] = "\255", ["truncated sequence"] = "\195",
      ["overlong slash"] = "\192\175", ["overlong 3-byte"] = "\224\128\175",
      ["overlong 4-byte"] = "\240\130\130\172", ["UTF-16 surrogate"] = "\237\160\128",
      ["above U+10FFFF"] = "\244\144\128\128",
    }

    -- one input file per format, rows 1, 2, 4, 5 good, row 3 with bad bytes in `field`
    local function input(fmt, field, bad)
      local rows = {}
      for i = 1, 5 do
        local u = { email = "u" .. i .. "@x.io", name = "U" .. i, external_id = "x" .. i }
        if i == 3 then
          if field == "tags" then u.tags = { "ok", "t" .. bad }
          elseif field == "user_fields" then u.user_fields = { department = "D" .. bad }
          elseif field == "user_fields key" then u.user_fields = { ["dep" .. bad] = "D" }
          else u[field] = (u[field] or "") .. bad end
        end
        rows[i] = u
      end
      if fmt == "lua" then return rows end
      local path = dir .. "/in." .. fmt
      local out = {}
      if fmt == "csv" then
        local ukey = field == "user_fields key" and "dep" .. bad or "department"
        out[1] = "name,email,external_id,tags,user_fields." .. ukey
        for i, u in ipairs(rows) do
          local uf = u.user_fields and (u.user_fields.department or u.user_fields["dep" .. bad]) or ""
          out[i + 1] = table.concat({ u.name, u.email, u.external_id,
                                      u.tags and table.concat(u.tags, ";") or "", uf }, ",")
        end
        if field == "user_fields key" then
          -- a CSV header is not per row: the key in the header spoils every row; not this case
          return nil
        end
      else
        for i, u in ipairs(rows) do
          -- raw bytes inside JSON strings (the reader passes them through as they are)
          local parts = {}
          for k, v in pairs(u) do
            if type(v) == "table" then
              local inner = {}
              if v[1] then
                for _, t in ipairs(v) do inner[#inner + 1] = '"' .. t .. '"' end
                parts[#parts + 1] = '"' .. k .. '":[' .. table.concat(inner, ",") .. "]"
              else
                for kk, vv in pairs(v) do inner[#inner + 1] = '"' .. kk .. '":"' .. vv .. '"' end
                parts[#parts + 1] = '"' .. k .. '":{' .. table.concat(inner, ",") .. "}"
              end
            else
              parts[#parts + 1] = '"' .. k .. '":"' .. v .. '"'
            end
          end
          out[i] = "{" .. table.concat(parts, ",") .. "}"
        end
        if fmt == "json" then out = { "[" .. table.concat(out, ",\n") .. "]" } end
      end
      write_file(path, table.concat(out, "\n") .. "\n")
      return path
    end

    local FIELDS = { "name", "email", "external_id", "tags", "user_fields", "user_fields key" }
    local CSV_COLUMN = { name = "name", email = "email", external_id = "external_id", tags = "tags",
                         user_fields = "user_fields%.department" }
    local NAMED = { name = "name", email = "email", external_id = "external_id", tags = "tags%[2%]",
                    user_fields = "user_fields%.department", ["user_fields key"] = "user_fields" }

    for _, fmt in ipairs{ "csv", "ndjson", "json", "lua" } do
      it("in any field of a " .. fmt .. " row: that row alone is invalid, with the field named", function()
        local runs = 0
        for _, field in ipairs(FIELDS) do
          for what, bad in pairs(BAD) do
            local src = input(fmt, field, bad)
            if src then
              runs = runs + 1
              s:reset()
              s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
              local jpath = dir .. "/j-" .. fmt .. ".journal"
              os.remove(jpath)
              local seen = {}
              local label = fmt .. " " .. field .. " " .. what
              local report, err = client:sync_users(src, { journal = jpath, format = fmt ~= "lua" and fmt or nil,
                on_row = function(o) seen[o.row] = o end })
              assert.is_table(report, label .. ": " .. tostring(err))
              assert.equal(4, report.created, label)
              assert.equal(1, report.invalid, label)
              assert.equal("invalid", seen[3].outcome, label)
              if fmt == "csv" then
                -- the CSV reader names the column (and the field it maps to)
                assert.matches("^line 4: column '" .. CSV_COLUMN[field] .. "' %([^)]*%): invalid UTF%-8", seen[3].reason,
                               1, label)
              else
                assert.matches("row 3%." .. NAMED[field] .. "[^:]*: invalid UTF%-8", seen[3].reason, 1, label)
              end
              local _, n = emails(s)
              assert.equal(4, n, label)
              assert.equal("finished", journal.state(jpath), label)
              -- the journal keeps the row's bytes, and gives them back as they were
              local back = {}
              assert(journal.load(jpath, function(o) back[o.row] = o end))
              assert.equal("invalid", back[3].outcome, label)
              if field == "email" or field == "external_id" then
                local raw = (field == "email" and "u3@x.io" or "x3") .. bad
                assert.equal(raw, seen[3][field], label)
                assert.equal(raw, back[3][field], label)
              end
            end
          end
        end
        assert.is_true(runs >= 40)
      end)
    end

    it("a CSV column mapped to a field is named as the header says", function()
      local path = dir .. "/mapped.csv"
      write_file(path, "Full Name,Mail\nAnn,ann@x.io\nBo\255b,bob@x.io\n")
      local seen = {}
      local report = assert(client:sync_users(path, { columns = { ["Full Name"] = "name", Mail = "email" },
                                                     on_row = function(o) seen[o.row] = o end }))
      assert.equal(1, report.created)
      assert.equal("line 3: column 'Full Name' (name): invalid UTF-8 (byte 3)", seen[2].reason)
    end)

    it("a valid multi-byte name goes through untouched", function()
      local name = "Zoë Ångström 日本 😀"
      local report = assert(client:sync_users({ { email = "zoe@x.io", name = name } }))
      assert.equal(1, report.created)
      assert.equal(name, s:users()[1].name)
    end)

    it("nothing a row holds stops the journal or a JSON report", function()
      local path = dir .. "/bad.csv"
      write_file(path, "name,email,external_id\nA,a@x.io,a1\nB\255,b@x.io,b\255\nC,c@x.io,c1\n")
      local jpath, rpath = dir .. "/bad.journal", dir .. "/bad.json"
      local report, err = client:sync_users(path, { journal = jpath, report = rpath })
      assert.is_table(report, tostring(err))
      assert.equal(2, report.created)
      assert.equal(1, report.invalid)
      assert.equal("finished", journal.state(jpath))
      local rep = assert(core.decode(assert(read_file(rpath))))
      assert.equal(3, #rep)
      local r2
      for _, o in ipairs(rep) do if o.row == 2 then r2 = o end end
      assert.equal("invalid", r2.outcome)
      assert.equal("b\\xff", r2.external_id)
    end)

    it("nor do bytes that a server answer quotes", function()
      s:fault{ path = MANY, status = 400, count = 1,
               body = '{"error":"Bad\255Request","description":"row x\192\175 refused"}' }
      local jpath, rpath = dir .. "/srv.journal", dir .. "/srv.json"
      local seen = {}
      local report, err = client:sync_users({ { email = "a@x.io", name = "A" } },
        { journal = jpath, report = rpath, on_row = function(o) seen[#seen + 1] = o end })
      assert.is_table(report, tostring(err))
      assert.equal(1, report.failed)
      assert.equal("finished", journal.state(jpath))
      assert.is_table(core.decode(read_file(rpath)))
      local back = {}
      assert(journal.load(jpath, function(o) back[#back + 1] = o end))
      assert.equal(seen[1].error, back[1].error)
      assert.equal(seen[1].details, back[1].details)
    end)

    it("the row check matches the encoder: what validation passes, the encoder takes", function()
      -- every 1- and 2-byte string, and 3/4-byte ones around the edges of the valid ranges
      local cases = {}
      for a = 0, 255 do
        cases[#cases + 1] = string.char(a)
        for _, b in ipairs{ 0x00, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF } do
          cases[#cases + 1] = string.char(a, b)
          for _, c in ipairs{ 0x80, 0xBF, 0x41 } do
            cases[#cases + 1] = string.char(a, b, c)
            cases[#cases + 1] = string.char(a, b, c, 0x80)
          end
        end
      end
      for _, v in ipairs(cases) do
        do
          local ok = zendesk.validate_user({ email = "a@x.io", name = v }, "user")
          local enc = core.encode{ name = v }
          assert.equal(enc ~= nil, ok == true, ("%q"):format(v))
        end
      end
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("10. a resume checks the content of the input", function()
    local function make_csv(path, n, reverse)
      local out = { "name,email,external_id" }
      for i = 1, n do
        local k = reverse and (n + 1 - i) or i
        out[#out + 1] = ("User %04d,user%04d@x.io,e%04d"):format(k, k, k)
      end
      write_file(path, table.concat(out, "\n") .. "\n")
    end

    -- a sync of 40 rows by 10 that stops (403) after two submissions
    local function stopped_sync(path, jpath, rpath)
      make_csv(path, 40)
      s:fault{ path = MANY, status = 403, after = 2, count = 1000 }
      local report, err = client:sync_users(path, { journal = jpath, report = rpath, batch_size = 10, max_jobs = 1 })
      assert.is_nil(report)
      assert.equal("auth", err.kind)
      assert.equal("unfinished", journal.state(jpath))
      s:clear_faults()
    end

    it("refuses another file of the same size", function()
      local path, jpath = dir .. "/people.csv", dir .. "/people.journal"
      stopped_sync(path, jpath)
      local size = #read_file(path)
      make_csv(path, 40, true)
      assert.equal(size, #read_file(path))
      local before = #s:users()
      local report, err = client:sync_users(nil, { journal = jpath, resume = true })
      assert.is_nil(report)
      assert.matches("changed", tostring(err))
      assert.matches(path, tostring(err), 1, true)
      assert.equal(before, #s:users())
      -- the file it was written for is accepted
      make_csv(path, 40)
      report = assert(client:sync_users(nil, { journal = jpath, resume = true }))
      local _, n = emails(s)
      assert.equal(40, n)
      assert.equal(40, report.total)
    end)

    it("finishes over a journal whose last line was cut in half", function()
      local path, jpath, rpath = dir .. "/cut.csv", dir .. "/cut.journal", dir .. "/cut.csv.report.csv"
      stopped_sync(path, jpath, rpath)
      -- cut the file in the middle of its last "done" record, as a crash during the write would
      local text = read_file(jpath)
      local at, pos = nil, 1
      for line in text:gmatch("([^\n]*)\n") do
        if line:find('"t":"done"', 1, true) then at = pos end
        pos = pos + #line + 1
      end
      local line_end = text:find("\n", at, true)
      write_file(jpath, text:sub(1, at + math.floor((line_end - at) / 2)))
      local report = assert(client:sync_users(nil, { journal = jpath, resume = true, report = rpath }))
      assert.equal(40, report.created + report.updated)
      local _, n = emails(s)
      assert.equal(40, n)
      assert.equal("finished", journal.state(jpath))
      local rows = {}
      for line in io.lines(rpath) do
        local r = line:match("^(%d+),")
        if r then
          assert.is_nil(rows[r], "row " .. r .. " twice in the report")
          rows[r] = true
        end
      end
      local k = 0
      for _ in pairs(rows) do k = k + 1 end
      assert.equal(40, k)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("12. endless 429s end, resumably", function()
    local function forever(path)
      s:fault{ path = path, status = 429, headers = { ["Retry-After"] = "0" }, content_type = "text/plain",
               body = "Too many jobs", count = 1000000 }
    end

    it("on every bulk submission: stops with a clear error after rate_limit_timeout, journals once", function()
      forever(MANY)
      local jpath = dir .. "/r.journal"
      local report, err = client:sync_users({ { email = "a@x.io", name = "A" }, { email = "b@x.io", name = "B" } },
                                            { journal = jpath, rate_limit_timeout = 1 })
      assert.is_nil(report)
      assert.equal("rate_limited", err.kind)
      assert.matches("rate_limit_timeout", err.message)
      assert.equal("unfinished", journal.state(jpath))
      -- start, the batch, its refusal (once), the fatal record
      assert.is_true(lines_of(jpath) <= 4, "journal lines: " .. lines_of(jpath))
      assert.is_true(api_requests(s) > 3)
      s:clear_faults()
      report = assert(client:sync_users({ { email = "a@x.io", name = "A" }, { email = "b@x.io", name = "B" } },
                                        { journal = jpath, resume = true }))
      assert.equal(2, report.created)
      local _, n = emails(s)
      assert.equal(2, n)
    end)

    it("has a default bound (a clock that runs fast shows it)", function()
      forever(MANY)
      local t = 0
      local fast = new_client{ max_retries = 0,
        now = function() return t end,
        sleep = function(d)
          t = t + d
          if t > 5000 then error("still waiting after 5000 s of refusals") end
        end }
      local jpath = dir .. "/d.journal"
      local report, err = fast:sync_users({ { email = "a@x.io", name = "A" }, { email = "b@x.io", name = "B" } },
                                          { journal = jpath })
      fast:close()
      assert.is_nil(report)
      assert.equal("rate_limited", err.kind)
      assert.is_true(lines_of(jpath) <= 4, "journal lines: " .. lines_of(jpath))
    end)

    it("on every poll: stops after rate_limit_timeout, and a resume polls the job instead of resending", function()
      forever(STATUSES)
      local jpath = dir .. "/p.journal"
      local rows = { { email = "a@x.io", name = "A" }, { email = "b@x.io", name = "B" } }
      local report, err = client:sync_users(rows, { journal = jpath, rate_limit_timeout = 1 })
      assert.is_nil(report)
      assert.equal("rate_limited", err.kind)
      assert.matches("rate_limit_timeout", err.message)
      assert.equal("unfinished", journal.state(jpath))
      s:clear_faults()
      report = assert(client:sync_users(rows, { journal = jpath, resume = true }))
      assert.equal(2, report.created)
      assert.equal(1, s:stats().jobs)
    end)

    it("does not count TooManyJobs refusals while its own jobs hold the slots", function()
      s:config{ job_delay_ms = 300, max_jobs = 1, per_user_limit = 0, rate_limit_per_minute = 0 }
      local c = new_client{ max_retries = 0 }
      local rows = {}
      for i = 1, 3 do rows[i] = { email = "t" .. i .. "@x.io", name = "T" .. i } end
      local report, err = c:sync_users(rows, { batch_size = 1, max_jobs = 3, rate_limit_timeout = 0.2,
                                               poll_interval = 0.05 })
      c:close()
      assert.is_table(report, tostring(err))
      assert.equal(3, report.created)
      assert.is_true(s:stats().too_many_jobs > 0, "no refusal: nothing tested")
    end)

    it("wait_job under endless 429s on its polls ends with an error", function()
      local job = assert(client:upsert_users{ { email = "w@x.io", name = "W" } })
      forever(STATUSES)
      local js, err = client:wait_job(job, { timeout = 2 })
      assert.is_nil(js)
      assert.is_true(err.kind == "rate_limited" or err.kind == "timeout", tostring(err))
    end)

    it("checks the option", function()
      assert.has_error(function() client:sync_users({}, { rate_limit_timeout = -1 }) end)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("13. a report or journal that is the input is refused", function()
    local CSV = "name,email\nA,a@x.io\nB,b@x.io\n"

    it("by the same name, a symlink or a hard link, and the input stays whole", function()
      local path = dir .. "/in.csv"
      write_file(path, CSV)
      assert(os.execute("ln -s in.csv " .. q(dir .. "/sym.csv") .. " && ln " .. q(path) .. " " .. q(dir .. "/hard.csv")))
      for _, opts in ipairs{ { report = path }, { report = dir .. "/sym.csv" }, { report = dir .. "/hard.csv" },
                             { report = dir .. "/./in.csv" }, { journal = path }, { journal = dir .. "/hard.csv" } } do
        local report, err = client:sync_users(path, opts)
        assert.is_nil(report)
        assert.equal("validation", err.kind)
        assert.matches("is the input", err.message)
        assert.equal(CSV, read_file(path))
      end
      -- also when the input is an open handle on that file
      local f = assert(io.open(path, "rb"))
      local report, err = client:sync_users(f, { format = "csv", report = path })
      f:close()
      assert.is_nil(report)
      assert.matches("is the input", err.message)
      assert.equal(CSV, read_file(path))
      assert.equal(0, api_requests(s))
    end)

    it("refuses a journal that is the report", function()
      local path = dir .. "/in.csv"
      write_file(path, CSV)
      local report, err = client:sync_users(path, { report = dir .. "/same.csv", journal = dir .. "/same.csv" })
      assert.is_nil(report)
      assert.matches("report", err.message)
      -- two spellings of one path that does not exist yet
      report, err = client:sync_users(path, { report = dir .. "/two.csv", journal = dir .. "/./two.csv" })
      assert.is_nil(report)
      assert.matches("report", err.message)
      assert.is_nil(read_file(dir .. "/two.csv"))
      assert.equal(0, api_requests(s))
    end)

    it("writes the report under a temporary name and renames it into place at the end", function()
      local path, rpath = dir .. "/in.csv", dir .. "/out.csv"
      write_file(path, CSV)
      write_file(rpath, "previous report\n")
      local during = {}
      local report = assert(client:sync_users(path, { report = rpath, on_row = function()
        during[#during + 1] = read_file(rpath)
      end }))
      assert.equal(2, report.created)
      for _, text in ipairs(during) do assert.equal("previous report\n", text) end
      assert.matches("^row,outcome", read_file(rpath))
      assert.equal("600", standin.mode_of(rpath))
      -- no temporary file is left behind
      local left = standin.sh("ls -A " .. q(dir))
      assert.equal("in.csv\nout.csv\n", left)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("15. rows are collected only when asked", function()
    it("by default report.rows is nil; collect_rows = true gives every row", function()
      local rows = { { email = "a@x.io", name = "A" }, { email = "b@x.io", name = "B" } }
      local report = assert(client:sync_users(rows))
      assert.is_nil(report.rows)
      s:reset()
      s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
      report = assert(client:sync_users(rows, { collect_rows = true }))
      assert.equal(2, #report.rows)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("19. an input that is not a readable file names its path", function()
    it("a directory, a missing file, a path through a file", function()
      local d = dir .. "/folder.csv"
      assert(os.execute("mkdir " .. q(d)))
      write_file(dir .. "/plain.csv", "name,email\n")
      for _, path in ipairs{ d, dir .. "/missing.csv", dir .. "/plain.csv/x.csv" } do
        for _, mode in ipairs{ "plain", "journal", "dry" } do
          local report, err
          if mode == "dry" then
            report, err = require("zendesk.sync").run(nil, path, { dry_run = true })
          else
            report, err = client:sync_users(path, mode == "journal" and { journal = dir .. "/j.journal" } or nil)
          end
          assert.is_nil(report, path)
          assert.equal("io", err.kind)
          assert.matches(path, err.message, 1, true)
          assert.is_nil(err.message:find("<csv input>", 1, true))
        end
      end
      assert.matches("[Ii]s a directory", select(2, client:sync_users(d)).message)
    end)
  end)
end)
