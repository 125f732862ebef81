-- Entry point of the stand-in: records each API request, applies faults, auth
-- and the account-wide rate limit, routes to a handler and sends its answer.
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"
local auth = require "fake_zendesk.auth"
local faults = require "fake_zendesk.faults"
local api = require "fake_zendesk.api"
local admin = require "fake_zendesk.admin"

local ngx = ngx
local zd = state.zd
local sub, match, floor, ceil, max = string.sub, string.match, math.floor, math.ceil, math.max
local pairs, tostring = pairs, tostring

local _M = {}

local JSON_CT = "application/json; charset=utf-8"
local TEXT_CT = "text/plain; charset=UTF-8"
local UNLIMITED = 1000000 -- reported as the limit when rate_limit_per_minute is 0

local exact = {
  POST = {
    ["/api/v2/users/create_or_update"] = api.create_or_update,
    ["/api/v2/users/create_or_update_many"] = api.create_or_update_many,
    ["/api/v2/users/create_many"] = api.create_many,
    ["/api/v2/users"] = api.create,
  },
  PUT = {
    ["/api/v2/users/update_many"] = api.update_many,
  },
  GET = {
    ["/api/v2/users/show_many"] = api.show_many,
    ["/api/v2/users/search"] = api.search,
    ["/api/v2/job_statuses"] = api.job_statuses,
    ["/api/v2/job_statuses/show_many"] = api.job_statuses_show_many,
    ["/api/v2/user_fields"] = api.user_fields,
  },
}

local patterns = {
  { "GET", "^/api/v2/users/(%d+)$", api.show },
  { "PUT", "^/api/v2/users/(%d+)$", api.update },
  { "DELETE", "^/api/v2/users/(%d+)$", api.destroy },
  { "GET", "^/api/v2/users/(%d+)/identities$", api.identities },
  { "GET", "^/api/v2/job_statuses/([^/]+)$", api.job_status },
}
local make_primary = "^/api/v2/users/(%d+)/identities/(%d+)/make_primary$"

local function route(method, path)
  local t = exact[method]
  local h = t and t[path]
  if h then return h end
  for _, p in ipairs(patterns) do
    if p[1] == method then
      local cap = match(path, p[2])
      if cap then
        if p[3] ~= api.job_status then cap = json.id_of(cap) end
        return p[3], cap
      end
    end
  end
  if method == "PUT" then
    local uid, iid = match(path, make_primary)
    if uid then return api.make_primary, { json.id_of(uid), json.id_of(iid) } end
  end
  return nil
end

local function base_url()
  local host = ngx.var.http_host
  if not host or host == "" then host = ngx.var.server_addr .. ":" .. ngx.var.server_port end
  return ngx.var.scheme .. "://" .. host
end

local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file()
  if not file then return nil end
  local f = io.open(file, "rb")
  if not f then return nil end
  body = f:read("*a")
  f:close()
  return body
end

local function record(method, body)
  local headers = {}
  for k, v in pairs(ngx.req.get_headers(100)) do headers[k] = v end
  if headers.authorization then headers.authorization = "<redacted>" end
  local entry = json.encode({
    method = method,
    path = match(ngx.var.request_uri, "^[^?]*"),
    query = ngx.var.args or "",
    headers = headers,
    body = body or "",
  })
  local log = state.reqlog
  local n = log:incr("n", 1, 0)
  log:set("r:" .. n, entry)
  if n > 1000 then log:delete("r:" .. (n - 1000)) end
end

local function send(status, body, headers, ctype)
  ngx.status = status
  local h = ngx.header
  h["Content-Type"] = ctype or JSON_CT
  h["Cache-Control"] = status < 300 and "max-age=0, private, must-revalidate" or "no-cache"
  if headers then
    for k, v in pairs(headers) do h[k] = v end
  end
  h["Content-Length"] = #body
  ngx.print(body)
end

local function rate_headers(limit, remaining, reset)
  local h = ngx.header
  h["X-Rate-Limit"] = limit
  h["X-Rate-Limit-Remaining"] = remaining
  h["ratelimit-limit"] = limit
  h["ratelimit-remaining"] = remaining
  h["ratelimit-reset"] = reset
  h["rate-limit"] = limit
  h["rate-limit-remaining"] = remaining
  h["rate-limit-reset"] = reset
end

-- Counts this request against the account budget (a 60 s window opened by its
-- first request, shared by all workers). Returns ok, limit, remaining, reset.
local function account_limit(cfg, count)
  local limit = cfg.rate_limit_per_minute
  if limit <= 0 then
    return true, UNLIMITED, UNLIMITED, 60 - ngx.time() % 60
  end
  local n
  if count then
    n = zd:incr("rl", 1, 0, 60)
  else
    n = zd:get("rl") or 0
  end
  local ttl = zd:ttl("rl")
  local reset = ttl and max(1, ceil(ttl)) or 60
  if n > limit then return false, limit, 0, reset end
  return true, limit, limit - n, reset
