-- Users of the stand-in: validation, matching (external_id, then email), the
-- create/update logic shared by single and bulk endpoints, and rendering.
local json = require "fake_zendesk.json"
local state = require "fake_zendesk.state"
local fields = require "fake_zendesk.fields"

local ngx = ngx
local zd = state.zd
local null = json.null
local str, value, jid = json.str, json.value, json.id
local concat, insert, lower, format = table.concat, table.insert, string.lower, string.format
local type, tostring, pairs, ipairs = type, tostring, pairs, ipairs

local _M = {}

local WRITABLE = {}
for k in ([[name email external_id identities organization organization_id role custom_role_id
  phone tags user_fields alias details notes locale locale_id time_zone verified suspended
  signature default_group_id moderator only_private_comments ticket_restriction remote_photo_url
  skip_verify_email id shared_phone_number photo agent_brand_ids]]):gmatch("%S+") do
  WRITABLE[k] = true
end

-- Zendesk's identity types (User Identities API)
local IDENTITY_TYPES = {}
for t in ([[email twitter facebook google phone_number agent_forwarding any_channel foreign sdk
  messaging]]):gmatch("%S+") do
  IDENTITY_TYPES[t] = true
end

local ROLES = { ["end-user"] = true, agent = true, admin = true }
local RESTRICTIONS = { organization = true, groups = true, assigned = true, requested = true }
local LOCALES = { ["en-US"] = 1, ["en-GB"] = 1176, es = 2, de = 8, fr = 16, ja = 67, ["pt-BR"] = 19, nl = 9, it = 22 }
local IANA = {
  ["Arizona"] = "America/Phoenix", ["Eastern Time (US & Canada)"] = "America/New_York",
  ["Pacific Time (US & Canada)"] = "America/Los_Angeles", ["UTC"] = "Etc/UTC", ["London"] = "Europe/London",
}
local DEFAULT_TZ = "America/New_York"

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end
_M.iso = iso

-- Validation errors: field -> list of detail entries (JSON text), in first-seen order.
local function new_errs()
  return { order = {}, map = {}, text = {} }
end

