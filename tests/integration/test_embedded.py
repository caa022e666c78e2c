"""`brokers: embedded`: sluice runs its own in-memory Kafka cluster."""

import collections
import decimal
import json
import os
import re

import harness
from harness import wait_until

READY_RE = r"embedded Kafka cluster ready bootstrap=(\S+)"
EXAMPLE_ENV = ("KAFKA_BROKERS", "GROUP", "RETRY_BACKOFF", "BILLING_URL",
               "CRM_URL", "SEARCH_URL", "ANALYTICS_URL", "BILLING_TOKEN")


def run_embedded(run, sinks, count, group, topic, partitions):
    bootstrap = run.wait_for_log(READY_RE, 30).group(1)
    run.wait_for_log(r"assigned \d+ partition", 30)
    harness.produce_orders(bootstrap, topic, count)
    harness.wait_sinks_ok(sinks, count, 60, alive=[run])
    reader = harness.OffsetReader(bootstrap, group)
    try:
        ends = reader.end_offsets(topic, partitions)
        assert sum(ends) == count, ends
        harness.wait_commits_at_end(reader, topic, partitions, [run],
                                    ends=ends)
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


def example_requests(order):
    """What the shipped example's transforms send each sink for an order
    (a dict from its JSON): sink -> (method, path suffix, body) or None
    when that sink's transform skips it."""
    enriched = dict(order)
    enriched["amount_cents"] = int(
        decimal.Decimal(str(order["amount"])) * 100)
    enriched["customer"] = enriched.pop("customer_id")
    return {
        "billing": ("POST", "", {
            "invoice_ref": order["order_id"], "tenant": order["tenant_id"],
            "amount_cents": enriched["amount_cents"],
            "currency": order["currency"]}),
        "crm": None if order["status"] == "cancelled" else ("POST", "", {
            "customer": enriched["customer"],
            "last_order": order["order_id"],
            "last_order_at": order["created_at"],
            "status": order["status"]}),
        "search": ("PUT", "/" + order["order_id"], {
            "id": order["order_id"], "tenant": order["tenant_id"],
            "status": order["status"],
            "skus": [i["sku"] for i in order["items"]],
            "sequence": order["sequence"]}),
        "analytics": ("POST", "", enriched),
    }


def test_shipped_example_pipeline_on_embedded(names, sinkd, sluice):
    """pipelines/orders-fanout.yaml as shipped, sinks and token from env:
    its transforms enrich each order once, shape a different request per
    sink and skip cancelled orders at the crm only."""
    count = 1000
    sinks = [sinkd(n) for n in ("billing", "crm", "search", "analytics")]
    token = "tok-%s" % names.base
    env = {k: None for k in EXAMPLE_ENV}
    env.update({"%s_URL" % s.name.upper(): s.url() for s in sinks})
    env.update({"RETRY_BACKOFF": "200ms", "BILLING_TOKEN": token,
                "GROUP": names.group()})
    run = sluice(path=os.path.join(harness.REPO, "pipelines",
                                   "orders-fanout.yaml"), env=env)
    want = harness.expected_orders(count)
    orders = {oid: json.loads(body) for oid, (_, _, body) in want.items()}
    expect = {oid: example_requests(o) for oid, o in orders.items()}
    counts = {s.name: sum(1 for e in expect.values() if e[s.name])
              for s in sinks}
    assert 0 < counts["crm"] < count  # some orders are cancelled

    bootstrap = run.wait_for_log(READY_RE, 30).group(1)
    run.wait_for_log(r"assigned \d+ partition", 30)
    harness.produce_orders(bootstrap, "orders", count)
    wait_until(lambda: all(s.ok_count() >= counts[s.name] for s in sinks),
               60, "every sink to get its requests", alive=[run],
               details=lambda: {s.name: s.stats() for s in sinks})
    run.terminate()
    assert run.wait(60) == 0
    consumed, in_flight, counters = run.summary()
    assert (consumed, in_flight) == (count, 0), run.summary()
    assert counters.get("crm_skipped") == count - counts["crm"], counters

    for s in sinks:
        recs = s.records()
        got = harness.id_counts(recs)
        mine = [k for k, e in expect.items() if e[s.name]]
        assert got == collections.Counter({k: 1 for k in mine}), \
            "%s: %s" % (s.name, harness.describe_counter_diff(got, mine))
        for r in recs:
            method, suffix, body = expect[r.key][s.name]
            assert r.method == method, (s.name, r)
            assert r.path == "/" + s.name + suffix, (s.name, r.path)
            assert json.loads(r.body) == body, (s.name, r.key, r.body)
        auth = {r.headers.get("authorization") for r in recs}
        assert auth == ({"Bearer " + token} if s.name == "billing"
                        else {None}), (s.name, auth)
    # Numbers the transform did not touch go out as they came: 64-bit
    # sequences exact, amounts with their two decimals.
    for r in sinks[3].records():
        order_text = want[r.key][2].decode()
        for field in ("sequence", "amount"):
            raw = re.search(r'"%s":([0-9.]+)' % field, order_text).group(1)
            assert '"%s":%s' % (field, raw) in r.body, (field, r.body)
    for r in sinks[0].records():
        assert r.headers.get("x-tenant") == expect[r.key]["billing"][2][
            "tenant"]
    assert token not in run.log()
