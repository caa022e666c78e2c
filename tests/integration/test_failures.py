"""Sink failures: retried until they succeed, never acknowledged early, and
commits never pass a message some sink has not got."""

import collections
import time

import harness
from harness import wait_until


def assert_each_ok_once(sink, want, recs=None):
    recs = sink.records() if recs is None else recs
    got = harness.id_counts(harness.ok_records(recs))
    assert got == collections.Counter({k: 1 for k in want}), \
        "%s: %s" % (sink.name, harness.describe_counter_diff(got, want))


def test_failing_sink_holds_commits_then_recovers(kafka, topic_factory, names,
                                                  sinkd, sluice, offsets):
    partitions, first, second = 4, 1000, 1000
    total = first + second
    topic = topic_factory(partitions)
    group = names.group()
    sinks = [sinkd(n) for n in ("billing", "crm", "search", "analytics")]
    billing = sinks[0]
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {s.name: s.url() for s in sinks})
    run = sluice(cfg)
    reader = offsets(group)

    # Phase 1: everything healthy, commits reach the end.
    harness.produce_orders(kafka.bootstrap, topic, first)
    harness.wait_sinks_ok(sinks, first, 60, alive=[run])
    harness.wait_commits_at_end(reader, topic, partitions, [run])

    # Phase 2: billing answers 503 for 3 s while more orders arrive.
    billing.script(fail_for_ms=3000, fail_status=503)
    fail_until = time.monotonic() + 3.0
    harness.produce_orders(kafka.bootstrap, topic, second, start=first)
    ends = reader.end_offsets(topic, partitions)
    assert sum(ends) == total

    samples = []
    tight = 0
    deadline = time.monotonic() + 90
    while True:
        run.check_alive()
        committed = reader.committed(topic, partitions)
        # Records read after the commits: a commit can only cover what
        # sinkd had already answered 200 to, so this is never too strict.
        low = [min(x) for x in zip(*(
            harness.lowest_undelivered(harness.delivered_offsets(
                s.records()), partitions, ends) for s in sinks))]
        failing = time.monotonic() < fail_until
        samples.append((failing, committed, low))
        over = [p for p in range(partitions) if committed[p] > low[p]]
        assert not over, (
            "committed %s passes the lowest offset not delivered to every "
            "sink %s on partition(s) %s (billing failing: %s)"
            % (committed, low, over, failing))
        if failing and committed == low and low != ends:
            tight += 1
        if not failing and harness.commits_reached_end(committed, ends) \
                and all(s.ok_count() >= total for s in sinks):
            break
        assert time.monotonic() < deadline, \
            "no recovery within 90 s; last sample %s" % (samples[-1],)
        time.sleep(0.05)

    assert sum(1 for s in samples if s[0]) >= 5, "too few samples while failing"
    assert tight > 0, ("while billing failed, commits never sat exactly at "
                       "the first undelivered offset: samples %s"
                       % samples[:10])
    recs = billing.records()
    assert any(r.status == 503 for r in recs), "billing never failed"
    run.terminate()
    assert run.wait(60) == 0
    assert reader.committed(topic, partitions) == ends
    want = harness.expected_orders(total)
    for s in sinks:
        assert_each_ok_once(s, want, recs if s is billing else None)


def test_4xx_is_retried_never_acknowledged(kafka, topic_factory, names, sinkd,
                                           sluice, offsets):
    count = 5
    topic = topic_factory(1)
    group = names.group()
    strict, easy = sinkd("strict"), sinkd("easy")
    # Client errors, first scripted then for good, until told otherwise.
    strict.script(statuses=[400, 404, 409], then=422)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"strict": strict.url(), "easy": easy.url()})
    run = sluice(cfg)
    reader = offsets(group)
    harness.produce_orders(kafka.bootstrap, topic, count)
    wait_until(lambda: easy.ok_count() >= count and
               strict.stats()["requests"] >= 4 * count, 60,
               "every message to fail at least 4 times at the strict sink",
               alive=[run], details=strict.stats)
    # Let a progress line or two cover the failing period.
    n_progress = len(run.progress())
    wait_until(lambda: len(run.progress()) >= n_progress + 2, 10,
               "two more progress lines", alive=[run])

    stats = strict.stats()
    assert "200" not in stats["by_status"], stats
    committed = reader.committed(topic, 1)
    assert committed[0] <= 0, "committed %s although no message reached " \
        "the strict sink" % committed
    lines = run.progress()
    assert lines, run.describe()
    for consumed, in_flight, counters in lines:
        assert counters.get("strict", 0) == 0, \
            "a 4xx answer was counted as delivered: %s" % (counters,)
    last = lines[-1]
    assert last[0] == count and last[1] == count, last
    assert last[2].get("easy") == count and last[2].get("strict_failed", 0) \
        >= 4 * count, last

    strict.script(then=200)
    wait_until(lambda: strict.ok_count() >= count, 30,
               "the strict sink to accept", alive=[run])
    wait_until(lambda: reader.committed(topic, 1) == [count], 30,
               "commits to reach the end", alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    summary = run.summary()
    assert summary is not None and summary[2]["strict"] == count, summary

    want = harness.expected_orders(count)
    recs = strict.records()
    assert_each_ok_once(strict, want, recs)
    by_id = collections.defaultdict(list)
    for r in recs:
        by_id[r.key].append(r.status)
    for oid, statuses in by_id.items():
        assert statuses[-1] == 200 and len(statuses) >= 5 and \
            all(400 <= s < 500 for s in statuses[:-1]), (oid, statuses)


def test_connection_drops_and_a_sink_down_at_start(kafka, topic_factory,
                                                    names, sinkd, sluice,
                                                    offsets):
    count, partitions = 500, 4
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    steady = sinkd("steady")
    dropper = sinkd("dropper")
    # The first 60 requests lose their connection without an answer, and
    # every answer after that closes the connection.
    dropper.script(statuses=[0] * 60, then=200, close=True)
    late_port = harness.free_port()
    late_url = "http://127.0.0.1:%d/late" % late_port
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"steady": steady.url(), "dropper": dropper.url(),
                            "late": {"url": late_url,
                                     "connect_timeout": "1s"}})
    run = sluice(cfg)
    run.wait_for_log(r"sink late: .* failed", 60)
    wait_until(lambda: steady.ok_count() >= count, 60, "steady sink",
               alive=[run])
    reader = offsets(group)
    assert max(reader.committed(topic, partitions)) <= 0, \
        "committed while the late sink was down"
    late = sinkd("late", port=late_port)
    sinks = [steady, dropper, late]
    harness.wait_sinks_ok(sinks, count, 60, alive=[run])
    harness.wait_commits_at_end(reader, topic, partitions, [run])
    run.terminate()
    assert run.wait(60) == 0

    want = harness.expected_orders(count)
    drops = [r for r in dropper.records() if r.status == 0]
    assert len(drops) == 60
    for s in sinks:
        assert_each_ok_once(s, want)
