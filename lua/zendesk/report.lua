-- zendesk.report: the per-row outcome file of a sync (CSV or JSON), written as rows finish so
-- that memory stays flat, and created 0600 because every row carries personal data. It is
-- written as PATH.tmp and renamed to PATH by close: until then a previous report stays whole.
--
-- syntax: writer, err = report.open(path)      (format from the extension: .csv or .json)
-- syntax: ok, err = writer:write(outcome)      (outcome = {row=, outcome=, id=, email=, ...})
-- syntax: ok, err = writer:close()
local core = require "zendesk.core"
local utf8_escape = require("zendesk.users").utf8_escape

local error, type, tostring, setmetatable = error, type, tostring, setmetatable
local concat, find, gsub, lower, match = table.concat, string.find, string.gsub, string.lower, string.match
local io_open, os_rename = io.open, os.rename

local _M = { _VERSION = core.version }

-- Columns of the report, in CSV order; also the keys of each JSON object.
_M.COLUMNS = { "row", "outcome", "id", "email", "external_id", "error", "details", "reason" }
local COLUMNS = _M.COLUMNS

local Writer = {}
local writer_mt = { __index = Writer }

-- errno: the third value of io.open, file:write, file:close (as liolib answers), when known
local function io_error(path, msg, errno)
  return core.error{ kind = "io", path = path, errno = errno, message = "report " .. tostring(msg) }
end

-- Format of a report path, or nil when the extension says neither.
function _M.format_of(path)
  local ext = match(path, "%.(%w+)$")
  ext = ext and lower(ext)
  if ext == "csv" or ext == "json" then return ext end
  return nil
end

local function csv_cell(v)
  if v == nil or v == core.null then return "" end
  local s = tostring(v)
  if find(s, '[,"\r\n]') then
    s = '"' .. gsub(s, '"', '""') .. '"'
  end
  return s
end

-- The name a report is written under until close renames it to path.
function _M.temp_path(path)
  return path .. ".tmp"
end

function _M.open(path)
  if type(path) ~= "string" or path == "" then
    error("report: path must be a non-empty string", 2)
  end
  local fmt = _M.format_of(path)
  if not fmt then
    error("report: '" .. path .. "' must end in .csv or .json", 2)
  end
  local tmp = _M.temp_path(path)
  local ok, err = core.create_private(tmp, true)
  if not ok then return nil, io_error(path, err) end
  local f, oerr, errno = io_open(tmp, "w")
  if not f then return nil, io_error(path, oerr, errno) end
  f:setvbuf("full", 65536)
  local w = setmetatable({ file = f, path = path, tmp = tmp, format = fmt, count = 0, cells = {} }, writer_mt)
  local hok, herr
  if fmt == "csv" then
    hok, herr = f:write(concat(COLUMNS, ","), "\n")
  else
    hok, herr = f:write("[")
  end
  if not hok then
    f:close()
    return nil, io_error(path, herr)
  end
  return w
end

function Writer:write(o)
  local f = self.file
  if not f then error("report: writer is closed", 2) end
  local ok, err
  if self.format == "csv" then
    local cells = self.cells
    for i = 1, #COLUMNS do cells[i] = csv_cell(o[COLUMNS[i]]) end
    ok, err = f:write(concat(cells, ","), "\n")
  else
    local t = {}
    for i = 1, #COLUMNS do
      local k = COLUMNS[i]
      local v = o[k]
      -- JSON holds no raw bytes: a row's invalid UTF-8 is shown as \xNN (the CSV report keeps them)
      if type(v) == "string" then v = utf8_escape(v) end
      if v ~= nil then t[k] = v end
    end
    local json, jerr = core.encode(t)
    if not json then return nil, io_error(self.path, jerr) end
    ok, err = f:write(self.count == 0 and "\n" or ",\n", json)
  end
  if not ok then return nil, io_error(self.path, err) end
  self.count = self.count + 1
  return true
end

function Writer:close()
  local f = self.file
  if not f then return true end
  self.file = nil
  local ok, err = true, nil
  if self.format == "json" then
    ok, err = f:write(self.count == 0 and "]\n" or "\n]\n")
  end
  if ok then core.fsync(f) end
  local cok, cerr = f:close()
  if not ok then return nil, io_error(self.path, err) end
  if not cok then return nil, io_error(self.path, cerr) end
  local rok, rerr = os_rename(self.tmp, self.path)
  if not rok then return nil, io_error(self.path, rerr) end
  return true
end

return _M
