#!/usr/bin/python3
"""sluice benchmark: drain a backlog of JSON orders to four HTTP sinks.

    /usr/bin/python3 bench/run.py [--count N] [--broker mock|kafka] [--keep]
                                  [--no-transform | --only-transform]
                                  [--lua-iterations N]
                                  [--markers sqlite,redis|none]
                                  [--obs admin,tracing|none]

One run measures, one after the other (the machine has few cores):

1. the backlog: COUNT lz4 orders (~260 B, keyed by 50 tenants) produced to
   an 8-partition topic before anything consumes it, then checked with the
   partition watermarks;
2. ceiling A: bin/bare-consumer, a plain librdkafka consumer, reads all of
   it (this also proves every message is readable);
3. sluice end to end: `sluice run` with four http sinks pointing at four
   bin/sinkd (count-only), timed from the first request at any sink to the
   moment every sink has COUNT requests (the ~3 s group join is excluded);
   CPU from /proc/PID/stat over that window, peak RSS (VmHWM) just before
   SIGTERM, VmRSS sampled every 200 ms, sink counters every 50 ms (stalls);
4. sluice + Lua transforms end to end (skipped with --no-transform; alone
   with --only-transform): the same backlog read again by a new consumer
   group, bench/pipeline-transform.yaml.in (pipelines/transforms/orders.lua
   once per message, then billing/crm/search.lua per sink; analytics
   none), four fresh sinkd, measured as in 3. crm.lua skips cancelled
   orders, so each sink is waited for until it has its own expected count
   (recomputed with gen_orders), and sluice's summary line must show
   consumed=COUNT, crm_skipped=<cancelled> and no failures;
   3b. (not with --only-transform) the same as 3 with billing answering
   400 to 1% of the orders for good (sinkd's reject_every: 100): those go
   to the pipeline's dead-letter topic; the run counts only when sluice's
   summary shows exactly them dead-lettered and it exits 0 (everything
   committed). Reported beside 3, as ratios from the same run;
   3c. (not with --only-transform; --markers none skips it) markers: 5
   rounds of the plain case, then with SQLite markers (dedupe.store:
   sqlite), then with Redis markers (a redis-server started here, its CPU
   reported apart), each a new group on the same backlog; each case's
   median run is reported, as ratios to the plain median;
   3d. (not with --only-transform; --obs none skips it) observability:
   5 rounds of the plain case, then with the admin server on and
   /metrics scraped every second by a thread here (each scrape checked),
   then with tracing at sample_ratio 1.0 to tests/tools/otlp_recorder.py
   --count-only, a process of its own whose CPU is reported apart; every
   record starts a trace (a process span and one span per sink request:
   5 per message). Medians, as ratios to the plain median;
5. ceiling B: wrk against one fresh sinkd (its request rate);
6. the Lua stage alone (not with --no-transform): bin/transform-bench on
   10,000 orders, --lua-iterations messages each: (a) the example's
   transforms (pipeline + 3 sink shapes), (b) a pipeline transform that
   never touches msg.json, (c) one that decodes and adds two fields;
   five runs of each, in rounds, and each case's median is reported.

Prints a Markdown table with the issue's reference baselines and writes
bench/results/latest.json. No pass/fail: exit 0 when the run completed,
1 when something did not happen (each error says what), 2 on bad usage.
Stdlib + confluent_kafka only (tests/tools/gen_orders.py needs it).
"""

import argparse
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BIN = os.environ.get("SLUICE_BIN_DIR", os.path.join(ROOT, "bin"))
RESULTS = os.path.join(BENCH, "results")
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))

SINKS = ("billing", "crm", "search", "analytics")
REJECT_EVERY = 100  # the failure case: billing refuses 1% for good
TRANSFORMS_DIR = os.path.join(ROOT, "pipelines", "transforms")
PARTITIONS = 8
TENANTS = 50
MIB = 1024.0 * 1024.0

# Reference figures from the issue (CPU-us per message, peak RSS MiB).
TARGET_CPU_US = 60.0
TARGET_RSS_MIB = 64.0
BASELINES = [
    ("C+libcurl prototype (curl_multi_poll)", 80.0, None),
    ("C prototype, lean HTTP client", 44.0, None),
    ("Fluent Bit", 145.0, 177.0),
]

# The Lua stage (CPU-us per message), from the issue.
LUA_TARGET_EXAMPLE_US = 6.0      # the example transform
LUA_TARGET_UNTOUCHED_US = 0.5    # a transform that never touches msg.json
LUA_BASELINES = [                # decode -> Lua table -> 2 fields -> encode
    ("jansson", 11.75),
    ("lua-cjson", 5.75),
]
LUA_STRING_ONLY_US = 0.1         # a Lua call that only handles the string
LUA_ORDERS = 10000               # orders in transform-bench's input file
LUA_RUNS = 5                     # transform-bench runs per case: the median
# (b) and (c) of the Lua stage: msg.json never touched / decode + 2 fields.
UNTOUCHED_LUA = """\
-- never touches the JSON view: only the key (a string) is read
function transform(msg)
  if msg.key == "never" then return nil end
  return msg
end
"""
TWO_FIELDS_LUA = """\
-- decode, add two fields, encode (the issue's jansson/lua-cjson case)
function transform(msg)
  local o = msg.json
  o.a = 1
  o.b = "x"
  return msg
end
"""

STATS_POLL_S = 0.05      # sink counters while draining
FIRST_POLL_S = 0.01      # sink counters while waiting for the first request
RSS_EVERY_S = 0.2        # VmRSS samples
STALL_S = 0.3            # a counter that does not move for longer is a stall
FIRST_REQUEST_TIMEOUT_S = 60.0
NO_PROGRESS_TIMEOUT_S = 30.0

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Children get SIGKILL if this process dies without cleaning up (kill -9).
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class BenchError(Exception):
    """Something did not happen; the message says what."""


class Interrupted(BaseException):
    pass


def _on_sigterm(signum, frame):
    raise Interrupted("signal %d" % signum)


def log(msg):
    print("bench: %s" % msg, file=sys.stderr, flush=True)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return ""
    return "".join("    | " + l for l in lines[-n:])


# ---- processes --------------------------------------------------------

class Procs:
    """Every child we start, each logging to files in the work dir; all of
    them are stopped by stop_all() (called from a finally)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, stdin=subprocess.DEVNULL):
        out = os.path.join(self.workdir, name + ".out")
        err = os.path.join(self.workdir, name + ".err")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen(argv, stdin=stdin, stdout=fo, stderr=fe,
                                 cwd=self.workdir, preexec_fn=_die_with_parent)
        p.name, p.out, p.err = name, out, err
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, timeout=5.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code
        and whether SIGKILL was needed."""
        if p.poll() is not None:
            return p.returncode, False
        try:
            p.send_signal(signal.SIGTERM)
            return p.wait(timeout), False
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(), True

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                self.stop(p, 3.0)
            except Exception as e:  # keep stopping the others
                log("stopping %s (pid %d): %s" % (p.name, p.pid, e))


