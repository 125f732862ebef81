-- zendesk.sources: streaming readers that turn a CSV, JSON or NDJSON input (or a Lua array or
-- iterator) into user tables one record at a time, so an export of any size syncs in flat memory.
--
-- syntax: reader, err = sources.open(input, opts)
-- syntax: row, user, problem = reader:next()
-- syntax: for row, user, problem in reader:rows() do ... end
-- syntax: reader:close()
--
-- input: a path (format from the extension: .csv, .json, .ndjson / .jsonl, else opts.format), an
-- open file handle (opts.format required; left open by close), a Lua array of user tables (its
-- length taken at open), or an iterator function returning user tables (nil ends; nil, err or
-- an error raised by it is a fatal error of the reader).
-- opts: format, delimiter (one byte, default ","), tag_separator (default ";"), columns (header
-- -> field spec or false), field_types (user_fields key -> one of the ten types of
-- zendesk.fields: text, textarea, checkbox, date, integer, decimal, regexp, dropdown,
-- multiselect, lookup; a bare header naming a key maps to that user field), decode (function(s)
-- -> value | nil, err; default zendesk.core.decode), chunk_size, name (what messages call the
-- input; default: the path, or "<csv input>" for a handle), schema (the account's user fields: a
-- zendesk.fields schema, or a function answering one | nil, err, called once, only when a header
-- is no fixed field: a header that is a field's key or title then maps to it, cells are converted
-- by its definition, and a user_fields.<key> column the account lacks is an UnknownUserField
-- error), empty_cells ("omit", the default: an empty cell leaves its field out; "null": it
-- clears it, except email and external_id; tags become []).
-- A header identities.<type> (email, phone_number, twitter, ...) adds {type =, value =} to the
-- user's identities for each value of its cell (split on tag_separator).
-- Misuse raises error(msg, 2); so does a CSV header with an unknown or doubly mapped column.
-- The errors about an option or the CSV header are tables, so that a caller (the CLI) can word
-- them in its own terms: {code =, option = (the opts key), message =, ...} (see option_error);
-- tostring gives the message, with the position of the caller as error(msg, 2) would.
-- A file that cannot be opened gives nil, err, an io error table {kind = "io", path =, errno =,
-- message =}; a CSV header that cannot be read gives nil, err (a message).
--
-- next() answers, per record: row (1-based among data records) and the user table, or row, nil
-- and a one-line problem when that record could not be parsed or mapped (reading goes on; a CSV
-- record whose cells split but did not all map, a cell that is not valid UTF-8 among them, also
-- answers the cells that did, 4th, so that a report can name the row's email);
-- nil at the end; false, message once on a fatal error (I/O error, broken JSON array; a third
-- value, an option error, when an option would fix it), and nil
-- after that, so a generic for that ignores the false still ends. reader.line is the physical
-- line where the last CSV record or NDJSON line started.
--
-- Limitations: a record (CSV record, JSON element, NDJSON line) up to MAX_RECORD bytes is always
-- read; past that reading may stop with a fatal error instead of buffering the rest of the input
-- (this is what an unterminated quote early in a large CSV file looks like). Under LuaJIT an
-- integer cell must be below 2^53 in magnitude, the range a double holds exactly.

local _M = {_VERSION = "0.1.0"}

local type, error, tostring, pcall, setmetatable, pairs, require =
      type, error, tostring, pcall, setmetatable, pairs, require
local find, sub, byte, lower, match, gsub, format =
      string.find, string.sub, string.byte, string.lower, string.match, string.gsub, string.format
local concat = table.concat
local io_open, io_type = io.open, io.type
local HUGE = math.huge
local options = require "zendesk.options"

-- The encoder's UTF-8 rule, to name the column of a bad cell; without the core (sources also
-- runs on its own) validation still refuses the row, naming the field.
local utf8_check, core_error
do
  local ok, core = pcall(require, "zendesk.core")
  utf8_check = ok and type(core) == "table" and core.utf8_check or nil
  core_error = ok and type(core) == "table" and core.error or nil
end

-- An input that cannot be opened: {kind = "io", path =, errno =, message =}, a zendesk.core error
-- (or, without the core, a table of the same fields whose tostring is the message).
local io_error_mt = {__tostring = function(e) return e.message end}
local function io_error(path, msg, errno)
  local e = {kind = "io", path = path, errno = errno, message = msg}
  if core_error then return core_error(e) end
  return setmetatable(e, io_error_mt)
end

local MAX_RECORD = 4 * 1024 * 1024
_M.MAX_RECORD = MAX_RECORD
local DEFAULT_CHUNK = 65536
local BOM = "\239\187\191"

-- The default CSV header -> field mapping (header names are matched trimmed and lower-cased).
-- Besides these, a header "user_fields.<key>" maps to user_fields[<key>] (the key keeps its case),
-- converted according to opts.field_types. Conversions of the fixed fields are in FIELD_KINDS.
_M.CSV_FIELDS = {
  name = "name", email = "email", external_id = "external_id", role = "role", phone = "phone",
  organization = "organization",            -- organization = {name = cell}
  organization_id = "organization_id",      -- integer
  tags = "tags",                            -- split on opts.tag_separator
  alias = "alias", details = "details", notes = "notes", locale = "locale",
  locale_id = "locale_id", time_zone = "time_zone", verified = "verified",
  suspended = "suspended", signature = "signature", custom_role_id = "custom_role_id",
  default_group_id = "default_group_id", shared_phone_number = "shared_phone_number",
  ticket_restriction = "ticket_restriction", moderator = "moderator",
  only_private_comments = "only_private_comments", remote_photo_url = "remote_photo_url",
  skip_verify_email = "skip_verify_email",
}

