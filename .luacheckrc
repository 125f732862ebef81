-- luacheck configuration: plain Lua 5.1-5.4 for the library, busted globals for specs,
-- OpenResty's ngx for code that runs inside nginx.
std = "max"
max_line_length = 120
files["tests/**/*_spec.lua"] = { std = "max+busted" }
files["tests/**/*_jit.lua"] = { std = "max+busted" }
files["lua/zendesk/nginx.lua"] = { std = "max+ngx_lua" }
files["tests/fake_zendesk/**/*.lua"] = { std = "max+ngx_lua" }
files["examples/nginx/**/*.lua"] = { std = "max+ngx_lua" }
files["bench/**/*.lua"] = { globals = { "wrk", "request", "response", "setup", "init", "done" } }