def wait_for_file(path, proc, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                s = f.read().strip()
            if s:
                return s
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise BenchError("%s exited (status %s) before %s:\n%s"
                             % (proc.name, proc.returncode, what,
                                tail(proc.err)))
        time.sleep(0.02)
    raise BenchError("%s: no %s within %.0f s:\n%s"
                     % (proc.name, what, timeout, tail(proc.err)))


def start_sinkd(procs, name):
    port_file = os.path.join(procs.workdir, name + ".port")
    p = procs.start(name, [os.path.join(BIN, "sinkd"), "--port", "0",
                           "--threads", "2", "--port-file", port_file])
    port = int(wait_for_file(port_file, p, "listening port (--port-file)",
                             10))
    return p, port


class SinkStats:
    """Keep-alive GET /_sinkd/stats against one sinkd."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def requests(self):
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=5)
                self.conn.request("GET", "/_sinkd/stats")
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise BenchError("sinkd :%d stats: HTTP %d"
                                     % (self.port, r.status))
                return int(json.loads(body)["requests"])
            except (OSError, http.client.HTTPException, ValueError,
                    KeyError) as e:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise BenchError("cannot read sinkd :%d stats: %s"
                                     % (self.port, e))

    def close(self):
        if self.conn is not None:
            self.conn.close()


# ---- /proc --------------------------------------------------------------

def proc_cpu_s(pid):
    """utime+stime of the whole process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_s(pid, comm):
    """CPU seconds of pid's threads named comm (e.g. sluice-sqlite)."""
    total = 0.0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() != comm:
                    continue
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def proc_status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError("no %s in /proc/%d/status" % (key, pid))


# ---- steps ---------------------------------------------------------------

def start_mock(procs):
    bfile = os.path.join(procs.workdir, "kafka-mock.bootstrap")
    # stdin stays a pipe we never write to: the mock serves until SIGTERM.
    p = procs.start("kafka-mock",
                    [os.path.join(BIN, "kafka-mock"), "--topic",
                     "orders:%d" % PARTITIONS, "--bootstrap-file", bfile],
                    stdin=subprocess.PIPE)
    return wait_for_file(bfile, p, "bootstrap address (--bootstrap-file)",
                         15)


def create_kafka_topic(bootstrap, topic):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, PARTITIONS, 1)],
                              operation_timeout=30)[topic]
    try:
        fut.result(60)
    except Exception as e:
        raise BenchError("cannot create topic %s on %s: %s"
                         % (topic, bootstrap, e))


def delete_kafka_topic(bootstrap, topic):
    try:
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    except Exception as e:
        log("could not delete topic %s: %s" % (topic, e))


def produce_backlog(bootstrap, topic, count):
    import gen_orders
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    t0 = time.monotonic()
    try:
        n = gen_orders.produce(bootstrap, topic, count, tenants=TENANTS)
    except (RuntimeError, KafkaException) as e:
        raise BenchError("producing %d orders to %s failed: %s"
                         % (count, topic, e))
    dt = time.monotonic() - t0
    # Watermarks: the mock silently drops a partition's oldest batches past
    # ~5 MiB, so "produced" is not "readable" until low/high say so.
    c = Consumer({"bootstrap.servers": bootstrap,
                  "group.id": "bench-watermarks-%d" % os.getpid(),
                  "enable.auto.commit": False})
    try:
        low = high = 0
        per_part = []
        for p in range(PARTITIONS):
            try:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p),
                                                 timeout=10)
            except KafkaException as e:
                raise BenchError("watermarks of %s [%d]: %s" % (topic, p, e))
            low += lo
            high += hi
            per_part.append(hi - lo)
    finally:
        c.close()
    if low != 0 or high != n:
        raise BenchError(
            "backlog incomplete: produced %d but partitions hold offsets "
            "%d..%d (%d readable%s); per partition %s"
            % (n, low, high, high - low,
               ", the mock dropped old batches: lower --count"
               if low else "", per_part))
    return {"produced": n, "produce_s": round(dt, 3),
            "per_partition": per_part}


def run_bare_consumer(bootstrap, topic, count, workdir):
    timeout_s = max(120, count // 1000)
    argv = [os.path.join(BIN, "bare-consumer"), "--bootstrap", bootstrap,
            "--topic", topic, "--count", str(count),
            "--timeout-s", str(timeout_s)]
    err = os.path.join(workdir, "bare-consumer.err")
    with open(err, "wb") as fe:
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=fe,
                               stdin=subprocess.DEVNULL,
                               timeout=timeout_s + 30,
                               preexec_fn=_die_with_parent)
        except subprocess.TimeoutExpired:
            raise BenchError("bare-consumer did not finish within %d s"
                             % (timeout_s + 30))
    try:
        res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError("bare-consumer (status %d) printed no JSON line:\n%s"
                         % (r.returncode, tail(err)))
    if r.returncode != 0 or res.get("messages") != count:
        raise BenchError(
            "bare-consumer read %s of %d messages within %d s (status %d): "
            "the backlog is not fully readable, so sluice is not to blame:"
            "\n%s" % (res.get("messages"), count, timeout_s, r.returncode,
                      tail(err)))
    return res


def write_pipeline(workdir, bootstrap, topic, group, ports,
                   template="pipeline.yaml.in", out="bench-pipeline.yaml",
                   transform=None, extra=None):
    """Fills in bench/<template> and writes it to workdir/<out>.
    transform: a pipeline transform (absolute path) to add at the top
    level of a template that has none. extra: YAML text appended (a
    top-level section such as `dedupe:`)."""
    with open(os.path.join(BENCH, template)) as f:
        text = f.read()
    subst = {"BROKERS": bootstrap, "TOPIC": topic, "GROUP": group,
             "TRANSFORMS": TRANSFORMS_DIR}
    for name, port in zip(SINKS, ports):
        subst[name.upper() + "_URL"] = "http://127.0.0.1:%d/%s" % (port,
                                                                  name)
    text = re.sub(r"@([A-Z_]+)@", lambda m: subst[m.group(1)], text)
    if transform is not None:
        text += "\ntransform: %s\n" % json.dumps(transform)
    if extra is not None:
        text += "\n" + extra
    path = os.path.join(workdir, out)
    with open(path, "w") as f:
        f.write(text)
    return path


def expected_requests(count):
    """Requests each sink gets from the transform pipeline, in SINKS order,
    and the number of cancelled orders (crm.lua skips them) among orders
    0..count-1, as produce_backlog made them (gen_orders' default seed)."""
    import gen_orders
    tail_ = b'"status":"cancelled"}'
    cancelled = sum(1 for i in range(count)
                    if gen_orders.make_order(i, TENANTS).endswith(tail_))
    return tuple(count - cancelled if n == "crm" else count
                 for n in SINKS), cancelled


def read_summary(path):
    """sluice's final `summary consumed=N ...` line (stderr) as a dict of
    its counters, or None when it printed none."""
    line = None
    with open(path, errors="replace") as f:
        for l in f:
            m = re.search(r"\bsummary (consumed=.*)$", l.rstrip())
            if m:
                line = m.group(1)
    if line is None:
        return None
    out = {"line": "summary " + line}
    for kv in line.split():
        k, _, v = kv.partition("=")
        out[k] = int(v) if v.isdigit() else v
    return out


def find_gaps(history, expected, t_start):
    """Per sink and for all sinks together, intervals > STALL_S in which the
    counter did not move although the sink was not done yet (expected:
    each sink's final count)."""
    def gaps_of(series, count):
        out = []
        last_t, last_v = series[0]
        for t, v in series[1:]:
            if v != last_v:
                if t - last_t > STALL_S:
                    out.append({"at_s": round(last_t - t_start, 2),
                                "len_s": round(t - last_t, 2),
                                "stuck_at": last_v})
                last_t, last_v = t, v
            elif v >= count:
                break
        return out

    res = {}
    for i, name in enumerate(SINKS):
        res[name] = gaps_of([(t, c[i]) for t, c in history], expected[i])
    res["all"] = gaps_of([(t, sum(c)) for t, c in history], sum(expected))
    return res


