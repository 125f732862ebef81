-- Submit one bulk job (up to 100 users), wait for it, and pair each result with its user.
--   ZENDESK_URL=... ZENDESK_EMAIL=... ZENDESK_API_TOKEN=... lua5.4 examples/bulk_and_wait.lua
-- For whole files use client:sync_users (or bin/zendesk-sync): it batches, keeps up to 30 jobs
-- in flight, resubmits lost jobs and keeps a journal.
local zendesk = require "zendesk"

local client = assert(zendesk.new{
  url = os.getenv("ZENDESK_URL"), subdomain = not os.getenv("ZENDESK_URL") and os.getenv("ZENDESK_SUBDOMAIN") or nil,
  email = os.getenv("ZENDESK_EMAIL"), token = os.getenv("ZENDESK_API_TOKEN"),
})

local users = {
  { email = "grace@example.com", name = "Grace Hopper", external_id = "emp-1", tags = { "bulk-example" } },
  { email = "alan@example.com", name = "Alan Turing", external_id = "emp-2" },
  { email = "edsger@example.com", external_id = "emp-3" },   -- no name: Zendesk refuses to create it
}

local job, err = client:upsert_users(users)
if not job then
  io.stderr:write(tostring(err), "\n")   -- a 403 here means bulk imports are off for the account
  os.exit(1)
end
print("submitted job " .. job.id .. " (" .. job.status .. ")")

job, err = client:wait_job(job, {
  timeout = 300,
  -- progress is zendesk.null (JSON null) while the job is queued
  on_progress = function(j)
    print(("  %s %d/%d"):format(j.status, type(j.progress) == "number" and j.progress or 0, j.total))
  end,
})
if not job then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

-- Results come in request order; a failed entry also carries its 0-based index.
for i, r in ipairs(job.results) do
  local at = r.index and r.index + 1 or i
  local u = users[at]
  if r.status == "Failed" then
    print(("%-22s failed: %s %s"):format(u.email, r.error, r.details))
  else
    print(("%-22s %s, id %d"):format(u.email, r.status:lower(), r.id))
  end
end
client:close()
