"""Stopping and restarting: kill -9 loses nothing, SIGTERM drains, commits
what is done, and a restart after it delivers nothing twice."""

import collections
import json
import re
import signal
import time

import pytest

import harness
from harness import wait_until


def wait_complete(sinks, count, reader, topic, partitions, ends, run,
                  timeout=90):
    harness.wait_sinks_ok(sinks, count, timeout, alive=[run])
    harness.wait_commits_at_end(reader, topic, partitions, [run], ends=ends)


def test_kill_9_mid_stream_then_restart(kafka, topic_factory, names, sinkd,
                                        sluice, offsets):
    count, partitions = 20000, 8
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    fast, other, slow = sinkd("fast"), sinkd("other"), sinkd("slow")
    slow.script(latency_ms=20)
    sinks = [fast, other, slow]
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {s.name: s.url() for s in sinks})
    reader = offsets(group)
    ends = reader.end_offsets(topic, partitions)
    assert sum(ends) == count

    first = sluice(cfg)
    wait_until(lambda: slow.ok_count() >= 3000, 60,
               "the slow sink to get 3000 messages", alive=[first])
    first.kill()
    at_kill = slow.ok_count()
    assert at_kill < count, "everything was delivered before the kill: " \
        "the test proves nothing"
    committed_at_kill = reader.committed(topic, partitions)

    second = sluice(cfg)
    wait_complete(sinks, count, reader, topic, partitions, ends, second)
    second.terminate()
    assert second.wait(60) == 0
    assert reader.committed(topic, partitions) == ends

    want = harness.expected_orders(count)
    for s in sinks:
        recs = harness.ok_records(s.records())
        got = harness.id_counts(recs)
        missing = [k for k in want if got.get(k, 0) == 0]
        assert not missing, "%s lost %d message(s), e.g. %s" % (
            s.name, len(missing), missing[:10])
        assert set(got) == set(want)
        # Redelivery starts at the committed offset: what the commit
        # covered at the kill is never sent again.
        pos = collections.Counter((r.partition, r.offset) for r in recs)
        again = sorted((p, o) for (p, o), n in pos.items()
                       if n > 1 and o < committed_at_kill[p])
        assert not again, ("%s got (partition, offset) %s twice although "
                           "committed %s covered them"
                           % (s.name, again[:10], committed_at_kill))


def test_sigterm_drains_commits_and_restart_has_no_duplicates(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    count, partitions = 2000, 4
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    fast, slow = sinkd("fast"), sinkd("slow")
    slow.script(latency_ms=300)
    sinks = [fast, slow]
    drain_timeout = 30
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"fast": fast.url(),
                            "slow": {"url": slow.url(), "max_in_flight": 32}},
                           max_in_flight=50,
                           drain_timeout="%ds" % drain_timeout)
    reader = offsets(group)
    ends = reader.end_offsets(topic, partitions)

    first = sluice(cfg)
    wait_until(lambda: slow.stats()["requests"] >= 100, 60,
               "the slow sink to get 100 requests", alive=[first])
    first.terminate()
    assert first.wait(drain_timeout + 15) == 0
    log = first.log()
    assert "draining in-flight messages" in log
    assert not re.search(r"still in flight", log), \
        "the drain did not finish:\n" + first.describe()
    summary = first.summary()
    assert summary is not None and summary[1] == 0, summary
    assert summary[0] < count, "everything was consumed before SIGTERM: " \
        "the test proves nothing (%s)" % (summary,)

    committed = reader.committed(topic, partitions)
    covered = {(p, o) for p in range(partitions)
               for o in range(max(committed[p], 0))}
    assert covered, "nothing committed after a clean stop"
    for s in sinks:
        delivered = {(r.partition, r.offset) for r in
                     harness.ok_records(s.records())}
        not_delivered = sorted(covered - delivered)
        assert not not_delivered, (
            "%s: committed %s covers (partition, offset) %s that were "
            "never delivered" % (s.name, committed, not_delivered[:10]))
        # Everything consumed was finished and committed by the drain.
        beyond = sorted(delivered - covered)
        assert not beyond, ("%s: delivered %s beyond the commit %s: a "
                            "restart would send them twice"
                            % (s.name, beyond[:10], committed))
        assert len(delivered) == summary[0]

    # Restart (same group; the slow sink and the in-flight bound relaxed
    # so that the rest goes quickly): the rest arrives, nothing twice.
    slow.script(latency_ms=0)
    cfg["delivery"]["max_in_flight"] = 10000
    second = sluice(cfg)
    wait_complete(sinks, count, reader, topic, partitions, ends, second)
    second.terminate()
    assert second.wait(drain_timeout + 15) == 0
    assert reader.committed(topic, partitions) == ends
    want = harness.expected_orders(count)
    for s in sinks:
        recs = s.records()
        got = harness.id_counts(recs)
        assert got == collections.Counter({k: 1 for k in want}), \
            "%s after a clean SIGTERM and a restart: %s" % (
                s.name, harness.describe_counter_diff(got, want))


