-- Client construction and lifecycle: options are checked before anything is set up,
-- hosts and headers cannot be injected, and close is idempotent and shared with __gc/__close.
local core = require "zendesk.core"
-- the core has no Zendesk methods since issue 14 P2: zendesk.api builds them from core:request
local api = require "zendesk.api"
local zendesk = require "zendesk"

local function refused(opts)
  local ok, err = pcall(core.new, opts)
  assert.is_false(ok)
  return err
end

describe("the core this VM loaded", function()
  -- folded from tests/core_smoke_jit.lua ("runs under LuaJIT"): each VM loads its own build
  it("comes from the build of the VM running the specs", function()
    local so = package.searchpath("zendesk.core", package.cpath)
    if jit then
      assert.matches("build/luajit/", package.cpath)
      assert.matches("build/luajit/zendesk/core%.so$", so)
    else
      assert.equal("Lua 5.4", _VERSION)
      -- the ASan suite runs these specs on its own Lua 5.4 build (build/asan)
      assert.matches("build/" .. (os.getenv("ASAN_OPTIONS") and "asan" or "lua5%.4") .. "/zendesk/core%.so$", so)
    end
  end)
end)

describe("zendesk.core.new", function()
  local creds = { email = "a@example.com", token = "t0ken-value" }
  local function with(extra)
    local o = {}
    for k, v in pairs(creds) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("builds the URL from a subdomain", function()
    local c = core.new(with{ subdomain = "acme" })
    assert.equal("zendesk.Client (https://acme.zendesk.com)", tostring(c))
    c:close()
  end)

  it("refuses a subdomain that would change the host", function()
    for _, bad in ipairs{ "evil.com/x", "acme.evil", "Acme", "-x", "a b", "acme\r\nHost: x", "" } do
      assert.matches("subdomain", refused(with{ subdomain = bad }))
    end
  end)

  it("refuses plain http except to loopback, unless allowed", function()
    assert.matches("refusing plain http", refused(with{ url = "http://zendesk.example.com" }))
    core.new(with{ url = "http://127.0.0.1:9" }):close()
    core.new(with{ url = "http://localhost:9" }):close()
    core.new(with{ url = "http://zendesk.example.com", allow_insecure_http = true }):close()
  end)

  it("refuses URLs with a path, credentials or another scheme", function()
    assert.matches("scheme://host", refused(with{ url = "https://x.example.com/api" }))
    assert.matches("scheme://host", refused(with{ url = "https://u:p@x.example.com" }))
    assert.matches("http:// or https://", refused(with{ url = "ftp://x.example.com" }))
  end)

  it("refuses CR or LF in any value that reaches a header", function()
    assert.matches("'token' contains CR, LF", refused(with{ url = "http://127.0.0.1:9", token = "a\r\nX: y" }))
    assert.matches("'user_agent' contains CR, LF",
                   refused(with{ url = "http://127.0.0.1:9", user_agent = "ua\nX-Injected: 1" }))
    assert.matches("'access_token' contains CR, LF",
                   refused{ url = "http://127.0.0.1:9", oauth = { access_token = "a\nb" } })
  end)

  it("names an unknown option and demands credentials", function()
    assert.matches("unknown option 'timout'", refused(with{ url = "http://127.0.0.1:9", timout = 3 }))
    assert.matches("no credentials", refused{ url = "http://127.0.0.1:9" })
    assert.matches("exactly one of 'url' and 'subdomain'", refused(with{}))
    assert.matches("unknown oauth field 'acess_token'",
                   refused{ url = "http://127.0.0.1:9", oauth = { acess_token = "x" } })
  end)

  it("checks option types and ranges", function()
    assert.matches("'timeout' must be a number", refused(with{ url = "http://127.0.0.1:9", timeout = "3" }))
    assert.matches("'max_retries' must be between", refused(with{ url = "http://127.0.0.1:9", max_retries = -1 }))
    assert.matches("'on_event' must be a function", refused(with{ url = "http://127.0.0.1:9", on_event = 1 }))
  end)

  it("closes idempotently and refuses use after close", function()
    local c = core.new(with{ url = "http://127.0.0.1:9" })
    assert.is_true(c:is_open())
    c:close()
    c:close()
    assert.is_false(c:is_open())
    local ok, err = pcall(api.upsert_user, c, { email = "x@example.com" })
    assert.is_false(ok)
    assert.matches("closed zendesk client", err)
  end)

  it("closes on scope exit with <close> and on garbage collection #lua54", function()
    -- (loaded from a string, so that LuaJIT, which runs this file without this test, parses it)
    local c = assert(load([[
      local zendesk, opts, assert = ...
      local cl <close> = zendesk.new(opts)
      local c = cl._core
      assert.is_true(c:is_open())
      return c
    ]]))(zendesk, with{ url = "http://127.0.0.1:9" }, assert)
    assert.is_false(c:is_open())
    -- unreferenced clients are collected (their __gc closes them; valgrind and ASan see leaks)
    local weak = setmetatable({}, { __mode = "v" })
    local first = core.new(with{ url = "http://127.0.0.1:9" })   -- held: a collection while making the rest
    weak[1] = first                                              -- must not take it before it is checked
    for i = 2, 50 do weak[i] = core.new(with{ url = "http://127.0.0.1:9" }) end
    weak[51] = zendesk.new(with{ url = "http://127.0.0.1:9" })
    assert.is_true(weak[1]:is_open())
    first = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak), "a client was not collected")
    -- closing again after <close> is harmless, and says so
    assert.is_false(c:is_open())
    c:close()
    assert.is_false(c:is_open())
  end)

  it("raises misuse at the caller in the Lua layer", function()
    assert.has_error(function() zendesk.new("acme") end, "zendesk.new: options must be a table")
    local cl = zendesk.new(with{ url = "http://127.0.0.1:9" })
    assert.has_error(function() cl:upsert_user("x") end, "upsert_user: argument 'user' must be a table, got string")
    local many = {}
    for i = 1, 101 do many[i] = { email = i .. "@example.com" } end
    assert.has_error(function() cl:upsert_users(many) end, "upsert_users: expected 1 to 100 users, got 101")
    assert.has_error(function() cl:upsert_users({}) end, "upsert_users: expected 1 to 100 users, got 0")
    -- the core has no bulk method since issue 14 P2: zendesk.api checks the cap before the request
    assert.has_error(function() require("zendesk.api").upsert_users(cl._core, many) end)
    cl:close()
  end)

  it("reports a refused connection as a network error", function()
    local c = core.new(with{ url = "http://127.0.0.1:9", max_retries = 0 })
    local user, err = api.upsert_user(c, { email = "x@example.com" })
    assert.is_nil(user)
    assert.equal("network", err.kind)
    assert.matches("^zendesk: network: POST /api/v2/users/create_or_update.json: ", tostring(err))
    c:close()
  end)
end)
