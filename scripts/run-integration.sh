#!/usr/bin/env bash
# run-integration.sh WORKERS -- the integration suite on WORKERS pytest
# processes (pytest-xdist; 0: one process, as pytest alone runs it).
#
# With workers, one real Kafka broker serves the whole run: it is started
# here, before pytest, and handed to every worker's `kafka` fixture
# through KAFKA_BOOTSTRAP (a JVM per worker would not fit two cores).
# It is stopped when the run ends, passed, failed or interrupted. A
# KAFKA_BOOTSTRAP already set is used as it is. Files go to workers
# whole (--dist loadfile): a file's tests share its helpers' state.
set -euo pipefail
workers=${1:-2}
python=${PYTHON:-/usr/bin/python3}
root=$(cd "$(dirname "$0")/.." && pwd)
args=(-q -x -p no:cacheprovider)

if [ "$workers" -gt 0 ]; then
    args+=(-n "$workers" --dist loadfile)
    if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
        dir=$(mktemp -d /tmp/sluice-it-kafka.XXXXXX)
        trap '"$root/tests/kafka/kafka.sh" stop "$dir" >/dev/null 2>&1 || true
              rm -rf "$dir"' EXIT
        trap 'exit 130' INT TERM
        KAFKA_BOOTSTRAP=$("$root/tests/kafka/kafka.sh" start "$dir")
        export KAFKA_BOOTSTRAP
    fi
fi
cd "$root/tests/integration"
"$python" -m pytest "${args[@]}" .
