# themed — one Makefile, plain GNU make.
#
#   make            build build/themed, build/themectl, build/plugins/*.so
#   make run        install missing packages, build, start the daemon on ./run/themed.sock
#   make test       install missing packages, build, run every suite (also under ASan+UBSan)
#   make model      retrain models/rural-themes from ../shared/corpus/train.jsonl
#   make install    PREFIX=/usr/local DESTDIR=
#   make clean
#
# Build variants share these rules: `make BUILD=build/asan SAN=1 ...` builds an
# instrumented tree beside the normal one.

BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
SHARED  ?= ../shared
SAN     ?=
CC      ?= cc

BINDIR     = $(PREFIX)/bin
PLUGINDIR  = $(PREFIX)/lib/themed/plugins
MODELDIR   = $(PREFIX)/share/themed/models
INCDIR     = $(PREFIX)/include
UNITDIR   ?= $(PREFIX)/lib/systemd/system

PKGS    = libuv jansson icu-uc icu-i18n libsystemd libnats
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Plugins link only what a tokenizer may use.
PLUGIN_LIBS := $(shell pkg-config --libs jansson icu-uc icu-i18n 2>/dev/null)

WARN    = -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
OPT    ?= -O2 -g
ifeq ($(SAN),1)
OPT     = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN   = -fsanitize=address,undefined
endif
ifeq ($(SAN),thread)
OPT     = -O1 -g -fno-omit-frame-pointer -fsanitize=thread
LDSAN   = -fsanitize=thread
endif
CFLAGS_ALL = -std=c17 $(WARN) $(OPT) -D_GNU_SOURCE -fPIC -Iinclude -iquote daemon \
             -DTD_PLUGIN_DIR=\"$(PLUGINDIR)\" -DTD_MODEL_DIR=\"$(MODELDIR)\" \
             $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS_ALL = $(PKG_LIBS) -lsvm -lhttp_parser -lm -lpthread -ldl $(LDLIBS)
LDFLAGS_ALL = $(LDSAN) $(LDFLAGS)

# The engine: knows nothing of sockets; linked by themed, themectl and tests.
ENGINE_SRC = daemon/common.c daemon/text.c daemon/plugin.c daemon/features.c \
             daemon/model.c daemon/classify.c daemon/corpus.c daemon/train.c \
             daemon/sha256.c daemon/svm_dcd.c daemon/calib.c daemon/pool.c daemon/jalloc.c
