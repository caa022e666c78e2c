#!/usr/bin/env bash
# demo.sh -- run pipelines/orders-fanout.yaml end to end on this machine.
#
# Starts four local HTTP sinks (tests/tools/sinkd), sluice on the embedded
# Kafka cluster, and a generator producing sample orders keyed by
# tenant_id; shows live progress, then stops sluice with SIGTERM and
# prints what every sink received.
set -euo pipefail

cd "$(dirname "$0")/.."
COUNT=${DEMO_ORDERS:-20000}
RATE=${DEMO_RATE:-5000}
work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

sinks=(billing crm search analytics)
for s in "${sinks[@]}"; do
    bin/sinkd --port 0 --port-file "$work/$s.port" >/dev/null 2>&1 &
    pids+=($!)
done
for s in "${sinks[@]}"; do
    for _ in $(seq 50); do [ -s "$work/$s.port" ] && break; sleep 0.1; done
    port=$(cat "$work/$s.port")
    upper=$(echo "$s" | tr a-z A-Z)
    export "${upper}_URL=http://127.0.0.1:$port/$s"
    echo "sink $s listening on 127.0.0.1:$port"
done

unset KAFKA_BROKERS
bin/sluice run --progress pipelines/orders-fanout.yaml 2>"$work/sluice.log" &
sluice=$!
pids+=($sluice)
bootstrap=""
for _ in $(seq 100); do
    bootstrap=$(grep -o 'bootstrap=[^ ]*' "$work/sluice.log" | head -1 | cut -d= -f2 || true)
    [ -n "$bootstrap" ] && break
    sleep 0.1
done
[ -n "$bootstrap" ] || { cat "$work/sluice.log"; echo "demo: sluice did not start"; exit 1; }
echo "embedded Kafka cluster at $bootstrap (in memory, development only)"
echo "producing $COUNT orders at $RATE/s to topic orders..."
/usr/bin/python3 tests/tools/gen_orders.py --bootstrap "$bootstrap" \
    --topic orders --count "$COUNT" --rate "$RATE" 2>"$work/gen.log" &
gen=$!
pids+=($gen)

# Done when every order was consumed and nothing is in flight (the
# example's crm transform skips cancelled orders, so the sinks' request
# counts differ).
settled() {
    grep -q "^progress consumed=$COUNT in_flight=0 " "$work/sluice.log"
}

deadline=$((SECONDS + 60))
while ! settled; do
    line=$(grep '^progress ' "$work/sluice.log" | tail -1 || true)
    printf '\r%s\033[K' "${line#progress }"
    [ $SECONDS -lt $deadline ] || { echo; echo "demo: timed out"; exit 1; }
    sleep 0.5
done
wait "$gen" || true
kill -TERM "$sluice"
rc=0
wait "$sluice" || rc=$?
echo
grep -E 'summary|error' "$work/sluice.log" | sed 's/^[^ ]* [a-z]* *//'
# One line per sink; a sink with a path per order (search PUTs each
# order at its own URL) shows how many paths rather than all of them.
for s in "${sinks[@]}"; do
    curl -s "http://127.0.0.1:$(cat "$work/$s.port")/_sinkd/stats" |
        /usr/bin/python3 -c '
import json, sys
st = json.load(sys.stdin)
paths = st.get("by_path", {})
where = (", ".join("%s %d" % kv for kv in sorted(paths.items()))
         if len(paths) <= 3 else "%d paths" % len(paths))
print("%-10s %d requests (%s), status %s, %d bytes"
      % (sys.argv[1], st.get("requests", 0), where,
         json.dumps(st.get("by_status", {})), st.get("bytes", 0)))' "$s"
done
echo "sluice exited with $rc; logs in $work"
exit "$rc"
