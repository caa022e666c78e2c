#!/usr/bin/python3
"""chaos.py -- sluice's chaos suite: the example pipeline under faults.

Runs pipelines/orders-fanout.yaml (its transforms, retry policy and four
sinks, each pointed at its own sinkd) on a real Kafka broker
(tests/kafka/kafka.sh) under continuous load from gen_orders, while one
fault is applied again and again:

  kill9     kill -9 the worker 20 times, restarting it after each
  rolling   three workers, SIGTERM + restart one at a time, 10 times
  broker    the broker restarted mid-stream (kafka.sh restart)
  sinkdown  the crm sink stopped for 30 s (connection refused), then back
  flaky     billing and search answer random 503 / 429 (Retry-After) /
            late answers beyond the sink's timeout / TCP resets
  hang      the search sink accepts requests and never answers, 30 s

Then the load stops, the workers get a bounded time to drain (until every
sink has every message or the timeout), and the result is checked BY
DEDUPE KEY AT EVERY SINK (the Idempotency-Key header, i.e. the order id):

  missing     a message acknowledged by the broker that a sink should have
              (crm skips cancelled orders by design: crm.lua) but neither
              answered with a prompt 2xx nor holds in the pipeline's DLQ
              topic for that sink (or for `*`)
  duplicates  2xx answers beyond the first, per key and sink, summed over
              the sinks; compared with the bound the architecture gives
              (docs/chaos.md): per kill -9 / broker restart, at most the
              uncommitted messages, i.e. delivery.max_in_flight per sink,
              plus one per late answer sinkd injected

Exit status 1 when any scenario has a missing message, duplicates above
the bound, a worker that failed to stop cleanly or commits that never
reached the end; 2 for bad usage. The last line printed is the table.

Usage: chaos.py [--only kill9,rolling,...] [--rate MSGS_PER_S]
                [--workdir DIR] [--keep]
Binaries come from $SLUICE_BIN_DIR (default <repo>/bin), as for the
integration suite, whose harness this reuses.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import yaml  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

import harness  # noqa: E402
import gen_orders  # noqa: E402  (harness put tests/tools on sys.path)

EXAMPLE = os.path.join(REPO, "pipelines", "orders-fanout.yaml")
PARTITIONS = 8
SINKS = ("billing", "crm", "search", "analytics")
URL_ENV = {"billing": "BILLING_URL", "crm": "CRM_URL",
           "search": "SEARCH_URL", "analytics": "ANALYTICS_URL"}
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
              "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")
# The producer rides out a broker restart and never writes a message
# twice (a duplicate in the topic would look like sluice's duplicate).
# log_level 2: the expected "connection refused" while the broker
# restarts would otherwise fill the output.
PRODUCER = {"enable.idempotence": True, "message.timeout.ms": 300000,
            "log_level": 2}


def log(fmt, *args):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), fmt % args), flush=True)


# ---- what each sink should get -------------------------------------------

def expected_keys(indices):
    """sink -> set of dedupe keys it must end up with (delivered or in
    the DLQ). orders.lua drops orders with "test": true (gen_orders makes
    none) and crm.lua skips cancelled orders for crm alone."""
    every = set()
    crm = set()
    for i in indices:
        key = gen_orders.order_id(i)
        every.add(key)
        if json.loads(gen_orders.make_order(i))["status"] != "cancelled":
            crm.add(key)
    return {s: (crm if s == "crm" else every) for s in SINKS}


class SinkView:
    """What one sinkd recorded, read incrementally from its record file:
    per dedupe key, the prompt 2xx answers (delivered) and every 2xx
    answer including late ones (the sink did the work: a duplicate if it
    happens twice)."""

    def __init__(self, sinkd):
        self.sinkd = sinkd
        self.pos = 0
        self.delivered = set()
        self.effects = collections.Counter()
        self.faults = collections.Counter()
        self.requests = 0
        self.no_key = 0

    def refresh(self):
        try:
            self.sinkd.flush()
        except Exception:  # stopped: its file was flushed when it stopped
            pass
        try:
            f = open(self.sinkd.record_path, "rb")
        except OSError:
            return
        with f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.pos += end + 1
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            r = harness.Request(json.loads(line))
            self.requests += 1
            fault = r.raw.get("fault")
            if fault:
                self.faults[fault] += 1
            if r.key is None:
                self.no_key += 1
                continue
            if 200 <= r.status <= 299:
                self.effects[r.key] += 1
                if not fault:
                    self.delivered.add(r.key)


class DlqView:
    """The pipeline's DLQ topic, read from the start: (sink, dedupe key)
    pairs (sink `*` for the pipeline transform's failures)."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.pairs = set()
        self.records = 0
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "chaos-dlq-%s" % uuid.uuid4().hex[:8],
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        })
        self.assigned = False

    def refresh(self):
        if not self.assigned:
            md = self.consumer.list_topics(self.topic, timeout=10)
            t = md.topics.get(self.topic)
            if t is None or t.error is not None or not t.partitions:
                return
            self.consumer.assign([TopicPartition(self.topic, p, -2)
                                  for p in t.partitions])
            self.assigned = True
        while True:
            msgs = self.consumer.consume(1000, timeout=1.0)
            if not msgs:
                return
            for m in msgs:
                if m.error() is not None:
                    continue
                h = {k: (v.decode() if v is not None else "")
                     for k, v in (m.headers() or [])}
                self.records += 1
                self.pairs.add((h.get("sluice.sink", "?"),
                                h.get("sluice.dedupe.key", "?")))

    def has(self, sink, key):
        return (sink, key) in self.pairs or ("*", key) in self.pairs

    def close(self):
        self.consumer.close()


