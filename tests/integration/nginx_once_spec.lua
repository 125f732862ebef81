-- zendesk.nginx validates once: its methods check their arguments in the worker (zendesk.methods)
-- and its pool thread (zendesk.nginx_thread) calls the core through zendesk.api without checking
-- them again. Both halves run here in one VM (tests/support/fake_ngx.lua stands in for nginx and
-- copies what crosses between them), so a wrapped zendesk.users sees every check either half
-- makes; the calls go to the stand-in.
local standin = require "support.standin"
local fake_ngx = require "support.fake_ngx"
local users = require "zendesk.users"

describe("zendesk.nginx validates once", function()
  local s, fake, zendesk_nginx
  local real_validate, real_check = users.validate, users.check_upsert_arg
  local counts

  setup(function()
    s = standin.start()
  end)

  teardown(function()
    if s then s:stop() end
  end)

  before_each(function()
    s:reset()
    s:config{ job_delay_ms = 0, per_user_limit = 0, rate_limit_per_minute = 0 }
    counts = { validate = 0, check = 0 }
    users.validate = function(...)
      counts.validate = counts.validate + 1
      return real_validate(...)
    end
    users.check_upsert_arg = function(...)
      counts.check = counts.check + 1
      return real_check(...)
    end
    fake = fake_ngx.install{ "zendesk" }
    zendesk_nginx = require "zendesk.nginx"
  end)

  after_each(function()
    users.validate, users.check_upsert_arg = real_validate, real_check
    fake.uninstall()
  end)

  local function new_client()
    return zendesk_nginx.new{ url = s.url, allow_insecure_http = true, email = standin.EMAIL, token = standin.TOKEN,
                              max_retries = 0 }
  end

  it("checks a sign-up's user and its fields once, in the worker, and the thread upserts it", function()
    local client = new_client()
    local user, meta = client:upsert_user({ email = "ann@example.com", name = "Ann" }, { fields = { "id" } })
    assert.is_table(user, tostring(meta))
    local stored = s:users()
    assert.equal(1, #stored)
    assert.same({ id = stored[1].id }, user)
    assert.is_true(meta.created)
    assert.same({ validate = 1, check = 1 }, counts)
    assert.equal(2, fake.trips)   -- the first trip asked for the configuration, without I/O
    assert.equal(1, s:stats().requests)

    user = assert(client:upsert_user({ email = "bo@example.com", name = "Bo" }))
    assert.equal("Bo", user.name)
    assert.same({ validate = 2, check = 2 }, counts)
    assert.equal(3, fake.trips)
  end)

  it("checks each user of a bulk upsert once", function()
    local client = new_client()
    local list = {}
    for i = 1, 3 do list[i] = { email = "u" .. i .. "@example.com", name = "U" .. i } end
    local job = assert(client:upsert_users(list))
    assert.matches("^V3%-", job.id)
    assert.equal(3, counts.validate)
    local done = assert(client:wait_job(job, { interval = 0.01, timeout = 10 }))
    assert.equal("completed", done.status)
    assert.equal(3, #s:users())
    assert.equal(3, counts.validate)   -- polling checks no user
  end)

  it("checks once as the zendesk client does", function()
    local client = require("zendesk").new{ url = s.url, allow_insecure_http = true, email = standin.EMAIL,
                                           token = standin.TOKEN, max_retries = 0 }
    assert(client:upsert_user({ email = "ann@example.com", name = "Ann" }, { fields = { "id" } }))
    client:close()
    assert.same({ validate = 1, check = 1 }, counts)
    assert.equal(0, fake.trips)
  end)
end)
