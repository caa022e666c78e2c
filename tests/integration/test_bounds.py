"""delivery.max_in_flight bounds what sluice holds when a sink is slow."""

import time

import harness
from harness import wait_until

POLL_BATCH = 512  # worker/consumer.c: records taken per poll round


def test_max_in_flight_bounds_a_slow_sink(kafka, topic_factory, names, sinkd,
                                          sluice, offsets):
    count, partitions, bound = 1000, 4, 50
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    slow, fast = sinkd("slow"), sinkd("fast")
    slow.script(latency_ms=200)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"slow": {"url": slow.url(), "max_in_flight": 4},
                            "fast": fast.url()},
                           max_in_flight=bound)
    run = sluice(cfg)
    # Sample while the slow sink is the bottleneck (~20 messages/s).
    wait_until(lambda: len([p for p in run.progress() if p[0] > 0]) >= 6, 60,
               "six progress lines while consuming", alive=[run])
    sampled = run.progress()
    slow.script(latency_ms=0)
    harness.wait_sinks_ok([slow, fast], count, 60, alive=[run])
    harness.wait_commits_at_end(offsets(group), topic, partitions, [run])
    run.terminate()
    assert run.wait(60) == 0

    in_flight = [p[1] for p in run.progress()]
    # Progress lines sample once a second, between pause (at the bound)
    # and resume (at 3/4 of it): seeing half the bound shows the slow sink
    # kept messages waiting, so the bound was exercised.
    assert max(p[1] for p in sampled) >= bound // 2, (
        "in_flight stayed low while the sink was slow: the bound was not "
        "exercised (%s)" % [p[1] for p in sampled])
    assert max(in_flight) <= bound + POLL_BATCH, (
        "in_flight went past max_in_flight (%d) + one poll batch (%d): %s"
        % (bound, POLL_BATCH, in_flight))
    assert max(p[0] for p in sampled) < count, \
        "sluice consumed everything while the sink was slow: %s" % sampled
    want = harness.expected_orders(count)
    for s in (slow, fast):
        got = harness.id_counts(harness.ok_records(s.records()))
        assert set(got) == set(want) and max(got.values()) == 1, \
            "%s: %s" % (s.name, harness.describe_counter_diff(got, want))


def test_sink_outage_longer_than_max_poll_interval_keeps_the_group(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    """A sink that is down for longer than max.poll.interval.ms (300 s by
    default; 7 s here) must not cost the worker its group membership."""
    count, partitions, bound = 500, 2, 50
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    ok, down = sinkd("ok"), sinkd("down")
    down.script(then=503)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"ok": ok.url(), "down": down.url()},
                           max_in_flight=bound)
    cfg["source"]["properties"]["max.poll.interval.ms"] = "7000"
    run = sluice(cfg)
    wait_until(lambda: ok.ok_count() >= bound, 30,
               "the lane to fill up to its bound", alive=[run])
    # The outage: longer than max.poll.interval.ms.
    time.sleep(12)
    down.script(then=200)
    wait_until(lambda: down.ok_count() >= count, 60, "recovery",
               alive=[run], details=down.stats)
    harness.wait_commits_at_end(offsets(group), topic, partitions, [run])
    run.terminate()
    assert run.wait(60) == 0
    log = run.log()
    got = harness.id_counts(harness.ok_records(ok.records()))
    dups = sum(n - 1 for n in got.values())
    problems = [l for l in log.splitlines()
                if "maximum poll interval" in l or "(lost)" in l]
    assert not problems and dups == 0, (
        "while the `down` sink failed, the worker dropped out of the group "
        "and the healthy sink got %d duplicate(s):\n%s"
        % (dups, "\n".join(problems)))
