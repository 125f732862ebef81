-- Every fenced code block of README.md is run or checked, so a README that lies fails the tests.
-- By info string:
--   lua             run with lua5.4 against a stand-in this spec starts (ZENDESK_URL, ZENDESK_EMAIL,
--                   ZENDESK_API_TOKEN in the environment), in a scratch directory holding a small
--                   people.csv; a block that makes no `client` of its own gets one made from that
--                   environment (a preamble on its first line, so line numbers stay the README's)
--   sh              run with `bash -e` in a scratch git copy of the checkout (support/scratch.lua),
--                   HOME a scratch directory too, PORT a free port; the copy must stay clean in
--                   `git status` afterwards
--   nginx           a complete nginx.conf: `nginx -t` with a temporary prefix; the Lua of its
--                   *_by_lua_block directives must compile
--   lua fragment    not run; must compile (load)
--   sh fragment     not run (they install packages, run the whole suite, need an account):
--                   `bash -n`; every `make TARGET` named exists (`make -n TARGET`); every
--                   command given as a relative path (tests/run, fuzz/run.sh) is an executable
--                   file of the checkout
--   nginx fragment  not run
--   text            output, not checked
-- Anything else (a bare ``` too) fails: the block would otherwise go unchecked.
local standin = require "support.standin"
local scratch = require "support.scratch"

local ROOT = standin.ROOT
local sh, q = standin.sh, standin.shell_quote
local read_file, write_file = standin.read_file, standin.write_file

-- Fenced blocks: {info =, code =, line = line of the opening fence}.
local function fenced_blocks(text)
  local blocks, open = {}, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if open then
      if line:match("^%s*" .. open.fence .. "%s*$") then
        blocks[#blocks + 1] = { info = open.info, code = table.concat(open.lines, "\n") .. "\n", line = open.line }
        open = nil
      else
        open.lines[#open.lines + 1] = line
      end
    else
      local fence, info = line:match("^ ? ? ?(```+)(.*)$")
      if not fence then fence, info = line:match("^ ? ? ?(~~~+)(.*)$") end
      if fence then
        open = { fence = fence, info = info:match("^%s*(.-)%s*$"), lines = {}, line = n }
      end
    end
  end
  assert(not open, "README.md: the code block opened at line " .. (open and open.line or 0) .. " is never closed")
  return blocks
end

local function tmpdir()
  return sh("mktemp -d /tmp/zd-readme.XXXXXX"):match("^%s*(.-)%s*$")
end

local function free_port()
  for _ = 1, 50 do
    local p = math.random(20000, 60000)
    if select(2, sh("(exec 3<>/dev/tcp/127.0.0.1/" .. p .. ") 2>/dev/null")) ~= 0 then return p end
  end
  error("no free port")
end

local PEOPLE_CSV = "name,email,external_id,tags\n"
  .. "Ann Example,ann@example.com,hr-1,vip;hybrid\n"
  .. "\"Bo, Jr.\",bo@example.com,hr-2,\n"
  .. "Not An Address,not-an-address,hr-3,\n"

local PREAMBLE = 'local zendesk = require "zendesk"; local client = zendesk.new{ url = os.getenv("ZENDESK_URL"),'
  .. ' email = os.getenv("ZENDESK_EMAIL"), token = os.getenv("ZENDESK_API_TOKEN") }; '

local function where(b) return "README.md:" .. b.line .. " (```" .. b.info .. ")" end

local s   -- the stand-in of the Lua blocks

local function run_lua(b)
  local dir = tmpdir()
  write_file(dir .. "/people.csv", PEOPLE_CSV)
  local code = b.code
  if not code:find("local client%s*=") then code = PREAMBLE .. code end
  write_file(dir .. "/block.lua", code)
  s:reset()
  local out, rc = sh("cd " .. q(dir) .. " && env ZENDESK_URL=" .. q(s.url) .. " ZENDESK_EMAIL=" .. q(standin.EMAIL)
    .. " ZENDESK_API_TOKEN=" .. q(standin.TOKEN)
    .. " LUA_PATH=" .. q(ROOT .. "lua/?.lua;" .. ROOT .. "lua/?/init.lua;;")
    .. " LUA_CPATH=" .. q(ROOT .. "build/lua5.4/?.so;;")
    .. " lua5.4 block.lua 2>&1")
  sh("rm -rf " .. q(dir))
  -- name the README's line, not the block file's
  out = out:gsub("block%.lua:(%d+):", function(n) return "README.md:" .. (b.line + tonumber(n)) .. ":" end)
  assert(rc == 0, where(b) .. " failed (exit " .. rc .. "):\n" .. out)
  return out
end

local function run_sh(b)
  -- a README block that runs the tests would run this spec again, and its sh blocks again...
  assert(not os.getenv("ZD_README_BLOCK"), where(b) .. ": not run: this is a test run started by a README"
    .. " block (ZD_README_BLOCK=" .. tostring(os.getenv("ZD_README_BLOCK")) .. "); a block that runs the"
    .. " tests (make test) must be an `sh fragment`")
  local dir = scratch.copy()
  local home = tmpdir()
  write_file(home .. "/block.sh", b.code)
  local out, rc = sh("cd " .. q(dir) .. " && env -i PATH=" .. q(os.getenv("PATH")) .. " HOME=" .. q(home)
    .. " PORT=" .. free_port() .. " ZD_README_BLOCK=" .. b.line .. " timeout 900 bash -e " .. q(home .. "/block.sh") .. " 2>&1")
  local status = scratch.status(dir)
  -- whatever the block left running (it failed half-way): its nginx, its stand-ins
  local pid = (read_file(dir .. "/logs/nginx.pid") or ""):match("%d+")
  if pid then sh("kill -TERM " .. pid .. " 2>/dev/null") end
  sh(q(dir .. "/tests/fake_zendesk/ctl") .. " stop --all >/dev/null 2>&1")
  scratch.remove(dir)
  sh("rm -rf " .. q(home))
  assert(rc == 0, where(b) .. " failed (exit " .. rc .. "):\n" .. out)
  assert(status == "", where(b) .. " left the checkout unclean (git status):\n" .. status)
  return out
end

-- The Lua code of the *_by_lua_block directives of an nginx config: {directive, code}.
local function lua_blocks(conf)
  local found = {}
  local pos = 1
  while true do
    local s0, e0, directive = conf:find("([%w_]+_by_lua_block)%s*{", pos)
    if not s0 then break end
    local depth, i = 1, e0 + 1
    while depth > 0 and i <= #conf do
      local c = conf:sub(i, i)
      if c == "{" then depth = depth + 1 elseif c == "}" then depth = depth - 1 end
      i = i + 1
    end
    found[#found + 1] = { directive = directive, code = conf:sub(e0 + 1, i - 2) }
    pos = i
  end
  return found
end

local function check_nginx(b)
  local dir = tmpdir()
  sh("mkdir -p " .. q(dir .. "/logs"))
  write_file(dir .. "/nginx.conf", b.code)
  local out, rc = sh("nginx -t -p " .. q(dir .. "/") .. " -c " .. q(dir .. "/nginx.conf") .. " -e " .. q(dir .. "/error.log") .. " 2>&1")
  sh("rm -rf " .. q(dir))
  assert(rc == 0, where(b) .. ": nginx -t fails:\n" .. out)
  for _, lb in ipairs(lua_blocks(b.code)) do
    local f, err = load(lb.code, "=" .. where(b) .. " " .. lb.directive)
    assert(f, err)
  end
end

-- Commands of a shell fragment: continuation lines joined, split on ; && || |, comments dropped.
local function commands(code)
  local list = {}
  local text = code:gsub("\\\n", " ")
  for line in text:gmatch("[^\n]+") do
    line = line:gsub("%s#.*$", ""):gsub("^#.*$", "")
    for cmd in (line .. ";"):gmatch("(.-)[;&|]+") do
      local words = {}
      for w in cmd:gmatch("%S+") do words[#words + 1] = w end
      -- drop sudo, eval and leading VAR=value assignments
      while words[1] and (words[1] == "sudo" or words[1]:match("^[%a_][%w_]*=")) do table.remove(words, 1) end
      if words[1] then list[#list + 1] = words end
    end
  end
  return list
end

local function check_sh_fragment(b)
  local dir = tmpdir()
  write_file(dir .. "/block.sh", b.code)
  local out, rc = sh("bash -n " .. q(dir .. "/block.sh") .. " 2>&1")
  sh("rm -rf " .. q(dir))
  assert(rc == 0, where(b) .. ": not valid shell:\n" .. out)
  local checked = 0
  for _, words in ipairs(commands(b.code)) do
    local cmd = words[1]
    if cmd == "make" then
      local targets = {}
      for i = 2, #words do
        if not words[i]:match("^%-") and not words[i]:find("=", 1, true) then targets[#targets + 1] = words[i] end
      end
      if #targets == 0 then targets[1] = "" end
      for _, t in ipairs(targets) do
        -- make -n prints what it would do (recursive $(MAKE) lines are dry too); only its status counts
        local mout, mrc = sh("make -n -C " .. q(ROOT) .. " " .. t .. " 2>&1 >/dev/null")
        assert(mrc == 0, where(b) .. ": `make " .. t .. "` names no target of the Makefile: " .. mout)
        checked = checked + 1
      end
    elseif cmd:find("/", 1, true) and not cmd:match("^[/$~\"']") then
      assert(select(2, sh("test -f " .. q(ROOT .. cmd) .. " && test -x " .. q(ROOT .. cmd))) == 0,
        where(b) .. ": " .. cmd .. " is not an executable file of the checkout")
      checked = checked + 1
    end
  end
  return checked
end

local README = assert(read_file(ROOT .. "README.md"), "no README.md")
local blocks = fenced_blocks(README)

describe("README.md code blocks", function()
  setup(function()
    s = standin.start{}
  end)
  teardown(function()
    if s then s:stop() end
  end)

  it("are there to check", function()
    local n = 0
    for _, b in ipairs(blocks) do if b.info ~= "text" then n = n + 1 end end
    assert.is_true(n >= 5, "README.md has only " .. n .. " code blocks to check")
  end)

  for _, b in ipairs(blocks) do
    local info = b.info
    if info == "lua" then
      it(where(b) .. " runs against the stand-in", function() run_lua(b) end)
    elseif info == "sh" then
      it(where(b) .. " runs in a scratch copy of the checkout and leaves it clean", function() run_sh(b) end)
    elseif info == "nginx" then
      it(where(b) .. " passes nginx -t", function() check_nginx(b) end)
    elseif info == "lua fragment" then
      it(where(b) .. " compiles", function()
        local f, err = load(b.code, "=" .. where(b))
        assert(f, err)
      end)
    elseif info == "sh fragment" then
      it(where(b) .. " is shell whose make targets and scripts exist", function() check_sh_fragment(b) end)
    elseif info ~= "nginx fragment" and info ~= "text" then
      it(where(b) .. " has an info string the README test understands", function()
        error(where(b) .. ": info string '" .. info .. "' is none of lua, sh, nginx, lua fragment,"
          .. " sh fragment, nginx fragment, text; mark what the block is so that it is run or checked")
      end)
    end
  end
end)

-- the parser itself, on a known text
describe("README block parser", function()
  it("finds each fenced block with its info string and opening line", function()
    local got = fenced_blocks("x\n```lua\nprint(1)\n```\n\n```sh fragment\nmake test\n```\n~~~\nraw\n~~~\n")
    assert.are.same({
      { info = "lua", code = "print(1)\n", line = 2 },
      { info = "sh fragment", code = "make test\n", line = 6 },
      { info = "", code = "raw\n", line = 9 },
    }, got)
  end)
end)
