-- Test helper: runs examples/nginx.conf in a real nginx (a temporary prefix, a free port, the
-- checkout's lua/ and build/luajit/) and drives it with the curl command line: single requests,
-- and batches sent with `curl --parallel` from one process, so a rate measured here is nginx's,
-- not process start-up's. Lua 5.4 and LuaJIT.
local standin = require "support.standin"
local read_file, write_file = standin.read_file, standin.write_file

local sh, q = standin.sh, standin.shell_quote
local ROOT = standin.ROOT

local M = { ROOT = ROOT }

M.read_file = read_file

M.write_file = write_file

-- Replaces `from` by `to` in text exactly once (plain text); the example must still have it.
local function replace(text, from, to)
  local s, e = text:find(from, 1, true)
  assert(s, "examples/nginx.conf no longer contains: " .. from)
  return text:sub(1, s - 1) .. to .. text:sub(e + 1)
end

local function is_root()
  return sh("id -u"):match("^0") ~= nil
end

local Nginx = {}
Nginx.__index = Nginx

-- opts: workers (worker_processes), init (Lua table fields for zendesk_app.init, replacing the
-- example's), env ({NAME = value} for nginx's environment; the example's `env` lines pass them),
-- probe (true: add tests/support/nginx_probe.lua's /t/upsert and /t/calls).
function M.start(opts)
  opts = opts or {}
  assert(io.open(ROOT .. "build/luajit/zendesk/core.so"), "build the LuaJIT core first: make LUA=luajit")
  local dir = sh("mktemp -d /tmp/zd-nginx-spec.XXXXXX"):match("^%s*(.-)%s*$")
  assert(sh("mkdir -p " .. q(dir .. "/logs")) == "")
  local conf = assert(read_file(ROOT .. "examples/nginx.conf"))
  -- the checkout's modules instead of $prefix (the prefix here is the temporary directory)
  conf = conf:gsub('lua_package_c?path "[^"]*"', function(line) return (line:gsub("%$prefix/", ROOT)) end)
  conf = replace(conf, "worker_processes 2;", "worker_processes " .. (opts.workers or 2) .. ";")
  if opts.init then
    conf = replace(conf, "max_wait = 10,   -- seconds a request may wait for rate budget before a 503", opts.init)
  end
  if opts.probe then
    local examples = ROOT .. "examples/nginx/?.lua;"
    conf = replace(conf, examples, examples .. ROOT .. "tests/support/?.lua;")
    conf = replace(conf, "        location = /health {", [[
        location = /t/upsert {
            content_by_lua_block { require("nginx_probe").upsert() }
        }
        location = /t/calls {
            content_by_lua_block { require("nginx_probe").calls() }
        }

        location = /health {]])
  end
  if is_root() then
    conf = "user root;\n" .. conf   -- the workers read the checkout and write the temp dirs
  end
  local envs = {}
  for k, v in pairs(opts.env or {}) do envs[#envs + 1] = k .. "=" .. q(v) end
  local self = setmetatable({ dir = dir }, Nginx)
  for _ = 1, 5 do
    self.port = math.random(20000, 60000)
    write_file(dir .. "/nginx.conf", replace(conf, "listen 127.0.0.1:8080 ", "listen 127.0.0.1:" .. self.port .. " "))
    local out, code = sh("env " .. table.concat(envs, " ") .. " nginx -p " .. q(dir .. "/") .. " -c "
      .. q(dir .. "/nginx.conf") .. " 2>&1")
    if code == 0 then
      self.url = "http://127.0.0.1:" .. self.port
      for _ = 1, 100 do
        if self:request("GET", "/health").status == 200 then return self end
        sh("sleep 0.05")
      end
      self:stop()
      error("nginx started but /health does not answer; " .. dir .. "/logs/error.log:\n" .. self:error_log())
    end
    if not out:find("Address already in use", 1, true) then
      error("nginx did not start:\n" .. out .. "\n" .. (read_file(dir .. "/logs/error.log") or ""))
    end
  end
  error("no free port for nginx")
end

function Nginx:error_log()
  return read_file(self.dir .. "/logs/error.log") or ""
end

function Nginx:access_log()
  return read_file(self.dir .. "/logs/access.log") or ""
end

local function alive(pid)
  return select(2, sh("kill -0 " .. pid .. " 2>/dev/null")) == 0
end

-- Stops nginx and waits until its master has gone (killing it and its workers if a fast
-- shutdown takes over 5 s); removes the prefix unless keep.
function Nginx:stop(keep)
  local pid = (read_file(self.dir .. "/logs/nginx.pid") or ""):match("%d+")
  if pid then
    sh("kill -TERM " .. pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if not alive(pid) then break end
      sh("sleep 0.05")
    end
    if alive(pid) then
      sh("for w in $(pgrep -P " .. pid .. "); do kill -KILL $w; done; kill -KILL " .. pid .. " 2>/dev/null")
    end
  end
  if not keep then sh("rm -rf " .. q(self.dir)) end
end

-- One request; returns {status =, body =, headers = {lowercase name = value}, time =}.
function Nginx:request(method, path, body)
  local hfile, bfile = os.tmpname(), os.tmpname()
  local cmd = "curl -s -X " .. method .. " -D " .. q(hfile) .. " -o " .. q(bfile)
    .. " -w '%{http_code} %{time_total}' --max-time 30"
  local infile
  if body then
    infile = os.tmpname()
    write_file(infile, body)
    cmd = cmd .. " -H 'Content-Type: application/json' --data-binary @" .. q(infile)
  end
  local out = sh(cmd .. " " .. q(self.url .. path))
  local res = { body = read_file(bfile) or "", headers = {} }
  local code, t = out:match("(%d%d%d) ([%d%.]+)")
  res.status, res.time = tonumber(code) or 0, tonumber(t)
  for name, value in (read_file(hfile) or ""):gmatch("\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    res.headers[name:lower()] = value
  end
  os.remove(hfile)
  os.remove(bfile)
  if infile then os.remove(infile) end
  return res
end

-- A curl config file sending each body as one POST to url.
local function batch_config(url, bodies, headers)
  local lines = {}
  for i, body in ipairs(bodies) do
    if i > 1 then lines[#lines + 1] = "next" end
    lines[#lines + 1] = 'url = "' .. url .. '"'
    lines[#lines + 1] = 'data-binary = "' .. body:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
    lines[#lines + 1] = 'header = "Content-Type: application/json"'
    for _, h in ipairs(headers or {}) do lines[#lines + 1] = 'header = "' .. h .. '"' end
    lines[#lines + 1] = 'output = "/dev/null"'
    lines[#lines + 1] = 'write-out = "%{http_code} %{time_total}\\n"'
    lines[#lines + 1] = "max-time = 60"
  end
  local cfg = os.tmpname()
  write_file(cfg, table.concat(lines, "\n") .. "\n")
  return cfg
end

local function answers_in(text)
  local answers = {}
  for code, t in (text or ""):gmatch("(%d%d%d) ([%d%.]+)") do
    answers[#answers + 1] = { status = tonumber(code), time = tonumber(t) }
  end
  return answers
end
M.answers_in = answers_in

-- Sends the bodies as POSTs to url from one curl process, at most `concurrency` in flight.
-- Returns the answers ({status =, time =}, in completion order) and the wall time in seconds.
function M.parallel(url, bodies, concurrency, headers)
  local cfg, out = batch_config(url, bodies, headers), os.tmpname()
  local text = sh("s=$(date +%s.%N); curl -s --parallel --parallel-immediate --parallel-max " .. concurrency
    .. " -K " .. q(cfg) .. " > " .. q(out) .. " 2>/dev/null; e=$(date +%s.%N); echo \"$s $e\"")
  local s, e = text:match("([%d%.]+) ([%d%.]+)")
  local answers = answers_in(read_file(out))
  os.remove(cfg)
  os.remove(out)
  return answers, tonumber(e) - tonumber(s)
end

-- The same, in the background: returns the file the answers land in, a line per request as it
-- finishes, and a function that waits for the batch and cleans up.
function M.parallel_background(url, bodies, concurrency)
  local cfg, out, done = batch_config(url, bodies), os.tmpname(), os.tmpname()
  os.remove(done)
  os.execute("(curl -s --parallel --parallel-immediate --parallel-max " .. concurrency .. " -K " .. q(cfg)
    .. " > " .. q(out) .. " 2>/dev/null; touch " .. q(done) .. ") &")
  return out, function(timeout)
    for _ = 1, timeout * 20 do
      if io.open(done) then break end
      sh("sleep 0.05")
    end
    local answers = answers_in(read_file(out))
    os.remove(cfg)
    os.remove(out)
    os.remove(done)
    return answers
  end
end

-- Counts the distinct worker pids in the example's access log lines for `path`.
function Nginx:workers_seen(path)
  local pids, n = {}, 0
  for line in self:access_log():gmatch("[^\n]+") do
    local pid = line:find('"POST ' .. path, 1, true) and line:match("pid=(%d+)")
    if pid and not pids[pid] then pids[pid], n = true, n + 1 end
  end
  return n
end

return M
