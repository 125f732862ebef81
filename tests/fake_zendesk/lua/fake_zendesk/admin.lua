-- Admin endpoints of the stand-in (no auth; the server listens on loopback):
-- reset, users, config, faults, recorded requests, stats, health.
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"
local users = require "fake_zendesk.users"
local faults = require "fake_zendesk.faults"

local ngx = ngx
local concat = table.concat

local _M = {}

local function err(status, message)
  return status, '{"error":' .. json.str(message) .. "}"
end

local function decode_body(body)
  if body == nil or body == "" then return {} end
  local v = json.decode(body)
  if v == nil then return nil end
  return v
end

local function requests_json()
  local log = state.reqlog
  local n = log:get("n") or 0
  local parts = {}
  for i = math.max(1, n - 999), n do
    local e = log:get("r:" .. i)
    if e then parts[#parts + 1] = e end
  end
  return '{"requests":[' .. concat(parts, ",") .. "]}"
end

local handlers = {
  ["POST /__admin/reset"] = function()
    state.reset()
    return 200, '{"reset":true}'
  end,
  ["GET /__admin/health"] = function()
    return 200, '{"status":"ok"}'
  end,
  ["GET /__admin/users"] = function(r)
    local args = ngx.req.get_uri_args()
    local d = args.deleted
    local recs = users.all(d == true or d == "1" or d == "true")
    local cfg = state.config()
    local parts = {}
    for i, rec in ipairs(recs) do parts[i] = users.render_admin(rec, r.base, cfg) end
    return 200, '{"users":[' .. concat(parts, ",") .. '],"count":' .. #parts .. "}"
  end,
  ["GET /__admin/config"] = function()
    return 200, state.config_json()
  end,
  ["POST /__admin/config"] = function(r)
    local body = decode_body(r.body)
    if body == nil then return err(400, "body is not valid JSON") end
    local ok, msg = state.update_config(body)
    if not ok then return err(400, msg) end
    return 200, state.config_json()
  end,
  ["GET /__admin/faults"] = function()
    return 200, faults.list_json()
  end,
  ["POST /__admin/faults"] = function(r)
    local body = decode_body(r.body)
    if body == nil then return err(400, "body is not valid JSON") end
    local f, msg = faults.add(body)
    if not f then return err(400, msg) end
    return 200, '{"fault":' .. json.encode(f) .. "}"
  end,
  ["DELETE /__admin/faults"] = function()
    faults.clear()
    return 200, '{"faults":[]}'
  end,
  ["GET /__admin/requests"] = function()
    return 200, requests_json()
  end,
  ["DELETE /__admin/requests"] = function()
    state.reqlog:flush_all()
    state.reqlog:flush_expired()
    return 200, '{"requests":[]}'
  end,
  ["GET /__admin/stats"] = function()
    return 200, state.stats_json()
  end,
}

function _M.handle(r)
  local h = handlers[r.method .. " " .. r.path]
  if not h then return err(404, "no such admin endpoint: " .. r.method .. " " .. r.path) end
  return h(r)
end

return _M
