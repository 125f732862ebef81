-- Test-only handlers that tests/support/nginx.lua adds to examples/nginx.conf when asked
-- (start{probe = true}): they call a zendesk.nginx client of their own with the arguments the
-- spec sends, and count its trips to the thread pool, which no HTTP answer shows otherwise.
--   POST /t/upsert {"user": {...}, "opts": ...} -> {"ok": true, "user": ..., "created": bool}
--                                                 or {"ok": false, "error": "<message raised>"}
--   GET /t/calls -> {"calls": n, "with_cfg": n, "need_cfg": n} since the last GET (this worker)
local core = require "zendesk.core"

local ngx = ngx
local encode, decode = core.encode, core.decode

local _M = {}

local client
local counts = { calls = 0, with_cfg = 0, need_cfg = 0 }

-- A copy of zendesk.nginx of its own, loaded while ngx.run_worker_thread counts its calls (the
-- module keeps the function it finds at load time; the example's copy is left as it was).
local function new_client()
  local real = ngx.run_worker_thread  -- luacheck: ignore 143 (newer than luacheck's ngx_lua std)
  local function counting(pool, module, fn, key, cfg, ...)
    local ok, out = real(pool, module, fn, key, cfg, ...)
    counts.calls = counts.calls + 1
    if cfg ~= nil then counts.with_cfg = counts.with_cfg + 1 end
    if ok and type(out) == "table" and out.need_cfg then counts.need_cfg = counts.need_cfg + 1 end
    return ok, out
  end
  local loaded = package.loaded["zendesk.nginx"]
  package.loaded["zendesk.nginx"] = nil
  ngx.run_worker_thread = counting  -- luacheck: ignore 142 (newer than luacheck's ngx_lua std)
  local ok, zendesk_nginx = pcall(require, "zendesk.nginx")
  ngx.run_worker_thread = real  -- luacheck: ignore 142 (newer than luacheck's ngx_lua std)
  package.loaded["zendesk.nginx"] = loaded
  assert(ok, zendesk_nginx)
  local f = assert(io.open(os.getenv("ZENDESK_API_TOKEN_FILE")))
  local token = f:read("*l")
  f:close()
  return zendesk_nginx.new{
    url = os.getenv("ZENDESK_URL"), email = os.getenv("ZENDESK_EMAIL"), token = token,
    user_agent = "nginx-probe", max_wait = 5,
  }
end

local function send(t)
  ngx.header["Content-Type"] = "application/json"
  ngx.say((assert(encode(t))))
end

function _M.upsert()
  client = client or new_client()
  ngx.req.read_body()
  local req = decode(ngx.req.get_body_data())
  local ok, user, meta = pcall(client.upsert_user, client, req.user, req.opts)
  if not ok then return send{ ok = false, error = tostring(user) } end
  if not user then return send{ ok = false, error = tostring(meta) } end
  return send{ ok = true, user = user, created = meta.created }
end

function _M.calls()
  local out = counts
  counts = { calls = 0, with_cfg = 0, need_cfg = 0 }
  return send(out)
end

return _M
