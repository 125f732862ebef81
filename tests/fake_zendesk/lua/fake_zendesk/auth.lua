-- Authentication of the stand-in: Basic API token, Bearer access tokens, and
-- the OAuth token endpoint (refresh rotation, client_credentials, expiry).
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"

local ngx = ngx
local zd = state.zd
local str = json.str

local _M = {}

local JSON_CT = "application/json; charset=utf-8"
local EXPECTED_BASIC = "Basic " .. ngx.encode_base64(state.EMAIL .. "/token:" .. state.TOKEN)

local BAD_BASIC = '{"error":"Couldn\'t authenticate you"}'
local BAD_BEARER = '{"error":"invalid_token","error_description":"The access token provided is expired, '
  .. 'revoked, malformed or invalid for other reasons."}'

local function basic_401()
  return 401, BAD_BASIC, { ["WWW-Authenticate"] = 'Basic realm="Web Password"' }
end

local function bearer_401()
  return 401, BAD_BEARER, { ["WWW-Authenticate"] = 'Bearer realm="Zendesk", error="invalid_token"' }
end

local function token_valid(t)
  local rec = zd:get("tok:a:" .. t)
  if not rec then return false end
  local issued, gen = rec:match("^([^|]+)|(.+)$")
  if tonumber(gen) < (zd:get("tok:gen") or 0) then return false end
  local ttl = state.config().token_ttl_s
  if ttl > 0 and ngx.now() >= tonumber(issued) + ttl then return false end
  return true
end

-- nil when the Authorization header is acceptable, else status, body, headers.
function _M.check(authz)
  if authz == EXPECTED_BASIC then return nil end
  if type(authz) ~= "string" then return basic_401() end
  local scheme, cred = authz:match("^(%S+)%s+(%S+)%s*$")
  scheme = scheme and scheme:lower()
  if scheme == "bearer" then
    if token_valid(cred) then return nil end
    return bearer_401()
  end
  if scheme == "basic" then
    local plain = ngx.decode_base64(cred)
    local user, pass = (plain or ""):match("^([^:]*):(.*)$")
    if user and user:lower() == state.EMAIL .. "/token" and pass == state.TOKEN then return nil end
  end
  return basic_401()
end

local seq = 0
local function new_token()
  seq = seq + 1
  local seed = ngx.now() .. ":" .. ngx.worker.pid() .. ":" .. seq .. ":" .. math.random()
  return ngx.md5(seed) .. ngx.md5(seed .. "#")
end

local function issue_access()
  local t = new_token()
  zd:safe_set("tok:a:" .. t, ngx.now() .. "|" .. (zd:get("tok:gen") or 0))
  return t
end

local function token_body(access, refresh)
  local ttl = state.config().token_ttl_s
  return '{"access_token":' .. str(access)
    .. (refresh and ',"refresh_token":' .. str(refresh) or "")
    .. ',"token_type":"bearer","scope":"read write","expires_in":' .. (ttl > 0 and json.num(ttl) or "null") .. "}"
end

local function oauth_error(status, code, description)
  return status, '{"error":' .. str(code) .. ',"error_description":' .. str(description) .. "}"
end

local function params(body)
  local ctype = ngx.var.content_type or ""
  if ctype:find("json", 1, true) then
    local p = json.decode(body or "")
    return type(p) == "table" and p or {}
  end
  return ngx.req.get_post_args() or {}
end

-- POST /oauth/tokens
function _M.tokens(r)
  local p = params(r.body)
  local id, secret = p.client_id, p.client_secret
  local authz = ngx.var.http_authorization
  if not id and authz then
    local plain = ngx.decode_base64(authz:match("^[Bb]asic%s+(%S+)") or "")
    if plain then id, secret = plain:match("^([^:]*):(.*)$") end
  end
  if id ~= state.CLIENT_ID or secret ~= state.CLIENT_SECRET then
    return oauth_error(401, "invalid_client", "Client authentication failed due to unknown client, "
      .. "no client authentication included, or unsupported authentication method.")
  end
  if p.grant_type == "refresh_token" then
    local rt = p.refresh_token
    if type(rt) ~= "string" or rt == "" then
      return oauth_error(400, "invalid_request", "The request is missing a required parameter: refresh_token.")
    end
    local access, refresh = state.locked(function()
      local old_access = zd:get("tok:r:" .. rt)
      if not old_access then return nil end
      zd:delete("tok:r:" .. rt)
      if old_access ~= "" then zd:delete("tok:a:" .. old_access) end
      local a = issue_access()
      local nr = new_token()
      zd:safe_set("tok:r:" .. nr, a)
      return a, nr
    end)
    if not access then
      return oauth_error(400, "invalid_grant", "The provided authorization grant is invalid, expired, revoked, "
        .. "does not match the redirection URI used in the authorization request, or was issued to another client.")
    end
    return 200, token_body(access, refresh)
  elseif p.grant_type == "client_credentials" then
    return 200, token_body(issue_access(), nil)
  elseif p.grant_type == nil then
    return oauth_error(400, "invalid_request", "The request is missing a required parameter: grant_type.")
  end
  return oauth_error(400, "unsupported_grant_type",
    "The authorization grant type is not supported by the authorization server.")
end

_M.JSON_CT = JSON_CT

return _M
