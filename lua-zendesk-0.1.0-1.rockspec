-- luarocks make --tree=DIR builds the same module as the Makefile.
rockspec_format = "3.0"
package = "lua-zendesk"
version = "0.1.0-1"
source = { url = "git+https://example.invalid/lua-zendesk.git", tag = "v0.1.0" }
description = {
  summary = "Upsert users into Zendesk from Lua: a libcurl C core with a Lua layer and sync workflows",
  detailed = [[
A C extension module for Lua 5.4 and LuaJIT (OpenResty) that upserts Zendesk users one at a
time or in bulk, follows the bulk jobs, and syncs whole files of users with a journal that
survives crashes.]],
  license = "MIT",
}
-- lua-argparse (for zendesk-sync) is needed at run time; it is not listed because Debian's
-- package of it is not a rock, and listing it would make luarocks fetch a second copy.
dependencies = { "lua >= 5.1" }
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
  SQLITE = { header = "sqlite3.h", library = "sqlite3" },
}
build = {
  type = "builtin",
  modules = {
    ["zendesk.core"] = {
      sources = { "src/buf.c", "src/headers.c", "src/json.c", "src/transport.c", "src/email.c", "src/scrub.c",
        "src/response.c", "src/oauth.c", "src/options.c", "src/files.c", "src/client.c", "src/lzendesk.c" },
      libraries = { "curl" },
      incdirs = { "$(CURL_INCDIR)", "src" },
      libdirs = { "$(CURL_LIBDIR)" },
      defines = {},
    },
    ["zendesk.sqlite"] = {
      sources = { "src/sqlite.c" },
      libraries = { "sqlite3" },
      incdirs = { "$(SQLITE_INCDIR)", "src" },
      libdirs = { "$(SQLITE_LIBDIR)" },
    },
    ["zendesk"] = "lua/zendesk.lua",
    ["zendesk.api"] = "lua/zendesk/api.lua",
    ["zendesk.methods"] = "lua/zendesk/methods.lua",
    ["zendesk.options"] = "lua/zendesk/options.lua",
    ["zendesk.users"] = "lua/zendesk/users.lua",
    ["zendesk.fields"] = "lua/zendesk/fields.lua",
    ["zendesk.jobs"] = "lua/zendesk/jobs.lua",
    ["zendesk.sources"] = "lua/zendesk/sources.lua",
    ["zendesk.sync"] = "lua/zendesk/sync.lua",
    ["zendesk.sync_read"] = "lua/zendesk/sync_read.lua",
    ["zendesk.sync_submit"] = "lua/zendesk/sync_submit.lua",
    ["zendesk.sync_poll"] = "lua/zendesk/sync_poll.lua",
    ["zendesk.sync_state"] = "lua/zendesk/sync_state.lua",
    ["zendesk.sync_resume"] = "lua/zendesk/sync_resume.lua",
    ["zendesk.sync_delta"] = "lua/zendesk/sync_delta.lua",
    ["zendesk.sync_leavers"] = "lua/zendesk/sync_leavers.lua",
    ["zendesk.state"] = "lua/zendesk/state.lua",
    ["zendesk.journal"] = "lua/zendesk/journal.lua",
    ["zendesk.report"] = "lua/zendesk/report.lua",
    ["zendesk.nginx"] = "lua/zendesk/nginx.lua",
    ["zendesk.nginx_thread"] = "lua/zendesk/nginx_thread.lua",
    ["zendesk.budget"] = "lua/zendesk/budget.lua",
  },
  install = {
    bin = { ["zendesk-sync"] = "bin/zendesk-sync" },
  },
}