# ---- one scenario's world --------------------------------------------------

class Run:
    """A scenario's topic, sinks, pipeline copy, producer and workers."""

    def __init__(self, name, env, rate):
        self.name, self.env, self.rate = name, env, rate
        self.dir = os.path.join(env.workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        tag = uuid.uuid4().hex[:6]
        self.topic = "chaos-%s-%s" % (name, tag)
        self.pipeline = "orders-fanout-%s-%s" % (name, tag)
        self.group = "chaos-%s-%s" % (name, tag)
        self.events = 0          # kills and lost assignments: dup budget
        self.notes = []
        self.failures = []       # anything besides missing / dups
        self.workers = {}
        self.all_workers = []
        self.sinks = {}
        self.producer = None
        env.kafka.create_topic(self.topic, PARTITIONS)
        for s in SINKS:
            self.sinks[s] = harness.Sinkd(s, self.dir)
        self.views = {s: SinkView(k) for s, k in self.sinks.items()}
        self.config = self._write_config()
        self.max_in_flight = self.cfg["delivery"]["max_in_flight"]

    def _write_config(self):
        """The example pipeline, unchanged but for its name, its topic and
        absolute script paths (the copy lives elsewhere); brokers, group
        and sink URLs come through the ${ENV} variables it already has."""
        with open(EXAMPLE) as f:
            cfg = yaml.safe_load(f)
        base = os.path.dirname(EXAMPLE)
        cfg["pipeline"] = self.pipeline
        cfg["source"]["topics"] = [self.topic]
        if "transform" in cfg:
            cfg["transform"] = os.path.join(base, cfg["transform"])
        for spec in cfg["sinks"].values():
            for k in ("transform", "retry"):
                if k in spec:
                    spec[k] = os.path.join(base, spec[k])
        self.cfg = cfg
        return harness.write_yaml(os.path.join(self.dir, "pipeline.yaml"),
                                  cfg)

    def worker_env(self):
        e = dict(os.environ)
        for k in PROXY_VARS:
            e.pop(k, None)
        e["KAFKA_BROKERS"] = self.env.kafka.bootstrap
        e["GROUP"] = self.group
        for s, var in URL_ENV.items():
            e[var] = self.sinks[s].url()
        return e

    def start_worker(self, slot):
        n = len(self.all_workers) + 1
        w = harness.Sluice("sluice-%d-%s" % (n, slot), self.dir, self.config,
                           ["--progress"], self.worker_env())
        self.workers[slot] = w
        self.all_workers.append(w)
        return w

    def wait_consuming(self, w, timeout=60):
        """Until the worker has consumed something (it joined the group
        and got partitions), or timeout: a note, not a failure."""
        try:
            harness.wait_until(lambda: any(c > 0 for c, _, _ in w.progress()),
                               timeout, "%s to consume" % w.name, alive=[w],
                               interval=0.2)
            return True
        except AssertionError as e:
            if w.proc.poll() is not None:
                raise
            self.notes.append("%s consumed nothing in %ss" % (w.name,
                                                             timeout))
            log("%s", str(e).splitlines()[0])
            return False

    def stop_worker(self, slot, timeout=60):
        """SIGTERM, wait; a worker that does not stop, or exits with
        anything but 0, is a failure of the scenario."""
        w = self.workers.pop(slot)
        w.terminate()
        try:
            rc = w.proc.wait(timeout)
        except Exception:
            self.failures.append("%s did not stop within %ss of SIGTERM "
                                 "(killed; log %s)" % (w.name, timeout,
                                                       w.stderr_path))
            w.kill()
            self.events += 1
            return None
        if rc != 0:
            self.failures.append("%s exited %d after SIGTERM (log %s)"
                                 % (w.name, rc, w.stderr_path))
        return rc

    def kill_worker(self, slot):
        w = self.workers.pop(slot)
        w.kill()
        self.events += 1

    def start_load(self):
        self.producer = harness.OrderProducer(
            self.env.kafka.bootstrap, self.topic, self.rate, config=PRODUCER)
        self.t0 = time.monotonic()

    def stop_load(self):
        self.producer.stop()
        produced = self.producer.join(360)
        if self.producer.failed:
            self.notes.append("%d orders failed to produce (not expected)"
                              % len(self.producer.failed))
        log("%s: load stopped: %d produced, %d acked", self.name, produced,
            len(self.producer.acked))

    # ---- the end of a scenario -------------------------------------------

    def missing(self, expected, dlq):
        out = {}
        for s in SINKS:
            v = self.views[s]
            out[s] = [k for k in expected[s]
                      if k not in v.delivered and not dlq.has(s, k)]
        return out

    def drain_and_check(self, drain_timeout):
        expected = expected_keys(self.producer.acked)
        dlq = DlqView(self.env.kafka.bootstrap, self.pipeline + ".dlq")
        t = time.monotonic()
        deadline = t + drain_timeout
        while True:
            for v in self.views.values():
                v.refresh()
            dlq.refresh()
            miss = self.missing(expected, dlq)
            left = sum(len(m) for m in miss.values())
            if left == 0 or time.monotonic() >= deadline:
                break
            for slot, w in list(self.workers.items()):
                if w.proc.poll() is not None:
                    self.failures.append("%s exited %s during the drain"
                                         % (w.name, w.proc.returncode))
                    del self.workers[slot]
            time.sleep(1.0)
        if left:
            log("%s: %d still missing after the %ds drain", self.name,
                left, drain_timeout)
        else:
            log("%s: every sink complete %.1fs after the load stopped",
                self.name, time.monotonic() - t)
        # Stop the workers: a clean exit commits everything delivered.
        for slot in list(self.workers):
            self.stop_worker(slot)
        for v in self.views.values():
            v.refresh()
        dlq.refresh()
        miss = self.missing(expected, dlq)
        dlq.close()
        self.check_commits()
        return expected, miss, dlq

    def check_commits(self):
        reader = harness.OffsetReader(self.env.kafka.bootstrap, self.group)
        try:
            ends = reader.end_offsets(self.topic, PARTITIONS)
            committed = reader.committed(self.topic, PARTITIONS)
            if not harness.commits_reached_end(committed, ends):
                self.failures.append("group %s committed %s, end offsets %s"
                                     % (self.group, committed, ends))
        finally:
            reader.close()

    def close(self):
        if self.producer is not None and not self.producer.done:
            self.producer.stop()
        for w in self.all_workers:
            w.close()
        for s in self.sinks.values():
            s.stop()


def report(run, expected, miss, dlq, wall):
    """Prints the details of one scenario; returns its table row."""
    messages = len(run.producer.acked)
    missing = sum(len(m) for m in miss.values())
    dups = {s: sum(n - 1 for n in run.views[s].effects.values() if n > 1)
            for s in SINKS}
    late = {s: run.views[s].faults.get("timeout", 0) for s in SINKS}
    bound = sum(run.events * run.max_in_flight + late[s] for s in SINKS)
    total_dups = sum(dups.values())
    log("%s: %d messages, %d workers started, %d kill/lost events%s",
        run.name, messages, len(run.all_workers), run.events,
        ", %.0f duplicates per sink and event (bound %d)"
        % ((total_dups - sum(late.values())) / len(SINKS) / run.events,
           run.max_in_flight) if run.events else "")
    for s in SINKS:
        v = run.views[s]
        log("  %-9s expected %6d  delivered %6d  dlq %5d  missing %5d  "
            "dups %5d  requests %6d  faults %s", s, len(expected[s]),
            len(v.delivered & expected[s]),
            sum(1 for k in expected[s] if dlq.has(s, k)), len(miss[s]),
            dups[s], v.requests, dict(v.faults) or "-")
        if miss[s]:
            log("    missing at %s, e.g. %s", s, sorted(miss[s])[:10])
        if v.no_key:
            log("    %d requests without Idempotency-Key", v.no_key)
    unexpected = run.views["crm"].effects.keys() - expected["crm"]
    unexpected = {k for k in unexpected if k in expected["billing"]}
    if unexpected:
        run.failures.append("crm got %d cancelled orders (crm.lua skips "
                            "them), e.g. %s" % (len(unexpected),
                                                sorted(unexpected)[:5]))
    for n in run.notes:
        log("  note: %s", n)
    for f in run.failures:
        log("  FAILURE: %s", f)
    over = total_dups > bound
    ok = missing == 0 and not over and not run.failures
    if missing:
        for w in run.all_workers:
            log("  log of %s: %s", w.name, w.stderr_path)
    return {"scenario": run.name, "messages": messages, "missing": missing,
            "dups": total_dups, "bound": bound, "over": over,
            "wall": wall, "ok": ok, "failures": len(run.failures)}


# ---- the scenarios ---------------------------------------------------------

def scenario_kill9(run):
    run.start_load()
    run.start_worker("w")
    rng = random.Random(20)   # the same kill times every run
    for i in range(20):
        w = run.workers["w"]
        run.wait_consuming(w)
        time.sleep(rng.uniform(0.5, 3.0))
        log("kill9: kill -9 #%d (%s)", i + 1, w.name)
        run.kill_worker("w")
        run.start_worker("w")
    run.wait_consuming(run.workers["w"])
    time.sleep(3)
    return 120


def scenario_rolling(run):
    for slot in ("a", "b", "c"):
        run.start_worker(slot)
    run.start_load()
    for w in list(run.workers.values()):
        run.wait_consuming(w)
    time.sleep(3)
    for i in range(10):
        slot = "abc"[i % 3]
        log("rolling: restart #%d (%s)", i + 1, run.workers[slot].name)
        run.stop_worker(slot)      # scale in
        time.sleep(2)
        run.start_worker(slot)     # scale out
        time.sleep(4)
    time.sleep(3)
    return 120


def scenario_broker(run):
    run.start_worker("w")
    run.start_load()
    run.wait_consuming(run.workers["w"])
    time.sleep(15)
    log("broker: kafka.sh restart")
    t = time.monotonic()
    run.env.broker.restart()
    log("broker: back after %.1fs", time.monotonic() - t)
    # A restart may cost the worker its assignment: budget one event.
    run.events += 1
    time.sleep(20)
    return 180


def scenario_sinkdown(run):
    run.start_worker("w")
    run.start_load()
    run.wait_consuming(run.workers["w"])
    time.sleep(10)
    crm = run.sinks["crm"]
    port = crm.port
    log("sinkdown: crm (port %d) stopped for 30s", port)
    crm.stop()
    time.sleep(30)
    run.sinks["crm"] = harness.Sinkd("crm", run.dir, port=port)
    run.views["crm"].sinkd = run.sinks["crm"]
    log("sinkdown: crm back")
    time.sleep(10)
    # Retries back off up to retry_backoff_max (30s in the example).
    return 150


def scenario_flaky(run):
    chaos = {"503": 10, "429": 5, "timeout": 3, "reset": 5,
             "timeout_ms": 12000}
    run.sinks["billing"].script(chaos=dict(chaos, seed=11))  # timeout 5s
    run.sinks["search"].script(chaos=dict(chaos, seed=12))   # timeout 10s
    run.start_worker("w")
    run.start_load()
    run.wait_consuming(run.workers["w"])
    time.sleep(45)
    log("flaky: billing and search answer normally again")
    run.sinks["billing"].script()
    run.sinks["search"].script()
    return 150


def scenario_hang(run):
    run.start_worker("w")
    run.start_load()
    run.wait_consuming(run.workers["w"])
    time.sleep(10)
    log("hang: search accepts and never answers for 30s")
    run.sinks["search"].script(hang=True)
    time.sleep(30)
    run.sinks["search"].script()
    log("hang: search answers again")
    time.sleep(10)
    return 150


SCENARIOS = collections.OrderedDict([
    ("kill9", scenario_kill9),
    ("rolling", scenario_rolling),
    ("broker", scenario_broker),
    ("sinkdown", scenario_sinkdown),
    ("flaky", scenario_flaky),
    ("hang", scenario_hang),
])


class Env:
    def __init__(self, workdir):
        self.workdir = workdir
        self.broker = harness.KafkaBroker(os.path.join(workdir, "broker"))
        os.makedirs(self.broker.dir, exist_ok=True)
        self.kafka = None

    def start(self):
        t = time.monotonic()
        bootstrap = self.broker.start()
        self.kafka = harness.RealKafka(bootstrap, broker=self.broker)
        self.kafka.warm_up()
        log("broker %s up in %.1fs", bootstrap, time.monotonic() - t)

    def close(self):
        try:
            if self.kafka is not None:
                self.kafka.close()
        finally:
            self.broker.close()


def run_one(env, name, rate):
    t0 = time.monotonic()
    log("=== %s", name)
    run = Run(name, env, rate)
    try:
        try:
            drain = SCENARIOS[name](run)
        finally:
            if run.producer is not None:
                run.stop_load()
        expected, miss, dlq = run.drain_and_check(drain)
        return report(run, expected, miss, dlq, time.monotonic() - t0)
    except Exception:
        traceback.print_exc()
        for w in run.all_workers:
            log("  log of %s: %s", w.name, w.stderr_path)
        return {"scenario": name, "messages": len(run.producer.acked)
                if run.producer else 0, "missing": None, "dups": None,
                "bound": None, "over": False,
                "wall": time.monotonic() - t0, "ok": False, "failures": 1}
    finally:
        run.close()


def table(rows):
    """One line: scenario -> messages, missing, duplicates (bound), wall."""
    cells = []
    for r in rows:
        if r["missing"] is None:
            cells.append("%s: ERROR (%.0fs)" % (r["scenario"], r["wall"]))
            continue
        cells.append("%s: %d msgs, %d missing, %d dups (bound %d%s), %.0fs%s"
                     % (r["scenario"], r["messages"], r["missing"], r["dups"],
                        r["bound"], ", OVER" if r["over"] else "", r["wall"],
                        "" if r["ok"] else " FAIL"))
    return "chaos | " + " | ".join(cells)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="",
                    help="comma-separated scenarios (default: all of %s)"
                    % ",".join(SCENARIOS))
    ap.add_argument("--rate", type=float, default=150,
                    help="orders produced per second (default 150)")
    ap.add_argument("--workdir", help="keep logs and records here "
                    "(default: a temporary directory, removed on success)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory even on success")
    args = ap.parse_args(argv)
    names = [n for n in args.only.replace(" ", ",").split(",") if n] \
        or list(SCENARIOS)
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        ap.error("unknown scenario(s) %s; known: %s"
                 % (", ".join(bad), ", ".join(SCENARIOS)))
    if args.rate <= 0:
        ap.error("--rate must be > 0")

    workdir = args.workdir or tempfile.mkdtemp(prefix="sluice-chaos-")
    os.makedirs(workdir, exist_ok=True)
    log("chaos: %s at %.0f orders/s, workdir %s", ",".join(names), args.rate,
        workdir)
    # SIGTERM (e.g. make interrupted) tears down like Ctrl-C: no broker
    # or worker left behind.
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(
        KeyboardInterrupt("SIGTERM")))
    env = Env(workdir)
    rows = []
    try:
        env.start()
        for n in names:
            rows.append(run_one(env, n, args.rate))
    finally:
        env.close()
    ok = bool(rows) and all(r["ok"] for r in rows)
    if ok and not args.workdir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        log("logs and sink records kept in %s", workdir)
    print(table(rows), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
