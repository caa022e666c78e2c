#!/usr/bin/env bash
# kafka.sh -- a real single-node Apache Kafka broker for sluice's tests.
#
# sluice is pure C; Java is only used here, for the test broker.  The broker
# is Apache Kafka (version pinned in tests/kafka/pom.xml) in KRaft combined
# mode (broker+controller, node.id=1), listening on 127.0.0.1 only.
#
# Usage:
#   tests/kafka/kafka.sh fetch            resolve Kafka + deps from Maven Central
#                                         (default ~/.m2 cache) into
#                                         tests/kafka/lib/; a no-op when lib/
#                                         matches pom.xml (stamp lib/.stamp)
#   tests/kafka/kafka.sh start   [DIR]    start (formatting storage on first
#                                         use), wait until it answers
#                                         metadata requests, then print the
#                                         bootstrap "127.0.0.1:PORT"
#   tests/kafka/kafka.sh stop    [DIR]    SIGTERM, up to 20 s, then SIGKILL
#   tests/kafka/kafka.sh status  [DIR]    "running 127.0.0.1:PORT" (exit 0) or
#                                         "stopped"/"unresponsive" (exit 1)
#   tests/kafka/kafka.sh restart [DIR]    stop + start; same data, same ports
#
# DIR (default /tmp/sluice-kafka) holds everything of one instance:
#   DIR/server.properties  generated from tests/kafka/server.properties
#   DIR/ports              PORT= and CONTROLLER_PORT= chosen on first start
#                          (kept, so restarts come back on the same address)
#   DIR/cluster.id         KRaft cluster id
#   DIR/data/              log.dirs + metadata log
#   DIR/broker.log         broker stdout/stderr (log4j console appender)
#   DIR/broker.pid         pid of the broker JVM
#   DIR/bootstrap          "127.0.0.1:PORT", written once the broker is ready
# `rm -rf DIR` (after stop) gives a fresh cluster.  Several DIRs can run at
# once (each picks its own free ports).
#
# Only the bootstrap address goes to stdout, so scripts can do
#   BOOTSTRAP=$(tests/kafka/kafka.sh start)
# Progress/errors go to stderr; the broker log stays in DIR/broker.log and its
# last 50 lines are printed only when a command fails.
#
# Environment:
#   KAFKA_PORT             client (PLAINTEXT) port; default: a free port on
#                          first start, then the one stored in DIR/ports
#   KAFKA_CONTROLLER_PORT  controller port; same rules
#   KAFKA_READY_TIMEOUT    seconds start waits for readiness (default 60)
#   KAFKA_STOP_TIMEOUT     seconds stop waits after SIGTERM (default 20)
#   KAFKA_JVM_OPTS         extra JVM options (appended)
#   JAVA, MVN, PYTHON      tool paths (default java, mvn, /usr/bin/python3;
#                          PYTHON needs confluent_kafka: python3-confluent-kafka)
#
# Requires: a JRE 17 (default-jre-headless), maven (fetch only),
# python3-confluent-kafka (readiness probe), util-linux (flock, setsid).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIB=${KAFKA_LIB_DIR:-$HERE/lib}
STAMP=$LIB/.stamp
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
PYTHON=${PYTHON:-/usr/bin/python3}
DEFAULT_DIR=/tmp/sluice-kafka
READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-60}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-20}

# Small, quick-to-start JVM: C1 only (the broker's test load is light),
# serial GC, CDS on.
JVM_OPTS=(-Xmx512m -Xms256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
          -Xshare:auto -Djava.awt.headless=true
          -Dlog4j.configuration="file:$HERE/log4j.properties")
# shellcheck disable=SC2206
[ -n "${KAFKA_JVM_OPTS:-}" ] && JVM_OPTS+=($KAFKA_JVM_OPTS)

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- fetch ----

pom_hash() { sha256sum "$HERE/pom.xml" | cut -d' ' -f1; }

lib_ok() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(pom_hash)" ] &&
        compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null
}

