"""Idempotent effects: dedupe keys, "already handled" markers in a store,
and what a sink's 409 means (docs/dedupe.md)."""

import collections
import os
import signal
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
    before = [len(s.records()) for s in sinks]
    again = sluice(cfg)
    wait_until(lambda: consumed(again) >= count,
               90, "the re-read to consume everything", alive=[again])
    again.terminate()
    assert again.wait(60) == 0
    assert [len(s.records()) for s in sinks] == before
