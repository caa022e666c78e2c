#!/usr/bin/env python3
"""reconcile_bench.py -- `sluice reconcile` on two large outcome logs.

Writes two logs of --lines outcomes each (~350-byte lines with JSON
bodies, over three sinks and five days) into a temp dir, with a known
number of pairs missing on each side and mismatched, the right side's
lines written with other key orders and spacing (equal after
canonicalisation) and other timestamps in `meta.sent_at` (ignored with
--ignore-field). Runs `sluice reconcile --output json`, checks that the
counts are exactly the planted ones, and prints wall seconds, CPU seconds
and peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss) beside the logs' sizes.

    bench/reconcile_bench.py [--lines N] [--planted K] [--bin DIR] [--keep]
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SINKS = ("billing", "crm", "ledger")
DAYS = ("2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-05")

# Forks sluice from a small interpreter: a child of this (larger) process
# would start with its RSS high-water mark (see tests/integration/
# harness.py, run_measured). RUSAGE_CHILDREN then covers the launcher and
# sluice, which it waited for.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, _ = os.wait4(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def body(i, total, sent_at, right):
    oid = "order-%08d" % i
    if right:  # other key order, other spacing: the same JSON
        return ('{"total": %d, "order_id": "%s", "items": '
                '[{"qty": 2, "sku": "sku-%d"}], "meta": {"sent_at": "%s"}}'
                % (total, oid, i % 977, sent_at))
    return ('{"order_id":"%s","total":%d,"items":[{"sku":"sku-%d",'
            '"qty":2}],"meta":{"sent_at":"%s"}}'
            % (oid, total, i % 977, sent_at))


def line(i, right, mismatched):
    sink = SINKS[i % len(SINKS)]
    day = DAYS[i * len(DAYS) // LINES]
    ms = (i % 86400000)
    ts = "%sT%02d:%02d:%02d.%03dZ" % (day, ms // 3600000 % 24,
                                      ms // 60000 % 60, ms // 1000 % 60,
                                      ms % 1000)
    sent_at = ts if not right else ts.replace("Z", "1Z")
    total = 4200 + i % 1000 + (1 if mismatched else 0)
    b = body(i, total, sent_at, right)
    sha = hashlib.sha256(b.encode()).hexdigest()
    return ('{"v":1,"ts":"%s","sink":"%s","key":"order-%08d",'
            '"outcome":"delivered","method":"POST","path":"/v1/%s/orders",'
            '"status":200,"body_sha256":"%s","body":%s}\n'
            % (ts, sink, i, sink, sha, b))


def generate(path, right, skip, mismatched):
    with open(path, "w", buffering=1 << 20) as f:
        for i in range(LINES):
            if i in skip:
                continue
            f.write(line(i, right, right and i in mismatched))
    return os.path.getsize(path)


def main():
    global LINES
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1000000)
    ap.add_argument("--planted", type=int, default=1000,
                    help="pairs of each kind: missing left, missing "
                         "right, mismatched")
    ap.add_argument("--bin", default=os.environ.get("SLUICE_BIN_DIR",
                                                    os.path.join(REPO,
                                                                 "bin")))
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (printed)")
    a = ap.parse_args()
    LINES = a.lines
    k = a.planted
    if 3 * k > LINES:
        sys.exit("--planted: at most a third of --lines")
    # Spread the planted pairs over the log: every step-th line.
    step = LINES // (3 * k)
    planted = [i * step for i in range(3 * k)]
    missing_left = set(planted[0::3])   # not in LEFT
    missing_right = set(planted[1::3])  # not in RIGHT
    mismatched = set(planted[2::3])

    tmp = tempfile.mkdtemp(prefix="reconcile-bench-")
    try:
        left = os.path.join(tmp, "left.ndjson")
        right = os.path.join(tmp, "right.ndjson")
        t0 = time.monotonic()
        lsize = generate(left, False, missing_left, mismatched)
        rsize = generate(right, True, missing_right, mismatched)
        print("generated %d + %d lines in %.1f s"
              % (LINES - k, LINES - k, time.monotonic() - t0))

        cmd = [sys.executable, "-c", LAUNCHER,
               os.path.join(a.bin, "sluice"), "reconcile", "--output",
               "json", "--ignore-field", "meta.sent_at", "--examples", "3",
               left, right]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 1:
            sys.exit("sluice reconcile exited %d (expected 1: a diff)\n%s"
                     % (p.returncode, p.stderr))
        rep = json.loads(p.stdout)
        t = rep["totals"]
        want = {"matched": LINES - 3 * k, "missing_left": k,
                "missing_right": k, "mismatched": k, "no_effect": 0}
        if t != want:
            sys.exit("wrong counts: got %s, want %s" % (t, want))
        cpu = (after.ru_utime - before.ru_utime) + \
              (after.ru_stime - before.ru_stime)
        mib = 1024.0 * 1024.0
        print("lines       %d + %d (planted: %d missing left, %d missing "
              "right, %d mismatched: counts exact)"
              % (LINES - k, LINES - k, k, k, k))
        print("log sizes   %.1f MiB + %.1f MiB" % (lsize / mib, rsize / mib))
        print("wall        %.2f s" % wall)
        print("cpu         %.2f s" % cpu)
        print("peak rss    %.1f MiB" % (after.ru_maxrss / 1024.0))
    finally:
        if a.keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
