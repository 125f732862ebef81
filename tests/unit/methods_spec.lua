-- zendesk.methods, the one table both clients are built from: zendesk's (the core in this VM) and
-- zendesk.nginx's (the core in a pool thread; here tests/support/fake_ngx.lua, no nginx, no
-- server): the same method names, the same argument checks in the same words, raised at the
-- caller, before any I/O and before any trip to a thread.
local fake_ngx = require "support.fake_ngx"
local methods = require "zendesk.methods"
local zendesk = require "zendesk"

-- a client that is never asked to send anything: nothing listens on port 9
local CFG = { url = "http://127.0.0.1:9", allow_insecure_http = true, email = "a@example.com", token = "t" }

-- the methods each client has besides the table's: its life cycle (and zendesk's sync)
local OWN = {
  zendesk = { is_open = true, base_url = true, close = true, sync_users = true, user_fields = true },
  nginx = { is_open = true, base_url = true, close = true },
}

local function functions_of(t)
  local names = {}
  for k, v in pairs(t) do
    if type(v) == "function" then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

describe("zendesk.methods", function()
  local fake, zendesk_nginx, clients

  before_each(function()
    fake = fake_ngx.install{ "zendesk" }
    zendesk_nginx = require "zendesk.nginx"
    clients = { zendesk = zendesk.new(CFG), nginx = zendesk_nginx.new(CFG) }
  end)

  after_each(function()
    clients.zendesk:close()
    fake.uninstall()
  end)

  it("builds both clients' methods from the one table: the same names, nothing else but their own", function()
    local names = {}
    for _, m in ipairs(methods) do names[#names + 1] = m.name end
    assert.is_true(#names >= 6)
    for kind, Client in pairs{ zendesk = zendesk.Client, nginx = zendesk_nginx.Client } do
      for _, name in ipairs(names) do
        assert.is_function(Client[name], kind .. " has no " .. name)
        assert.equal(methods.get(name).name, name)
      end
      local expected = {}
      for _, name in ipairs(names) do expected[#expected + 1] = name end
      for name in pairs(OWN[kind]) do expected[#expected + 1] = name end
      table.sort(expected)
      assert.same(expected, functions_of(Client), kind .. "'s methods")
    end
  end)

  it("checks every method's arguments in the same words in both clients, raised at the caller", function()
    local ok_user = { email = "ann@example.com", name = "Ann" }
    local cases = {
      { "upsert_user", { "x" }, "upsert_user: argument 'user' must be a table, got string" },
      { "upsert_user", { ok_user, "yes" }, "upsert_user: argument 'opts' must be a table, got string" },
      { "upsert_user", { ok_user, { field = { "id" } } },
        "upsert_user: unknown option 'field' (upsert_user takes fields)" },
      { "upsert_user", { ok_user, { fields = {} } },
        "upsert_user: option 'fields' must be an array of 1 to 64 user field names" },
      { "upsert_users", { "x" }, "upsert_users: argument 'users' must be an array of user tables, got string" },
      { "upsert_users", { {} }, "upsert_users: expected 1 to 100 users, got 0" },
      { "job_status", { 42 }, "expected a job id (string) or a job_status table, got number" },
      { "job_statuses", { "V3-1" }, "job_statuses: argument 'ids' must be an array of job ids" },
      { "request", { 1, "/api/v2/users.json" }, "request: arguments 'method' and 'path' must be strings" },
      { "request", { "GET", nil }, "request: arguments 'method' and 'path' must be strings" },
      { "wait_job", { 42 }, "expected a job id (string) or a job_status table, got number" },
      { "wait_job", { "V3-1", "soon" }, "wait_job: argument 'opts' must be a table, got string" },
      { "wait_job", { "V3-1", { timeout = 5, bogus = 1 } }, "wait_job: unknown option 'bogus'" },
      { "wait_job", { "V3-1", { on_progress = true } }, "wait_job: option 'on_progress' must be a function, got boolean" },
    }
    local here = debug.getinfo(1, "S").short_src
    for _, c in ipairs(cases) do
      local name, args, message = c[1], c[2], c[3]
      for kind, client in pairs(clients) do
        local ok, err = pcall(function()
          local _ = client[name](client, args[1], args[2])   -- not a tail call: the caller is this line
        end)
        assert.is_false(ok, kind .. ":" .. name .. " accepted " .. message)
        assert.equal(here, err:match("^(.-):%d+: "), kind .. ": raised elsewhere than at the caller: " .. err)
        assert.equal(message, err:gsub("^.-:%d+: ", ""), kind)
      end
    end
    assert.equal(0, fake.trips, "a misuse went to a pool thread")
  end)

  it("returns a bad user as nil, err from both clients, without a trip to a thread", function()
    for kind, client in pairs(clients) do
      local user, err = client:upsert_user({ email = "nope", name = "N" })
      assert.is_nil(user, kind)
      assert.equal("validation", err.kind)
      assert.equal("user.email: 'nope' is not a valid email address", err.message)
      local job, berr = client:upsert_users({ { email = "a@example.com" }, { name = "no key" } })
      assert.is_nil(job, kind)
      assert.equal("users[2]", berr.errors[1].path)
    end
    assert.equal(0, fake.trips)
  end)

  it("raises for a method called with another self, naming the client kind", function()
    for _, m in ipairs(methods) do
      assert.has_error(function() zendesk.Client[m.name]({}) end,
                       "zendesk: call " .. m.name .. " as client:" .. m.name .. "(...)")
      assert.has_error(function() zendesk_nginx.Client[m.name]({}) end,
                       "zendesk.nginx: call " .. m.name .. " as client:" .. m.name .. "(...)")
    end
  end)

  it("lets the thread run only the table's core calls, not the methods written on them", function()
    local thread = require "zendesk.nginx_thread"
    for _, name in ipairs{ "wait_job", "sync_users", "close", "nope" } do
      assert.has_error(function() thread.call("k", CFG, "zendesk", name, "V3-1") end,
                       "zendesk.nginx_thread: unknown method '" .. name .. "'")
    end
  end)
end)
