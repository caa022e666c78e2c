"""The outcome log (docs/outcomes.md) and shadow runs (`mode: shadow`,
`sluice run --shadow`): what a migration compares."""

import base64
import collections
import hashlib
import json
import os

from confluent_kafka.admin import AdminClient

import harness
from harness import wait_until


def outcome_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def by_sink(lines):
    out = collections.defaultdict(list)
    for line in lines:
        out[line["sink"]].append(line)
    return out


def summary(run):
    s = run.summary()
    assert s is not None, run.describe()
    return s[2]


def test_a_line_per_terminal_outcome_of_each_sink(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    count = 300
    topic = topic_factory(2)
    harness.produce_orders(kafka.bootstrap, topic, count)
    a, b, c = sinkd("a"), sinkd("b"), sinkd("c")
    b.script(reject_every=5, reject_status=409)
    c.script(reject_every=7, reject_status=400)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"a": a.url("/orders?v=1"), "b": b.url(),
                            "c": c.url()})
    cfg["outcomes"] = {"path": "outcomes.ndjson"}
    run = sluice(cfg)
    harness.wait_sinks_ok([a], count, 60, alive=[run])
    wait_until(lambda: len(c.records()) >= count, 60,
               "c to answer every message", alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    counters = summary(run)

    # Relative to the pipeline file, as every path in it is.
    path = os.path.join(os.path.dirname(run.config_path), "outcomes.ndjson")
    lines = outcome_lines(path)
    sinks = by_sink(lines)
    assert set(sinks) == {"a", "b", "c"}
    for name, got in sinks.items():
        keys = collections.Counter(line["key"] for line in got)
        assert len(keys) == count and set(keys.values()) == {1}, name
        for line in got:
            assert line["v"] == 1 and line["pipeline"] == names.pipeline
            assert line["ts"].endswith("Z") and "T" in line["ts"]
            assert line["source"]["topic"] == topic

    # What each request carried: the body's hash and the body itself.
    sent = {r.key: r for r in a.records()}
    for line in sinks["a"]:
        assert line["outcome"] == "delivered"
        assert (line["method"], line["path"]) == ("POST", "/orders?v=1")
        assert line["status"] == 200 and line["attempts"] == 1
        req = sent[line["key"]]
        assert line["body_sha256"] == hashlib.sha256(
            req.body.encode()).hexdigest()
        assert line["body"] == json.loads(req.body)
        assert (line["source"]["partition"], line["source"]["offset"]) == (
            req.partition, req.offset)

    conflicts = {r.key for r in b.records() if r.status == 409}
    applied = {l["key"] for l in sinks["b"] if l["outcome"] == "applied"}
    assert conflicts and applied == conflicts
    assert all(l["status"] == 409 for l in sinks["b"]
               if l["outcome"] == "applied")
    assert counters.get("b_applied") == len(conflicts)

    rejected = {r.key for r in c.records() if r.status == 400}
    dead = [l for l in sinks["c"] if l["outcome"] == "dead_lettered"]
    assert rejected and {l["key"] for l in dead} == rejected
    for line in dead:
        assert line["error"] == "rejected" and line["status"] == 400
        assert line["attempts"] == 1 and line["path"] == "/c"
    assert counters.get("c_dead_lettered") == len(rejected)


def test_a_body_that_is_not_json_is_recorded_in_base64(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    topic = topic_factory(1)
    a = sinkd("a")
    script = tmp_path / "text.lua"
    script.write_text(
        "function transform(msg)\n"
        "  return {body = 'line one\\nline \"two\"\\0'}\n"
        "end\n")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"a": {"url": a.url(), "transform": str(script)}})
    cfg["outcomes"] = {"path": str(tmp_path / "out.ndjson")}
    harness.produce_orders(kafka.bootstrap, topic, 5)
    run = sluice(cfg)
    harness.wait_sinks_ok([a], 5, 60, alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    lines = outcome_lines(tmp_path / "out.ndjson")
    assert len(lines) == 5
    body = b'line one\nline "two"\0'
    for line in lines:
        assert "body" not in line
        assert base64.b64decode(line["body_base64"]) == body
        assert line["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_shadow_run_sends_nothing_and_says_what_it_would_have_sent(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    count = 200
    topic = topic_factory(2)
    harness.produce_orders(kafka.bootstrap, topic, count)
    crm, billing, mirror = sinkd("crm"), sinkd("billing"), sinkd("mirror")
    group = names.group()
    cfg = harness.pipeline(
        names.pipeline, kafka.bootstrap, topic, group,
        {"crm": crm.url(),
         "billing": {"url": billing.url(),
                     "shadow_url": mirror.url("/billing")}})
    cfg["outcomes"] = {"path": str(tmp_path / "shadow.ndjson")}
    cfg["dedupe"] = {"store": "sqlite", "path": str(tmp_path / "m.db")}
    cfg["dlq"] = {"topic": names.topic() + ".dlq"}
    run = sluice(cfg, args=("--progress", "--shadow"))
    wait_until(lambda: len(mirror.records()) >= count, 60,
               "the shadow_url to get every request", alive=[run])
    reader = harness.OffsetReader(kafka.bootstrap, group + "-shadow")
    try:
        harness.wait_commits_at_end(reader, topic, 2, alive=[run])
    finally:
        reader.close()
    run.terminate()
    assert run.wait(60) == 0

    assert crm.records() == [] and billing.records() == []
    assert {r.path for r in mirror.records()} == {"/billing"}
    lines = by_sink(outcome_lines(tmp_path / "shadow.ndjson"))
    assert len(lines["crm"]) == count and len(lines["billing"]) == count
    mirrored = {r.key: r.body for r in mirror.records()}
    for line in lines["crm"]:
        # Nothing was sent: what would have been, without an answer (the
        # same body billing's shadow_url got, as no transform changes it).
        assert line["outcome"] == "shadow"
        assert "status" not in line and "attempts" not in line
        assert line["method"] == "POST" and line["path"] == "/crm"
        body = mirrored[line["key"]]
        assert line["body_sha256"] == hashlib.sha256(
            body.encode()).hexdigest()
        assert line["body"] == json.loads(body)
    for line in lines["billing"]:
        assert line["outcome"] == "shadow" and line["status"] == 200
        assert line["path"] == "/billing"

    # Production's state is untouched: no commit in its group, no marker
    # file, no DLQ topic.
    prod = harness.OffsetReader(kafka.bootstrap, group)
    try:
        assert all(c < 0 for c in prod.committed(topic, 2))
    finally:
        prod.close()
    assert not (tmp_path / "m.db").exists()
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}) \
        .list_topics(timeout=10).topics
    assert cfg["dlq"]["topic"] not in topics
    assert "shadow run" in open(run.stderr_path).read()


