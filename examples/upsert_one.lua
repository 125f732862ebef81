-- Upsert one user, the way you would at a REPL. Runs against Zendesk or the stand-in:
--   eval "$(make -s env)"; URL=$(tests/fake_zendesk/ctl start --port auto | tail -n 1)
--   ZENDESK_URL=$URL ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token \
--     lua5.4 examples/upsert_one.lua ann@example.com "Ann Example"
-- (or paste the lines into `lua5.4 -i`; credentials always come from the environment)
local zendesk = require "zendesk"

local client = assert(zendesk.new{
  url = os.getenv("ZENDESK_URL"), subdomain = not os.getenv("ZENDESK_URL") and os.getenv("ZENDESK_SUBDOMAIN") or nil,
  email = os.getenv("ZENDESK_EMAIL"), token = os.getenv("ZENDESK_API_TOKEN"),
})

local user, meta = client:upsert_user{
  email = arg[1] or "ann@example.com",
  name = arg[2] or "Ann Example",
  tags = { "example" },
  user_fields = { department = "Support" },
}
if not user then
  -- err is a table: kind, status, code, message, details, request_id; tostring gives one line
  io.stderr:write(tostring(meta), "\n")
  os.exit(1)
end
print(("%s user %d (%s), HTTP %d"):format(meta.created and "created" or "updated", user.id, user.email, meta.status))

-- Upserting again matches the same user (by email here, by external_id when given): an update.
local again = assert(client:upsert_user{ email = user.email, notes = "seen twice" })
print(("same user: %s"):format(tostring(again.id == user.id)))
client:close()
