-- Zendesk API endpoints of the stand-in (users and job statuses). Each handler
-- takes the request context and returns status, body, headers, content type.
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"
local users = require "fake_zendesk.users"
local jobs = require "fake_zendesk.jobs"
local fields = require "fake_zendesk.fields"

local ngx = ngx
local str = json.str
local concat, format = table.concat, string.format

local _M = {}

local TEXT_CT = "text/plain; charset=UTF-8"
local NOT_FOUND = '{"error":"RecordNotFound","description":"Not found"}'
local FORBIDDEN_IMPORTS = '{"error":{"title":"Forbidden","message":"You do not have access to this page. '
  .. 'Please contact the account owner of this help desk for further help."}}'
local PER_USER_TEXT = "You have exceeded the rate limit for updating a single unique user. Please wait and try again."

local function missing(param)
  return 400, '{"error":"ParameterMissing","description":"param is missing or the value is empty: ' .. param .. '"}'
end

local function bad_json()
  return 400, '{"error":"InvalidJSON","description":"The request body is not valid JSON"}'
end

local function warn_header(headers, keys, action)
  if #keys == 0 then return end
  table.sort(keys)
  local q = {}
  for i, k in ipairs(keys) do q[i] = '"' .. k .. '"' end
  headers["X-Zendesk-API-Warn"] = '{:allowed_parameters=>{:controller=>"users", :action=>"' .. action
    .. '", :unpermitted_keys=>[' .. concat(q, ", ") .. '], :invalid_values=>[]}}'
end

-- Common answer for the single-user write endpoints.
local function single_answer(r, res, action)
  local headers = {}
  warn_header(headers, res.warn or {}, action)
  if res.kind == "not_found" then return 404, NOT_FOUND, headers end
  if res.kind == "limited" then
    state.stat("per_user_limited")
    headers["Retry-After"] = tostring(res.retry_after)
    return 429, PER_USER_TEXT, headers, TEXT_CT
  end
  if res.kind == "invalid" then return 422, users.errs_json(res.errs), headers end
  if res.remaining then
    headers["Zendesk-RateLimit-create-update-user"] =
      format("total=%d; remaining=%d; resets=%d", res.limit, res.remaining, res.resets)
  end
  local body = '{"user":' .. users.render(res.rec, r.base) .. "}"
  if res.kind == "created" then
    headers["Location"] = r.base .. "/api/v2/users/" .. res.rec.id .. ".json"
    return 201, body, headers
  end
  return 200, body, headers
end

local function user_param(r)
  local body, err = json.decode(r.body)
  if body == nil and err then
    if r.body == nil or r.body == "" then return nil, missing("user") end
    return nil, bad_json()
  end
  if type(body) ~= "table" or type(body.user) ~= "table" then return nil, missing("user") end
  return body.user
end

function _M.create_or_update(r)
  local u, s, b = user_param(r)
  if not u then return s, b end
  return single_answer(r, users.apply(u, { mode = "create_or_update", per_user = true }), "create_or_update")
end

function _M.create(r)
  local u, s, b = user_param(r)
  if not u then return s, b end
  return single_answer(r, users.apply(u, { mode = "create" }), "create")
end

function _M.update(r, id)
  local u, s, b = user_param(r)
  if not u then return s, b end
  return single_answer(r, users.apply(u, { mode = "update", id = id, per_user = true }), "update")
end

function _M.show(r, id)
  local rec = users.get(id)
  if not rec then return 404, NOT_FOUND end
  return 200, '{"user":' .. users.render(rec, r.base) .. "}"
end

function _M.destroy(r, id)
  local rec = users.get(id)
  if not rec then return 404, NOT_FOUND end
  rec = users.delete(id)
  return 200, '{"user":' .. users.render(rec, r.base) .. "}"
end

function _M.identities(r, id)
  local rec = users.get(id)
  if not rec then return 404, NOT_FOUND end
  return 200, users.render_identities(rec, r.base)
end

function _M.make_primary(r, ids)
  local rec = users.make_primary(ids[1], ids[2])
  if not rec then return 404, NOT_FOUND end
  return 200, users.render_identities(rec, r.base)
end