@pytest.mark.parametrize("mode", ["failing", "hanging"])
def test_sigterm_with_a_stuck_sink_is_bounded_by_drain_timeout(
        kafka, topic_factory, names, sinkd, sluice, offsets, mode):
    count, partitions = 200, 2
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    ok, stuck = sinkd("ok"), sinkd("stuck")
    if mode == "failing":
        stuck.script(then=503)
    else:
        stuck.script(latency_ms=120000)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"ok": ok.url(),
                            "stuck": {"url": stuck.url(), "timeout": "60s"}},
                           drain_timeout="2s")
    reader = offsets(group)
    ends = reader.end_offsets(topic, partitions)
    first = sluice(cfg)
    wait_until(lambda: ok.ok_count() >= count and
               stuck.stats()["requests"] > 0, 60,
               "the healthy sink done, the stuck one tried", alive=[first])
    first.terminate()
    # 3: stopped with messages left uncommitted, and the summary says how
    # many.
    assert first.wait(40) == 3
    assert "still in flight" in first.log(), first.describe()
    assert first.summary()[2].get("uncommitted") == count, first.summary()
    # sluice never had a 2xx answer from the stuck sink: nothing may be
    # committed past the first message of any partition.
    committed = reader.committed(topic, partitions)
    assert max(committed) <= 0, "committed %s although the stuck sink " \
        "acknowledged nothing" % committed

    stuck.script(then=200)
    second = sluice(cfg)
    wait_complete([ok, stuck], count, reader, topic, partitions, ends, second)
    second.terminate()
    assert second.wait(40) == 0
    want = harness.expected_orders(count)
    for s in (ok, stuck):
        got = harness.id_counts(harness.ok_records(s.records()))
        assert set(got) == set(want), "%s: %s" % (
            s.name, harness.describe_counter_diff(got, want))


def test_sigint_before_assignment_exits_0_json_logs(kafka, topic_factory,
                                                    names, sinkd, sluice):
    topic = topic_factory(1)
    sink = sinkd("s")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"s": sink.url()})
    run = sluice(cfg, args=("--log-format", "json"))
    run.wait_for_log(r"consuming 1 topic", 30)
    run.signal(signal.SIGINT)
    assert run.wait(30) == 0
    summaries = []
    for line in run.log().splitlines():
        obj = json.loads(line)
        assert {"ts", "level", "msg"} <= set(obj), line
        if obj["msg"] == "summary":
            summaries.append(obj)
    assert len(summaries) == 1, run.log()
    summary = summaries[0]
    assert summary["consumed"] == 0 and summary["in_flight"] == 0, summary
    assert summary["sinks"] == {"s": {"delivered": 0, "state": "ok"}}, summary