local function add_err(errs, field, description, code, field_key)
  if not errs.map[field] then
    errs.map[field] = {}
    errs.order[#errs.order + 1] = field
  end
  local e = '{"description":' .. str(description)
  if code then e = e .. ',"error":' .. str(code) end
  if field_key then e = e .. ',"field_key":' .. str(field_key) end
  insert(errs.map[field], e .. "}")
  errs.text[#errs.text + 1] = description
end

local function has_errs(errs)
  return #errs.order > 0
end

function _M.errs_json(errs)
  local parts = {}
  for i, f in ipairs(errs.order) do
    parts[i] = str(f) .. ":[" .. concat(errs.map[f], ",") .. "]"
  end
  return '{"error":"RecordInvalid","description":"Record validation errors","details":{'
    .. concat(parts, ",") .. "}}"
end

-- The `details` string of a failed job result.
function _M.errs_text(errs)
  return concat(errs.text, " ")
end

local function is_email(s)
  return type(s) == "string" and #s <= 254 and s:find("^[^%s@,;<>\"]+@[^%s@,;<>\"]+%.[^%s@,;<>\"]+$") ~= nil
    and not s:find("%.%.") and not s:find("@%.") and not s:find("%.$")
end

local function scalar_string(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return json.num(v) end
  return nil
end

-- Input user object -> normalized changes, validation errors, unpermitted keys.
local function prepare(u, cfg)
  local ch, errs, warn = {}, new_errs(), {}
  for k in pairs(u) do
    if type(k) == "string" and not WRITABLE[k] then warn[#warn + 1] = "user." .. k end
  end
  if u.name ~= nil then
    local s = scalar_string(u.name)
    s = s and s:match("^%s*(.-)%s*$")
    if not s or s == "" then
      add_err(errs, "name", "Name: is too short (minimum is 1 characters)")
    else
      ch.name = s
    end
  end
  if u.email ~= nil and u.email ~= null then
    local e = scalar_string(u.email)
    e = e and e:match("^%s*(.-)%s*$")
    if not is_email(e) then
      add_err(errs, "email", "Email: " .. tostring(e or u.email) .. " is not properly formatted")
    else
      ch.email = lower(e)
    end
  end
  if u.external_id ~= nil then
    local x = scalar_string(u.external_id)
    if u.external_id == null or x == "" then
      ch.external_id = null
    elseif x then
      ch.external_id = x
    else
      add_err(errs, "external_id", "External ID: is invalid", "InvalidValue")
    end
  end
  if u.role ~= nil then
    if not ROLES[u.role] then
      add_err(errs, "role", "Role: " .. tostring(u.role) .. " is not included in the list", "InvalidValue")
    else
      ch.role = u.role
    end
  end
  if u.custom_role_id ~= nil and u.custom_role_id ~= null then
    local id = json.id_of(u.custom_role_id)
    if not id then
      add_err(errs, "custom_role_id", "Custom role: is invalid", "InvalidValue")
    else
      ch.custom_role_id = id
      ch.role = "agent"
    end
  end
  if u.phone ~= nil then
    local p = u.phone == null and null or scalar_string(u.phone)
    if p == "" then p = null end
    if p then ch.phone = p end
  end
  if u.tags ~= nil then
    local tags = {}
    if type(u.tags) == "string" then
      for t in u.tags:gmatch("[^%s,]+") do tags[#tags + 1] = t end
    elseif type(u.tags) == "table" then
      for _, t in ipairs(u.tags) do
        local s = scalar_string(t)
        if s and s ~= "" then tags[#tags + 1] = s end
      end
    end
    ch.tags = tags
  end
  if type(u.user_fields) == "table" then
    local uf = {}
    for k, v in pairs(u.user_fields) do
      local def = cfg.field_by_key[k]
      if def == nil or not def.active then
        -- unknown and inactive fields: ignored, named in X-Zendesk-API-Warn
        warn[#warn + 1] = "user.user_fields." .. tostring(k)
      else
        local lit, e = fields.literal(def, v)
        if lit then uf[k] = lit else add_err(errs, "base", e, "InvalidValue", k) end
      end
    end
    ch.user_fields = uf
  end
  if type(u.organization) == "table" then
    local n = scalar_string(u.organization.name)
    if n and n:find("%S") then ch.org_name = n end
  end
  if u.organization_id ~= nil then
    if u.organization_id == null then
      ch.organization_id = null
    else
      local id = json.id_of(u.organization_id)
      if id then ch.organization_id = id
      else add_err(errs, "organization_id", "Organization: is invalid", "InvalidValue") end
    end
  end
  if u.default_group_id ~= nil then
    ch.default_group_id = u.default_group_id == null and null or json.id_of(u.default_group_id)
  end
  for _, k in ipairs({ "alias", "details", "notes", "signature" }) do
    local v = u[k]
    if v ~= nil then ch[k] = v == null and null or scalar_string(v) end
  end
  for _, k in ipairs({ "verified", "suspended", "moderator", "only_private_comments", "shared_phone_number" }) do
    if type(u[k]) == "boolean" then ch[k] = u[k] end
  end
  if u.ticket_restriction ~= nil then
    if u.ticket_restriction == null or RESTRICTIONS[u.ticket_restriction] then
      ch.ticket_restriction = u.ticket_restriction
    else
      add_err(errs, "ticket_restriction", "Ticket restriction: is invalid", "InvalidValue")
    end
  end
  if type(u.time_zone) == "string" then
    ch.time_zone = u.time_zone
    ch.iana_time_zone = u.time_zone:find("/") and u.time_zone or IANA[u.time_zone] or u.time_zone
  end
  if type(u.locale) == "string" then
    ch.locale = u.locale
    ch.locale_id = LOCALES[u.locale] or 1
  elseif type(u.locale_id) == "number" then
    ch.locale_id = u.locale_id
    for l, i in pairs(LOCALES) do if i == u.locale_id then ch.locale = l end end
  end
  if u.identities ~= nil and u.identities ~= null then
    local list = u.identities
    if type(list) ~= "table" then
      add_err(errs, "identities", "Identities: is invalid", "InvalidValue")
      list = {}
    end
    local idents, seen = {}, {}
    for _, it in ipairs(list) do
      local typ = type(it) == "table" and it.type or nil
      local v = type(it) == "table" and scalar_string(it.value) or nil
      if type(typ) ~= "string" then
        add_err(errs, "identities", "Identities: is invalid", "InvalidValue")
        v = nil
      elseif not IDENTITY_TYPES[typ] then
        add_err(errs, "identities", "Identities: " .. typ .. " is not a valid identity type", "InvalidValue")
        v = nil
      elseif typ == "email" then
        if is_email(v) then
          v = lower(v)
        else
          add_err(errs, "email", "Email: " .. tostring(v) .. " is not properly formatted")
          v = nil
        end
      elseif not v or not v:find("%S") then
        add_err(errs, "identities", "Identities: the " .. typ .. " value is blank", "BlankValue")
        v = nil
      end
      local key = v and typ .. "\0" .. v
      if key and not seen[key] then -- a repeated type+value is stored once
        seen[key] = true
        idents[#idents + 1] = { type = typ, value = v }
      end
    end
    ch.identities = idents
  end
  return ch, errs, warn
end

local function decode_rec(raw)
  return raw and json.raw_decode(raw)
end

function _M.get(id)
  if not id then return nil end
  return decode_rec(zd:get("u:" .. id))
end

local function store(rec)
  local ok, err = zd:safe_set("u:" .. rec.id, json.encode(rec))
  if not ok then error("stand-in state is full (" .. tostring(err) .. "): raise lua_shared_dict zd") end
end

local function has_ident(rec, typ, val)
  for _, it in ipairs(rec.idents or {}) do
    if it.type == typ and it.value == val then return true end
  end
  return false
end

local function add_ident(rec, typ, val, verified, primary, now)
  rec.idents = rec.idents or {}
  rec.idents[#rec.idents + 1] = {
    id = state.next_aux_id("ident"), type = typ, value = val,
    verified = verified or false, primary = primary or false, created_at = now, updated_at = now,
  }
  if typ == "email" then zd:safe_set("e:" .. val, rec.id) end
end

local function find_or_create_org(name, now)
  local key = "on:" .. lower(name)
  local id = zd:get(key)
  if id then return id end
  id = state.next_aux_id("org")
  zd:safe_set(key, id)
  zd:safe_set("oi:" .. id, json.encode({ id = id, name = name, created_at = now }))
  return id
end

local SIMPLE = { "name", "alias", "details", "notes", "signature", "suspended", "moderator",
  "only_private_comments", "shared_phone_number", "ticket_restriction", "time_zone", "iana_time_zone",
  "locale", "locale_id", "role", "custom_role_id", "default_group_id", "tags" }

local function per_user_check(id, cfg)
  local limit = cfg.per_user_limit
  if limit <= 0 then return true end
  local key = "pu:" .. id
  local n = zd:incr(key, 1, 0, 60)
  local ttl = zd:ttl(key) or 60
  local resets = math.max(1, math.ceil(ttl))
  if n > limit then return false, resets end
  return true, resets, limit - n
end

-- Runs under the lock: match, check, then write (nothing written when invalid).
local function apply_locked(u, ch, errs, opts, cfg)
  if opts.gen and opts.gen ~= state.generation() then return { kind = "aborted" } end
  local now = opts.now or ngx.time()
  local target, rec
  if opts.mode == "update" then
    target = opts.id
  elseif opts.mode == "create_or_update" then
    if u.id ~= nil then
      target = json.id_of(u.id) or ""
    else
      if ch.external_id and ch.external_id ~= null then target = zd:get("x:" .. lower(ch.external_id)) end
      if not target and ch.email then target = zd:get("e:" .. ch.email) end
    end
  end
  if target then
    rec = target ~= "" and _M.get(target)
    if not rec or rec.active == false then return { kind = "not_found", id = target ~= "" and target or nil } end
  end

  local res = { limit = cfg.per_user_limit }
  if rec and opts.per_user then
    local ok, resets, remaining = per_user_check(rec.id, cfg)
    res.resets, res.remaining = resets, remaining
    if not ok then return { kind = "limited", retry_after = resets, id = rec.id, rec = rec } end
  end

  if not rec then
    -- create
    if not ch.name then add_err(errs, "name", "Name: is too short (minimum is 1 characters)") end
    local primary = ch.email
    if not primary and ch.identities then
      for _, it in ipairs(ch.identities) do
        if it.type == "email" then primary = it.value break end
      end
    end
    local emails = {}
    if primary then emails[1] = primary end
    for _, it in ipairs(ch.identities or {}) do
      if it.type == "email" and it.value ~= primary then emails[#emails + 1] = it.value end
    end
    for _, e in ipairs(emails) do
      if zd:get("e:" .. e) then
        add_err(errs, "email", "Email: " .. e .. " is already being used by another user", "DuplicateValue")
      end
    end
    local xid = ch.external_id ~= null and ch.external_id or nil
    if xid and zd:get("x:" .. lower(xid)) then
      add_err(errs, "external_id", "External ID: " .. xid .. " has already been taken", "DuplicateValue")
    end
    if has_errs(errs) then return { kind = "invalid", errs = errs } end

    rec = { id = state.next_user_id(), created_at = now, updated_at = now, active = true }
    for _, k in ipairs(SIMPLE) do
      if ch[k] ~= nil then rec[k] = ch[k] end
    end
    rec.verified = ch.verified or false
    rec.email = primary
    rec.external_id = xid
    rec.phone = ch.phone ~= null and ch.phone or nil
    if not rec.phone then
      -- like the first email identity, the first phone identity becomes the primary one
      for _, it in ipairs(ch.identities or {}) do
        if it.type == "phone_number" then rec.phone = it.value break end
      end
    end
    rec.uf = ch.user_fields
    if ch.org_name then rec.organization_id = find_or_create_org(ch.org_name, now) end
    if ch.organization_id and ch.organization_id ~= null then rec.organization_id = ch.organization_id end
    for _, e in ipairs(emails) do
      add_ident(rec, "email", e, rec.verified, e == primary, now)
    end
    if rec.phone then add_ident(rec, "phone_number", rec.phone, false, true, now) end
    for _, it in ipairs(ch.identities or {}) do
      if it.type ~= "email" and not has_ident(rec, it.type, it.value) then
        add_ident(rec, it.type, it.value, false, false, now)
      end
    end
    if xid then zd:safe_set("x:" .. lower(xid), rec.id) end
    store(rec)
    local n = zd:incr("ulist:n", 1, 0)
    zd:safe_set("ulist:" .. n, rec.id)
    if opts.per_user and cfg.per_user_limit > 0 then
      zd:set("pu:" .. rec.id, 1, 60)
      res.remaining, res.resets = cfg.per_user_limit - 1, 60
    end
    res.kind, res.rec = "created", rec
    return res
  end

  -- update: check everything first
  local new_emails = {}
  local function want_email(e)
    if e == rec.email or has_ident(rec, "email", e) then return end
    local owner = zd:get("e:" .. e)
    if owner and owner ~= rec.id then
      add_err(errs, "email", "Email: " .. e .. " is already being used by another user", "DuplicateValue")
    else
      new_emails[#new_emails + 1] = e
    end
  end
  if ch.email then want_email(ch.email) end
  for _, it in ipairs(ch.identities or {}) do
    if it.type == "email" then want_email(it.value) end
  end
  local xid = ch.external_id
  if xid and xid ~= null then
    local owner = zd:get("x:" .. lower(xid))
    if owner and owner ~= rec.id then
      add_err(errs, "external_id", "External ID: " .. xid .. " has already been taken", "DuplicateValue")
    end
  end
  if has_errs(errs) then return { kind = "invalid", errs = errs, id = rec.id } end

  for _, k in ipairs(SIMPLE) do
    if ch[k] ~= nil then rec[k] = ch[k] end
  end
  if ch.verified ~= nil and #new_emails == 0 then rec.verified = ch.verified end
  for _, e in ipairs(new_emails) do
    if rec.email then
      add_ident(rec, "email", e, ch.verified or false, false, now)
    else
      rec.email = e
      add_ident(rec, "email", e, ch.verified or rec.verified, true, now)
    end
  end
  if xid then
    if rec.external_id and rec.external_id ~= null then zd:delete("x:" .. lower(rec.external_id)) end
    if xid == null then
      rec.external_id = nil
    else
      rec.external_id = xid
      zd:safe_set("x:" .. lower(xid), rec.id)
    end
  end
  if ch.phone ~= nil then
    if ch.phone == null then
      rec.phone = nil
    elseif not rec.phone then
      rec.phone = ch.phone
      add_ident(rec, "phone_number", ch.phone, false, true, now)
    elseif ch.phone ~= rec.phone and not has_ident(rec, "phone_number", ch.phone) then
      add_ident(rec, "phone_number", ch.phone, false, false, now)
    end
  end
  for _, it in ipairs(ch.identities or {}) do
    if it.type ~= "email" and not has_ident(rec, it.type, it.value) then
      add_ident(rec, it.type, it.value, false, false, now)
    end
  end
  if ch.user_fields then
    rec.uf = rec.uf or {}
    for k, lit in pairs(ch.user_fields) do rec.uf[k] = lit end
  end
  if ch.org_name then rec.organization_id = find_or_create_org(ch.org_name, now) end
  if ch.organization_id ~= nil then
    rec.organization_id = ch.organization_id ~= null and ch.organization_id or nil
  end
  rec.updated_at = now
  store(rec)
  res.kind, res.rec = "updated", rec
  return res
end

-- opts: mode ("create_or_update" | "create" | "update"), id (update target),
-- per_user (apply the per-user limit), gen (abort when a reset happened).
-- Returns {kind = created|updated|invalid|not_found|limited|aborted, rec, errs, warn, ...}.
function _M.apply(u, opts)
  local cfg = state.config()
  local ch, errs, warn = prepare(u, cfg)
  local res = state.locked(apply_locked, u, ch, errs, opts, cfg)
  res.warn = warn
  return res
end

function _M.delete(id)
  return state.locked(function()
    local rec = _M.get(id)
    if not rec then return nil end
    if rec.active ~= false then
      for _, it in ipairs(rec.idents or {}) do
        if it.type == "email" and zd:get("e:" .. it.value) == rec.id then zd:delete("e:" .. it.value) end
      end
      if rec.external_id then
        local k = "x:" .. lower(rec.external_id)
        if zd:get(k) == rec.id then zd:delete(k) end
      end
      rec.active, rec.email, rec.external_id, rec.phone, rec.idents = false, nil, nil, nil, {}
      rec.verified = false
      rec.updated_at = ngx.time()
      store(rec)
    end
    return rec
  end)
end

-- Makes identity `ident_id` the primary one of its type (first in the list).
function _M.make_primary(id, ident_id)
  return state.locked(function()
    local rec = _M.get(id)
    if not rec or rec.active == false then return nil end
    local chosen
    for i, it in ipairs(rec.idents or {}) do
      if it.id == ident_id then chosen = table.remove(rec.idents, i) break end
    end
    if not chosen then return nil end
    local now = ngx.time()
    for _, it in ipairs(rec.idents) do
      if it.type == chosen.type and it.primary then it.primary, it.updated_at = false, now end
    end
    chosen.primary, chosen.updated_at = true, now
    insert(rec.idents, 1, chosen)
    if chosen.type == "email" then rec.email = chosen.value end
    if chosen.type == "phone_number" then rec.phone = chosen.value end
    rec.updated_at = now
    store(rec)
    return rec
  end)
end

function _M.find_by_email(e)
  return _M.get(zd:get("e:" .. lower(e)))
end

function _M.find_by_external_id(x)
  return _M.get(zd:get("x:" .. lower(x)))
end

local function dflt(v, d)
  if v == nil then return d end
  return v
end

-- The full user object, keys in Zendesk's order.
function _M.render(rec, base, cfg)
  cfg = cfg or state.config()
  local role = rec.role or "end-user"
  local end_user = role == "end-user"
  local role_type = null
  if role == "admin" then role_type = 4 elseif rec.custom_role_id then role_type = 0 end
  local tags = {}
  for i, t in ipairs(rec.tags or {}) do tags[i] = str(t) end
  local uf, stored = {}, rec.uf or {}
  for i, k in ipairs(cfg.field_names) do
    local t = cfg.field_by_key[k].type
    uf[i] = str(k) .. ":" .. (stored[k] or (t == "checkbox" and "false" or "null"))
  end
  local id = rec.id
  return concat({
    '{"id":', id,
    ',"url":', str(base .. "/api/v2/users/" .. id .. ".json"),
    ',"name":', value(rec.name),
    ',"email":', value(rec.email),
    ',"created_at":', str(iso(rec.created_at)),
    ',"updated_at":', str(iso(rec.updated_at)),
    ',"time_zone":', value(dflt(rec.time_zone, DEFAULT_TZ)),
    ',"iana_time_zone":', value(dflt(rec.iana_time_zone, DEFAULT_TZ)),
    ',"phone":', value(rec.phone),
    ',"shared_phone_number":', value(rec.shared_phone_number),
    ',"photo":null',
    ',"locale_id":', value(dflt(rec.locale_id, 1)),
    ',"locale":', value(dflt(rec.locale, "en-US")),
    ',"organization_id":', jid(rec.organization_id),
    ',"role":', str(role),
    ',"verified":', value(rec.verified == true),
    ',"external_id":', value(rec.external_id),
    ',"tags":[', concat(tags, ","), "]",
    ',"alias":', value(rec.alias),
    ',"active":', value(rec.active ~= false),
    ',"shared":false,"shared_agent":false,"last_login_at":null,"two_factor_auth_enabled":false',
    ',"signature":', value(rec.signature),
    ',"details":', value(rec.details),
    ',"notes":', value(rec.notes),
    ',"role_type":', value(role_type),
    ',"custom_role_id":', jid(rec.custom_role_id),
    ',"moderator":', value(rec.moderator == true),
    ',"ticket_restriction":', value(dflt(rec.ticket_restriction, end_user and "requested" or null)),
    ',"only_private_comments":', value(rec.only_private_comments == true),
    ',"restricted_agent":', value(end_user),
    ',"suspended":', value(rec.suspended == true),
    ',"default_group_id":', jid(rec.default_group_id),
    ',"report_csv":', value(role == "admin"),
    ',"user_fields":{', concat(uf, ","), "}}",
  })
end

function _M.render_identities(rec, base)
  local out = {}
  for i, it in ipairs(rec.idents or {}) do
    out[i] = concat({
      '{"url":', str(base .. "/api/v2/users/" .. rec.id .. "/identities/" .. it.id .. ".json"),
      ',"id":', it.id, ',"user_id":', rec.id,
      ',"type":', str(it.type), ',"value":', str(it.value),
      ',"verified":', value(it.verified == true), ',"primary":', value(it.primary == true),
      ',"created_at":', str(iso(it.created_at)), ',"updated_at":', str(iso(it.updated_at)),
      ',"undeliverable_count":0,"deliverable_state":"deliverable"}',
    })
  end
  return format('{"identities":[%s],"next_page":null,"previous_page":null,"count":%d}', concat(out, ","), #out)
end

-- The user as /__admin/users shows it: the full user plus its identities in order
-- ({id, type, value, verified, primary}), so that tests can check what was stored.
function _M.render_admin(rec, base, cfg)
  local out = {}
  for i, it in ipairs(rec.idents or {}) do
    out[i] = concat({
      '{"id":', it.id, ',"type":', str(it.type), ',"value":', str(it.value),
      ',"verified":', value(it.verified == true), ',"primary":', value(it.primary == true), "}",
    })
  end
  local full = _M.render(rec, base, cfg)
  return full:sub(1, -2) .. ',"identities":[' .. concat(out, ",") .. "]}"
end

-- Every stored user (deleted ones too when asked), ordered by id.
function _M.all(include_deleted)
  local n = zd:get("ulist:n") or 0
  local ids = {}
  for i = 1, n do
    local id = zd:get("ulist:" .. i)
    if id then ids[#ids + 1] = id end
  end
  table.sort(ids, json.id_less)
  local out = {}
  for _, id in ipairs(ids) do
    local rec = _M.get(id)
    if rec and (include_deleted or rec.active ~= false) then out[#out + 1] = rec end
  end
  return out
end

_M.prepare = prepare

return _M
