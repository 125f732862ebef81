-- upsert_module.lua: N sequential client:upsert_user calls over the client's one kept-alive
-- connection, each with a distinct email. The user tables are built before the clock starts,
-- as raw_libcurl.c prebuilds its bodies. Lua 5.4 and LuaJIT.
--   lua5.4 bench/upsert_module.lua URL N [PREFIX [FIELDS]]   (prints "requests N seconds S rps R")
-- FIELDS, e.g. "id", asks for only those fields of each user (upsert_user's fields option).
local zendesk = require "zendesk"
local core = require "zendesk.core"

local url, n, prefix = arg[1], tonumber(arg[2] or ""), arg[3] or "mod"
local opts
if arg[4] and arg[4] ~= "" then
  opts = { fields = {} }
  for f in arg[4]:gmatch("[^,]+") do opts.fields[#opts.fields + 1] = f end
end
if not url or not n or n < 1 then
  io.stderr:write("usage: upsert_module.lua URL N [PREFIX [FIELDS]]\n")
  os.exit(2)
end

local client = assert(zendesk.new{ url = url, email = "admin@example.com", token = "stand-in-token" })
local users = {}
for i = 1, n do
  users[i] = { email = string.format("%s-%d@example.com", prefix, i), name = "Bench User " .. i }
end

local failed = 0
local t0 = core.now()
for i = 1, n do
  local user, err = client:upsert_user(users[i], opts)
  if not user then
    failed = failed + 1
    if failed == 1 then io.stderr:write("upsert_module: request ", i, ": ", tostring(err), "\n") end
  end
end
local t1 = core.now()
client:close()
io.write(string.format("requests %d seconds %.6f rps %.1f failed %d\n", n, t1 - t0, n / (t1 - t0), failed))
os.exit(failed == 0 and 0 or 1)
