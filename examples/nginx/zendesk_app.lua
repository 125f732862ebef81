-- zendesk_app: the handlers of examples/nginx.conf. A public sign-up hook upserts the user,
-- a back-office endpoint submits a bulk import and another reports on its job; every Zendesk
-- call goes through zendesk.nginx, so a slow Zendesk never stalls the worker.
local zendesk_nginx = require "zendesk.nginx"
local core = require "zendesk.core"

local ngx = ngx
local encode, decode = core.encode, core.decode
local ceil, pairs, tostring, type = math.ceil, pairs, tostring, type

local _M = {}

local client   -- this worker's, made once by init()

-- What the public may set about themselves. Never role, external_id, organization and the like:
-- an upsert matches existing users, so those would let a stranger edit someone else's account.
local SIGNUP_FIELDS = { email = true, name = true, phone = true, locale = true, time_zone = true }

-- The sign-up answer needs only the user's id (and meta.created): asking for just that spares
-- copying the whole Zendesk user (45 fields) from the pool thread's Lua VM to the worker's.
local SIGNUP_RESULT = { fields = { "id" } }

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes the rotated OAuth pair where the next start reads it: the old pair is dead already.
-- A new file renamed over the old one, mode 0600, so a crash never leaves half a file.
local function save_tokens(path, oauth, rotated)
  local out = {
    access_token = rotated.access_token,
    refresh_token = rotated.refresh_token or oauth.refresh_token,
    client_id = oauth.client_id,
    client_secret = oauth.client_secret,
  }
  local tmp = path .. ".new"
  local f
  local ok, err = core.create_private(tmp, true)
  if ok then f, err = io.open(tmp, "wb") end
  if f then
    ok, err = f:write(encode(out))
    if ok then ok, err = core.fsync(f) end
    f:close()
    if ok then ok, err = os.rename(tmp, path) end
  end
  if not ok then
    ngx.log(ngx.ERR, "zendesk: could not save the rotated OAuth tokens to ", path, ": ", tostring(err))
  end
end

