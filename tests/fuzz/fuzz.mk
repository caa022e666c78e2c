# fuzz.mk -- libFuzzer targets (tests/fuzz/fuzz_*.c), included by the
# Makefile. See docs/fuzzing.md.
#
#   make fuzz                 build, then fuzz each target FUZZ_TIME s (60)
#   make fuzz FUZZ_TIME=600   the long run
#   make fuzz-regress         build, then run each target once over its
#                             checked-in corpus (seconds; part of make test)
#   make fuzz-known           which inputs of open defects still fail
#   make fuzz-build           only build
#
# Built by clang (scripts/install-deps.sh installs it with the libFuzzer
# runtime) with ASan, UBSan and libFuzzer, from the project's sources
# compiled again into their own directory: never mixed with gcc objects.

FUZZ_CC      ?= clang
FUZZ_TIME    ?= 60
FUZZ_BUILD   := build/fuzz
FUZZ_DIR     := tests/fuzz
FUZZ_TARGETS := fuzz_cfg fuzz_json fuzz_http1 fuzz_testfile fuzz_reconcile \
                fuzz_keysrc fuzz_httpd
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
# UBSan reports stay recoverable in the build, so that one known report
# can be silenced at run time (UBSAN_OPTIONS=suppressions=...), but
# run.sh sets halt_on_error=1: every run stops at the first one.
FUZZ_SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer
# The project's own warnings are gcc's business (make all): clang may warn
# differently, and a fuzz run must not fail on that. The targets
# themselves build with -Werror.
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g $(FUZZ_SAN) \
                -fsanitize=fuzzer-no-link -MMD -MP \
                $(INCLUDES) \
                -DSLUICE_LUA_LIB_DEFAULT='"$(CURDIR)/lua/lib"' \
                -DFUZZ_PIPELINES_DIR='"$(CURDIR)/pipelines"' $(PKG_CFLAGS)
FUZZ_WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
                -Wmissing-prototypes -Wformat=2
FUZZ_OBJ     := $(WORKER_SRC:%.c=$(FUZZ_BUILD)/%.o)

.PHONY: fuzz fuzz-build fuzz-regress fuzz-known

fuzz-build: deps $(FUZZ_BINS)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -w -c -o $@ $<

$(FUZZ_BUILD)/$(FUZZ_DIR)/%.o: $(FUZZ_DIR)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) -c -o $@ $<

# keysrc.c keeps 4 open keys on the stack, not 512: past them it moves
# them to the heap with an index, which fuzz_keysrc's short inputs then
# reach too.
$(FUZZ_BUILD)/common/keysrc.o: FUZZ_CFLAGS += -DKEYSRC_SCAN_KEYS=4

$(FUZZ_BUILD)/libsluice.a: $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/$(FUZZ_DIR)/fuzz_%.o $(FUZZ_BUILD)/libsluice.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# tests/fuzz/run.sh runs them and prints one summary line per target.
fuzz: fuzz-build
	@rm -f $(FUZZ_BUILD)/summary.txt
	@$(FUZZ_DIR)/run.sh fuzz $(FUZZ_BUILD) $(FUZZ_TIME) $(FUZZ_TARGETS)

# Each checked-in input once, as a plain run (no mutation): a crash found
# earlier and added to the corpus stays fixed.
fuzz-regress: fuzz-build
	@$(FUZZ_DIR)/run.sh regress $(FUZZ_BUILD) $(FUZZ_TARGETS)

# The inputs of defects still open (tests/fuzz/known/): which still fail.
fuzz-known: fuzz-build
	@$(FUZZ_DIR)/run.sh known $(FUZZ_BUILD) $(FUZZ_TARGETS)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# Keep the targets' objects (make would delete them as intermediate).
.SECONDARY: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/$(FUZZ_DIR)/%.o)
