-- cost_parts.lua: runs one piece of an upsert's client-side work N times, with no network, so
-- callgrind can count its instructions per call (run with N and 2N, subtract, divide by N).
-- Parts: validate (users.validate of a user table), decode (core.decode of a Zendesk user
-- answer), cjson (lua-cjson's decode of the same, which core.decode used until the one-pass
-- decoder replaced it), encode (core.encode of {user = ...}), email (users.valid_email alone),
-- baseline (the loop and the user tables only).
--   valgrind --tool=callgrind lua5.4 bench/cost_parts.lua decode 1000
local core = require "zendesk.core"
local users = require "zendesk.users"

local part, n = arg[1], tonumber(arg[2] or "")
if not part or not n then
  io.stderr:write("usage: cost_parts.lua validate|email|decode|cjson|encode|baseline N\n")
  os.exit(2)
end

-- a create_or_update answer as the stand-in sends it (913 bytes, the shape Zendesk sends)
local ANSWER = '{"user":{"id":36146830593,"url":"http://127.0.0.1:13282/api/v2/users/36146830593.json",' ..
  '"name":"X","email":"x1@example.com","created_at":"2026-11-23T20:33:46Z","updated_at":' ..
  '"2026-11-23T20:33:46Z","time_zone":"America/New_York","iana_time_zone":"America/New_York",' ..
  '"phone":null,"shared_phone_number":null,"photo":null,"locale_id":1,"locale":"en-US",' ..
  '"organization_id":null,"role":"end-user","verified":false,"external_id":null,"tags":[],' ..
  '"alias":null,"active":true,"shared":false,"shared_agent":false,"last_login_at":null,' ..
  '"two_factor_auth_enabled":false,"signature":null,"details":null,"notes":null,"role_type":null,' ..
  '"custom_role_id":null,"moderator":false,"ticket_restriction":"requested",' ..
  '"only_private_comments":false,"restricted_agent":true,"suspended":false,"default_group_id":null,' ..
  '"report_csv":false,"user_fields":{"department":null,"employee_number":null,"level":null,' ..
  '"score":null,"start_date":null,"vip":false}}}'

local list = {}
for i = 1, n do
  list[i] = { email = string.format("part-%d@example.com", i), name = "Bench User " .. i }
end

local cjson_decode = require("cjson").new().decode
local f
if part == "validate" then
  f = function(u) return users.validate(u, "user") end
elseif part == "decode" then
  f = function() return core.decode(ANSWER) end
elseif part == "email" then
  f = function(u) return users.valid_email(u.email) end
elseif part == "cjson" then
  f = function() return cjson_decode(ANSWER) end
elseif part == "encode" then
  f = function(u) return core.encode({ user = u }) end
elseif part == "baseline" then
  f = function(u) return u end
else
  io.stderr:write("cost_parts: unknown part ", part, "\n")
  os.exit(2)
end
for i = 1, n do
  f(list[i])
end
