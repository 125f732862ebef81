-- Security: TLS is verified and cannot be switched off; no credential reaches an error, a
-- tostring, an event, a report, a journal or the CLI's output, whatever the server sends back;
-- nothing a caller or a server supplies can change the host, the path or a header of a request;
-- the files the library writes are private (0600) whatever the umask.
-- (core_secrets_spec covers the token in errors and events of failed upserts; the nginx adapter's
-- logs are covered by nginx_spec.)
--
-- The echo cases pin what this spec and fuzz/response_fuzz.c found: a credential echoed by the
-- server reached the error through its code, its 422 details, its request id, or in the base64
-- form of the Basic header (fixed in 6ea3ad2), and as a 422 details field name (856d3b4).
local standin = require "support.standin"
local zendesk = require "zendesk"
local core = require "zendesk.core"

local q = standin.shell_quote
local UPSERT = "/api/v2/users/create_or_update"

local tmpname, read_file, write_file, mode_of =
  standin.tmpname, standin.read_file, standin.write_file, standin.mode_of

-- Every string reachable from v (keys, values, tostring of tables with __tostring), flattened.
local function dump(v, out, seen)
  out, seen = out or {}, seen or {}
  local t = type(v)
  if t == "table" and not seen[v] then
    seen[v] = true
    local mt = getmetatable(v)
    if mt and mt.__tostring then out[#out + 1] = tostring(v) end
    for k, x in pairs(v) do
      dump(k, out, seen)
      dump(x, out, seen)
    end
  elseif t == "string" then
    out[#out + 1] = v
  elseif t == "userdata" then
    out[#out + 1] = tostring(v)
  end
  return out
end

-- Names the secrets found in what was captured (nil when clean).
local function leaks(captured, secrets)
  local text = table.concat(dump(captured), "\n")
  local found = {}
  for name, secret in pairs(secrets) do
    if text:find(secret, 1, true) then found[#found + 1] = name end
  end
  table.sort(found)
  return #found > 0 and table.concat(found, ", ") or nil
end

local B64_BASIC = standin.BASIC:sub(7)   -- base64("admin@example.com/token:stand-in-token")

-- The stand-in's own credentials are the secrets here: every operation succeeds with them.
local SECRETS = {
  token = standin.TOKEN, basic_header = B64_BASIC, oauth_access = standin.OAUTH_ACCESS,
  oauth_refresh = standin.OAUTH_REFRESH, client_secret = standin.CLIENT_SECRET,
}

describe("security", function()
  local s, st

  setup(function()
    s = standin.start()
    st = standin.start{ tls = true }
  end)
  teardown(function()
    s:stop()
    st:stop()
  end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
  end)

  local function client(opts)
    local o = { url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 1, retry_base_delay = 0.01,
                timeout = 2 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return zendesk.new(o)
  end

  -----------------------------------------------------------------------------------------------
  describe("TLS verification", function()
    before_each(function() st:reset() end)

    local function upsert(opts)
      local o = { url = st.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 2, retry_base_delay = 0.01 }
      for k, v in pairs(opts or {}) do o[k] = v end
      local c = zendesk.new(o)
      local user, err = c:upsert_user{ email = "tls@example.com", name = "TLS" }
      c:close()
      return user, err
    end

    it("refuses a server whose certificate comes from an unknown CA, at once and without retrying", function()
      local user, err = upsert()
      assert.is_nil(user)
      assert.equal("network", err.kind)
      assert.matches("[Cc]ertificate", err.message)
      assert.equal(1, err.attempts, "a certificate failure is not retried")
      assert.equal(0, #st:users())
    end)

    it("accepts it with ca_file naming its CA", function()
      local user, meta = upsert{ ca_file = st.ca_file }
      assert.is_table(user, tostring(meta))
      assert.equal("tls@example.com", user.email)
    end)

    it("does not trust it with the system bundle, an empty, missing or empty-file ca_file", function()
      for _, ca in ipairs{ "/etc/ssl/certs/ca-certificates.crt", "", "/dev/null", "/nonexistent/ca.pem" } do
        local user, err = upsert{ ca_file = ca }
        assert.is_nil(user, "ca_file '" .. ca .. "' let an unknown CA through")
        assert.equal("network", err.kind)
      end
      assert.equal(0, #st:users())
    end)

    it("has no option that turns verification off: every likely name is an unknown option", function()
      local names = { "insecure", "ssl_verify", "ssl_verify_peer", "ssl_verifypeer", "ssl_verify_host", "ssl_verifyhost",
        "verify", "verify_ssl", "verify_peer", "verify_host", "verify_tls", "tls_verify", "tls_verify_peer", "skip_verify",
        "insecure_skip_verify", "no_verify", "ssl_no_verify", "allow_insecure", "allow_insecure_tls", "allow_self_signed",
        "ssl", "tls", "check_certificate", "cert_verify", "curl_options", "curlopts", "options", "ssl_options" }
      for _, name in ipairs(names) do
        for _, value in ipairs{ false, true, 0 } do
          local ok, msg = pcall(zendesk.new, { url = st.url, email = standin.EMAIL, token = standin.TOKEN, [name] = value })
          assert.is_false(ok, "option '" .. name .. "' was accepted")
          assert.matches("unknown option '" .. name .. "'", msg, 1, true)
          ok, msg = pcall(core.new, { url = st.url, email = standin.EMAIL, token = standin.TOKEN, [name] = value })
          assert.is_false(ok, "core option '" .. name .. "' was accepted")
          assert.matches("unknown option '" .. name .. "'", msg, 1, true)
        end
      end
      -- the one insecure switch there is concerns plain http, never certificates
      local user, err = upsert{ allow_insecure_http = true }
      assert.is_nil(user)
      assert.matches("[Cc]ertificate", err.message)
    end)

    it("refuses plain http to anything but loopback", function()
      for _, url in ipairs{ "http://acme.zendesk.com", "http://10.0.0.1:8080", "http://example.com:443" } do
        local ok, msg = pcall(zendesk.new, { url = url, email = standin.EMAIL, token = standin.TOKEN })
        assert.is_false(ok, url)
        assert.matches("plain http", msg)
      end
    end)

    it("does not follow a redirect (credentials never go to another place)", function()
      s:fault{ path = UPSERT, status = 302, headers = { Location = "http://127.0.0.1:9/steal" } }
      local c = client()
      local user, err = c:upsert_user{ email = "r@example.com", name = "R" }
      c:close()
      assert.is_nil(user)
      assert.equal(302, err.status)
      assert.equal(1, #s:requests())
    end)
  end)

  -----------------------------------------------------------------------------------------------
  describe("no credential in any output", function()
    it("every operation, successes and failures, with token auth: results, metas, errors, events, report, journal",
      function()
        local captured = {}
        local function keep(...) captured[#captured + 1] = { ... } end
        local c = client{ on_event = function(e) keep(e) end }
        keep(tostring(c))
        keep(c:upsert_user{ email = "sec1@example.com", name = "Sec 1" })
        local job, meta = c:upsert_users{ { email = "sec2@example.com", name = "Sec 2" }, { email = "sec3@example.com" } }
        assert.is_table(job, tostring(meta))
        keep(job, meta)
        keep(c:upsert_users{ { email = "sec3@example.com", name = "Sec 3" }, { name = "nothing to match" } })
        keep(c:upsert_users{ { email = "bad", name = "Bad" } })
        keep(c:job_status(job))
        keep(c:job_statuses{ job.id })
        keep(c:wait_job(job, { timeout = 10, interval = 0.05, on_progress = function(j) keep(j) end }))
        keep(c:request("GET", "/api/v2/users/search.json?query=email:sec1@example.com"))
        -- failures: retried 5xx, 429, a reset, a hang, an unknown host path, a 401 for a bad token
        s:fault{ path = UPSERT, status = 503, count = 2 }
        keep(c:upsert_user{ email = "sec4@example.com", name = "Sec 4" })
        s:fault{ path = UPSERT, status = 429, headers = { ["Retry-After"] = "0" }, count = 2 }
        keep(c:upsert_user{ email = "sec4@example.com", name = "Sec 4" })
        s:fault{ path = UPSERT, action = "reset", count = 2 }
        keep(c:upsert_user{ email = "sec4@example.com", name = "Sec 4" })
        s:fault{ path = "/api/v2/job_statuses", action = "invalid_json" }
        keep(c:job_status(job))
        keep(c:request("GET", "/api/v2/nowhere"))
        local rep, jpath = tmpname(".csv"), tmpname(".journal")
        local rows = {}
        for i = 1, 120 do rows[i] = { email = "row" .. i .. "@example.com", name = "Row " .. i } end
        rows[5] = { email = "not-an-email", name = "x" }
        s:fault{ path = "/api/v2/users/create_or_update_many", status = 500, after = 1 }
        local report, err = c:sync_users(rows, { report = rep, journal = jpath, batch_size = 50, poll_interval = 0.02,
                                                 on_row = function(o) keep(o) end, on_progress = function(p) keep(p) end })
        keep(report, err)
        keep(c:sync_users(rows, { report = rep, journal = jpath, resume = true, poll_interval = 0.02 }))
        keep(read_file(rep), read_file(jpath))
        c:close()
        keep(tostring(c))
        local bad = client{ token = "SECRET-wrong-token-8d2f", on_event = function(e) keep(e) end }
        keep(bad:upsert_user{ email = "sec5@example.com", name = "Sec 5" })
        keep(bad:sync_users(rows, { batch_size = 50 }))
        bad:close()
        os.remove(rep)
        os.remove(jpath)
        local secrets = {}
        for k, v in pairs(SECRETS) do secrets[k] = v end
        secrets.wrong_token = "SECRET-wrong-token-8d2f"
        -- what was captured holds what each step produced: the users, the errors and their
        -- messages, the retry events, the report and journal read back
        local text = table.concat(dump(captured), "\n")
        for _, want in ipairs{ "sec1@example.com", "sec2@example.com", "row120@example.com", "not-an-email",
                               "http 503", "http 404", "auth 401" } do
          assert.is_truthy(text:find(want, 1, true), "nothing captured says " .. want)
        end
        local retries = 0
        for _, v in ipairs(captured) do
          if type(v[1]) == "table" and v[1].type == "retry" then retries = retries + 1 end
        end
        assert.is_true(retries >= 3, "retry events: " .. retries)
        assert.is_nil(leaks(captured, secrets))
      end)

    it("OAuth: a refresh rotates the pair; neither pair reaches errors, events or tostring", function()
      local captured = {}
      local function keep(...) captured[#captured + 1] = { ... } end
      local rotated
      local c = zendesk.new{ url = s.url, max_retries = 1, retry_base_delay = 0.01,
        on_event = function(e) keep(e) end,
        oauth = { access_token = standin.OAUTH_ACCESS, refresh_token = standin.OAUTH_REFRESH, client_id = standin.CLIENT_ID,
                  client_secret = standin.CLIENT_SECRET, on_refresh = function(t) rotated = t end } }
      keep(tostring(c))
      keep(c:upsert_user{ email = "o1@example.com", name = "O1" })
      s:config{ expire_tokens = true }
      keep(c:upsert_user{ email = "o2@example.com", name = "O2" })   -- 401 invalid_token, refresh, retry
      assert.is_table(rotated, "the token was not refreshed")
      s:fault{ path = UPSERT, status = 500, count = 2, body = "echo " .. rotated.access_token .. " " .. rotated.refresh_token }
      keep(c:upsert_user{ email = "o3@example.com", name = "O3" })
      -- a refresh that fails: the refresh token is now revoked
      local stale = zendesk.new{ url = s.url, max_retries = 0, on_event = function(e) keep(e) end,
        oauth = { access_token = "SECRET-expired-access-71c", refresh_token = standin.OAUTH_REFRESH,
                  client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } }
      keep(stale:upsert_user{ email = "o4@example.com", name = "O4" })
      keep(tostring(stale))
      stale:close()
      c:close()
      local secrets = { access = standin.OAUTH_ACCESS, refresh = standin.OAUTH_REFRESH,
        client_secret = standin.CLIENT_SECRET, new_access = rotated.access_token, new_refresh = rotated.refresh_token,
        expired = "SECRET-expired-access-71c" }
      assert.is_nil(leaks(captured, secrets))
      -- the error of the failed refresh says what happened
      local last = captured[#captured - 1][2]
      assert.equal("auth", last.kind)
      assert.matches("refresh", tostring(last))
    end)

    it("a proxy URL's password stays out of errors", function()
      local c = client{ proxy = "http://user:SECRET-proxy-pw-44@127.0.0.1:9", max_retries = 0 }
      local user, err = c:upsert_user{ email = "p@example.com", name = "P" }
      c:close()
      assert.is_nil(user)
      assert.equal("network", err.kind)
      assert.is_nil(leaks({ err, tostring(err) }, { proxy = "SECRET-proxy-pw-44" }))
      assert.matches("127.0.0.1", tostring(err), 1, true)
    end)

    -- what a misbehaving server or proxy may echo back: every field of the error is clean; the
    -- third item is what the rest of the answer must still say in the message (an error that
    -- dropped the body would be clean too)
    local echoes = {
      { "the JSON error code", { status = 401, body = '{"error":"bad token ' .. standin.TOKEN .. '","description":"no"}' },
        { "401", "bad token ", ": no" } },
      { "the 422 details", { status = 422, body = '{"error":"RecordInvalid","description":"Record validation errors",'
          .. '"details":{"email":[{"description":"echo ' .. standin.TOKEN .. '","error":"InvalidValue"}]}}' },
        { "RecordInvalid", "Record validation errors", "email: echo " } },
      { "a request id header", { status = 400, headers = { ["X-Request-Id"] = standin.TOKEN } }, { "400", "Bad request" } },
      { "the Basic header, base64", { status = 400, content_type = "text/plain",
          body = "Bad request. Authorization: Basic " .. B64_BASIC }, { "400", "Bad request. Authorization: Basic " } },
      { "a 422 details field name", { status = 422, body = '{"error":"RecordInvalid","description":"Record validation '
          .. 'errors","details":{"token ' .. standin.TOKEN .. '":[{"description":"is invalid"}]}}' },
        { "RecordInvalid", "Record validation errors", "token ", ": is invalid" } },
      { "an OAuth error_description", { status = 401, body = '{"error":"invalid_token","error_description":"token '
          .. standin.TOKEN .. ' is expired"}' }, { "invalid_token", " is expired" } },
      { "an HTML page", { status = 403, content_type = "text/html",
          body = "<html><body><p>Rejected: " .. standin.TOKEN .. "</p></body></html>" }, { "403", "Rejected: " } },
    }
    for _, case in ipairs(echoes) do
      it("a credential echoed in " .. case[1] .. " is not in the error", function()
        local f = { path = UPSERT }
        for k, v in pairs(case[2]) do f[k] = v end
        s:fault(f)
        local c = client{ max_retries = 0 }
        local user, err = c:upsert_user{ email = "echo@example.com", name = "Echo" }
        c:close()
        assert.is_nil(user)
        assert.is_nil(leaks({ err, tostring(err) }, SECRETS), "echoed credential in: " .. tostring(err))
        for _, rest in ipairs(case[3]) do
          assert.is_truthy(tostring(err):find(rest, 1, true), "'" .. rest .. "' is missing from: " .. tostring(err))
        end
      end)
    end

    local CLI = standin.ROOT .. "bin/zendesk-sync"
    -- a missing CLI fails these tests (it used to turn them pending)
    local function cli_it(name, fn)
      it(name, function()
        assert.is_truthy(io.open(CLI), CLI .. " is missing")
        fn()
      end)
    end

    -- Runs the CLI under umask 000 with env (a table); returns its output (stdout and stderr) and exit code.
    local function cli(env, args, dir)
      local parts = { "cd " .. q(dir) .. " && umask 000 && env -i PATH=\"$PATH\" HOME=" .. q(dir),
        "LUA_PATH=" .. q(standin.ROOT .. "lua/?.lua;" .. standin.ROOT .. "lua/?/init.lua;;"),
        "LUA_CPATH=" .. q(standin.ROOT .. "build/lua5.4/?.so;;") }
      for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
      parts[#parts + 1] = "lua5.4 " .. q(CLI) .. " " .. args .. " </dev/null 2>&1"
      return standin.sh(table.concat(parts, " "))
    end

    cli_it("the CLI: stdout, stderr, report, journal and token file, token and OAuth runs, under umask 000", function()
      local dir = standin.sh("mktemp -d /tmp/zd-sec.XXXXXX"):match("^%s*(.-)%s*$")
      local lines = { "name,email" }
      for i = 1, 30 do lines[#lines + 1] = "Cli " .. i .. ",cli" .. i .. "@example.com" end
      lines[#lines + 1] = "Broken,not-an-email"
      write_file(dir .. "/users.csv", table.concat(lines, "\n") .. "\n")
      local outputs = {}
      local base = { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL }

      -- API token, with a report; journal at its default place
      local env = { ZENDESK_API_TOKEN = standin.TOKEN }
      for k, v in pairs(base) do env[k] = v end
      local out, code = cli(env, "--report report.csv users.csv", dir)
      outputs[#outputs + 1] = out
      assert.equal(1, code, out)   -- one invalid row
      assert.matches("30 created", out)
      -- a wrong token: the run stops, and says why without the token
      env.ZENDESK_API_TOKEN = "SECRET-cli-token-9f8e"
      out, code = cli(env, "--journal bad.journal users.csv", dir)
      outputs[#outputs + 1] = out
      assert.equal(2, code, out)
      assert.matches("auth", out)
      -- a server that echoes the token in a text error
      env.ZENDESK_API_TOKEN = standin.TOKEN
      s:fault{ path = "/api/v2/users/create_or_update_many", status = 400, content_type = "text/plain", count = 5,
               body = "bad request from " .. standin.TOKEN }
      out, code = cli(env, "--journal echo.journal --report echo.json users.csv", dir)
      outputs[#outputs + 1] = out
      assert.equal(1, code, out)   -- every row failed with the 400
      assert.matches("30 failed", out, 1, true)
      assert.matches("bad request from ", out, 1, true)
      s:clear_faults()
      -- OAuth with an expired access token: refreshed, the new pair saved to the token file
      s:config{ expire_tokens = true }
      local oenv = { ZENDESK_OAUTH_TOKEN = standin.OAUTH_ACCESS, ZENDESK_OAUTH_REFRESH_TOKEN = standin.OAUTH_REFRESH,
                     ZENDESK_OAUTH_CLIENT_ID = standin.CLIENT_ID, ZENDESK_OAUTH_CLIENT_SECRET = standin.CLIENT_SECRET,
                     ZENDESK_OAUTH_TOKEN_FILE = dir .. "/tokens.sh", ZENDESK_URL = s.url }
      out, code = cli(oenv, "--journal oauth.journal --report oauth.csv users.csv", dir)
      outputs[#outputs + 1] = out
      assert.equal(1, code, out)   -- the invalid row again; every other row updated
      assert.matches("30 updated", out)
      local tokens = read_file(dir .. "/tokens.sh")
      assert.is_string(tokens, "no token file: " .. out)
      local new_access = tokens:match("ZENDESK_OAUTH_TOKEN='([^']+)'")
      local new_refresh = tokens:match("ZENDESK_OAUTH_REFRESH_TOKEN='([^']+)'")
      assert.is_string(new_access)
      assert.equal("600", mode_of(dir .. "/tokens.sh"))

      for _, f in ipairs{ "report.csv", "users.csv.journal", "bad.journal", "echo.journal", "echo.json", "oauth.journal",
                          "oauth.csv" } do
        local text = read_file(dir .. "/" .. f)
        assert.is_string(text, f .. " was not written")
        outputs[#outputs + 1] = text
        assert.equal("600", mode_of(dir .. "/" .. f), f .. " is not private")
      end
      assert.is_string(read_file(dir .. "/users.csv.journal"), "the default journal was not written")
      local secrets = { wrong = "SECRET-cli-token-9f8e", new_access = new_access, new_refresh = new_refresh }
      for k, v in pairs(SECRETS) do secrets[k] = v end
      assert.is_nil(leaks(outputs, secrets))
      standin.sh("rm -rf " .. q(dir))
    end)

    cli_it("the CLI takes no credential from its arguments (they would show in ps)", function()
      local dir = standin.sh("mktemp -d /tmp/zd-sec.XXXXXX"):match("^%s*(.-)%s*$")
      write_file(dir .. "/u.csv", "name,email\nA,a@example.com\n")
      -- valid credentials in the environment: without the option the run succeeds, so the exit
      -- 2 below is the option being refused, not credentials missing
      local env = { ZENDESK_URL = s.url, ZENDESK_EMAIL = standin.EMAIL, ZENDESK_API_TOKEN = standin.TOKEN }
      for _, opt in ipairs{ "--token", "--api-token", "--password", "--oauth-token", "--client-secret", "--email" } do
        local value = opt == "--email" and standin.EMAIL or standin.TOKEN
        local out, code = cli(env, opt .. " " .. value .. " u.csv", dir)
        assert.equal(2, code, opt .. ": " .. out)
        assert.matches("unknown option '" .. opt .. "'", out, 1, true)
        assert.equal(0, #s:requests(), opt .. ": the CLI sent requests")
      end
      local out, code = cli(env, "u.csv", dir)
      assert.equal(0, code, out)
      assert.equal(1, #s:users())
      standin.sh("rm -rf " .. q(dir))
    end)
  end)

  -----------------------------------------------------------------------------------------------
  describe("host, path and header injection", function()
    local function raises(opts, name)
      local o = { email = standin.EMAIL, token = standin.TOKEN }
      for k, v in pairs(opts) do o[k] = v end
      if not o.url and not o.subdomain then o.url = s.url end
      local ok, msg = pcall(zendesk.new, o)
      assert.is_false(ok, "accepted: " .. name)
      assert.matches("'" .. name .. "'", msg, 1, true)
      return msg
    end

    it("refuses subdomains that would change the host or the path", function()
      for _, sub in ipairs{ "evil.com/", "evil.com", "a@b", "x#", "acme/../x", "acme?x=1", "acme:443", "acme%2fx",
                            "acme\r\nHost: evil", "acme\0evil", "-acme", "", string.rep("a", 64), "acme.evil.com", " acme" } do
        raises({ subdomain = sub }, "subdomain")
      end
      local c = zendesk.new{ subdomain = "acme-1", email = standin.EMAIL, token = standin.TOKEN }
      assert.equal("zendesk.Client (https://acme-1.zendesk.com)", tostring(c))
      c:close()
    end)

    it("refuses urls with a path, credentials, a query, a fragment, another scheme or CR/LF", function()
      for _, url in ipairs{ "https://acme.zendesk.com/api", "https://user:pw@acme.zendesk.com", "https://a@b",
                            "https://acme.zendesk.com:443@evil.com", "https://evil.com\\@acme.zendesk.com",
                            "https://acme.zendesk.com?x=1", "https://acme.zendesk.com#x", "https://acme.zendesk.com/%2f..",
                            "ftp://acme.zendesk.com", "file:///etc/passwd", "gopher://127.0.0.1:25",
                            "https://acme.zendesk.com\r\nX-Injected: 1", "https://acme.zendesk.com\0.evil.com", "//evil.com",
                            "evil.com" } do
        raises({ url = url }, "url")
      end
    end)

    it("refuses CR, LF and NUL in every value that reaches a header", function()
      local bad = { "x\r\nX-Injected: 1", "x\nX-Injected: 1", "x\rX", "x\0y" }
      for _, v in ipairs(bad) do
        raises({ token = v }, "token")
        raises({ email = v }, "email")
        raises({ token = nil, password = v }, "password")
        raises({ user_agent = v }, "user_agent")
        raises({ proxy = "http://127.0.0.1:9" .. v }, "proxy")
        raises({ ca_file = "/tmp/ca" .. v }, "ca_file")
        for _, field in ipairs{ "access_token", "refresh_token", "client_id", "client_secret" } do
          local oauth = { access_token = "a", refresh_token = "r", client_id = "i", client_secret = "s" }
          oauth[field] = v
          local ok, msg = pcall(zendesk.new, { url = s.url, oauth = oauth })
          assert.is_false(ok, "oauth." .. field .. " accepted CR/LF/NUL")
          assert.matches("'" .. field .. "'", msg, 1, true)
        end
      end
      -- and no credential in the message about it
      local ok, msg = pcall(zendesk.new, { url = s.url, email = standin.EMAIL, token = "SECRET-crlf-91\r\n" })
      assert.is_false(ok)
      assert.is_nil(msg:find("SECRET", 1, true))
    end)

    it("refuses job ids that would change the path, before any request", function()
      local c = client()
      for _, id in ipairs{ "../users/1", "a/b", "V3-abc/../../users", "..", "%2f", "V3-a%2fb", "x#y", "x?y=1", "a b",
                           "a\r\nX-Injected: 1", "a\0b", "", string.rep("a", 101) } do
        local js, err = c:job_status(id)
        assert.is_nil(js, id)
        assert.equal("validation", err.kind)
        js, err = c:wait_job(id, { timeout = 1 })
        assert.is_nil(js, id)
        assert.equal("validation", err.kind)
        js, err = c:job_statuses{ "V3-ok", id }
        assert.is_nil(js, id)
        assert.equal("validation", err.kind)
        assert.matches("ids%[2%]", err.message)
      end
      c:close()
      assert.equal(0, #s:requests(), "a request went out")
    end)

    it("refuses request paths that leave the API or carry CR/LF", function()
      local c = client()
      for _, path in ipairs{ "//evil.com/x", "http://evil.com/", "api/v2/users", "/api/v2/../../etc", "/a/..",
                             "/api/v2/users\r\nX-Injected: 1", "/api/v2/users x", "/api/v2/users#frag", "" } do
        local v, err = c:request("GET", path)
        assert.is_nil(v, path)
        assert.equal("validation", err.kind)
      end
      c:close()
      assert.equal(0, #s:requests(), "a request went out")
    end)

    it("keeps CR/LF in user data inside the JSON body, never in a header", function()
      local c = client()
      local user, err = c:upsert_user{ email = "a@example.com\r\nX-Injected: 1", name = "A" }
      assert.is_nil(user)
      assert.equal("validation", err.kind)
      assert.equal("email", err.field)
      user, err = c:upsert_user{ email = "crlf@example.com", name = "A\r\nX-Injected: 1", external_id = "e\r\n1" }
      c:close()
      assert.is_table(user, tostring(err))
      assert.equal("A\r\nX-Injected: 1", user.name)
      for _, r in ipairs(s:requests()) do
        assert.is_nil(r.headers["x-injected"], "a header was injected")
      end
    end)

    it("refuses a refreshed OAuth token that carries CR/LF (the server's answer never reaches a header)", function()
      s:fault{ path = UPSERT, status = 401, count = 1,
               body = '{"error":"invalid_token","error_description":"The access token provided is expired"}' }
      s:fault{ path = "/oauth/tokens", status = 200, content_type = "application/json",
               body = '{"access_token":"evil\\r\\nX-Injected: 1","refresh_token":"r2","token_type":"bearer"}' }
      local c = zendesk.new{ url = s.url, max_retries = 0, oauth = { access_token = standin.OAUTH_ACCESS,
        refresh_token = standin.OAUTH_REFRESH, client_id = standin.CLIENT_ID, client_secret = standin.CLIENT_SECRET } }
      local user, err = c:upsert_user{ email = "o@example.com", name = "O" }
      c:close()
      assert.is_nil(user)
      assert.equal("auth", err.kind)
      assert.matches("no usable access_token", err.message)
      for _, r in ipairs(s:requests()) do
        assert.is_nil(r.headers["x-injected"], "a header was injected")
      end
    end)
  end)

  -----------------------------------------------------------------------------------------------
  describe("files the library writes", function()
    it("journal and reports are 0600 under umask 000, also when they existed with wider modes", function()
      local dir = standin.sh("mktemp -d /tmp/zd-sec.XXXXXX"):match("^%s*(.-)%s*$")
      -- a report path that already exists world-readable is made private too
      write_file(dir .. "/old.csv", "stale\n")
      standin.sh("chmod 666 " .. q(dir .. "/old.csv"))
      local script = dir .. "/run.lua"
      write_file(script, string.format([[
        package.path = %q .. package.path
        package.cpath = %q .. package.cpath
        local zendesk = require "zendesk"
        local c = zendesk.new{ url = %q, email = %q, token = %q }
        local rows = {}
        for i = 1, 10 do rows[i] = { email = "um" .. i .. "@example.com", name = "U" .. i } end
        local dir = %q
        assert(c:sync_users(rows, { journal = dir .. "/a.journal", report = dir .. "/a.csv" }))
        assert(c:sync_users(rows, { journal = dir .. "/b.journal", report = dir .. "/b.json" }))
        assert(c:sync_users(rows, { report = dir .. "/old.csv" }))
        assert(zendesk.Client and require("zendesk.sync").run(nil, rows, { dry_run = true, report = dir .. "/d.csv" }))
        c:close()
        print("done")
      ]], standin.ROOT .. "lua/?.lua;", standin.ROOT .. "build/lua5.4/?.so;", s.url, standin.EMAIL, standin.TOKEN, dir))
      local out, code = standin.sh("umask 000 && lua5.4 " .. q(script) .. " 2>&1")
      assert.equal(0, code, out)
      for _, f in ipairs{ "a.journal", "a.csv", "b.journal", "b.json", "old.csv", "d.csv" } do
        assert.equal("600", mode_of(dir .. "/" .. f), f)
      end
      -- and nothing else appeared beside them with a wider mode (temporary files, locks)
      local listing = standin.sh("find " .. q(dir) .. " -type f ! -name run.lua ! -perm 600")
      assert.equal("", listing:gsub("%s+", ""))
      standin.sh("rm -rf " .. q(dir))
    end)

    it("core.create_private makes 0600 files whatever the umask, and narrows an existing file", function()
      local dir = standin.sh("mktemp -d /tmp/zd-sec.XXXXXX"):match("^%s*(.-)%s*$")
      local out, code = standin.sh("umask 000 && LUA_CPATH=" .. q(standin.ROOT .. "build/lua5.4/?.so;;") .. " lua5.4 -e "
        .. q("local core = require 'zendesk.core'; local d = " .. string.format("%q", dir)
          .. "; assert(core.create_private(d .. '/new', true)); local f = io.open(d .. '/old', 'w'); f:close();"
          .. " os.execute('chmod 666 ' .. d .. '/old'); assert(core.create_private(d .. '/old', false))") .. " 2>&1")
      assert.equal(0, code, out)
      assert.equal("600", mode_of(dir .. "/new"))
      assert.equal("600", mode_of(dir .. "/old"))
      standin.sh("rm -rf " .. q(dir))
    end)
  end)
end)
