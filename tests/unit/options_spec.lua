-- zendesk.options, the one checker of option tables: every Lua module that takes options refuses
-- an unknown key and a wrong type in the same words ("<where>: unknown option 'k'", "<where>:
-- option 'k' must be a <type>, got <type>"), raised at the caller. No server: nothing is sent.
local fake_ngx = require "support.fake_ngx"
local options = require "zendesk.options"
local zendesk = require "zendesk"
local sources = require "zendesk.sources"

local CFG = { url = "http://127.0.0.1:9", allow_insecure_http = true, email = "a@example.com", token = "t" }

local function with(extra)
  local t = {}
  for k, v in pairs(CFG) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v end
  return t
end

-- the message f raises, checked to point at this file (the caller), without the position
local function raised(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "no error")
  assert.is_string(err)
  local here = debug.getinfo(1, "S").short_src
  assert.equal(here, err:match("^(.-):%d+: "), "not raised at the caller: " .. err)
  return (err:gsub("^.-:%d+: ", ""))
end

describe("zendesk.options", function()
  local fake, zendesk_nginx, client

  before_each(function()
    fake = fake_ngx.install{ "zendesk" }
    zendesk_nginx = require "zendesk.nginx"
    client = zendesk.new(CFG)
  end)

  after_each(function()
    client:close()
    fake.uninstall()
  end)

  it("refuses an unknown key in the same words in every module that takes options", function()
    local nginx_client = zendesk_nginx.new(CFG)
    local cases = {
      { "zendesk.new", function() local _ = zendesk.new(with{ bogus = 1 }) end },
      { "zendesk.nginx.new", function() local _ = zendesk_nginx.new(with{ bogus = 1 }) end },
      { "sync_users", function() local _ = client:sync_users({}, { bogus = 1 }) end },
      { "sources.open", function() local _ = sources.open("x.csv", { bogus = 1 }) end },
      { "wait_job", function() local _ = client:wait_job("V3-1", { bogus = 1 }) end },
      { "wait_job", function() local _ = nginx_client:wait_job("V3-1", { timeout = 1, bogus = 1 }) end },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[1] .. ": unknown option 'bogus'", raised(c[2]))
    end
    assert.equal(0, fake.trips)
  end)

  it("refuses a wrong type in the same words", function()
    local cases = {
      { "zendesk.new: option 'sleep' must be a function, got number",
        function() local _ = zendesk.new(with{ sleep = 1 }) end },
      { "zendesk.new: option 'now' must be a function, got string",
        function() local _ = zendesk.new(with{ now = "x" }) end },
      { "zendesk.nginx.new: option 'pool' must be a string, got number",
        function() local _ = zendesk_nginx.new(with{ pool = 1 }) end },
      { "zendesk.nginx.new: option 'dict' must be a string, got boolean",
        function() local _ = zendesk_nginx.new(with{ dict = true }) end },
      { "zendesk.nginx.new: option 'on_event' must be a function, got number",
        function() local _ = zendesk_nginx.new(with{ on_event = 1 }) end },
      { "zendesk.nginx.new: option 'max_wait' must be a number, got string",
        function() local _ = zendesk_nginx.new(with{ max_wait = "10" }) end },
      { "zendesk.nginx.new: option 'max_wait' must be a non-negative number",
        function() local _ = zendesk_nginx.new(with{ max_wait = -1 }) end },
      { "zendesk.nginx.new: option 'rate_limit' must be a number at least 1, got 0.5",
        function() local _ = zendesk_nginx.new(with{ rate_limit = 0.5 }) end },
      { "zendesk.nginx.new: option 'on_refresh' must be a function, got number",
        function() local _ = zendesk_nginx.new{ url = CFG.url, allow_insecure_http = true,
          oauth = { access_token = "a", on_refresh = 1 } } end },
      { "sync_users: option 'on_row' must be a function, got number",
        function() local _ = client:sync_users({}, { on_row = 1 }) end },
      { "wait_job: option 'on_progress' must be a function, got string",
        function() local _ = client:wait_job("V3-1", { on_progress = "print" }) end },
      { "wait_job: option 'timeout' must be a non-negative number",
        function() local _ = client:wait_job("V3-1", { timeout = -5 }) end },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[1], raised(c[2]))
    end
  end)

  it("takes the options it knows and leaves the core's to the core", function()
    local slept = {}
    local c = zendesk.new(with{ sleep = function(s) slept[#slept + 1] = s end, now = function() return 7 end })
    assert.equal(7, c.now())
    c.sleep(0.5)
    assert.same({ 0.5 }, slept)
    c:close()
    -- the core's own checks stay the core's, named for the module the caller called
    assert.matches("^zendesk%.nginx%.new: unknown oauth field 'x'", raised(function()
      local _ = zendesk_nginx.new{ url = CFG.url, allow_insecure_http = true, oauth = { access_token = "a", x = 1 } }
    end))
    -- an nginx client keeps its own options out of the configuration its threads get
    local n = zendesk_nginx.new(with{ pool = "p", max_wait = 0, on_event = print })
    assert.is_nil(n.cfg.pool)
    assert.is_nil(n.cfg.max_wait)
    assert.is_nil(n.cfg.on_event)
    assert.equal(CFG.token, n.cfg.token)
  end)

  describe("check", function()
    local SCHEMA = { n = { type = "integer", min = 1, max = 9 }, r = { type = "number", max = 2 }, s = "string" }

    it("answers {} for nil and the table itself when it is good", function()
      assert.same({}, options.check(SCHEMA, nil, "f"))
      local t = { n = 3, r = 1.5, s = "x" }
      assert.equal(t, options.check(SCHEMA, t, "f"))
    end)

    it("words each refusal the one way", function()
      local cases = {
        { 5, "f: argument 'opts' must be a table, got number" },
        { { [1] = true }, "f: unknown option '1'" },
        { { n = 0 }, "f: option 'n' must be an integer from 1 to 9" },
        { { n = 2.5 }, "f: option 'n' must be an integer from 1 to 9" },
        { { r = "1" }, "f: option 'r' must be a number, got string" },
        { { r = 3 }, "f: option 'r' must be a number at most 2, got 3" },
        { { r = 0 / 0 }, "f: option 'r' must be a number at most 2, got " .. tostring(0 / 0) },
        { { s = {} }, "f: option 's' must be a string, got table" },
      }
      for _, c in ipairs(cases) do
        assert.equal(c[2], raised(function() local _ = options.check(SCHEMA, c[1], "f", 2) end))
      end
    end)

    it("splits the keys it knows (checked) from the rest (for another checker)", function()
      local own, rest = options.split(SCHEMA, { s = "x", url = "u", n = 2 }, "f")
      assert.same({ s = "x", n = 2 }, own)
      assert.same({ url = "u" }, rest)
      assert.equal("f: option 's' must be a string, got number",
        raised(function() local _ = options.split(SCHEMA, { s = 1, url = "u" }, "f", 2) end))
    end)
  end)
end)
