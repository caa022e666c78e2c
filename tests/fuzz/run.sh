#!/usr/bin/env bash
# run.sh -- runs the libFuzzer targets built by fuzz.mk (see docs/fuzzing.md).
#
#   run.sh fuzz    BUILD SECONDS TARGET...  fuzz each target SECONDS
#   run.sh regress BUILD TARGET...          each checked-in input once
#   run.sh known   BUILD TARGET...          the inputs of open defects
#
# fuzz writes new inputs into BUILD/corpus/TARGET (the checked-in corpus
# is only read), crashes into tests/fuzz/crashes/, the log into
# BUILD/TARGET.log, and prints one summary line per target from
# libFuzzer's last status line and final stats. Exit 1 if any target
# failed (fuzz, regress), or never (known: it reports).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mode=$1 build=$2
shift 2
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
failed=()

summary() { # TARGET LOG RC
    local t=$1 log=$2 rc=$3 last execs rate cov ft st
    last=$(grep -aE '^#[0-9]+' "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    st=ok
    if [ "$rc" -ne 0 ]; then
        st="FAILED (exit $rc): $(grep -am1 -E 'ERROR: |runtime error:|^fuzz_[a-z0-9]*: ' "$log" | cut -c1-160)"
        st+=" -- input: $(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)"
    fi
    echo "$t: execs: ${execs:-?} exec/s: ${rate:-?} cov: ${cov:-?} ft: ${ft:-?} $st"
}

case $mode in
fuzz)
    secs=$1
    shift
    mkdir -p "$here/crashes"
    for t in "$@"; do
        mkdir -p "$build/corpus/$t"
        dict=()
        [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
        echo "== $t: fuzzing ${secs} s (log: $build/$t.log)" >&2
        "$build/$t" -max_total_time="$secs" -print_final_stats=1 \
            -timeout=25 -rss_limit_mb=2048 \
            -artifact_prefix="$here/crashes/$t-" "${dict[@]}" \
            "$build/corpus/$t" "$here/corpus/$t" >"$build/$t.log" 2>&1
        rc=$?
        summary "$t" "$build/$t.log" "$rc" | tee -a "$build/summary.txt"
        [ "$rc" -eq 0 ] || failed+=("$t")
    done
    ;;
regress | known)
    dir=corpus
    if [ "$mode" = known ]; then
        dir=known
        export FUZZ_STRICT=1 # the targets' allowances for open defects off
    fi
    for t in "$@"; do
        [ -d "$here/$dir/$t" ] || continue
        # Files given one by one: run once each, no mutation. -r: an
        # empty directory must not start an endless fuzzing run.
        find "$here/$dir/$t" -type f -print0 |
            xargs -0 -r "$build/$t" >"$build/$t.$mode.log" 2>&1
        rc=$?
        n=$(find "$here/$dir/$t" -type f | wc -l)
        if [ "$mode" = known ]; then
            for f in "$here/$dir/$t"/*; do
                if ("$build/$t" "$f") >/dev/null 2>&1; then
                    echo "$t: $(basename "$f"): passes now: move it to corpus/$t/"
                else
                    echo "$t: $(basename "$f"): still fails"
                fi
            done
            continue
        fi
        if [ "$rc" -eq 0 ]; then
            echo "$t: $n inputs ok"
        else
            grep -aE 'ERROR|runtime error|^fuzz_|Running:' "$build/$t.$mode.log" | tail -n 5
            echo "$t: FAILED (log: $build/$t.$mode.log)"
            failed+=("$t")
        fi
    done
    ;;
*)
    echo "usage: $0 fuzz|regress|known BUILD ..." >&2
    exit 2
    ;;
esac

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
