-- What a new user types from the README, run as written from a clean environment: the setup
-- lines (`make env` for each flavour), a checkout that stays clean after using it (the nginx
-- example, `luarocks make`), and the rockspec's in-tree leftovers removed by `make clean`.
local standin = require "support.standin"
local scratch = require "support.scratch"

local ROOT = standin.ROOT
local sh, q = standin.sh, standin.shell_quote

-- A shell with only PATH and HOME, in the checkout (no LUA_PATH / LUA_CPATH from busted).
local function clean_sh(script)
  return sh("cd " .. q(ROOT) .. " && env -i PATH=" .. q(os.getenv("PATH"))
    .. " HOME=" .. q(os.getenv("HOME") or "/tmp") .. " sh -c " .. q(script) .. " 2>&1")
end

local function have(cmd) return select(2, sh("command -v " .. cmd .. " >/dev/null 2>&1")) == 0 end

describe("make env", function()
  for _, flavour in ipairs({ { lua = "lua5.4", bin = "lua5.4" }, { lua = "luajit", bin = "luajit" } }) do
    it("follows LUA=" .. flavour.lua .. ": the printed paths load the " .. flavour.lua .. " build", function()
      assert(have(flavour.bin), flavour.bin .. " is not installed")
      assert(standin.read_file(ROOT .. "build/" .. flavour.lua .. "/zendesk/core.so"),
        "build/" .. flavour.lua .. " is not built: make build LUA=" .. flavour.lua)
      local probe = [['local z = require "zendesk"; local c = package.searchpath("zendesk.core", package.cpath);]]
        .. [[ print("LOADED " .. type(z.new) .. " " .. c)']]
      local out, code = clean_sh('eval "$(make -s LUA=' .. flavour.lua .. ' env)" && echo "CPATH=$LUA_CPATH" && cd /tmp && '
        .. flavour.bin .. " -e " .. probe)
      assert.are.equal(0, code, out)
      assert.truthy(out:find("CPATH=" .. ROOT .. "build/" .. flavour.lua .. "/?.so", 1, true), out)
      assert.truthy(out:find("LOADED function " .. ROOT .. "build/" .. flavour.lua .. "/zendesk/core.so", 1, true), out)
    end)
  end

  it("without LUA is the Lua 5.4 setup the README shows", function()
    local out, code = clean_sh('eval "$(make -s env)" && cd /tmp && lua5.4 -e \'require "zendesk"; print("OK")\'')
    assert.are.equal(0, code, out)
    assert.truthy(out:find("OK", 1, true), out)
  end)
end)

-- A free TCP port on 127.0.0.1 (bound and released; good enough for one nginx start).
local function free_port()
  for _ = 1, 50 do
    local p = math.random(20000, 60000)
    if select(2, sh("(exec 3<>/dev/tcp/127.0.0.1/" .. p .. ") 2>/dev/null")) ~= 0 then return p end
  end
  error("no free port")
end

describe("a checkout after using it", function()
  local dir
  after_each(function() scratch.remove(dir); dir = nil end)

  it("stays clean in git status after examples/nginx.conf is tested, started and stopped as the README says", function()
    dir = scratch.copy()
    local port = free_port()
    -- the README's way: prefix = the checkout, logs/ for what nginx writes, the port moved in a copy
    local out, code = sh("cd " .. q(dir) .. " && mkdir -p logs && nginx -t -p \"$PWD\" -c examples/nginx.conf 2>&1"
      .. " && sed 's/listen 127.0.0.1:8080 /listen 127.0.0.1:" .. port .. " /' examples/nginx.conf > logs/nginx.conf"
      .. " && ZENDESK_URL=http://127.0.0.1:9 ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token"
      .. " nginx -p \"$PWD\" -c logs/nginx.conf 2>&1")
    assert.are.equal(0, code, out)
    local health
    for _ = 1, 100 do
      health = sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. port .. "/health")
      if health == "200" then break end
      sh("sleep 0.05")
    end
    local pid = (standin.read_file(dir .. "/logs/nginx.pid") or ""):match("%d+")
    sh("cd " .. q(dir) .. " && nginx -p \"$PWD\" -c logs/nginx.conf -s stop 2>&1")
    for _ = 1, 100 do
      if not pid or select(2, sh("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then break end
      sh("sleep 0.05")
    end
    assert.are.equal("200", health)
    assert.truthy(standin.read_file(dir .. "/logs/access.log"), "nginx wrote no logs/access.log")
    assert.are.equal("", scratch.status(dir))
  end)

  it("holds no build products of `luarocks make` after `make clean`", function()
    dir = scratch.copy()
    local tree = dir .. ".tree"
    local out, code = sh("cd " .. q(dir) .. " && luarocks --lua-version=5.4 make --tree=" .. q(tree)
      .. " lua-zendesk-*.rockspec CURL_INCDIR=/usr/include/$(gcc -print-multiarch)"
      .. " CURL_LIBDIR=/usr/lib/$(gcc -print-multiarch) 2>&1")
    sh("rm -rf " .. q(tree))
    assert.are.equal(0, code, out)
    -- luarocks builds in place: the objects and the module are in the checkout now
    local before = scratch.status(dir, true)
    assert.truthy(before:find("!! src/client.o", 1, true), before)
    assert.truthy(before:find("!! zendesk/", 1, true), before)
    out, code = sh("cd " .. q(dir) .. " && make clean 2>&1")
    assert.are.equal(0, code, out)
    assert.are.equal("", scratch.status(dir, true))
  end)
end)
