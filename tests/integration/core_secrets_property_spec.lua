-- Property (issue 12): random server answers that echo a credential in a random place (headers,
-- X-Request-Id included; text and JSON bodies; error codes; job results' error, details and
-- status; the job message), at a random offset, cut at a random point, in a random spelling
-- (plain, the Basic base64, Bearer, the OAuth client secret, tokens before and after a refresh,
-- JSON escapes), driven through upsert_user, request, upsert_users + wait_job, job_statuses,
-- sync_users (journal, CSV report) and bin/zendesk-sync. No output of the library holds a
-- credential, nor a prefix of one (4+ characters) where a string ends.
--   ZD_SEED=n reproduces a run (the seed is printed); ZD_PROPERTY_CASES=n sets how many cases.
local standin = require "support.standin"
local zendesk = require "zendesk"
local core = require "zendesk.core"

local SEED = tonumber(os.getenv("ZD_SEED") or "") or os.time()
local CASES = tonumber(os.getenv("ZD_PROPERTY_CASES") or "") or 48
print(("core_secrets_property_spec: ZD_SEED=%d (%d cases)"):format(SEED, CASES))

local TOKEN = standin.TOKEN
local B64 = standin.base64(standin.EMAIL .. "/token:" .. TOKEN)
local UPSERT, MANY, JOBS = "/api/v2/users/create_or_update", "/api/v2/users/create_or_update_many", "/api/v2/job_statuses"
local q = standin.shell_quote