-- How a CSV cell becomes the value of each fixed field; absent means text.
local FIELD_KINDS = {
  organization = "organization", tags = "tags",
  organization_id = "integer", locale_id = "integer", custom_role_id = "integer",
  default_group_id = "integer",
  verified = "checkbox", suspended = "checkbox", shared_phone_number = "checkbox",
  moderator = "checkbox", only_private_comments = "checkbox", skip_verify_email = "checkbox",
}
for spec in pairs(_M.CSV_FIELDS) do FIELD_KINDS[spec] = FIELD_KINDS[spec] or "text" end

-- the ten types of Zendesk's custom user fields (zendesk.fields); opts.field_types takes them all
local FIELD_TYPES = {text = true, textarea = true, checkbox = true, date = true, integer = true,
                     decimal = true, regexp = true, dropdown = true, multiselect = true, lookup = true}
local TEXT_TYPES = {text = true, textarea = true, regexp = true, dropdown = true}
-- identity columns: identities.<type>, several values split on the tag separator
local IDENTITY_TYPES = {email = true, phone_number = true, twitter = true, facebook = true,
                        google = true, agent_forwarding = true, sdk = true, messaging = true}
-- what an empty cell does with opts.empty_cells = "null" (else it omits the field): the fields
-- a row is matched on are never cleared, tags are cleared with [] (the others with null)
local NEVER_CLEARED = {email = true, external_id = true}
local FORMATS = {csv = true, json = true, ndjson = true}
local EXTENSIONS = {csv = "csv", json = "json", ndjson = "ndjson", jsonl = "ndjson"}
local OPTIONS = {
  format = "string", delimiter = "string", tag_separator = "string", columns = "table",
  field_types = "table", decode = "function", chunk_size = "number", name = "string",
  schema = "table", empty_cells = "string",
}
local CHECKED = {}
for k in pairs(OPTIONS) do CHECKED[k] = {pass = true} end

-- Errors about an option or the CSV header, with what they are made of: code is one of
-- UnknownColumn {column, index, source, near}, UnknownUserField {column, index, key, closest,
-- source; not a misuse: open answers nil, err}, DuplicateColumn {column, index, other, other_index,
-- field, source}, ColumnGivenTwice {column}, UnknownField {column, field}, NoFormat {path},
-- UnknownFormat {value}, BadDelimiter {value}, EmptyTagSeparator, and, as the third value of a
-- fatal next(), NotAnArray {source, byte, found, suggest = "ndjson"}.
local option_error_mt = {__tostring = function(e) return (e.where or "") .. e.message end}

local function option_error(t)
  return setmetatable(t, option_error_mt)
end

