-- Fault injection: which request gets which failure, counted across workers,
-- and how each failure is produced on the wire.
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"

local ngx = ngx
local zd, meta = state.zd, state.meta

local _M = {}

local ACTIONS = { status = true, reset = true, invalid_json = true, truncate = true, delay = true, hang = true }
local JOB_OUTCOMES = { failed = true, killed = true, completed = true }

local function html(code, text)
  return "text/html; charset=utf-8",
    "<html>\r\n<head><title>" .. code .. " " .. text .. "</title></head>\r\n<body>\r\n<center><h1>"
    .. code .. " " .. text .. "</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
end

local JSON_CT = "application/json; charset=utf-8"
local DEFAULT_BODIES = {
  [400] = { JSON_CT, '{"error":"BadRequest","description":"Bad request"}' },
  [401] = { JSON_CT, '{"error":"Couldn\'t authenticate you"}' },
  [403] = { JSON_CT, '{"error":{"title":"Forbidden","message":"You do not have access to this page. '
    .. 'Please contact the account owner of this help desk for further help."}}' },
  [404] = { JSON_CT, '{"error":"RecordNotFound","description":"Not found"}' },
  [409] = { JSON_CT, '{"error":"DatabaseConflict","description":"Database collision"}' },
  [413] = { html(413, "Request Entity Too Large") },
  [422] = { JSON_CT, '{"error":"RecordInvalid","description":"Record validation errors","details":{}}' },
  [429] = { "text/plain; charset=UTF-8", "Too Many Requests" },
  [500] = { JSON_CT, '{"error":"InternalServerError","description":"Something went wrong"}' },
  [502] = { html(502, "Bad Gateway") },
  [503] = { html(503, "Service Temporarily Unavailable") },
  [504] = { html(504, "Gateway Time-out") },
}

function _M.default_body(status)
  local d = DEFAULT_BODIES[status]
  if d then return d[1], d[2] end
  return JSON_CT, '{"error":"Error","description":"Injected fault ' .. status .. '"}'
end

local function strip(path)
  return (path:gsub("%.json$", ""))
end

