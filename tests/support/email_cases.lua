-- What core.valid_email (src/email.c) must accept and refuse, for tests/core_email_spec.lua
-- (Lua 5.4) and tests/core_email_jit.lua (LuaJIT): a table of addresses, the Lua check the C
-- one replaced (the reference), and a generator of strings to compare the two on.
local M = {}

-- The Lua implementation of zendesk.users.valid_email until the check moved to C, unchanged.
-- %s and %w are ASCII here (Lua 5.4 in the C locale, LuaJIT always).
function M.reference(s)
  if type(s) ~= "string" or #s > 254 then return false end
  local lp, domain = s:match("^([^%s@\"<>,;:]+)@([^%s@\"<>,;:]+)$")
  if not lp or #lp > 64 then return false end
  if lp:find("^%.") or lp:find("%.$") or lp:find("%.%.") then return false end
  if not domain:find("%.") or domain:find("%.%.") or domain:find("^[.-]") or domain:find("[.-]$") then
    return false
  end
  for label in domain:gmatch("[^.]+") do
    if label:find("^%-") or label:find("%-$") or not label:find("^[%w%-\128-\255]+$") then
      return false
    end
  end
  return true
end

local function rep(c, n) return string.rep(c, n) end
-- an address of exactly n bytes (n >= 70): 64-byte local part, labels of up to 63 bytes
local function address_of(n)
  local domain = {}
  local left = n - 65
  while left > 0 do
    local l = math.min(63, left)
    if left - l == 1 then l = l - 2 end   -- keep the last label at least 1 byte after its dot
    domain[#domain + 1] = rep("d", l)
    left = left - l - 1
  end
  return rep("a", 64) .. "@" .. table.concat(domain, ".")
end
M.address_of = address_of

M.accepted = {
  "a@example.com", "first.last+tag@sub.example.co.uk", "zoë@exämple.de", "a@b.c", "x@1.2",
  "a.b.c@d.e", "!#$%&'*+/=?^_`{|}~-@example.com", "-a-@b.c", "a(b)@c.d", "a[b]@c.d", "a\\b@c.d",
  "a@xn--bcher-kva.example", "a@a-b.c-d", "a@b--c.d", "A@EXAMPLE.COM", "a@b.c0", "a@0.0",
  "a\0b@example.com", "\0@b.c", "a\1@b.c", "a\127@b.c", "\128@b.c", "\255\254@b.c",
  "a@\200\201.com", "a@b.\255", "a@\128-\128.b",
  rep("a", 64) .. "@example.com", address_of(254), address_of(200),
}

M.refused = {
  "", "a", "@", "a@", "@b.c", "a@b", "a@b.", "a@.", "a@@b.com", "a@b@c.com", "a@b.c@",
  "a b@c.com", "a\t@b.c", "a\n@b.c", "a\v@b.c", "a\f@b.c", "a\r@b.c", "\na@b.c", "a@b.c\n",
  " a@b.c", "a@b.c ", '"a"@b.c', "a<@b.c", "a>@b.c", "a,b@c.d", "a;b@c.d", "a:b@c.d", "<a@b.c>",
  ".a@b.com", "a.@b.com", "a..b@c.com", ".@b.c", "a@b..com", "a@.b.com", "a@b.com.",
  "a@-b.com", "a@b-.com", "a@b.-com", "a@b.com-", "a@-.b", "a@b.-", "a@b_c.com", "a@b\0.com",
  "a@b.c\0", "a@b c.com", "a@b.c:80", "a@b.c/", "a@b.c\127", "a@[1.2.3.4]", "a@b,c.d",
  rep("a", 65) .. "@example.com", address_of(255), address_of(300),
}

-- not strings: always false (a number is not coerced)
M.not_strings = { 1, 0, 1.5, true, false, {}, print }

-- bytes the generator draws from: what the rules look at, and a few that they do not
local ALPHABET = {
  "a", "b", "z", "A", "Z", "0", "9", ".", ".", "-", "-", "@", "@", '"', "<", ">", ",", ";", ":",
  " ", "\t", "\n", "\v", "\f", "\r", "\0", "\1", "_", "+", "\127", "\128", "\195", "\169", "\255",
}
-- bytes of plausible addresses: mostly what is fine, now and then a '.' or a '-'
local LOCAL_BYTES, LABEL_BYTES = { "." }, { "-" }
for c in ("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789\195\169"):gmatch(".") do
  LOCAL_BYTES[#LOCAL_BYTES + 1] = c
  LABEL_BYTES[#LABEL_BYTES + 1] = c
end
LOCAL_BYTES[#LOCAL_BYTES + 1] = "+"

local function pick(t, rnd) return t[rnd(#t)] end

local function random_string(rnd, n, alphabet)
  local b = {}
  for i = 1, n do b[i] = pick(alphabet, rnd) end
  return table.concat(b)
end

-- a length near one of the limits (64 for the local part, 254 for the whole), or a short one
local function some_length(rnd)
  local r = rnd(4)
  if r == 1 then return rnd(0, 12) end
  if r == 2 then return rnd(60, 68) end
  if r == 3 then return rnd(180, 190) end
  return rnd(250, 258)
end

-- a plausible address: a local part, '@', dotted labels, of roughly total bytes
local function plausible(rnd, lp_len, total)
  local lp = random_string(rnd, lp_len, rnd(8) == 1 and ALPHABET or LOCAL_BYTES)
  local labels, left = {}, math.max(3, total - lp_len - 1)
  while left > 0 do
    local l = math.min(left, total < 100 and rnd(1, 12) or rnd(20, 63))
    labels[#labels + 1] = random_string(rnd, l, rnd(16) == 1 and ALPHABET or LABEL_BYTES)
    left = left - l - 1
  end
  return lp .. "@" .. table.concat(labels, ".")
end

local function mutate(rnd, s)
  for _ = 1, rnd(0, 2) do
    local i, c = rnd(1, #s + 1), pick(ALPHABET, rnd)
    local op = rnd(3)
    if op == 1 then s = s:sub(1, i - 1) .. c .. s:sub(i)                      -- insert
    elseif op == 2 then s = s:sub(1, i - 1) .. c .. s:sub(i + 1)              -- replace
    else s = s:sub(1, i - 1) .. s:sub(i + 1) end                               -- delete
  end
  return s
end

-- count strings from a fixed seed (math.random is seeded; the sequence differs between VMs)
function M.generate(count, seed)
  math.randomseed(seed)
  local rnd = math.random
  local out = {}
  for i = 1, count do
    local kind = i % 4
    local s
    if kind == 0 then
      s = random_string(rnd, some_length(rnd), ALPHABET)
    elseif kind == 1 then
      local total = some_length(rnd)
      s = plausible(rnd, rnd(0, math.min(68, math.max(1, total - 4))), total)
    else
      local lp = rnd(2) == 1 and rnd(1, 10) or rnd(60, 68)
      s = mutate(rnd, plausible(rnd, lp, rnd(2) == 1 and rnd(lp + 4, lp + 30) or rnd(248, 258)))
    end
    out[i] = s
  end
  return out
end

-- every byte value at each place the rules treat apart: first, middle and last byte of the local
-- part and of a label (first and last label), next to a dot, next to the '@'
function M.byte_sweep()
  local out = {}
  for b = 0, 255 do
    local c = string.char(b)
    for _, shape in ipairs{ "%sab@cd.ef", "a%sb@cd.ef", "ab%s@cd.ef", "a.%sb@cd.ef", "a%s.b@cd.ef",
                            "ab@%scd.ef", "ab@c%sd.ef", "ab@cd%s.ef", "ab@cd.%sef", "ab@cd.e%sf",
                            "ab@cd.ef%s", "ab%scd.ef", "%s", "a@b.%s", "a@%s.b" } do
      out[#out + 1] = (shape:gsub("%%s", c == "%" and "%%" or c))
    end
  end
  return out
end

-- runs check on each string of list against the reference: how many the reference accepts,
-- and "" when they all agree, else the number of disagreements and the first five
function M.compare(check, list)
  local accepted, n, bad = 0, 0, {}
  for _, s in ipairs(list) do
    local want, got = M.reference(s), check(s)
    if want then accepted = accepted + 1 end
    if got ~= want then
      n = n + 1
      if n <= 5 then bad[n] = M.show(s) .. ": reference " .. tostring(want) .. ", C " .. tostring(got) end
    end
  end
  return accepted, n == 0 and "" or (n .. " of " .. #list .. " disagree:\n" .. table.concat(bad, "\n"))
end

-- quotes a string so that a failure message shows every byte
function M.show(s)
  if type(s) ~= "string" then return tostring(s) end
  return (string.format("%q", s):gsub("\n", "n"))
end

return M
