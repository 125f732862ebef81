-- bench/state_fill.lua FILE.csv STATE URL: a state holding every row of FILE as confirmed (ids
-- 1..N), as a first full run would leave it, without a server: for measuring reading and
-- comparing against a large state (bench/state_compare.sh).
local state = require "zendesk.state"
local sources = require "zendesk.sources"
local input, path, url = arg[1], arg[2], arg[3] or "https://bench.zendesk.com"
for _, suf in ipairs{ "", "-wal", "-shm" } do os.remove(path .. suf) end
local st = assert(state.open(path, { url = url }))
st:start_run(false)
local r = assert(sources.open(input))
local n = 0
while true do
  local row, u = r:next()
  if not row then break end
  if u then
    n = n + 1
    st:pend(row, state.key_of(u), state.hash(u), false)
    st:confirm(row, row)
    if n % 10000 == 0 then assert(st:commit()) end
  end
end
assert(st:commit())
assert(st:close())
print(n)
