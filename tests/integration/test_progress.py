"""Progress and logs a person (or a log pipeline) reads: --progress prints
only when something changed, with rate, lag and each sink's state, and is
a JSON object under --log-format json, where every line is JSON and lines
about a message carry its sink, topic, partition, offset and status."""

import json
import re
import time

import harness


def json_lines(run):
    out = []
    for line in run.log().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError("not a JSON line: %r\n%s"
                                 % (line, run.describe()))
    return out


def progress_objects(run):
    return [o for o in json_lines(run) if o.get("msg") == "progress"]


def test_json_progress_and_structured_lines(kafka, topic_factory, names,
                                            sinkd, sluice):
    topic = topic_factory(2)
    ok, down = sinkd("ok"), sinkd("down")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"ok": ok.url(),
                                           "down": down.url()})
    run = sluice(cfg, args=("--progress", "--log-format", "json"))
    run.wait_for_log(r'"msg":"assigned \d+ partition', 60)
    harness.produce_orders(kafka.bootstrap, topic, 20)
    harness.wait_until(
        lambda: any(p["consumed"] == 20 and
                    p["sinks"]["ok"]["delivered"] == 20
                    for p in progress_objects(run)),
        30, "a progress object with everything delivered",
        details=run.describe)
    last = progress_objects(run)[-1]
    assert last["sinks"]["down"]["state"] == "ok"
    assert "rate" in last and "lag" in last and "ts" in last
    # Idle: nothing changes, nothing is printed.
    before = len(progress_objects(run))
    time.sleep(3.5)
    assert len(progress_objects(run)) <= before + 1

    down.script(fail_for_ms=600000, fail_status=503)
    harness.produce_orders(kafka.bootstrap, topic, 5, start=20)
    harness.wait_until(
        lambda: progress_objects(run)[-1]["sinks"]["down"]["state"] in
        ("retrying", "breaker_open"), 30, "down's state in progress",
        details=run.describe)
    failures = [o for o in json_lines(run)
                if o.get("level") == "warn" and o.get("sink") == "down"]
    assert failures, run.describe()
    f = failures[0]
    assert f["topic"] == topic and f["status"] == 503
    assert isinstance(f["partition"], int) and isinstance(f["offset"], int)
    down.script()
    harness.wait_until(lambda: down.ok_count() == 25, 60, "down caught up")
    run.terminate()
    assert run.wait(60) == 0
    summary = [o for o in json_lines(run) if o.get("msg") == "summary"]
    assert summary and summary[-1]["consumed"] == 25, run.describe()
    assert summary[-1]["sinks"]["down"]["delivered"] == 25


def test_text_progress_names_rate_lag_and_states(kafka, topic_factory,
                                                 names, sinkd, sluice):
    topic = topic_factory(1)
    a = sinkd("a")
    a.script(fail_for_ms=600000, fail_status=503)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url()})
    run = sluice(cfg)
    run.wait_for_log(r"assigned \d+ partition", 60)
    harness.produce_orders(kafka.bootstrap, topic, 3)
    line = run.wait_for_log(
        r"^progress .*a_state=(retrying|breaker_open).*$", 30).group(0)
    assert re.match(r"progress consumed=3 in_flight=3 rate=\d+/s lag=\d+ "
                    r"a=0 ", line), line
    a.script()
    harness.wait_until(lambda: a.ok_count() == 3, 60, "a caught up")
    run.terminate()
    assert run.wait(60) == 0
