"""Fan-out: every message reaches every sink, intact, in per-key order."""

import collections

import pytest

import harness


def test_happy_path_four_sinks_exactly_once(kafka, topic_factory, names,
                                             sinkd, sluice, offsets):
    count, partitions = 5000, 8
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    sinks = [sinkd(n) for n in ("billing", "crm", "search", "analytics")]
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {s.name: s.url() for s in sinks})
    cfg["sinks"]["search"]["method"] = "PUT"
    run = sluice(cfg)

    harness.wait_sinks_ok(sinks, count, 90, alive=[run])
    reader = offsets(group)
    ends = reader.end_offsets(topic, partitions)
    assert sum(ends) == count
    harness.wait_commits_at_end(reader, topic, partitions, [run], ends=ends)

    run.terminate()
    assert run.wait(60) == 0
    committed = reader.committed(topic, partitions)
    assert committed == ends, "committed %s != end offsets %s" % (
        committed, ends)
    summary = run.summary()
    assert summary is not None, run.describe()
    assert summary[0] == count and summary[1] == 0
    for s in sinks:
        assert summary[2][s.name] == count, summary

    want = harness.expected_orders(count)
    for s in sinks:
        recs = s.records()
        got = harness.id_counts(recs)
        assert got == collections.Counter({k: 1 for k in want}), \
            "%s: %s" % (s.name, harness.describe_counter_diff(got, want))
        method = "PUT" if s.name == "search" else "POST"
        for r in recs:
            i, key, body = want[r.key]
            assert r.status == 200
            assert r.method == method and r.path == "/" + s.name
            assert r.body is not None and r.body.encode() == body, \
                "%s: body of %s differs" % (s.name, r.key)
            assert r.headers["kafka-key"] == key
            assert r.headers["kafka-topic"] == topic
            assert r.headers["kafka-header-message-id"] == r.key
            assert r.headers["content-type"] == "application/json"
        # (partition, offset) pairs are each delivered once and cover the
        # whole topic.
        pos = collections.Counter((r.partition, r.offset) for r in recs)
        assert len(pos) == count and max(pos.values()) == 1
        for p in range(partitions):
            assert sorted(o for (q, o) in pos if q == p) == \
                list(range(ends[p]))


@pytest.mark.parametrize("ordering", ["key", "partition"])
def test_order_survives_a_failing_sink(kafka, topic_factory, names, sinkd,
                                       sluice, ordering):
    count, partitions, tenants = 3000, 4, 20
    topic = topic_factory(partitions)
    flaky = sinkd("flaky")
    steady = sinkd("steady")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"flaky": flaky.url(), "steady": steady.url()})
    if ordering != "key":  # key is the default
        cfg["delivery"]["ordering"] = ordering
    run = sluice(cfg)
    # Produce while sluice is already consuming, so records arrive over
    # time and chains keep forming behind the failing heads.
    run.wait_for_log(r"assigned \d+ partition", 30)
    # Fails (503) for 3 s from now, then answers 200 with a little latency,
    # so retried heads and queued followers interleave.
    flaky.script(fail_for_ms=3000, latency_ms=2)
    harness.produce_orders(kafka.bootstrap, topic, count, tenants=tenants,
                           rate=1500)
    harness.wait_sinks_ok([flaky, steady], count, 90, alive=[run])
    run.terminate()
    assert run.wait(60) == 0

    flaky_recs = flaky.records()
    failures = [r for r in flaky_recs if r.status != 200]
    assert failures, "the flaky sink never failed: the test proves nothing"
    for s, recs in ((flaky, flaky_recs), (steady, steady.records())):
        seq = collections.defaultdict(list)
        for r in harness.ok_records(recs):
            i = int(r.key.split("-")[1])
            assert r.headers["kafka-key"] == harness.gen_orders.tenant_id(
                i, tenants)
            seq[r.headers["kafka-key"]].append(i)
        assert len(seq) == tenants
        for tenant, ids in seq.items():
            bad = [(a, b) for a, b in zip(ids, ids[1:]) if b <= a]
            assert not bad, "%s: %s received out of order (or twice): %s" \
                % (s.name, tenant, bad[:5])
        assert sum(len(v) for v in seq.values()) == count
        if ordering == "partition":
            by_part = collections.defaultdict(list)
            for r in harness.ok_records(recs):
                by_part[r.partition].append(r.offset)
            for p, offs in by_part.items():
                assert offs == sorted(set(offs)), \
                    "%s: partition %d out of order" % (s.name, p)
