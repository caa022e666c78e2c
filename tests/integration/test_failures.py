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


def test_answer_classes_decide_retry_dlq_or_done(kafka, topic_factory, names,
                                                 sinkd, sluice, offsets):
    """retry_on, permanent_on and done_on override the default classes:
    here 404 is retried, 409 counts as delivered, and 503 fails for good
    (to the DLQ) although 5xx is retried."""
    count = 4
    topic = topic_factory(1)
    group = names.group()
    strict, easy = sinkd("strict"), sinkd("easy")
    # One key, so the requests go out one at a time in offset order.
    strict.script(statuses=[404, 404, 409, 503], then=200)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group, {
        "strict": {"url": strict.url(), "retry_on": ["transport", "5xx", "404"],
                   "done_on": [409], "permanent_on": [503]},
        "easy": easy.url()}, retry_backoff="50ms")
    run = sluice(cfg)
    reader = offsets(group)
    harness.produce_orders(kafka.bootstrap, topic, count, tenants=1)
    harness.wait_commits_at_end(reader, topic, 1, [run])
    recs = strict.records()
    assert [(r.key, r.status) for r in recs] == [
        ("ord-000000000", 404), ("ord-000000000", 404),
        ("ord-000000000", 409), ("ord-000000001", 503),
        ("ord-000000002", 200), ("ord-000000003", 200)], recs
    assert easy.ok_count() == count
    run.terminate()
    assert run.wait(60) == 0
    _, _, counters = run.summary()
    assert counters.get("strict") == 2, counters
    assert counters.get("strict_done_by_policy") == 1, counters
    assert counters.get("strict_dead_lettered") == 1, counters
    assert counters.get("strict_failed") == 3, counters


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
    # The dropper's breaker is off: with it on, how many of the 60 drops
    # go out in the first burst (before 5 failures open it) depends on
    # timing, and every later drop costs a 5 s probe interval -- the test
    # was flaky (2 of 3 runs timed out on a loaded machine). The breaker
    # has its own tests.
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"steady": steady.url(),
                            "dropper": {"url": dropper.url(),
                                        "breaker_failures": 0,
                                        "breaker_failure_percent": 0},
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
