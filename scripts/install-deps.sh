#!/usr/bin/env bash
# install-deps.sh -- install the Debian packages sluice builds and tests
# with.
#
# Idempotent: checks each package with dpkg-query and only calls apt-get
# for what is missing, so `make` can run it on every build at no cost. The
# JRE and Maven serve only the test broker: sluice itself is pure C.
set -euo pipefail

packages=(
    build-essential pkg-config
    librdkafka-dev libyaml-dev liblua5.4-dev libcurl4-openssl-dev
    libjansson-dev libmicrohttpd-dev libsqlite3-dev libhiredis-dev
    libhttp-parser-dev libssl-dev
    sqlite3 redis-server
    libcmocka-dev
    clang libclang-rt-14-dev
    python3-pytest python3-pytest-xdist python3-confluent-kafka
    prometheus
    wrk
    default-jre-headless maven
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The real Kafka test broker's jars are not fetched here: building needs
# only these packages. The targets that start a broker run `make
# kafka-jars` (tests/kafka/kafka.sh fetch).
