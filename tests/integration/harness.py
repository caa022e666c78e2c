"""harness.py -- process wrappers and helpers for sluice's integration suite.

Everything here is plain Python + confluent_kafka; conftest.py turns it
into fixtures. Binaries come from $SLUICE_BIN_DIR (default <repo>/bin), so
`make asan` can point the suite at sanitizer builds.
"""

import collections
import functools
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN_DIR = os.environ.get("SLUICE_BIN_DIR") or os.path.join(REPO, "bin")
TOOLS_DIR = os.path.join(REPO, "tests", "tools")
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)

import gen_orders  # noqa: E402  (needs the sys.path entry above)

SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|runtime error:")
PROGRESS_RE = re.compile(r"^progress consumed=(\d+) in_flight=(\d+)(.*)$")
SUMMARY_RE = re.compile(r"summary consumed=(\d+) in_flight=(\d+)(.*)$", re.M)

# librdkafka's "no committed offset" value (RD_KAFKA_OFFSET_INVALID).
OFFSET_INVALID = -1001


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s not found or not executable (build it with "
                           "`make bin/%s`, or set SLUICE_BIN_DIR)"
                           % (path, name))
    return path


# ---- waiting ------------------------------------------------------------

def wait_until(predicate, timeout, what="condition", interval=0.1,
               alive=(), details=None):
    """Poll predicate() until it returns something truthy; return that.

    Raises AssertionError after timeout seconds, naming `what` and adding
    details() (if given) to the message. Every process in `alive` must
    keep running meanwhile: if one exits, fail at once with its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        for p in alive:
            p.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = "timed out after %.0fs waiting for %s" % (timeout, what)
            if details is not None:
                msg += "\n" + str(details())
            for p in alive:
                msg += "\n" + p.describe()
            raise AssertionError(msg)
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on (bound, then freed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tail(text, lines=80):
    parts = text.splitlines()
    if len(parts) > lines:
        parts = ["... (%d lines before)" % (len(parts) - lines)] + \
            parts[-lines:]
    return "\n".join(parts)


# ---- Redis (marker store) ----------------------------------------------

class RedisServer:
    """A redis-server of the test's own on a free loopback port (Debian's
    redis-server, installed by scripts/install-deps.sh). stop() and
    start() keep the port, so a worker pointed at it sees an outage."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout, "redis-server on %s" % self.address)

    def ping(self):
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def command(self, *args):
        """One command; the reply's first line without its type byte."""
        with socket.create_connection(("127.0.0.1", self.port), 2) as c:
            req = "*%d\r\n" % len(args) + "".join(
                "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)
            c.sendall(req.encode())
            return c.recv(65536).split(b"\r\n", 1)[0][1:].decode()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# ---- Kafka --------------------------------------------------------------

class MockKafka:
    """One bin/kafka-mock process (librdkafka's mock cluster); topics are
    created per test. Only for what a real broker cannot do: injected
    request errors (`error APIKEY ERRCODE [COUNT]`, `clear APIKEY`),
    broker round-trip delays and down/up (`broker rtt|down|up ...`), see
    tests/tools/kafka-mock.c. Same `.bootstrap` and
    `.create_topic(name, partitions)` as RealKafka.
    """

    def __init__(self, workdir):
        self.log_path = os.path.join(workdir, "kafka-mock.stderr")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary("kafka-mock")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._lines = queue.Queue()
        self._lock = threading.Lock()
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        try:
            first = self._next_line(30)
            if not first.startswith("bootstrap="):
                raise RuntimeError("kafka-mock said %r" % first)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.bootstrap = first.split("=", 1)[1].strip()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next_line(self, timeout):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("kafka-mock did not answer in %ss" % timeout)
        if line is None:
            raise RuntimeError("kafka-mock exited (rc %s): %s"
                               % (self.proc.poll(), open(self.log_path).read()))
        return line

    def command(self, line, timeout=30):
        """Sends one stdin command, returns the answer (`ok` or raises)."""
        with self._lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self._next_line(timeout)
        if answer != "ok":
            raise RuntimeError("kafka-mock `%s`: %s" % (line, answer))
        return answer

    def create_topic(self, name, partitions):
        self.command("topic create %s %d" % (name, partitions))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


KAFKA_SH = os.path.join(REPO, "tests", "kafka", "kafka.sh")


class KafkaBroker:
    """One real Apache Kafka broker managed by tests/kafka/kafka.sh in its
    own directory (its ports, cluster id and data live there, so stop /
    start / restart come back on the same address with the same data).

    start() returns the bootstrap address; close() stops the broker (if
    running) and removes its data, keeping DIR/broker.log."""

    def __init__(self, workdir):
        self.dir = workdir
        self.log_path = os.path.join(workdir, "broker.log")
        self.bootstrap = None

    def _run(self, command, timeout):
        try:
            p = subprocess.run([KAFKA_SH, command, self.dir],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError("kafka.sh %s %s: no answer in %ss\n%s"
                               % (command, self.dir, timeout, self.log_tail()))
        if p.returncode != 0:
            raise RuntimeError("kafka.sh %s %s exited %d:\n%s"
                               % (command, self.dir, p.returncode, p.stderr))
        return p.stdout.strip()

    def start(self, timeout=120):
        out = self._run("start", timeout)
        if not re.match(r"^[\w.-]+:\d+$", out):
            raise RuntimeError("kafka.sh start printed %r" % out)
        if self.bootstrap is not None and out != self.bootstrap:
            raise RuntimeError("broker came back on %s, not %s"
                               % (out, self.bootstrap))
        self.bootstrap = out
        return out

    def stop(self, timeout=60):
        self._run("stop", timeout)

    def restart(self, timeout=180):
        out = self._run("restart", timeout)
        if out != self.bootstrap:
            raise RuntimeError("broker restarted on %s, not %s"
                               % (out, self.bootstrap))
        return out

    def running(self):
        p = subprocess.run([KAFKA_SH, "status", self.dir],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=60)
        return p.returncode == 0

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return tail(f.read(), lines)
        except OSError:
            return "(no %s)" % self.log_path

    def close(self):
        try:
            self.stop()
        finally:
            subprocess.run(["rm", "-rf", os.path.join(self.dir, "data")],
                           timeout=60)


class RealKafka:
    """A real Apache Kafka cluster: the session's own KafkaBroker (broker
    given), or an existing cluster at $KAFKA_BOOTSTRAP (broker None).

    Offers what the suite relies on: `.bootstrap` and
    `.create_topic(name, partitions)`, which creates the topic with the
    AdminClient (replication factor 1, or min(3, brokers)) and returns
    once the metadata shows every partition with a leader. kafka-mock's
    fault commands are not here: tests that need them use the mock_kafka
    fixture."""

    def __init__(self, bootstrap, broker=None):
        self.bootstrap = bootstrap
        self.broker = broker
        self.created = []
        self.admin = AdminClient({"bootstrap.servers": bootstrap,
                                  "log_level": 3})
        md = self.admin.list_topics(timeout=30)
        if not md.brokers:
            raise RuntimeError("no broker in the metadata of %s" % bootstrap)
        self.replication = min(3, len(md.brokers))

    def create_topic(self, name, partitions, timeout=30):
        fs = self.admin.create_topics(
            [NewTopic(name, partitions, self.replication)],
            operation_timeout=timeout)
        fs[name].result(timeout)
        self.created.append(name)
        self.wait_topic(name, partitions, timeout)

    def wait_topic(self, name, partitions, timeout=30):
        def ready():
            md = self.admin.list_topics(name, timeout=5)
            t = md.topics.get(name)
            if t is None or t.error is not None or \
                    len(t.partitions) != partitions:
                return False
            return all(p.error is None and p.leader >= 0
                       for p in t.partitions.values())
        wait_until(ready, timeout, "topic %s with %d partition(s) and "
                   "their leaders in the metadata" % (name, partitions),
                   interval=0.05)

    def warm_up(self, timeout=60):
        """The first group operation makes the broker create
        __consumer_offsets: done once here, not in the first test."""
        reader = OffsetReader(self.bootstrap, "warm-up-%d" % os.getpid())
        try:
            t = "warm-up-%d" % os.getpid()
            self.create_topic(t, 1)
            wait_until(lambda: _try(reader.committed, t, 1, timeout=10),
                       timeout, "the group coordinator")
        finally:
            reader.close()

    def close(self):
        """Drops the AdminClient (before its broker stops: no connection
        errors on stderr); on someone else's cluster also deletes the
        topics the suite created."""
        admin, self.admin = self.admin, None
        if admin is None:
            return
        if self.broker is None and self.created:
            # Someone else's cluster: remove what the suite created.
            try:
                fs = admin.delete_topics(self.created, operation_timeout=30)
                for f in fs.values():
                    f.result(60)
            except Exception:  # best effort
                pass


def _try(fn, *args, **kw):
    try:
        fn(*args, **kw)
        return True
    except Exception:
        return False


def produce_orders(bootstrap, topic, count, **kw):
    return gen_orders.produce(bootstrap, topic, count, **kw)


class OrderProducer:
    """Produces gen_orders orders start, start+1, ... in a background
    thread at `rate` messages/s, `count` of them or (count None) until
    stop(). Every delivery report is counted: .acked holds the indices
    the broker acknowledged, .failed (index, error) pairs. `config`
    extends gen_orders.PRODUCER_CONFIG (e.g. a long message.timeout.ms to
    ride out a broker outage).

    join(timeout) waits for the end of production and for every delivery
    report, re-raises what the thread raised, and returns the number of
    orders produced."""

    def __init__(self, bootstrap, topic, rate, count=None, start=0,
                 tenants=50, config=None):
        self.topic, self.rate, self.count = topic, rate, count
        self.start, self.tenants = start, tenants
        self.acked = set()
        self.failed = []
        self.produced = 0
        self.error = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        conf = dict(gen_orders.PRODUCER_CONFIG)
        conf.update({"bootstrap.servers": bootstrap, "log_level": 3,
                     "linger.ms": 20})
        conf.update(config or {})
        self._conf = conf
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_delivery(self, i, err, msg):
        with self._lock:
            if err is None:
                self.acked.add(i)
            else:
                self.failed.append((i, err))

    def _run(self):
        try:
            from confluent_kafka import Producer
            p = Producer(self._conf)
            t0 = time.monotonic()
            n = 0
            while not self._stop.is_set() and \
                    (self.count is None or n < self.count):
                ahead = t0 + n / self.rate - time.monotonic()
                if ahead > 0:
                    p.poll(min(ahead, 0.05))
                    continue
                i = self.start + n
                while True:
                    try:
                        p.produce(self.topic,
                                  gen_orders.make_order(i, self.tenants),
                                  gen_orders.tenant_id(i, self.tenants),
                                  headers=[("message-id",
                                            gen_orders.order_id(i).encode())],
                                  on_delivery=functools.partial(
                                      self._on_delivery, i))
                        break
                    except BufferError:
                        p.poll(0.1)
                n += 1
                self.produced = n
                p.poll(0)
            p.flush(300)
        except BaseException as e:  # re-raised by join()
            self.error = e

    def stop(self):
        self._stop.set()

    @property
    def done(self):
        return not self.thread.is_alive()

    def join(self, timeout):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("the producer did not finish in %ss "
                                 "(%d produced, %d acked)"
                                 % (timeout, self.produced, len(self.acked)))
        if self.error is not None:
            raise self.error
        return self.produced


class OffsetReader:
    """Reads a group's committed offsets (OffsetFetch, never joins the
    group) and a topic's end offsets."""

    def __init__(self, bootstrap, group):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "log_level": 3,
        })

    def committed(self, topic, partitions, timeout=20):
        """List of committed offsets by partition; -1 where none."""
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        got = self.consumer.committed(tps, timeout=timeout)
        out = [-1] * partitions
        for tp in got:
            if tp.error is not None:
                raise RuntimeError("committed(%s [%d]): %s"
                                   % (topic, tp.partition, tp.error))
            out[tp.partition] = tp.offset if tp.offset >= 0 else -1
        return out

    def end_offsets(self, topic, partitions, timeout=20):
        return [self.consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=timeout)[1]
            for p in range(partitions)]

    def close(self):
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


