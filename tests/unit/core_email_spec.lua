-- core.valid_email (src/email.c), behind zendesk.users.valid_email: the rules (RFC 5321/5322 as
-- far as Zendesk goes, support/email_cases.lua) pinned by a table of addresses, and checked
-- against the rules' own grammar on thousands of strings.
-- The same file runs under LuaJIT (.busted, task luajit).
local core = require "zendesk.core"
local users = require "zendesk.users"
local zendesk = require "zendesk"
local E = require "support.email_cases"

describe("valid_email", function()
  it("is the C check under the old name", function()
    assert.equal(core.valid_email, users.valid_email)
  end)

  it("accepts these addresses", function()
    for _, s in ipairs(E.accepted) do
      assert.is_true(core.valid_email(s), E.show(s))
      assert.is_true(E.rules(s), "the table disagrees with the rules: " .. E.show(s))
    end
  end)

  it("refuses these addresses", function()
    for _, s in ipairs(E.refused) do
      assert.is_false(core.valid_email(s), E.show(s))
      assert.is_false(E.rules(s), "the table disagrees with the rules: " .. E.show(s))
    end
  end)

  it("pins the length limits: 254 bytes in all, 64 before the '@'", function()
    assert.equal(254, #E.address_of(254))
    assert.is_true(core.valid_email(E.address_of(254)))
    assert.is_false(core.valid_email(E.address_of(255)))
    assert.is_true(core.valid_email(string.rep("a", 64) .. "@b.c"))
    assert.is_false(core.valid_email(string.rep("a", 65) .. "@b.c"))
    -- a 63-byte local part plus a dot is 64 but ends with '.'
    assert.is_false(core.valid_email(string.rep("a", 63) .. ".@b.c"))
  end)

  it("returns false, not an error, for anything but a string", function()
    assert.is_false(core.valid_email())
    assert.is_false(core.valid_email(nil))
    for _, v in ipairs(E.not_strings) do
      assert.is_false(core.valid_email(v), tostring(v))
      assert.is_false(E.rules(v), tostring(v))
    end
  end)

  it("is what user validation uses", function()
    assert.is_true(zendesk.validate_user{ email = "a@example.com" })
    local ok, err = zendesk.validate_user{ email = "a\0b@example.com" }
    assert.is_nil(ok)
    assert.matches("^email: '.*' is not a valid email address$", err.message)
    ok, err = zendesk.validate_user{ email = "a@b_c.com" }
    assert.is_nil(ok)
    assert.equal("email: 'a@b_c.com' is not a valid email address", err.message)
    ok, err = zendesk.validate_user{ identities = { { type = "email", value = "a@b" } } }
    assert.is_nil(ok)
    assert.equal("identities[1].value", err.path)
  end)

  it("agrees with the rules for every byte at every place", function()
    local list = E.byte_sweep()
    local accepted, bad = E.compare(core.valid_email, list)
    assert.equal("", bad)
    assert.is_true(accepted > 500 and accepted < #list - 500, accepted .. " accepted of " .. #list)
  end)

  it("agrees with the rules on 5000 generated and mutated strings", function()
    local list = E.generate(5000, 20260101)
    local accepted, bad = E.compare(core.valid_email, list)
    assert.equal("", bad)
    -- both answers well represented, or the comparison says little
    assert.is_true(accepted > 500 and accepted < 4500, accepted .. " accepted of 5000")
  end)
end)