-- Connection and credentials from the environment (nginx.conf's `env` lines).
local function from_env(opts)
  local env = os.getenv
  opts.url, opts.subdomain = env("ZENDESK_URL"), env("ZENDESK_SUBDOMAIN")
  local oauth_file = env("ZENDESK_OAUTH_FILE")
  if oauth_file then
    -- {"access_token": ..., "refresh_token": ..., "client_id": ..., "client_secret": ...}
    local text, err = read_file(oauth_file)
    local t = text and decode(text)
    if type(t) ~= "table" then
      error("ZENDESK_OAUTH_FILE: cannot read OAuth tokens from " .. oauth_file .. ": " .. tostring(err), 0)
    end
    local oauth = {
      access_token = t.access_token, refresh_token = t.refresh_token,
      client_id = t.client_id, client_secret = t.client_secret,
    }
    oauth.on_refresh = function(rotated)
      save_tokens(oauth_file, oauth, rotated)
      ngx.log(ngx.NOTICE, "zendesk: OAuth tokens rotated, saved to ", oauth_file)
    end
    opts.oauth = oauth
    return opts
  end
  opts.email = env("ZENDESK_EMAIL")
  opts.token = env("ZENDESK_API_TOKEN")
  local token_file = env("ZENDESK_API_TOKEN_FILE")
  if not opts.token and token_file then
    local text, err = read_file(token_file)
    if not text then
      error("ZENDESK_API_TOKEN_FILE: " .. tostring(err), 0)
    end
    opts.token = text:match("^%s*(.-)%s*$")
  end
  return opts
end

-- Retries are worth a line in the log: a Zendesk that needs many is a Zendesk in trouble.
local function on_event(ev)
  if ev.type == "retry" then
    ngx.log(ngx.WARN, "zendesk: ", ev.method, " ", ev.path, ": ", ev.reason, ", attempt ", ev.attempt,
            " retried after ", string.format("%.2f", ev.wait), " s",
            ev.request_id and (" [request_id " .. ev.request_id .. "]") or "")
  end
end

-- syntax: zendesk_app.init(opts)   (init_worker_by_lua*; opts: zendesk.nginx.new's, minus credentials)
function _M.init(opts)
  opts = opts or {}
  opts.on_event = opts.on_event or on_event
  local ok, c = pcall(zendesk_nginx.new, from_env(opts))
  if not ok then
    -- the message names the option at fault, never its value
    ngx.log(ngx.ERR, "zendesk: not configured: ", tostring(c))
    return
  end
  client = c
end

local function send(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  if headers then
    for k, v in pairs(headers) do ngx.header[k] = v end
  end
  ngx.say((assert(encode(body))))
end

local function bad_request(message, field)
  return send(400, { error = "invalid_request", field = field, message = message })
end

-- Maps a zendesk error to an answer: our input -> 400, budget -> 503 + Retry-After,
-- Zendesk's own failures -> 502 carrying its code and request id for support.
local function fail(err, what)
  if err.kind == "validation" then
    return send(400, { error = "invalid_request", field = err.field, message = err.message })
  end
  if err.kind == "rate_limited" then
    local after = ceil(tonumber(err.retry_after) or 1)
    return send(503, { error = "rate_limited", message = err.message, retry_after = after },
                { ["Retry-After"] = after })
  end
  ngx.log(ngx.ERR, "zendesk: ", what, " failed: ", tostring(err))
  return send(502, {
    error = "zendesk_error", kind = err.kind, status = err.status, code = err.code,
    message = err.message, details = err.details, request_id = err.request_id,
  })
end

-- The request body as JSON, or nil and a message for the 400.
local function json_body()
  ngx.req.read_body()
  local text = ngx.req.get_body_data()
  if not text then
    local file = ngx.req.get_body_file()
    if file then text = read_file(file) end
  end
  if not text or text == "" then
    return nil, "request body is empty (expected JSON)"
  end
  local v, err = decode(text)
  if v == nil then
    return nil, "request body is not valid JSON: " .. tostring(err and err.message)
  end
  return v
end

local function ready(method)
  if ngx.req.get_method() ~= method then
    send(405, { error = "method_not_allowed", message = "use " .. method }, { Allow = method })
    return false
  end
  if not client then
    send(503, { error = "not_configured", message = "the Zendesk client is not configured (see the error log)" })
    return false
  end
  return true
end

-- GET /health: answers at once, without Zendesk.
function _M.health()
  ngx.header["Content-Type"] = "application/json"
  ngx.say('{"status":"ok"}')
end

-- POST /signup {"email": ..., "name": ...} -> 201 (new user) or 200 {"id": <Zendesk id>, "created": bool}
function _M.signup()
  if not ready("POST") then return end
  local body, msg = json_body()
  if body == nil then return bad_request(msg) end
  if type(body) ~= "table" or #body > 0 then
    return bad_request('request body must be a JSON object such as {"email": "ann@example.com", "name": "Ann"}')
  end
  local user = {}
  for k, v in pairs(body) do
    if not SIGNUP_FIELDS[k] then
      return bad_request("unknown field '" .. tostring(k)
        .. "' (a sign-up takes email, name, phone, locale, time_zone)", tostring(k))
    end
    user[k] = v
  end
  if user.email == nil then return bad_request("email: is required", "email") end
  if user.name == nil then return bad_request("name: is required", "name") end
  local u, meta = client:upsert_user(user, SIGNUP_RESULT)
  if not u then return fail(meta, "sign-up") end
  return send(meta.created and 201 or 200, { id = u.id, created = meta.created })
end

-- POST /bulk [{user}, ...] (1 to 100) -> 202 {"job_id": ..., "status": "queued", "url": "/jobs/<id>"}
-- POST /bulk?wait=1 -> 200 and the finished job_status (polled with ngx.sleep, at most 60 s)
function _M.bulk()
  if not ready("POST") then return end
  local body, msg = json_body()
  if body == nil then return bad_request(msg) end
  if type(body) ~= "table" or (#body == 0 and next(body) ~= nil) then
    return bad_request("request body must be a JSON array of users")
  end
  if #body < 1 or #body > 100 then
    return bad_request("expected 1 to 100 users, got " .. #body)
  end
  local job, err = client:upsert_users(body)
  if not job then return fail(err, "bulk upsert") end
  if ngx.var.arg_wait then
    local done, werr = client:wait_job(job, { timeout = 60 })
    if not done then return fail(werr, "bulk job " .. job.id) end
    return send(200, done)
  end
  return send(202, { job_id = job.id, status = job.status, total = job.total, url = "/jobs/" .. job.id })
end

-- GET /jobs/{id} -> the job_status as Zendesk reports it (results once completed)
function _M.job(id)
  if not ready("GET") then return end
  local js, err = client:job_status(id)
  if not js then
    if err.status == 404 then
      return send(404, { error = "not_found", code = err.code, message = err.message, request_id = err.request_id })
    end
    return fail(err, "job lookup")
  end
  return send(200, js)
end

return _M