cmd_fetch() {
    lib_ok && return 0
    exec 9<"$HERE/pom.xml"          # serialize concurrent fetches
    flock 9
    lib_ok && return 0
    command -v "$MVN" >/dev/null || die "fetch: $MVN not found (apt-get install maven)"
    local tmp="$LIB.tmp.$$" mlog
    mlog=$(mktemp)
    rm -rf "$tmp"
    local args=(-B -q -Dstyle.color=never -f "$HERE/pom.xml"
                "-Dkafka.lib.dir=$tmp" dependency:copy-dependencies)
    # Offline first: everything already in ~/.m2 means no network at all.
    if ! "$MVN" -o "${args[@]}" >"$mlog" 2>&1; then
        log "fetch: resolving from Maven Central"
        rm -rf "$tmp"
        if ! "$MVN" "${args[@]}" >>"$mlog" 2>&1; then
            tail -n 50 "$mlog" >&2; rm -rf "$tmp" "$mlog"
            die "fetch: mvn failed"
        fi
    fi
    rm -f "$mlog"
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null ||
        { rm -rf "$tmp"; die "fetch: no kafka jar resolved"; }
    pom_hash >"$tmp/.stamp"
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
    rm -rf "$HERE/target"
    log "fetch: $(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
}

# ------------------------------------------------------------- instance ----

inst_init() {
    DIR=${1:-$DEFAULT_DIR}
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    PIDFILE=$DIR/broker.pid
    BLOG=$DIR/broker.log
    exec 8>"$DIR/.lock"             # one start/stop at a time per DIR
    flock 8
}

# Is $1 a live (non-zombie) broker JVM of this DIR?
is_our_broker() {
    local pid=$1 state
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "-Dsluice.kafka.dir=$DIR"
}

broker_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    is_our_broker "$pid" || return 1
    echo "$pid"
}

bootstrap_addr() { echo "127.0.0.1:$PORT"; }

load_ports() {
    PORT="" CONTROLLER_PORT=""
    # shellcheck disable=SC1091
    [ -f "$DIR/ports" ] && . "$DIR/ports"
    PORT=${KAFKA_PORT:-$PORT}
    CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$CONTROLLER_PORT}
}

# Probe: the broker answers a metadata request listing itself, with this
# DIR's cluster id (not some other broker that holds the port).
#   probe TIMEOUT_S [PID]   -- with PID, give up as soon as PID dies (exit 2)
probe() {
    local cid=""
    [ -s "$DIR/cluster.id" ] && cid=$(cat "$DIR/cluster.id")
    "$PYTHON" - "$(bootstrap_addr)" "$1" "${2:-0}" "$cid" <<'EOF'
import os, sys, time
from confluent_kafka.admin import AdminClient
boot, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
cid = sys.argv[4]
deadline = time.monotonic() + timeout
a = AdminClient({"bootstrap.servers": boot, "log_level": 0,
                 "socket.connection.setup.timeout.ms": 1000,
                 "reconnect.backoff.max.ms": 200})
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        sys.exit(1)
    if pid:
        try:
            os.kill(pid, 0)
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    sys.exit(2)
        except (OSError, IndexError):
            sys.exit(2)
    try:
        md = a.list_topics(timeout=min(1.0, left))
        if md.brokers:
            if cid and md.cluster_id != cid:
                sys.exit(3)     # someone else's broker on our port
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
EOF
}

fail_with_log() {
    log "$*"
    if [ -f "$BLOG" ]; then
        log "last 50 lines of $BLOG:"
        tail -n 50 "$BLOG" >&2
    fi
    exit 1
}

kill_broker() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        is_our_broker "$pid" || return 0
        sleep 0.1
    done
    log "broker $pid ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        is_our_broker "$pid" || return 0
        sleep 0.1
    done
    return 1
}

free_ports() {
    "$PYTHON" -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])'
}

