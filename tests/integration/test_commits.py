"""Offset commits against a broker that refuses some of them.

Runs on kafka-mock (mock_kafka): a real broker cannot be told to refuse
OffsetCommit requests."""

import harness
from harness import wait_until


def test_failed_commit_is_retried(mock_kafka, names, sinkd, sluice, offsets):
    kafka = mock_kafka
    count = 50
    topic = names.topic()
    kafka.create_topic(topic, 1)
    group = names.group()
    sink = sinkd("s")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"s": sink.url()})
    run = sluice(cfg)
    run.wait_for_log(r"assigned 1 partition", 30)
    reader = offsets(group, kafka.bootstrap)
    # Every OffsetCommit fails (a rebalance on the broker side) while the
    # orders are delivered; then the broker accepts commits again.
    kafka.command("error OffsetCommit REBALANCE_IN_PROGRESS 100000")
    try:
        harness.produce_orders(kafka.bootstrap, topic, count)
        wait_until(lambda: sink.ok_count() >= count, 30, "delivery",
                   alive=[run])
        run.wait_for_log(r"offset commit failed", 10)
    finally:
        kafka.command("clear OffsetCommit")
    # Plenty of commit intervals (200ms) for a retry.
    try:
        wait_until(lambda: reader.committed(topic, 1) == [count], 5,
                   "the failed commit to be retried", alive=[run])
        before_stop = [count]
    except AssertionError:
        before_stop = reader.committed(topic, 1)
    run.terminate()
    assert run.wait(60) == 0
    after_stop = reader.committed(topic, 1)
    assert before_stop == [count] and after_stop == [count], (
        "all %d messages were delivered, but the committed offset was %s "
        "5 s after the broker accepted commits again and %s after a clean "
        "SIGTERM: a restart would deliver them all again"
        % (count, before_stop, after_stop))
