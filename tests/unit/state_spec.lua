-- zendesk.state and its SQLite binding zendesk.sqlite (issue 16), without a server: the key as
-- the sync keys users, the canonical JSON and its hash (key order, the same under Lua 5.4 and
-- LuaJIT), prepared statements that take any bytes as data, pending rows recorded only when
-- confirmed, the seen set and the leavers, suspension, the account a state belongs to, a file
-- that is not a state, the format version and a read-only open that creates nothing.
local state = require "zendesk.state"
local sqlite = require "zendesk.sqlite"
local core = require "zendesk.core"

local function tmp()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".state"
end

local function rm(p)
  for _, suf in ipairs{ "", "-wal", "-shm" } do os.remove(p .. suf) end
end

describe("zendesk.state", function()
  local path
  before_each(function() path = tmp() end)
  after_each(function() rm(path) end)

  it("keys a user by external_id, else email, case-folded", function()
    assert.equal("x:emp-7", state.key_of{ external_id = "EMP-7", email = "A@B.example" })
    assert.equal("x:42", state.key_of{ external_id = 42 })
    assert.equal("e:a@b.example", state.key_of{ email = "A@B.example" })
    assert.equal("e:a@b.example", state.key_of{ external_id = "", email = "A@B.example" })
    assert.is_nil(state.key_of{ name = "nobody" })
    assert.is_nil(state.key_of(nil))
  end)

  it("hashes the canonical JSON: key order does not matter, any value change does", function()
    local a = { name = "Ana", email = "a@x.example", tags = { "b", "a" }, user_fields = { z = 1, y = core.null } }
    local b = {}
    for _, k in ipairs{ "user_fields", "tags", "email", "name" } do b[k] = a[k] end
    assert.equal('{"email":"a@x.example","name":"Ana","tags":["b","a"],"user_fields":{"y":null,"z":1}}',
                 state.canonical(a))
    assert.equal(state.canonical(a), state.canonical(b))
    assert.equal(state.hash(a), state.hash(b))
    assert.equal(sqlite.hash(state.canonical(a)), state.hash(a))
    assert.matches("^%x+$", state.hash(a))
    assert.equal(16, #state.hash(a))
    local c = { name = "Ana", email = "a@x.example", tags = { "a", "b" }, user_fields = { z = 1, y = core.null } }
    assert.not_equal(state.hash(a), state.hash(c))
    -- integral numbers are integers under both VMs, strings are escaped
    assert.equal('{"n":3,"s":"q\\"\\\\\\u000a","x":2.5}', state.canonical{ n = 3.0, x = 2.5, s = 'q"\\\n' })
    -- FNV-1a 64 of "a"
    assert.equal("af63dc4c8601ec8c", sqlite.hash("a"))
  end)

  it("records a row only when confirmed, in a transaction, and answers lookups", function()
    local st = assert(state.open(path, { url = "https://a.zendesk.com" }))
    assert.equal(1, st:start_run(false))
    st:pend(1, "x:1", "h1", false)
    st:pend(2, "x:2", "h2", false)
    assert(st:commit())
    assert.is_nil(st:lookup("x:1"))       -- pending is not synced
    assert.is_true(st:confirm(1, 101) == false)
    assert.is_false(st:confirm(99, 5))   -- not pending: nothing recorded
    assert(st:commit())
    local id, hash, suspended = st:lookup("x:1")
    assert.equal(101, id)
    assert.equal("h1", hash)
    assert.is_false(suspended)
    assert.is_nil(st:lookup("x:2"))
    assert.equal(1, st:count())
    st:close()
    -- a new run clears what the last one left pending; a resume keeps it
    st = assert(state.open(path, { url = "https://a.zendesk.com" }))
    assert.equal(1, st:start_run(true))
    assert.is_false(st:confirm(2, 102) == nil)
    assert(st:commit())
    assert.equal(102, (st:lookup("x:2")))
    st:pend(3, "x:3", "h3", false)
    assert(st:commit())
    assert.equal(2, st:start_run(false))
    assert.is_false(st:confirm(3, 103))
    st:close()
  end)

  it("takes any bytes as data (prepared statements): quotes and SQL in a key are just a key", function()
    local st = assert(state.open(path, { url = "https://a.zendesk.com" }))
    st:start_run(false)
    local evil = "x:'); DROP TABLE people; --\0tail"
    st:pend(1, evil, "h", false)
    st:confirm(1, 7)
    assert(st:commit())
    assert.equal(7, (st:lookup(evil)))
    assert.is_nil(st:lookup("x:'); DROP TABLE people; --"))
    assert.equal(1, st:count_all())
    st:close()
  end)

  it("lists leavers (not seen, not suspended) in pages, and suspends them", function()
    local st = assert(state.open(path, { url = "https://a.zendesk.com" }))
    st:start_run(false)
    for i = 1, 5 do
      st:pend(i, "x:" .. i, "h", false)
      st:confirm(i, 100 + i)
    end
    assert(st:commit())
    st:saw("x:2")
    st:saw("x:4")
    st:saw("x:new")   -- not in the state: no effect
    assert.equal(3, st:leaving())
    local page = st:leavers("", 2)
    assert.same({ { key = "x:1", id = 101 }, { key = "x:3", id = 103 } }, page)
    assert.same({ { key = "x:5", id = 105 } }, st:leavers("x:3", 2))
    st:mark_suspended("x:1", 101)
    st:mark_suspended("x:3", 999)   -- another id: not this person
    assert(st:commit())
    assert.equal(2, st:leaving())
    local _, _, suspended = st:lookup("x:1")
    assert.is_true(suspended)
    assert.equal(4, st:count())
    -- a returner confirmed again is active again
    st:pend(9, "x:1", "h", true)
    assert.is_true(st:confirm(9, 101))
    assert(st:commit())
    assert.is_false(select(3, st:lookup("x:1")))
    st:close()
  end)

  it("refuses another account, a file that is not a state, and another format version", function()
    local st = assert(state.open(path, { url = "https://a.zendesk.com" }))
    st:start_run(false)
    st:close()
    local no, err = state.open(path, { url = "https://b.zendesk.com" })
    assert.is_nil(no)
    assert.equal("StateAccountMismatch", err.code)
    assert.matches("https://a.zendesk.com", tostring(err))
    assert.matches("https://b.zendesk.com", tostring(err))
    -- the same account is fine, and so is a dry run without one
    assert(state.open(path, { url = "https://a.zendesk.com" })):close()
    assert(state.open(path, { readonly = true })):close()

    local db = assert(sqlite.open(path))
    local set = assert(db:prepare("UPDATE meta SET v = ? WHERE k = 'version'"))
    assert(set:run("99"))
    set:close()
    db:close()
    no, err = state.open(path, { url = "https://a.zendesk.com" })
    assert.is_nil(no)
    assert.equal("StateVersion", err.code)

    local other = tmp()
    local f = assert(io.open(other, "wb"))
    f:write("email,name\n")
    f:close()
    no, err = state.open(other, { url = "https://a.zendesk.com" })
    assert.is_nil(no)
    assert.equal("NotAState", err.code)
    f = assert(io.open(other, "rb"))
    assert.equal("email,name\n", f:read("a"))
    f:close()
    os.remove(other)
  end)

  it("a read-only open of a missing file is an empty state and creates nothing", function()
    local st = assert(state.open(path, { readonly = true }))
    assert.is_nil(st:lookup("x:1"))
    st:saw("x:1")
    assert.equal(0, st:leaving())
    st:close()
    assert.is_nil(io.open(path, "rb"))
  end)

  it("a dry run reads a finished state without creating anything beside it, whatever its name", function()
    local odd = path:gsub("%.state$", "") .. " 100% #1?.state"
    local st = assert(state.open(odd, { url = "https://a.zendesk.com" }))
    st:start_run(false)
    st:pend(1, "x:1", "h", false)
    st:confirm(1, 11)
    assert(st:commit())
    st:close()
    assert.is_nil(io.open(odd .. "-wal", "rb"))
    local ro = assert(state.open(odd, { readonly = true }))
    assert.equal(11, (ro:lookup("x:1")))
    ro:saw("x:1")
    assert.equal(0, ro:leaving())
    ro:close()
    assert.is_nil(io.open(odd .. "-wal", "rb"))
    assert.is_nil(io.open(odd .. "-shm", "rb"))
    rm(odd)
  end)

  it("the binding refuses what it cannot bind and a closed database", function()
    local db = assert(sqlite.open(path))
    assert(db:exec("CREATE TABLE t(a)"))
    local ins = assert(db:prepare("INSERT INTO t(a) VALUES (?)"))
    assert.has_error(function() ins:run({}) end)
    assert.has_error(function() ins:run(1, 2) end)
    local no, err = db:prepare("SELECT nonsense FROM")
    assert.is_nil(no)
    assert.matches("sqlite", err)
    db:close()
    assert.has_error(function() ins:run(1) end)
    ins:close()
  end)
end)
