-- Sync a CSV whose headers are not Zendesk's field names: map them with `columns`, and read
-- its own delimiter and tag separator. Every row gets an outcome, and the report is a file.
--   ZENDESK_URL=... ZENDESK_EMAIL=... ZENDESK_API_TOKEN=... lua5.4 examples/sync_csv_custom_columns.lua [FILE.csv]
-- Without FILE it writes a small HR export of its own to a temporary file.
local zendesk = require "zendesk"

local client = assert(zendesk.new{
  url = os.getenv("ZENDESK_URL"), subdomain = not os.getenv("ZENDESK_URL") and os.getenv("ZENDESK_SUBDOMAIN") or nil,
  email = os.getenv("ZENDESK_EMAIL"), token = os.getenv("ZENDESK_API_TOKEN"),
})

local path = arg[1]
local own
if not path then
  path, own = os.tmpname() .. ".csv", true
  local f = assert(io.open(path, "w"))
  f:write("Employee No;Full Name;Work Email;Dept;Skills;Badge colour\n",
          "E-1001;Ada Lovelace;ada@example.com;Engineering;math, poetry;blue\n",
          "E-1002;Charles Babbage;charles@example.com;Engineering;engines;green\n",
          "E-1003;Nobody;not an email;Sales;;red\n")
  f:close()
end

local report_path = (os.getenv("TMPDIR") or "/tmp") .. "/sync_custom_columns_report.csv"
local report, err = client:sync_users(path, {
  delimiter = ";",
  tag_separator = ",",
  columns = {
    ["Employee No"] = "external_id",
    ["Full Name"] = "name",
    ["Work Email"] = "email",
    ["Dept"] = "user_fields.department",
    ["Skills"] = "tags",
    ["Badge colour"] = false,            -- not for Zendesk
  },
  report = report_path,                  -- every row's outcome, mode 0600
  collect_rows = true,                   -- report.rows: every outcome, in memory (small files only)
  on_progress = function(p)
    io.stderr:write(("\r%d rows, %d done, %d jobs in flight"):format(p.read, p.done, p.in_flight))
  end,
})
io.stderr:write("\n")
if own then os.remove(path) end
if not report then
  io.stderr:write(tostring(err), "\n")
  os.exit(2)
end
print(("created %d, updated %d, failed %d, invalid %d (report: %s)"):format(
  report.created, report.updated, report.failed, report.invalid, report_path))
for _, row in ipairs(report.rows) do
  print(("  row %d: %s %s"):format(row.row, row.outcome, row.reason or row.email or ""))
end
client:close()
