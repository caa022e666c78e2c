#!/usr/bin/env python3
"""chaos -- the example pipeline under faults, on a real Kafka broker.

Each scenario runs pipelines/orders-fanout.yaml (its transforms, retry
policy and four sinks, pointed at sinkd instances) under a steady stream
of orders while something goes wrong, then stops the stream, lets the
workers drain, and checks BY DEDUPE KEY AT EVERY SINK that every order the
broker acknowledged reached every sink that should have it (the crm skips
cancelled orders by design: they are not expected there). Duplicates
(an order answered 200 more than once) are allowed -- at least once --
and reported against their bound.

    tests/chaos/chaos.py [--only NAME[,NAME]] [--rate N] [--workdir DIR]

Exit status 1 if anything is missing (or a scenario broke). The last line
printed is the table: scenario, orders, missing, duplicates (bound), wall
time. `make chaos` runs it; `make chaos CHAOS=kill9` one scenario.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests", "tools"))

import gen_orders  # noqa: E402
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

PIPELINE = os.path.join(REPO, "pipelines", "orders-fanout.yaml")
SINKS = ("billing", "crm", "search", "analytics")
PARTITIONS = 8
MAX_IN_FLIGHT = 10000  # the example's delivery.max_in_flight
DRAIN_TIMEOUT = 240    # s for every sink to have every order at the end


def log(fmt, *args):
    print("chaos: " + (fmt % args if args else fmt), flush=True)


def expected_keys(indices):
    """sink -> the order ids it must get: every order, but crm not the
    cancelled ones (its transform skips them)."""
    every = {gen_orders.order_id(i) for i in indices}
    crm = {gen_orders.order_id(i) for i in indices
           if json.loads(gen_orders.make_order(i))["status"] != "cancelled"}
    return {s: (crm if s == "crm" else every) for s in SINKS}


class Hang:
    """A listener that accepts connections and never answers."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)  # read nothing, answer nothing
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self._stop = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


class Run:
    """One scenario: a topic, four sinks, workers of the example pipeline,
    and the stream of orders."""

    def __init__(self, suite, name, rate):
        self.suite, self.name, self.rate = suite, name, rate
        self.dir = os.path.join(suite.workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.topic = "chaos-%s-%d" % (name, int(time.time()))
        self.group = "chaos-%s-%d" % (name, int(time.time()))
        suite.cluster.create_topic(self.topic, PARTITIONS)
        self.sinks = {s: harness.Sinkd(s, self.dir) for s in SINKS}
        self.retired = []  # sinkd instances replaced mid-run
        self.ports = {s: self.sinks[s].port for s in SINKS}
        self.workers = []
        self.started = 0
        self.events = 0  # kills, restarts, outages: for the bound
        self.stream = None

    def env(self):
        e = dict(os.environ)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                  "all_proxy", "ALL_PROXY"):
            e.pop(k, None)
        e.update({
            "KAFKA_BROKERS": self.suite.broker.bootstrap,
            "GROUP": self.group,
            "ORDERS_TOPIC": self.topic,
            "RETRY_BACKOFF_MAX": "2s",
        })
        for s in SINKS:
            e["%s_URL" % s.upper()] = "http://127.0.0.1:%d/%s" % (
                self.ports[s], s)
        return e

    def start_worker(self):
        self.started += 1
        w = harness.Sluice("sluice-%d" % self.started, self.dir, PIPELINE,
                           ("--progress",), self.env())
        self.workers.append(w)
        return w

    def alive(self):
        return [w for w in self.workers if w.proc.poll() is None]

    def start_stream(self, seconds):
        self.stream = harness.OrderProducer(
            self.suite.broker.bootstrap, self.topic, self.rate,
            count=int(self.rate * seconds),
            config={"message.timeout.ms": 300000,
                    "enable.idempotence": True})

    def records(self, sink):
        out = list(self.sinks[sink].records())
        for name, sd in self.retired:
            if name == sink:
                out.extend(sd.records())
        return out

    def finish(self):
        """Waits for the stream and for every sink to have every order;
        returns (orders, missing, duplicates, sinks' detail)."""
        produced = self.stream.join(600)
        if self.stream.failed:
            raise RuntimeError("the producer gave up on %d order(s)"
                               % len(self.stream.failed))
        want = expected_keys(sorted(self.stream.acked))

        def have_all():
            if not self.alive():
                self.start_worker()  # a scenario may end with none
            for s in SINKS:
                ok = {r.key for r in self.records(s) if r.status == 200}
                if not want[s] <= ok:
                    return False
            return True
        try:
            wait_until(have_all, DRAIN_TIMEOUT, "every sink to have every "
                       "order", interval=1.0)
        except AssertionError as e:
            log("%s: %s", self.name, str(e).splitlines()[0])
        missing = dups = 0
        detail = {}
        for s in SINKS:
            counts = collections.Counter(
                r.key for r in self.records(s) if r.status == 200)
            miss = want[s] - set(counts)
            dup = sum(n - 1 for k, n in counts.items() if n > 1)
            missing += len(miss)
            dups += dup
            detail[s] = (len(miss), dup, sorted(miss)[:5])
        return produced, missing, dups, detail

    def close(self):
        for w in self.workers:
            if w.proc.poll() is None:
                w.terminate()
        for w in self.workers:
            try:
                w.proc.wait(60)
            except Exception:
                w.kill()
            w.close()
        for sd in list(self.sinks.values()) + [sd for _, sd in self.retired]:
            sd.stop()


