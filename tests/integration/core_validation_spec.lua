-- Input validation happens before any I/O and names the field (and the row in a list).
local standin = require "support.standin"
local zendesk = require "zendesk"

describe("validation before I/O", function()
  local s, client

  setup(function()
    s = standin.start()
    client = zendesk.new{ url = s.url, email = standin.EMAIL, token = standin.TOKEN }
  end)
  teardown(function()
    client:close()
    s:stop()
  end)
  before_each(function() s:reset() end)

  local function refused(user)
    local u, err = client:upsert_user(user)
    assert.is_nil(u)
    assert.equal("validation", err.kind)
    return err
  end

  it("names the field of a bad value and sends nothing", function()
    assert.equal("user.email: 'ann@' is not a valid email address", refused{ email = "ann@", name = "A" }.message)
    assert.equal("user.role: 'superuser' is not a role (end-user, agent or admin)",
                 refused{ email = "a@example.com", role = "superuser" }.message)
    assert.equal("user.organization_id: must be an integer, got 'abc'",
                 refused{ email = "a@example.com", organization_id = "abc" }.message)
    assert.equal("user.tags[2]: must be a non-empty string", refused{ email = "a@example.com", tags = { "a", 3 } }.message)
    local idn = refused{ email = "a@example.com", identities = { { type = "fax", value = "1" } } }
    assert.equal("user.identities[1].type: 'fax' is not an identity type", idn.message)
    assert.equal("user.identities[1].type", idn.path)
    assert.equal("user.user_fields.level: must be a string, number, boolean or zendesk.null, got a table",
                 refused{ email = "a@example.com", user_fields = { level = {} } }.message)
    assert.matches("unknown user field", refused{ emial = "a@example.com" }.message)
    assert.matches("needs an email or an external_id", refused{ name = "Nobody" }.message)
    assert.equal(0, #s:requests())
  end)

  it("accepts zendesk.null to clear a field", function()
    local user, meta = client:upsert_user{ email = "n@example.com", name = "N", phone = zendesk.null }
    assert.is_table(user, tostring(meta))
  end)

  it("lists every bad row of a bulk call with its index", function()
    local job, err = client:upsert_users{ { email = "a@example.com" }, { email = "b@" }, { email = "c@example.com", role = "x" } }
    assert.is_nil(job)
    assert.equal(2, #err.errors)
    assert.equal(2, err.errors[1].index)
    assert.equal("users[2].email", err.errors[1].path)
    assert.equal("users[3].role", err.errors[2].path)
    assert.matches("users%[2%]%.email: .*; users%[3%]%.role", err.message)
    assert.equal(0, #s:requests())
  end)

  it("checks email syntax sensibly", function()
    for _, good in ipairs{ "a@example.com", "first.last+tag@sub.example.co.uk", "zoë@exämple.de" } do
      assert.is_true(zendesk.validate_user({ email = good }), good)
    end
    for _, bad in ipairs{ "a", "a@b", "a@@b.com", "a b@c.com", ".a@b.com", "a@b..com", "a@-b.com", "" } do
      assert.is_nil((zendesk.validate_user({ email = bad })), bad)
    end
  end)
end)
