-- A strict RFC 4180 reader for the specs, written apart from zendesk.sources so that a report
-- is checked by a parser that shares no code with the project: fields separated by ',', records
-- ended by CRLF or LF (the report writes LF), a field either plain (no '"', CR or LF in it) or
-- quoted with '"' and '""' for a quote inside. Anything else is an error naming the byte.
local M = {}

-- Parses text; returns a list of records (lists of strings), or nil and an error message.
function M.parse(text)
  local records, record, field = {}, {}, {}
  local i, n = 1, #text
  local quoted_field = false
  local function fail(what) return nil, string.format("CSV: %s at byte %d", what, i) end
  local function end_field()
    record[#record + 1] = table.concat(field)
    field, quoted_field = {}, false
  end
  local function end_record()
    end_field()
    records[#records + 1] = record
    record = {}
  end
  local at_field_start = true
  while i <= n do
    local c = text:sub(i, i)
    if at_field_start and c == '"' then
      -- a quoted field: up to the closing quote, "" standing for one quote
      quoted_field = true
      i = i + 1
      while true do
        if i > n then return fail("unterminated quoted field") end
        local q = text:find('"', i, true)
        if not q then return fail("unterminated quoted field") end
        field[#field + 1] = text:sub(i, q - 1)
        if text:sub(q + 1, q + 1) == '"' then
          field[#field + 1] = '"'
          i = q + 2
        else
          i = q + 1
          break
        end
      end
      local d = text:sub(i, i)
      if d ~= "," and d ~= "\n" and d ~= "\r" and d ~= "" then return fail("text after a closing quote") end
      at_field_start = false
    elseif c == "," then
      end_field()
      i = i + 1
      at_field_start = true
    elseif c == "\r" then
      if text:sub(i + 1, i + 1) ~= "\n" then return fail("CR without LF") end
      end_record()
      i = i + 2
      at_field_start = true
    elseif c == "\n" then
      end_record()
      i = i + 1
      at_field_start = true
    elseif c == '"' then
      return fail("quote inside a plain field")
    else
      if quoted_field then return fail("text after a closing quote") end
      local j = text:find('[,\r\n"]', i) or n + 1
      field[#field + 1] = text:sub(i, j - 1)
      i = j
      at_field_start = false
    end
  end
  if not at_field_start or #record > 0 or #field > 0 then
    return nil, "CSV: the last record has no line end"
  end
  return records
end

-- Parses a file whose first record is the header: returns a list of {column = value} tables,
-- or nil and an error (also when a record has another number of fields than the header).
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil, "cannot open " .. path end
  local text = f:read("*a")
  f:close()
  local records, err = M.parse(text)
  if not records then return nil, err end
  local header = table.remove(records, 1)
  if not header then return nil, "CSV: no header" end
  local rows = {}
  for r, rec in ipairs(records) do
    if #rec ~= #header then
      return nil, string.format("CSV: record %d has %d fields, the header %d", r + 1, #rec, #header)
    end
    local row = {}
    for k, name in ipairs(header) do row[name] = rec[k] end
    rows[r] = row
  end
  return rows, header
end

return M
