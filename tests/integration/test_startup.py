"""Start-up failures: a source that cannot be reached, or a topic that does
not exist, is named once, and a worker that never got through exits 1 --
after source.connect_timeout, or when it is stopped before then."""

import re
import signal
import time

import harness

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: refused at once


def unreachable_cfg(names, sinkd, **source):
    sink = sinkd("a")
    cfg = harness.pipeline(names.pipeline, UNREACHABLE, names.topic(),
                           names.group(), {"a": sink.url()})
    cfg["source"].update(source)
    return cfg


def lines_matching(log, pattern):
    return [l for l in log.splitlines() if re.search(pattern, l)]


def test_unreachable_brokers_exit_1_after_connect_timeout(names, sinkd,
                                                          sluice):
    run = sluice(unreachable_cfg(names, sinkd, connect_timeout="2s"))
    rc = run.wait(30)
    log = run.log()
    assert rc == 1, log
    assert lines_matching(
        log, r"error +fatal: source: gave up after 2 s "
             r"\(source.connect_timeout\): cannot reach the brokers "
             r"127\.0\.0\.1:1: .*Connection refused"), log
    # One line for the state, however often librdkafka retried; the
    # fatal line repeats it once.
    refused = lines_matching(log, r"Connection refused")
    assert len(refused) == 2, "\n".join(refused)
    assert not lines_matching(log, r"kafka FAIL|_TRANSPORT"), log


def test_stopped_before_the_source_answered_exits_1(names, sinkd, sluice):
    """Stopped (SIGINT) while the brokers were never reached: a failed
    start, not a clean stop; connect_timeout 0 keeps trying until then."""
    run = sluice(unreachable_cfg(names, sinkd, connect_timeout="0"))
    run.wait_for_log(r"source: cannot reach the brokers 127\.0\.0\.1:1: "
                     r".*; trying until it is", 20)
    time.sleep(3)  # well past librdkafka's retries: still running
    run.check_alive()
    run.signal(signal.SIGINT)
    rc = run.wait(30)
    log = run.log()
    assert rc == 1, log
    assert lines_matching(log, r"error +stopped without ever consuming: "
                               r"cannot reach the brokers"), log
    assert len(lines_matching(log, r"Connection refused")) == 2, log


def test_unresolvable_broker_is_named(names, sinkd, sluice):
    sink = sinkd("a")
    cfg = harness.pipeline(names.pipeline, "kafka.sluice-test.invalid:9092",
                           names.topic(), names.group(), {"a": sink.url()})
    cfg["source"]["connect_timeout"] = "2s"
    run = sluice(cfg)
    assert run.wait(30) == 1
    log = run.log()
    assert lines_matching(
        log, r"cannot reach the brokers kafka\.sluice-test\.invalid:9092: "
             r".*resolve"), log


def test_missing_topic_is_reported_as_such(kafka, names, sinkd, sluice):
    sink = sinkd("a")
    topic = names.topic()  # never created
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": sink.url()})
    cfg["source"]["connect_timeout"] = "3s"
    run = sluice(cfg)
    assert run.wait(30) == 1
    log = run.log()
    said = lines_matching(log, r"topic `%s` does not exist on " % topic)
    # The state once, and once more in the reason it gave up.
    assert len(said) == 2, log
    assert "gave up after 3 s" in said[1], log
    assert not lines_matching(log, r"consume error"), log


def test_topic_created_within_connect_timeout(kafka, names, sinkd, sluice):
    """A topic that appears while sluice waits is consumed: the deadline
    only fails a start that never got through."""
    sink = sinkd("a")
    topic = names.topic()
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": sink.url()})
    cfg["source"]["connect_timeout"] = "60s"
    run = sluice(cfg)
    run.wait_for_log(r"topic `%s` does not exist" % topic, 20)
    kafka.create_topic(topic, 2)
    harness.produce_orders(kafka.bootstrap, topic, 20)
    harness.wait_sinks_ok([sink], 20, 60, alive=[run])
    run.wait_for_log(r"source: every topic exists on .* now", 30)
    run.terminate()
    assert run.wait(60) == 0
