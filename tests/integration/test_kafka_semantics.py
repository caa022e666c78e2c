"""Kafka semantics on a real Apache Kafka broker: a cooperative scale-out
without loss or duplicates, committed offsets that survive restarts of
sluice and of the broker, and a broker outage that loses nothing.

The restart and outage tests each start a dedicated broker (kafka_broker
fixture, own directory, own ports) rather than restarting the session
broker: they also run when KAFKA_BOOTSTRAP points the suite at a cluster
the suite must not restart, a broker that fails to come back only fails
its own test, and the session broker's topics and groups are not touched.
"""

import collections
import re
import time

from confluent_kafka import KafkaException

import harness
from harness import wait_until

def worker_cfg(names, bootstrap, topic, group, sinks, worker):
    """The shared pipeline, with an X-Worker header on every sink request
    so that sinkd's record tells which worker delivered what."""
    cfg = harness.pipeline(names.pipeline, bootstrap, topic, group,
                           {s.name: s.url() for s in sinks})
    for spec in cfg["sinks"].values():
        spec["headers"] = {"X-Worker": worker}
    return cfg


def rebalance_lines(run):
    return ["%s: %s" % (run.name, l) for l in run.log().splitlines()
            if re.search(r"assigned|revoked|rebalance|commit|lost|kafka:", l)]


