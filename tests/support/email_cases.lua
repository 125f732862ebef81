-- What core.valid_email (src/email.c) must accept and refuse, for tests/unit/core_email_spec.lua
-- (run under Lua 5.4 and LuaJIT): a table of addresses, the rules written out
-- from the RFCs as a small grammar (the oracle), and a generator of strings to compare the C
-- check with it on. The expectations come from the rules, not from any earlier implementation.
--
-- The rules: what can never be delivered, as far as Zendesk goes (it has the last word; its
-- recorded 422s "Email: badmail is not properly formatted" and "error@example.com_ is not
-- properly formatted" are refused here too):
--   - RFC 5321 4.5.3.1: at most 254 bytes in all (a path is 256 with its <>), 64 before the '@';
--   - RFC 5321 4.1.2 Mailbox = Local-part "@" Domain, the local part a Dot-string: atoms of
--     RFC 5322 atext (ALPHA DIGIT and !#$%&'*+-/=?^_`{|}~) joined by single dots, plus UTF-8
--     bytes (>= 0x80, RFC 6531); no quoted strings, comments or address literals (Zendesk
--     takes none), so no space, control byte (NUL included), "(),:;<>@[\] or DEL;
--   - RFC 5321 Domain: at least two dot-separated labels (Zendesk wants a dot), each 1 to 63
--     bytes (RFC 1035) of letters, digits, '-' and UTF-8 bytes (IDN U-labels), neither
--     starting nor ending with '-'.
local M = {}

local function byte_set(chars)
  local set = {}
  for i = 1, #chars do set[chars:byte(i)] = true end
  return set
end
local ALNUM = byte_set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
local ATEXT_EXTRA = byte_set("!#$%&'*+-/=?^_`{|}~")

local function atext(b) return ALNUM[b] or ATEXT_EXTRA[b] or b >= 0x80 end
local function ldh(b) return ALNUM[b] or b == 45 or b >= 0x80 end   -- 45 is '-'

-- splits s at every byte equal to sep, keeping empty pieces
local function split(s, sep)
  local parts, from = {}, 1
  while true do
    local i = s:find(sep, from, true)
    if not i then parts[#parts + 1] = s:sub(from) return parts end
    parts[#parts + 1] = s:sub(from, i - 1)
    from = i + 1
  end
end

local function all(s, ok)
  for i = 1, #s do
    if not ok(s:byte(i)) then return false end
  end
  return true
end

-- the oracle: true when s satisfies the rules above
function M.rules(s)
  if type(s) ~= "string" or #s > 254 then return false end
  local halves = split(s, "@")
  if #halves ~= 2 then return false end
  local lp, domain = halves[1], halves[2]
  if #lp < 1 or #lp > 64 then return false end
  for _, atom in ipairs(split(lp, ".")) do
    if #atom == 0 or not all(atom, atext) then return false end
  end
  local labels = split(domain, ".")
  if #labels < 2 then return false end
  for _, label in ipairs(labels) do
    if #label < 1 or #label > 63 or not all(label, ldh) then return false end
    if label:sub(1, 1) == "-" or label:sub(-1) == "-" then return false end
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
  "a.b.c@d.e", "!#$%&'*+/=?^_`{|}~-@example.com", "-a-@b.c", "o'brien@example.ie", "a/b=c?@d.e",
  "a@xn--bcher-kva.example", "a@a-b.c-d", "a@b--c.d", "A@EXAMPLE.COM", "a@b.c0", "a@0.0",
  "\128@b.c", "\255\254@b.c", "a@\200\201.com", "a@b.\255", "a@\128-\128.b",
  rep("a", 64) .. "@example.com", address_of(254), address_of(200),
  "a@" .. rep("d", 63) .. ".com", "a@b." .. rep("c", 63),
}

-- each breaks one rule; the comment says which
M.refused = {
  -- shape: one '@', something on each side, a dot in the domain (the recorded "badmail")
  "", "a", "@", "a@", "@b.c", "a@b", "a@b.", "a@.", "a@@b.com", "a@b@c.com", "a@b.c@", "badmail",
  -- local part: no space, control byte, DEL or special outside quotes; quotes are not taken
  "a b@c.com", "a\t@b.c", "a\n@b.c", "a\v@b.c", "a\f@b.c", "a\r@b.c", "\na@b.c", " a@b.c",
  "a\0b@example.com", "\0@b.c", "a\1@b.c", "a\31@b.c", "a\127@b.c",
  '"a"@b.c', "a<@b.c", "a>@b.c", "a,b@c.d", "a;b@c.d", "a:b@c.d", "<a@b.c>",
  "a(b)@c.d", "(c)a@b.c", "a[b]@c.d", "a\\b@c.d", "a]@b.c",
  -- local part: dots only between atoms
  ".a@b.com", "a.@b.com", "a..b@c.com", ".@b.c",
  -- domain: labels of letters, digits, '-' (not at either end), 1 to 63 bytes
  "a@b..com", "a@.b.com", "a@b.com.", "a@-b.com", "a@b-.com", "a@b.-com", "a@b.com-", "a@-.b", "a@b.-",
  "a@b_c.com", "error@example.com_", "a@b\0.com", "a@b.c\0", "a@b c.com", "a@b.c:80", "a@b.c/",
  "a@b.c\127", "a@[1.2.3.4]", "a@b,c.d", "a@b.c\n", "a@b.c ",
  "a@" .. rep("d", 64) .. ".com", "a@b." .. rep("c", 64),
  -- lengths
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

-- runs check on each string of list against the rules: how many the rules accept, and ""
-- when they all agree, else the number of disagreements and the first five
function M.compare(check, list)
  local accepted, n, bad = 0, 0, {}
  for _, s in ipairs(list) do
    local want, got = M.rules(s), check(s)
    if want then accepted = accepted + 1 end
    if got ~= want then
      n = n + 1
      if n <= 5 then bad[n] = M.show(s) .. ": rules " .. tostring(want) .. ", C " .. tostring(got) end
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