# ---- scenarios ---------------------------------------------------------

def kill9(run):
    """kill -9 the worker 20 times under load, restarting it each time."""
    run.start_worker()
    run.start_stream(60)
    time.sleep(5)
    for i in range(20):
        time.sleep(random.uniform(1.0, 3.0))
        for w in run.alive():
            w.kill()
        run.events += 1
        run.start_worker()


def rolling(run):
    """Three workers; 10 rolling restarts (SIGTERM one, the group runs
    with two for a moment, start it again)."""
    for _ in range(3):
        run.start_worker()
    run.start_stream(70)
    time.sleep(8)
    for i in range(10):
        victim = run.alive()[0]
        victim.terminate()
        victim.proc.wait(90)
        run.events += 1
        time.sleep(2)  # scaled in
        run.start_worker()  # and out again
        time.sleep(3)


def broker_restart(run):
    """The broker is restarted mid-stream."""
    run.start_worker()
    run.start_stream(40)
    time.sleep(12)
    run.suite.broker.restart()
    run.suite.reconnect()
    run.events += 1


def sink_down(run):
    """The crm is down (connection refused) for 30 s, then back on the
    same port."""
    run.start_worker()
    run.start_stream(50)
    time.sleep(8)
    port = run.ports["crm"]
    old = run.sinks["crm"]
    old.stop()
    run.retired.append(("crm", old))
    run.events += 1
    time.sleep(30)
    run.sinks["crm"] = harness.Sinkd("crm-back", run.dir, port=port)


def flaky_sink(run):
    """The search sink answers a third of its requests with 503, 429,
    a dropped connection or a 200 after its timeout."""
    run.start_worker()
    run.sinks["search"].script(path="*", chaos_percent=33,
                               chaos_delay_ms=12000)
    run.start_stream(45)
    time.sleep(45)
    run.sinks["search"].script(path="*")  # healthy for the drain
    run.events += 1


def hung_sink(run):
    """The analytics sink accepts connections and never answers, for 30 s;
    then a real sink takes its port back."""
    run.start_worker()
    port = run.ports["analytics"]
    old = run.sinks["analytics"]
    old.stop()
    run.retired.append(("analytics", old))
    hang = Hang(port)
    run.start_stream(45)
    time.sleep(30)
    hang.close()
    run.events += 1
    run.sinks["analytics"] = harness.Sinkd("analytics-back", run.dir,
                                           port=port)


SCENARIOS = collections.OrderedDict([
    ("kill9", kill9),
    ("rolling", rolling),
    ("broker_restart", broker_restart),
    ("sink_down", sink_down),
    ("flaky_sink", flaky_sink),
    ("hung_sink", hung_sink),
])


class Suite:
    def __init__(self, workdir):
        self.workdir = workdir
        self.broker = harness.KafkaBroker(os.path.join(workdir, "kafka"))
        self.broker.start()
        self.cluster = harness.RealKafka(self.broker.bootstrap,
                                         broker=self.broker)

    def reconnect(self):
        self.cluster.close()
        self.cluster = harness.RealKafka(self.broker.bootstrap,
                                         broker=self.broker)

    def close(self):
        self.cluster.close()
        self.broker.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            sys.exit("chaos: unknown scenario %s (have: %s)"
                     % (n, ", ".join(SCENARIOS)))
    workdir = args.workdir or tempfile.mkdtemp(prefix="sluice-chaos-")
    log("work directory %s", workdir)
    suite = Suite(workdir)
    rows, bad = [], 0
    try:
        for n in names:
            t0 = time.monotonic()
            run = Run(suite, n, args.rate)
            log("%s: %s", n, SCENARIOS[n].__doc__.split("\n")[0])
            try:
                SCENARIOS[n](run)
                orders, missing, dups, detail = run.finish()
                # Per event, a sink can get again what was in flight
                # (max_in_flight) and what was done but not yet committed
                # (one commit interval, 1 s, of the stream).
                bound = len(SINKS) * max(run.events, 1) * (
                    MAX_IN_FLIGHT + args.rate)
                rows.append((n, orders, missing, dups, bound,
                             time.monotonic() - t0, ""))
                for s, (m, d, eg) in detail.items():
                    if m or d:
                        log("%s: %s missing %d %s, duplicates %d", n, s, m,
                            eg, d)
                bad += missing > 0 or dups > bound
            except Exception as e:
                traceback.print_exc()
                rows.append((n, 0, -1, -1, 0, time.monotonic() - t0,
                             "broke: %s" % str(e).splitlines()[0][:60]))
                bad += 1
            finally:
                run.close()
    finally:
        suite.close()
    head = "%-15s %8s %8s %20s %8s" % ("scenario", "orders", "missing",
                                      "duplicates (bound)", "wall s")
    lines = [head]
    for n, orders, missing, dups, bound, wall, note in rows:
        lines.append("%-15s %8d %8d %20s %8.0f %s" % (
            n, orders, missing, "%d (%d)" % (dups, bound), wall, note))
    if bad == 0 and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    print("chaos: %s | %s" % ("PASS" if bad == 0 else "FAIL",
                              " | ".join(l.strip() for l in lines[1:])),
          flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
