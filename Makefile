# sluice -- build, test, demo, bench and sanitizer targets.
#
# `make` builds bin/sluice and the test tools; every target that builds
# first runs scripts/install-deps.sh, which only calls apt-get for Debian
# packages that are missing.

CC      ?= cc
PYTHON  := /usr/bin/python3
PKGS    := rdkafka yaml-0.1 lua5.4 libcurl jansson libmicrohttpd sqlite3 \
           hiredis libcrypto
# snprintf truncation is deliberate wherever we use it: not a warning.
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wformat=2 -Wno-format-truncation
OPT     ?= -O2
SAN     ?=
BUILD   ?= build
BIN     ?= bin

# pkg-config's flags are read after scripts/install-deps.sh has run. On a
# fresh machine neither pkg-config nor the -dev packages exist when this
# file is parsed, so make first brings $(FLAGS_MK) up to date (running the
# script), then restarts with it.
FLAGS_MK := $(BUILD)/flags.mk
.DEFAULT_GOAL := all
ifneq ($(MAKECMDGOALS),clean)
include $(FLAGS_MK)
endif
$(FLAGS_MK): scripts/install-deps.sh Makefile
	@scripts/install-deps.sh
	@pkg-config --exists --print-errors $(PKGS)
	@mkdir -p $(dir $@)
	@lua_a="$$(pkg-config --variable=libdir lua5.4)/liblua5.4.a"; \
	 [ -f "$$lua_a" ] || lua_a=; \
	 printf 'PKG_CFLAGS := %s\nPKG_LIBS := %s\nLUA_A := %s\n' \
	     "$$(pkg-config --cflags $(PKGS))" "$$(pkg-config --libs $(PKGS))" \
	     "$$lua_a" > $@.tmp && mv $@.tmp $@

INCLUDES := -I. -Icommon -Iworker -Iconnectors -Ilua -Istores
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) $(SAN) -MMD -MP \
           $(INCLUDES) \
           -DSLUICE_LUA_LIB_DEFAULT='"$(CURDIR)/lua/lib"' $(PKG_CFLAGS)
# Lua is linked from liblua5.4-dev's static archive: the VM is then
# called directly rather than through the PLT, and built without -fPIC;
# transform-bench measured the example transform 8% cheaper this way.
LDLIBS  := $(if $(LUA_A),$(LUA_A) -ldl,) $(PKG_LIBS) -lhttp_parser \
           -lpthread -lm
LDFLAGS := $(SAN)

WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c)) \
              $(wildcard connectors/*.c) $(wildcard lua/*.c) \
              $(wildcard stores/*.c) $(wildcard common/*.c)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOLS      := $(BIN)/sinkd $(BIN)/kafka-mock $(BIN)/bare-consumer \
              $(BIN)/transform-bench

.PHONY: all deps tools test unit integration integration-only demo bench \
        bench-publisher \
        asan docs docs-check clean kafka-start kafka-stop pipeline-tests \
        kafka-jars bench-reconcile layers
all: deps $(BIN)/sluice tools

deps:
	@scripts/install-deps.sh

# The real Kafka test broker's jars, from Maven Central into
# tests/kafka/lib/ (a no-op when they match tests/kafka/pom.xml). Only the
# targets that start a broker need them: a build never waits on Maven.
kafka-jars: deps
	@tests/kafka/kafka.sh fetch

tools: $(TOOLS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsluice.a: $(WORKER_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BIN)/sluice: $(BUILD)/worker/main.o $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/%: $(BUILD)/tests/tools/%.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/transform-bench: $(BUILD)/tests/tools/transform-bench.o $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

unit: deps $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

# The integration suite runs on PYTEST_WORKERS processes sharing one
# broker (scripts/run-integration.sh); PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 2

integration: all kafka-jars
	PYTHON=$(PYTHON) scripts/run-integration.sh $(PYTEST_WORKERS)

# The example pipeline's transforms against its own test cases.
pipeline-tests: all
	$(BIN)/sluice test pipelines/orders-fanout.yaml
	$(BIN)/sluice test pipelines/orders-publisher.yaml

# No file of lua/, connectors/, stores/ or common/ includes a header of a
# higher floor (docs/ARCHITECTURE.md, Layout): with every directory on
# -I, only this check can tell.
layers:
	@scripts/check-layers.sh

test: layers all docs-check unit pipeline-tests fuzz-regress integration

demo: all
	scripts/demo.sh

# make bench BENCH_ARGS="--broker kafka" runs it on a real Apache Kafka;
# then the migration tools' benchmarks.
bench: all kafka-jars
	$(PYTHON) bench/run.py $(BENCH_ARGS)
	$(PYTHON) bench/publisher_bench.py $(BENCH_PUBLISHER_ARGS)
	$(PYTHON) bench/reconcile_bench.py --bin $(BIN) $(BENCH_RECONCILE_ARGS)

# The publisher under wrk beside wrk against sinkd (bench/publisher_bench.py).
bench-publisher: all kafka-jars
	$(PYTHON) bench/publisher_bench.py $(BENCH_PUBLISHER_ARGS)

# sluice reconcile on two logs of 1M outcomes each
# (BENCH_RECONCILE_ARGS="--lines N").
bench-reconcile: all
	$(PYTHON) bench/reconcile_bench.py --bin $(BIN) $(BENCH_RECONCILE_ARGS)

# A real Apache Kafka broker (tests/kafka) for trying sluice by hand.
kafka-start: kafka-jars
	@tests/kafka/kafka.sh start

kafka-stop:
	@tests/kafka/kafka.sh stop

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, then
# the whole suite against it.
asan:
	$(MAKE) BUILD=build/asan BIN=build/asan/bin OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    all unit
	SLUICE_BIN_DIR=$(CURDIR)/build/asan/bin \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    $(MAKE) BUILD=build/asan BIN=build/asan/bin integration-only

integration-only: kafka-jars
	PYTHON=$(PYTHON) scripts/run-integration.sh $(PYTEST_WORKERS)

docs: $(BIN)/sluice
	$(BIN)/sluice reference > docs/pipeline-reference.md
	$(BIN)/sluice reference --format json-schema \
	    > pipelines/sluice-pipeline.schema.json

docs-check: $(BIN)/sluice
	@$(BIN)/sluice reference | diff -u docs/pipeline-reference.md - \
	    || { echo "docs/pipeline-reference.md is stale: run make docs"; exit 1; }
	@$(BIN)/sluice reference --format json-schema \
	    | diff -u pipelines/sluice-pipeline.schema.json - \
	    || { echo "pipelines/sluice-pipeline.schema.json is stale: run make docs"; exit 1; }

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Fuzzing (tests/fuzz) and the chaos suite (tests/chaos) keep their
# targets beside their sources.
-include tests/fuzz/fuzz.mk
-include tests/chaos/chaos.mk
