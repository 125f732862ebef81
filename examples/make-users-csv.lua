-- make-users-csv.lua: writes examples/users.csv, a realistic nightly HR export of 1,000 people
-- (international names, quoted cells, one multi-line note) with a few rows that must fail
-- validation. Deterministic: its own LCG, so Lua 5.4 and LuaJIT write the same bytes.
--
-- usage: lua5.4 examples/make-users-csv.lua > examples/users.csv

local format, concat = string.format, table.concat

local ROWS = 1000

-- Park-Miller minimal standard generator: products stay below 2^53, exact in doubles too.
local seed = 4242
local function rand(n)
  seed = (seed * 48271) % 2147483647
  return seed % n + 1
end
local function pick(t) return t[rand(#t)] end

-- Per culture: given names and family names as {display, ascii for the email}, how a full name
-- is written, and a phone format.
local CULTURES = {
  {first = {{"José", "jose"}, {"María", "maria"}, {"Lucía", "lucia"}, {"Andrés", "andres"}},
   last = {{"Álvarez", "alvarez"}, {"Muñoz", "munoz"}, {"García", "garcia"}, {"Peña", "pena"}},
   phone = "+34 91 %03d %02d %02d"},
  {first = {{"Jürgen", "juergen"}, {"Anna", "anna"}, {"Lena", "lena"}, {"Matthias", "matthias"}},
   last = {{"Müller", "mueller"}, {"Schröder", "schroeder"}, {"Weiß", "weiss"},
           {"Bäcker", "baecker"}},
   phone = "+49 30 %03d%02d%02d"},
  {first = {{"Élodie", "elodie"}, {"François", "francois"}, {"Chloé", "chloe"},
            {"Benoît", "benoit"}},
   last = {{"Lefèvre", "lefevre"}, {"Dubois", "dubois"}, {"Girard", "girard"},
           {"Lemaître", "lemaitre"}},
   phone = "+33 1 %03d %02d %02d"},
  {first = {{"太郎", "taro"}, {"花子", "hanako"}, {"健", "ken"}, {"由美", "yumi"}},
   last = {{"山田", "yamada"}, {"佐藤", "sato"}, {"鈴木", "suzuki"}, {"高橋", "takahashi"}},
   family_first = true, sep = "", phone = "+81 3-%03d-%02d%02d"},
  {first = {{"伟", "wei"}, {"娜", "na"}, {"静", "jing"}, {"强", "qiang"}},
   last = {{"王", "wang"}, {"李", "li"}, {"张", "zhang"}, {"刘", "liu"}},
   family_first = true, sep = "", phone = "+86 10 %03d%02d%02d"},
  {first = {{"민준", "minjun"}, {"서연", "seoyeon"}, {"지호", "jiho"}},
   last = {{"김", "kim"}, {"이", "lee"}, {"박", "park"}},
   family_first = true, sep = "", phone = "+82 2-%03d-%02d%02d"},
  {first = {{"Дмитрий", "dmitry"}, {"Ольга", "olga"}, {"Сергей", "sergey"}},
   last = {{"Иванов", "ivanov"}, {"Смирнова", "smirnova"}, {"Кузнецов", "kuznetsov"}},
   phone = "+7 495 %03d-%02d-%02d"},
  {first = {{"Łukasz", "lukasz"}, {"Agnieszka", "agnieszka"}, {"Paweł", "pawel"}},
   last = {{"Wiśniewski", "wisniewski"}, {"Kowalczyk", "kowalczyk"}, {"Wójcik", "wojcik"}},
   phone = "+48 22 %03d %02d %02d"},
  {first = {{"Ayşe", "ayse"}, {"Mehmet", "mehmet"}, {"Çağla", "cagla"}},
   last = {{"Yılmaz", "yilmaz"}, {"Öztürk", "ozturk"}, {"Şahin", "sahin"}},
   phone = "+90 212 %03d %02d %02d"},
  {first = {{"Søren", "soren"}, {"Åsa", "asa"}, {"Bjørn", "bjorn"}, {"Guðrún", "gudrun"}},
   last = {{"Østergaard", "ostergaard"}, {"Lindqvist", "lindqvist"},
           {"Sigurðardóttir", "sigurdardottir"}},
   phone = "+45 %02d %02d %02d %02d"},
  {first = {{"Siobhán", "siobhan"}, {"Liam", "liam"}, {"Aoife", "aoife"}},
   last = {{"O'Connor", "oconnor"}, {"Ní Bhriain", "nibhriain"}, {"Murphy", "murphy"}},
   phone = "+353 1 %03d %02d%02d"},
  {first = {{"Priya", "priya"}, {"Arjun", "arjun"}, {"Lakshmi", "lakshmi"}},
   last = {{"Raghunathan", "raghunathan"}, {"Iyer", "iyer"}, {"Banerjee", "banerjee"}},
   phone = "+91 80 %03d%02d%02d"},
  {first = {{"Chukwuemeka", "chukwuemeka"}, {"Ngozi", "ngozi"}, {"Kwame", "kwame"}},
   last = {{"Okafor", "okafor"}, {"Adeyemi", "adeyemi"}, {"Mensah", "mensah"}},
   phone = "+234 1 %03d %02d%02d"},
  {first = {{"Nguyễn Thị", "thi"}, {"Trần Văn", "van"}},
   last = {{"Lan", "lan"}, {"Minh", "minh"}, {"Hùng", "hung"}},
   phone = "+84 28 %03d %02d%02d"},
  {first = {{"João", "joao"}, {"Conceição", "conceicao"}, {"Tomás", "tomas"}},
   last = {{"Gonçalves", "goncalves"}, {"Araújo", "araujo"}, {"Simões", "simoes"}},
   phone = "+351 21 %03d %02d%02d"},
  {first = {{"Jiří", "jiri"}, {"Petra", "petra"}, {"Tomáš", "tomas"}},
   last = {{"Dvořák", "dvorak"}, {"Černý", "cerny"}, {"Procházka", "prochazka"}},
   phone = "+420 2 %03d %02d %02d"},
  {first = {{"Zoltán", "zoltan"}, {"Réka", "reka"}},
   last = {{"Kovács", "kovacs"}, {"Szőke", "szoke"}},
   phone = "+36 1 %03d %02d%02d"},
  {first = {{"Νίκος", "nikos"}, {"Ελένη", "eleni"}},
   last = {{"Παπαδόπουλος", "papadopoulos"}, {"Γεωργίου", "georgiou"}},
   phone = "+30 21 %03d %02d%02d"},
  {first = {{"Emily", "emily"}, {"Michael", "michael"}, {"Grace", "grace"}, {"Tyler", "tyler"}},
   last = {{"Johnson", "johnson"}, {"Smith", "smith"}, {"Nakamura-Lee", "nakamuralee"},
           {"Williams", "williams"}},
   phone = "+1 (555) %03d-%02d%02d"},
}

local ORGS = {
  "Acme Corporation", "Globex", "Initech", "Umbrella Health", "Smith, Jones & Partners",
  "Müller & Söhne GmbH", "Société Générale de Logistique", "株式会社山田商事",
  "北京星光科技有限公司", "Hooli", "Vandelay Industries, Inc.", "Tyrell Systems", "Wonka Foods",
  "Aperture Science", "Nordisk Energi A/S", "Oceanic Airlines", "Pied Piper",
  "Stark Industries", "Ōtsuka Trading", "Banco do Atlântico",
}
local DEPTS = {
  "Engineering", "Sales", "Customer Support", "Finance", "People & Culture", "R&D",
  "Legal, Risk & Compliance", "Marketing", "Operations", "Logistics",
}
local TAGS = {"vip", "onboarding", "remote", "hybrid", "emea", "apac", "amer", "contractor",
              "manager", "night-shift"}
local NOTES = {
  "Transferred from the Berlin office, starts Monday",
  'Prefers to be called "Liz"',
  "Badge reissued; old badge revoked",
  "Part-time, 60%",
  "Speaks English, Spanish and Portuguese",
}
local DOMAINS = {"example.com", "example.org", "corp.example.net"}

local HEADER = {"name", "email", "external_id", "role", "phone", "organization", "organization_id",
                "tags", "notes", "user_fields.department", "user_fields.employee_number",
                "user_fields.start_date"}

-- Quotes a cell when CSV needs it (delimiter, quote, line break, or blanks that must survive).
local function cell(v)
  if v:find('[,"\r\n]') or v:find("^%s") or v:find("%s$") then
    return '"' .. v:gsub('"', '""') .. '"'
  end
  return v
end

-- The rows that must fail validation, by row number, and why.
local INVALID = {
  [17] = function(u) u.email = u.email:gsub("@", "@@") end,          -- malformed email
  [123] = function(u) u.email = "not-an-email" end,
  [250] = function(u) u.name = "" end,                               -- missing name
  [488] = function(u) u.name = "" end,
  [512] = function(u) u.role = "superuser" end,                      -- unknown role
  [777] = function(u) u.role = "superuser" end,
  [901] = function(u) u.organization = ""; u.organization_id = "abc" end, -- not an id
}

local used = {}
local out = {concat(HEADER, ",")}
for i = 1, ROWS do
  local c = pick(CULTURES)
  local f, l = pick(c.first), pick(c.last)
  local name = c.family_first and (l[1] .. (c.sep or " ") .. f[1]) or (f[1] .. " " .. l[1])
  local loc = f[2] .. "." .. l[2]
  local email = loc .. "@" .. pick(DOMAINS)
  local k = 2
  while used[email] do                     -- namesakes get a number, as mail systems do
    email = format("%s%d@%s", loc, k, email:match("@(.*)$"))
    k = k + 1
  end
  used[email] = true
  local r = rand(100)
  local u = {
    name = name, email = email, external_id = format("EMP-%05d", i),
    role = r <= 3 and "agent" or (r == 4 and i % 2 == 0) and "admin" or "end-user",
    phone = rand(10) == 1 and "" or format(c.phone, rand(900) + 99, rand(100) - 1, rand(100) - 1,
                                           rand(100) - 1),
    organization = ORGS[rand(#ORGS)], organization_id = "",
    tags = "", notes = "",
    department = DEPTS[rand(#DEPTS)],
    employee_number = format("%d", 10000 + i),
    start_date = format("%04d-%02d-%02d", 1998 + rand(27), rand(12), rand(28)),
  }
  local nt = rand(4) - 1
  local tags, seen = {}, {}
  for _ = 1, nt do
    local t = pick(TAGS)
    if not seen[t] then seen[t] = true; tags[#tags + 1] = t end
  end
  u.tags = concat(tags, ";")
  if rand(12) == 1 then u.notes = pick(NOTES) end
  -- a few people are attached by Zendesk organization id instead of by name
  if i % 97 == 0 then u.organization, u.organization_id = "", format("%d", 36146830000 + i) end
  if i == 333 then u.notes = "Two addresses on file:\nsee the HR system for the current one" end
  if i == 444 then u.name = "  " .. u.name .. "  " end  -- stray blanks that sources trims
  if INVALID[i] then INVALID[i](u) end
  out[#out + 1] = concat({cell(u.name), cell(u.email), u.external_id, u.role, cell(u.phone),
    cell(u.organization), u.organization_id, u.tags, cell(u.notes), cell(u.department),
    u.employee_number, u.start_date}, ",")
end
io.stdout:write(concat(out, "\n"), "\n")