end

local INVALID_JSON = '{"user":{"id":36146830593,"name":"Ann",]}'

local function apply_fault(f, r)
  local a = f.action
  if a == "status" then
    local ctype, body = faults.default_body(f.status)
    if f.body then body = f.body end
    if f.content_type then ctype = f.content_type end
    send(f.status, faults.body_of(f, body), f.headers, ctype)
    return true
  elseif a == "reset" then
    faults.reset_connection(f)
    return true
  elseif a == "invalid_json" then
    send(f.status or 200, f.body or INVALID_JSON, f.headers, f.content_type or JSON_CT)
    return true
  elseif a == "hang" then
    ngx.sleep(300)
    ngx.exit(444)
    return true
  elseif a == "delay" then
    ngx.sleep((f.delay_ms or 1000) / 1000)
    return false
  elseif a == "truncate" then
    r.truncate = true
    return false
  end
  return false
end

local function internal_error(e)
  ngx.log(ngx.ERR, "stand-in handler failed: ", tostring(e), "\n", debug.traceback())
  return 500, '{"error":"InternalServerError","description":' .. json.str(tostring(e)) .. "}"
end

local function call(handler, r, cap)
  local ok, status, body, headers, ctype = xpcall(handler, function(e)
    return tostring(e) .. "\n" .. debug.traceback()
  end, r, cap)
  if not ok then return internal_error(status) end
  return status, body, headers, ctype
end

-- Requests being handled now (both workers), and the most seen at once since the last reset
-- (stats max_concurrent): evidence that a client ran requests in parallel, without timing them.
local function enter()
  local n = state.meta:incr("inflight", 1, 0)
  local top = zd:get("st:max_concurrent") or 0
  if n > top then zd:set("st:max_concurrent", n) end
end

-- log phase of every API request, however it ended (answered, reset, timed out by the client);
-- counts the answers nginx's gzip filter compressed (stats gzipped), as Zendesk does for large
-- JSON answers to clients that send Accept-Encoding: gzip
function _M.leave()
  state.meta:incr("inflight", -1, 1)
  if ngx.var.sent_http_content_encoding == "gzip" then state.stat("gzipped") end
end

function _M.api()
  enter()
  local method = ngx.req.get_method()
  local path = ngx.var.uri
  if sub(path, -5) == ".json" then path = sub(path, 1, -6) end
  local body = read_body()
  record(method, body)
  state.stat("requests")

  local h = ngx.header
  local rid = sub(ngx.var.request_id, 1, 16) .. "-LCL"
  h["X-Request-Id"] = rid
  h["X-Zendesk-Request-Id"] = rid
  h["X-Zendesk-API-Version"] = "v2"
  h["X-Stand-In-Worker"] = ngx.worker.pid()

  local r = { method = method, path = path, body = body, base = base_url() }
  local f = faults.match(method, path)
  if f and apply_fault(f, r) then return end

  local status, resp, headers, ctype
  local cfg = state.config()
  if path == "/oauth/tokens" then
    if method ~= "POST" then
      status, resp = 404, '{"error":"InvalidEndpoint","description":"Not found"}'
    else
      status, resp, headers, ctype = call(auth.tokens, r)
    end
  else
    local s, b, hh = auth.check(ngx.var.http_authorization)
    if s then
      rate_headers(select(2, account_limit(cfg, false)))
      return send(s, b, hh)
    end
    local ok, limit, remaining, reset = account_limit(cfg, true)
    rate_headers(limit, remaining, reset)
    if not ok then
      state.stat("rate_limited")
      return send(429, "Rate limit exceeded. Please wait and try again.", { ["Retry-After"] = reset }, TEXT_CT)
    end
    local handler, cap = route(method, path)
    if handler then
      status, resp, headers, ctype = call(handler, r, cap)
    else
      status, resp = 404, '{"error":"InvalidEndpoint","description":"Not found"}'
    end
  end
  if r.truncate then
    status = 200
    resp = sub(resp, 1, floor(#resp / 2))
  end
  return send(status, resp, headers, ctype)
end

function _M.admin()
  local method = ngx.req.get_method()
  local r = { method = method, path = ngx.var.uri, body = read_body(), base = base_url() }
  local status, resp, headers, ctype = call(admin.handle, r)
  return send(status, resp, headers, ctype)
end

return _M