port_free() {
    "$PYTHON" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the JVM does
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# ---------------------------------------------------------------- start ----

cmd_start() {
    cmd_fetch
    inst_init "${1:-}"
    load_ports

    local pid
    if pid=$(broker_pid); then
        if probe 10; then
            bootstrap_addr >"$DIR/bootstrap"
            bootstrap_addr
            return 0
        fi
        fail_with_log "broker $pid is running but not answering on $(bootstrap_addr)"
    fi
    rm -f "$PIDFILE" "$DIR/bootstrap"

    if [ -z "$PORT" ] || [ -z "$CONTROLLER_PORT" ]; then
        local p c
        read -r p c < <(free_ports)
        PORT=${PORT:-$p}
        CONTROLLER_PORT=${CONTROLLER_PORT:-$c}
        [ "$PORT" != "$CONTROLLER_PORT" ] || CONTROLLER_PORT=$p
    fi
    local port
    for port in "$PORT" "$CONTROLLER_PORT"; do
        port_free "$port" ||
            fail_with_log "port 127.0.0.1:$port is in use (ports of $DIR: $DIR/ports)"
    done
    printf 'PORT=%s\nCONTROLLER_PORT=%s\n' "$PORT" "$CONTROLLER_PORT" >"$DIR/ports"

    local props=$DIR/server.properties data=$DIR/data
    sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$data|g" "$HERE/server.properties" >"$props"

    echo "=== kafka.sh start $(date '+%F %T') port $PORT controller $CONTROLLER_PORT" >>"$BLOG"
    if [ ! -f "$data/meta.properties" ]; then
        if [ ! -s "$DIR/cluster.id" ]; then
            # a random 16-byte UUID, base64url without padding, like
            # `kafka-storage random-uuid` but without starting a JVM; like
            # Kafka's, never starting with '-' (1 in 64 would, and the
            # storage tool then takes it for an option)
            "$PYTHON" -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        break
print(s)' >"$DIR/cluster.id"
        fi
        mkdir -p "$data"
        "$JAVA" "${JVM_OPTS[@]}" -cp "$LIB/*" kafka.tools.StorageTool \
            format -t "$(cat "$DIR/cluster.id")" -c "$props" >>"$BLOG" 2>&1 ||
            fail_with_log "storage format failed"
    fi

    # setsid: own session, so the caller's Ctrl-C/SIGHUP does not reach it.
    # (exec in a non-leader subshell: $! is the JVM's pid.)  The lock fds
    # 8/9 are closed so the daemon does not hold them.
    (exec setsid "$JAVA" "${JVM_OPTS[@]}" "-Dsluice.kafka.dir=$DIR" \
        "-Dkafka.logs.dir=$DIR" -cp "$LIB/*" kafka.Kafka "$props" \
        </dev/null >>"$BLOG" 2>&1 8>&- 9<&-) &
    pid=$!
    echo "$pid" >"$PIDFILE"

    local rc=0
    probe "$READY_TIMEOUT" "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        is_our_broker "$pid" && kill_broker "$pid"
        rm -f "$PIDFILE"
        [ "$rc" -eq 2 ] && fail_with_log "broker exited during startup"
        [ "$rc" -eq 3 ] &&
            fail_with_log "another cluster answers on $(bootstrap_addr)"
        fail_with_log "broker not ready after ${READY_TIMEOUT}s"
    fi
    bootstrap_addr >"$DIR/bootstrap"
    bootstrap_addr
}

# ----------------------------------------------------------- stop/status ----

cmd_stop() {
    inst_init "${1:-}"
    local pid
    if pid=$(broker_pid); then
        kill_broker "$pid" || fail_with_log "could not kill broker $pid"
    fi
    rm -f "$PIDFILE" "$DIR/bootstrap"
}

cmd_status() {
    local dir=${1:-$DEFAULT_DIR}
    if [ ! -d "$dir" ]; then echo stopped; return 1; fi
    inst_init "$dir"
    load_ports
    local pid
    if ! pid=$(broker_pid); then echo stopped; return 1; fi
    if probe 5; then
        echo "running $(bootstrap_addr)"
        return 0
    fi
    echo "unresponsive $(bootstrap_addr) (pid $pid)"
    return 1
}

cmd_restart() {
    (cmd_stop "${1:-}")
    cmd_start "${1:-}"
}

case "${1:-}" in
    fetch)   cmd_fetch ;;
    start)   cmd_start "${2:-}" ;;
    stop)    cmd_stop "${2:-}" ;;
    status)  cmd_status "${2:-}" ;;
    restart) cmd_restart "${2:-}" ;;
    *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2 ;;
esac
