-- peer_luacurl.lua: N sequential create_or_update upserts written by hand with Debian's lua-curl
-- (one easy handle, so one kept-alive connection) and lua-cjson under Lua 5.1: encode the user,
-- POST it with Basic auth, read the status line and the whole body, decode the answer. Users are
-- built before the clock starts, as the module's loop does.
--   lua5.1 bench/peer_luacurl.lua URL N [PREFIX]   (prints "requests N seconds S rps R")
local curl = require "curl"
local cjson = require "cjson"

local url, n, prefix = arg[1], tonumber(arg[2] or ""), arg[3] or "lc"
if not url or not n or n < 1 then
  io.stderr:write("usage: peer_luacurl.lua URL N [PREFIX]\n")
  os.exit(2)
end

-- Lua 5.1 has no monotonic clock; `date +%s.%N` brackets the loop (one call each side).
local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

local e = curl.easy_init()
e:setopt(curl.OPT_URL, url .. "/api/v2/users/create_or_update.json")
e:setopt(curl.OPT_HTTPHEADER, { "Accept: application/json", "Content-Type: application/json", "Expect:" })
e:setopt(curl.OPT_HTTPAUTH, curl.AUTH_BASIC)
e:setopt(curl.OPT_USERPWD, "admin@example.com/token:stand-in-token")
e:setopt(curl.OPT_ACCEPT_ENCODING, "")
e:setopt(curl.OPT_USERAGENT, "peer-luacurl/" .. curl._VERSION)
e:setopt(curl.OPT_NOSIGNAL, 1)

local chunks, nchunks = {}, 0
local status
e:setopt(curl.OPT_WRITEFUNCTION, function(s)
  nchunks = nchunks + 1
  chunks[nchunks] = s
  return #s
end)
e:setopt(curl.OPT_HEADERFUNCTION, function(s)
  local code = s:match("^HTTP/%S+ (%d%d%d)")
  if code then status = tonumber(code) end
  return #s
end)

local users = {}
for i = 1, n do
  users[i] = { user = { email = string.format("%s-%d@example.com", prefix, i), name = "Bench User " .. i } }
end

local failed = 0
local t0 = now()
for i = 1, n do
  nchunks, status = 0, nil
  e:setopt(curl.OPT_POSTFIELDS, cjson.encode(users[i]))
  local ok, err = e:perform()
  local user
  if ok == 0 and (status == 200 or status == 201) then
    local decoded = cjson.decode(table.concat(chunks, "", 1, nchunks))
    user = decoded.user
  end
  if not (user and user.id) then
    failed = failed + 1
    if failed == 1 then
      io.stderr:write("peer_luacurl: request ", i, ": ", tostring(err or ("HTTP " .. tostring(status))), "\n")
    end
  end
end
local t1 = now()
io.write(string.format("requests %d seconds %.6f rps %.1f failed %d\n", n, t1 - t0, n / (t1 - t0), failed))
os.exit(failed == 0 and 0 or 1)
