-- Test helper: a scratch copy of the checkout, for running what a user would run in theirs
-- (README commands, `luarocks make`, the nginx example) and then asking git whether it is still
-- clean. The copy is a fresh git repository of the checkout's current files (tracked, and
-- untracked but not ignored), with the current build/lua5.4 and build/luajit beside them and
-- every mtime kept, so `make` in it has nothing to rebuild.
local standin = require "support.standin"

local sh, q = standin.sh, standin.shell_quote
local ROOT = standin.ROOT

local M = {}

-- Returns the directory (world-readable, so nginx workers running as nobody can read it).
function M.copy()
  local dir = sh("mktemp -d /tmp/zd-scratch.XXXXXX"):match("^%s*(.-)%s*$")
  local out, code = sh("set -e; chmod 755 " .. q(dir) .. "; cd " .. q(ROOT)
    .. "; git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null"
    .. " | tar -C " .. q(dir) .. " -xf -"
    .. "; mkdir -p " .. q(dir .. "/build")
    .. "; for f in lua5.4 luajit; do if [ -d build/$f ]; then cp -a build/$f " .. q(dir .. "/build/") .. "; fi; done"
    .. "; cd " .. q(dir) .. "; git init -q; git add -A"
    .. "; git -c user.name=scratch -c user.email=scratch@example.com commit -qm scratch 2>&1")
  assert(code == 0, "scratch copy failed: " .. out)
  return dir
end

-- `git status --porcelain` of a scratch copy ("" when clean); with ignored = true, ignored
-- files are listed too (as "!! path").
function M.status(dir, ignored)
  local out = sh("cd " .. q(dir) .. " && git status --porcelain" .. (ignored and " --ignored" or "") .. " 2>&1")
  return out
end

function M.remove(dir)
  if dir and dir:match("^/tmp/zd%-scratch%.") then sh("rm -rf " .. q(dir)) end
end

return M
