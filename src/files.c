/* files.c: the module's file functions for the journal and the report: fsync, private create,
 * identity, working directory and digest; failures are nil, "path: message", errno (liolib's way). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "client.h"

/* nil, "path: message" (or the message alone), errno: luaL_fileresult's shape */
static int fail_errno(lua_State *L, const char *path, int e)
{
    lua_pushnil(L);
    if (path)
        lua_pushfstring(L, "%s: %s", path, strerror(e));
    else
        lua_pushstring(L, strerror(e));
    lua_pushinteger(L, e);
    return 3;
}

/* fsync(file) -> true | nil, err, errno: a journal line is only durable once it is on disk. Lua 5.4's
 * luaL_Stream and LuaJIT's file userdata both start with the FILE pointer. */
static int file_fsync(lua_State *L)
{
    FILE **fp = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    if (!*fp)
        return luaL_argerror(L, 1, "file is closed");
    if (fflush(*fp) != 0 || fsync(fileno(*fp)) != 0) {
        return fail_errno(L, NULL, errno);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* create_private(path [, truncate]) -> true | nil, err, errno: makes the file (journal, report)
 * with mode 0600 whatever the umask, so rows of personal data are not world-readable. */
static int file_create_private(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (lua_toboolean(L, 2) ? O_TRUNC : 0);
    int fd = open(path, flags, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return fail_errno(L, path, e);
    }
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* file_id(path | file) -> "dev:ino", kind | nil, err, errno: tells whether two names are one file
 * (a report or journal that is the input), following symlinks; kind is "file", "directory",
 * "fifo" or "other". */
static int file_id(lua_State *L)
{
    struct stat st;
    int r;
    char id[48];
    const char *kind;
    if (lua_type(L, 1) == LUA_TSTRING) {
        r = stat(lua_tostring(L, 1), &st);
    } else {
        FILE **fp = luaL_checkudata(L, 1, LUA_FILEHANDLE);
        if (zd_file_closed(fp))
            return luaL_argerror(L, 1, "file is closed");
        r = fstat(fileno(*fp), &st);
    }
    if (r != 0) {
        return fail_errno(L, NULL, errno);
    }
    snprintf(id, sizeof id, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    kind = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : S_ISFIFO(st.st_mode) ? "fifo" : "other";
    lua_pushstring(L, id);
    lua_pushstring(L, kind);
    return 2;
}

/* getcwd() -> path | nil, err, errno: the real working directory ($PWD may be a parent's, stale). */
static int file_getcwd(lua_State *L)
{
    char buf[4096];
    if (!getcwd(buf, sizeof buf)) {
        return fail_errno(L, NULL, errno);
    }
    lua_pushstring(L, buf);
    return 1;
}

/* digest(path) -> hex, size | nil, err, errno: 64-bit FNV-1a of the whole file, read in 64 KiB
 * chunks, so that a resume can tell the input it was written for from another one. */
static int file_digest(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    unsigned char buf[65536];
    unsigned long long h = 0xcbf29ce484222325ULL, size = 0;
    size_t n, i;
    char hex[17];
    FILE *f = fopen(path, "rb");
    if (!f) {
        return fail_errno(L, path, errno);
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (i = 0; i < n; i++)
            h = (h ^ buf[i]) * 0x100000001b3ULL;
        size += n;
    }
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        return fail_errno(L, path, e);
    }
    fclose(f);
    snprintf(hex, sizeof hex, "%016llx", h);
    lua_pushstring(L, hex);
    zd_pushid(L, size);
    return 2;
}

static const luaL_Reg file_functions[] = {
    {"fsync", file_fsync},
    {"create_private", file_create_private},
    {"file_id", file_id},
    {"getcwd", file_getcwd},
    {"digest", file_digest},
    {NULL, NULL}
};

/* Adds the file functions to the module table on top of the stack. */
void zd_files_register(lua_State *L)
{
    luaL_setfuncs(L, file_functions, 0);
}