local rnd = math.random
local function pick(t) return t[rnd(#t)] end

-- every string reachable from v (keys, values, tostring of errors)
local function strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do strings(k, out, seen); strings(x, out, seen) end
    local mt = getmetatable(v)
    if mt and mt.__tostring then out[#out + 1] = tostring(v) end
  elseif type(v) == "string" then
    out[#out + 1] = v
  end
  return out
end

-- the first leak: a secret anywhere, or a 4+ character prefix of one ending a string (the
-- stand-in's own job ids, 32 hex digits, are not echoes: they may end like a hex token)
local function leak(v, secrets)
  for _, s in ipairs(strings(v)) do
    for _, secret in ipairs(secrets) do
      if s:find(secret, 1, true) then return ("%q holds %q"):format(s, secret) end
      if not s:match("^V3%-%x+$") then
        for k = #secret - 1, 4, -1 do
          if s:sub(-k) == secret:sub(1, k) then
            return ("%q ends in %d characters of %q"):format(s, k, secret)
          end
        end
      end
    end
  end
end

-- the cells of a CSV text
local function csv_cells(text)
  local cells, i, n = {}, 1, #text
  while i <= n do
    if text:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while j <= n do
        local ch = text:sub(j, j)
        if ch == '"' and text:sub(j + 1, j + 1) == '"' then buf[#buf + 1] = '"'; j = j + 2
        elseif ch == '"' then j = j + 1; break
        else buf[#buf + 1] = ch; j = j + 1 end
      end
      cells[#cells + 1] = table.concat(buf)
      i = j + 1
    else
      local j = text:find("[,\n]", i) or n + 1
      cells[#cells + 1] = text:sub(i, j - 1)
      i = j + 1
    end
  end
  return cells
end

-- the records of a journal (each line decoded), and its raw text for the whole-secret check
local function journal_of(path)
  local f = io.open(path, "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local recs = { text }
  for line in text:gmatch("[^\n]+") do recs[#recs + 1] = core.decode(line) or line end
  return recs
end

local function file_cells(path)
  local f = io.open(path, "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local t = csv_cells(text)
  t[#t + 1] = text
  return t
end

-- A secret as it may appear in an answer: wrapped ("Basic ...", "Bearer ..."), and for JSON
-- spellings, with some characters written as \uXXXX or \/.
local function spelled(secret, json)
  local s = secret
  if json and rnd(2) == 1 then
    s = s:gsub(".", function(ch)
      if ch == "/" and rnd(2) == 1 then return "\\/" end
      if rnd(3) == 1 then return ("\\u%04x"):format(ch:byte()) end
      return ch
    end)
  end
  return s
end

local function pad(n) return ("p"):rep(n) end
-- a padding that puts a cut at `limit` inside the secret (or anywhere, at random)
local function pad_for(limit, secret)
  if rnd(3) == 1 then return pad(rnd(0, limit + 20)) end
  return pad(math.max(0, limit - rnd(1, #secret)))
end

local function json_str(s) return '"' .. s .. '"' end

describe("credentials never leave the library (property, ZD_SEED=" .. SEED .. ")", function()
  local s

  setup(function()
    s = standin.start()
    math.randomseed(SEED)
  end)
  teardown(function() s:stop() end)

  local function fresh()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
  end

  -- a client and the secrets it holds: API token, or OAuth with a refresh done (old and new pair)
  local function client_for(mode, events)
    local on_event = function(e) events[#events + 1] = e end
    if mode == "token" then
      local c = zendesk.new{ url = s.url, email = standin.EMAIL, token = TOKEN, max_retries = rnd(0, 2),
        retry_base_delay = 0, on_event = on_event }
      return c, { TOKEN, B64 }
    end
    local fresh_pair = {}
    local c = zendesk.new{ url = s.url, max_retries = rnd(1, 2), retry_base_delay = 0, on_event = on_event,
      oauth = { access_token = standin.OAUTH_ACCESS, refresh_token = standin.OAUTH_REFRESH,
        client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET,
        on_refresh = function(t) fresh_pair[#fresh_pair + 1] = t end } }
    s:config{ expire_tokens = true }
    assert(c:upsert_user{ email = "warm@example.com", name = "Warm" })
    assert(#fresh_pair == 1, "the refresh did not happen")
    return c, { fresh_pair[1].access_token, fresh_pair[1].refresh_token, standin.OAUTH_ACCESS,
      standin.OAUTH_REFRESH, standin.CLIENT_SECRET }
  end

  -- the echo of one secret: the string as the server sends it, in a random form
  local function echo_of(mode, secrets)
    local secret = pick(secrets)
    local forms = { secret }
    if mode == "token" and secret == B64 then forms[#forms + 1] = "Basic " .. B64 end
    if mode == "oauth" and secret ~= standin.CLIENT_SECRET then forms[#forms + 1] = "Bearer " .. secret end
    return pick(forms), secret
  end

  -- Places: each sets faults that echo `e` (the raw form) and says which driver meets them.
  local places = {
    text_error = function(e)
      local status = pick{ 400, 404, 413, 500, 503 }
      s:fault{ path = UPSERT, status = status, count = 3, content_type = pick{ "text/plain", "text/html" },
        headers = { ["Retry-After"] = "0" },
        body = pick{ "", "<p>", "line\n" } .. pad_for(200, e) .. e .. pick{ "", " tail", "</p>" } }
      return "upsert"
    end,
    json_error = function(e)
      local v = spelled(e, true)
      local bodies = {
        '{"error":' .. json_str(pad(rnd(0, 20)) .. v) .. '}',
        '{"error":"RecordInvalid","description":' .. json_str(pad(rnd(0, 300)) .. v) .. '}',
        '{"error":{"title":' .. json_str(v) .. ',"message":' .. json_str("m " .. v) .. '}}',
        '{"error":"RecordInvalid","details":{"email":[{"description":' .. json_str("Email: " .. v)
          .. ',"error":' .. json_str(v) .. '}],' .. json_str(v) .. ':[{"description":"k"}]}}',
        '{"error":"invalid_token","error_description":' .. json_str(v) .. '}',
      }
      s:fault{ path = UPSERT, status = pick{ 400, 401, 403, 404, 409, 422, 500 }, count = 3,
        content_type = "application/json", body = pick(bodies) }
      return "upsert"
    end,
    request_id = function(e)
      local rid = pad_for(95, e) .. e
      local status = pick{ 200, 201, 400, 422, 503, 429 }
      s:fault{ path = UPSERT, status = status, count = rnd(1, 3), content_type = "application/json",
        headers = { ["X-Request-Id"] = rid, ["Retry-After"] = "0" },
        body = status < 300 and '{"user":{"id":5,"name":"N"}}' or '{"error":"E","description":"d"}' }
      return "upsert"
    end,
    headers = function(e)
      local name = pick{ "Location", "X-Zendesk-API-Warn" }
      s:fault{ path = UPSERT, status = pick{ 200, 201 }, content_type = "application/json",
        headers = { [name] = pad_for(511, e) .. e }, body = '{"user":{"id":5,"name":"N"}}' }
      return "upsert"
    end,
    success_body = function(e)
      local v = spelled(e, true)
      local user = pick{
        '{"id":5,"name":' .. json_str(v) .. '}',
        '{"id":5,"notes":' .. json_str(pad(rnd(0, 300)) .. v .. " end") .. ',"name":"N"}',
        '{"id":5,"user_fields":{' .. json_str(v) .. ':' .. json_str("x" .. v) .. '},"tags":[' .. json_str(v) .. ']}',
      }
      s:fault{ path = UPSERT, status = 200, content_type = "application/json", body = '{"user":' .. user .. '}' }
      s:fault{ path = "/api/v2/users/me", status = 200, content_type = "application/json",
        body = pick{ '{"user":' .. user .. '}', json_str(v), '[' .. json_str(v) .. ']' } }
      return pick{ "upsert", "upsert_fields", "request" }
    end,
    job_echo = function(e)
      local result = {}
      for _, k in ipairs{ "error", "details", "status" } do
        if rnd(2) == 1 then result[k] = pad(rnd(0, 40)) .. e end
      end
      s:fault{ job = pick{ "completed", "completed", "failed", "killed" }, count = 20,
        message = rnd(2) == 1 and (pad(rnd(0, 60)) .. e) or nil, result = next(result) and result or nil }
      return pick{ "bulk", "bulk", "sync" }
    end,
    poll_answer = function(e)
      local v = spelled(e, true)
      s:fault{ path = JOBS, status = 200, content_type = "application/json", count = 10,
        body = '{"job_status":{"id":"V3-echo","status":' .. pick{ '"completed"', '"failed"', json_str(v) }
          .. ',"total":1,"progress":1,"message":' .. json_str(pad(rnd(0, 50)) .. v)
          .. ',"results":[{"index":0,"status":"Failed","error":' .. json_str(v) .. ',"details":'
          .. json_str(v .. " d") .. '}]}}' }
      return "bulk"
    end,
    submission = function(e)
      local v = spelled(e, true)
      s:fault{ path = MANY, status = pick{ 400, 413, 422, 429, 500, 503 }, count = 20,
        content_type = pick{ "application/json", "text/plain" }, headers = { ["X-Request-Id"] = pad_for(95, e) .. e },
        body = pick{ '{"error":' .. json_str(v) .. ',"description":' .. json_str(pad(rnd(0, 200)) .. v) .. '}',
                     pad_for(200, e) .. e } }
      return pick{ "bulk", "sync" }
    end,
  }
  local place_names = {}
  for k in pairs(places) do place_names[#place_names + 1] = k end
  table.sort(place_names)

  local dir
  before_each(function()
    dir = standin.tmpname("-prop")
    os.execute("mkdir -p " .. q(dir))
  end)
  after_each(function() os.execute("rm -rf " .. q(dir)) end)

  local function drive(c, how, out)
    local u1 = { email = "a@example.com", name = "A" }
    if how == "upsert" then
      out[#out + 1] = { c:upsert_user(u1) }
    elseif how == "upsert_fields" then
      out[#out + 1] = { c:upsert_user(u1, { fields = { "id", "name", "notes", "user_fields", "tags" } }) }
    elseif how == "request" then
      out[#out + 1] = { c:request("GET", "/api/v2/users/me.json") }
    elseif how == "bulk" then
      local job, meta = c:upsert_users{ u1, { email = "b@example.com", name = "B" } }
      out[#out + 1] = { job, meta }
      if job then
        out[#out + 1] = { c:wait_job(job, { interval = 0.01, timeout = 5, not_found_grace = 0.2 }) }
        out[#out + 1] = { c:job_statuses{ job.id } }
        out[#out + 1] = { c:job_status(job.id) }
      end
    else   -- sync
      local rows, seen = {}, {}
      for i = 1, rnd(1, 5) do rows[i] = { email = "r" .. i .. "@example.com", name = "R" .. i } end
      local rep, jpath = dir .. "/report.csv", dir .. "/sync.journal"
      local report, err = c:sync_users(rows, { journal = jpath, report = rep, batch_size = rnd(1, 3),
        poll_interval = 0.01, job_timeout = 5, progress_interval = 0, collect_rows = true,
        on_row = function(o) seen[#seen + 1] = o end,
        on_progress = function(p) seen[#seen + 1] = p end })
      out[#out + 1] = { report, err, seen, file_cells(rep), journal_of(jpath) }
    end
  end

  it("holds over " .. CASES .. " random echoes", function()
    local tried, leaks = {}, {}
    for i = 1, CASES do
      fresh()
      local events = {}
      local mode = rnd(4) == 1 and "oauth" or "token"
      local c, secrets = client_for(mode, events)
      local place = place_names[(i - 1) % #place_names + 1]
      local e, secret = echo_of(mode, secrets)
      local how = places[place](e)
      local out = { events }
      drive(c, how, out)
      c:close()
      tried[place .. "/" .. how] = true
      local l = leak(out, secrets)
      if l then
        leaks[#leaks + 1] = ("case %d (%s, %s, via %s, echoing %q): %s"):format(i, mode, place, how, secret, l:sub(1, 300))
      end
    end
    assert(#leaks == 0, ("ZD_SEED=%d: %d of %d cases leaked:\n%s"):format(SEED, #leaks, CASES, table.concat(leaks, "\n")))
    assert.is_true(tried["job_echo/bulk"] or tried["job_echo/sync"])
  end)

  local function cli(args, env)
    local out, err = dir .. "/out", dir .. "/err"
    local parts = { "cd", q(dir), "&& env -i", "PATH=" .. q(os.getenv("PATH")),
      "LUA_PATH=" .. q(standin.ROOT .. "lua/?.lua;" .. standin.ROOT .. "lua/?/init.lua;;"),
      "LUA_CPATH=" .. q(standin.ROOT .. "build/lua5.4/?.so;;") }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
    parts[#parts + 1] = "lua5.4 " .. q(standin.ROOT .. "bin/zendesk-sync")
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    local _, code = standin.sh(table.concat(parts, " ") .. " >" .. q(out) .. " 2>" .. q(err) .. " </dev/null")
    return code, standin.read_file(out) or "", standin.read_file(err) or ""
  end

  it("holds for bin/zendesk-sync: job echoes, then a refused submission echoing it", function()
    local env = { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = TOKEN }
    local input = dir .. "/people.csv"
    standin.write_file(input, "name,email\nA,a@example.com\nB,b@example.com\nC,c@example.com\n")
    local cases = {
      function() s:fault{ job = "completed", count = 10, message = pad(rnd(0, 30)) .. TOKEN,
        result = { status = "Failed", error = "E " .. B64, details = pad(rnd(0, 30)) .. "Basic " .. B64 } } end,
      function() s:fault{ path = MANY, status = 400, count = 10, content_type = "text/plain",
        headers = { ["X-Request-Id"] = pad_for(95, TOKEN) .. TOKEN }, body = pad_for(200, TOKEN) .. TOKEN } end,
      function() s:fault{ path = MANY, status = 422, count = 10, content_type = "application/json",
        body = '{"error":"' .. spelled(B64, true) .. '","description":"' .. spelled(TOKEN, true) .. '"}' } end,
    }
    for i, setup_fault in ipairs(cases) do
      fresh()
      setup_fault()
      local rep, jpath = dir .. "/r" .. i .. ".csv", dir .. "/j" .. i .. ".journal"
      local code, out, err = cli({ "--report", rep, "--journal", jpath, "--batch-size", "2", input }, env)
      assert.is_true(code == 0 or code == 1 or code == 2, out .. err)
      local texts = { out, err, file_cells(rep), journal_of(jpath) }
      for line in (out .. "\n" .. err):gmatch("[^\n]+") do texts[#texts + 1] = line end
      local l = leak(texts, { TOKEN, B64 })
      assert(l == nil, ("ZD_SEED=%d CLI case %d: %s"):format(SEED, i, tostring(l)))
    end
  end)
end)
