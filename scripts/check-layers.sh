#!/bin/sh
# check-layers.sh -- the source floors read downwards only:
#
#     worker/  ->  lua/, connectors/, stores/  ->  common/
#
# A file may include headers of its own floor or lower ones, never of a
# higher one. Every directory is on the compiler's -I path, so the
# compiler cannot catch `#include "cfg.h"` in lua/: this does, by finding
# which directory each quoted include comes from. A header name that two
# floors both hold is refused too (-I order would pick one silently), and
# so is a quoted include with a directory in it (headers go by name).
# Prints each offence as file:line and exits 1; run by `make layers`.
set -u

cd "$(dirname "$0")/.."

floor() {
    case $1 in
    common) echo 0 ;;
    lua | connectors | stores) echo 1 ;;
    worker) echo 2 ;;
    *) echo "" ;;
    esac
}

dirs="common lua connectors stores worker"
offences=$(for dir in $dirs; do
    mine=$(floor "$dir")
    for file in "$dir"/*.c "$dir"/*.h; do
        [ -f "$file" ] || continue
        grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" |
            sed 's/^\([0-9]*\):.*"\(.*\)".*/\1 \2/' |
            while read -r line name; do
                case $name in
                */*)
                    echo "$file:$line: \"$name\": include by name alone"
                    continue
                    ;;
                esac
                # Where the preprocessor finds it: beside the file, else
                # in a floor's directory (-I).
                found=""
                if [ -f "$dir/$name" ]; then
                    found="$dir/$name"
                fi
                for d in $dirs; do
                    if [ "$d" != "$dir" ] && [ -f "$d/$name" ]; then
                        if [ -n "$found" ]; then
                            echo "$file:$line: \"$name\" is both" \
                                "$found and $d/$name"
                        else
                            found="$d/$name"
                        fi
                    fi
                done
                [ -n "$found" ] || continue # a dependency's header
                theirs=$(floor "${found%%/*}")
                if [ -z "$theirs" ] || [ "$theirs" -gt "$mine" ]; then
                    echo "$file:$line: includes $found, a higher floor"
                fi
            done
    done
done)
if [ -n "$offences" ]; then
    echo "$offences"
    echo "check-layers: a lower floor includes a higher one" \
        "(docs/ARCHITECTURE.md, Layout)"
    exit 1
fi