def iso_ms(ts_ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + \
        ".%03dZ" % (ts_ms % 1000)


def wait_sinks_have(sinks, ids, timeout, alive):
    """Every sink answered 200 to every order id in ids."""
    def done():
        return all(set(harness.id_counts(harness.ok_records(s.records())))
                   >= ids for s in sinks)
    harness.wait_sinks_ok(sinks, len(ids), timeout, alive=alive)
    wait_until(done, timeout, "every sink to have all %d orders" % len(ids),
               alive=alive, interval=1,
               details=lambda: {s.name: harness.describe_counter_diff(
                   harness.id_counts(harness.ok_records(s.records())), ids)
                   for s in sinks})


class ScaleOut:
    """Worker A consumes a stream of `count` orders (8 partitions, 2 sinks,
    produced at `rate`/s); once A has delivered a fifth of them, worker B
    joins the same group. Waits until every order reached every sink and
    the commits reached the end, then stops both workers (exit 0)."""

    count, partitions, rate = 20000, 8, 2000

    def __init__(self, kafka, topic_factory, names, sinkd, sluice, offsets):
        count, partitions = self.count, self.partitions
        topic = topic_factory(partitions)
        group = names.group()
        self.sinks = sinks = [sinkd("a"), sinkd("b")]
        reader = offsets(group)

        self.wa = wa = sluice(worker_cfg(names, kafka.bootstrap, topic, group,
                                         sinks, "A"), name="worker-A")
        wa.wait_for_log(r"assigned 8 partition\(s\) \(cooperative\)", 30)
        stream = harness.OrderProducer(kafka.bootstrap, topic, self.rate,
                                       count=count)
        wait_until(lambda: min(s.ok_count() for s in sinks) >= count // 5,
                   30, "worker A to deliver %d orders" % (count // 5),
                   alive=[wa])
        self.wb = wb = sluice(worker_cfg(names, kafka.bootstrap, topic, group,
                                         sinks, "B"), name="worker-B")
        m = wb.wait_for_log(r"assigned ([1-9]\d*) partition", 30)
        self.b_parts = int(m.group(1))
        self.produced_at_b = stream.produced
        self.mid_stream = not stream.done and self.produced_at_b < count
        wa.wait_for_log(r"revoked [1-9]\d* partition", 30)

        assert stream.join(60) == count
        assert not stream.failed and len(stream.acked) == count
        self.want = harness.expected_orders(count)
        wait_sinks_have(sinks, set(self.want), 90, alive=[wa, wb])
        self.ends = harness.wait_commits_at_end(reader, topic, partitions,
                                                [wa, wb], timeout=60)
        assert sum(self.ends) == count
        wa.terminate()
        wb.terminate()
        assert wa.wait(60) == 0
        assert wb.wait(60) == 0
        self.committed = reader.committed(topic, partitions)
        self.records = {s.name: harness.ok_records(s.records())
                        for s in sinks}

    def rebalance_log(self):
        return "\n".join(rebalance_lines(self.wa) + rebalance_lines(self.wb))


def test_scale_out_cooperative_loses_nothing(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    """Worker B joins mid-stream: both workers own partitions afterwards,
    B delivers, every order reaches every sink, commits reach the end."""
    run = ScaleOut(kafka, topic_factory, names, sinkd, sluice, offsets)
    assert run.mid_stream, (
        "production ended (%d) before B was assigned: the rebalance was "
        "not mid-stream" % run.produced_at_b)
    assert run.committed == run.ends
    # Both workers own partitions after the scale-out.
    assert re.search(r"^\S+ info  assigned 8 partition", run.wa.log(), re.M)
    assert re.search(r"^\S+ info  revoked [1-9]\d* partition", run.wa.log(),
                     re.M)
    assert re.search(r"^\S+ info  assigned [1-9]\d* partition",
                     run.wb.log(), re.M)
    sb = run.wb.summary()
    assert sb is not None and sb[0] > 0, \
        "worker B consumed nothing: %s" % (sb,)
    for name, recs in run.records.items():
        by_worker = collections.Counter(r.headers.get("x-worker")
                                        for r in recs)
        assert by_worker["A"] > 0 and by_worker["B"] > 0, \
            "%s: deliveries by worker %s" % (name, dict(by_worker))
        got = harness.id_counts(recs)
        missing = [k for k in run.want if got.get(k, 0) == 0]
        assert not missing, "%s lost %d order(s) in a scale-out, e.g. %s" % (
            name, len(missing), missing[:10])
        assert set(got) == set(run.want)


def describe_duplicates(name, recs):
    """Which (partition, offset) a sink got more than once, by which
    worker and when; '' when none."""
    deliveries = collections.defaultdict(list)
    for r in recs:
        deliveries[(r.partition, r.offset)].append(r)
    dups = sorted((po, rs) for po, rs in deliveries.items() if len(rs) > 1)
    if not dups:
        return ""
    parts = sorted({p for (p, _), _ in dups})
    lines = ["%s: %d (partition, offset) delivered more than once "
             "(%d requests too many):" % (
                 name, len(dups), sum(len(rs) - 1 for _, rs in dups))]
    for p in parts:
        offs = [o for (q, o), _ in dups if q == p]
        first = [rs for (q, o), rs in dups if q == p][0]
        lines.append("  partition %d: offsets %d..%d (%d), first one: %s" % (
            p, min(offs), max(offs), len(offs), ", ".join(
                "worker %s at %s" % (r.headers.get("x-worker"),
                                     iso_ms(r.ts_ms)) for r in first)))
    return "\n".join(lines)


def test_scale_out_cooperative_delivers_nothing_twice(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    """sluice drains and commits what it revokes before releasing it, so
    after a clean scale-out (nothing lost, no worker dies) no message may
    reach a sink twice.

    The trap this guards (librdkafka 2.0.2): after worker A revokes its
    first partitions it rejoins the group; a commit sent with the old
    generation during that rejoin gets ILLEGAL_GENERATION, librdkafka
    then marks A's remaining assignment lost (no drain, no commit) and
    the next owner delivers ~1 s of traffic again (confluentinc/librdkafka
    #4059). sluice holds its timer commits from a cooperative revoke
    until the rejoin's assign (worker/consumer.c). Run with
    SLUICE_IT_KAFKA_DEBUG=cgrp to see librdkafka's group state.
    """
    run = ScaleOut(kafka, topic_factory, names, sinkd, sluice, offsets)
    problems = [d for d in (describe_duplicates(name, recs)
                            for name, recs in run.records.items()) if d]
    lost = [l for r in (run.wa, run.wb) for l in r.log().splitlines()
            if "(lost)" in l]
    assert not problems and not lost, (
        "a clean cooperative scale-out (B assigned %d partition(s) after "
        "%d of %d orders were produced) delivered messages twice:\n%s\n"
        "rebalance log:\n%s" % (
            run.b_parts, run.produced_at_b, run.count, "\n".join(problems),
            run.rebalance_log()))


def on_dedicated_broker(kafka_broker, names, sinkd, partitions):
    """A dedicated broker with a new topic of `partitions`, sinks a and b,
    and a pipeline from the topic to both: (broker, topic, group, sinks,
    cfg)."""
    broker = kafka_broker()
    cluster = harness.RealKafka(broker.bootstrap, broker=broker)
    topic = names.topic()
    try:
        cluster.create_topic(topic, partitions)
    finally:
        cluster.close()
    group = names.group()
    sinks = [sinkd("a"), sinkd("b")]
    cfg = harness.pipeline(names.pipeline, broker.bootstrap, topic, group,
                           {s.name: s.url() for s in sinks})
    return broker, topic, group, sinks, cfg


def end_offsets_once_led(reader, topic, partitions, timeout=30):
    """The end offsets, read as soon as every partition has a leader
    (ListOffsets answers NOT_LEADER_FOR_PARTITION until then)."""
    def read():
        try:
            return reader.end_offsets(topic, partitions, timeout=5)
        except KafkaException:
            return None
    return wait_until(read, timeout, "the end offsets of %s" % topic)


def test_commits_survive_sluice_and_broker_restart(
        kafka_broker, names, sinkd, sluice, offsets):
    """Deliver N, stop sluice (SIGTERM), restart the broker: the committed
    offsets are still there, and sluice started again with the same group
    delivers nothing twice, then delivers what is produced next."""
    first, more, partitions = 2000, 500, 4
    broker, topic, group, sinks, cfg = on_dedicated_broker(
        kafka_broker, names, sinkd, partitions)
    harness.produce_orders(broker.bootstrap, topic, first)

    run1 = sluice(cfg, name="sluice-before")
    wait_sinks_have(sinks, set(harness.expected_orders(first)), 60,
                    alive=[run1])
    reader = offsets(group, broker.bootstrap)
    ends = harness.wait_commits_at_end(reader, topic, partitions, [run1],
                                       timeout=60)
    assert sum(ends) == first
    run1.terminate()
    assert run1.wait(60) == 0
    assert reader.committed(topic, partitions) == ends
    reader.close()

    broker.restart()
    reader = offsets(group, broker.bootstrap)
    # The group's offsets and the topic's data came back with the broker.
    # (kafka.sh returns once the broker answers metadata requests; its
    # partitions can take a moment more to have a leader again.)
    assert end_offsets_once_led(reader, topic, partitions) == ends
    assert reader.committed(topic, partitions) == ends, \
        "committed offsets did not survive the broker restart"

    run2 = sluice(cfg, name="sluice-after")
    run2.wait_for_log(r"assigned %d partition" % partitions, 60)
    harness.produce_orders(broker.bootstrap, topic, more, start=first)
    want = harness.expected_orders(first + more)
    wait_sinks_have(sinks, set(want), 60, alive=[run2])
    ends2 = harness.wait_commits_at_end(reader, topic, partitions, [run2],
                                        timeout=60)
    assert sum(ends2) == first + more
    run2.terminate()
    assert run2.wait(60) == 0
    assert reader.committed(topic, partitions) == ends2
    summary = run2.summary()
    assert summary is not None and summary[0] == more, (
        "after the restarts sluice consumed %s, expected only the %d new "
        "orders" % (summary, more))
    for s in sinks:
        got = harness.id_counts(harness.ok_records(s.records()))
        assert got == collections.Counter({k: 1 for k in want}), \
            "%s after restarts of sluice and the broker: %s" % (
                s.name, harness.describe_counter_diff(got, want))


def test_broker_down_20s_mid_stream_loses_nothing(
        kafka_broker, names, sinkd, sluice, offsets):
    """The broker is stopped for 20 s while orders keep coming (the
    producer queues and retries) and sluice keeps running; after the
    broker is back, every acknowledged order reaches every sink, commits
    reach the end offsets, and sluice stops cleanly."""
    partitions, rate, outage = 4, 400, 20
    broker, topic, group, sinks, cfg = on_dedicated_broker(
        kafka_broker, names, sinkd, partitions)
    run = sluice(cfg)
    run.wait_for_log(r"assigned %d partition" % partitions, 30)

    stream = harness.OrderProducer(
        broker.bootstrap, topic, rate,
        config={"message.timeout.ms": 300000,
                "enable.idempotence": True,
                "reconnect.backoff.max.ms": 1000})
    try:
        wait_until(lambda: min(s.ok_count() for s in sinks) >= 1000, 30,
                   "1000 orders delivered before the outage", alive=[run])
        broker.stop()
        stopped_at = stream.produced
        time.sleep(outage)
        run.check_alive()
        during = stream.produced - stopped_at
        broker.start()
        # More orders once the broker is back.
        time.sleep(3)
    finally:
        stream.stop()
    produced = stream.join(120)
    assert during >= rate * outage // 2, \
        "only %d orders produced during the outage" % during
    assert not stream.failed, "the producer gave up on %d order(s): %s" % (
        len(stream.failed), stream.failed[:3])
    assert len(stream.acked) == produced, (len(stream.acked), produced)

    acked = {harness.gen_orders.order_id(i) for i in stream.acked}
    wait_sinks_have(sinks, acked, 120, alive=[run])
    reader = offsets(group, broker.bootstrap)
    ends = harness.wait_commits_at_end(reader, topic, partitions, [run],
                                       timeout=60)
    # Idempotent producer: no order twice in the log.
    assert sum(ends) == produced, (ends, produced)
    run.check_alive()
    run.terminate()
    assert run.wait(60) == 0
    assert reader.committed(topic, partitions) == ends
    # The outage is one line and its end another, not a line per retry.
    log = run.log()
    down = [l for l in log.splitlines()
            if re.search(r"source: (every broker of \S+ is down|cannot "
                         r"reach the brokers)", l)]
    back = [l for l in log.splitlines()
            if re.search(r"source: brokers \S+ reachable again after", l)]
    assert len(down) == 1 and len(back) == 1, log
    assert not re.search(r"kafka FAIL|_TRANSPORT", log), log
    assert len(re.findall(r"Connection refused", log)) <= 1, log
    for s in sinks:
        got = harness.id_counts(harness.ok_records(s.records()))
        missing = sorted(acked - set(got))
        assert not missing, "%s lost %d acknowledged order(s), e.g. %s" % (
            s.name, len(missing), missing[:10])
        assert set(got) == acked, harness.describe_counter_diff(got, acked)