def per_second(history, t_start, count, expected):
    """Messages/s completed at the slowest sink, per 1 s bucket. A sink
    that expects fewer requests than count (one that skips some) counts
    as count * its share done."""
    out = []
    nxt = t_start + 1.0
    prev = 0
    for t, c in history:
        if t >= nxt:
            m = min(v if e == count else
                    (count if e == 0 else v * count // e)
                    for v, e in zip(c, expected))
            out.append(m - prev)
            prev = m
            nxt += 1.0
    return out


def script_sinkd(port, script):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        body = dict(script, path="*")
        conn.request("POST", "/_sinkd/script", json.dumps(body))
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise BenchError("sinkd :%d script: HTTP %d" % (port, r.status))
    finally:
        conn.close()


def fnv1a32(text):
    h = 2166136261
    for b in text.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def rejected_count(count, every):
    """Orders sinkd's reject_every rule refuses (by Idempotency-Key, the
    order id)."""
    import gen_orders
    return sum(1 for i in range(count)
               if fnv1a32(gen_orders.order_id(i)) % every == 0)


def run_sluice(procs, bootstrap, topic, count, group,
               template="pipeline.yaml.in", expected=None, tag="",
               scripts=None, extra=None, other_pids=()):
    """One end-to-end run of `sluice run` on bench/<template>, draining the
    backlog (count messages) to four fresh sinkd until each sink has its
    expected count (SINKS order; default count each). tag names the
    variant's processes and files in the work dir. scripts: sink name ->
    a sinkd script (e.g. {"reject_every": 100}) set before sluice starts.
    extra: YAML appended to the pipeline; other_pids: processes whose CPU
    over the same window is reported apart (a marker store's server)."""
    expected = tuple(expected or (count,) * len(SINKS))
    pre = tag + "-" if tag else ""
    sinkd = [start_sinkd(procs, "sinkd-" + pre + n) for n in SINKS]
    ports = [port for _, port in sinkd]
    for name, script in (scripts or {}).items():
        script_sinkd(ports[SINKS.index(name)], script)
    stats = [SinkStats(port) for port in ports]
    try:
        before = [s.requests() for s in stats]
        if any(before):
            raise BenchError("fresh sinks already have requests: %s"
                             % before)
        path = write_pipeline(procs.workdir, bootstrap, topic, group, ports,
                              template, "bench-%spipeline.yaml" % pre,
                              extra=extra)
        p = procs.start("sluice" + ("-" + tag if tag else ""),
                        [os.path.join(BIN, "sluice"), "run", "--progress",
                         path])
        t_launch = time.monotonic()

        def alive(what):
            if p.poll() is not None:
                raise BenchError("sluice exited (status %s) %s:\n%s"
                                 % (p.returncode, what, tail(p.err)))

        # Wait for the first request at any sink; the last all-zero poll is
        # the start, the CPU read right after it the baseline.
        sink_pids = [sp.pid for sp, _ in sinkd]
        t_zero = t_launch
        cpu0 = proc_cpu_s(p.pid)
        sink_cpu0 = sum(proc_cpu_s(pid) for pid in sink_pids)
        other_cpu0 = sum(proc_cpu_s(pid) for pid in other_pids)
        store_cpu0 = thread_cpu_s(p.pid, "sluice-sqlite")
        while True:
            counts = [s.requests() for s in stats]
            now = time.monotonic()
            if any(counts):
                break
            alive("before the first request reached a sink")
            t_zero = now
            cpu0 = proc_cpu_s(p.pid)
            sink_cpu0 = sum(proc_cpu_s(pid) for pid in sink_pids)
            other_cpu0 = sum(proc_cpu_s(pid) for pid in other_pids)
            store_cpu0 = thread_cpu_s(p.pid, "sluice-sqlite")
            if now - t_launch > FIRST_REQUEST_TIMEOUT_S:
                raise BenchError(
                    "no sink got a request within %.0f s of starting sluice "
                    "(group join or fetch never completed):\n%s"
                    % (FIRST_REQUEST_TIMEOUT_S, tail(p.err)))
            time.sleep(FIRST_POLL_S)
        t_start = t_zero
        join_s = t_start - t_launch
        log("first request %.2f s after launch; draining" % join_s)

        history = [(t_start, (0,) * len(SINKS)), (now, tuple(counts))]
        rss = []
        next_rss = now
        last_progress = now
        overall_deadline = now + max(300.0, count / 200.0)

        def done(cs):
            return all(c >= e for c, e in zip(cs, expected))

        while not done(counts):
            if now >= next_rss:
                rss.append((now, proc_status_kib(p.pid, "VmRSS")))
                next_rss += RSS_EVERY_S
            time.sleep(STATS_POLL_S)
            alive("while draining (sinks at %s of %s)"
                  % (counts, list(expected)))
            new = [s.requests() for s in stats]
            now = time.monotonic()
            if new != counts:
                last_progress = now
            counts = new
            history.append((now, tuple(counts)))
            if now - last_progress > NO_PROGRESS_TIMEOUT_S:
                raise BenchError(
                    "sluice made no progress for %.0f s: sinks %s stuck at "
                    "%s of %s:\n%s" % (NO_PROGRESS_TIMEOUT_S, SINKS, counts,
                                       list(expected), tail(p.err)))
            if now > overall_deadline:
                raise BenchError("sinks at %s of %s after %.0f s"
                                 % (counts, list(expected), now - t_start))
        t_end = now
        cpu1 = proc_cpu_s(p.pid)
        hwm = proc_status_kib(p.pid, "VmHWM")
        sink_cpu1 = sum(proc_cpu_s(pid) for pid in sink_pids)
        other_cpu1 = sum(proc_cpu_s(pid) for pid in other_pids)
        store_cpu1 = thread_cpu_s(p.pid, "sluice-sqlite")
        rss.append((now, proc_status_kib(p.pid, "VmRSS")))
        rc, killed = Procs.stop(p, 45.0)
        final = [s.requests() for s in stats]
    finally:
        for s in stats:
            s.close()
        # Idle sinkd would only sit on memory during the next steps.
        for sp, _ in sinkd:
            Procs.stop(sp, 3.0)

    wall = t_end - t_start
    half = t_start + wall / 2
    rss2 = [kib for t, kib in rss if t >= half] or [rss[-1][1]]
    with open(p.err, errors="replace") as f:
        warnings = [l.rstrip() for l in f
                    if re.search(r"\b(warn|WARN|error|ERROR)\b", l)]
    return {
        "pipeline": template,
        "group": group,
        "start": "last 10 ms poll with every sink at 0 requests "
                 "(<= 10 ms before the first request)",
        "group_join_s": round(join_s, 3),
        "wall_s": round(wall, 3),
        "msgs_per_s": round(count / wall, 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_us_per_msg": round((cpu1 - cpu0) * 1e6 / count, 2),
        "cpu_cores_used": round((cpu1 - cpu0) / wall, 2),
        "sinkd_cpu_s": round(sink_cpu1 - sink_cpu0, 3),
        "other_cpu_us_per_msg": round((other_cpu1 - other_cpu0) * 1e6 /
                                      count, 2),
        "sqlite_thread_cpu_us_per_msg": round((store_cpu1 - store_cpu0) *
                                              1e6 / count, 2),
        "peak_rss_mib": round(hwm / 1024.0, 2),
        "rss_second_half_mib": [round(min(rss2) / 1024.0, 2),
                                round(max(rss2) / 1024.0, 2)],
        "rss_samples": len(rss),
        "sink_requests_expected": list(expected),
        "sink_requests_at_end": list(counts),
        "sink_requests_after_stop": final,
        "exit_status": rc,
        "killed": killed,
        "summary": read_summary(p.err),
        "stalls": find_gaps(history, expected, t_start),
        "per_second_msgs": per_second(history, t_start, count, expected),
        "log_warnings": warnings[:20],
        "log_warnings_total": len(warnings),
    }


def check_transform_run(res, count, cancelled):
    """The transform run's summary line must account for every message:
    consumed=COUNT, crm skipped exactly the cancelled orders, nothing
    failed or dropped."""
    sm = res["summary"]
    if sm is None:
        raise BenchError("sluice (transform run) printed no summary line")
    problems = []
    if sm.get("consumed") != count:
        problems.append("consumed=%s, expected %d"
                        % (sm.get("consumed"), count))
    for k in sorted(sm):
        if k == "transform_failed" or k == "dropped" or \
                k.endswith("_failed") or k.endswith("_gave_up"):
            problems.append("%s=%s" % (k, sm[k]))
    if sm.get("crm_skipped", 0) != cancelled:
        problems.append("crm_skipped=%s, expected %d (the cancelled orders)"
                        % (sm.get("crm_skipped", 0), cancelled))
    if problems:
        raise BenchError("sluice with transforms: %s\n    %s"
                         % ("; ".join(problems), sm["line"]))


# ---- the Lua stage alone ----------------------------------------------------

def run_transform_bench(workdir, name, pipeline, orders, iterations):
    argv = [os.path.join(BIN, "transform-bench"), pipeline, orders,
            "--iterations", str(iterations)]
    err = os.path.join(workdir, "transform-bench-%s.err" % name)
    timeout_s = max(120, iterations // 500)
    with open(err, "wb") as fe:
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=fe,
                               stdin=subprocess.DEVNULL, timeout=timeout_s,
                               preexec_fn=_die_with_parent)
        except subprocess.TimeoutExpired:
            raise BenchError("transform-bench (%s) did not finish within "
                             "%d s" % (name, timeout_s))
    try:
        res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError("transform-bench (%s, status %d) printed no JSON "
                         "line:\n%s" % (name, r.returncode, tail(err)))
    if r.returncode != 0 or res.get("errors") or \
            res.get("messages") != iterations:
        raise BenchError("transform-bench (%s, status %d): %d errors in %s "
                         "messages:\n%s" % (name, r.returncode,
                                           res.get("errors", 0),
                                           res.get("messages"), tail(err)))
    return res


def run_lua_stage(workdir, bootstrap, topic, iterations):
    """bin/transform-bench on (a) the example pipeline's transforms, (b) a
    transform that never touches msg.json, (c) decode + two fields."""
    import gen_orders
    orders = os.path.join(workdir, "lua-orders.jsonl")
    with open(orders, "wb") as f:
        for i in range(LUA_ORDERS):
            f.write(gen_orders.make_order(i, TENANTS) + b"\n")
    ports = [9] * len(SINKS)  # never contacted
    cases = (("example", "pipeline-transform.yaml.in", None),
             ("untouched", "pipeline.yaml.in", UNTOUCHED_LUA),
             ("decode_two_fields", "pipeline.yaml.in", TWO_FIELDS_LUA))
    paths, runs = {}, {name: [] for name, _, _ in cases}
    for name, template, script in cases:
        lua = None
        if script is not None:
            lua = os.path.join(workdir, "lua-%s.lua" % name)
            with open(lua, "w") as f:
                f.write(script)
        paths[name] = write_pipeline(workdir, bootstrap, topic, "lua-stage",
                                     ports, template, "lua-%s.yaml" % name,
                                     lua)
    # Rounds over the cases, so that a noisy moment on a shared machine
    # lands on one run of each rather than on every run of one case; each
    # case reports its median run.
    for _ in range(LUA_RUNS):
        for name, _, _ in cases:
            runs[name].append(run_transform_bench(workdir, name, paths[name],
                                                  orders, iterations))
    res = {}
    for name, _, _ in cases:
        ordered = sorted(runs[name], key=lambda r: r["cpu_us_per_msg"])
        res[name] = dict(ordered[len(ordered) // 2])
        res[name]["runs_cpu_us_per_msg"] = [r["cpu_us_per_msg"]
                                            for r in runs[name]]
        log("Lua stage (%s): %.2f CPU-us/msg (median of %s)"
            % (name, res[name]["cpu_us_per_msg"],
               ", ".join("%.2f" % r for r in res[name]["runs_cpu_us_per_msg"])))
    res["orders_in_file"] = LUA_ORDERS
    res["iterations"] = iterations
    res["runs"] = LUA_RUNS
    return res


def run_wrk(procs):
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found on PATH (apt-get install wrk)")
    _, port = start_sinkd(procs, "sinkd-wrk")
    argv = ["wrk", "-t2", "-c64", "-d5s", "-s",
            os.path.join(BENCH, "post.lua"), "http://127.0.0.1:%d/x" % port]
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30,
                           stdin=subprocess.DEVNULL,
                           preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish within 30 s")
    out = r.stdout.decode(errors="replace")
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    if r.returncode != 0 or not m:
        raise BenchError("wrk failed (status %d):\n%s" % (r.returncode, out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    return {"requests_per_s": float(m.group(1)),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errs.group(0) if errs else None,
            "msgs_per_s_at_4_posts": round(float(m.group(1)) / 4, 1)}


# ---- report ---------------------------------------------------------------

def fmt(v, spec="%.0f"):
    return "-" if v is None else spec % v


def run_lines(s, label):
    """The detail lines of one end-to-end run."""
    st = s["stalls"]
    lo, hi = s["rss_second_half_mib"]
    exp = s["sink_requests_expected"]
    lines = [
        "- %s: %.2f s draining (start = %s; group join %.1f s not "
        "counted), %.2f CPU-s (%.2f cores; the 4 sinkd %.1f CPU-s), "
        "exit status %s%s"
        % (label, s["wall_s"], s["start"], s["group_join_s"], s["cpu_s"],
           s["cpu_cores_used"], s["sinkd_cpu_s"],
           s["exit_status"], " (SIGKILLed)" if s["killed"] else ""),
        "- VmRSS over the second half: %.1f..%.1f MiB (%d samples every "
        "200 ms)" % (lo, hi, s["rss_samples"]),
        "- msgs/s per second (slowest sink): %s"
        % " ".join(str(x) for x in s["per_second_msgs"]),
        "- stalls > %d ms (all sinks): %s" % (
            STALL_S * 1000,
            ", ".join("%.1fs at t=%.2fs" % (g["len_s"], g["at_s"])
                      for g in st["all"]) or "none"),
        "- per sink stalls: %s" % ("; ".join(
            "%s %s" % (n, ", ".join("%.1fs@%.2fs" % (g["len_s"], g["at_s"])
                                   for g in st[n]))
            for n in SINKS if st[n]) or "none"),
        "- sink requests after stop: %s (expected %s)"
        % (s["sink_requests_after_stop"],
           "%d each" % exp[0] if len(set(exp)) == 1 else
           ", ".join("%s %d" % (n, e) for n, e in zip(SINKS, exp))),
    ]
    if s["summary"] is not None:
        lines.append("- sluice's `%s`" % s["summary"]["line"])
    if s["log_warnings"]:
        lines.append("- sluice log warnings/errors (%d): %s"
                     % (s["log_warnings_total"], s["log_warnings"][0]))
    return lines


def transform_lines(res):
    """sluice + transforms beside plain sluice, then the Lua stage."""
    s, t, lua = res.get("sluice"), res.get("sluice_transform"), \
        res.get("lua_stage")
    lines = []
    if t is not None:
        lines += [
            "",
            "### sluice + Lua transforms, end to end",
            "",
            "Same backlog, read again by a new consumer group; "
            "pipelines/transforms/orders.lua once per message, then "
            "billing.lua, crm.lua (skips cancelled orders) and search.lua "
            "per sink; analytics as it is.",
            "",
            "| end to end, 4 sinks | msgs/s | CPU-µs/msg | peak RSS MiB "
            "| cores used |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        if s is not None:
            lines.append("| sluice, no transform | %.0f | %.1f | %.1f | %.2f |"
                         % (s["msgs_per_s"], s["cpu_us_per_msg"],
                            s["peak_rss_mib"], s["cpu_cores_used"]))
        lines.append("| **sluice + transforms** | %.0f | %.1f | %.1f | %.2f |"
                     % (t["msgs_per_s"], t["cpu_us_per_msg"],
                        t["peak_rss_mib"], t["cpu_cores_used"]))
        tv = res.get("transform_vs_plain")
        if tv is not None:
            lines.append("| ratio (+ transforms ÷ none) | %.2fx | %.2fx | "
                         "%.2fx | %.2fx |"
                         % (tv["msgs_per_s_ratio"], tv["cpu_us_per_msg_ratio"],
                            tv["peak_rss_ratio"], tv["cores_used_ratio"]))
        lines.append("")
        if tv is not None:
            alone = ("; the Lua stage alone, (a) below: %.2f"
                     % lua["example"]["cpu_us_per_msg"]) if lua else ""
            lines.append("- the transforms cost sluice %+.1f CPU-µs/msg "
                         "end to end%s" % (tv["cpu_us_per_msg_added"], alone))
        lines += run_lines(t, "sluice + transforms")
    if lua is not None:
        a, b, c = lua["example"], lua["untouched"], lua["decode_two_fields"]
        jansson, cjson = (dict(LUA_BASELINES)[k]
                          for k in ("jansson", "lua-cjson"))
        lines += [
            "",
            "### The Lua stage alone (bin/transform-bench: %d messages over "
            "%d orders, no Kafka, no network; each case the median of %d "
            "runs)" % (lua["iterations"], lua["orders_in_file"],
                       lua.get("runs", 1)),
            "",
            "| case | CPU-µs/msg | reference | row ÷ reference |",
            "| --- | ---: | --- | --- |",
            "| (a) the example: orders.lua + billing, crm, search shapes "
            "| %.2f | target %.1f µs | %.2fx |"
            % (a["cpu_us_per_msg"], LUA_TARGET_EXAMPLE_US,
               a["cpu_us_per_msg"] / LUA_TARGET_EXAMPLE_US),
            "| (a) of which orders.lua alone (transform_run only) "
            "| %.2f | - | - |" % a["pipeline_only_us_per_msg"],
            "| (b) a transform that never touches msg.json "
            "| %.2f | target %.1f µs | %.2fx |"
            % (b["cpu_us_per_msg"], LUA_TARGET_UNTOUCHED_US,
               b["cpu_us_per_msg"] / LUA_TARGET_UNTOUCHED_US),
            "| (b) the same | %.2f | a Lua call that only handles the "
            "string, %.1f µs | %.2fx |"
            % (b["cpu_us_per_msg"], LUA_STRING_ONLY_US,
               b["cpu_us_per_msg"] / LUA_STRING_ONLY_US),
            "| (c) decode + 2 fields + encode | %.2f | jansson %.2f µs "
            "| %.2fx |" % (c["cpu_us_per_msg"], jansson,
                           c["cpu_us_per_msg"] / jansson),
            "| (c) the same | %.2f | lua-cjson %.2f µs | %.2fx |"
            % (c["cpu_us_per_msg"], cjson, c["cpu_us_per_msg"] / cjson),
            "",
            "- (a) per message: %d outputs, %d requests, %d skipped (crm, "
            "cancelled) over %d messages; Lua state %d KiB"
            % (a["outputs"], a["requests"], a["skipped"], a["messages"],
               a["lua_memory_kib"]),
            "- the runs, CPU-µs/msg: (a) %s; (b) %s; (c) %s"
            % tuple(", ".join("%.2f" % r
                              for r in x.get("runs_cpu_us_per_msg", []))
                    for x in (a, b, c)),
        ]
    return lines


def report(res):
    s, t = res.get("sluice"), res.get("sluice_transform")
    a, b = res["bare_consumer"], res["wrk"]
    ref = s if s is not None else t
    cpu, rss = ref["cpu_us_per_msg"], ref["peak_rss_mib"]

    def ratio(c, r):
        parts = []
        if c is not None:
            parts.append("CPU %.2fx" % (c / TARGET_CPU_US))
        if r is not None:
            parts.append("RSS %.2fx" % (r / TARGET_RSS_MIB))
        return ", ".join(parts) or "-"

    rows = []
    if s is not None:
        rows.append(("**sluice** end to end, 4 sinks", s["msgs_per_s"], cpu,
                     rss, ratio(cpu, rss), "1.00x"))
    if t is not None:
        tc, tr = t["cpu_us_per_msg"], t["peak_rss_mib"]
        rows.append(("**sluice + Lua transforms** end to end, 4 sinks",
                     t["msgs_per_s"], tc, tr, ratio(tc, tr),
                     "%.2fx" % (cpu / tc)))
    rows += [
        ("ceiling A: bare librdkafka consumer", a["msgs_per_s"],
         a["cpu_us_per_msg"], a["max_rss_kb"] / 1024.0,
         ratio(a["cpu_us_per_msg"], a["max_rss_kb"] / 1024.0),
         "%.2fx" % (cpu / a["cpu_us_per_msg"]) if a["cpu_us_per_msg"]
         else "-"),
        ("ceiling B: one sinkd under wrk (req/s; /4 = %.0f msgs/s)"
         % b["msgs_per_s_at_4_posts"], b["requests_per_s"], None, None,
         "-", "-"),
    ]
    for name, bc, br in BASELINES:
        rows.append(("ref: " + name, None, bc, br, ratio(bc, br),
                     "%.2fx" % (cpu / bc) +
                     (", RSS %.2fx" % (rss / br) if br else "")))
    rows.append(("target", None, TARGET_CPU_US, TARGET_RSS_MIB, "1.00x",
                 "%.2fx, RSS %.2fx" % (cpu / TARGET_CPU_US,
                                      rss / TARGET_RSS_MIB)))
    lines = [
        "## sluice benchmark: %d orders, %d partitions, broker %s (%s)"
        % (res["count"], PARTITIONS, res["broker"], res["bootstrap"]),
        "",
        "| scenario | msgs/s | CPU-µs/msg | peak RSS MiB | ratio to target "
        "| %s ÷ row (CPU) |" % ("sluice" if s is not None
                                else "sluice + transforms"),
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, mps, c, r, rt, vs in rows:
        lines.append("| %s | %s | %s | %s | %s | %s |"
                     % (name, fmt(mps), fmt(c, "%.1f"), fmt(r, "%.1f"), rt,
                        vs))
    lines.append("")
    if s is not None:
        lines += run_lines(s, "sluice")
    lines += [
        "- backlog: %d produced in %.1f s, per partition %s"
        % (res["backlog"]["produced"], res["backlog"]["produce_s"],
           res["backlog"]["per_partition"]),
        "- host: %d CPUs, loadavg before %s; %s"
        % (res["host"]["cpus"], res["host"]["loadavg_before"],
           "wrk: %d non-2xx, %s" % (b["non_2xx"], b["socket_errors"])
           if b["non_2xx"] or b["socket_errors"] else "wrk: no errors"),
    ]
    lines += failure_lines(res)
    lines += markers_lines(res)
    lines += obs_lines(res)
    lines += transform_lines(res)
    print("\n".join(lines), flush=True)


MARKER_TARGETS = {"sqlite": 6.0, "redis": 8.0}  # CPU-µs/msg added, at most


MARKER_ROUNDS = 5


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def run_markers(procs, bootstrap, topic, count, ts, which):
    """The plain case and the same with "already handled" markers: in an
    SQLite file, and in a redis-server started here (its CPU reported
    apart). MARKER_ROUNDS rounds of plain, sqlite, redis, each run a new
    group on the same backlog; each case reports its median run, so that
    a noisy moment or the order of the runs does not decide the
    comparison. Nothing is skipped on a first read: the cost is the
    lookups and marks alone."""
    rport = free_port()
    redis = procs.start("redis-server",
                        ["redis-server", "--port", str(rport), "--bind",
                         "127.0.0.1", "--save", "", "--appendonly", "no"])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket_ping(rport)
            break
        except OSError:
            if time.monotonic() > deadline or redis.poll() is not None:
                raise BenchError("redis-server did not start:\n%s"
                                 % tail(redis.err))
            time.sleep(0.05)
    runs = {"plain": [], "sqlite": [], "redis": []}
    for rnd in range(MARKER_ROUNDS):
        for name in ["plain"] + [w for w in ("sqlite", "redis")
                                 if w in which]:
            db = os.path.join(procs.workdir, "bench-markers-%d.db" % rnd)
            extra, pids = None, ()
            if name == "sqlite":
                extra = "dedupe:\n  store: sqlite\n  path: %s\n" % db
            elif name == "redis":
                extra = ("dedupe:\n  store: redis\n  address: "
                         "127.0.0.1:%d\n  key_prefix: \"r%d:\"\n"
                         % (rport, rnd))
                pids = (redis.pid,)
            log("markers round %d: %s" % (rnd + 1, name))
            tag = "mk%d-%s" % (rnd, name)
            r = run_sluice(procs, bootstrap, topic, count,
                           "bench-%s-%s-%d" % (tag, ts, os.getpid()),
                           tag=tag, extra=extra, other_pids=pids)
            summ = r["summary"] or {}
            if r["exit_status"] != 0 or summ.get("store_errors"):
                raise BenchError("the %s run exited %s: %s"
                                 % (name, r["exit_status"], summ.get("line")))
            runs[name].append(r)
    Procs.stop(redis, 5.0)
    out = {}
    for name, rs in runs.items():
        if not rs:
            continue
        out[name] = {
            "runs": len(rs),
            "msgs_per_s": median([r["msgs_per_s"] for r in rs]),
            "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in rs]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
            "store_cpu_us_per_msg": median([r["other_cpu_us_per_msg"]
                                            for r in rs]),
            "sqlite_thread_cpu_us_per_msg": median(
                [r["sqlite_thread_cpu_us_per_msg"] for r in rs]),
            "each_cpu_us_per_msg": [r["cpu_us_per_msg"] for r in rs],
            "each_msgs_per_s": [r["msgs_per_s"] for r in rs],
        }
    p = out["plain"]
    for name in ("sqlite", "redis"):
        if name in out:
            r = out[name]
            r["vs_plain"] = {
                "msgs_per_s_ratio": round(r["msgs_per_s"] / p["msgs_per_s"],
                                          3),
                "cpu_us_per_msg_added": round(r["cpu_us_per_msg"] -
                                              p["cpu_us_per_msg"], 2),
                "peak_rss_ratio": round(r["peak_rss_mib"] /
                                        p["peak_rss_mib"], 3),
            }
    return out


OBS_ROUNDS = int(os.environ.get("SLUICE_BENCH_OBS_ROUNDS", "5"))
# The targets: metrics cost <= 3% of CPU-µs/msg and <= 2 MiB of
# peak RSS; full tracing <= 15% of CPU-µs/msg.
OBS_TARGET_ADMIN_PCT = 3.0
OBS_TARGET_ADMIN_RSS_MIB = 2.0
OBS_TARGET_TRACING_PCT = 15.0
SPANS_PER_MSG = 1 + len(SINKS)  # the record's span, one per sink request


class Scraper:
    """GETs /metrics every second from a thread while a run lasts; counts
    good scrapes and failures once the server first answered."""

    def __init__(self, port):
        import threading
        self.port = port
        self.ok = self.failed = 0
        self.first_error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        seen = False
        while not self._stop.wait(1.0):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=5)
                c.request("GET", "/metrics")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status != 200 or \
                        b"sluice_records_consumed_total" not in body:
                    raise OSError("status %d" % r.status)
                seen = True
                self.ok += 1
            except ConnectionRefusedError:
                # Not up yet, or sluice stopped at the run's end (its exit
                # status is checked apart).
                pass
            except OSError as e:
                if seen:
                    self.failed += 1
                    self.first_error = self.first_error or str(e)

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def otlp_spans(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/")
    body = json.loads(c.getresponse().read())
    c.close()
    return body["spans"]


def run_obs(procs, bootstrap, topic, count, ts, which):
    """The plain case, the admin server scraped every second, and full
    tracing to a receiver of its own: OBS_ROUNDS rounds, each run a new
    group on the same backlog; medians."""
    rport = free_port()
    recorder = None
    if "tracing" in which:
        recorder = procs.start(
            "otlp-recorder",
            ["/usr/bin/python3", os.path.join(ROOT, "tests", "tools",
                                              "otlp_recorder.py"),
             "--port", str(rport), "--count-only"])
        deadline = time.monotonic() + 10
        while True:
            try:
                otlp_spans(rport)
                break
            except OSError:
                if time.monotonic() > deadline or \
                        recorder.poll() is not None:
                    raise BenchError("otlp_recorder did not start:\n%s"
                                     % tail(recorder.err))
                time.sleep(0.05)
    runs = {"plain": [], "admin": [], "tracing": []}
    scrapes = {"ok": 0, "failed": 0}
    spans = {"got": 0, "expected": 0}
    for rnd in range(OBS_ROUNDS):
        for name in ["plain"] + [w for w in ("admin", "tracing")
                                 if w in which]:
            extra, pids, scraper = None, (), None
            if name == "admin":
                aport = free_port()
                extra = "admin:\n  listen: 127.0.0.1:%d\n" % aport
                scraper = Scraper(aport)
            elif name == "tracing":
                extra = ("tracing:\n  otlp_endpoint: http://127.0.0.1:%d/"
                         "v1/traces\n  sample_ratio: 1.0\n" % rport)
                pids = (recorder.pid,)
                before = otlp_spans(rport)
            log("observability round %d: %s" % (rnd + 1, name))
            tag = "obs%d-%s" % (rnd, name)
            try:
                r = run_sluice(procs, bootstrap, topic, count,
                               "bench-%s-%s-%d" % (tag, ts, os.getpid()),
                               tag=tag, extra=extra, other_pids=pids)
            finally:
                if scraper is not None:
                    scraper.stop()
            if r["exit_status"] != 0:
                raise BenchError("the %s run exited %s: %s"
                                 % (name, r["exit_status"],
                                    (r["summary"] or {}).get("line")))
            if scraper is not None:
                if scraper.failed or not scraper.ok:
                    raise BenchError("scrapes: %d ok, %d failed (%s)"
                                     % (scraper.ok, scraper.failed,
                                        scraper.first_error))
                scrapes["ok"] += scraper.ok
            if name == "tracing":
                got = otlp_spans(rport) - before
                r["spans_received"] = got
                spans["got"] += got
                spans["expected"] += SPANS_PER_MSG * count
            runs[name].append(r)
    if recorder is not None:
        Procs.stop(recorder, 5.0)
    out = {"scrapes_ok": scrapes["ok"], "spans_received": spans["got"],
           "spans_expected": spans["expected"]}
    for name, rs in runs.items():
        if not rs:
            continue
        out[name] = {
            "runs": len(rs),
            "msgs_per_s": median([r["msgs_per_s"] for r in rs]),
            "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in rs]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
            "receiver_cpu_us_per_msg": median([r["other_cpu_us_per_msg"]
                                               for r in rs]),
            "each_cpu_us_per_msg": [r["cpu_us_per_msg"] for r in rs],
            "each_msgs_per_s": [r["msgs_per_s"] for r in rs],
            "each_peak_rss_mib": [r["peak_rss_mib"] for r in rs],
        }
    p = out["plain"]
    for name in ("admin", "tracing"):
        if name in out:
            r = out[name]
            r["vs_plain"] = {
                "cpu_us_per_msg_ratio": round(r["cpu_us_per_msg"] /
                                              p["cpu_us_per_msg"], 3),
                "cpu_added_pct": round((r["cpu_us_per_msg"] /
                                        p["cpu_us_per_msg"] - 1) * 100, 1),
                "msgs_per_s_ratio": round(r["msgs_per_s"] / p["msgs_per_s"],
                                          3),
                "peak_rss_added_mib": round(r["peak_rss_mib"] -
                                            p["peak_rss_mib"], 2),
            }
    return out


def obs_lines(res):
    """The observability cases beside the plain one, medians of rounds."""
    ob = res.get("observability")
    if not ob:
        return []
    p = ob["plain"]
    lines = ["", "### observability, same backlog, 4 sinks", "",
             "Medians of %d rounds of plain, admin (/metrics scraped every "
             "second), tracing (sample_ratio 1.0, every record a new "
             "trace). Targets: metrics add at most %.0f%% CPU-µs/msg and "
             "%.0f MiB peak RSS; full tracing at most %.0f%%."
             % (p["runs"], OBS_TARGET_ADMIN_PCT, OBS_TARGET_ADMIN_RSS_MIB,
                OBS_TARGET_TRACING_PCT), "",
             "| case | msgs/s | CPU-µs/msg | added CPU (target) | "
             "peak RSS MiB | added RSS MiB | msgs/s ÷ plain | "
             "receiver's CPU-µs/msg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
             "| plain | %.0f | %.1f | - | %.1f | - | 1.00 | - |"
             % (p["msgs_per_s"], p["cpu_us_per_msg"], p["peak_rss_mib"])]
    for name, target in (("admin", OBS_TARGET_ADMIN_PCT),
                         ("tracing", OBS_TARGET_TRACING_PCT)):
        if name not in ob:
            continue
        r, v = ob[name], ob[name]["vs_plain"]
        lines.append("| %s | %.0f | %.1f | %+.1f%% (<= %.0f%%) | %.1f | "
                     "%+.2f%s | %.2f | %s |"
                     % (name, r["msgs_per_s"], r["cpu_us_per_msg"],
                        v["cpu_added_pct"], target, r["peak_rss_mib"],
                        v["peak_rss_added_mib"],
                        " (<= %.0f)" % OBS_TARGET_ADMIN_RSS_MIB
                        if name == "admin" else "",
                        v["msgs_per_s_ratio"],
                        "%.1f" % r["receiver_cpu_us_per_msg"]
                        if name == "tracing" else "-"))
    lines.append("")
    for name in ("plain", "admin", "tracing"):
        if name in ob:
            lines.append("- %s, each run: CPU-µs/msg %s, msgs/s %s, "
                         "peak RSS MiB %s"
                         % (name, ob[name]["each_cpu_us_per_msg"],
                            [round(x) for x in ob[name]["each_msgs_per_s"]],
                            ob[name]["each_peak_rss_mib"]))
    if "admin" in ob:
        lines.append("- scrapes of /metrics, all answered 200: %d"
                     % ob["scrapes_ok"])
    if "tracing" in ob:
        lines.append("- spans at the receiver: %d of %d (%d per message)"
                     % (ob["spans_received"], ob["spans_expected"],
                        SPANS_PER_MSG))
    return lines


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def socket_ping(port):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        if not s.recv(16).startswith(b"+PONG"):
            raise OSError("no PONG")


def markers_lines(res):
    """The marker cases beside the plain one, medians of the same rounds."""
    mk = res.get("markers")
    if not mk:
        return []
    p = mk["plain"]
    lines = ["", "### markers (dedupe.store), same backlog, 4 sinks", "",
             "Medians of %d rounds of plain, sqlite, redis (each run a new "
             "group). Targets: SQLite adds at most 6 CPU-µs/msg, Redis 8 "
             "(sluice's own CPU; redis-server's apart), and throughput "
             "stays at least 80%% of plain." % p["runs"], "",
             "| case | msgs/s | CPU-µs/msg | added CPU-µs/msg (target) | "
             "store's own CPU-µs/msg | peak RSS MiB | msgs/s ÷ plain |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
             "| plain (no markers) | %.0f | %.1f | - | - | %.1f | 1.00 |"
             % (p["msgs_per_s"], p["cpu_us_per_msg"], p["peak_rss_mib"])]
    for name in ("sqlite", "redis"):
        if name not in mk:
            continue
        r, v = mk[name], mk[name]["vs_plain"]
        lines.append("| %s | %.0f | %.1f | %+.1f (<= %.0f) | %s | %.1f | "
                     "%.2f |"
                     % (name, r["msgs_per_s"], r["cpu_us_per_msg"],
                        v["cpu_us_per_msg_added"], MARKER_TARGETS[name],
                        "%.1f (redis-server)" % r["store_cpu_us_per_msg"]
                        if name == "redis" else
                        "%.1f (its thread, in sluice's)"
                        % r["sqlite_thread_cpu_us_per_msg"],
                        r["peak_rss_mib"], v["msgs_per_s_ratio"]))
    lines.append("")
    for name in ("plain", "sqlite", "redis"):
        if name in mk:
            lines.append("- %s, each run: CPU-µs/msg %s, msgs/s %s"
                         % (name, mk[name]["each_cpu_us_per_msg"],
                            [round(x) for x in mk[name]["each_msgs_per_s"]]))
    return lines


def failure_lines(res):
    """The 1%-failure run beside the failure-free one of the same run."""
    s, f, v = res.get("sluice"), res.get("sluice_fail1"), \
        res.get("fail1_vs_plain")
    if s is None or f is None:
        return []
    return [
        "",
        "### 1% of the orders answered 400 by billing (to the DLQ)",
        "",
        "Same backlog, new group, four fresh sinkd; billing refuses %d "
        "orders for good, which go to the dead-letter topic. Targets: the "
        "failure-free path costs no more than before, this one keeps at "
        "least 90%% of its throughput." % f["rejected"],
        "",
        "| end to end, 4 sinks | msgs/s | CPU-µs/msg | peak RSS MiB |",
        "| --- | ---: | ---: | ---: |",
        "| sluice, no failures | %.0f | %.1f | %.1f |"
        % (s["msgs_per_s"], s["cpu_us_per_msg"], s["peak_rss_mib"]),
        "| **sluice, 1%% dead-lettered** | %.0f | %.1f | %.1f |"
        % (f["msgs_per_s"], f["cpu_us_per_msg"], f["peak_rss_mib"]),
        "| ratio (1%% ÷ none) | %.2fx | %.2fx | %.2fx |"
        % (v["msgs_per_s_ratio"], v["cpu_us_per_msg_ratio"],
           v["peak_rss_ratio"]),
        "",
        "- sluice's `%s`" % f["summary"]["line"],
    ]


KAFKA_SH = os.path.join(ROOT, "tests", "kafka", "kafka.sh")


def start_real_kafka(directory):
    """Starts the project's test broker (Apache Kafka, KRaft) in directory
    and returns its bootstrap address."""
    p = subprocess.run([KAFKA_SH, "start", directory], capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        raise BenchError("tests/kafka/kafka.sh start failed:\n" + p.stderr)
    return p.stdout.strip().splitlines()[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Benchmark sluice draining a backlog of orders to four "
                    "HTTP sinks.")
    ap.add_argument("--count", type=int, default=200000,
                    help="orders in the backlog (default 200000; the mock "
                         "keeps ~5 MiB per partition, ~450k in all)")
    ap.add_argument("--broker", choices=("mock", "kafka"), default="mock",
                    help="mock: bin/kafka-mock (default); kafka: the "
                         "cluster in $KAFKA_BOOTSTRAP, else a real Apache "
                         "Kafka started with tests/kafka/kafka.sh")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir (logs, pipeline file)")
    tg = ap.add_mutually_exclusive_group()
    tg.add_argument("--no-transform", action="store_true",
                    help="skip the Lua transform variant (end to end and "
                         "the Lua stage alone)")
    tg.add_argument("--only-transform", action="store_true",
                    help="skip the plain (no transform) sluice run")
    ap.add_argument("--lua-iterations", type=int, default=200000,
                    help="messages per case of the Lua stage alone "
                         "(bin/transform-bench; default 200000)")
    ap.add_argument("--obs", default="admin,tracing",
                    help="observability cases beside the plain run: a "
                         "comma list of admin, tracing, or none "
                         "(default admin,tracing)")
    ap.add_argument("--markers", default="sqlite,redis",
                    help="marker store cases beside the plain run: a "
                         "comma list of sqlite, redis, or none "
                         "(default sqlite,redis)")
    args = ap.parse_args(argv)
    args.markers = args.markers.split(",")
    if any(m not in ("sqlite", "redis", "none") for m in args.markers):
        ap.error("--markers: sqlite, redis or none")
    args.obs = args.obs.split(",")
    if any(m not in ("admin", "tracing", "none") for m in args.obs):
        ap.error("--obs: admin, tracing or none")
    if args.count < 1:
        ap.error("--count must be >= 1")
    if args.lua_iterations < 1:
        ap.error("--lua-iterations must be >= 1")
    if args.broker == "mock" and args.count > 400000:
        log("warning: %d orders may exceed the mock's ~5 MiB per partition; "
            "the watermark check will tell" % args.count)
    tools = ["sluice", "sinkd", "kafka-mock", "bare-consumer"]
    if not args.no_transform:
        tools.append("transform-bench")
    for tool in tools:
        if not os.access(os.path.join(BIN, tool), os.X_OK):
            print("bench: %s/%s missing: run `make` first" % (BIN, tool),
                  file=sys.stderr)
            return 2

    # Ctrl-C and SIGTERM both unwind through the finally that stops every
    # child (SIGINT explicitly: a background job may inherit it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = tempfile.mkdtemp(prefix="sluice-bench-")
    procs = Procs(workdir)
    ts = time.strftime("%Y%m%d-%H%M%S")
    topic = "orders"
    bootstrap = None
    kafka_dir = None
    failed = False
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        if args.broker == "mock":
            bootstrap = start_mock(procs)
        else:
            bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
            if not bootstrap:
                kafka_dir = os.path.join(workdir, "kafka")
                bootstrap = start_real_kafka(kafka_dir)
            topic = "sluice-bench-%s-%d" % (ts, os.getpid())
            create_kafka_topic(bootstrap, topic)
        log("broker %s at %s, topic %s; producing %d orders"
            % (args.broker, bootstrap, topic, args.count))
        backlog = produce_backlog(bootstrap, topic, args.count)
        log("backlog ready (%.1f s); ceiling A: bare-consumer"
            % backlog["produce_s"])
        bare = run_bare_consumer(bootstrap, topic, args.count, workdir)
        log("bare-consumer: %.0f msgs/s" % bare["msgs_per_s"])
        sl = tr = lua = tv = fl = fv = mk = ob = None
        if not args.only_transform:
            log("sluice")
            sl = run_sluice(procs, bootstrap, topic, args.count,
                            "bench-%s-%d" % (ts, os.getpid()))
            log("sluice: %.0f msgs/s" % sl["msgs_per_s"])
            rejected = rejected_count(args.count, REJECT_EVERY)
            log("sluice, billing rejects 1%% (%d orders) for good"
                % rejected)
            fl = run_sluice(procs, bootstrap, topic, args.count,
                            "bench-fail1-%s-%d" % (ts, os.getpid()),
                            tag="fail1",
                            scripts={"billing":
                                     {"reject_every": REJECT_EVERY}})
            got = (fl["summary"] or {}).get("billing_dead_lettered")
            if got != rejected or fl["exit_status"] != 0:
                raise BenchError(
                    "the 1%% failure run dead-lettered %s of %d and exited "
                    "%s: %s" % (got, rejected, fl["exit_status"],
                                (fl["summary"] or {}).get("line")))
            fl["rejected"] = rejected
            fv = {
                "msgs_per_s_ratio": round(fl["msgs_per_s"] /
                                          sl["msgs_per_s"], 3),
                "cpu_us_per_msg_ratio": round(fl["cpu_us_per_msg"] /
                                              sl["cpu_us_per_msg"], 3),
                "peak_rss_ratio": round(fl["peak_rss_mib"] /
                                        sl["peak_rss_mib"], 3),
            }
            log("sluice with 1%% failures: %.0f msgs/s" % fl["msgs_per_s"])
            if args.markers != ["none"]:
                mk = run_markers(procs, bootstrap, topic, args.count, ts,
                                 args.markers)
            if args.obs != ["none"]:
                ob = run_obs(procs, bootstrap, topic, args.count, ts,
                             args.obs)
        if not args.no_transform:
            expected, cancelled = expected_requests(args.count)
            log("sluice + transforms (new group; crm expects %d: %d "
                "cancelled)" % (expected[SINKS.index("crm")], cancelled))
            tr = run_sluice(procs, bootstrap, topic, args.count,
                            "bench-transform-%s-%d" % (ts, os.getpid()),
                            "pipeline-transform.yaml.in", expected,
                            "transform")
            tr["cancelled_orders"] = cancelled
            check_transform_run(tr, args.count, cancelled)
            log("sluice + transforms: %.0f msgs/s" % tr["msgs_per_s"])
            if sl is not None:
                tv = {
                    "msgs_per_s_ratio":
                        round(tr["msgs_per_s"] / sl["msgs_per_s"], 3),
                    "cpu_us_per_msg_ratio":
                        round(tr["cpu_us_per_msg"] / sl["cpu_us_per_msg"],
                              3),
                    "cpu_us_per_msg_added":
                        round(tr["cpu_us_per_msg"] - sl["cpu_us_per_msg"],
                              2),
                    "peak_rss_ratio":
                        round(tr["peak_rss_mib"] / sl["peak_rss_mib"], 3),
                    "cores_used_ratio":
                        round(tr["cpu_cores_used"] / sl["cpu_cores_used"],
                              3),
                }
        log("ceiling B: wrk")
        wrk = run_wrk(procs)
        if not args.no_transform:
            log("the Lua stage alone: transform-bench")
            lua = run_lua_stage(workdir, bootstrap, topic,
                                args.lua_iterations)
            a, b, c = (lua["example"], lua["untouched"],
                       lua["decode_two_fields"])
            lua["vs_reference"] = {
                "example_vs_target": round(
                    a["cpu_us_per_msg"] / LUA_TARGET_EXAMPLE_US, 3),
                "untouched_vs_target": round(
                    b["cpu_us_per_msg"] / LUA_TARGET_UNTOUCHED_US, 3),
                "untouched_vs_string_only": round(
                    b["cpu_us_per_msg"] / LUA_STRING_ONLY_US, 3),
            }
            for name, us in LUA_BASELINES:
                lua["vs_reference"]["decode_two_fields_vs_" +
                                    name.replace("-", "_")] = round(
                    c["cpu_us_per_msg"] / us, 3)
        res = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "count": args.count, "broker": args.broker,
            "bootstrap": bootstrap, "topic": topic,
            "host": {"cpus": os.cpu_count(), "loadavg_before": load},
            "backlog": backlog, "bare_consumer": bare, "sluice": sl,
            "sluice_transform": tr, "transform_vs_plain": tv,
            "sluice_fail1": fl, "fail1_vs_plain": fv, "markers": mk,
            "observability": ob,
            "lua_stage": lua, "wrk": wrk,
            "reference": {"target_cpu_us_per_msg": TARGET_CPU_US,
                          "target_peak_rss_mib": TARGET_RSS_MIB,
                          "baselines": [{"name": n, "cpu_us_per_msg": c,
                                         "peak_rss_mib": r}
                                        for n, c, r in BASELINES],
                          "lua_target_example_us": LUA_TARGET_EXAMPLE_US,
                          "lua_target_untouched_us":
                              LUA_TARGET_UNTOUCHED_US,
                          "lua_string_only_us": LUA_STRING_ONLY_US,
                          "lua_decode_two_fields_baselines": [
                              {"name": n, "cpu_us_per_msg": us}
                              for n, us in LUA_BASELINES]},
        }
        os.makedirs(RESULTS, exist_ok=True)
        out = os.path.join(RESULTS, "latest.json")
        with open(out + ".tmp", "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
        os.replace(out + ".tmp", out)
        report(res)
        log("results written to %s" % os.path.relpath(out, ROOT))
        return 0
    except BenchError as e:
        failed = True
        print("bench: FAILED: %s" % e, file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if args.broker == "kafka" and bootstrap and not args.keep:
            delete_kafka_topic(bootstrap, topic)
        if kafka_dir is not None:
            subprocess.run([KAFKA_SH, "stop", kafka_dir],
                           stdout=subprocess.DEVNULL)
        if args.keep or failed:
            log("work dir (logs, pipeline file) kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