def commits_reached_end(committed, ends):
    """committed == end on every partition (an empty partition may have
    no commit at all)."""
    return all(c == e or (e == 0 and c == -1)
               for c, e in zip(committed, ends))


def wait_commits_at_end(reader, topic, partitions, alive=(), timeout=30,
                        ends=None):
    """Waits until reader's group has committed the end offsets `ends`
    (read now when not given) on every partition; returns them."""
    if ends is None:
        ends = reader.end_offsets(topic, partitions)
    wait_until(lambda: commits_reached_end(
        reader.committed(topic, partitions), ends), timeout,
        "commits to reach the end offsets %s" % (ends,), alive=alive,
        details=lambda: reader.committed(topic, partitions))
    return ends


# ---- sinkd --------------------------------------------------------------

class Request:
    """One recorded request of a sinkd record file."""

    __slots__ = ("ts_ms", "method", "path", "headers", "body", "status",
                 "raw")

    def __init__(self, obj):
        self.raw = obj
        self.ts_ms = obj["ts_ms"]
        self.method = obj["method"]
        self.path = obj["path"]
        self.headers = {k.lower(): v for k, v in obj["headers"].items()}
        self.body = obj.get("body")
        self.status = obj["status"]

    @property
    def key(self):
        return self.headers.get("idempotency-key")

    @property
    def partition(self):
        return int(self.headers["kafka-partition"])

    @property
    def offset(self):
        return int(self.headers["kafka-offset"])

    def __repr__(self):
        return "<%s %s %s p%s@%s -> %s>" % (
            self.method, self.path, self.key,
            self.headers.get("kafka-partition"),
            self.headers.get("kafka-offset"), self.status)


