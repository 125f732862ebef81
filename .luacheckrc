-- luacheck configuration: plain Lua 5.1-5.4 for the library, busted globals for specs,
-- OpenResty's ngx for code that runs inside nginx.
std = "max"
max_line_length = 120
-- specs quote long messages and tables inline; wrapping them hurts more than it helps
files["tests/**/*_spec.lua"] = { std = "max+busted", max_line_length = 140 }
files["lua/zendesk/nginx.lua"] = { std = "max+ngx_lua" }
files["lua/zendesk/budget.lua"] = { std = "max+ngx_lua" }
files["lua/zendesk/nginx_thread.lua"] = { std = "max+ngx_lua" }
files["tests/fake_zendesk/**/*.lua"] = { std = "max+ngx_lua" }
files["examples/nginx/**/*.lua"] = { std = "max+ngx_lua" }
files["tests/support/nginx_probe.lua"] = { std = "max+ngx_lua" }
files["bench/**/*.lua"] = { globals = { "wrk", "request", "response", "setup", "init", "done" } }
