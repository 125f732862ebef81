-- Behaviour no other spec pinned (issue 13): a CSV report that stays CSV whatever its text
-- cells hold, read back with an independent RFC 4180 parser; an account-wide 429 on the job
-- status polls of wait_job and of a sync; the core's backoff growing up to max_retry_wait
-- (from its retry events); traffic really going through `proxy`. (Accept-Encoding and gzip:
-- core_upsert_spec; argv credentials and dry runs: security_spec and cli_spec.)
local standin = require "support.standin"
local csv4180 = require "support.csv4180"
local proxy = require "support.proxy"
local zendesk = require "zendesk"
local report = require "zendesk.report"

local tmpname = standin.tmpname
local POLLS = "/api/v2/job_statuses"
-- what Zendesk sends when the account's budget is spent (and the stand-in too)
local ACCOUNT_429 = { status = 429, content_type = "text/plain; charset=UTF-8",
  body = "Rate limit exceeded. Please wait and try again.", headers = { ["Retry-After"] = "1" } }

describe("suite pins", function()
  local s

  setup(function() s = standin.start() end)
  teardown(function() if s then s:stop() end end)
  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
  end)

  local function client(opts, events)
    local o = { url = s.url, email = standin.EMAIL, token = standin.TOKEN, max_retries = 3, retry_base_delay = 0.01,
                timeout = 10, on_event = events and function(e) events[#events + 1] = e end or nil }
    for k, v in pairs(opts or {}) do o[k] = v end
    return zendesk.new(o)
  end

  local function retries(events, path_part, status)
    local out = {}
    for _, e in ipairs(events) do
      if e.type == "retry" and (e.path or ""):find(path_part, 1, true) and (not status or e.status == status) then
        out[#out + 1] = e
      end
    end
    return out
  end

  -----------------------------------------------------------------------------------------------
  describe("the CSV report", function()
    local TRICKY = { 'comma, inside', 'a "quoted" word', "two\nlines", "crlf\r\nend", '",\n"', '""', " lead", "" }

    it("keeps every cell, commas, quotes, CR and LF included, for an RFC 4180 parser", function()
      local path = tmpname(".csv")
      local w = assert(report.open(path))
      local written = {}
      for i, t in ipairs(TRICKY) do
        local o = { row = i, outcome = "failed", email = "r" .. i .. "@example.com", external_id = "x" .. t,
                    error = "Err " .. t, details = t .. " details", reason = "reason: " .. t }
        assert(w:write(o))
        written[i] = o
      end
      assert(w:close())
      local rows, header = csv4180.read(path)
      os.remove(path)
      assert.is_table(rows, header)
      assert.same(report.COLUMNS, header)
      assert.equal(#TRICKY, #rows)
      for i, o in ipairs(written) do
        for _, col in ipairs(report.COLUMNS) do
          local want = o[col] == nil and "" or tostring(o[col])
          assert.equal(want, rows[i][col], "row " .. i .. " column " .. col)
        end
      end
    end)

    it("of a sync whose details and reasons hold commas, quotes and newlines reads back row by row", function()
      -- the server's failure details quote the value sent; the client's reasons quote the cell
      s:config{ user_fields = { level = { type = "dropdown", options = { "gold", "silver" } } } }
      local level = 'gold, "vip"\nplus\r\nend'
      local bad_email = 'x,"y"\nz@example.com'
      local bad_role = 'chief, "boss"\nx'
      local rows = {
        { email = "ok@example.com", name = "Ok" },
        { email = "dd@example.com", name = "D", user_fields = { level = level } },
        { email = bad_email, name = "Bad" },
        { email = "n@example.com", name = 'A, "B"\nC', role = bad_role },
      }
      local path = tmpname(".csv")
      local c = client()
      -- stale definitions (level was text when this client read them): the value passes the local
      -- check and the server refuses it, so its details reach the report (issue 15)
      c:user_fields{ definitions = { { key = "level", type = "text" } } }
      local rep, err = c:sync_users(rows, { report = path, poll_interval = 0.02 })
      c:close()
      assert.is_table(rep, tostring(err))
      local got, header = csv4180.read(path)
      os.remove(path)
      assert.is_table(got, header)
      assert.equal(4, #got)
      local by = {}
      for _, r in ipairs(got) do
        assert.is_nil(by[r.row], "row " .. r.row .. " twice")
        by[r.row] = r
      end
      assert.equal("created", by["1"].outcome)
      assert.equal("failed", by["2"].outcome)
      assert.equal("UserCreateError", by["2"].error)
      assert.equal("level: " .. level .. " is not a valid option", by["2"].details)
      assert.equal("invalid", by["3"].outcome)
      assert.equal(bad_email, by["3"].email)
      assert.matches(bad_email, by["3"].reason, 1, true)
      assert.equal("invalid", by["4"].outcome)
      assert.matches(bad_role, by["4"].reason, 1, true)
    end)
  end)

  -----------------------------------------------------------------------------------------------
  describe("an account-wide 429 on the job status polls", function()
    local function fault_polls(count)
      local f = { path = POLLS, method = "GET", count = count }
      for k, v in pairs(ACCOUNT_429) do f[k] = v end
      s:fault(f)
    end

    it("is waited out by wait_job, which then sees the job complete", function()
      local events = {}
      local c = client({}, events)
      local job = assert(c:upsert_users{ { email = "p1@example.com", name = "P1" }, { email = "p2@example.com", name = "P2" } })
      fault_polls(2)
      local done, err = c:wait_job(job, { timeout = 60, interval = 0.02 })
      c:close()
      assert.is_table(done, tostring(err))
      assert.equal("completed", done.status)
      assert.equal(2, #done.results)
      assert.equal(2, s:stats().faults, "both 429s were answered")
      local waited = retries(events, POLLS, 429)
      assert.equal(2, #waited, "one retry per 429")
      for _, e in ipairs(waited) do assert.is_true(e.wait >= 1, "Retry-After: 1 not waited out: " .. e.wait) end
      assert.equal(2, #s:users())
    end)

    it("is waited out during a sync: every row created once, none failed", function()
      local events = {}
      local c = client({}, events)
      local rows = {}
      for i = 1, 120 do rows[i] = { email = "q" .. i .. "@example.com", name = "Q " .. i } end
      fault_polls(3)
      local path = tmpname(".csv")
      local rep, err = c:sync_users(rows, { batch_size = 50, report = path, poll_interval = 0.02 })
      c:close()
      assert.is_table(rep, tostring(err))
      assert.equal(120, rep.created)
      assert.equal(0, rep.failed)
      assert.equal(3, s:stats().faults)
      assert.equal(3, #retries(events, POLLS, 429))
      assert.equal(120, #s:users())
      local got = assert(csv4180.read(path))
      os.remove(path)
      assert.equal(120, #got)
    end)
  end)

  -----------------------------------------------------------------------------------------------
  it("backs off more after each failure, never past max_retry_wait (from the retry events)", function()
    local BASE, CAP, RETRIES = 0.01, 0.05, 6
    local events = {}
    local c = client({ max_retries = RETRIES, retry_base_delay = BASE, max_retry_wait = CAP }, events)
    for i = 1, 5 do
      s:fault{ path = "/api/v2/users/create_or_update", status = 503, count = RETRIES }
      local user, meta = c:upsert_user{ email = "b" .. i .. "@example.com", name = "B" }
      assert.is_table(user, tostring(meta))
      assert.equal(RETRIES + 1, meta.attempts)
    end
    c:close()
    local waits = retries(events, "/api/v2/users/create_or_update", 503)
    assert.equal(5 * RETRIES, #waits)
    local past_first = 0
    for _, e in ipairs(waits) do
      local cap = math.min(CAP, BASE * 2 ^ (e.attempt - 1))
      assert.is_true(e.wait >= 0 and e.wait <= cap + 1e-9,
        string.format("attempt %d waited %.4f s, over its cap %.4f s", e.attempt, e.wait, cap))
      if e.wait > BASE then past_first = past_first + 1 end
    end
    -- the waits grew beyond the first one's cap (with full jitter: most of those after attempt 2)
    assert.is_true(past_first >= 5, past_first .. " waits longer than retry_base_delay")
  end)

  -----------------------------------------------------------------------------------------------
  describe("the proxy option", function()
    local p
    setup(function() p = proxy.start() end)
    teardown(function() if p then p:stop() end end)

    it("sends every request through the proxy", function()
      local c = client{ proxy = p.url }
      local user, meta = c:upsert_user{ email = "via@example.com", name = "Via" }
      local job = assert(c:upsert_users{ { email = "via2@example.com", name = "Via 2" } })
      local done = assert(c:wait_job(job, { timeout = 30, interval = 0.02 }))
      c:close()
      assert.is_table(user, tostring(meta))
      assert.equal("completed", done.status)
      local seen = s:requests()
      assert.is_true(#seen >= 3)
      for _, r in ipairs(seen) do
        assert.equal(tostring(p.port), r.headers["x-test-proxy"], r.method .. " " .. r.path .. " bypassed the proxy")
      end
      -- the proxy logged each of them, in absolute form, naming the stand-in
      -- (nginx logs a request after answering it: give the last line a moment to land)
      local lines = p:requests()
      for _ = 1, 100 do
        if #lines >= #seen then break end
        standin.sh("sleep 0.05")
        lines = p:requests()
      end
      assert.equal(#seen, #lines)
      assert.matches("^POST " .. s.url:gsub("%p", "%%%0") .. "/api/v2/users/create_or_update", lines[1])
    end)

    it("without it, requests go straight; through a proxy that is down, none arrives", function()
      local c = client()
      assert(c:upsert_user{ email = "direct@example.com", name = "Direct" })
      c:close()
      assert.is_nil(s:requests()[1].headers["x-test-proxy"])
      s:reset()
      s:config{ per_user_limit = 0 }
      c = client{ proxy = "http://127.0.0.1:9", max_retries = 0 }
      local user, err = c:upsert_user{ email = "down@example.com", name = "Down" }
      c:close()
      assert.is_nil(user)
      assert.equal("network", err.kind)
      assert.equal(0, #s:requests())
    end)
  end)
end)
