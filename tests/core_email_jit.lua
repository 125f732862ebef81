-- core.valid_email under LuaJIT (what OpenResty loads): the same table and the same comparison
-- with the rules (support/email_cases.lua) as tests/core_email_spec.lua runs under Lua 5.4.
local core = require "zendesk.core"
local users = require "zendesk.users"
local E = require "support.email_cases"

describe("valid_email under LuaJIT", function()
  it("runs under LuaJIT", function()
    assert.is_not_nil(jit, "this spec must run under LuaJIT")
    assert.equal(core.valid_email, users.valid_email)
  end)

  it("accepts and refuses the same table of addresses", function()
    for _, s in ipairs(E.accepted) do assert.is_true(core.valid_email(s), E.show(s)) end
    for _, s in ipairs(E.refused) do assert.is_false(core.valid_email(s), E.show(s)) end
    for _, v in ipairs(E.not_strings) do assert.is_false(core.valid_email(v), tostring(v)) end
    assert.is_false(core.valid_email())
  end)

  it("agrees with the rules for every byte at every place", function()
    local _, bad = E.compare(core.valid_email, E.byte_sweep())
    assert.equal("", bad)
  end)

  it("agrees with the rules on 5000 generated and mutated strings", function()
    local list = E.generate(5000, 20260101)
    local accepted, bad = E.compare(core.valid_email, list)
    assert.equal("", bad)
    assert.is_true(accepted > 500 and accepted < 4500, accepted .. " accepted of 5000")
  end)
end)
