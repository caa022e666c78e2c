"""`brokers: embedded`: sluice runs its own in-memory Kafka cluster."""

import collections
import os

import harness
from harness import wait_until

READY_RE = r"embedded Kafka cluster ready bootstrap=(\S+)"
EXAMPLE_ENV = ("KAFKA_BROKERS", "GROUP", "RETRY_BACKOFF", "BILLING_URL",
               "CRM_URL", "SEARCH_URL", "ANALYTICS_URL", "BILLING_TOKEN")


def run_embedded(run, sinks, count, group, topic, partitions):
    bootstrap = run.wait_for_log(READY_RE, 30).group(1)
    run.wait_for_log(r"assigned \d+ partition", 30)
    harness.produce_orders(bootstrap, topic, count)
    wait_until(lambda: all(s.ok_count() >= count for s in sinks), 60,
               "every sink to get %d orders" % count, alive=[run],
               details=lambda: {s.name: s.stats() for s in sinks})
    reader = harness.OffsetReader(bootstrap, group)
    try:
        ends = reader.end_offsets(topic, partitions)
        assert sum(ends) == count, ends
        wait_until(lambda: harness.commits_reached_end(
            reader.committed(topic, partitions), ends), 30,
            "commits at the end", alive=[run])
    finally:
        reader.close()
    run.terminate()
    assert run.wait(60) == 0
    want = harness.expected_orders(count)
    for s in sinks:
        recs = s.records()
        got = harness.id_counts(recs)
        assert got == collections.Counter({k: 1 for k in want}), \
            "%s: %s" % (s.name, harness.describe_counter_diff(got, want))
        for r in recs:
            assert r.body.encode() == want[r.key][2]
    return want


def test_embedded_cluster_two_sinks(names, sinkd, sluice):
    count, partitions = 1000, 4
    a, b = sinkd("a"), sinkd("b")
    group = names.group()
    cfg = harness.pipeline(names.pipeline, "embedded", "orders", group,
                           {"a": a.url(), "b": b.url()})
    cfg["source"]["embedded_partitions"] = partitions
    run = sluice(cfg)
    run_embedded(run, [a, b], count, group, "orders", partitions)
    assert "in memory, for development only" in run.log()


def test_shipped_example_pipeline_on_embedded(names, sinkd, sluice):
    """pipelines/orders-fanout.yaml as shipped, sinks and token from env."""
    count = 1000
    sinks = [sinkd(n) for n in ("billing", "crm", "search", "analytics")]
    token = "tok-%s" % names.base
    env = {k: None for k in EXAMPLE_ENV}
    env.update({"%s_URL" % s.name.upper(): s.url() for s in sinks})
    env.update({"RETRY_BACKOFF": "200ms", "BILLING_TOKEN": token,
                "GROUP": names.group()})
    run = sluice(path=os.path.join(harness.REPO, "pipelines",
                                   "orders-fanout.yaml"), env=env)
    run_embedded(run, sinks, count, env["GROUP"], "orders", 8)
    for s in sinks:
        recs = s.records()
        assert {r.method for r in recs} == {
            "PUT" if s.name == "search" else "POST"}
        auth = {r.headers.get("authorization") for r in recs}
        assert auth == ({"Bearer " + token} if s.name == "billing"
                        else {None}), (s.name, auth)
    assert token not in run.log()
