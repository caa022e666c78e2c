"""Every failure has a home: the dead-letter queue, retry limits, the
circuit breaker, and `sluice dlq replay`, through the real binary on the
real broker (a dedicated one where the DLQ's broker must go down)."""

import collections
import json
import re
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

import harness
from harness import wait_until


def read_topic(bootstrap, topic, timeout=30):
    """Every record of topic, as dicts (partition, offset, key, value,
    headers {name: str}, original {name: bytes}), in partition order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        meta = c.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            return []
        parts = sorted(meta.partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p),
                                           timeout=timeout)
                for p in parts}
        c.assign([TopicPartition(topic, p, ends[p][0]) for p in parts])
        want = sum(hi - lo for lo, hi in ends.values())
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error() is not None:
                continue
            hdrs = {}
            original = {}
            for k, v in m.headers() or []:
                if k.startswith("sluice."):
                    hdrs[k] = (v or b"").decode(errors="replace")
                else:
                    original[k] = v
            out.append({"partition": m.partition(), "offset": m.offset(),
                        "key": m.key(), "value": m.value(),
                        "headers": hdrs, "original": original,
                        "timestamp": m.timestamp()[1]})
        assert len(out) == want, "read %d of %d records of %s" % (
            len(out), want, topic)
        return sorted(out, key=lambda r: (r["partition"], r["offset"]))
    finally:
        c.close()


def dlq_count(bootstrap, topic):
    try:
        return len(read_topic(bootstrap, topic, timeout=10))
    except Exception:  # noqa: BLE001 -- the topic may not exist yet
        return 0


def fanout(names, kafka_bootstrap, topic, group, sinks, **delivery):
    cfg = harness.pipeline(names.pipeline, kafka_bootstrap, topic, group,
                           sinks, **delivery)
    cfg["dlq"] = {"topic": "%s.dlq" % names.pipeline}
    return cfg


def rejected_ids(count, every):
    return {harness.gen_orders.order_id(i) for i in range(count)
            if harness.sinkd_rejects(harness.gen_orders.order_id(i), every)}


def test_rejected_messages_go_to_the_dlq_with_context(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    count, partitions, every = 2500, 4, 100
    topic = topic_factory(partitions)
    group = names.group()
    secret = "sk-live-%s" % names.base
    billing, crm, search = sinkd("billing"), sinkd("crm"), sinkd("search")
    # billing rejects ~1% of orders for good and echoes the request's
    # headers (the Authorization secret among them) in its error body.
    billing.script(reject_every=every, reject_status=400, echo_headers=True)
    cfg = fanout(names, kafka.bootstrap, topic, group, {
        "billing": {"url": billing.url(),
                    "headers": {"Authorization": "Bearer ${SLUICE_IT_TOKEN}"}},
        "crm": crm.url(), "search": search.url()})
    run = sluice(cfg, env={"SLUICE_IT_TOKEN": secret})
    harness.produce_orders(kafka.bootstrap, topic, count)
    bad = rejected_ids(count, every)
    assert 10 < len(bad) < 50
    harness.wait_sinks_ok([crm, search], count, 60, alive=[run])
    wait_until(lambda: billing.ok_count() >= count - len(bad), 60,
               "billing's good orders", alive=[run])
    harness.wait_commits_at_end(offsets(group), topic, partitions, [run])

    want = harness.expected_orders(count)
    for s in (crm, search):
        got = harness.id_counts(harness.ok_records(s.records()))
        assert got == collections.Counter({k: 1 for k in want}), \
            harness.describe_counter_diff(got, want)
    got = harness.id_counts(harness.ok_records(billing.records()))
    assert set(got) == set(want) - bad

    dlq = read_topic(kafka.bootstrap, cfg["dlq"]["topic"])
    assert sorted(r["headers"]["sluice.dedupe.key"] for r in dlq) == \
        sorted(bad)
    for r in dlq:
        h = r["headers"]
        oid = h["sluice.dedupe.key"]
        i, key, body = want[oid]
        assert h["sluice.pipeline"] == names.pipeline
        assert h["sluice.sink"] == "billing"
        assert h["sluice.stage"] == "sink"
        assert h["sluice.error.class"] == "rejected"
        assert h["sluice.http.status"] == "400"
        assert h["sluice.attempts"] == "1"
        assert h["sluice.source.topic"] == topic
        assert int(h["sluice.source.offset"]) >= 0
        assert 0 <= int(h["sluice.source.partition"]) < partitions
        assert int(h["sluice.attempt.first.ms"]) <= \
            int(h["sluice.attempt.last.ms"])
        assert h["sluice.replay.count"] == "0"
        assert h["sluice.worker.id"]
        assert r["key"] == key.encode()
        assert json.loads(r["value"]) == json.loads(body)
        assert r["original"]["message-id"] == oid.encode()
        # The sink echoed the Authorization header: the secret must not
        # reach the DLQ, nor the log.
        text = json.dumps(h) + repr(r["original"])
        assert secret not in text, h
        assert "[redacted]" in h["sluice.http.body"], h["sluice.http.body"]
        assert not any(k.lower() == "authorization" for k in r["original"])
    assert secret not in run.log()

    run.terminate()
    assert run.wait(60) == 0
    _, _, counters = run.summary()
    assert counters.get("billing_dead_lettered") == len(bad), run.summary()


def test_transform_errors_go_to_the_dlq(kafka, topic_factory, names, sinkd,
                                        sluice, offsets, tmp_path):
    count = 200
    topic = topic_factory(2)
    group = names.group()
    a, b = sinkd("a"), sinkd("b")
    (tmp_path / "t.lua").write_text(
        "function transform(msg)\n"
        "  local v = msg.json\n"
        "  if v.sequence % 10 == 3 then error('cannot price ' .. v.order_id) end\n"
        "  return msg\n"
        "end\n")
    # b's own transform fails on other orders: those go to b's DLQ only.
    (tmp_path / "b.lua").write_text(
        "function transform(msg)\n"
        "  if msg.json.sequence % 10 == 5 then error('no shape') end\n"
        "  return {}\n"
        "end\n")
    cfg = fanout(names, kafka.bootstrap, topic, group,
                 {"a": a.url(), "b": {"url": b.url(), "transform": "b.lua"}})
    cfg["transform"] = "t.lua"
    run = sluice(cfg)
    harness.produce_orders(kafka.bootstrap, topic, count)
    want = harness.expected_orders(count)
    bad = {oid for oid, (i, _, body) in want.items()
           if json.loads(body)["sequence"] % 10 == 3}
    unshaped = {oid for oid, (i, _, body) in want.items()
                if json.loads(body)["sequence"] % 10 == 5}
    assert bad and unshaped
    harness.wait_sinks_ok([a], count - len(bad), 60, alive=[run])
    harness.wait_sinks_ok([b], count - len(bad) - len(unshaped), 60,
                          alive=[run])
    harness.wait_commits_at_end(offsets(group), topic, 2, [run])
    got = set(harness.id_counts(harness.ok_records(a.records())))
    assert got == set(want) - bad
    got = set(harness.id_counts(harness.ok_records(b.records())))
    assert got == set(want) - bad - unshaped
    dlq = read_topic(kafka.bootstrap, cfg["dlq"]["topic"])
    shaped = [r for r in dlq if r["headers"]["sluice.stage"] == "shape"]
    assert {r["headers"]["sluice.dedupe.key"] for r in shaped} == unshaped
    for r in shaped:
        h = r["headers"]
        assert h["sluice.sink"] == "b" and h["sluice.attempts"] == "0"
        assert h["sluice.error.class"] == "shape_error"
        assert "b.lua:2: no shape" in h["sluice.error.reason"]
    dlq = [r for r in dlq if r["headers"]["sluice.stage"] != "shape"]
    assert sorted(r["headers"]["sluice.dedupe.key"] for r in dlq) == \
        sorted(bad)
    for r in dlq:
        h = r["headers"]
        assert h["sluice.sink"] == "*" and h["sluice.stage"] == "transform"
        assert h["sluice.error.class"] == "transform_error"
        assert "cannot price" in h["sluice.error.reason"]
        assert "t.lua:3" in h["sluice.error.reason"]
        assert "sluice.http.status" not in h
    run.terminate()
    assert run.wait(60) == 0

    # The transform is fixed: a replay runs it again on those records and
    # sends them on to the one sink named.
    (tmp_path / "t.lua").write_text("function transform(msg) return msg end\n")
    before = len(a.records())
    p = harness.sluice_cmd(["dlq", "replay", run.config_path, "--sink", "a"],
                           timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "replayed %d, failed again 0" % len(bad) in p.stdout, p.stdout
    got = harness.id_counts(harness.ok_records(a.records()[before:]))
    assert got == collections.Counter({k: 1 for k in bad}), got


def test_retry_deadline_sends_a_long_outage_to_the_dlq(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    topic = topic_factory(1)
    group = names.group()
    flaky, fine = sinkd("flaky"), sinkd("fine")
    no_breaker = {"breaker_failures": 0, "breaker_failure_percent": 0}
    cfg = fanout(names, kafka.bootstrap, topic, group, {
        "flaky": dict(url=flaky.url(), **no_breaker), "fine": fine.url()},
        retry_deadline="2s", retry_backoff="100ms",
        retry_backoff_max="300ms")
    run = sluice(cfg)
    reader = offsets(group)

    # A 1 s outage, shorter than the deadline: nothing goes to the DLQ.
    flaky.script(fail_for_ms=1000, fail_status=503)
    harness.produce_orders(kafka.bootstrap, topic, 10)
    harness.wait_sinks_ok([flaky, fine], 10, 60, alive=[run])
    harness.wait_commits_at_end(reader, topic, 1, [run])
    assert dlq_count(kafka.bootstrap, cfg["dlq"]["topic"]) == 0

    # A 6 s outage, longer than the deadline: what was produced during it
    # is given up on at the deadline and goes to the DLQ.
    flaky.script(fail_for_ms=6000, fail_status=503)
    harness.produce_orders(kafka.bootstrap, topic, 10, start=10)
    harness.wait_commits_at_end(reader, topic, 1, [run], timeout=60)
    dlq = read_topic(kafka.bootstrap, cfg["dlq"]["topic"])
    got = sorted(r["headers"]["sluice.dedupe.key"] for r in dlq)
    assert got == sorted(harness.gen_orders.order_id(i)
                         for i in range(10, 20)), got
    for r in dlq:
        h = r["headers"]
        assert h["sluice.error.class"] == "deadline", h
        assert h["sluice.http.status"] == "503"
        assert int(h["sluice.attempts"]) >= 2
        assert int(h["sluice.attempt.last.ms"]) - \
            int(h["sluice.attempt.first.ms"]) >= 2000
    assert fine.ok_count() == 20
    run.terminate()
    assert run.wait(60) == 0


def test_breaker_spares_a_sink_that_is_down(kafka, topic_factory, names,
                                            sinkd, sluice, offsets):
    count = 60
    topic = topic_factory(1)
    group = names.group()
    down, up = sinkd("down"), sinkd("up")
    cfg = fanout(names, kafka.bootstrap, topic, group, {
        "down": {"url": down.url(), "max_in_flight": 2,
                 "breaker_failures": 3, "breaker_cooldown": "2s"},
        "up": up.url()},
        ordering="none", retry_backoff="50ms", retry_backoff_max="100ms")
    run = sluice(cfg)
    down.script(fail_for_ms=10000, fail_status=503)
    started = time.monotonic()
    harness.produce_orders(kafka.bootstrap, topic, count)
    # The healthy sink is not held back by the one that is down.
    harness.wait_sinks_ok([up], count, 8, alive=[run])
    wait_until(lambda: down.ok_count() >= count, 60,
               "every message at the sink once it is back", alive=[run])
    harness.wait_commits_at_end(offsets(group), topic, 1, [run])
    recs = down.records()
    failed = [r for r in recs if r.status == 503]
    # Without the breaker: 60 messages retried every <=100 ms for 10 s,
    # thousands of requests. With it: the first failures (at most
    # max_in_flight at once until 3 in a row) and a probe every 2 s.
    assert len(failed) <= 2 + 3 + 10 // 2 + 3, [
        (r.ts_ms, r.status) for r in failed]
    assert time.monotonic() - started >= 9
    got = harness.id_counts(harness.ok_records(recs))
    assert got == collections.Counter(
        {k: 1 for k in harness.expected_orders(count)})
    assert dlq_count(kafka.bootstrap, cfg["dlq"]["topic"]) == 0
    run.terminate()
    assert run.wait(60) == 0
    _, _, counters = run.summary()
    assert counters.get("down_breaker_opens", 0) >= 1, run.summary()


def test_dlq_down_holds_commits_and_loses_nothing(
        kafka, topic_factory, names, sinkd, sluice, offsets, kafka_broker):
    count, every = 300, 10
    topic = topic_factory(1)
    group = names.group()
    dlq_broker = kafka_broker()
    dlq_broker.stop()
    sink = sinkd("strict")
    sink.script(reject_every=every)
    cfg = fanout(names, kafka.bootstrap, topic, group, {"strict": sink.url()})
    cfg["dlq"]["brokers"] = dlq_broker.bootstrap
    cfg["dlq"]["properties"] = {"message.timeout.ms": "2000"}
    run = sluice(cfg)
    reader = offsets(group)
    harness.produce_orders(kafka.bootstrap, topic, count)
    bad = rejected_ids(count, every)
    first_bad = min(int(oid.split("-")[1]) for oid in bad)
    wait_until(lambda: sink.ok_count() >= count - len(bad), 60,
               "the good orders", alive=[run])
    # Produced to one partition in order: order i is offset i.
    for _ in range(10):
        c = reader.committed(topic, 1)[0]
        assert c <= first_bad, "committed %d past offset %d, whose DLQ " \
            "write never succeeded" % (c, first_bad)
        time.sleep(0.3)
    # SIGTERM while the DLQ is down: no waiting out the drain timeout
    # (20 s), exit 3 (messages left uncommitted), and the summary says so.
    t0 = time.monotonic()
    run.terminate()
    assert run.wait(30) == 3
    assert time.monotonic() - t0 < 15
    _, _, counters = run.summary()
    assert counters.get("uncommitted", 0) >= 1, run.summary()
    assert reader.committed(topic, 1)[0] <= first_bad

    dlq_broker.start()
    run2 = sluice(cfg)
    harness.wait_commits_at_end(reader, topic, 1, [run2], timeout=90)
    dlq = read_topic(dlq_broker.bootstrap, cfg["dlq"]["topic"])
    assert {r["headers"]["sluice.dedupe.key"] for r in dlq} == bad
    run2.terminate()
    assert run2.wait(60) == 0


def test_kill_9_while_dead_lettering_loses_nothing(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    count, every, partitions = 4000, 5, 4
    topic = topic_factory(partitions)
    group = names.group()
    sink = sinkd("strict")
    sink.script(reject_every=every, latency_ms=2)
    cfg = fanout(names, kafka.bootstrap, topic, group, {"strict": sink.url()})
    dlq_topic = cfg["dlq"]["topic"]
    run = sluice(cfg)
    harness.produce_orders(kafka.bootstrap, topic, count)
    wait_until(lambda: dlq_count(kafka.bootstrap, dlq_topic) >= 50, 60,
               "some records in the DLQ", alive=[run])
    run.kill()
    run2 = sluice(cfg)
    harness.wait_commits_at_end(offsets(group), topic, partitions, [run2],
                                timeout=120)
    delivered = set(harness.id_counts(harness.ok_records(sink.records())))
    dead = {r["headers"]["sluice.dedupe.key"]
            for r in read_topic(kafka.bootstrap, dlq_topic)}
    want = set(harness.expected_orders(count))
    missing = want - delivered - dead
    assert not missing, "%d orders neither delivered nor dead-lettered, " \
        "e.g. %s" % (len(missing), sorted(missing)[:10])
    assert dead == rejected_ids(count, every)
    # ~800 give-ups: logged as a few lines and counts, not one each.
    for r in (run, run2):
        lines = r.log().count("gave up on")
        assert lines < 60, "%d give-up lines logged" % lines
    run2.terminate()
    assert run2.wait(60) == 0


def test_replay_sends_one_sinks_records_to_that_sink_once(
        kafka, topic_factory, names, sinkd, sluice, offsets, tmp_path):
    count, every = 400, 20
    topic = topic_factory(2)
    group = names.group()
    billing, crm = sinkd("billing"), sinkd("crm")
    billing.script(reject_every=every, reject_status=422)
    crm.script(reject_every=every + 7, reject_status=400)
    cfg = fanout(names, kafka.bootstrap, topic, group,
                 {"billing": billing.url(), "crm": crm.url()})
    cfg["dlq"]["max_replays"] = 1
    run = sluice(cfg)
    harness.produce_orders(kafka.bootstrap, topic, count)
    bad_crm = rejected_ids(count, every + 7)
    bad_billing = rejected_ids(count, every)
    harness.wait_commits_at_end(offsets(group), topic, 2, [run])
    run.terminate()
    assert run.wait(60) == 0
    path = run.config_path

    # crm is fixed; replay its records only, by two people at once: the
    # replay group shares the DLQ between them, so no record goes twice.
    crm.script(reject_every=0)
    crm_before, billing_before = len(crm.records()), len(billing.records())
    replays = [subprocess.Popen(
        [harness.binary("sluice"), "dlq", "replay", path, "--sink", "crm"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)]
    outs = [r.communicate(timeout=120) for r in replays]
    for r, (out, err) in zip(replays, outs):
        assert r.returncode == 0, out + err
        assert "failed again 0" in out, out
    counts = [int(re.search(r"replayed (\d+),", out).group(1))
              for out, _ in outs]
    assert sum(counts) == len(bad_crm), outs
    replayed = crm.records()[crm_before:]
    got = harness.id_counts(harness.ok_records(replayed))
    assert got == collections.Counter({k: 1 for k in bad_crm}), got
    assert len(replayed) == len(bad_crm)
    assert len(billing.records()) == billing_before

    # A second replay sends nothing.
    p = harness.sluice_cmd(["dlq", "replay", path, "--sink", "crm"],
                           timeout=120)
    assert p.returncode == 0 and "replayed 0," in p.stdout, p.stdout
    assert len(crm.records()) == crm_before + len(bad_crm)

    # billing is still broken: its records fail again and go back with
    # their replay count raised; at max_replays (1) the next replay skips
    # them (kept in the DLQ) unless --force.
    p = harness.sluice_cmd(["dlq", "replay", path, "--sink", "billing"],
                           timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "failed again %d" % len(bad_billing) in p.stdout, p.stdout
    sent = billing.records()[billing_before:]
    assert sorted(r.key for r in sent) == sorted(bad_billing)
    p = harness.sluice_cmd(["dlq", "replay", path, "--sink", "billing"],
                           timeout=120)
    assert "replayed 0, failed again 0, skipped %d" % len(bad_billing) \
        in p.stdout, p.stdout
    assert len(billing.records()) == billing_before + len(bad_billing)
    dlq = read_topic(kafka.bootstrap, cfg["dlq"]["topic"])
    again = [r for r in dlq if r["headers"]["sluice.replay.count"] == "1"]
    assert {r["headers"]["sluice.dedupe.key"] for r in again} == bad_billing
    p = harness.sluice_cmd(["dlq", "replay", path, "--sink", "billing",
                            "--force"], timeout=120)
    assert "failed again %d" % len(bad_billing) in p.stdout, p.stdout
    assert len(billing.records()) == billing_before + 2 * len(bad_billing)


def first_delivery_order(records):
    """key -> the order indices of each message's first 200, in the order
    the sink answered them."""
    seen = set()
    out = collections.defaultdict(list)
    for r in harness.ok_records(records):
        if r.key in seen:
            continue
        seen.add(r.key)
        out[r.headers["kafka-key"]].append(int(r.key.split("-")[1]))
    return out


def test_park_moves_a_down_sinks_backlog_and_drains_it_in_order(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    count, partitions, outage = 2000, 4, 30
    topic = topic_factory(partitions)
    group = names.group()
    down, a, b = sinkd("down"), sinkd("a"), sinkd("b")
    # Slow once back, so that the drain takes a few seconds and a kill -9
    # lands in the middle of it.
    down.script(fail_for_ms=outage * 1000, fail_status=503, latency_ms=4)
    cfg = fanout(names, kafka.bootstrap, topic, group, {
        "down": {"url": down.url(), "park_after": "2s", "max_in_flight": 4,
                 "breaker_cooldown": "2s"},
        "a": a.url(), "b": b.url()},
        max_in_flight_per_partition=50)
    start = time.monotonic()
    run = sluice(cfg)
    reader = offsets(group)
    harness.produce_orders(kafka.bootstrap, topic, count)

    # While down is down: the other sinks get everything and the commits
    # reach the end, because down's backlog is parked.
    harness.wait_sinks_ok([a, b], count, outage - 8, alive=[run])
    harness.wait_commits_at_end(reader, topic, partitions, [run],
                                timeout=max(1, outage - 5 -
                                            (time.monotonic() - start)))
    assert time.monotonic() - start < outage, "the commits waited for down"
    assert down.ok_count() == 0
    run.wait_for_log(r"sink down: parking its backlog")

    # down recovers; kill -9 in the middle of the drain, then restart.
    wait_until(lambda: down.ok_count() >= 300, outage + 30,
               "down to receive part of its backlog", alive=[run],
               interval=0.02)
    run.kill()
    assert down.ok_count() < count, "the drain finished before the kill"
    run2 = sluice(cfg)
    wait_until(lambda: len(set(harness.id_counts(harness.ok_records(
        down.records())))) >= count, 90, "down to receive every message",
        alive=[run2], details=down.stats)
    recs = down.records()
    got = harness.id_counts(harness.ok_records(recs))
    assert set(got) == set(harness.expected_orders(count))
    for key, order in first_delivery_order(recs).items():
        assert order == sorted(order), "key %s out of order: %s" % (
            key, order)
    harness.wait_commits_at_end(reader, topic, partitions, [run2])
    retry_topic = "%s.retry.down" % names.pipeline
    retry_group = "%s.retry.down" % group
    harness.wait_commits_at_end(offsets(retry_group), retry_topic, 1, [run2])
    assert dlq_count(kafka.bootstrap, cfg["dlq"]["topic"]) == 0
    run2.terminate()
    assert run2.wait(60) == 0


def test_a_record_too_large_for_the_dlq_is_cut_not_lost(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    topic = topic_factory(1)
    group = names.group()
    sink = sinkd("strict")
    sink.script(statuses=[400, 400], then=200)
    cfg = fanout(names, kafka.bootstrap, topic, group, {"strict": sink.url()})
    # The DLQ producer takes at most 100 kB; the message is 300 kB.
    cfg["dlq"]["properties"] = {"message.max.bytes": "100000"}
    run = sluice(cfg)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    big = b"x" * 300000
    p.produce(topic, key=b"k", value=big, headers=[("message-id", b"big-1")])
    # Its headers alone are too large: they go, the context stays.
    p.produce(topic, key=b"k", value=b"{}",
              headers=[("message-id", b"big-2"), ("baggage", b"y" * 150000)])
    assert p.flush(30) == 0
    harness.wait_commits_at_end(offsets(group), topic, 1, [run])
    dlq = read_topic(kafka.bootstrap, cfg["dlq"]["topic"])
    assert len(dlq) == 2
    h = dlq[0]["headers"]
    assert h["sluice.dedupe.key"] == "big-1"
    assert h["sluice.truncated"] == str(len(big))
    assert 0 < len(dlq[0]["value"]) <= 64 * 1024
    assert big.startswith(dlq[0]["value"])
    h = dlq[1]["headers"]
    assert h["sluice.dedupe.key"] == "big-2" and h["sluice.truncated"] == "2"
    assert h["sluice.sink"] == "strict" and not dlq[1]["value"]
    assert not dlq[1]["original"] and dlq[1]["key"] is None
    run.terminate()
    assert run.wait(60) == 0


def test_a_status_past_599_is_permanent(kafka, topic_factory, names, sinkd,
                                        sluice, offsets):
    """A sink answering a status no HTTP knows (999) fails for good: it is
    not mistaken for a transport error and retried until the deadline."""
    import socket
    import threading
    topic = topic_factory(1)
    group = names.group()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    while True:
                        data = b""
                        while b"\r\n\r\n" not in data:
                            chunk = conn.recv(65536)
                            if not chunk:
                                raise OSError
                            data += chunk
                        head, _, rest = data.partition(b"\r\n\r\n")
                        n = int(re.search(rb"(?i)content-length: *(\d+)",
                                          head).group(1))
                        while len(rest) < n:
                            rest += conn.recv(65536)
                        conn.sendall(b"HTTP/1.1 999 Odd\r\n"
                                     b"Content-Length: 0\r\n\r\n")
                except (OSError, AttributeError):
                    pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        cfg = fanout(names, kafka.bootstrap, topic, group, {
            "odd": "http://127.0.0.1:%d/odd" % srv.getsockname()[1]})
        run = sluice(cfg)
        harness.produce_orders(kafka.bootstrap, topic, 3)
        harness.wait_commits_at_end(offsets(group), topic, 1, [run])
        dlq = read_topic(kafka.bootstrap, cfg["dlq"]["topic"])
        assert len(dlq) == 3
        for r in dlq:
            assert r["headers"]["sluice.error.class"] == "rejected"
            assert r["headers"]["sluice.http.status"] == "999"
            assert r["headers"]["sluice.attempts"] == "1"
        run.terminate()
        assert run.wait(60) == 0
    finally:
        stop.set()
        t.join(5)
        srv.close()