def test_second_signal_stops_without_waiting(kafka, topic_factory, names,
                                             sinkd, sluice, offsets):
    count = 20
    topic = topic_factory(1)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    hang = sinkd("hang")
    hang.script(latency_ms=300000)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"hang": {"url": hang.url(), "timeout": "300s"}},
                           drain_timeout="300s")
    run = sluice(cfg)
    wait_until(lambda: hang.stats()["requests"] > 0, 30, "a hanging request",
               alive=[run])
    run.terminate()
    run.wait_for_log(r"draining in-flight messages", 10)
    run.terminate()
    # Far less than the 300 s drain_timeout.
    assert run.wait(60) == 3  # stopped with messages left uncommitted
    assert "second signal" in run.log()
    assert max(offsets(group).committed(topic, 1)) <= 0


def test_second_worker_takes_partitions_without_loss(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    """Scale-out while orders arrive: the group splits the partitions and
    nothing is lost. (Duplicates are allowed here: with librdkafka 2.0.2
    a consumer that commits during a cooperative rebalance gets
    ILLEGAL_GENERATION and its assignment is "lost", on the real broker
    as on kafka-mock; test_kafka_semantics.py::
    test_scale_out_cooperative_delivers_nothing_twice shows it.)"""
    count, partitions = 6000, 8
    topic = topic_factory(partitions)
    group = names.group()
    a, b = sinkd("a"), sinkd("b")
    b.script(latency_ms=10)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"a": a.url(), "b": b.url()})
    reader = offsets(group)
    w1 = sluice(cfg, name="worker-1")
    w1.wait_for_log(r"assigned 8 partition", 30)
    w2 = sluice(cfg, name="worker-2")
    # The rebalance happens while orders keep arriving; more come once
    # both workers own partitions.
    harness.produce_orders(kafka.bootstrap, topic, count // 2, rate=1000)
    w1.wait_for_log(r"revoked \d+ partition", 30)
    w2.wait_for_log(r"assigned [1-9]\d* partition", 30)
    harness.produce_orders(kafka.bootstrap, topic, count - count // 2,
                           start=count // 2)
    ends = reader.end_offsets(topic, partitions)
    harness.wait_sinks_ok([a, b], count, 90, alive=[w1, w2])
    harness.wait_commits_at_end(reader, topic, partitions, [w1, w2],
                                ends=ends)
    w1.terminate()
    w2.terminate()
    assert w1.wait(60) == 0
    assert w2.wait(60) == 0
    s1, s2 = w1.summary(), w2.summary()
    assert s1[0] > 0 and s2[0] > 0, "one worker did nothing: %s %s" % (s1, s2)
    want = harness.expected_orders(count)
    for s in (a, b):
        got = harness.id_counts(harness.ok_records(s.records()))
        missing = [k for k in want if got.get(k, 0) == 0]
        assert not missing and set(got) == set(want), \
            "%s after a rebalance: %s" % (
                s.name, harness.describe_counter_diff(got, want))


def test_sigint_between_join_and_first_assignment_exits_cleanly(
        mock_kafka, names, sinkd, sluice):
    """librdkafka 2.0.2 aborts when a cooperative-sticky member is
    destroyed after joining and before its first assignment
    (confluentinc/librdkafka#4312). SyncGroup errors hold the worker in
    that window; a SIGINT there must still end in exit 0."""
    topic = names.topic()
    mock_kafka.create_topic(topic, 1)
    sink = sinkd("s")
    mock_kafka.command("error SyncGroup REBALANCE_IN_PROGRESS 1000")
    try:
        cfg = harness.pipeline(names.pipeline, mock_kafka.bootstrap, topic,
                               names.group(), {"s": sink.url()})
        run = sluice(cfg)
        run.wait_for_log(r"consuming 1 topic", 30)
        time.sleep(3)
        run.signal(signal.SIGINT)
        assert run.wait(60) == 0, run.describe()
    finally:
        mock_kafka.command("clear SyncGroup")
