-- What a new user types from the README, run as written from a clean environment: the setup
-- lines (`make env` for each flavour), a checkout that stays clean after using it (the nginx
-- example, `luarocks make`), and the rockspec's in-tree leftovers removed by `make clean`.
local standin = require "support.standin"
local scratch = require "support.scratch"

local ROOT = standin.ROOT
local sh, q = standin.sh, standin.shell_quote

-- A shell with only PATH and HOME, in the checkout (no LUA_PATH / LUA_CPATH from busted).
local function clean_sh(script)
  return sh("cd " .. q(ROOT) .. " && env -i PATH=" .. q(os.getenv("PATH"))
    .. " HOME=" .. q(os.getenv("HOME") or "/tmp") .. " sh -c " .. q(script) .. " 2>&1")
end

local function have(cmd) return select(2, sh("command -v " .. cmd .. " >/dev/null 2>&1")) == 0 end

describe("make env", function()
  for _, flavour in ipairs({ { lua = "lua5.4", bin = "lua5.4" }, { lua = "luajit", bin = "luajit" } }) do
    it("follows LUA=" .. flavour.lua .. ": the printed paths load the " .. flavour.lua .. " build", function()
      assert(have(flavour.bin), flavour.bin .. " is not installed")
      assert(standin.read_file(ROOT .. "build/" .. flavour.lua .. "/zendesk/core.so"),
        "build/" .. flavour.lua .. " is not built: make build LUA=" .. flavour.lua)
      local probe = [['local z = require "zendesk"; local c = package.searchpath("zendesk.core", package.cpath);]]
        .. [[ print("LOADED " .. type(z.new) .. " " .. c)']]
      local out, code = clean_sh('eval "$(make -s LUA=' .. flavour.lua .. ' env)" && echo "CPATH=$LUA_CPATH" && cd /tmp && '
        .. flavour.bin .. " -e " .. probe)
      assert.are.equal(0, code, out)
      assert.truthy(out:find("CPATH=" .. ROOT .. "build/" .. flavour.lua .. "/?.so", 1, true), out)
      assert.truthy(out:find("LOADED function " .. ROOT .. "build/" .. flavour.lua .. "/zendesk/core.so", 1, true), out)
    end)
  end

  it("without LUA is the Lua 5.4 setup the README shows", function()
    local out, code = clean_sh('eval "$(make -s env)" && cd /tmp && lua5.4 -e \'require "zendesk"; print("OK")\'')
    assert.are.equal(0, code, out)
    assert.truthy(out:find("OK", 1, true), out)
  end)
end)

-- A free TCP port on 127.0.0.1 (bound and released; good enough for one nginx start).
local function free_port()
  for _ = 1, 50 do
    -- not math.random: support/email_cases.lua seeds it with a fixed seed, so two suites running
    -- at once (specs and ASan) would probe the same ports in the same order
    local f = assert(io.open("/dev/urandom", "rb"))
    local b1, b2 = f:read(2):byte(1, 2)
    f:close()
    local p = 20000 + (b1 * 256 + b2) % 40000
    if select(2, sh("(exec 3<>/dev/tcp/127.0.0.1/" .. p .. ") 2>/dev/null")) ~= 0 then return p end
  end
  error("no free port")
end

describe("a checkout after using it", function()
  local dir
  after_each(function() scratch.remove(dir); dir = nil end)

  it("stays clean in git status after examples/nginx.conf is tested, started and stopped as the README says", function()
    dir = scratch.copy()
    local port, out, code
    -- the README's way: prefix = the checkout, logs/ for what nginx writes, the port moved in a copy;
    -- another suite running at once may take the port between the probe and the bind: try another
    for _ = 1, 5 do
      port = free_port()
      out, code = sh("cd " .. q(dir) .. " && mkdir -p logs && nginx -t -p \"$PWD\" -c examples/nginx.conf 2>&1"
        .. " && sed 's/listen 127.0.0.1:8080 /listen 127.0.0.1:" .. port .. " /' examples/nginx.conf > logs/nginx.conf"
        .. " && ZENDESK_URL=http://127.0.0.1:9 ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token"
        .. " nginx -p \"$PWD\" -c logs/nginx.conf 2>&1")
      if code == 0 or not out:find("Address already in use", 1, true) then break end
    end
    assert.are.equal(0, code, out)
    local health
    for _ = 1, 100 do
      health = sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. port .. "/health")
      if health == "200" then break end
      sh("sleep 0.05")
    end
    local pid = (standin.read_file(dir .. "/logs/nginx.pid") or ""):match("%d+")
    sh("cd " .. q(dir) .. " && nginx -p \"$PWD\" -c logs/nginx.conf -s stop 2>&1")
    for _ = 1, 100 do
      if not pid or select(2, sh("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then break end
      sh("sleep 0.05")
    end
    assert.are.equal("200", health)
    assert.truthy(standin.read_file(dir .. "/logs/access.log"), "nginx wrote no logs/access.log")
    assert.are.equal("", scratch.status(dir))
  end)

  it("holds no build products of `luarocks make` after `make clean`", function()
    dir = scratch.copy()
    local tree = dir .. ".tree"
    local out, code = sh("cd " .. q(dir) .. " && luarocks --lua-version=5.4 make --tree=" .. q(tree)
      .. " lua-zendesk-*.rockspec CURL_INCDIR=/usr/include/$(gcc -print-multiarch)"
      .. " CURL_LIBDIR=/usr/lib/$(gcc -print-multiarch) 2>&1")
    sh("rm -rf " .. q(tree))
    assert.are.equal(0, code, out)
    -- luarocks builds in place: the objects and the module are in the checkout now
    local before = scratch.status(dir, true)
    assert.truthy(before:find("!! src/client.o", 1, true), before)
    assert.truthy(before:find("!! zendesk/", 1, true), before)
    out, code = sh("cd " .. q(dir) .. " && make clean 2>&1")
    assert.are.equal(0, code, out)
    assert.are.equal("", scratch.status(dir, true))
  end)
end)

-- README "What trips people up": each statement, checked against the code through the stand-in.
describe("README: what trips people up", function()
  local zendesk = require "zendesk"
  local s, client, dir

  setup(function()
    s = standin.start{}
    dir = sh("mktemp -d /tmp/zd-newcomer.XXXXXX"):match("^%s*(.-)%s*$")
  end)
  teardown(function()
    if client then client:close() end
    if s then s:stop() end
    if dir then sh("rm -rf " .. q(dir)) end
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0 }
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
  end)

  local function sync(name, text, opts)
    local path = dir .. "/" .. name
    standin.write_file(path, text)
    local rows = {}
    opts = opts or {}
    opts.on_row = function(r) rows[#rows + 1] = r end
    local report, err = client:sync_users(path, opts)
    assert(report, tostring(err))
    table.sort(rows, function(a, b) return a.row < b.row end)
    return report, rows
  end

  local function tags_of(email)
    local body = assert(client:request("GET", "/api/v2/users/search.json?query=email:" .. email))
    return body.users[1].tags
  end

  it("tags: split on ';', trimmed, empty pieces dropped; an empty cell leaves them; tag_separator changes it", function()
    sync("t1.csv", 'email,name,tags\nann@example.com,Ann,"vip; hybrid;;"\n')
    assert.are.same({ "vip", "hybrid" }, tags_of("ann@example.com"))
    sync("t2.csv", "email,name,tags\nann@example.com,Ann,\n")
    assert.are.same({ "vip", "hybrid" }, tags_of("ann@example.com"))
    sync("t3.csv", 'email,name,tags\nann@example.com,Ann,"a, b;c"\n', { tag_separator = "," })
    assert.are.same({ "a", "b;c" }, tags_of("ann@example.com"))
  end)

  it("row N counts data records, not lines: row 3 after a two-line record is on line 5; NDJSON blank lines are no rows", function()
    local _, rows = sync("r.csv", 'email,name\nann@example.com,Ann\nbo@example.com,"Bo\nsecond line"\nbad,Bad\n')
    assert.are.equal(3, #rows)
    assert.are.equal("invalid", rows[3].outcome)
    assert.are.equal(3, rows[3].row)
    assert.are.equal("row 3.email: 'bad' is not a valid email address", rows[3].reason)
    _, rows = sync("r.ndjson", '{"email":"n1@example.com","name":"N"}\n\n{"email":"bad","name":"B"}\n')
    assert.are.equal(2, #rows)
    assert.are.equal(2, rows[2].row)
    assert.are.equal("invalid", rows[2].outcome)
  end)

  it("invalid rows carry reason (no error, no details); failed rows carry error, details and reason", function()
    local report_path = dir .. "/report.csv"
    -- a client whose definitions are stale (employee_number became an integer since it read them):
    -- 'abc' passes the local check and Zendesk refuses it, so the row fails there (issue 15)
    client:user_fields{ definitions = { { key = "employee_number", type = "text" } } }
    local report, rows = sync("o.csv", "email,name,user_fields.employee_number\nbad,Bad,1\nf@example.com,F,abc\n",
      { report = report_path })
    assert.are.equal(1, report.invalid)
    assert.are.equal(1, report.failed)
    local inv, failed = rows[1], rows[2]
    assert.are.equal("invalid", inv.outcome)
    assert.are.equal("bad", inv.email)
    assert.truthy(inv.reason:find("^row 1%.email: "), inv.reason)
    assert.is_nil(inv.error)
    assert.is_nil(inv.details)
    assert.are.equal("failed", failed.outcome)
    assert.are.equal("UserCreateError", failed.error)
    assert.are.equal("string", type(failed.details))
    assert.are.equal(failed.details, failed.reason)
    local head = (standin.read_file(report_path) or ""):match("^[^\n]*")
    assert.are.equal("row,outcome,id,email,external_id,error,details,reason", head)
  end)

  it("progress, message and results are zendesk.null while a job is queued", function()
    s:config{ job_delay_ms = 200 }
    local job = assert(client:upsert_users{ { email = "a@example.com", name = "A" } })
    assert.are.equal("queued", job.status)
    assert.are.equal(zendesk.null, job.progress)
    assert.are.equal(zendesk.null, job.message)
    assert.are.equal(zendesk.null, job.results)
    assert.are.equal("userdata: (nil)", tostring(job.progress))
    local seen = {}
    job = assert(client:wait_job(job, { timeout = 60, on_progress = function(j) seen[#seen + 1] = j end }))
    assert.are.equal(1, job.progress)
  end)

  it("validate_user is public and names the field; upsert_user gives the same error with path user", function()
    local ok, err = zendesk.validate_user({ email = "bad", name = "B" }, "row 3")
    assert.is_nil(ok)
    assert.are.same({ "validation", "email", "row 3.email", "row 3.email: 'bad' is not a valid email address" },
      { err.kind, err.field, err.path, err.message })
    local _, err2 = zendesk.validate_user({ name = "No key" })
    assert.are.same({ "email" }, { err2.field })
    local _, err3 = zendesk.validate_user({ email = "a@example.com", colour = "red" })
    assert.are.same({ "colour", "colour" }, { err3.field, err3.path })
    local user, uerr = client:upsert_user{ email = "bad", name = "B" }
    assert.is_nil(user)
    assert.are.same({ "email", "user.email" }, { uerr.field, uerr.path })
    assert.is_true(zendesk.validate_user({ email = "a@example.com" }))
    assert.are.equal(0, s:stats().requests)
  end)

  it("one bad user rejects upsert_users before any request; sync_users takes an array of any length", function()
    local list = {}
    for i = 1, 250 do list[i] = { email = "user" .. i .. "@example.com", name = "User " .. i } end
    list[7] = { email = "not-an-address", name = "Bad" }
    local job, err = client:upsert_users{ list[1], list[7], list[8] }
    assert.is_nil(job)
    assert.are.same({ "email", "users[2].email", 1 }, { err.field, err.path, #err.errors })
    assert.are.equal(2, err.errors[1].index)
    assert.are.equal(0, s:stats().requests)
    assert.has_error(function() client:upsert_users(list) end, "upsert_users: expected 1 to 100 users, got 250")
    local report = assert(client:sync_users(list, {}))
    assert.are.same({ 249, 1, 0 }, { report.created, report.invalid, report.failed })
    assert.are.equal(249, #s:users())
  end)

  it("lists every file of examples/ in the README", function()
    local readme = standin.read_file(ROOT .. "README.md")
    local section = readme:match("\n### The examples\n(.-)\n#") or ""
    local files = sh("cd " .. q(ROOT) .. " && git ls-files --cached --others --exclude-standard examples")
    local n = 0
    for f in files:gmatch("[^\n]+") do
      n = n + 1
      assert.truthy(section:find("`" .. f .. "`", 1, true), f .. " is not listed under README's The examples")
    end
    assert.is_true(n >= 5)
  end)
end)
