# fuzz.mk -- libFuzzer targets (tests/fuzz/fuzz_*.c), included by the
# Makefile. See docs/fuzzing.md.
#
#   make fuzz                 build, then fuzz each target FUZZ_TIME s (60)
#   make fuzz FUZZ_TIME=600   the long run
#   make fuzz-regress         build, then run each target once over its
#                             checked-in corpus (seconds; part of make test)
#   make fuzz-build           only build
#
# Built by clang (scripts/install-deps.sh installs it with the libFuzzer
# runtime) with ASan, UBSan and libFuzzer, from the project's sources
# compiled again into their own directory: never mixed with gcc objects.

FUZZ_CC      ?= clang
FUZZ_TIME    ?= 60
FUZZ_BUILD   := build/fuzz
FUZZ_DIR     := tests/fuzz
FUZZ_TARGETS := fuzz_cfg fuzz_json fuzz_http1 fuzz_testfile
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
# UBSan reports stay recoverable in the build, so that one known report
# can be silenced at run time (UBSAN_OPTIONS=suppressions=...), but every
# run below halts on the first one.
FUZZ_SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:$(ASAN_OPTIONS) \
                UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:$(UBSAN_OPTIONS)
# The project's own warnings are gcc's business (make all): clang may warn
# differently, and a fuzz run must not fail on that. The targets
# themselves build with -Werror.
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g $(FUZZ_SAN) \
                -fsanitize=fuzzer-no-link -MMD -MP \
                -I. -Iworker -Iconnectors -Ilua \
                -DSLUICE_LUA_LIB_DEFAULT='"$(CURDIR)/lua/lib"' \
                -DFUZZ_PIPELINES_DIR='"$(CURDIR)/pipelines"' $(PKG_CFLAGS)
FUZZ_WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
                -Wmissing-prototypes -Wformat=2
FUZZ_OBJ     := $(WORKER_SRC:%.c=$(FUZZ_BUILD)/%.o)

.PHONY: fuzz fuzz-build fuzz-regress

fuzz-build: deps $(FUZZ_BINS)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -w -c -o $@ $<

$(FUZZ_BUILD)/$(FUZZ_DIR)/%.o: $(FUZZ_DIR)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) -c -o $@ $<

$(FUZZ_BUILD)/libsluice.a: $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/$(FUZZ_DIR)/fuzz_%.o $(FUZZ_BUILD)/libsluice.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# One target: fuzz it, new inputs into a scratch corpus (the checked-in
# one is only read), crashes into tests/fuzz/crashes/, then one summary
# line from libFuzzer's last status line and final stats.
define fuzz_run
	@mkdir -p $(FUZZ_BUILD)/corpus/$(1) $(FUZZ_DIR)/crashes
	@echo "== $(1): fuzzing $(FUZZ_TIME) s (log: $(FUZZ_BUILD)/$(1).log)"
	@$(FUZZ_ENV) $(FUZZ_BUILD)/$(1) -max_total_time=$(FUZZ_TIME) \
	    -print_final_stats=1 -timeout=25 -rss_limit_mb=2048 \
	    -artifact_prefix=$(FUZZ_DIR)/crashes/$(1)- \
	    $(if $(wildcard $(FUZZ_DIR)/$(1).dict),-dict=$(FUZZ_DIR)/$(1).dict) \
	    $(FUZZ_BUILD)/corpus/$(1) $(FUZZ_DIR)/corpus/$(1) \
	    > $(FUZZ_BUILD)/$(1).log 2>&1; \
	 rc=$$?; \
	 tail=$$(grep -E '^#[0-9]+' $(FUZZ_BUILD)/$(1).log | tail -n 1); \
	 execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_BUILD)/$(1).log); \
	 rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $(FUZZ_BUILD)/$(1).log); \
	 cov=$$(echo "$$tail" | sed -n 's/.* cov: \([0-9]*\).*/\1/p'); \
	 ft=$$(echo "$$tail" | sed -n 's/.* ft: \([0-9]*\).*/\1/p'); \
	 if [ $$rc -eq 0 ]; then st=ok; else \
	     st="FAILED (exit $$rc: $$(grep -m1 -E 'ERROR: |runtime error:|fuzz_[a-z0-9]*: ' $(FUZZ_BUILD)/$(1).log), \
	 artifact: $$(sed -n 's/.*Test unit written to //p' $(FUZZ_BUILD)/$(1).log | tail -n 1))"; fi; \
	 echo "$(1): $$st execs: $${execs:-?} exec/s: $${rate:-?} cov: $${cov:-?} ft: $${ft:-?}" \
	     | tee -a $(FUZZ_BUILD)/summary.txt; \
	 [ $$rc -eq 0 ] || echo $(1) >> $(FUZZ_BUILD)/failed.txt
endef

fuzz: fuzz-build
	@rm -f $(FUZZ_BUILD)/summary.txt $(FUZZ_BUILD)/failed.txt
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t))
	)
	@echo "== summary"; cat $(FUZZ_BUILD)/summary.txt
	@if [ -s $(FUZZ_BUILD)/failed.txt ]; then \
	     echo "fuzz: failed: $$(cat $(FUZZ_BUILD)/failed.txt | tr '\n' ' ')(inputs in $(FUZZ_DIR)/crashes/)"; \
	     exit 1; fi

# Each checked-in input once, as a plain run (no mutation): a crash found
# earlier and added to the corpus stays fixed.
fuzz-regress: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    n=$$(find $(FUZZ_DIR)/corpus/$$t -type f | wc -l); \
	    echo "== $$t: $$n inputs"; \
	    find $(FUZZ_DIR)/corpus/$$t -type f -print0 | \
	        xargs -0 -r env $(FUZZ_ENV) $(FUZZ_BUILD)/$$t -runs=1 \
	        > $(FUZZ_BUILD)/$$t.regress.log 2>&1 || \
	        { tail -n 40 $(FUZZ_BUILD)/$$t.regress.log; \
	          echo "fuzz-regress: $$t failed (log: $(FUZZ_BUILD)/$$t.regress.log)"; \
	          exit 1; }; \
	done

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# Keep the targets' objects (make would delete them as intermediate).
.SECONDARY: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/$(FUZZ_DIR)/%.o)
