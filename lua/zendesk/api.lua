-- zendesk.api: what this project knows of the Zendesk API (every path, limit and bulk rule) in
-- one module; the C core (zendesk.core) knows HTTP, not Zendesk. Every request the clients,
-- the sync and the nginx thread send goes through a function here, which gives the core its
-- per-request options (ropts, documented in src/response.h):
--   wrap   = "user"     a table body goes as {"user": body}
--   answer = "user"     the answer must hold this key; the value returned is answer[key]
--   shape  = "record"   answer[key] has a positive integer id ("job": string id and status;
--                       "job_list": an array of those)
--   keep   = {...}      only these fields of answer[key] become Lua values (upsert's fields)
--   name   = "upsert"   the call's name in the core's refusal of a call from a callback
--   resend = true       a transport failure after which the request may have arrived is retried:
--                       create_or_update matches on email / external_id, so sending it twice is
--                       sending it once; a bulk submission (a job) is never resent (the default
--                       for POST), and the core reports err.sent / err.not_resent instead
local core = require "zendesk.core"

local type, error, concat = type, error, table.concat

local _M = {
  MAX_USERS = 100,          -- users in one create_or_update_many / update_many
  MAX_JOB_IDS = 100,        -- ids in one job_statuses/show_many
  PREFIX = "/api/v2/",      -- every path of the API
  PATH_UPSERT = "/api/v2/users/create_or_update.json",
  PATH_UPSERT_MANY = "/api/v2/users/create_or_update_many.json",
  PATH_UPDATE_MANY = "/api/v2/users/update_many.json",
  PATH_JOB_STATUS = "/api/v2/job_statuses/",
  PATH_JOB_STATUSES = "/api/v2/job_statuses/show_many.json?ids=",
  PATH_USER_FIELDS = "/api/v2/user_fields.json",
  -- keys whose value is a JSON array in Zendesk's user and job payloads: an empty Lua table
  -- under one of them is sent as [] rather than {} (the codec's configuration)
  ARRAY_KEYS = { tags = true, identities = true, agent_brand_ids = true, users = true, ids = true,
                 external_ids = true, organization_ids = true, group_ids = true, brand_ids = true,
                 results = true, job_statuses = true },
}
core.json_config{ arrays = _M.ARRAY_KEYS }

local BAD_PATH = "path: must be under /api/v2/ and hold only printable characters, no '.' or '..' "
  .. "segment, no escaped '.', '/', '\\', '%' or control byte"
local BAD_JOB_ID = "job id: must be letters, digits, '-' or '_'"

-- the core's options for each endpoint (shared tables: the core only reads them)
local UPSERT = { wrap = "user", answer = "user", shape = "record", resend = true, name = "upsert" }
local UPSERT_MANY = { wrap = "users", answer = "job_status", shape = "job", name = "bulk_upsert" }
local JOB_STATUS = { answer = "job_status", shape = "job", name = "job_status" }
local JOB_STATUSES = { answer = "job_statuses", shape = "job_list", name = "job_statuses" }
local RESEND = { resend = true }

local function valid_job_id(id)
  return type(id) == "string" and #id >= 1 and #id <= 100 and not id:find("[^%w_%-]")
end

-- Whether a request is sent again after a failure that may have reached Zendesk: the core's
-- default (GET, PUT, DELETE yes; POST, PATCH no) but for the create_or_update endpoints.
local function ropts_for(method, path)
  if method == "POST" and type(path) == "string" then
    local p = path:gsub("%?.*", ""):gsub("%.json$", "")
    if p:sub(-17) == "/create_or_update" then return RESEND end
  end
  return nil
end

local function under_api(path)
  return type(path) ~= "string" or path:sub(1, #_M.PREFIX) == _M.PREFIX
end

local function invalid(message)
  return core.error{ kind = "validation", message = message }
end

-- syntax: user, meta = api.upsert_user(core, user, opts)   (opts.fields: the user's kept fields)
function _M.upsert_user(c, user, opts)
  if type(user) ~= "table" then
    error("bad argument #2 to 'upsert_user' (table expected, got " .. type(user) .. ")", 2)
  end
  local ropts = UPSERT
  if opts and opts.fields then
    ropts = { wrap = "user", answer = "user", shape = "record", resend = true, name = "upsert", keep = opts.fields }
  end
  return c:request("POST", _M.PATH_UPSERT, user, ropts)
end

-- syntax: job_status, meta = api.upsert_users(core, list)   (1 to MAX_USERS users)
function _M.upsert_users(c, list)
  local n = type(list) == "table" and #list or 0
  if n < 1 or n > _M.MAX_USERS then
    error("bad argument #2 to 'upsert_users' (expected 1 to " .. _M.MAX_USERS .. " users, got " .. n .. ")", 2)
  end
  return c:request("POST", _M.PATH_UPSERT_MANY, list, UPSERT_MANY)
end

-- syntax: job_status, meta = api.job_status(core, id)
function _M.job_status(c, id)
  if type(id) ~= "string" then
    error("bad argument #2 to 'job_status' (string expected, got " .. type(id) .. ")", 2)
  end
  if not valid_job_id(id) then return nil, invalid(BAD_JOB_ID) end
  return c:request("GET", _M.PATH_JOB_STATUS .. id .. ".json", nil, JOB_STATUS)
end

-- syntax: job_statuses, meta = api.job_statuses(core, ids)   (1 to MAX_JOB_IDS ids)
function _M.job_statuses(c, ids)
  local n = type(ids) == "table" and #ids or 0
  if n < 1 or n > _M.MAX_JOB_IDS then
    error("bad argument #2 to 'job_statuses' (expected 1 to " .. _M.MAX_JOB_IDS .. " job ids, got " .. n .. ")", 2)
  end
  for i = 1, n do
    if not valid_job_id(ids[i]) then
      return nil, invalid("ids[" .. i .. "]: job ids are strings of letters, digits, '-' or '_'")
    end
  end
  return c:request("GET", _M.PATH_JOB_STATUSES .. concat(ids, ","), nil, JOB_STATUSES)
end

-- syntax: body, meta = api.request(core, method, path, body)   (any path under /api/v2/)
function _M.request(c, method, path, body)
  if not under_api(path) then return nil, invalid(BAD_PATH) end
  return c:request(method, path, body, ropts_for(method, path))
end

-- syntax: results = api.request_many(core, reqs)
-- reqs: {method, path, body} each, paths under /api/v2/; results: {value =, meta =} or
-- {err =} each, in request order (see the core's request_many).
function _M.request_many(c, reqs)
  if type(reqs) ~= "table" then return c:request_many(reqs) end
  local send, at, refused = {}, {}, nil
  for i = 1, #reqs do
    local r = reqs[i]
    if type(r) == "table" and not under_api(r[2]) then
      refused = refused or {}
      refused[i] = { err = invalid(BAD_PATH) }
    else
      local k = #send + 1
      at[k] = i
      send[k] = type(r) == "table" and { r[1], r[2], r[3], r[4] or ropts_for(r[1], r[2]) } or r
    end
  end
  local got = c:request_many(send)
  if not refused then return got end
  local results = refused
  for k, i in ipairs(at) do results[i] = got[k] end
  return results
end

return _M
