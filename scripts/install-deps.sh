#!/usr/bin/env bash
# install-deps.sh -- install the Debian packages sluice builds and tests with.
#
# Idempotent: checks each package with dpkg-query and only calls apt-get
# for what is missing, so `make` can run it on every build at no cost.
set -euo pipefail

packages=(
    build-essential pkg-config
    librdkafka-dev libyaml-dev liblua5.4-dev libcurl4-openssl-dev
    libjansson-dev libmicrohttpd-dev libsqlite3-dev libhiredis-dev
    libhttp-parser-dev
    libcmocka-dev
    python3-pytest python3-confluent-kafka
    wrk
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
