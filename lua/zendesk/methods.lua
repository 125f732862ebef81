-- zendesk.methods: the one table of the client's Zendesk methods, from which both clients are
-- built (zendesk.lua: calls the core in this VM; zendesk.nginx: calls it in a pool thread, where
-- zendesk.nginx_thread looks the method up here again), the way lua-resty-redis generates its
-- commands from one list. Per method:
--   name    the client method
--   check   function(a, b, c) -> true, a, b, c (the arguments to send) | nil, err (a bad user:
--           the method returns nil, err, before any I/O). Misuse raises at the method's caller:
--           level 3 from check (check, the method, the caller), 4 from a function check calls.
--   api     the zendesk.api function that does it with a core handle: api[api](core, a, b, c)
--   wire    (optional) function(a, b, c) -> what crosses to a pool thread, and unwire, its inverse
--           there: each crossing is a deep copy, so only what the core needs goes
--   run     instead of check and api: a method written on the others (function(client, ...)),
--           which runs in the caller's VM with the client's own methods
-- syntax: methods.build(Client, check_self, send)
--   Client[name] = a method per entry; check_self(self, name) raises on a misused self (level 3);
--   send(entry) -> function(self, a, b, c) that performs entry's call for this kind of client.
local users = require "zendesk.users"
local jobs = require "zendesk.jobs"
local api = require "zendesk.api"

local assert, error, ipairs, tostring, type = assert, error, ipairs, tostring, type

local MAX_USERS = api.MAX_USERS

local _M = {
  {
    name = "upsert_user", api = "upsert_user",
    -- syntax: user, meta = client:upsert_user(user [, {fields = {"id", ...}}])
    check = function(user, opts)
      local ok, err = users.check_upsert_arg(user, opts, "upsert_user", 4)
      if not ok then return nil, err end
      return true, user, opts
    end,
    -- only the array of fields crosses, not the options table around it
    wire = function(user, opts) return user, opts and opts.fields end,
    unwire = function(user, fields) return user, fields and { fields = fields } end,
  },
  {
    name = "upsert_users", api = "upsert_users",
    -- syntax: job_status, meta = client:upsert_users(list)   (1 to api.MAX_USERS users)
    check = function(list)
      local ok, err = users.check_upsert_many_arg(list, MAX_USERS, "upsert_users", 4)
      if not ok then return nil, err end
      return true, list
    end,
  },
  {
    name = "job_status", api = "job_status",
    -- syntax: job_status, meta = client:job_status(id_or_job)
    check = function(job)
      return true, jobs.id_of(job, 3)
    end,
  },
  {
    name = "job_statuses", api = "job_statuses",
    -- syntax: job_statuses, meta = client:job_statuses(ids)
    check = function(ids)
      if type(ids) ~= "table" then
        error("job_statuses: argument 'ids' must be an array of job ids", 3)
      end
      return true, ids
    end,
  },
  {
    name = "request", api = "request",
    -- syntax: body, meta = client:request(method, path [, body])
    check = function(method, path, body)
      if type(method) ~= "string" or type(path) ~= "string" then
        error("request: arguments 'method' and 'path' must be strings", 3)
      end
      return true, method, path, body
    end,
  },
  {
    name = "wait_job",
    -- syntax: job_status, meta = client:wait_job(id_or_job, {timeout =, on_progress =, ...})
    -- (zendesk.jobs.wait checks its arguments: it is public on its own too)
    run = jobs.wait,
  },
}

local by_name = {}
for _, m in ipairs(_M) do
  by_name[m.name] = m
  -- a misspelt api name fails here, at load, not at the first call
  assert(m.run or type(api[m.api]) == "function", "zendesk.methods: no zendesk.api." .. tostring(m.api))
end

-- syntax: entry = methods.get(name)   (nil for a name not in the table)
function _M.get(name)
  return by_name[name]
end

function _M.build(Client, check_self, send)
  for _, m in ipairs(_M) do
    local name = m.name
    local run = m.run
    if run then
      Client[name] = function(self, ...)
        check_self(self, name)
        return run(self, ...)
      end
    else
      local check, call = m.check, send(m)
      Client[name] = function(self, a, b, c)
        check_self(self, name)
        local ok, x, y, z = check(a, b, c)
        if not ok then return nil, x end
        return call(self, x, y, z)
      end
    end
  end
  return Client
end

return _M