-- error(err, level) for a string or an option error (level as error's, from the caller).
local function raise(err, level)
  if type(err) ~= "table" then error(err, level + 1) end
  local info = debug and debug.getinfo(level + 1, "Sl")
  err.where = (info and info.currentline and info.currentline > 0) and
              (info.short_src .. ":" .. info.currentline .. ": ") or ""
  error(err, 0)
end

---------------------------------------------------------------------------------------------------
-- Cell conversions: each returns the value, or nil and what is wrong with the cell.

-- A cell quoted in a problem message: one line, and short enough to keep the message readable.
local function show(s)
  if #s > 40 then
    local cut = 40
    -- back up to a UTF-8 lead byte so the message stays valid UTF-8
    while cut > 1 and (byte(s, cut + 1) or 0) >= 0x80 and (byte(s, cut + 1) or 0) < 0xC0 do
      cut = cut - 1
    end
    s = sub(s, 1, cut) .. "..."
  end
  return "'" .. gsub(s, "[%c]", " ") .. "'"
end

-- Typed cells (the fixed fields' kinds, opts.field_types, the account's definitions) are converted
-- by zendesk.fields, the one place that knows the ten types; loaded once a column needs it.
local function typed_cell(def, tag_sep)
  local convert = require("zendesk.fields").convert
  return function(v) return convert(def, v, tag_sep) end
end
local TYPED = {integer = true, decimal = true, checkbox = true, date = true, lookup = true, multiselect = true}

local array_mt, null
do
  local ok, core = pcall(require, "zendesk.core")
  array_mt = ok and type(core) == "table" and core.array_mt or nil
  null = ok and type(core) == "table" and core.null or nil
end

-- the pieces of a cell between separators, trimmed, empty ones left out
local function split(v, sep)
  local out, n, p = {}, 0, 1
  while true do
    local s, e = find(v, sep, p, true)
    local piece = sub(v, p, (s or 0) - 1)
    if piece ~= "" and (byte(piece, 1) <= 32 or byte(piece, -1) <= 32) then
      piece = match(piece, "^%s*(.-)%s*$")
    end
    if piece ~= "" then n = n + 1; out[n] = piece end
    if not s then break end
    p = e + 1
  end
  return out, n
end

-- Builds the function that stores one non-empty, trimmed cell into a user table; it returns a
-- problem message, or nothing.
local function make_setter(spec, field_types, tag_sep, def, label)
  label = label or spec
  local key = match(spec, "^user_fields%.(.+)$")
  if key then
    local ft = field_types[key]
    local conv
    if def and not ft then
      conv = typed_cell(def, tag_sep)   -- the account's definition: its options, names and pattern
    elseif TYPED[ft] then
      conv = typed_cell({type = ft}, tag_sep)
    end
    if not conv then
      return function(u, v)
        local uf = u.user_fields
        if not uf then uf = {}; u.user_fields = uf end
        uf[key] = v
      end
    end
    local multi = ft == "multiselect" or (not ft and def and def.type == "multiselect")
    return function(u, v)
      local x, why = conv(v)
      if x == nil then return label .. ": " .. show(v) .. " " .. why end
      -- a multiselect cell of separators only leaves the field out, as a tags cell does
      if multi and #x == 0 then return end
      local uf = u.user_fields
      if not uf then uf = {}; u.user_fields = uf end
      uf[key] = x
    end
  end
  local itype = match(spec, "^identities%.(.+)$")
  if itype then
    return function(u, v)
      local list, n = split(v, tag_sep)
      if n == 0 then return end
      local ids = u.identities
      if not ids then ids = array_mt and setmetatable({}, array_mt) or {}; u.identities = ids end
      for i = 1, n do ids[#ids + 1] = {type = itype, value = list[i]} end
    end
  end
  local kind = FIELD_KINDS[spec]
  if kind == "text" then
    return function(u, v) u[spec] = v end
  elseif kind == "organization" then
    return function(u, v) u.organization = {name = v} end
  elseif kind == "tags" then
    return function(u, v)
      -- an empty cell or one with only separators leaves tags out rather than clearing them
      local tags, n = split(v, tag_sep)
      if n > 0 then u.tags = tags end
    end
  end
  local conv = typed_cell({type = kind})
  return function(u, v)
    local x, why = conv(v)
    if x == nil then return spec .. ": " .. show(v) .. " " .. why end
    u[spec] = x
  end
end

local function valid_spec(spec)
  if spec == false then return true end
  if type(spec) ~= "string" then return false end
  if FIELD_KINDS[spec] ~= nil or find(spec, "^user_fields%.[^%s]+$") then return true end
  local it = match(spec, "^identities%.(.+)$")
  return it ~= nil and IDENTITY_TYPES[it] == true
end

local function trim(s)
  return match(s, "^%s*(.-)%s*$")
end

---------------------------------------------------------------------------------------------------
-- The byte source shared by the three text formats: a buffer refilled from a file in chunks.

-- Answers a table with buf (the buffered text), base (bytes dropped before buf), eof, and
-- fill(keep): keeps buf from index keep on, appends at least one chunk, and answers the shift to
-- subtract from positions (or nil at end of input, or false, err on an I/O error or when one
-- record would exceed MAX_RECORD).
local function byte_source(file, chunk)
  local src = {buf = "", base = 0, eof = false}
  function src.fill(keep)
    if src.eof then return nil end
    local buf = src.buf
    local rest = #buf - keep + 1
    if rest >= MAX_RECORD then return false, "too long" end
    -- grow reads with the pending record so a long one costs linear, not quadratic, rescans
    local data, err = file:read(rest > chunk and rest or chunk)
    if not data then
      if err then return false, tostring(err) end
      src.eof = true
      return nil
    end
    src.buf = rest > 0 and sub(buf, keep) .. data or data
    src.base = src.base + keep - 1
    return keep - 1
  end
  -- a UTF-8 byte order mark (Excel writes one) is not part of the first header or value
  function src.skip_bom()
    while #src.buf < 3 and not src.eof do
      local shift, err = src.fill(1)
      if shift == false then return nil, err end
    end
    if sub(src.buf, 1, 3) == BOM then
      src.buf = sub(src.buf, 4)
      src.base = 3
    end
    return true
  end
  return src
end

---------------------------------------------------------------------------------------------------
-- CSV

-- Answers record(), which returns n, line, bad, clean, utf8 for each record (its fields in the
-- shared array `fields`; bad is a problem found while splitting it; clean: no field needs
-- trimming; utf8: the whole line is valid UTF-8, so no cell needs checking), nil at the end, or
-- false, err.
local function csv_records(file, chunk, delim, fields)
  local src = byte_source(file, chunk)
  local buf, pos, eof = "", 1, false
  local line = 1                 -- physical line at pos
  -- Cached positions of the next quote, delimiter, and blank next to a delimiter at or after pos
  -- (HUGE: none in the buffer). Each is searched once per occurrence, not once per line, so a
  -- line without any costs no search, and a file whose cells have no blanks at their ends costs
  -- no per-cell trimming check. Plain finds only: a pattern class scans ~20 times slower.
  local qpos, dpos, crpos, w1, w2, w3, w4 = 0, 0, 0, 0, 0, 0, 0
  local dbyte = byte(delim)
  local ws = (delim == " " and "" or " ") .. (delim == "\t" and "" or "\t")
  local lead_quote = "^[" .. ws .. ']*"'
  local skip_ws = "^[" .. ws .. "]*"
  local blank = "^[" .. ws .. "]*\r?\n"
  local d_esc = (find(delim, "%p") and "%" or "") .. delim
  local stop = "[" .. d_esc .. "\n]"
  local b1, b2 = (delim == " " and "\t" or " ") .. delim, delim .. (delim == " " and "\t" or " ")
  local b3, b4 = (delim == "\t" and " " or "\t") .. delim, delim .. (delim == "\t" and " " or "\t")
  local started = false

  local function refill()
    local shift, err = src.fill(pos)
    if shift == false then return false, err end
    if shift == nil then
      eof = true
      -- a final line without newline ends like the others from here on
      src.buf = sub(src.buf, pos)
      src.base = src.base + pos - 1
      if src.buf ~= "" and byte(src.buf, -1) ~= 10 then src.buf = src.buf .. "\n" end
    end
    buf, pos, qpos, dpos, crpos, w1, w2, w3, w4 = src.buf, 1, 0, 0, 0, 0, 0, 0, 0
    return true
  end

  -- A record with a quote somewhere: split it field by field. Answers nil when the buffer ends
  -- before the record does.
  local function quoted_record()
    local p, n, nlines, bad = pos, 0, 0, nil
    while true do
      local v, after
      local _, q0 = find(buf, lead_quote, p)
      if q0 then
        local c, parts, np = q0 + 1, nil, 0
        while true do
          local q = find(buf, '"', c, true)
          if not q then return nil end
          local nb = byte(buf, q + 1)
          if nb == 34 then
            parts = parts or {}
            np = np + 1; parts[np] = sub(buf, c, q)
            c = q + 2
          elseif not nb then
            return nil               -- cannot tell a closing quote from a doubled one yet
          else
            v = sub(buf, c, q - 1)
            if parts then np = np + 1; parts[np] = v; v = concat(parts, "", 1, np) end
            c = q + 1
            break
          end
        end
        local s = find(v, "\n", 1, true)
        while s do nlines = nlines + 1; s = find(v, "\n", s + 1, true) end
        local _, we = find(buf, skip_ws, c)
        c = we + 1
        local b = byte(buf, c)
        if b == dbyte or b == 10 then
          after = c
        elseif b == 13 and byte(buf, c + 1) == 10 then
          after = c + 1
        elseif not b or (b == 13 and not byte(buf, c + 1)) then
          return nil
        else
          local d = find(buf, stop, c)
          if not d then return nil end
          local e = d - 1
          if byte(buf, d) == 10 and byte(buf, e) == 13 then e = e - 1 end
          v = v .. sub(buf, c, e)
          bad = bad or format("field %d: text after the closing quote", n + 1)
          after = d
        end
      else
        after = find(buf, stop, p)
        if not after then return nil end
        local e = after - 1
        if byte(buf, after) == 10 and byte(buf, e) == 13 and e >= p then e = e - 1 end
        v = sub(buf, p, e)
      end
      n = n + 1
      fields[n] = v
      if byte(buf, after) == 10 then
        local first = line
        line = line + 1 + nlines
        pos = after + 1
        return n, first, bad
      end
      p = after + 1
    end
  end

  local function record()
    if not started then
      started = true
      local ok, err = src.skip_bom()
      if not ok then return false, err end
      buf = src.buf
    end
    while true do
      local nl = find(buf, "\n", pos, true)
      if nl then
        local p = pos
        if qpos < p then qpos = find(buf, '"', p, true) or HUGE end
        if qpos > nl then
          -- the common case: no quote before the end of the line, so split on the delimiter
          local e = nl
          if crpos < p then crpos = find(buf, "\r", p, true) or HUGE end
          if crpos < nl and nl > p and byte(buf, nl - 1) == 13 then e = nl - 1 end
          local first = line
          line = line + 1
          pos = nl + 1
          local b = byte(buf, p)
          if e > p and not ((b == 32 or b == 9) and find(buf, blank, p)) then
            if w1 < p then w1 = find(buf, b1, p, true) or HUGE end
            if w2 < p then w2 = find(buf, b2, p, true) or HUGE end
            if w3 < p then w3 = find(buf, b3, p, true) or HUGE end
            if w4 < p then w4 = find(buf, b4, p, true) or HUGE end
            local last = byte(buf, e - 1)
            local clean = w1 >= e and w2 >= e and w3 >= e and w4 >= e and b ~= 32 and b ~= 9
                          and last ~= 32 and last ~= 9
            local line_ok = utf8_check ~= nil and not utf8_check(buf, p, e - 1)
            local n = 0
            while true do
              local d = dpos
              if d < p then d = find(buf, delim, p, true) or HUGE; dpos = d end
              n = n + 1
              if d < e then
                fields[n] = sub(buf, p, d - 1)
                p = d + 1
              else
                fields[n] = sub(buf, p, e - 1)
                return n, first, nil, clean, line_ok
              end
            end
          end
        else
          local n, first, bad = quoted_record()
          if n then return n, first, bad end
          if eof then
            -- skip the rest: there is no telling where this record was meant to end
            local first_line = line
            pos = #buf + 1
            return 0, first_line, "unterminated quoted field"
          end
          local ok, err = refill()
          if not ok then return false, err == "too long" and format(
            "line %d: a record longer than %d bytes (an unterminated quoted field?)",
            line, MAX_RECORD) or err end
        end
      elseif eof then
        return nil
      else
        local ok, err = refill()
        if not ok then return false, err == "too long" and format(
          "line %d: a line longer than %d bytes", line, MAX_RECORD) or err end
      end
    end
  end

  return record
end

local IGNORE, TEXT, UF_TEXT, CONVERT_CELL = 0, 1, 2, 3

local function csv_reader(reader, file, opts, name)
  local delim = opts.delimiter or ","
  local fields = {}
  local record = csv_records(file, opts.chunk_size or DEFAULT_CHUNK, delim, fields)

  -- the header: the first non-blank record
  local ncols, first, bad = record()
  if ncols == false then return nil, name .. ": " .. first end
  if ncols and bad then return nil, format("%s: line %d (header): %s", name, first, bad) end
  ncols = ncols or 0

  local columns = {}
  for k, spec in pairs(opts.columns or {}) do
    local key = lower(trim(k))
    if columns[key] ~= nil then
      return nil, option_error{code = "ColumnGivenTwice", option = "columns", column = key,
        message = format("opts.columns: '%s' is given twice (names are compared trimmed and " ..
                         "lower-cased)", key)}, true
    end
    columns[key] = spec
  end
  local field_types = opts.field_types or {}
  local tag_sep = opts.tag_separator or ";"
  -- a bare header naming a key of opts.field_types (in any case) maps to that user field
  local typed = {}
  for k in pairs(field_types) do typed[lower(k)] = k end
  -- the account's fields (opts.schema: a zendesk.fields schema, or a function that loads it),
  -- asked for only when a header is not a fixed field: a file of fixed fields costs no request
  local schema, loaded = nil, false
  local function get_schema()
    if not loaded then
      loaded = true
      local sc = opts.schema
      if type(sc) == "function" then
        local err
        schema, err = sc()
        if not schema and err then return nil, err end
      else
        schema = sc
      end
    end
    return schema
  end
  -- per column: kinds[i] is IGNORE, TEXT (user[keys[i]] = cell), UF_TEXT (user_fields) or
  -- CONVERT_CELL (setters[i]); text, the bulk of the cells, is stored inline without a call
  local kinds, keys, setters, seen, named, clears = {}, {}, {}, {}, {}, {}
  for i = 1, ncols do
    local header = trim(fields[i])
    local key = lower(header)
    local spec = columns[key]
    local def
    if spec == nil then
      spec = _M.CSV_FIELDS[key]
      if spec == nil then
        local it = match(key, "^identities%.(.+)$")
        if it and IDENTITY_TYPES[it] then spec = "identities." .. it end
      end
      if spec == nil then
        local uf = match(header, "^[Uu][Ss][Ee][Rr]_[Ff][Ii][Ee][Ll][Dd][Ss]%.(%S+)$")
        if uf then
          spec = "user_fields." .. uf
        elseif typed[key] then
          spec = "user_fields." .. typed[key]
        elseif opts.schema then
          -- a field's key or title, unless it names a fixed field (above)
          local sc, serr = get_schema()
          if serr then return nil, serr end
          def = sc and require("zendesk.fields").lookup(sc, header)
          if def then spec = "user_fields." .. def.key end
        end
      end
    end
    if spec == nil then
      local near = ""
      local sc = opts.schema and get_schema()
      if sc then
        local keys_near = require("zendesk.fields").closest(sc, header)
        if #keys_near > 0 then near = " (the account's closest user fields: " .. concat(keys_near, ", ") .. ")" end
      end
      return nil, option_error{code = "UnknownColumn", option = "columns", source = name,
        column = header, index = i, near = near,
        message = format("%s: unknown CSV column '%s' (column %d)%s: map it to a field with " ..
          "opts.columns = {[%q] = \"name\"} (or \"user_fields.<key>\"), or ignore it with " ..
          "opts.columns = {[%q] = false}", name, header, i, near, header, header)}, true
    end
    local ufkey = spec and match(spec, "^user_fields%.(.+)$")
    -- (also for a column typed by hand: the account at hand still has to have the field)
    if ufkey and not def and opts.schema then
      -- a custom-field column the account does not have: fatal before anything is sent
      local sc, serr = get_schema()
      if serr then return nil, serr end
      if sc then
        local F = require "zendesk.fields"
        def = F.lookup(sc, ufkey)
        if not def then
          local near = F.closest(sc, ufkey)
          return nil, option_error{code = "UnknownUserField", kind = "validation", source = name,
            column = header, index = i, key = ufkey, closest = near,
            message = format("%s: column '%s' (column %d): the account has no user field '%s'%s", name,
              header, i, ufkey, #near > 0 and " (closest keys: " .. concat(near, ", ") .. ")" or
              " (it has no user fields)")}
        end
        spec = "user_fields." .. def.key
        -- typed by hand: the hand's type converts the cell (the account still checks the value)
        if field_types[ufkey] ~= nil then
          if field_types[def.key] == nil then
            -- the account's spelling of the key takes the type (a copy: opts stays the caller's)
            local ft = {}
            for k, v in pairs(field_types) do ft[k] = v end
            ft[def.key] = field_types[ufkey]
            field_types = ft
          end
          def = nil
        end
      end
    end
    if spec then
      if seen[spec] then
        return nil, option_error{code = "DuplicateColumn", option = "columns", source = name,
          column = header, index = i, other = seen[spec][1], other_index = seen[spec][2],
          field = spec,
          message = format("%s: columns '%s' (column %d) and '%s' (column %d) both map to %s; " ..
            "ignore one with opts.columns = {[%q] = false}", name, seen[spec][1], seen[spec][2],
            header, i, spec, header)}, true
      end
      seen[spec] = {header, i}
      named[i] = format("column '%s' (%s)", header, spec)
      local uf = match(spec, "^user_fields%.(.+)$")
      local ft = uf and (field_types[uf] or def and def.type or "text")
      if uf and (ft == "text" or ft == "textarea" or (not def and TEXT_TYPES[ft])) then
        kinds[i], keys[i] = UF_TEXT, uf
      elseif FIELD_KINDS[spec] == "text" then
        kinds[i], keys[i] = TEXT, spec
      else
        kinds[i], setters[i] = CONVERT_CELL, make_setter(spec, field_types, tag_sep, def,
          lower(header) ~= lower(spec) and format("column '%s' (%s)", header, spec) or spec)
      end
      if opts.empty_cells == "null" then
        -- what an empty cell of this column clears (nothing for the match keys, identities)
        if uf then
          clears[i] = function(u)
            local t = u.user_fields
            if not t then t = {}; u.user_fields = t end
            t[uf] = null
          end
        elseif spec == "tags" then
          clears[i] = function(u) u.tags = setmetatable({}, array_mt) end
        elseif FIELD_KINDS[spec] and not NEVER_CLEARED[spec] then
          clears[i] = function(u) u[spec] = null end
        end
      end
    else
      kinds[i] = IGNORE
    end
  end

  local row, done = 0, false
  return function()
    if done then return nil end
    local n, line, problem, clean, utf8_ok = record()
    if not n then
      done = true
      if n == false then return false, name .. ": " .. line end
      return nil
    end
    row = row + 1
    reader.line = line
    if problem then
      if n == 0 then done = true end
      return row, nil, format("line %d: %s", line, problem)
    end
    if n ~= ncols then
      return row, nil, format("line %d: %d field%s, the header has %d", line, n,
                              n == 1 and "" or "s", ncols)
    end
    local user = {}
    for i = 1, n do
      local kind = kinds[i]
      if kind ~= IGNORE then
        local v = fields[i]
        if v ~= "" and not clean then
          local b, e = byte(v, 1), byte(v, -1)
          if b <= 32 or e <= 32 then v = trim(v) end
        end
        local at = not utf8_ok and v ~= "" and utf8_check and utf8_check(v)
        if at then
          -- said here, where the column is known; the row is invalid, the others go on
          local why = format("%s: invalid UTF-8 (byte %d)", named[i], at)
          problem = problem and problem .. "; " .. why or why
        end
        if v == "" then
          -- an empty cell omits the field, or clears it with opts.empty_cells = "null"
          local clear = clears[i]
          if clear then clear(user) end
        elseif kind == TEXT then
          user[keys[i]] = v
        elseif kind == UF_TEXT then
          local uf = user.user_fields
          if not uf then uf = {}; user.user_fields = uf end
          uf[keys[i]] = v
        else
          local why = setters[i](user, v)
          if why then problem = problem and problem .. "; " .. why or why end
        end
      end
    end
    -- a row whose email is only in identities.email: its first one is the user's email, which
    -- Zendesk makes the primary on create anyway; create_or_update matches on email (and
    -- external_id), not on identities, so without it the next run fails as a duplicate email
    local ids = user.identities
    if ids and user.email == nil then
      for j = 1, #ids do
        if ids[j].type == "email" then user.email = ids[j].value break end
      end
    end
    -- the cells that did map, 4th: for naming the row (its email) in a report, never for sending
    if problem then return row, nil, format("line %d: %s", line, problem), user end
    return row, user
  end
end

---------------------------------------------------------------------------------------------------
-- JSON and NDJSON

local function json_kind(b)
  if b == 123 then return "object" elseif b == 91 then return "array"
  elseif b == 34 then return "string" elseif b == 116 or b == 102 then return "boolean"
  elseif b == 110 then return "null" elseif b == 45 or (b and b >= 48 and b <= 57) then
    return "number"
  end
  return "an invalid value"
end

-- Decodes one object's text; answers the table, or nil and a problem: "invalid JSON: <why>"
-- for a broken object, "<bad> <why>" for a text that is no JSON value at all (bad: "invalid
-- JSON:" for an array element, "not JSON:" for an NDJSON line), or the type of a valid value
-- that is not an object.
local function decode_object(decode, text, b, bad)
  local ok, v, err = pcall(decode, text)
  if not ok or v == nil then
    local why = ok and err or v
    if type(why) == "table" and type(why.message) == "string" then why = why.message end
    why = gsub(gsub(tostring(why), "%s+", " "), "^invalid JSON: ", "")
    return nil, (b == 123 and "invalid JSON:" or bad) .. " " .. why
  end
  if b ~= 123 then return nil, "expected a JSON object, got " .. json_kind(b) end
  if type(v) ~= "table" then return nil, "expected a JSON object, got " .. type(v) end
  return v
end

local function json_reader(_, file, opts, name, decode)
  local src = byte_source(file, opts.chunk_size or DEFAULT_CHUNK)
  local pos = 1
  local state = "start"          -- start, first, next, after, done
  local row = 0

  local function fatal(msg, info)
    state = "done"
    return false, name .. ": " .. msg, info
  end

  -- Cached positions of the next '{', '[', '}', ']' and '"' at or after the scan position (HUGE:
  -- none in the buffer; 0: unknown). Plain finds run at memchr speed where a pattern class crawls,
  -- and each occurrence is searched for once.
  local o1, o2, c1, c2, qq = 0, 0, 0, 0, 0

  -- Refills keeping from `keep`; answers the shift, nil at the end, or false, message.
  local function more(keep)
    local shift, err = src.fill(keep)
    if shift then o1, o2, c1, c2, qq = 0, 0, 0, 0, 0 end
    if shift == false then
      if err == "too long" then
        return false, format("element %d is longer than %d bytes", row + 1, MAX_RECORD)
      end
      return false, err
    end
    return shift
  end

  -- Moves pos to the next non-blank byte; answers it, nil at the end of input, or false, err.
  local function peek()
    while true do
      local s = find(src.buf, "[^ \t\r\n]", pos)
      if s then pos = s; return byte(src.buf, s) end
      pos = #src.buf + 1
      local shift, err = more(pos)
      if shift == false then return false, err end
      if not shift then return nil end
      pos = pos - shift
    end
  end

  -- The end of the string whose opening quote is at s: the position of its closing quote, nil
  -- if the buffer ends first.
  local function string_end(buf, s)
    local t = s
    while true do
      t = find(buf, '"', t + 1, true)
      if not t then return nil end
      if byte(buf, t - 1) ~= 92 then return t end
      -- escaped only if an odd number of backslashes precede it
      local k = t - 1
      while byte(buf, k - 1) == 92 do k = k - 1 end
      if (t - k) % 2 == 0 then return t end
    end
  end

  -- pos is on the first byte of an element: answers its text, or false, err. Only strings and
  -- nesting are tracked; whether the text is valid JSON is left to the decoder.
  local function element()
    local start = pos
    local buf = src.buf
    local b = byte(buf, start)
    if b == 34 then
      while true do
        local t = string_end(src.buf, start)
        if t then
          pos = t + 1
          return sub(src.buf, start, t)
        end
        local shift, err = more(start)
        if shift == false then return false, err end
        if not shift then
          return false, format("unexpected end of input inside a string in element %d", row + 1)
        end
        start = start - shift
      end
    elseif b ~= 123 and b ~= 91 then
      -- a number, literal or stray token: it ends where the array's punctuation or a blank starts
      while true do
        local e = find(src.buf, "[,%]%s]", start)
        if e then
          pos = e
          return sub(src.buf, start, e - 1)
        end
        local shift, err = more(start)
        if shift == false then return false, err end
        if not shift then
          pos = #src.buf + 1
          return sub(src.buf, start)
        end
        start = start - shift
      end
    end
    local c, depth = start + 1, 1
    while true do
      if o1 < c then o1 = find(buf, "{", c, true) or HUGE end
      if o2 < c then o2 = find(buf, "[", c, true) or HUGE end
      if c1 < c then c1 = find(buf, "}", c, true) or HUGE end
      if c2 < c then c2 = find(buf, "]", c, true) or HUGE end
      if qq < c then qq = find(buf, '"', c, true) or HUGE end
      local s = o1
      if o2 < s then s = o2 end
      if c1 < s then s = c1 end
      if c2 < s then s = c2 end
      if qq < s then s = qq end
      if s == HUGE then
        local shift, err = more(start)
        if shift == false then return false, err end
        if not shift then
          return false, format("unexpected end of input inside element %d", row + 1)
        end
        -- nothing structural up to the old end: resume after it
        start, c = start - shift, #buf + 1 - shift
        buf = src.buf
      elseif s == qq then
        local t = string_end(buf, s)
        if t then
          c = t + 1
        else
          local shift, err = more(start)
          if shift == false then return false, err end
          if not shift then
            return false, format("unexpected end of input inside a string in element %d",
                                 row + 1)
          end
          start, c = start - shift, s - shift     -- rescan this string from its opening quote
          buf = src.buf
        end
      else
        c = s + 1
        if s == o1 or s == o2 then
          depth = depth + 1
        else
          depth = depth - 1
          if depth == 0 then
            pos = c
            return sub(buf, start, s)
          end
        end
      end
    end
  end

  return function()
    if state == "done" then return nil end
    if state == "start" then
      local ok, err = src.skip_bom()
      if not ok then return fatal(err) end
      local b, perr = peek()
      if b == false then return fatal(perr) end
      if b ~= 91 then
        local at, found = src.base + pos, b and json_kind(b) or "the end of input"
        local msg = format("expected a JSON array ('[') at byte %d, found %s (for one object " ..
          "per line use format \"ndjson\")", at, found)
        return fatal(msg, option_error{code = "NotAnArray", option = "format", suggest = "ndjson",
                                       source = name, byte = at, found = found, message = msg})
      end
      pos = pos + 1
      state = "first"
    end
    local b, err = peek()
    if b == false then return fatal(err) end
    if state == "next" then
      if b == 44 then
        pos = pos + 1
        b, err = peek()
        if b == false then return fatal(err) end
        if b == 93 or b == 44 or not b then
          return fatal(format("expected an element after ',' at byte %d", src.base + pos))
        end
      elseif b == 93 then
        pos = pos + 1
        state = "after"
      elseif not b then
        return fatal(format("unexpected end of input after element %d: the array is not closed",
                            row))
      else
        return fatal(format("expected ',' or ']' after element %d at byte %d", row,
                            src.base + pos))
      end
    elseif state == "first" then
      if b == 44 then
        return fatal(format("expected an element at byte %d", src.base + pos))
      elseif b == 93 then
        pos = pos + 1
        state = "after"
      elseif not b then
        return fatal("unexpected end of input: the array is not closed")
      end
    end
    if state == "after" then
      b, err = peek()
      if b == false then return fatal(err) end
      state = "done"
      if b then return fatal(format("unexpected data after the array at byte %d",
                                    src.base + pos)) end
      return nil
    end
    local text, eerr = element()
    if not text then return fatal(eerr) end
    row = row + 1
    state = "next"
    local user, problem = decode_object(decode, text, b, "invalid JSON:")
    if not user then return row, nil, format("element %d: %s", row, problem) end
    return row, user
  end
end

local function ndjson_reader(reader, file, opts, name, decode)
  local src = byte_source(file, opts.chunk_size or DEFAULT_CHUNK)
  local pos, line, row = 1, 1, 0
  local started, done = false, false
  return function()
    if done then return nil end
    if not started then
      started = true
      local ok, err = src.skip_bom()
      if not ok then done = true; return false, name .. ": " .. err end
    end
    while true do
      local buf = src.buf
      local nl = find(buf, "\n", pos, true)
      local text
      if nl then
        text = sub(buf, pos, nl - 1)
        pos = nl + 1
      else
        local shift, err = src.fill(pos)
        if shift == false then
          done = true
          if err == "too long" then
            err = format("line %d is longer than %d bytes", line, MAX_RECORD)
          end
          return false, name .. ": " .. err
        end
        if shift then
          pos = pos - shift
        elseif pos <= #src.buf then
          text = sub(src.buf, pos)      -- the last line, without newline
          pos = #src.buf + 1
        else
          done = true
          return nil
        end
      end
      if text then
        local first = line
        line = line + 1
        local s = find(text, "[^ \t\r]")
        if s then
          row = row + 1
          reader.line = first
          local user, problem = decode_object(decode, text, byte(text, s), "not JSON:")
          if not user then return row, nil, format("line %d: %s", first, problem) end
          return row, user
        end
      end
    end
  end
end

---------------------------------------------------------------------------------------------------
-- Lua arrays and iterators

local function table_problem(v)
  return "expected a table, got " .. type(v)
end

local function array_reader(input)
  local n, i = #input, 0
  return function()
    if i >= n then return nil end
    i = i + 1
    local v = input[i]
    if type(v) ~= "table" then return i, nil, table_problem(v) end
    return i, v
  end
end

local function iterator_reader(input)
  local calls, done = 0, false
  return function()
    if done then return nil end
    -- the iterator is the caller's data source (a database cursor, say): its failure is a fatal
    -- read error of this reader, like an I/O error, not an error in the code reading it
    local ok, v, err = pcall(input)
    if not ok then
      done = true
      return false, "iterator failed: " .. tostring(v)
    end
    if v == nil then
      done = true
      if err ~= nil then return false, tostring(err) end
      return nil
    end
    calls = calls + 1
    if type(v) ~= "table" then return calls, nil, table_problem(v) end
    return calls, v
  end
end

---------------------------------------------------------------------------------------------------
-- The reader object

local methods = {}
local reader_mt = {__index = methods}

function methods.next(self)
  if self.closed then error("reader is closed", 2) end
  return self._next()
end

function methods.rows(self)
  if self.closed then error("reader is closed", 2) end
  return methods.next, self
end

function methods.close(self)
  if not self.closed then
    self.closed = true
    if self._file then self._file:close() end
    self._file = nil
  end
  return true
end

reader_mt.__close = methods.close

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    return nil, "bad argument #2 to 'open' (table expected, got " .. type(opts) .. ")"
  end
  -- unknown keys raise as every module's options do (zendesk.options); the types are checked
  -- below, in this module's words (level 4: check_opts, open, then open's caller)
  options.check(CHECKED, opts, "sources.open", 4)
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if k == "schema" and type(v) == "function" then want = "function" end
    if type(v) ~= want then
      return nil, format("opts.%s: %s expected, got %s", k, want, type(v))
    end
  end
  if opts.format and not FORMATS[opts.format] then
    return nil, option_error{code = "UnknownFormat", option = "format", value = opts.format,
      message = "opts.format: unknown format '" .. opts.format .. "' (csv, json or ndjson)"}
  end
  local d = opts.delimiter
  if d and (#d ~= 1 or d == '"' or d == "\r" or d == "\n") then
    return nil, option_error{code = "BadDelimiter", option = "delimiter", value = d,
      message = "opts.delimiter: one byte other than a quote or a line break expected"}
  end
  if opts.tag_separator == "" then
    return nil, option_error{code = "EmptyTagSeparator", option = "tag_separator",
      message = "opts.tag_separator: must not be empty"}
  end
  local cs = opts.chunk_size
  if cs and (cs < 1 or cs ~= cs or cs % 1 ~= 0 or cs == HUGE) then
    return nil, "opts.chunk_size: a positive integer expected"
  end
  for k, spec in pairs(opts.columns or {}) do
    if type(k) ~= "string" then
      return nil, "opts.columns: keys are header names (strings), got " .. type(k)
    end
    if not valid_spec(spec) then
      return nil, option_error{code = "UnknownField", option = "columns", column = k, field = spec,
        message = format("opts.columns[%q]: unknown field %s (a user field such as \"name\", " ..
          "\"user_fields.<key>\", or false to ignore the column)", k,
          type(spec) == "string" and "'" .. spec .. "'" or "of type " .. type(spec))}
    end
  end
  for k, t in pairs(opts.field_types or {}) do
    if type(k) ~= "string" or not FIELD_TYPES[t] then
      return nil, format("opts.field_types[%s]: unknown type %s (text, textarea, integer, decimal, " ..
        "checkbox, date, regexp, dropdown, multiselect or lookup)", tostring(k), tostring(t))
    end
  end
  local e = opts.empty_cells
  if e ~= nil and e ~= "omit" and e ~= "null" then
    return nil, "opts.empty_cells: \"omit\" (leave the field out) or \"null\" (clear it) expected, got '"
      .. e .. "'"
  end
  if e == "null" and not null then
    return nil, "opts.empty_cells = \"null\" needs zendesk.core (zendesk.null)"
  end
  return opts
end

-- syntax: reader, err = sources.open(input, opts)
function _M.open(input, opts)
  local o, oerr = check_opts(opts)
  if not o then raise(oerr, 2) end
  opts = o

  local reader = setmetatable({closed = false}, reader_mt)
  local it = type(input)
  if it == "table" then
    reader._next = array_reader(input)
    return reader
  elseif it == "function" then
    reader._next = iterator_reader(input)
    return reader
  end

  local file, name, fmt, own
  if it == "string" then
    fmt = opts.format
    if not fmt then
      local ext = match(input, "%.([%w]+)$")
      fmt = ext and EXTENSIONS[lower(ext)]
      if not fmt then
        raise(option_error{code = "NoFormat", option = "format", path = input,
          message = "cannot tell the format of '" .. input .. "' from its extension: pass " ..
                    "opts.format (\"csv\", \"json\" or \"ndjson\")"}, 2)
      end
    end
    name = opts.name or input
  elseif io_type(input) == "file" then
    fmt = opts.format
    if not fmt then
      error("opts.format is required when reading from a file handle " ..
            "(\"csv\", \"json\" or \"ndjson\")", 2)
    end
    file, name = input, opts.name or ("<" .. fmt .. " input>")
  elseif io_type(input) == "closed file" then
    error("bad argument #1 to 'open' (the file handle is closed)", 2)
  else
    error("bad argument #1 to 'open' (path, file handle, array or iterator expected, got " ..
          it .. ")", 2)
  end

  local decode = opts.decode
  if fmt ~= "csv" and not decode then
    local ok, core = pcall(require, "zendesk.core")
    if not ok or type(core) ~= "table" or type(core.decode) ~= "function" then
      error("opts.decode is required while zendesk.core is not available (" ..
            gsub(tostring(core), "%s+", " ") .. ")", 2)
    end
    decode = core.decode
  end

  if not file then
    local err, errno
    file, err, errno = io_open(input, "rb")
    if not file then return nil, io_error(input, err, errno) end
    own = true
  end

  local make = fmt == "csv" and csv_reader or fmt == "json" and json_reader or ndjson_reader
  local next_fn, err, misuse = make(reader, file, opts, name, decode)
  if not next_fn then
    if own then file:close() end
    if misuse then raise(err, 2) end
    return nil, err
  end
  reader._next = next_fn
  if own then reader._file = file end
  return reader
end

return _M