local function split(s)
  local out = {}
  if s == true then return out end -- "?ids" without "=": no value
  if type(s) == "table" then
    local parts = {}
    for _, v in ipairs(s) do if type(v) == "string" then parts[#parts + 1] = v end end
    s = concat(parts, ",")
  end
  for v in tostring(s or ""):gmatch("[^,%s]+") do out[#out + 1] = v end
  return out
end

local function users_list(r, recs, with_paging)
  local parts = {}
  for i, rec in ipairs(recs) do parts[i] = users.render(rec, r.base) end
  if with_paging then
    return 200, '{"users":[' .. concat(parts, ",") .. '],"next_page":null,"previous_page":null,"count":' .. #recs .. "}"
  end
  return 200, '{"users":[' .. concat(parts, ",") .. "]}"
end

function _M.show_many(r)
  local args = ngx.req.get_uri_args()
  local recs, seen = {}, {}
  if args.ids then
    for _, v in ipairs(split(args.ids)) do
      local id = json.id_of(v)
      local rec = id and not seen[id] and users.get(id)
      if rec then seen[id] = true; recs[#recs + 1] = rec end
    end
  elseif args.external_ids then
    for _, x in ipairs(split(args.external_ids)) do
      local rec = users.find_by_external_id(x)
      if rec and not seen[rec.id] then seen[rec.id] = true; recs[#recs + 1] = rec end
    end
  else
    return missing("ids")
  end
  table.sort(recs, function(a, b) return json.id_less(a.id, b.id) end)
  return users_list(r, recs)
end

-- Supports query=email:x, query=external_id:x, query=<email>, external_id=x.
function _M.search(r)
  local args = ngx.req.get_uri_args()
  local rec
  if type(args.external_id) == "string" then
    rec = users.find_by_external_id(args.external_id)
  elseif type(args.query) == "string" then
    local q = args.query:match("^%s*(.-)%s*$")
    local field, v = q:match("^([%w_]+):(.+)$")
    v = v and v:gsub('^"(.*)"$', "%1")
    if field == "email" then
      rec = users.find_by_email(v)
    elseif field == "external_id" then
      rec = users.find_by_external_id(v)
    elseif field == "id" then
      rec = users.get(json.id_of(v))
    elseif q:find("@", 1, true) then
      rec = users.find_by_email(q)
    elseif q ~= "" then
      rec = users.find_by_external_id(q)
    end
  else
    return missing("query")
  end
  return users_list(r, { rec }, true)
end

-- Bulk submissions ----------------------------------------------------------

-- The bulk-import gate covers the endpoints Zendesk documents it on (create_many,
-- create_or_update_many), not update_many, which changes existing users only.
local function submit(r, kind, list, warn_keys, action)
  local cfg = state.config()
  if not cfg.imports_enabled and kind ~= "update" then return 403, FORBIDDEN_IMPORTS end
  if #list > 100 then
    return 400, '{"error":"TooManyValues","description":"Maximum 100 users may be created per call"}'
  end
  local job = jobs.submit(kind, list, r.base)
  if not job then
    return 429, '{"error":"TooManyJobs","description":"Too many jobs are currently queued or running. '
      .. 'Try again later."}', { ["Retry-After"] = tostring(jobs.retry_after()) }
  end
  local headers = {}
  warn_header(headers, warn_keys or {}, action)
  return 200, '{"job_status":' .. jobs.render(job) .. "}", headers
end

local function users_param(r)
  local body, err = json.decode(r.body)
  if body == nil and err and r.body ~= nil and r.body ~= "" then return nil, bad_json() end
  if type(body) ~= "table" or type(body.users) ~= "table" then return nil, missing("users") end
  return body.users
end

function _M.create_or_update_many(r)
  local list, s, b = users_param(r)
  if not list then return s, b end
  return submit(r, "create_or_update", list, nil, "create_or_update_many")
end

function _M.create_many(r)
  local list, s, b = users_param(r)
  if not list then return s, b end
  return submit(r, "create", list, nil, "create_many")
end

-- PUT /users/update_many: {"users":[{id,...}]} (each row its own changes), or ?ids=1,2 /
-- ?external_ids=a,b with ONE {"user":{...}} applied to every listed user.
function _M.update_many(r)
  local args = ngx.req.get_uri_args()
  local by, keys = nil, nil
  if args.ids then
    by, keys = "id", split(args.ids)
  elseif args.external_ids then
    by, keys = "external_id", split(args.external_ids)
  end
  if by then
    if #keys == 0 then return missing(by == "id" and "ids" or "external_ids") end
    local u, s, b = user_param(r)
    if not u then return s, b end
    local list = {}
    for i, key in ipairs(keys) do
      local copy = {}
      for k, v in pairs(u) do copy[k] = v end
      -- the target comes from the query, never from the shared object
      copy.id = nil
      if by == "id" then copy.id = key else copy[jobs.BY_EXTERNAL_ID] = key end
      list[i] = copy
    end
    return submit(r, "update", list, nil, "update_many")
  end
  local list, s, b = users_param(r)
  if not list then return s, b end
  return submit(r, "update", list, nil, "update_many")
end

-- User fields ---------------------------------------------------------------

local MAX_PAGE = 100

local function pagination_error(detail)
  return 400, '{"errors":[{"code":"InvalidPaginationParameter","title":"Invalid pagination parameter",'
    .. '"detail":' .. str(detail) .. "}]}"
end

-- Opaque cursors naming a 1-based position in the field list.
local function cursor_of(i)
  return (ngx.encode_base64("uf:" .. i):gsub("=", ""))
end

local function position_of(c)
  if type(c) ~= "string" then return nil end
  local pad = ({ "", "===", "==", "=" })[#c % 4 + 1]
  local raw = ngx.decode_base64(c .. pad)
  local i = raw and raw:match("^uf:(%d+)$")
  return i and tonumber(i)
end

local function page_size(v, name)
  if v == nil then return MAX_PAGE end
  local n = type(v) == "string" and v:match("^%d+$") and tonumber(v)
  if not n or n < 1 then return nil, pagination_error(name .. " must be a positive integer") end
  if n > MAX_PAGE then return nil, pagination_error(name .. " must be at most " .. MAX_PAGE) end
  return n
end

local function field_list(r, defs, from, to)
  local parts = {}
  for i = from, to do parts[#parts + 1] = fields.render(defs[i], r.base) end
  return '{"user_fields":[' .. concat(parts, ",") .. "]"
end

-- GET /api/v2/user_fields: cursor pagination with page[size] / page[after] / page[before]
-- (meta + links); without any page[...] parameter, offset pagination (page, per_page;
-- next_page, previous_page, count) as Zendesk answers a request without cursor parameters.
function _M.user_fields(r)
  local args = ngx.req.get_uri_args()
  local defs = state.config().fields
  local n = #defs
  local self_url = r.base .. "/api/v2/user_fields.json"
  local size_arg, after, before = args["page[size]"], args["page[after]"], args["page[before]"]
  if size_arg ~= nil or after ~= nil or before ~= nil then
    local size, s, b = page_size(size_arg, "page[size]")
    if not size then return s, b end
    local from, to
    if after ~= nil then
      local p = position_of(after)
      if not p then return pagination_error("page[after] is not a valid cursor") end
      from, to = p + 1, math.min(p + size, n)
    elseif before ~= nil then
      local p = position_of(before)
      if not p then return pagination_error("page[before] is not a valid cursor") end
      to = math.min(p - 1, n)
      from = math.max(1, to - size + 1)
    else
      from, to = 1, math.min(size, n)
    end
    local empty = from > to
    local has_more
    if before ~= nil and after == nil then has_more = not empty and from > 1 else has_more = to < n end
    local first_c = not empty and cursor_of(from) or nil
    local last_c = not empty and cursor_of(to) or nil
    local q = "&page%5Bsize%5D=" .. size
    local next_url = (not empty and to < n) and (self_url .. "?page%5Bafter%5D=" .. last_c .. q) or nil
    local prev_url = (not empty and from > 1) and (self_url .. "?page%5Bbefore%5D=" .. first_c .. q) or nil
    return 200, (empty and '{"user_fields":[]' or field_list(r, defs, from, to))
      .. ',"meta":{"has_more":' .. tostring(has_more)
      .. ',"after_cursor":' .. json.value(last_c) .. ',"before_cursor":' .. json.value(first_c) .. "}"
      .. ',"links":{"prev":' .. json.value(prev_url) .. ',"next":' .. json.value(next_url) .. "}}"
  end
  local per_page, s, b = page_size(args.per_page, "per_page")
  if not per_page then return s, b end
  local page = 1
  if args.page ~= nil then
    page = type(args.page) == "string" and args.page:match("^%d+$") and tonumber(args.page)
    if not page or page < 1 then return pagination_error("page must be a positive integer") end
  end
  local from = (page - 1) * per_page + 1
  local to = math.min(page * per_page, n)
  local function url(p) return self_url .. "?page=" .. p .. "&per_page=" .. per_page end
  local body = from > to and '{"user_fields":[]' or field_list(r, defs, from, to)
  return 200, body .. ',"next_page":' .. json.value(to < n and url(page + 1) or nil)
    .. ',"previous_page":' .. json.value(page > 1 and url(page - 1) or nil)
    .. ',"count":' .. n .. "}"
end

-- Job statuses --------------------------------------------------------------

function _M.job_status(_, id)
  local job = jobs.poll(id)
  if not job then return 404, NOT_FOUND end
  return 200, '{"job_status":' .. jobs.render(job) .. "}"
end

function _M.job_statuses_show_many()
  local args = ngx.req.get_uri_args()
  if not args.ids then return missing("ids") end
  local parts = {}
  for _, id in ipairs(split(args.ids)) do
    local job = jobs.poll(id)
    if job then parts[#parts + 1] = jobs.render(job) end
  end
  return 200, '{"job_statuses":[' .. concat(parts, ",") .. "]}"
end

function _M.job_statuses()
  local parts = {}
  for i, job in ipairs(jobs.recent()) do parts[i] = jobs.render(job) end
  return 200, '{"job_statuses":[' .. concat(parts, ",") .. '],"next_page":null,"previous_page":null,"count":'
    .. #parts .. "}"
end

_M.str = str

return _M
