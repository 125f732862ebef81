#!/bin/sh
# Builds and installs the rock into a scratch tree with `luarocks make` (from a copy of the
# sources, since luarocks builds in place), then loads the installed module under Lua 5.4.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" "$tmp/tree"
cd "$top"
cp -r src lua lua-zendesk-*.rockspec "$tmp/src/"
[ -d bin ] && cp -r bin "$tmp/src/"
cd "$tmp/src"
# Debian keeps curl/curl.h under the multiarch include directory, where luarocks does not look
arch=$(gcc -print-multiarch)
luarocks --lua-version=5.4 make --tree="$tmp/tree" lua-zendesk-*.rockspec \
    CURL_INCDIR="/usr/include/$arch" CURL_LIBDIR="/usr/lib/$arch"
cd /
TREE="$tmp/tree" LUA_PATH="$tmp/tree/share/lua/5.4/?.lua;;" LUA_CPATH="$tmp/tree/lib/lua/5.4/?.so;;" lua5.4 -e '
  local z = require "zendesk"
  local core = require "zendesk.core"
  assert(package.searchpath("zendesk.core", package.cpath):find(os.getenv("TREE"), 1, true), "not the installed module")
  assert(core.encode{ id = 123456789012345 } == "{\"id\":123456789012345}")
  assert(type(z.new) == "function")
  assert(require("zendesk.sync").run and require("zendesk.sources").open)
  -- the state store (issue 16): its Lua modules and the SQLite binding are installed too
  assert(require("zendesk.state").open and require("zendesk.sqlite").digest and require("zendesk.sync_leavers").run)
  print("installed rock loads: " .. core.version .. " with libcurl " .. core.curl_version)
'
test -x "$tmp/tree/bin/zendesk-sync"
LUA_PATH="$tmp/tree/share/lua/5.4/?.lua;;" LUA_CPATH="$tmp/tree/lib/lua/5.4/?.so;;" \
    "$tmp/tree/bin/zendesk-sync" --help | grep -q "zendesk-sync"
echo "installed zendesk-sync runs"