-- Validates and stores one fault; returns it or nil, message.
function _M.add(f)
  if type(f) ~= "table" then return nil, "body must be a JSON object" end
  local fault = {
    count = f.count == nil and 1 or f.count,
    after = f.after == nil and 0 or f.after,
  }
  if type(fault.count) ~= "number" or fault.count < 0 or type(fault.after) ~= "number" or fault.after < 0 then
    return nil, "count and after must be non-negative numbers"
  end
  if f.job ~= nil then
    if not JOB_OUTCOMES[f.job] then return nil, 'job must be "failed", "killed" or "completed"' end
    fault.job = f.job
    -- echoes: the job's message at every phase, and string fields added to every result
    if f.message ~= nil then
      if type(f.message) ~= "string" then return nil, "message must be a string" end
      fault.message = f.message
    end
    if f.result ~= nil then
      if type(f.result) ~= "table" then return nil, "result must be an object of strings" end
      fault.result = {}
      for k, v in pairs(f.result) do
        if type(v) ~= "string" then return nil, "result must be an object of strings" end
        fault.result[tostring(k)] = v
      end
    end
  else
    if type(f.path) ~= "string" or f.path:sub(1, 1) ~= "/" then return nil, "path must be an absolute path" end
    fault.path = strip(f.path)
    fault.action = f.action or "status"
    if not ACTIONS[fault.action] then
      return nil, "action must be one of status, reset, invalid_json, truncate, delay, hang"
    end
    if f.method ~= nil then
      if type(f.method) ~= "string" then return nil, "method must be a string" end
      fault.method = f.method:upper()
    end
    if fault.action == "status" then
      fault.status = f.status or 503
      if type(fault.status) ~= "number" or fault.status < 100 or fault.status > 599 then
        return nil, "status must be an HTTP status code"
      end
    elseif f.status ~= nil then
      fault.status = f.status
    end
    if f.headers ~= nil then
      if type(f.headers) ~= "table" then return nil, "headers must be an object" end
      fault.headers = {}
      for k, v in pairs(f.headers) do fault.headers[tostring(k)] = tostring(v) end
    end
    if f.body ~= nil then
      if type(f.body) ~= "string" then return nil, "body must be a string" end
      fault.body = f.body
    end
    if f.content_type ~= nil then fault.content_type = tostring(f.content_type) end
    -- pad: that many spaces after the body (still valid JSON; gzip makes it a small download
    -- that decodes large, like a gzip bomb)
    if f.pad ~= nil then
      if type(f.pad) ~= "number" or f.pad < 0 or f.pad > 256 * 1024 * 1024 then
        return nil, "pad must be a number of bytes (0 to 256 MiB)"
      end
      fault.pad = math.floor(f.pad)
    end
    fault.delay_ms = tonumber(f.delay_ms) or (fault.action == "delay" and 1000 or nil)
  end
  return state.locked(function()
    local list = json.raw_decode(zd:get("faults") or "[]")
    fault.id = zd:incr("faults:id", 1, 0)
    list[#list + 1] = fault
    zd:set("faults", json.encode(list))
    meta:incr("faults_ver", 1, 0)
    return fault
  end)
end

-- The body of a status fault: its own or the default one, then its padding.
function _M.body_of(f, body)
  if f.pad and f.pad > 0 then return body .. string.rep(" ", f.pad) end
  return body
end

function _M.clear()
  zd:delete("faults")
  meta:incr("faults_ver", 1, 0)
end

local cache, cache_ver = {}, -1
local function list()
  local v = meta:get("faults_ver") or 0
  if v ~= cache_ver then
    local raw = zd:get("faults")
    cache = raw and json.raw_decode(raw) or {}
    cache_ver = v
  end
  return cache
end

function _M.list_json()
  local out = {}
  for i, f in ipairs(list()) do
    local copy = {}
    for k, v in pairs(f) do copy[k] = v end
    copy.seen = zd:get("f:" .. f.id) or 0
    out[i] = copy
  end
  if #out == 0 then return '{"faults":[]}' end
  return '{"faults":' .. json.encode(out) .. "}"
end

local function takes(f)
  local n = zd:incr("f:" .. f.id, 1, 0)
  return n > f.after and n <= f.after + f.count
end

-- The fault this request gets, if any (path without .json).
function _M.match(method, path)
  local l = list()
  if #l == 0 then return nil end
  for _, f in ipairs(l) do
    local p = f.path
    if p and (not f.method or f.method == method) and path:sub(1, #p) == p then
      local nxt = path:sub(#p + 1, #p + 1)
      if (nxt == "" or nxt == "/" or p:sub(-1) == "/") and takes(f) then
        state.stat("faults")
        return f
      end
    end
  end
  return nil
end

-- "failed" / "killed" / "completed" for the next submitted job, if a job fault applies, and
-- the fault (its message and result echoes).
function _M.take_job_outcome()
  local l = list()
  if #l == 0 then return nil end
  for _, f in ipairs(l) do
    if f.job and takes(f) then
      state.stat("faults")
      return f.job, f
    end
  end
  return nil
end

-- Sends a partial response, then drops the connection: a transport error for
-- the client, never a clean answer.
function _M.reset_connection(f)
  local status = f.status or 200
  local ctype = f.content_type or JSON_CT
  local body = f.body
    or '{"user":{"id":36146830593,"url":"https://example.zendesk.com/api/v2/users/36146830593.json","name":"'
  local part = body:sub(1, math.max(1, math.floor(#body / 2)))
  local sock = ngx.req.socket(true)
  if sock then
    sock:send("HTTP/1.1 " .. status .. " OK\r\nContent-Type: " .. ctype .. "\r\nContent-Length: "
      .. (#body + 1000) .. "\r\nConnection: keep-alive\r\n\r\n" .. part)
  end
  return ngx.exit(444)
end

return _M
