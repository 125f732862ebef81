-- zendesk: the public Lua API. A thin layer over the C core (zendesk.core): its methods come from
-- the one table of zendesk.methods (arguments and users checked before any I/O) and call
-- zendesk.api with the client's core; it waits for bulk jobs (zendesk.jobs) and drives syncs
-- (zendesk.sync); the core does the HTTP. lua/zendesk/README.md draws the whole layer.
local core = require "zendesk.core"
local users = require "zendesk.users"
local api = require "zendesk.api"
local methods = require "zendesk.methods"
local options = require "zendesk.options"
local fields = require "zendesk.fields"

local error, getmetatable, pcall, setmetatable, type = error, getmetatable, pcall, setmetatable, type

local _M = {
  _VERSION = core.version,
  null = core.null,           -- sends JSON null (clears a field); Lua nil omits the field
  array_mt = core.array_mt,   -- setmetatable({}, zendesk.array_mt) is sent as []
  object_mt = core.object_mt, -- setmetatable({}, zendesk.object_mt) is sent as {}
  is_error = core.is_error,
  validate_user = users.validate,
}

local Client = {}
local client_mt = { __index = Client, __name = "zendesk.client" }

-- Options the Lua layer keeps for itself; every other option is the core's to check (in its own
-- words, the same as options.check's: "zendesk.new: unknown option 'k'").
local OPTIONS = { sleep = "function", now = "function" }

-- syntax: client = zendesk.new(opts)
function _M.new(opts)
  if type(opts) ~= "table" then
    error("zendesk.new: options must be a table", 2)
  end
  local own, core_opts = options.split(OPTIONS, opts, "zendesk.new")
  local ok, c = pcall(core.new, core_opts)
  if not ok then
    error(c, 2)
  end
  return setmetatable({
    _core = c,
    sleep = own.sleep or core.sleep,
    now = own.now or core.now,
    on_event = opts.on_event,   -- also the Lua layer's (zendesk.fields says what it cannot check)
  }, client_mt)
end

local function check_self(self, method)
  if getmetatable(self) ~= client_mt then
    error("zendesk: call " .. method .. " as client:" .. method .. "(...)", 3)
  end
end

-- upsert_user, upsert_users, job_status, job_statuses, request, wait_job: zendesk.methods (their
-- syntax and argument checks), each calling zendesk.api with this client's core.
-- With upsert_user's fields, the user comes back with only those fields: the rest of the answer is
-- checked but not turned into Lua values, which makes a hot path (a sign-up hook) cheaper.
-- Once the client has the account's user fields (client:user_fields), upsert_user and upsert_users
-- also check user_fields against them, after the methods' own checks and before any request.
local FIELD_CHECKS = {
  upsert_user = function(schema, user) return fields.check_user(schema, user, "user") end,
  upsert_users = function(schema, list) return fields.check_list(schema, list, "users") end,
}
methods.build(Client, check_self, function(m)
  local call = api[m.api]
  local check_fields = FIELD_CHECKS[m.name]
  if check_fields then
    return function(self, a, b, c)
      local schema = self._fields
      if schema then
        local ok, err = check_fields(schema, a)
        if not ok then return nil, err end
      end
      return call(self._core, a, b, c)
    end
  end
  return function(self, a, b, c)
    return call(self._core, a, b, c)
  end
end)

-- syntax: definitions, err = client:user_fields([{refresh = true} | {definitions = list}])
-- The account's custom user fields (every page of GET /user_fields), fetched once per client;
-- from then on upsert_user and upsert_users check user_fields against them before any request.
function Client:user_fields(opts)
  check_self(self, "user_fields")
  return fields.of_client(self, opts)
end

-- syntax: report, err = client:sync_users(source, opts)
-- (this client's only: a sync holds its thread for minutes, which an nginx worker must not)
function Client:sync_users(source, opts)
  check_self(self, "sync_users")
  return require("zendesk.sync").run(self, source, opts)
end

-- syntax: ok = client:is_open()
function Client:is_open()
  return self._core:is_open()
end

-- syntax: url = client:base_url()   ("https://acme.zendesk.com"; nil once closed)
function Client:base_url()
  return self._core:base_url()
end

-- syntax: client:close()   (idempotent; also on garbage collection and <close>)
function Client:close()
  return self._core:close()
end

client_mt.__close = Client.close
client_mt.__tostring = function(self) return tostring(self._core) end

_M.Client = Client
return _M
