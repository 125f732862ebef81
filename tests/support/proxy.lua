-- Test helper: a small forward HTTP proxy (nginx with a generated configuration) for checking
-- that a client's `proxy` option really sends its traffic through a proxy. It forwards
-- absolute-form requests (what libcurl sends to an http proxy) to the host they name, adds
-- "X-Test-Proxy: <its port>" so the target can tell proxied requests apart, and logs each
-- request line to access.log. Plain http only (no CONNECT).
local standin = require "support.standin"

local sh, q = standin.sh, standin.shell_quote
local read_file, write_file = standin.read_file, standin.write_file

local M = {}
local Proxy = {}
Proxy.__index = Proxy

local CONF = [[
@USER@
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 64; }
http {
    log_format line '$request';
    access_log @DIR@/access.log line;
    client_body_temp_path @DIR@/tmp;
    proxy_temp_path @DIR@/tmp;
    fastcgi_temp_path @DIR@/tmp;
    uwsgi_temp_path @DIR@/tmp;
    scgi_temp_path @DIR@/tmp;
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            proxy_pass http://$http_host;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_set_header X-Test-Proxy "@PORT@";
        }
    }
}
]]

function M.start()
  local dir = sh("mktemp -d /tmp/zd-proxy.XXXXXX"):match("^%s*(.-)%s*$")
  sh("mkdir -p " .. q(dir .. "/tmp"))
  local is_root = sh("id -u"):match("^0") ~= nil
  for _ = 1, 5 do
    local port = math.random(20000, 60000)
    local conf = CONF:gsub("@USER@", is_root and "user root;" or ""):gsub("@DIR@", dir):gsub("@PORT@", tostring(port))
    write_file(dir .. "/nginx.conf", conf)
    local out, code = sh("nginx -p " .. q(dir .. "/") .. " -c " .. q(dir .. "/nginx.conf") .. " 2>&1")
    if code == 0 then
      return setmetatable({ dir = dir, port = port, url = "http://127.0.0.1:" .. port }, Proxy)
    end
    if not out:find("Address already in use", 1, true) then
      sh("rm -rf " .. q(dir))
      error("the test proxy did not start:\n" .. out)
    end
  end
  sh("rm -rf " .. q(dir))
  error("no free port for the test proxy")
end

-- The request lines the proxy handled, in order.
function Proxy:requests()
  local out = {}
  for line in (read_file(self.dir .. "/access.log") or ""):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

function Proxy:stop()
  local pid = (read_file(self.dir .. "/nginx.pid") or ""):match("%d+")
  if pid then
    sh("kill -TERM " .. pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if select(2, sh("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then break end
      sh("sleep 0.05")
    end
  end
  sh("rm -rf " .. q(self.dir))
end

return M
