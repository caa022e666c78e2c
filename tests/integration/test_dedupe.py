"""Idempotent effects: dedupe keys, "already handled" markers in a store,
and what a sink's 409 means (docs/dedupe.md)."""

import collections
import os
import signal
import subprocess
import sqlite3
import time

import pytest

import harness
from harness import wait_until


def with_markers(cfg, path, **dedupe):
    d = {"store": "sqlite", "path": str(path)}
    d.update(dedupe)
    cfg["dedupe"] = d
    return cfg


def key_counts(records):
    """Requests a sink answered 2xx or 409, by Idempotency-Key."""
    return collections.Counter(
        r.key for r in records if 200 <= r.status < 300 or r.status == 409)


def consumed(run):
    lines = run.progress()
    return lines[-1][0] if lines else 0


def summary_now(run):
    """The counters of the last progress line."""
    lines = run.progress()
    return lines[-1][2] if lines else {}


def summary(run):
    s = run.summary()
    assert s is not None, run.describe()
    return s[2]


def markers(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return collections.Counter(
            sink for (sink,) in
            db.execute("SELECT sink FROM sluice_marker_sinks"))
    finally:
        db.close()


def test_409_is_already_applied_counted_marked_never_retried(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    count = 600
    topic = topic_factory(2)
    harness.produce_orders(kafka.bootstrap, topic, count)
    a, b = sinkd("a"), sinkd("b")
    b.script(reject_every=5, reject_status=409)
    db = tmp_path / "markers.db"
    cfg = with_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, names.group(),
        {"a": a.url(), "b": b.url()}), db)
    run = sluice(cfg)
    harness.wait_sinks_ok([a], count, 60, alive=[run])
    wait_until(lambda: sum(key_counts(b.records()).values()) >= count, 60,
               "b to answer every message", alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    counters = summary(run)
    conflicts = sum(1 for r in b.records() if r.status == 409)
    assert conflicts > 0
    assert counters["b"] == count
    assert counters.get("b_applied") == conflicts
    for k in ("b_failed", "b_dead_lettered", "b_gave_up"):
        assert k not in counters, counters
    assert len(b.records()) == count, "a 409 was sent again"
    assert markers(db) == {"a": count, "b": count}

    # A second group reads the topic again: every sink has every message
    # marked, so nothing is sent at all.
    cfg["source"]["group"] = names.group() + "-again"
    again = sluice(cfg)
    wait_until(lambda: consumed(again) >= count, 60,
               "the second run to consume everything", alive=[again])
    again.terminate()
    assert again.wait(60) == 0
    counters = summary(again)
    assert counters["a_already_handled"] == count
    assert counters["b_already_handled"] == count
    assert len(a.records()) == count and len(b.records()) == count


def test_kill_9_ten_times_with_sqlite_markers(
        kafka, topic_factory, names, sinkd, sluice, offsets, tmp_path):
    count, partitions, kills = 20000, 4, 10
    bound = 300  # delivery.max_in_flight: messages not yet marked
    topic = topic_factory(partitions)
    group = names.group()
    sinks = [sinkd(n) for n in ("s1", "s2", "s3", "s4")]
    sinks[3].script(latency_ms=5)
    db = tmp_path / "markers.db"
    cfg = with_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, group,
        {s.name: s.url() for s in sinks}, max_in_flight=bound), db)
    # Static membership: a restarted worker takes its partitions back at
    # once instead of after the killed one's session timeout (6 s each).
    cfg["source"]["properties"]["group.instance.id"] = "kill-test"
    producer = harness.OrderProducer(kafka.bootstrap, topic, rate=2000,
                                     count=count)
    reader = offsets(group)
    for i in range(kills):
        run = sluice(cfg)
        before = sinks[3].ok_count()
        wait_until(lambda: sinks[3].ok_count() >= before + 600, 60,
                   "progress before kill %d" % (i + 1), alive=[run])
        time.sleep(0.2 * (i % 3))
        run.kill()
    producer.join(120)
    last = sluice(cfg)
    harness.wait_sinks_ok(sinks, count, 120, alive=[last])
    ends = reader.end_offsets(topic, partitions)
    harness.wait_commits_at_end(reader, topic, partitions, [last], ends=ends)
    last.terminate()
    assert last.wait(60) == 0

    want = set(harness.expected_orders(count))
    report = []
    for s in sinks:
        got = harness.id_counts(harness.ok_records(s.records()))
        missing = want - set(got)
        assert not missing, "%s lost %d message(s), e.g. %s" % (
            s.name, len(missing), sorted(missing)[:5])
        dups = sum(n - 1 for n in got.values() if n > 1)
        report.append("%s: %d duplicate(s)" % (s.name, dups))
        assert dups <= bound * kills, (s.name, dups)
    print("kill -9 x%d, bound %d per kill: %s"
          % (kills, bound, "; ".join(report)))

    # A clean stop, then a restart that reads everything again from the
    # start under a new group: the markers alone keep the sinks from
    # seeing anything twice.
    cfg["source"]["group"] = group + "-again"
    del cfg["source"]["properties"]["group.instance.id"]
    before = [len(s.records()) for s in sinks]
    again = sluice(cfg)
    wait_until(lambda: consumed(again) >= count,
               90, "the re-read to consume everything", alive=[again])
    again.terminate()
    assert again.wait(60) == 0
    assert [len(s.records()) for s in sinks] == before


