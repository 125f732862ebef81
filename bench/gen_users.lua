-- gen_users.lua: writes N generated, valid users to stdout as CSV, NDJSON or a JSON array, for
-- benchmarks and kill -9 / resume tests. Deterministic (its own LCG, identical under Lua 5.4 and
-- LuaJIT), streaming (constant memory whatever N), and every row has a unique email and
-- external_id (both derived from the row number).
--
-- usage: lua5.4 bench/gen_users.lua N [csv|ndjson|json] > users.csv

local N = tonumber(arg[1] or "")
local fmt = arg[2] or "csv"
if not N or N < 0 or N % 1 ~= 0 or not (fmt == "csv" or fmt == "ndjson" or fmt == "json") then
  io.stderr:write("usage: gen_users.lua N [csv|ndjson|json]\n")
  os.exit(2)
end

local format, concat, floor = string.format, table.concat, math.floor
local out = io.stdout

-- Park-Miller minimal standard generator: every product stays below 2^53, so Lua 5.4 integers
-- and LuaJIT doubles compute the same sequence.
local seed = 20240601
local function rand(n)
  seed = (seed * 48271) % 2147483647
  return seed % n + 1
end

-- {display name, ascii for the email}; no commas or quotes, so rows stay simple CSV
local FIRST = {
  {"Ana", "ana"}, {"José", "jose"}, {"Zoë", "zoe"}, {"François", "francois"},
  {"Björn", "bjorn"}, {"Łukasz", "lukasz"}, {"Aiko", "aiko"}, {"Wei", "wei"},
  {"Olumide", "olumide"}, {"Priya", "priya"}, {"Mateo", "mateo"}, {"Sofía", "sofia"},
  {"Liam", "liam"}, {"Emma", "emma"}, {"Noah", "noah"}, {"Chloé", "chloe"},
  {"Søren", "soren"}, {"Ayşe", "ayse"}, {"Minh", "minh"}, {"Fatima", "fatima"},
  {"Ivan", "ivan"}, {"Grace", "grace"}, {"Kwame", "kwame"}, {"Hana", "hana"},
}
local LAST = {
  {"García", "garcia"}, {"Müller", "muller"}, {"Dubois", "dubois"}, {"Nowak", "nowak"},
  {"Tanaka", "tanaka"}, {"Chen", "chen"}, {"Okafor", "okafor"}, {"Sharma", "sharma"},
  {"Rossi", "rossi"}, {"Smith", "smith"}, {"Johansson", "johansson"}, {"Yılmaz", "yilmaz"},
  {"Nguyen", "nguyen"}, {"Kowalski", "kowalski"}, {"O'Brien", "obrien"}, {"Silva", "silva"},
  {"Petrov", "petrov"}, {"Kim", "kim"}, {"Mensah", "mensah"}, {"Novak", "novak"},
}
local ORGS = {
  "Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Industries", "Wayne Enterprises",
  "Hooli", "Vandelay Imports", "Soylent Foods", "Tyrell Systems", "Cyberdyne", "Wonka Sweets",
  "Aperture Labs", "Black Mesa", "Gringotts Bank", "Oceanic Air", "Monarch Solutions",
  "Nakatomi Trading", "Massive Dynamic", "Pied Piper",
}
local DEPTS = {"Engineering", "Sales", "Support", "Finance", "HR", "Legal", "Marketing",
               "Operations", "Research", "Logistics"}
local TAGS = {"vip", "onboarding", "remote", "emea", "apac", "amer", "contractor", "manager"}

local function row(i)
  local f, l = FIRST[rand(#FIRST)], LAST[rand(#LAST)]
  local t1, t2 = TAGS[rand(#TAGS)], TAGS[rand(#TAGS)]
  local tags = t1 == t2 and {t1} or {t1, t2}
  return {
    name = f[1] .. " " .. l[1],
    email = format("%s.%s.%d@example.com", f[2], l[2], i),
    external_id = format("EMP-%07d", i),
    role = rand(50) == 1 and "agent" or "end-user",
    phone = format("+1555%07d", (i * 7919) % 10000000),
    organization = ORGS[rand(#ORGS)],
    tags = tags,
    department = DEPTS[rand(#DEPTS)],
    employee_number = 100000 + i,
    start_date = format("%04d-%02d-%02d", 2000 + rand(25) - 1, rand(12), rand(28)),
  }
end

local function json_string(s)
  -- the generated text has no control characters; quotes and backslashes are all to escape
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

local function json_row(u)
  local tags = {}
  for k, t in ipairs(u.tags) do tags[k] = json_string(t) end
  return format('{"name":%s,"email":%s,"external_id":%s,"role":%s,"phone":%s,' ..
    '"organization":{"name":%s},"tags":[%s],"user_fields":{"department":%s,' ..
    '"employee_number":%d,"start_date":%s}}',
    json_string(u.name), json_string(u.email), json_string(u.external_id), json_string(u.role),
    json_string(u.phone), json_string(u.organization), concat(tags, ","),
    json_string(u.department), u.employee_number, json_string(u.start_date))
end

local function csv_row(u)
  return concat({u.name, u.email, u.external_id, u.role, u.phone, u.organization,
                 concat(u.tags, ";"), u.department, format("%d", u.employee_number),
                 u.start_date}, ",")
end

-- rows are written in batches: one write per row is slow, one string for all of them is not
-- constant memory
local batch, nb = {}, 0
local function emit(s)
  nb = nb + 1
  batch[nb] = s
  if nb == 1000 then
    out:write(concat(batch, "", 1, nb))
    nb = 0
  end
end

if fmt == "csv" then
  emit("name,email,external_id,role,phone,organization,tags,user_fields.department," ..
       "user_fields.employee_number,user_fields.start_date\n")
elseif fmt == "json" then
  emit("[\n")
end
for i = 1, floor(N) do
  local u = row(i)
  if fmt == "csv" then
    emit(csv_row(u) .. "\n")
  elseif fmt == "ndjson" then
    emit(json_row(u) .. "\n")
  else
    emit(json_row(u) .. (i < N and ",\n" or "\n"))
  end
end
if fmt == "json" then emit("]\n") end
out:write(concat(batch, "", 1, nb))
out:flush()