def sinkd_rejects(key, every):
    """True when sinkd's `reject_every` rule answers a request with this
    Idempotency-Key with its reject status: 32-bit FNV-1a of the key's
    bytes, modulo every, is 0."""
    if not every:
        return False
    h = 2166136261
    for b in key.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % every == 0


class Sinkd:
    def __init__(self, name, workdir, port=0):
        self.name = name
        self.record_path = os.path.join(workdir, "sinkd-%s.ndjson" % name)
        self.log_path = os.path.join(workdir, "sinkd-%s.stderr" % name)
        port_file = os.path.join(workdir, "sinkd-%s.port" % name)
        if os.path.exists(port_file):
            os.unlink(port_file)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary("sinkd"), "--port", str(port), "--record",
             self.record_path, "--port-file", port_file],
            stdout=subprocess.DEVNULL, stderr=self._log)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("sinkd %s exited: %s"
                                   % (name, open(self.log_path).read()))
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                return int(text) if text else None
            except (OSError, ValueError):
                return None
        try:
            self.port = wait_until(ready, 15, "sinkd %s to listen" % name)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            raise
        self.base = "http://127.0.0.1:%d" % self.port

    def url(self, path=None):
        return self.base + (path if path is not None else "/" + self.name)

    def _call(self, method, endpoint, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(self.base + "/_sinkd/" + endpoint,
                                     data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError("sinkd %s %s: HTTP %d %s"
                               % (self.name, endpoint, e.code, e.read()))
        return json.loads(body) if body else None

    def script(self, path="*", **kw):
        kw["path"] = path
        self._call("POST", "script", kw)

    def flush(self):
        self._call("POST", "flush", {})

    def reset(self):
        self._call("POST", "reset", {})

    def stats(self):
        return self._call("GET", "stats")

    def ok_count(self):
        return self.stats()["by_status"].get("200", 0)

    def records(self):
        """Every request so far, in the order sinkd decided its answer."""
        self.flush()
        out = []
        with open(self.record_path) as f:
            for line in f:
                if line.strip():
                    out.append(Request(json.loads(line)))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ---- sluice -------------------------------------------------------------

def pipeline(name, bootstrap, topic, group, sinks, **delivery):
    """A pipeline dict with the suite's defaults (fast commits, retries
    and session timeouts). sinks: name -> url or name -> sink dict."""
    d = {
        "commit_interval": "200ms",
        "retry_backoff": "200ms",
        "retry_backoff_max": "1s",
        "drain_timeout": "20s",
    }
    d.update(delivery)
    out_sinks = {}
    for sname, spec in sinks.items():
        if isinstance(spec, str):
            spec = {"url": spec}
        spec = dict(spec)
        spec.setdefault("type", "http")
        out_sinks[sname] = spec
    props = {
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "500",
    }
    # e.g. SLUICE_IT_KAFKA_DEBUG=cgrp: librdkafka's group protocol debug
    # log in each sluice's stderr (attached to a failing test's report).
    if os.environ.get("SLUICE_IT_KAFKA_DEBUG"):
        props["debug"] = os.environ["SLUICE_IT_KAFKA_DEBUG"]
    return {
        "pipeline": name,
        "source": {
            "brokers": bootstrap,
            "topics": [topic],
            "group": group,
            "start": "earliest",
            "properties": props,
        },
        "delivery": d,
        "sinks": out_sinks,
    }


def parse_counters(rest):
    out = {}
    for tok in rest.split():
        k, _, v = tok.partition("=")
        if v.isdigit():
            out[k] = int(v)
    return out


class Sluice:
    """One `sluice run` process; stderr goes to a file."""

    def __init__(self, name, workdir, config_path, args, env):
        self.name = name
        self.config_path = config_path
        self.stderr_path = os.path.join(workdir, "%s.stderr" % name)
        self.stdout_path = os.path.join(workdir, "%s.stdout" % name)
        self._err = open(self.stderr_path, "w")
        self._out = open(self.stdout_path, "w")
        self.cmd = [binary("sluice"), "run"] + list(args) + [config_path]
        self.proc = subprocess.Popen(self.cmd, stdout=self._out,
                                     stderr=self._err, env=env)
        self.pid = self.proc.pid
        self.killed = False

    def log(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def describe(self):
        rc = self.proc.poll()
        return "--- %s (pid %d, %s) stderr:\n%s" % (
            self.name, self.pid,
            "running" if rc is None else "exit %s" % rc, tail(self.log()))

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited unexpectedly with %s\n%s"
                                 % (self.name, self.proc.returncode,
                                    self.describe()))

    def wait_for_log(self, pattern, timeout=30):
        rx = re.compile(pattern, re.M)

        def found():
            m = rx.search(self.log())
            if m is None and self.proc.poll() is not None:
                raise AssertionError("%s exited before logging /%s/\n%s"
                                     % (self.name, pattern, self.describe()))
            return m
        return wait_until(found, timeout, "/%s/ in %s's log"
                          % (pattern, self.name), details=self.describe)

    def progress(self):
        """Every `progress ...` line so far as (consumed, in_flight,
        {sink: delivered, sink_failed: n})."""
        out = []
        for line in self.log().splitlines():
            m = PROGRESS_RE.match(line)
            if m:
                out.append((int(m.group(1)), int(m.group(2)),
                            parse_counters(m.group(3))))
        return out

    def summary(self):
        m = None
        for m in SUMMARY_RE.finditer(self.log()):
            pass
        if m is None:
            return None
        return (int(m.group(1)), int(m.group(2)), parse_counters(m.group(3)))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def terminate(self):
        self.signal(signal.SIGTERM)

    def kill(self):
        self.killed = True
        self.proc.kill()
        self.proc.wait()

    def wait(self, timeout):
        """Waits for exit; returns the exit code. Fails on a timeout or on
        sanitizer reports in stderr."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit within %ss\n%s"
                                 % (self.name, timeout, self.describe()))
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        bad = [l for l in self.log().splitlines() if SANITIZER_RE.search(l)]
        assert not bad, "%s: sanitizer report in stderr:\n%s\n%s" % (
            self.name, "\n".join(bad[:20]), self.describe())

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        self._err.close()
        self._out.close()


def sluice_cmd(args, env=None, timeout=30):
    """Runs `sluice ARGS` to its end (validate, test, help, ...) and
    returns the CompletedProcess; env entries extend the environment, those
    set to None are removed from it. Fails on sanitizer reports."""
    full_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    p = subprocess.run([binary("sluice")] + list(args), capture_output=True,
                       text=True, env=full_env, timeout=timeout)
    bad = [l for l in p.stderr.splitlines() if SANITIZER_RE.search(l)]
    assert not bad, "sanitizer report:\n" + p.stderr
    return p


# Forks sluice from a small interpreter and writes its exit status and
# peak RSS to the file named by argv[1]. Linux carries the RSS high-water
# mark of the image a process replaces across exec, and a child forked (or
# vforked) by pytest starts as a copy of pytest: measured directly, ru_maxrss
# read the test runner's own ~250 MiB, not sluice's. Forked from this
# launcher, sluice's count starts at the launcher's ~10 MiB.
_MEASURE_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%d %d" % (os.waitstatus_to_exitcode(status), usage.ru_maxrss))
"""


def run_measured(args, timeout, env=None):
    """Runs `sluice ARGS` to its end: (returncode, stdout, stderr, seconds,
    peak RSS in KiB of sluice alone). env as in sluice_cmd. Fails the test
    after timeout seconds, and on sanitizer reports."""
    full_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result")
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        with open(out, "w") as o, open(err, "w") as e:
            p = subprocess.Popen(
                ["/usr/bin/python3", "-c", _MEASURE_LAUNCHER, result,
                 binary("sluice")] + list(args),
                stdout=o, stderr=e, env=full_env, start_new_session=True)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise AssertionError("sluice %s still running after %d s"
                                     % (args, timeout))
        elapsed = time.monotonic() - start
        with open(result) as f:
            rc, peak_kib = (int(x) for x in f.read().split())
        with open(out) as f:
            stdout = f.read()
        with open(err) as f:
            stderr = f.read()
    bad = [l for l in stderr.splitlines() if SANITIZER_RE.search(l)]
    assert not bad, "sanitizer report:\n" + stderr
    return rc, stdout, stderr, elapsed, peak_kib


def write_yaml(path, obj):
    with open(path, "w") as f:
        if isinstance(obj, str):
            f.write(obj)
        else:
            yaml.safe_dump(obj, f, default_flow_style=False, sort_keys=False)
    return path


# ---- checks on what the sinks received ----------------------------------

def ok_records(records):
    return [r for r in records if r.status == 200]


def wait_sinks_ok(sinks, count, timeout, alive=()):
    """Waits until every sink has answered 200 at least count times."""
    wait_until(lambda: all(s.ok_count() >= count for s in sinks), timeout,
               "every sink to answer 200 to %d requests" % count,
               alive=alive, details=lambda: {s.name: s.stats() for s in sinks})


def expected_orders(count, tenants=50, seed=1, start=0):
    """order_id -> (index, key, body) for orders start..start+count-1."""
    return {gen_orders.order_id(i): (i, gen_orders.tenant_id(i, tenants),
                                     gen_orders.make_order(i, tenants,
                                                           seed=seed))
            for i in range(start, start + count)}


def id_counts(records):
    return collections.Counter(r.key for r in records)


def describe_counter_diff(got, want_ids, limit=10):
    missing = [k for k in want_ids if got.get(k, 0) == 0]
    dups = [(k, n) for k, n in got.items() if n > 1]
    extra = [k for k in got if k not in want_ids]
    return ("missing %d (e.g. %s), duplicated %d (e.g. %s), unexpected %d "
            "(e.g. %s)" % (len(missing), missing[:limit], len(dups),
                           dups[:limit], len(extra), extra[:limit]))


def delivered_offsets(records):
    """partition -> set of offsets with a 200 answer."""
    out = collections.defaultdict(set)
    for r in records:
        if r.status == 200:
            out[r.partition].add(r.offset)
    return out


def lowest_undelivered(delivered, partitions, ends):
    """Per partition, the lowest offset below end without a 200 (end when
    every offset has one)."""
    out = []
    for p in range(partitions):
        done = delivered.get(p, set())
        o = 0
        while o < ends[p] and o in done:
            o += 1
        out.append(o)
    return out
