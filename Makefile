# lua-zendesk: build, test and run the Zendesk user-upsert module.
#   make                 build the C core for Lua 5.4 (build/lua5.4/zendesk/core.so)
#   make LUA=luajit      build it for LuaJIT / OpenResty (build/luajit/zendesk/core.so)
#   make test            install what is missing, build both flavours, run every test
#   make demo            install what is missing, start the stand-in, sync examples/users.csv
#   eval "$(make -s env)"  LUA_PATH / LUA_CPATH for using the checkout from a shell (LUA=luajit too)

LUA ?= lua5.4
PREFIX ?= /usr/local

ifeq ($(LUA),luajit)
LUA_PC := luajit
LUA_ABI := 5.1
else
LUA_PC := $(LUA)
LUA_ABI := $(patsubst lua%,%,$(LUA))
endif

BUILD := build/$(LUA)
SRCS := src/buf.c src/headers.c src/json.c src/transport.c src/email.c src/scrub.c src/response.c \
  src/oauth.c src/options.c src/files.c src/client.c src/lzendesk.c
OBJS := $(patsubst src/%.c,$(BUILD)/%.o,$(SRCS))
MODULE := $(BUILD)/zendesk/core.so
# the state store's SQLite binding (issue 16): its own module, so the core needs no libsqlite3
SQLITE_MODULE := $(BUILD)/zendesk/sqlite.so

PKG_CFLAGS = $(shell pkg-config --cflags $(LUA_PC) libcurl 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null)
CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ZD_CFLAGS = -std=c99 -fPIC -fvisibility=hidden $(WARN) $(PKG_CFLAGS) $(EXTRA_CFLAGS)
ZD_LDFLAGS = -shared $(EXTRA_LDFLAGS)

# Debian packages the project needs to build, test, fuzz and run the demo; `make deps` installs the missing ones.
DEB_PACKAGES := lua5.4 liblua5.4-dev libcurl4-openssl-dev lua-cjson lua-busted lua-check nginx \
  libnginx-mod-http-lua luajit2 libluajit2-5.1-dev pkg-config luarocks lua-argparse \
  gcc make curl openssl valgrind ca-certificates procps time \
  clang libclang-rt-14-dev lua-rex-pcre2 libsqlite3-dev

.PHONY: all build deps env print-srcs test test-valgrind test-asan fuzz check-rockspec clean install demo bench lint

all: build
build: $(MODULE) $(SQLITE_MODULE)

$(BUILD)/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/zendesk
	$(CC) $(CFLAGS) $(ZD_CFLAGS) -c -o $@ $<

$(MODULE): $(OBJS)
	$(CC) $(ZD_LDFLAGS) -o $@ $(OBJS) $(PKG_LIBS)

$(SQLITE_MODULE): src/sqlite.c src/compat.h | $(BUILD)/zendesk
	$(CC) $(CFLAGS) $(ZD_CFLAGS) $(ZD_LDFLAGS) -o $@ src/sqlite.c $(shell pkg-config --libs sqlite3 2>/dev/null || echo -lsqlite3)

$(BUILD)/zendesk:
	mkdir -p $@

# The C sources, for scripts that build the core their own way (scripts/asan.sh).
print-srcs:
	@echo $(SRCS)

deps:
	@./scripts/deps.sh $(DEB_PACKAGES)

# The shell setup for using this checkout with $(LUA): `eval "$$(make -s LUA=luajit env)"`.
env:
	@echo 'export LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;"'
	@echo 'export LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;"'

# Runs every suite (lint, Lua 5.4 specs, LuaJIT, the rockspec, valgrind, ASan/UBSan, a short
# fuzzing pass) and ends with one line "N passed, N failed, N skipped".
test: deps
	$(MAKE) --no-print-directory build LUA=lua5.4
	$(MAKE) --no-print-directory build LUA=luajit
	@./tests/run all

test-valgrind: deps
	$(MAKE) --no-print-directory build LUA=lua5.4
	@./tests/run valgrind

check-rockspec: deps
	@./tests/run rockspec

# The whole spec suite against the core built with -fsanitize=address,undefined.
test-asan: deps
	@./tests/run asan

# libFuzzer over the header parser, the JSON decoder and encoder, and the answer handling.
FUZZ_SECONDS ?= 60
fuzz: deps
	@FUZZ_JOBS=2 fuzz/run.sh $(FUZZ_SECONDS)

# Peers and the raw-libcurl limit side by side; writes BENCHMARKS.md (not part of make test).
bench: deps
	$(MAKE) --no-print-directory build LUA=lua5.4
	$(MAKE) --no-print-directory build LUA=luajit
	@./bench/run.sh

lint:
	luacheck -q lua bin/zendesk-sync tests examples bench

demo: deps
	$(MAKE) --no-print-directory build LUA=lua5.4
	@./scripts/demo.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_ABI)/zendesk $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/zendesk $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_ABI)/zendesk/core.so
	install -m 0755 $(SQLITE_MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_ABI)/zendesk/sqlite.so
	install -m 0644 lua/zendesk.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/zendesk.lua
	install -m 0644 lua/zendesk/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/zendesk/
	if [ -f bin/zendesk-sync ]; then install -m 0755 bin/zendesk-sync $(DESTDIR)$(PREFIX)/bin/zendesk-sync; fi

# Also what `luarocks make` leaves in place (it builds in the source tree).
clean:
	rm -rf build tests/fake_zendesk/run fuzz/out fuzz/corpus-run
	rm -f src/*.o zendesk/core.so zendesk/sqlite.so
	if [ -d zendesk ]; then rmdir zendesk; fi
