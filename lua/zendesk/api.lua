-- zendesk.api: what this project knows of the Zendesk API (every path, limit and bulk rule) in
-- one module; the C core (zendesk.core) knows HTTP, not Zendesk. Every request the clients,
-- the sync and the nginx thread send goes through a function here.
local _M = {
  MAX_USERS = 100,          -- users in one create_or_update_many / update_many
  MAX_JOB_IDS = 100,        -- ids in one job_statuses/show_many
  PATH_UPSERT = "/api/v2/users/create_or_update.json",
  PATH_UPSERT_MANY = "/api/v2/users/create_or_update_many.json",
  PATH_UPDATE_MANY = "/api/v2/users/update_many.json",
  PATH_JOB_STATUS = "/api/v2/job_statuses/",
  PATH_JOB_STATUSES = "/api/v2/job_statuses/show_many.json?ids=",
  PATH_USER_FIELDS = "/api/v2/user_fields.json",
}

-- syntax: user, meta = api.upsert_user(core, user, opts)
function _M.upsert_user(core, user, opts)
  return core:upsert(user, opts)
end

-- syntax: job_status, meta = api.upsert_users(core, list)
function _M.upsert_users(core, list)
  return core:bulk_upsert(list)
end

-- syntax: job_status, meta = api.job_status(core, id)
function _M.job_status(core, id)
  return core:job_status(id)
end

-- syntax: job_statuses, meta = api.job_statuses(core, ids)
function _M.job_statuses(core, ids)
  return core:job_statuses(ids)
end

-- syntax: body, meta = api.request(core, method, path, body)
function _M.request(core, method, path, body)
  return core:request(method, path, body)
end

-- syntax: results = api.request_many(core, reqs)   ({method, path, body} each; see the core)
function _M.request_many(core, reqs)
  return core:request_many(reqs)
end

return _M
