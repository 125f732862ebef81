-- bench/state_binding.lua: the state store's binding chosen by measurement (issue 16): N keys
-- inserted (one transaction per 100, as the sync commits a transaction per confirmed job), then
-- N lookups, with zendesk.sqlite (the small C binding) and Debian's lua-dbi-sqlite3 (DBI).
-- lua-sql-sqlite3 is not measured: it has no prepared statements (SQL would be built from data).
-- usage: lua bench/state_binding.lua [N] [dir]
local N = tonumber(arg[1]) or 100000
local dir = arg[2] or os.getenv("TMPDIR") or "/tmp"
local clock = os.clock
local results = {}

local function key(i) return string.format("x:emp-%08d", i) end
local HASH = "0123456789abcdef"

local function run_c()
  local sqlite = require "zendesk.sqlite"
  local path = dir .. "/bind_c.db"
  os.remove(path) os.remove(path .. "-wal") os.remove(path .. "-shm")
  local db = assert(sqlite.open(path))
  assert(db:exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE people(key TEXT PRIMARY KEY, "
    .. "id INTEGER, hash TEXT, at INTEGER, run INTEGER, suspended INTEGER) WITHOUT ROWID"))
  local ins = assert(db:prepare("INSERT INTO people VALUES (?, ?, ?, ?, 1, 0)"))
  local sel = assert(db:prepare("SELECT id, hash, suspended FROM people WHERE key = ?"))
  local t0 = clock()
  for b = 0, N - 1, 100 do
    assert(db:exec("BEGIN"))
    for i = b + 1, math.min(N, b + 100) do assert(ins:run(key(i), i, HASH, 1700000000)) end
    assert(db:exec("COMMIT"))
  end
  local t1 = clock()
  -- in one read transaction, as DBI (autocommit off) and the sync (its seen-marks) do
  assert(db:exec("BEGIN"))
  for i = 1, N do local id = sel:run(key(i)) assert(id == i) end
  assert(db:exec("COMMIT"))
  local t2 = clock()
  ins:close() sel:close() db:close()
  return t1 - t0, t2 - t1
end

local function run_dbi()
  local ok, DBI = pcall(require, "DBI")
  if not ok then return nil end
  local path = dir .. "/bind_dbi.db"
  os.remove(path) os.remove(path .. "-wal") os.remove(path .. "-shm")
  local db = assert(DBI.Connect("SQLite3", path))
  db:autocommit(false)
  assert(DBI.Do(db, "CREATE TABLE people(key TEXT PRIMARY KEY, id INTEGER, hash TEXT, at INTEGER, run INTEGER, "
    .. "suspended INTEGER) WITHOUT ROWID"))
  db:commit()
  local ins = assert(db:prepare("INSERT INTO people VALUES (?, ?, ?, ?, 1, 0)"))
  local sel = assert(db:prepare("SELECT id, hash, suspended FROM people WHERE key = ?"))
  local t0 = clock()
  for b = 0, N - 1, 100 do
    for i = b + 1, math.min(N, b + 100) do assert(ins:execute(key(i), i, HASH, 1700000000)) end
    db:commit()
  end
  local t1 = clock()
  for i = 1, N do
    assert(sel:execute(key(i)))
    local row = sel:fetch(false)
    assert(row and row[1] == i)
  end
  local t2 = clock()
  ins:close() sel:close() db:close()
  return t1 - t0, t2 - t1
end

local vm = jit and jit.version or _VERSION
for _, c in ipairs{ { "zendesk.sqlite (C, src/sqlite.c)", run_c }, { "lua-dbi-sqlite3 (DBI)", run_dbi } } do
  local ti, tl = c[2]()
  if ti then
    results[#results + 1] = string.format("| %s | %s | %d | %.0f | %.0f |", c[1], vm, N, N / ti, N / tl)
  end
end
print("| binding | VM | keys | inserts/s (txn per 100) | lookups/s |")
print("|---|---|---:|---:|---:|")
for _, l in ipairs(results) do print(l) end
