"""The seed's migration, end to end (docs/migration.md): a publisher
dual-writes each order to Kafka and to the legacy endpoint, which applies
it to four systems and logs its outcomes; the pipeline that replaces it
consumes the topic and logs its own; `sluice reconcile` finds no diff.
A bug planted in one sink's transform is found, exactly; so is it by a
shadow run, which sends nothing."""

import json
import os
import subprocess
import sys

import harness
from harness import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATION = os.path.join(HERE, "migration")
SYSTEMS = ("billing", "crm", "search", "analytics")
ORDERS = 200


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


class Legacy:
    def __init__(self, tmp_path, sinks):
        self.outcomes = str(tmp_path / "legacy.ndjson")
        port_file = str(tmp_path / "legacy.port")
        args = [sys.executable,
                os.path.join(harness.TOOLS_DIR, "legacy_fake.py"),
                "--port-file", port_file, "--outcomes", self.outcomes]
        for name in SYSTEMS:
            args += ["--sink", "%s=%s" % (name, sinks[name].url())]
        self.proc = subprocess.Popen(args)
        self.port = wait_until(
            lambda: os.path.exists(port_file) and int(open(port_file).read()),
            15, "the legacy service to listen")

    def url(self):
        return "http://127.0.0.1:%d/orders" % self.port

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def reconcile(left, right):
    p = harness.sluice_cmd(["reconcile", "--output", "json", "--examples",
                            "1000", left, right], timeout=60)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def consuming_pipeline(kafka, names, topic, sinks, outcomes, billing_lua):
    scripts = {"billing": billing_lua, "crm": "crm.lua",
               "search": "search.lua"}
    spec = {}
    for name in SYSTEMS:
        spec[name] = {"url": sinks[name].url()}
        if name in scripts:
            spec[name]["transform"] = os.path.join(MIGRATION, scripts[name])
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), spec)
    cfg["outcomes"] = {"path": outcomes}
    return cfg


def run_until(sluice, cfg, outcomes, count, args=("--progress",)):
    run = sluice(cfg, args=args)
    wait_until(lambda: len(lines(outcomes)) >= count, 90,
               "%d outcome lines in %s" % (count, outcomes), interval=0.3,
               alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    return run


def test_dual_write_reconcile_zero_then_a_planted_bug_then_shadow(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    topic = topic_factory(4)
    sinks = {name: sinkd(name) for name in SYSTEMS}
    legacy = Legacy(tmp_path, sinks)
    try:
        # The publisher: each order to Kafka and to the legacy endpoint.
        port = harness.free_port()
        pub = {
            "pipeline": names.pipeline + "-pub",
            "source": {"type": "http", "listen": "127.0.0.1:%d" % port,
                       "path": "/orders", "key": "json:tenant_id"},
            "sinks": {
                "kafka": {"type": "kafka", "brokers": kafka.bootstrap,
                          "topic": topic},
                "legacy": {"type": "http", "url": legacy.url()},
            },
            "outcomes": {"path": str(tmp_path / "publisher.ndjson")},
        }
        publisher = sluice(pub, args=())
        wait_until(lambda: "listening on" in open(
            publisher.stderr_path).read(), 30, "the publisher",
            alive=[publisher])
        import test_publisher
        client = test_publisher.Client(port)
        ids = []
        for n in range(ORDERS):
            order = {"tenant_id": "t%d" % (n % 9), "order_id": "o-%d" % n,
                     "customer_id": "c-%d" % (n % 31),
                     "amount_cents": 1000 + 7 * n, "n": n}
            status, _, answer = client.post(order)
            assert status == 202, answer
            ids.append(answer["message_id"])
        client.close()
        wait_until(lambda: len(lines(legacy.outcomes)) >= 4 * ORDERS, 60,
                   "the legacy service to apply every order",
                   alive=[publisher])
        wait_until(lambda: len(lines(tmp_path / "publisher.ndjson")) >=
                   2 * ORDERS, 30, "the publisher's outcomes",
                   alive=[publisher])
        publisher.terminate()
        assert publisher.wait(30) == 0
        dual = lines(tmp_path / "publisher.ndjson")
        assert {l["sink"] for l in dual} == {"kafka", "legacy"}
        assert all(l["outcome"] == "delivered" for l in dual)
    finally:
        legacy.stop()

    # The pipeline that replaces the legacy service.
    good = str(tmp_path / "pipeline.ndjson")
    run_until(sluice, consuming_pipeline(kafka, names, topic, sinks, good,
                                         "billing.lua"),
              good, 4 * ORDERS)
    rc, report = reconcile(legacy.outcomes, good)
    assert rc == 0, report
    assert report["totals"]["matched"] == 4 * ORDERS
    assert report["streak_days"] >= 1 and report["diff"] is False
    assert {l["key"] for l in lines(good)} == set(ids)

    # A bug in billing's transform: every tenth order a cent off.
    buggy = str(tmp_path / "pipeline-bug.ndjson")
    run_until(sluice, consuming_pipeline(kafka, names, topic, sinks, buggy,
                                         "billing-bug.lua"),
              buggy, 4 * ORDERS)
    rc, report = reconcile(legacy.outcomes, buggy)
    expected = {ids[n] for n in range(0, ORDERS, 10)}
    assert rc == 1
    assert report["totals"]["mismatched"] == len(expected)
    assert report["totals"]["missing_left"] == 0
    assert report["totals"]["missing_right"] == 0
    billing = report["sinks"]["billing"]
    assert billing["totals"]["mismatched"] == len(expected)
    found = {e["key"] for e in billing["examples"]["mismatched"]}
    assert found == expected
    assert all("body.amount_cents" in e["detail"]
               for e in billing["examples"]["mismatched"])
    for name in ("crm", "search", "analytics"):
        assert report["sinks"][name]["totals"]["mismatched"] == 0

    # The same buggy pipeline as a shadow run: the same diff, and not one
    # request reaches a system.
    before = {name: len(sinks[name].records()) for name in SYSTEMS}
    shadow = str(tmp_path / "shadow.ndjson")
    run_until(sluice, consuming_pipeline(kafka, names, topic, sinks, shadow,
                                         "billing-bug.lua"),
              shadow, 4 * ORDERS, args=("--progress", "--shadow"))
    assert {name: len(sinks[name].records()) for name in SYSTEMS} == before
    assert all(l["outcome"] == "shadow" for l in lines(shadow))
    rc, shadow_report = reconcile(legacy.outcomes, shadow)
    assert rc == 1
    assert shadow_report["totals"] == report["totals"]
    assert {e["key"] for e in shadow_report["sinks"]["billing"]["examples"]
            ["mismatched"]} == expected