def test_mode_shadow_in_the_file_and_its_errors(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    topic = topic_factory(1)
    a = sinkd("a")
    harness.produce_orders(kafka.bootstrap, topic, 20)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url()})
    cfg["mode"] = "shadow"
    cfg["outcomes"] = {"path": str(tmp_path / "o.ndjson"), "bodies": False}
    run = sluice(cfg)
    wait_until(lambda: os.path.exists(tmp_path / "o.ndjson") and len(
        outcome_lines(tmp_path / "o.ndjson")) >= 20, 60,
        "20 shadow outcomes", interval=0.3, alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    assert a.records() == []
    for line in outcome_lines(tmp_path / "o.ndjson"):
        assert line["outcome"] == "shadow" and "body" not in line
        assert len(line["body_sha256"]) == 64

    bad = dict(cfg, mode="dry", outcomes={"bodies": True})
    path = harness.write_yaml(str(tmp_path / "bad.yaml"), bad)
    p = harness.sluice_cmd(["validate", path])
    assert p.returncode == 2
    assert "bad.yaml:" in p.stderr and "mode" in p.stderr
    assert "outcomes: expected one of `path` (a file) and `topic`" in \
        p.stderr


def test_an_outcome_topic_reconciles_with_the_same_run_to_a_file(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    count = 150
    topic, log_topic = topic_factory(2), topic_factory(1)
    harness.produce_orders(kafka.bootstrap, topic, count)
    a = sinkd("a")
    for where in ({"path": str(tmp_path / "a.ndjson")},
                  {"topic": log_topic}):
        cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                               names.group(), {"a": a.url()})
        cfg["outcomes"] = where
        run = sluice(cfg)
        reader = harness.OffsetReader(kafka.bootstrap,
                                      cfg["source"]["group"])
        try:
            harness.wait_commits_at_end(reader, topic, 2, alive=[run])
        finally:
            reader.close()
        run.terminate()
        assert run.wait(60) == 0
    p = harness.sluice_cmd(["reconcile", "--output", "json",
                            str(tmp_path / "a.ndjson"),
                            "kafka://%s/%s" % (kafka.bootstrap, log_topic)])
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["totals"]["matched"] == count

    both = dict(cfg, outcomes={"path": "x", "topic": "y"})
    path = harness.write_yaml(str(tmp_path / "both.yaml"), both)
    p = harness.sluice_cmd(["validate", path])
    assert p.returncode == 2 and "one of `path`" in p.stderr, p.stderr