# The service: every other file in daemon/.
SERVER_SRC = $(filter-out $(ENGINE_SRC),$(wildcard daemon/*.c))
THEMECTL_SRC = $(wildcard tools/themectl*.c)
PLUGIN_SRC  = $(wildcard plugins/*.c)
EXAMPLE_SRC = $(wildcard examples/plugin/*.c)
TESTPLUG_SRC = $(wildcard tests/plugins/*.c)
UNIT_SRC    = $(wildcard tests/unit/test_*.c)
BENCH_SRC   = $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
ENGINE_OBJ   = $(call obj,$(ENGINE_SRC))
SERVER_OBJ   = $(call obj,$(SERVER_SRC))
THEMECTL_OBJ = $(call obj,$(THEMECTL_SRC) daemon/natsutil.c)
PLUGINS      = $(patsubst plugins/%.c,$(BUILD)/plugins/%.so,$(PLUGIN_SRC))
EXAMPLES     = $(patsubst examples/plugin/%.c,$(BUILD)/examples/%.so,$(EXAMPLE_SRC))
TESTPLUGS    = $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(TESTPLUG_SRC))
UNIT_BINS    = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_BINS   = $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
LIBENGINE    = $(BUILD)/libthemed-engine.a

.PHONY: all deps run test unit unit-run integration integration-bins tsan-integration systemd-test model install clean bench help soak valgrind-integration
.DEFAULT_GOAL := all

all: $(BUILD)/themed $(BUILD)/themectl $(PLUGINS)

help:
	@sed -n '3,12p' Makefile

deps:
	@scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(LIBENGINE): $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/themed: $(SERVER_OBJ) $(LIBENGINE)
	$(CC) $(LDFLAGS_ALL) -rdynamic -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/themectl: $(THEMECTL_OBJ) $(LIBENGINE)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# Plugins export one symbol: everything else is hidden.
$(BUILD)/plugins/%.so: plugins/%.c include/themed/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden -shared -o $@ $< $(LDFLAGS_ALL) $(PLUGIN_LIBS)

$(BUILD)/examples/%.so: examples/plugin/%.c include/themed/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden -shared -o $@ $< $(LDFLAGS_ALL) $(PLUGIN_LIBS)

$(BUILD)/tests/plugins/%.so: tests/plugins/%.c include/themed/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden -shared -o $@ $< $(LDFLAGS_ALL) $(PLUGIN_LIBS)

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIBENGINE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests -o $@ $< $(LIBENGINE) $(LDFLAGS_ALL) $(LDLIBS_ALL) -lcmocka

$(BUILD)/bench/%: bench/%.c $(LIBENGINE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIBENGINE) $(LDFLAGS_ALL) $(LDLIBS_ALL)

unit: all $(EXAMPLES) $(TESTPLUGS) $(UNIT_BINS)

unit-run: unit
	@BUILD=$(BUILD) SHARED=$(SHARED) tests/run-unit.sh $(UNIT_BINS)

integration-bins: all $(EXAMPLES) $(TESTPLUGS)

integration: integration-bins
	@if ls tests/integration/test_*.py >/dev/null 2>&1; then \
	  BUILD=$(BUILD) SHARED=$(SHARED) python3 tests/integration/run.py; \
	else echo "integration: no suites yet"; fi

# make test: the normal build, then the whole unit suite again under
# ASan+UBSan, then the integration suites against the real daemon, three of
# them again against a ThreadSanitizer build, the systemd suite, and a short
# run of every fuzz target (fuzz-ci, below).
test: deps
	@$(MAKE) --no-print-directory unit-run
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 unit-run
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory tsan-integration
	@$(MAKE) --no-print-directory systemd-test
	@$(MAKE) --no-print-directory fuzz-ci

# Installs into a temp DESTDIR, verifies the units, runs the installed daemon
# the way the unit does.
systemd-test: all
	@BUILD=$(BUILD) tests/systemd/run.sh

# Long campaigns, not part of make test (see docs/testing.md).
soak: deps all
	@BUILD=$(BUILD) python3 tests/soak/soak.py $(SOAKFLAGS)

# The integration suites with the daemon under valgrind memcheck.
valgrind-integration: integration-bins
	@scripts/deps.sh valgrind
	@BUILD=$(BUILD) SHARED=$(SHARED) THEMED_VALGRIND=1 python3 tests/integration/run.py

# The integration suites against a ThreadSanitizer build: the worker loops,
# the threadpool, NATS and the lock between them (part of make test).
# TSAN_TESTS="test_x ..." picks suites (default in the script).
tsan-integration: deps
	@SHARED=$(SHARED) MAKE=$(MAKE) tests/run-tsan.sh

run: deps all
	@mkdir -p run
	exec $(BUILD)/themed --model models/rural-themes --plugins $(BUILD)/plugins \
	  --listen unix:run/themed.sock $(RUNFLAGS)

# Retrains the bundled model. Needs ../shared (read-only corpus).
# Settings chosen by 5-fold cross-validation by article on train.jsonl only
# (docs/model.md): bigram tokens over Simplified script, heading context 0.5,
# previous/next-passage context 0.3.
model: deps all
	@test -f $(SHARED)/corpus/train.jsonl || { echo "make model: $(SHARED)/corpus/train.jsonl not found" >&2; exit 1; }
	$(BUILD)/themectl train --data $(SHARED)/corpus/train.jsonl --out models/rural-themes \
	  --name rural-themes --version 1.3.0 --plugins $(BUILD)/plugins \
	  --themes organization,talent,industry,governance,culture,ecology \
	  --tokenizer bigram --tokenizer-options '{"traditional_to_simplified":true}' \
	  --context-weight 0.5 --neighbor-weight 0.3 --folds 5 --seed 1 $(MODELFLAGS)

# Side by side with the peers; BENCH_QUICK=1 for a ~2-minute run (bench/run.sh).
bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@BUILD=$(BUILD) SHARED=$(SHARED) bench/run.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(MODELDIR) \
	  $(DESTDIR)$(INCDIR)/themed $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/themed $(BUILD)/themectl $(DESTDIR)$(BINDIR)/
	install -m 0755 $(PLUGINS) $(DESTDIR)$(PLUGINDIR)/
	install -m 0644 include/themed/plugin.h $(DESTDIR)$(INCDIR)/themed/
	cp -R models/rural-themes $(DESTDIR)$(MODELDIR)/
	chmod -R u=rwX,go=rX $(DESTDIR)$(MODELDIR)/rural-themes
	install -D -m 0644 systemd/themed.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/themed.conf
	@for u in systemd/*.service systemd/*.socket; do [ -f "$$u" ] || continue; \
	  sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@PLUGINDIR@|$(PLUGINDIR)|g' \
	      -e 's|@MODELDIR@|$(MODELDIR)|g' "$$u" > $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); done

clean:
	rm -rf build run

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# --- fuzzing ---
# libFuzzer targets in tests/fuzz/ (docs/testing.md). fuzz-build compiles the
# engine, the service objects and the plugins with clang for coverage +
# ASan + UBSan into build/fuzz, one binary per target (build/fuzz/<target>).
#   make fuzz     each target FUZZ_SECONDS (300), corpus kept in build/fuzz/corpus
#   make fuzz-ci  replays tests/fuzz/regressions, then each target FUZZ_CI_SECONDS (11)
# FUZZ_TARGETS="fuzz_http fuzz_jsonl" narrows either to some targets.
FUZZ_TARGETS    ?= fuzz_jsonl fuzz_http fuzz_loops fuzz_split fuzz_tok_icu fuzz_tok_bigram fuzz_bundle
FUZZ_BUILD      ?= build/fuzz
FUZZ_CC         ?= clang
FUZZ_SECONDS    ?= 300
FUZZ_CI_SECONDS ?= 11
FUZZ_OPT         = -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                   -fno-sanitize-recover=undefined
FUZZ_SERVER_OBJ  = $(filter-out $(BUILD)/obj/daemon/main.o,$(SERVER_OBJ))

.PHONY: fuzz-build fuzz-bins fuzz fuzz-ci

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT='$(FUZZ_OPT)' \
	  LDSAN='-fsanitize=address,undefined' fuzz-bins

fuzz-bins: $(PLUGINS) $(patsubst %,$(BUILD)/%,$(FUZZ_TARGETS))

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_SERVER_OBJ) $(LIBENGINE)
	$(CC) $(CFLAGS_ALL) -fsanitize=fuzzer -Itests/fuzz -o $@ $< $(FUZZ_SERVER_OBJ) $(LIBENGINE) \
	  $(LDFLAGS_ALL) $(LDLIBS_ALL)

fuzz: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) tests/fuzz/run.sh campaign $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-ci: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) tests/fuzz/run.sh ci $(FUZZ_CI_SECONDS) $(FUZZ_TARGETS)
