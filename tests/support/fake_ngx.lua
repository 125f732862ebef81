-- Test helper: enough of nginx's `ngx` for zendesk.nginx and zendesk.nginx_thread to run in one
-- plain Lua VM (no nginx): lua_shared_dicts, the clock, and ngx.run_worker_thread, which calls the
-- thread module here and now, copying arguments and results as nginx does between two VMs (plain
-- data only: a function or a metatable does not cross). Lua 5.4 and LuaJIT.
--   local fake = fake_ngx.install{ "zendesk" }   -- sets _G.ngx (dict names to create)
--   fake.trips                                   -- ngx.run_worker_thread calls so far
--   fake.uninstall()                             -- puts the previous _G.ngx back
-- The modules that keep ngx functions at load time are dropped from package.loaded by install
-- and uninstall, so the next require sees the fake (or the real one) and the thread VM is new.
local core = require "zendesk.core"

local M = {}

local MODULES = { "zendesk.nginx", "zendesk.nginx_thread", "zendesk.budget" }

local function new_dict()
  local data = {}
  return {
    get = function(_, k) return data[k] end,
    set = function(_, k, v) data[k] = v return true end,
    add = function(_, k, v)
      if data[k] ~= nil then return false, "exists" end
      data[k] = v
      return true
    end,
    delete = function(_, k) data[k] = nil end,
    incr = function(_, k, by, init)
      if data[k] == nil then
        if init == nil then return nil, "not found" end
        data[k] = init
      end
      data[k] = data[k] + by
      return data[k]
    end,
  }
end
M.new_dict = new_dict

-- What crosses between two VMs: nil, booleans, numbers, strings, light userdata (zendesk.null),
-- tables of those without their metatables; anything else is refused as nginx refuses it.
local function xcopy(v, depth)
  local t = type(v)
  if t == "table" then
    if depth > 100 then error("fake ngx: table nested too deeply to cross", 0) end
    local out = {}
    for k, x in next, v do out[xcopy(k, depth + 1)] = xcopy(x, depth + 1) end
    return out
  elseif t == "function" or t == "thread" then
    error("fake ngx: a " .. t .. " cannot cross to a worker thread", 0)
  end
  return v
end

local function pack(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack   -- luacheck: ignore 143 (LuaJIT)

function M.install(dicts)
  local saved = rawget(_G, "ngx")
  local fake = { trips = 0 }
  local shared = {}
  for _, name in ipairs(dicts or { "zendesk" }) do shared[name] = new_dict() end
  local ngx = {
    shared = shared,
    now = core.now,
    update_time = function() end,
    sleep = core.sleep,
    md5 = function(s) return s end,   -- a key, not a secret: this VM is the test's
    log = function() end,
    ERR = 4, NOTICE = 6,
  }
  function ngx.run_worker_thread(_, module, fn, ...)
    fake.trips = fake.trips + 1
    local args = pack(...)
    for i = 1, args.n do args[i] = xcopy(args[i], 0) end
    local out = pack(pcall(require(module)[fn], unpack(args, 1, args.n)))
    if not out[1] then return false, tostring(out[2]) end
    for i = 2, out.n do out[i] = xcopy(out[i], 0) end
    return true, unpack(out, 2, out.n)
  end
  for _, m in ipairs(MODULES) do package.loaded[m] = nil end
  rawset(_G, "ngx", ngx)
  function fake.uninstall()
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
    rawset(_G, "ngx", saved)
  end
  fake.ngx = ngx
  return fake
end

return M
