#!/usr/bin/env bash
# Seeds the fuzz corpora from the recorded Zendesk traffic in tests/recorded/: every response's
# status line and headers (headers), its body (json_decode), and both together (response).
#   fuzz/make-seeds.sh [DIR]    writes DIR/<target>/seed-*  (default fuzz/corpus-run, git-ignored)
set -eu
cd "$(dirname "$0")/.."
DIR=${1:-fuzz/corpus-run}
REC=${RECORDED:-tests/recorded}
[ -d "$REC" ] || { echo "make-seeds: no $REC (tests/recorded); nothing to seed" >&2; exit 0; }
mkdir -p "$DIR/headers" "$DIR/json_decode" "$DIR/response" "$DIR/json_encode"
lua5.4 - "$REC" "$DIR" <<'LUA'
package.path = "tests/?.lua;" .. package.path
local standin = require "support.standin"
local rec, dir = arg[1], arg[2]
local STATUSES = { 200, 201, 400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504 }
local KEYS = { user = 1, job_status = 2, job_statuses = 3 }
local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end
local n = 0
local p = io.popen("ls " .. standin.shell_quote(rec) .. "/*.json")
for file in p:lines() do
  local f = assert(io.open(file, "rb"))
  local doc = standin.decode(f:read("a"))
  f:close()
  for i, it in ipairs(doc and doc.interactions or {}) do
    local r = it.response
    local head = { "HTTP/1.1 " .. r.status .. " " .. (r.reason or "X") }
    for _, h in ipairs(r.headers or {}) do head[#head + 1] = h[1] .. ": " .. tostring(h[2]) end
    local headers = table.concat(head, "\r\n") .. "\r\n\r\n"
    local body = r.body
    if type(body) == "table" then body = standin.encode(body) elseif type(body) ~= "string" then body = "" end
    local name = file:match("([^/]+)%.json$") .. "-" .. i
    write(dir .. "/headers/seed-" .. name, headers)
    write(dir .. "/json_decode/seed-" .. name, body)
    local sel = 0
    for k, s in ipairs(STATUSES) do if s == r.status then sel = k - 1 end end
    local key = 0
    if type(r.body) == "table" then
      for k, v in pairs(KEYS) do if r.body[k] ~= nil then key = v end end
    end
    write(dir .. "/response/seed-" .. name, string.char(sel, key) .. table.concat(head, "\r\n", 2) .. "\r\n\r\n" .. body)
    n = n + 1
  end
end
p:close()
print("make-seeds: " .. n .. " responses")
LUA