# An LD_PRELOAD shim that fails the marker file's I/O while a flag file
# holds a mode: `full` fails writes and syncs with ENOSPC (a full disk),
# `readonly` fails them with EROFS and refuses opening it for writing
# with EACCES (a file system remounted read-only). Root ignores file
# modes, and CI may run as root: chmod would prove nothing there.
DISK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static char mode(void)
{
    static const char *flag;
    char buf[16] = "";
    FILE *f;

    if (flag == NULL && (flag = getenv("DF_FLAG")) == NULL) {
        return 0;
    }
    int saved = errno;
    f = fopen(flag, "re");
    if (f != NULL) {
        if (fgets(buf, sizeof(buf), f) == NULL) {
            buf[0] = 0;
        }
        fclose(f);
    }
    errno = saved;
    return buf[0];
}

static int ours(const char *path)
{
    const char *match = getenv("DF_MATCH");
    return path != NULL && match != NULL && strstr(path, match) != NULL;
}

static int fd_ours(int fd)
{
    char link[64], path[4096];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0) {
        return 0;
    }
    path[n] = 0;
    return ours(path);
}

static int fails(int fd)
{
    char m = mode();
    if (m == 0 || !fd_ours(fd)) {
        return 0;
    }
    errno = m == 'f' ? ENOSPC : EROFS;
    return 1;
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *b, size_t n)
{
    return fails(fd) ? -1 : REAL(write)(fd, b, n);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o)
{
    return fails(fd) ? -1 : REAL(pwrite)(fd, b, n, o);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off64_t o)
{
    return fails(fd) ? -1 : REAL(pwrite64)(fd, b, n, o);
}
int fsync(int fd) { return fails(fd) ? -1 : REAL(fsync)(fd); }
int fdatasync(int fd) { return fails(fd) ? -1 : REAL(fdatasync)(fd); }
int ftruncate(int fd, off_t l) { return fails(fd) ? -1 : REAL(ftruncate)(fd, l); }

