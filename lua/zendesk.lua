-- zendesk: the public Lua API. A thin layer over the C core (zendesk.core): it checks
-- users before any I/O, waits for bulk jobs and drives syncs; the core does the HTTP.
local core = require "zendesk.core"
local users = require "zendesk.users"
local jobs = require "zendesk.jobs"
local api = require "zendesk.api"
local fields = require "zendesk.fields"

local error, pairs, pcall, setmetatable, type = error, pairs, pcall, setmetatable, type

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

-- Options the Lua layer keeps for itself; every other option is the core's to check.
local LUA_OPTIONS = { sleep = true, now = true }

-- syntax: client = zendesk.new(opts)
function _M.new(opts)
  if type(opts) ~= "table" then
    error("zendesk.new: options must be a table", 2)
  end
  local core_opts, own = {}, {}
  for k, v in pairs(opts) do
    if LUA_OPTIONS[k] then own[k] = v else core_opts[k] = v end
  end
  for k, v in pairs(own) do
    if type(v) ~= "function" then
      error("zendesk.new: option '" .. k .. "' must be a function", 2)
    end
  end
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

-- syntax: user, meta = client:upsert_user(user [, {fields = {"id", ...}}])
-- With fields, the user comes back with only those fields: the rest of the answer is checked
-- but not turned into Lua values, which makes a hot path (a sign-up hook) cheaper.
function Client:upsert_user(user, opts)
  check_self(self, "upsert_user")
  users.check_upsert_opts(opts, "upsert_user")
  local ok, err = users.check_upsert_arg(user, "upsert_user")
  if ok and self._fields then ok, err = fields.check_user(self._fields, user, "user") end
  if not ok then
    return nil, err
  end
  return api.upsert_user(self._core, user, opts)
end

-- syntax: job_status, meta = client:upsert_users(list)   (1 to 100 users)
function Client:upsert_users(list)
  check_self(self, "upsert_users")
  local ok, err = users.check_upsert_many_arg(list, "upsert_users")
  if ok and self._fields then ok, err = fields.check_list(self._fields, list, "users") end
  if not ok then
    return nil, err
  end
  return api.upsert_users(self._core, list)
end

-- syntax: job_status, meta = client:job_status(id_or_job)
function Client:job_status(id)
  check_self(self, "job_status")
  return api.job_status(self._core, jobs.id_of(id, 2))
end

-- syntax: job_statuses, meta = client:job_statuses(ids)
function Client:job_statuses(ids)
  check_self(self, "job_statuses")
  if type(ids) ~= "table" then
    error("job_statuses: argument 'ids' must be an array of job ids", 2)
  end
  return api.job_statuses(self._core, ids)
end

-- syntax: job_status, meta = client:wait_job(id_or_job, {timeout =, on_progress =})
function Client:wait_job(job, opts)
  check_self(self, "wait_job")
  return jobs.wait(self, job, opts)
end

-- syntax: definitions, err = client:user_fields([{refresh = true} | {definitions = list}])
-- The account's custom user fields (every page of GET /user_fields), fetched once per client;
-- from then on upsert_user and upsert_users check user_fields against them before any request.
function Client:user_fields(opts)
  check_self(self, "user_fields")
  return fields.of_client(self, opts)
end

-- syntax: report, err = client:sync_users(source, opts)
function Client:sync_users(source, opts)
  check_self(self, "sync_users")
  return require("zendesk.sync").run(self, source, opts)
end

-- syntax: body, meta = client:request(method, path, body)
function Client:request(method, path, body)
  check_self(self, "request")
  return api.request(self._core, method, path, body)
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
