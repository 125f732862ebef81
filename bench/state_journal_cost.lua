-- bench/state_journal_cost.lua [BATCHES] [DIR]: the journal decision of issue 16, by cost. For
-- BATCHES batches of 100 rows, the durable writes one batch costs today (the journal: batch
-- record, fsync, job record, done record with 100 outcomes, fsync), the same records as rows of
-- an SQLite table committed at the same points (synchronous FULL, WAL: what moving the journal
-- into the state's database would cost), and what the state adds beside the journal (pending
-- rows committed before the submission, the confirmed rows committed after; synchronous NORMAL).
local journal = require "zendesk.journal"
local sqlite = require "zendesk.sqlite"
local state = require "zendesk.state"
local core = require "zendesk.core"

local B = tonumber(arg[1]) or 300
local dir = arg[2] or os.getenv("TMPDIR") or "/tmp"
local now = core.now

local function rm(p) for _, s in ipairs{ "", "-wal", "-shm" } do os.remove(p .. s) end end

local function outcomes(b)
  local out = {}
  for i = 1, 100 do
    local r = (b - 1) * 100 + i
    out[i] = journal.pack{ row = r, outcome = "created", id = 360000000000 + r,
                           email = ("user.%d@example.com"):format(r), external_id = ("EMP-%07d"):format(r) }
  end
  return out
end

local function bench_journal()
  local p = dir .. "/cost.journal"
  os.remove(p)
  local j = assert(journal.create(p, { time = os.time(), source = { kind = "file", path = "x.csv" },
                                      batch_size = 100 }))
  local t0 = now()
  for b = 1, B do
    assert(j:write{ t = "batch", b = b, rows = { { (b - 1) * 100 + 1, b * 100 } }, try = 1 })
    assert(j:sync())
    assert(j:write{ t = "job", b = b, id = "V3-" .. b, at = os.time() })
    assert(j:write{ t = "done", b = b, id = "V3-" .. b, out = outcomes(b) })
    assert(j:sync())
  end
  local t = now() - t0
  j:close()
  os.remove(p)
  return t
end

local function bench_sqlite_journal()
  local p = dir .. "/cost-journal.db"
  rm(p)
  local db = assert(sqlite.open(p))
  assert(db:exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
    .. "CREATE TABLE journal(n INTEGER PRIMARY KEY, t TEXT, b INTEGER, data TEXT)"))
  local ins = assert(db:prepare("INSERT INTO journal(t, b, data) VALUES (?, ?, ?)"))
  local enc = core.encode
  local t0 = now()
  for b = 1, B do
    assert(db:exec("BEGIN"))
    assert(ins:run("batch", b, enc{ { (b - 1) * 100 + 1, b * 100 } }))
    assert(db:exec("COMMIT"))
    assert(db:exec("BEGIN"))
    assert(ins:run("job", b, "V3-" .. b))
    assert(ins:run("done", b, enc(outcomes(b))))
    assert(db:exec("COMMIT"))
  end
  local t = now() - t0
  ins:close()
  db:close()
  rm(p)
  return t
end

local function bench_state()
  local p = dir .. "/cost.state"
  rm(p)
  local st = assert(state.open(p, { url = "https://bench.zendesk.com" }))
  st:start_run(false)
  local t0 = now()
  for b = 1, B do
    for i = 1, 100 do
      local r = (b - 1) * 100 + i
      st:pend(r, ("x:emp-%07d"):format(r), "0123456789abcdef", false)
    end
    assert(st:commit())
    for i = 1, 100 do st:confirm((b - 1) * 100 + i, 360000000000 + i) end
    assert(st:commit())
  end
  local t = now() - t0
  st:close()
  rm(p)
  return t
end

print("| per batch of 100 rows | us per batch | us per row |")
print("|---|---:|---:|")
for _, c in ipairs{ { "journal file (today): 3 records, 2 fsyncs", bench_journal },
                    { "the same records in SQLite (WAL, synchronous FULL), 2 commits", bench_sqlite_journal },
                    { "the state beside the journal: pending + confirmed, 2 commits (NORMAL)", bench_state } } do
  local t = c[2]()
  print(("| %s | %.0f | %.1f |"):format(c[1], t / B * 1e6, t / B / 100 * 1e6))
end
