-- What a new user types from the README, run as written from a clean environment: the setup
-- lines (`make env` for each flavour), a checkout that stays clean after using it (the nginx
-- example, `luarocks make`), and the rockspec's in-tree leftovers removed by `make clean`.
local standin = require "support.standin"

local ROOT = standin.ROOT
local sh, q = standin.sh, standin.shell_quote

-- A shell with only PATH and HOME, in the checkout (no LUA_PATH / LUA_CPATH from busted).
local function clean_sh(script)
  return sh("cd " .. q(ROOT) .. " && env -i PATH=" .. q(os.getenv("PATH")) .. " HOME=" .. q(os.getenv("HOME") or "/tmp")
    .. " sh -c " .. q(script) .. " 2>&1")
end

local function have(cmd) return select(2, sh("command -v " .. cmd .. " >/dev/null 2>&1")) == 0 end

describe("make env", function()
  for _, flavour in ipairs({ { lua = "lua5.4", bin = "lua5.4" }, { lua = "luajit", bin = "luajit" } }) do
    it("follows LUA=" .. flavour.lua .. ": the printed paths load the " .. flavour.lua .. " build", function()
      assert(have(flavour.bin), flavour.bin .. " is not installed")
      assert(standin.read_file(ROOT .. "build/" .. flavour.lua .. "/zendesk/core.so"),
        "build/" .. flavour.lua .. " is not built: make build LUA=" .. flavour.lua)
      local out, code = clean_sh('eval "$(make -s LUA=' .. flavour.lua .. ' env)" && echo "CPATH=$LUA_CPATH" && cd /tmp && '
        .. flavour.bin .. [[ -e 'local z = require "zendesk"; local c = package.searchpath("zendesk.core", package.cpath); print("LOADED " .. type(z.new) .. " " .. c)']])
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