static int refuse(const char *path, int flags)
{
    if ((flags & (O_WRONLY | O_RDWR)) && mode() == 'r' && ours(path)) {
        errno = EACCES;
        return 1;
    }
    return 0;
}
int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = (mode_t)va_arg(ap, int);
    va_end(ap);
    return refuse(path, flags) ? -1 : REAL(open)(path, flags, m);
}
int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = (mode_t)va_arg(ap, int);
    va_end(ap);
    return refuse(path, flags) ? -1 : REAL(open64)(path, flags, m);
}
"""


def recovers_with_every_message_once(run, producer, sinks, count, offsets,
                                     group, topic, partitions):
    """After a store outage: the worker says the store is back, delivers
    the rest, commits to the end and stops cleanly, and every sink got
    every message exactly once."""
    run.wait_for_log(r"markers: the store answers again after \d+ ms", 60)
    producer.join(60)
    harness.wait_sinks_ok(sinks, count, 90, alive=[run])
    reader = offsets(group)
    ends = reader.end_offsets(topic, partitions)
    harness.wait_commits_at_end(reader, topic, partitions, [run], ends=ends)
    run.terminate()
    assert run.wait(60) == 0
    want = set(harness.expected_orders(count))
    for s in sinks:
        got = harness.id_counts(harness.ok_records(s.records()))
        assert set(got) == want
        assert max(got.values()) == 1, "%s got a message twice" % s.name


def disk_shim(tmp_path):
    src = tmp_path / "diskfault.c"
    src.write_text(DISK_SHIM)
    so = str(tmp_path / "diskfault.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", so,
                    str(src), "-ldl"], check=True)
    return so


@pytest.mark.parametrize("fault", ["full", "readonly"])
def test_sqlite_store_failing_mid_stream_loses_and_duplicates_nothing(
        kafka, topic_factory, names, sinkd, sluice, offsets, tmp_path,
        fault):
    """The marker file fails for 10 s mid-stream (disk full, or its file
    system read-only): deliveries wait, the partitions pause under the
    usual bounds, nothing is lost or sent twice, and the worker goes on
    by itself once the file can be written again."""
    count, partitions = 6000, 4
    topic = topic_factory(partitions)
    group = names.group()
    a, b = sinkd("a"), sinkd("b")
    db = tmp_path / "markers.db"
    flag = tmp_path / "fault"
    cfg = with_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, group,
        {"a": a.url(), "b": b.url()}, max_in_flight=500), db)
    env = {"LD_PRELOAD": disk_shim(tmp_path), "DF_FLAG": str(flag),
           "DF_MATCH": "markers.db",
           "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                            ":verify_asan_link_order=0").lstrip(":")}
    producer = harness.OrderProducer(kafka.bootstrap, topic, rate=400,
                                     count=count)
    run = sluice(cfg, env=env)
    wait_until(lambda: a.ok_count() >= 1000, 60, "deliveries before the "
               "fault", alive=[run])
    flag.write_text(fault)
    run.wait_for_log(r"markers: sqlite .*(database or disk is full|"
                     r"disk I/O error|read-only|readonly|unable to open).*"
                     r"deliveries wait", 30)
    time.sleep(2)
    stalled = a.ok_count()
    time.sleep(8)
    # Sent, unmarked deliveries hold their offsets: the bound stops the
    # rest (500 messages), it does not pile up.
    assert a.ok_count() - stalled <= 500
    flag.unlink()
    recovers_with_every_message_once(run, producer, [a, b], count, offsets,
                                     group, topic, partitions)
    assert markers(db) == {"a": count, "b": count}


def redis_markers(cfg, redis, **dedupe):
    d = {"store": "redis", "address": redis.address}
    d.update(dedupe)
    cfg["dedupe"] = d
    return cfg


def test_two_workers_share_redis_markers_through_scale_out_and_in(
        kafka, topic_factory, names, sinkd, sluice, offsets, redis_server):
    """A slow sink keeps messages uncommitted while the fast one has them
    marked; a short drain timeout makes every rebalance redeliver them.
    The new owner must skip the fast sink (its markers are in Redis) and
    send the slow one only what it had not answered."""
    count, partitions = 4000, 6
    topic = topic_factory(partitions)
    group = names.group()
    redis = redis_server()
    fast, slow = sinkd("fast"), sinkd("slow")
    slow.script(latency_ms=2000)
    cfg = redis_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, group,
        {"fast": fast.url(), "slow": {"url": slow.url(),
                                      "max_in_flight": 1024}},
        drain_timeout="500ms", max_in_flight=3000, ordering="none",
        max_in_flight_per_partition=1000), redis)
    producer = harness.OrderProducer(kafka.bootstrap, topic, rate=300,
                                     count=count)
    a = sluice(cfg, name="worker-a")
    wait_until(lambda: fast.ok_count() >= 1000, 60, "the first worker's "
               "deliveries", alive=[a])
    b = sluice(cfg, name="worker-b")  # scale out
    b.wait_for_log(r"assigned \d+ partition", 60)
    wait_until(lambda: fast.ok_count() >= 2500, 60, "deliveries by both",
               alive=[a, b])
    b.terminate()  # scale in
    assert b.wait(60) in (0, 3)
    producer.join(60)
    harness.wait_sinks_ok([fast, slow], count, 120, alive=[a])
    reader = offsets(group)
    ends = reader.end_offsets(topic, partitions)
    harness.wait_commits_at_end(reader, topic, partitions, [a], ends=ends)
    a.terminate()
    assert a.wait(60) == 0

    want = set(harness.expected_orders(count))
    skipped = sum(summary(w).get("fast_already_handled", 0) for w in (a, b))
    assert skipped > 0, "no rebalance redelivered anything: the test " \
        "proves nothing"
    got = harness.id_counts(harness.ok_records(fast.records()))
    assert set(got) == want
    twice = sorted(k for k, n in got.items() if n > 1)
    assert not twice, "fast applied marked messages again: %s" % twice[:10]
    got = harness.id_counts(harness.ok_records(slow.records()))
    assert set(got) == want
    print("redeliveries the fast sink skipped: %d; slow sink duplicates "
          "(in flight at a revoke): %d" % (
              skipped, sum(n - 1 for n in got.values())))


def test_redis_down_10s_mid_stream_loses_and_duplicates_nothing(
        kafka, topic_factory, names, sinkd, sluice, offsets, redis_server):
    count, partitions = 5000, 4
    topic = topic_factory(partitions)
    group = names.group()
    redis = redis_server()
    a, b = sinkd("a"), sinkd("b")
    cfg = redis_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, group,
        {"a": a.url(), "b": b.url()}, max_in_flight=500), redis,
        timeout="1s")
    producer = harness.OrderProducer(kafka.bootstrap, topic, rate=300,
                                     count=count)
    run = sluice(cfg)
    wait_until(lambda: a.ok_count() >= 800, 60, "deliveries before the "
               "outage", alive=[run])
    redis.stop()
    run.wait_for_log(r"markers: redis 127\.0\.0\.1:\d+: .*deliveries wait",
                     30)
    time.sleep(2)
    stalled = a.ok_count()
    time.sleep(8)
    assert a.ok_count() - stalled <= 500
    redis.start()
    recovers_with_every_message_once(run, producer, [a, b], count, offsets,
                                     group, topic, partitions)


KEY_RECORDS = [  # (value, headers)
    (b'{"meta":{"id":"m-1"}}', [("x-id", b"h-1")]),
    (b'{"meta":{"id":42}}', [("x-id", b"h-2")]),
    (b'not json', []),
    (b'{"meta":{}}', [("x-id", b"")]),
]


def produce_key_records(bootstrap, topic):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap})
    for value, headers in KEY_RECORDS:
        p.produce(topic, value=value, key=b"k", headers=headers)
    assert p.flush(30) == 0


@pytest.mark.parametrize("key,missing,want", [
    ("json:meta.id", "coordinates", ["m-1", "42", "{t}-0-2", "{t}-0-3"]),
    ("header:x-id", "coordinates", ["h-1", "h-2", "{t}-0-2", "{t}-0-3"]),
    ("coordinates", "dead_letter", ["{t}-0-0", "{t}-0-1", "{t}-0-2",
                                    "{t}-0-3"]),
    ("lua:order_key", "coordinates", ["L-0", "L-1", "{t}-0-2", "{t}-0-3"]),
    ("json:meta.id", "dead_letter", ["m-1", "42"]),
])
def test_dedupe_key_sources(kafka, topic_factory, names, sinkd, sluice,
                            tmp_path, key, missing, want):
    """Each dedupe.key source gives the key sinks see as Idempotency-Key;
    a record without one falls back to its coordinates, or goes to the
    dead-letter queue (stage dedupe) and to no sink."""
    topic = topic_factory(1)
    produce_key_records(kafka.bootstrap, topic)
    s = sinkd("s")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"s": s.url()})
    cfg["dedupe"] = {"key": key, "missing": missing}
    if key.startswith("lua:"):
        script = tmp_path / "keys.lua"
        script.write_text(
            "function transform(msg) return msg end\n"
            "function order_key(msg)\n"
            "  if msg.offset >= 2 then return nil end\n"
            "  return 'L-' .. msg.offset\nend\n")
        cfg["transform"] = str(script)
    run = sluice(cfg)
    wait_until(lambda: consumed(run) >= len(KEY_RECORDS), 60,
               "every record consumed", alive=[run])
    wait_until(lambda: len(s.records()) >= len(want), 30,
               "the sink's requests", alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    want = [w.replace("{t}", topic) for w in want]
    assert [r.key for r in s.records()] == want
    dead = len(KEY_RECORDS) - len(want)
    assert summary(run).get("no_key_dead_lettered", 0) == dead
    if dead:
        from test_dlq import read_topic
        recs = read_topic(kafka.bootstrap, names.pipeline + ".dlq")
        assert [r["headers"]["sluice.stage"] for r in recs] == \
            ["dedupe"] * dead
        assert all("no dedupe key" in r["headers"]["sluice.error.reason"]
                   for r in recs)


def test_replay_skips_what_the_sink_already_has(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    """Records dead-lettered for b reach b later through a re-read (a new
    group); `sluice dlq replay --sink b` then finds them marked and sends
    b nothing."""
    count = 300
    topic = topic_factory(2)
    harness.produce_orders(kafka.bootstrap, topic, count)
    a, b = sinkd("a"), sinkd("b")
    b.script(reject_every=7)  # 400 for good: to the DLQ
    db = tmp_path / "markers.db"
    cfg = with_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, names.group(),
        {"a": a.url(), "b": b.url()}), db)
    run = sluice(cfg)
    wait_until(lambda: (summary_now(run).get("b_dead_lettered", 0) +
                        summary_now(run).get("b", 0)) >= count, 60,
               "b to answer or dead-letter everything", alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    rejected = summary(run)["b_dead_lettered"]
    assert rejected > 0
    b.script(reject_every=0)
    cfg["source"]["group"] = names.group() + "-again"
    again = sluice(cfg)
    wait_until(lambda: consumed(again) >= count, 60, "the re-read",
               alive=[again])
    wait_until(lambda: b.ok_count() >= count, 60, "b to get the rest",
               alive=[again])
    again.terminate()
    assert again.wait(60) == 0
    assert summary(again)["a_already_handled"] == count
    assert summary(again)["b_already_handled"] == count - rejected
    before = len(b.records())
    p = harness.sluice_cmd(["dlq", "replay", again.config_path, "--sink",
                            "b"], timeout=120)
    assert p.returncode == 0, p.stderr
    assert "replayed %d, failed again 0" % rejected in p.stdout, p.stdout
    assert "already handled %d" % rejected in p.stdout, p.stdout
    assert len(b.records()) == before
    got = harness.id_counts(harness.ok_records(b.records()))
    assert set(got) == set(harness.expected_orders(count))
    assert max(got.values()) == 1


def test_a_producers_duplicates_reach_each_sink_once(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    """Every order written twice in a row (a producer that retried): both
    copies are looked up before either is marked, so the worker's memory
    of what it just delivered must catch the second."""
    count = 500
    topic = topic_factory(2)
    from confluent_kafka import Producer
    import gen_orders
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(count):
        for _ in range(2):
            p.produce(topic, key=gen_orders.tenant_id(i, 50).encode(),
                      value=gen_orders.make_order(i, 50),
                      headers=[("message-id",
                                gen_orders.order_id(i).encode())])
    assert p.flush(30) == 0
    a, b = sinkd("a"), sinkd("b")
    b.script(latency_ms=20)
    cfg = with_markers(harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, names.group(),
        {"a": a.url(), "b": b.url()}), tmp_path / "markers.db")
    run = sluice(cfg)
    wait_until(lambda: consumed(run) >= 2 * count, 60,
               "both copies consumed", alive=[run])
    harness.wait_sinks_ok([a, b], count, 60, alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    counters = summary(run)
    for s in (a, b):
        got = harness.id_counts(harness.ok_records(s.records()))
        assert set(got) == set(harness.expected_orders(count))
        assert max(got.values()) == 1, "%s got a duplicate" % s.name
        assert counters["%s_already_handled" % s.name] == count
