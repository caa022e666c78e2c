"""The publisher (source.type: http -> a kafka sink) on the real broker:
202 only for what Kafka has, 503/429 when it cannot, hot-key shards, and
the kafka sink in a consuming pipeline (docs/migration.md)."""

import collections
import http.client
import json
import os
import re
import signal
import threading
import time

import pytest

from confluent_kafka import Consumer, TopicPartition

import harness
from harness import wait_until

UUID7_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def publisher_cfg(name, bootstrap, topic, port, **source):
    src = {"type": "http", "listen": "127.0.0.1:%d" % port,
           "path": "/orders", "key": "json:tenant_id"}
    src.update(source)
    return {
        "pipeline": name,
        "source": src,
        "sinks": {"kafka": {"type": "kafka", "brokers": bootstrap,
                            "topic": topic, "timeout": "5s"}},
    }


class Client:
    """One keep-alive connection to the publisher."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body, headers=None, path="/orders",
             content_type="application/json"):
        h = {"Content-Type": content_type}
        h.update(headers or {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.conn.request("POST", path, body=data, headers=h)
        r = self.conn.getresponse()
        text = r.read()
        return r.status, dict(r.getheaders()), json.loads(text) if text else None

    def close(self):
        self.conn.close()


def post_at_once(port, bodies):
    """Each body POSTed on its own connection, all at once: a list of
    (status, seconds taken, headers, answer)."""
    results = []
    lock = threading.Lock()

    def one(body):
        c = Client(port)
        t0 = time.monotonic()
        status, headers, answer = c.post(body)
        with lock:
            results.append((status, time.monotonic() - t0, headers, answer))
        c.close()
    threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def start(sluice, cfg):
    run = sluice(cfg, args=())
    wait_until(lambda: "listening on" in open(run.stderr_path).read(), 30,
               "the publisher to listen", alive=[run])
    return run


def read_topic(bootstrap, topic, partitions, expect, timeout=60):
    """Every record of topic: (partition, offset, key, value, headers),
    waiting until at least expect have come."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.partition(), m.offset(),
                        m.key().decode() if m.key() else None,
                        m.value(), dict(m.headers() or [])))
        # Nothing more than expected either.
        end = time.monotonic() + 1
        while time.monotonic() < end:
            m = c.poll(0.2)
            if m is not None and not m.error():
                out.append((m.partition(), m.offset(),
                            m.key().decode() if m.key() else None,
                            m.value(), dict(m.headers() or [])))
    finally:
        c.close()
    return out


def by_message_id(records):
    out = collections.defaultdict(list)
    for rec in records:
        out[rec[4]["message-id"].decode()].append(rec)
    return out


def summary(run):
    """The engine's summary (records, per-sink counts) and the HTTP
    source's (requests and answers), merged."""
    text = open(run.stderr_path).read()
    m = re.findall(r"summary (.*)$", text, re.M)
    assert m, text
    counters = {}
    for line in m:
        counters.update(harness.parse_counters(line))
    return counters


def test_every_202_is_in_the_topic_with_its_key_and_message_id(
        kafka, topic_factory, names, sluice, tmp_path):
    topic = topic_factory(8)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port,
                        max_body="2KiB")
    cfg["outcomes"] = {"path": str(tmp_path / "publisher.ndjson")}
    run = start(sluice, cfg)
    client = Client(port)
    sent = {}
    for i in range(200):
        body = {"tenant_id": "t%d" % (i % 7), "order_id": "o%d" % i, "n": i}
        headers = {"Idempotency-Key": "idem-%d" % i} if i % 2 else {}
        if i == 3:
            headers["traceparent"] = (
                "00-0af7651916cd43dd8448eb211c00f0aa-b7ad6b7169203331-01")
        status, h, answer = client.post(body, headers)
        assert status == 202, (status, answer)
        assert answer["key"] == body["tenant_id"]
        mid = answer["message_id"]
        if i % 2:
            assert mid == "idem-%d" % i
        else:
            assert UUID7_RE.match(mid), mid
        sent[mid] = body

    # What is refused, and why.
    assert client.post({"order_id": "x"})[0] == 400
    assert client.post({"tenant_id": "t"}, content_type="text/plain")[0] == 415
    assert client.post({"tenant_id": "t", "pad": "x" * 4096})[0] == 413
    assert client.post({"tenant_id": "t"}, path="/other")[0] == 404
    status, _, answer = client.post(
        {"tenant_id": "t"}, {"Idempotency-Key": "has space"})
    assert status == 400 and "Idempotency-Key" in answer["error"]
    assert client.post(b"not json", content_type="application/json")[0] == 400
    client.conn.request("GET", "/orders")
    r = client.conn.getresponse()
    r.read()
    assert r.status == 405
    client.close()

    records = by_message_id(read_topic(kafka.bootstrap, topic, 8, len(sent)))
    assert set(records) == set(sent)
    for mid, body in sent.items():
        [(part, off, key, value, headers)] = records[mid]
        assert key == body["tenant_id"]
        assert json.loads(value) == body
        assert headers["content-type"] == b"application/json"
    traced = records["idem-3"][0][4]
    assert traced["traceparent"] == (
        b"00-0af7651916cd43dd8448eb211c00f0aa-b7ad6b7169203331-01")
    # The same key, the same partition (librdkafka's partitioner).
    parts = collections.defaultdict(set)
    for recs in records.values():
        parts[recs[0][2]].add(recs[0][0])
    assert all(len(p) == 1 for p in parts.values()), parts

    run.terminate()
    assert run.wait(30) == 0
    counters = summary(run)
    assert counters["accepted"] == 200 and counters["kafka"] == 200
    assert counters["bad"] == 6  # 400 x3, 415, 404 and 405
    assert counters["too_large"] == 1
    lines = [json.loads(l) for l in open(tmp_path / "publisher.ndjson")]
    assert {l["key"] for l in lines} == set(sent)
    assert all(l["outcome"] == "delivered" and l["path"] == topic
               for l in lines)


def post_many(port, bodies, results, headers=None):
    """Posts bodies in order on one connection; appends (status, answer)
    to results; stops at the first connection error."""
    client = Client(port)
    try:
        for body in bodies:
            try:
                status, h, answer = client.post(body, headers)
            except (OSError, http.client.HTTPException):
                results.append((None, None))
                return
            results.append((status, answer, h))
    finally:
        client.close()


def test_kill_9_under_load_loses_no_answered_record(
        kafka, topic_factory, names, sluice):
    topic = topic_factory(4)
    port = harness.free_port()
    run = start(sluice, publisher_cfg(names.pipeline, kafka.bootstrap, topic,
                                      port))
    results = [[] for _ in range(4)]
    threads = [threading.Thread(
        target=post_many,
        args=(port, ({"tenant_id": "t%d" % (i % 13), "i": i, "c": c}
                     for i in range(100000)), results[c]))
        for c in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(len(r) for r in results) >= 1500, 60,
               "1500 answers", alive=[run])
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    for t in threads:
        t.join(30)
    accepted = [a["message_id"] for r in results for (s, a, *_) in r
                if s == 202]
    assert len(accepted) >= 1500
    records = by_message_id(read_topic(kafka.bootstrap, topic, 4,
                                       len(accepted)))
    missing = [m for m in accepted if m not in records]
    assert not missing, "%d of %d answered 202 are not in Kafka: %s" % (
        len(missing), len(accepted), missing[:5])


def test_broker_down_503_with_retry_after_and_no_202_lost(
        kafka_broker, names, sluice):
    broker = kafka_broker()
    admin = harness.RealKafka(broker.bootstrap)
    topic = names.topic()
    admin.create_topic(topic, 2)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, broker.bootstrap, topic, port,
                        timeout="3s")
    cfg["sinks"]["kafka"]["timeout"] = "2s"
    run = start(sluice, cfg)
    before = []
    post_many(port, [{"tenant_id": "t%d" % i} for i in range(30)], before)
    assert [s for s, *_ in before] == [202] * 30

    broker.stop()
    during = [[] for _ in range(4)]
    threads = [threading.Thread(target=post_many, args=(
        port, [{"tenant_id": "d%d" % i} for i in range(3)], during[c]))
        for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    answers = [x for r in during for x in r]
    assert len(answers) == 12
    for status, answer, headers in answers:
        assert status in (503, 429), (status, answer)
        assert int(headers["Retry-After"]) >= 1

    broker.restart()
    after = []

    def accepted_again():
        post_many(port, [{"tenant_id": "a"}], after)
        return after[-1][0] == 202
    wait_until(accepted_again, 90, "a 202 after the broker's restart",
               interval=1, alive=[run])
    # A record sent while the broker was down can still time out now and
    # open the sink's circuit breaker: the publisher then answers 503 for
    # one cooldown. The client does what one should: it waits Retry-After
    # and sends the same request again, with the same Idempotency-Key.
    client = Client(port)
    for i in range(20):
        deadline = time.monotonic() + 60
        while True:
            status, headers, answer = client.post(
                {"tenant_id": "a%d" % i}, {"Idempotency-Key": "after-%d" % i})
            after.append((status, answer, headers))
            if status == 202:
                assert answer["message_id"] == "after-%d" % i
                break
            assert status in (503, 429), (status, answer)
            assert time.monotonic() < deadline, "no 202 in 60 s: %r" % answer
            time.sleep(min(int(headers["Retry-After"]), 5))
    client.close()
    ok = [a["message_id"] for s, a, *_ in before + after if s == 202]
    assert len(ok) >= 51
    records = by_message_id(read_topic(broker.bootstrap, topic, 2, len(ok)))
    assert not [m for m in ok if m not in records]
    run.terminate()
    assert run.wait(30) == 0
    admin.close()


def hot_traffic(orders_per_thread, threads, events):
    """Per thread: a list of bodies; 60% of the orders are tenant `big`'s,
    each order's events in sequence (one thread sends one order)."""
    out = []
    for t in range(threads):
        bodies = []
        for o in range(orders_per_thread):
            order = "o-%d-%d" % (t, o)
            tenant = "big" if o % 5 < 3 else "small-%d" % ((t * 7 + o) % 40)
            for seq in range(events):
                bodies.append({"tenant_id": tenant, "order_id": order,
                               "seq": seq})
        out.append(bodies)
    return out


def spread(kafka, sluice, names, topic_factory, sharding, warmup=0):
    topic = topic_factory(8)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port,
                        shard_by="json:order_id", **sharding)
    run = start(sluice, cfg)
    if warmup:
        warm = []
        post_many(port, [{"tenant_id": "big", "order_id": "warm-%d" % i,
                          "seq": 0} for i in range(warmup)], warm)
        assert all(s == 202 for s, *_ in warm)
    traffic = hot_traffic(60, 8, 5)
    results = [[] for _ in traffic]
    threads = [threading.Thread(target=post_many,
                                args=(port, traffic[i], results[i]))
               for i in range(len(traffic))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(s == 202 for r in results for s, *_ in r)
    total = sum(len(b) for b in traffic)
    records = read_topic(kafka.bootstrap, topic, 8, total + warmup)
    run.terminate()
    assert run.wait(30) == 0
    measured = [r for r in records
                if not json.loads(r[3])["order_id"].startswith("warm-")]
    assert len(measured) == total
    per_part = collections.Counter(r[0] for r in measured)
    busiest = max(per_part.values()) / total
    # Each order: one partition, its events in order there.
    orders = collections.defaultdict(list)
    for part, off, key, value, headers in sorted(measured,
                                                 key=lambda r: (r[0], r[1])):
        v = json.loads(value)
        orders[v["order_id"]].append((part, v["seq"], key))
    for order, events in orders.items():
        assert len({p for p, _, _ in events}) == 1, (order, events)
        assert [s for _, s, _ in events] == sorted(s for _, s, _ in events)
    big_keys = {k for evs in orders.values() for _, _, k in evs
                if k.startswith("big")}
    return busiest, big_keys, summary(run)


def test_hot_keys_static_and_auto_bring_the_busiest_partition_down(
        kafka, topic_factory, names, sluice):
    # Unsharded, tenant big alone is 60% of the records: one partition
    # takes at least that. Sharded 8 ways, the busiest must fall under
    # 35% (8 shard keys over 8 partitions collide a little).
    busiest, keys, counters = spread(kafka, sluice, names, topic_factory, {})
    assert busiest >= 0.6 and keys == {"big"}
    busiest, keys, counters = spread(kafka, sluice, names, topic_factory,
                                     {"hot_keys": {"big": 8}})
    assert busiest < 0.35, busiest
    assert keys == {"big~%d" % i for i in range(8)}
    assert counters["sharded"] == 8 * 36 * 5
    busiest, keys, counters = spread(
        kafka, sluice, names, topic_factory,
        {"auto_shard": True, "auto_shard_min_records": 200,
         "auto_shard_window": 2000, "auto_shard_shards": 8}, warmup=400)
    assert busiest < 0.35, busiest
    assert keys == {"big~%d" % i for i in range(8)}


def test_the_kafka_sink_in_a_consuming_pipeline(
        kafka, topic_factory, names, sluice):
    count = 300
    source, target = topic_factory(2), topic_factory(3)
    harness.produce_orders(kafka.bootstrap, source, count)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, source,
                           names.group(),
                           {"copy": {"type": "kafka",
                                     "brokers": kafka.bootstrap,
                                     "topic": target}})
    run = sluice(cfg)
    records = read_topic(kafka.bootstrap, target, 3, count)
    run.terminate()
    assert run.wait(60) == 0
    assert len(records) == count
    ids = collections.Counter(r[4]["message-id"] for r in records)
    assert len(ids) == count
    assert all(r[2] is not None for r in records)  # the record's key


def test_key_base_reads_and_orders_by_the_key_without_its_shard(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    """msg.key_base strips a publisher's shard suffix; ordering: key_base
    sends a hot key's shards one at a time within a partition."""
    from confluent_kafka import Producer
    topic = topic_factory(1)
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    keys = ["big~%d" % (i % 8) for i in range(16)] + ["small", "x~1234"]
    for i, k in enumerate(keys):
        p.produce(topic, key=k.encode(), value=json.dumps({"i": i}).encode())
    p.flush(30)
    script = tmp_path / "base.lua"
    script.write_text("function transform(msg)\n"
                      "  return {headers = {['X-Key-Base'] = msg.key_base}}\n"
                      "end\n")
    slow = sinkd("slow")
    slow.script(latency_ms=100)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"slow": {"url": slow.url(),
                                     "transform": str(script)}},
                           ordering="key_base")
    run = sluice(cfg)
    harness.wait_sinks_ok([slow], len(keys), 60, alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    records = slow.records()
    bases = {r.raw["body"] and json.loads(r.body)["i"]: r.headers["x-key-base"]
             for r in records}
    assert [bases[i] for i in range(len(keys))] == \
        ["big"] * 16 + ["small", "x~1234"]
    # The sixteen shards of `big` share the partition: one at a time, in
    # offset order, each answered 100 ms after the last.
    big = [r for r in records if r.headers["x-key-base"] == "big"]
    assert [json.loads(r.body)["i"] for r in big] == list(range(16))
    gaps = [b.ts_ms - a.ts_ms for a, b in zip(big, big[1:])]
    assert min(gaps) >= 90, gaps


def test_sluice_test_shows_the_key_the_publisher_gives(
        kafka, topic_factory, names, sluice, tmp_path):
    """`sluice test` on a publisher pipeline asserts a request's record key
    (or why it has none) with the same function the publisher calls."""
    topic = topic_factory(4)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port,
                        shard_by="json:order_id", hot_keys={"big": 8})
    path = harness.write_yaml(str(tmp_path / "pub.yaml"), cfg)
    run = sluice(path=path, args=())
    wait_until(lambda: "listening on" in open(run.stderr_path).read(), 30,
               "the publisher to listen", alive=[run])
    client = Client(port)
    got = {}
    for order in ("o-1", "o-2", "o-3"):
        status, _, answer = client.post({"tenant_id": "big",
                                         "order_id": order})
        assert status == 202
        got[order] = answer["key"]
    client.close()
    run.terminate()
    assert run.wait(30) == 0
    assert all(k.startswith("big~") for k in got.values())

    cases = {"tests": [
        {"name": "order %s" % o,
         "input": {"value": {"tenant_id": "big", "order_id": o}},
         "expect": {"key": k}} for o, k in got.items()] + [
        {"name": "a small tenant keeps its key",
         "input": {"value": {"tenant_id": "t-1", "order_id": "o-9"}},
         "expect": {"key": "t-1"}},
        {"name": "no tenant, no key",
         "input": {"value": {"order_id": "o-9"}},
         "expect": {"error": "field missing"}},
        {"name": "a wrong expectation fails",
         "input": {"value": {"tenant_id": "big", "order_id": "o-1"}},
         "expect": {"key": "big"}},
    ]}
    tests = harness.write_yaml(str(tmp_path / "pub.test.yaml"), cases)
    p = harness.sluice_cmd(["test", path, tests])
    assert p.returncode == 1, p.stdout + p.stderr
    assert "5 passed, 1 failed" in p.stdout, p.stdout
    assert 'key: expected "big", got "%s"' % got["o-1"] in p.stdout, p.stdout


def test_hostile_requests_get_4xx_and_lose_nothing(
        kafka, topic_factory, names, sluice):
    """Random garbage in bodies, headers and ids: every answer is a 202 or
    a 4xx with a JSON reason, the publisher stays up, and every 202 is in
    the topic."""
    import random
    import socket
    rnd = random.Random(1234)
    topic = topic_factory(2)
    port = harness.free_port()
    run = start(sluice, publisher_cfg(names.pipeline, kafka.bootstrap, topic,
                                      port, max_body="4KiB",
                                      shard_by="json:o",
                                      hot_keys={"big": 4}))
    accepted = []
    for i in range(300):
        kind = rnd.randrange(6)
        headers = {}
        if kind == 0:     # random bytes
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
        elif kind == 1:   # JSON with odd keys and values
            body = json.dumps({"tenant_id": rnd.choice(
                ["", "big", "a~1", "x" * 300, 12, None, [1], {"a": 1},
                 "\u00e9\u4e2d", "big~2"]), "o": rnd.choice(["1", 2, None])
            }).encode()
        elif kind == 2:   # a bad Idempotency-Key
            body = b'{"tenant_id":"t"}'
            headers["Idempotency-Key"] = rnd.choice(
                ["", " ", "a b", "x" * 201, "\u00e9", "ok-%d" % i])
        elif kind == 3:   # deep nesting
            body = b'{"tenant_id":' + b"[" * 5000 + b"]" * 5000 + b"}"
        elif kind == 4:   # too large, announced
            body = b'{"tenant_id":"t","pad":"' + b"x" * 5000 + b'"}'
        else:             # fine
            body = json.dumps({"tenant_id": "t%d" % (i % 5), "o": i}).encode()
        client = Client(port)
        try:
            hdrs = {"Content-Type": "application/json"}
            for k, v in headers.items():
                hdrs[k] = v.encode("utf-8").decode("latin-1")
            client.conn.request("POST", "/orders", body=body, headers=hdrs)
            r = client.conn.getresponse()
            text = r.read()
        finally:
            client.close()
        assert r.status == 202 or 400 <= r.status < 500, (r.status, body[:80])
        answer = json.loads(text)
        if r.status == 202:
            accepted.append(answer["message_id"])
        else:
            assert answer["error"]
    # Raw garbage on the socket, then a header block far over the limit.
    for junk in (b"\x00\xff garbage\r\n\r\n",
                 b"POST /orders HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(junk)
            try:
                s.recv(1024)
            except OSError:
                pass
    status, _, answer = Client(port).post({"tenant_id": "after"})
    assert status == 202
    accepted.append(answer["message_id"])
    run.check_alive()
    run.terminate()
    assert run.wait(30) == 0
    records = by_message_id(read_topic(kafka.bootstrap, topic, 2,
                                       len(accepted)))
    assert sorted(records) == sorted(accepted)


def test_sigterm_under_load_answers_every_request_and_loses_no_202(
        kafka, topic_factory, names, sluice):
    """SIGTERM: the listener closes, requests under way get their answers
    (202 once in Kafka), the process exits 0, and no 202'd record is
    missing."""
    topic = topic_factory(4)
    port = harness.free_port()
    run = start(sluice, publisher_cfg(names.pipeline, kafka.bootstrap, topic,
                                      port))
    results = [[] for _ in range(4)]
    threads = [threading.Thread(
        target=post_many,
        args=(port, ({"tenant_id": "t%d" % (i % 13), "i": i, "c": c}
                     for i in range(100000)), results[c]))
        for c in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(len(r) for r in results) >= 1000, 60,
               "1000 answers", alive=[run])
    run.terminate()
    assert run.wait(30) == 0
    for t in threads:
        t.join(30)
    answers = [x for r in results for x in r]
    # Each client saw answers, then the connection close: nothing hangs.
    assert all(r and r[-1][0] in (None, 202, 503) for r in results), \
        [r[-1][:1] for r in results]
    accepted = [a["message_id"] for s, a, *_ in answers if s == 202]
    assert len(accepted) >= 1000
    records = by_message_id(read_topic(kafka.bootstrap, topic, 4,
                                       len(accepted)))
    assert not [m for m in accepted if m not in records]
    assert "summary requests=" in open(run.stderr_path).read()


def test_the_publisher_runs_on_the_pipelines_engine(
        kafka, topic_factory, names, sluice, tmp_path):
    """The HTTP source feeds the same engine as the Kafka one: its records
    go through the pipeline transform (which can drop one: 202, or fail
    it: 422 with the reason, and nothing in the topic), and its figures
    are on the admin server's /metrics."""
    from test_admin import scrape, value
    topic = topic_factory(4)
    port, admin = harness.free_port(), harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port)
    cfg["admin"] = {"listen": "127.0.0.1:%d" % admin}
    (tmp_path / "pub.lua").write_text(
        "function transform(msg)\n"
        "  local v = json.decode(msg.value)\n"
        "  if v.drop then return nil end\n"
        "  if v.bad then error('cannot price ' .. v.order_id) end\n"
        "  v.seen_by = 'publisher'\n"
        "  msg.value = json.encode(v)\n"
        "  return msg\n"
        "end\n")
    cfg["transform"] = "pub.lua"
    run = start(sluice, cfg)
    client = Client(port)
    kept = {}
    for i in range(60):
        body = {"tenant_id": "t%d" % (i % 5), "order_id": "o%d" % i,
                "drop": i % 10 == 4, "bad": i % 10 == 7}
        status, _, answer = client.post(body, {"Idempotency-Key": "k%d" % i})
        if body["bad"]:
            assert status == 422, (status, answer)
            assert "cannot price o%d" % i in answer["error"]
            assert answer["message_id"] == "k%d" % i
        elif body["drop"]:
            assert status == 202 and answer["dropped"] is True, answer
        else:
            assert status == 202 and "dropped" not in answer, answer
            kept["k%d" % i] = body
    client.close()

    records = by_message_id(read_topic(kafka.bootstrap, topic, 4, len(kept)))
    assert set(records) == set(kept)
    for mid, body in kept.items():
        [(_, _, key, value_, _)] = records[mid]
        assert key == body["tenant_id"]
        assert json.loads(value_) == dict(body, seen_by="publisher")

    samples = {}

    def scraped():
        samples.update(scrape(admin)[0])
        return value(samples, "sluice_sink_delivered_total",
                     sink="kafka") == len(kept)
    wait_until(scraped, 10, "the metrics to catch up", alive=[run])
    assert value(samples, "sluice_records_consumed_total") == 60
    assert value(samples, "sluice_transform_errors_total") == 6
    assert value(samples, "sluice_ready") == 1

    run.terminate()
    assert run.wait(30) == 0
    counters = summary(run)
    assert counters["accepted"] == 54 and counters["rejected"] == 6
    assert counters["kafka"] == 48 and counters["dropped"] == 6


def test_sluice_test_runs_a_publishers_transform(names, tmp_path):
    """With a transform, a publisher's case checks the record key, then the
    request goes on as the engine takes it: the transform's output (with
    the key and the endpoint's path as topic) is compared as any case's."""
    (tmp_path / "pub.lua").write_text(
        "function transform(msg)\n"
        "  local v = json.decode(msg.value)\n"
        "  if v.drop then return nil end\n"
        "  v.topic, v.key = msg.topic, msg.key\n"
        "  msg.value = json.encode(v)\n"
        "  return msg\n"
        "end\n")
    cfg = {"pipeline": names.pipeline,
           "source": {"type": "http", "listen": "127.0.0.1:0",
                      "path": "/orders", "key": "json:tenant_id"},
           "transform": "pub.lua",
           "sinks": {"kafka": {"type": "kafka", "brokers": "127.0.0.1:9",
                               "topic": "orders"}}}
    path = harness.write_yaml(str(tmp_path / "pub.yaml"), cfg)
    cases = {"tests": [
        {"name": "the key, then the transform",
         "input": {"value": {"tenant_id": "t1", "order_id": "o1"}},
         "expect": {"key": "t1",
                    "value": {"tenant_id": "t1", "order_id": "o1",
                              "topic": "/orders", "key": "t1"}}},
        {"name": "dropped",
         "input": {"value": {"tenant_id": "t1", "drop": True}},
         "expect": "drop"},
        {"name": "no key: the publisher's error, before any transform",
         "input": {"value": {"order_id": "o1"}},
         "expect": {"error": "field missing"}},
        {"name": "a wrong expectation fails",
         "input": {"value": {"tenant_id": "t2", "order_id": "o2"}},
         "expect": {"value": {"tenant_id": "t2", "order_id": "o2"}}},
    ]}
    tests = harness.write_yaml(str(tmp_path / "pub.test.yaml"), cases)
    p = harness.sluice_cmd(["test", path, tests])
    assert p.returncode == 1, p.stdout + p.stderr
    assert "3 passed, 1 failed" in p.stdout, p.stdout
    assert 'value.topic: unexpected "/orders"' in p.stdout, p.stdout


def test_a_held_lane_answers_every_request_within_its_timeout(
        names, sluice, tmp_path):
    """Kafka unreachable and the pipeline's bound at 3 records: requests
    past source.max_in_flight get 429 at once, those that wait in the
    source's queue get their answer within source.timeout of arriving (503,
    never 202), and the publisher stops cleanly."""
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, "127.0.0.1:%d" % harness.free_port(),
                        "orders", port, max_in_flight=12, timeout="2s")
    cfg["sinks"]["kafka"].update(timeout="700ms", breaker_failures=0,
                                 breaker_failure_percent=0)
    cfg["delivery"] = {"max_in_flight": 3}
    run = start(sluice, cfg)
    results = post_at_once(port, [{"tenant_id": "t%d" % i,
                                   "order_id": "o%d" % i} for i in range(20)])
    assert len(results) == 20
    statuses = collections.Counter(s for s, *_ in results)
    assert set(statuses) <= {429, 503}, statuses
    assert statuses[429] >= 8, statuses  # over max_in_flight: at once
    for status, took, headers, answer in results:
        assert took < 2 + 1.5, (status, took, answer)  # timeout + slack
        assert int(headers["Retry-After"]) >= 1
    late = [a for s, _, _, a in results if s == 503 and
            "not taken in time" in a["error"]]
    assert late, results  # some waited in the queue to the end

    run.terminate()
    assert run.wait(30) == 0
    counters = summary(run)
    assert counters.get("accepted", 0) == 0
    assert counters["requests"] == 20


def test_an_open_breaker_answers_at_once(names, sluice, tmp_path):
    """Once the kafka sink's circuit breaker opens, a request is answered
    503 at once, not at its timeout: its client is the one that retries."""
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, "127.0.0.1:%d" % harness.free_port(),
                        "orders", port, timeout="10s")
    cfg["sinks"]["kafka"].update(timeout="300ms", breaker_failures=2,
                                 breaker_cooldown="60s")
    run = start(sluice, cfg)
    client = Client(port)
    for i in range(2):
        status, _, answer = client.post({"tenant_id": "t", "order_id": i})
        assert status == 503, answer
    for i in range(5):
        t0 = time.monotonic()
        status, headers, answer = client.post({"tenant_id": "t",
                                               "order_id": 10 + i})
        assert status == 503 and "circuit breaker" in answer["error"], answer
        assert time.monotonic() - t0 < 1, answer
        assert int(headers["Retry-After"]) >= 1
    client.close()
    run.terminate()
    assert run.wait(30) == 0


def test_the_kafka_sinks_transform_decides_the_answer_too(
        kafka, topic_factory, names, sluice, tmp_path):
    """The acknowledging sink's own transform: a request it skips has
    nothing to write (202), one it fails on gets 422 and is not in the
    topic; the others are."""
    topic = topic_factory(2)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port)
    (tmp_path / "k.lua").write_text(
        "function transform(msg)\n"
        "  local v = json.decode(msg.value)\n"
        "  if v.skip then return nil end\n"
        "  if v.bad then error('no shape for ' .. v.order_id) end\n"
        "  return {}\n"
        "end\n")
    cfg["sinks"]["kafka"]["transform"] = "k.lua"
    run = start(sluice, cfg)
    client = Client(port)
    kept = set()
    for i in range(30):
        body = {"tenant_id": "t", "order_id": "o%d" % i,
                "skip": i % 3 == 1, "bad": i % 3 == 2}
        status, _, answer = client.post(body, {"Idempotency-Key": "s%d" % i})
        if body["bad"]:
            assert status == 422 and "no shape for o%d" % i in \
                answer["error"], answer
        else:
            assert status == 202, answer
            # skipped: nothing written, said as a pipeline drop says it
            assert answer.get("dropped", False) == body["skip"], answer
            if not body["skip"]:
                kept.add("s%d" % i)
    client.close()
    records = by_message_id(read_topic(kafka.bootstrap, topic, 2, len(kept)))
    assert set(records) == kept
    run.terminate()
    assert run.wait(30) == 0


def test_the_bodies_held_stay_under_max_in_flight_bytes(names, sluice):
    """Kafka unreachable, so nothing is answered for a while: bodies of 20
    KiB against a 64 KiB bound, three at most are held; the others get 429
    with Retry-After at once (an announced one is not even kept)."""
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, "127.0.0.1:%d" % harness.free_port(),
                        "orders", port, max_body="64KiB",
                        max_in_flight_bytes="64KiB", timeout="3s")
    cfg["sinks"]["kafka"].update(timeout="2s", breaker_failures=0,
                                 breaker_failure_percent=0)
    run = start(sluice, cfg)
    results = post_at_once(port, [{"tenant_id": "t%d" % i, "pad": "x" * 20000}
                                  for i in range(8)])
    statuses = collections.Counter(s for s, *_ in results)
    assert statuses[429] >= 5 and set(statuses) <= {429, 503}, statuses
    for status, took, headers, answer in results:
        assert int(headers["Retry-After"]) >= 1
        if status == 429:
            assert "bytes of requests under way" in answer["error"], answer
            assert took < 1.5, (took, answer)
    run.terminate()
    assert run.wait(30) == 0


def test_a_key_from_a_header(kafka, topic_factory, names, sluice):
    """key: header:NAME reads the request's header (the only key source
    for which the publisher collects the headers)."""
    topic = topic_factory(2)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port,
                        key="header:X-Tenant")
    run = start(sluice, cfg)
    client = Client(port)
    status, _, answer = client.post({"order_id": "o1"}, {"X-Tenant": "t-9"})
    assert status == 202 and answer["key"] == "t-9", answer
    status, _, answer = client.post({"order_id": "o2"})
    assert status == 400, answer
    client.close()
    [(_, _, key, _, _)] = read_topic(kafka.bootstrap, topic, 2, 1)
    assert key == "t-9"
    # A header value is bytes, not text: the answer that echoes the key
    # is still valid JSON (UTF-8), whatever bytes the client sent, and
    # the text it gives for bytes that are not UTF-8 is U+FFFD.
    raw = Raw(port)
    raw.send(request(b'{"order_id":"o3"}',
                     b"X-Tenant: t-\xff\xc3(\xe2\x82\xac\r\n"))
    status, _, body = raw.response()
    raw.s.close()
    assert status == 202, body
    answer = json.loads(body.decode("utf-8"))
    assert answer["key"] == "t-\ufffd\ufffd(\u20ac", answer
    run.terminate()
    assert run.wait(30) == 0


def test_an_error_answered_to_the_client_carries_no_secret(
        kafka, topic_factory, names, sluice, tmp_path):
    """A failure's reason goes to the client as the DLQ and the logs would
    have it: redacted. The legacy sink's token, echoed in a transform's
    error, comes back as [redacted]."""
    topic = topic_factory(1)
    port = harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port)
    cfg["sinks"]["legacy"] = {"type": "http", "url": "http://127.0.0.1:9/x",
                              "headers": {"Authorization": "Bearer tok-8c1f"}}
    (tmp_path / "t.lua").write_text(
        "function transform(msg)\n"
        "  error('the pricing call with Bearer tok-8c1f failed')\n"
        "end\n")
    cfg["transform"] = "t.lua"
    run = start(sluice, cfg)
    client = Client(port)
    status, _, answer = client.post({"tenant_id": "t", "order_id": "o"})
    client.close()
    assert status == 422, answer
    assert "tok-8c1f" not in json.dumps(answer), answer
    assert "[redacted]" in answer["error"], answer
    run.terminate()
    assert run.wait(30) == 0


class Raw:
    """One raw TCP connection to the publisher, for what http.client does
    not send: pipelined requests, chunks, half-closes, byte-by-byte
    heads."""

    def __init__(self, port):
        import socket
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("closed")
        self.buf += chunk

    def response(self):
        """(status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed_by_peer(self):
        """True when the server closed: EOF (or a reset) with nothing more."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def request(body, extra=b"", path=b"/orders", version=b"1.1"):
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def test_the_http_server_speaks_http_1_1(kafka, topic_factory, names,
                                         sluice):
    """The publisher's own HTTP/1.1 server (worker/httpd.c) through
    sockets: pipelined requests answered in order, chunked bodies,
    Expect: 100-continue, a head sent byte by byte, a half-closed client
    still answered, HTTP/1.0 closed after its answer, a head over the
    limit (431) and garbage (400) answered and closed, a large refused
    body answered while the client is still sending, and clients that
    vanish while their request waits. The server stays up, and every 202
    is in the topic."""
    import socket
    topic = topic_factory(2)
    port = harness.free_port()
    run = start(sluice, publisher_cfg(names.pipeline, kafka.bootstrap, topic,
                                      port, max_body="4KiB"))
    accepted = []

    def order(i):
        return json.dumps({"tenant_id": "t%d" % (i % 3), "o": i}).encode()

    def ok(status, body):
        assert status == 202, (status, body)
        answer = json.loads(body)
        accepted.append(answer["message_id"])
        return answer

    # Three requests in one write: three answers, in their order.
    c = Raw(port)
    c.send(b"".join(request(order(i), b"Idempotency-Key: pipe-%d\r\n" % i)
                    for i in range(3)))
    for i in range(3):
        status, _, body = c.response()
        assert ok(status, body)["message_id"] == "pipe-%d" % i
    # 100 KiB of requests in one write: more than a connection keeps
    # behind a waiting request, so the rest waits in the socket, unread,
    # and each is still answered, in order.
    pad = "p" * 1600
    c.send(b"".join(request(json.dumps({"tenant_id": "t", "o": i,
                                        "pad": pad}).encode(),
                            b"Idempotency-Key: bulk-%d\r\n" % i)
                    for i in range(60)))
    for i in range(60):
        status, _, body = c.response()
        assert ok(status, body)["message_id"] == "bulk-%d" % i
    # A chunked body, then the same connection again.
    body = order(10)
    c.send(b"POST /orders HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" +
           b"%x\r\n%s\r\n" % (5, body[:5]) +
           b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 5, body[5:]))
    status, _, answer = c.response()
    assert ok(status, answer)["key"] == "t1"
    # Expect: 100-continue: the interim answer comes before the body.
    body = order(11)
    head = request(body, b"Expect: 100-continue\r\n")[:-len(body)]
    c.send(head)
    assert c.response()[0] == 100
    c.send(body)
    ok(*c.response()[::2])
    c.close()

    # A head that comes one byte at a time.
    c = Raw(port)
    c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in request(order(12)):
        c.send(bytes([b]))
    ok(*c.response()[::2])
    # A client that half-closes after its request still gets its answer.
    c.send(request(order(13)))
    c.s.shutdown(socket.SHUT_WR)
    ok(*c.response()[::2])
    assert c.closed_by_peer()
    c.close()

    # HTTP/1.0 without keep-alive: answered, then closed.
    c = Raw(port)
    c.send(request(order(14), version=b"1.0"))
    status, headers, body = c.response()
    ok(status, body)
    assert headers.get("connection") == "close"
    assert c.closed_by_peer()
    c.close()

    # Refused before its body: 413 and 404 with a small body keep the
    # connection; a large body is answered while the client still sends,
    # and the connection closes after.
    c = Raw(port)
    c.send(request(b"x" * 5000))
    assert c.response()[0] == 413
    c.send(request(order(15), path=b"/other"))
    assert c.response()[0] == 404
    # A HEAD's answer has no body (its Content-Length says what a GET's
    # would have): the next answer on the connection is read whole.
    c.send(b"HEAD /orders HTTP/1.1\r\nHost: x\r\n\r\n")
    while b"\r\n\r\n" not in c.buf:
        c._fill()
    head, c.buf = c.buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 405 ") and b"Allow: POST" in head
    c.send(request(order(16)))
    ok(*c.response()[::2])
    big = request(b"y" * 3000000)
    sender = threading.Thread(target=lambda: c.send(big))
    sender.start()
    status, headers, body = c.response()
    sender.join(30)
    assert status == 413 and headers.get("connection") == "close", headers
    assert json.loads(body)["error"]
    c.close()

    # A head over 16 KiB, and garbage: answered, then closed.
    for junk, want in ((b"POST /orders HTTP/1.1\r\nX-Pad: " + b"a" * 20000 +
                        b"\r\n\r\n", 431),
                       (b"POST /orders HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
                        400),
                       # a NUL opening a header value, which http-parser
                       # lets through (found by fuzz_httpd)
                       (b"POST /orders HTTP/1.1\r\nX-Tenant:\x00t\r\n"
                        b"Content-Type:\x00application/json\r\n"
                        b"Content-Length: 2\r\n\r\n{}", 400),
                       (b"\x00\xff garbage\r\n\r\n", 400)):
        c = Raw(port)
        c.send(junk)
        status, headers, body = c.response()
        assert status == want and headers.get("connection") == "close"
        assert json.loads(body)["error"]
        assert c.closed_by_peer()
        c.close()

    # Clients that vanish while their request waits for Kafka (a close,
    # and a reset): the server lets them go and serves the next.
    for reset in (False, True):
        for i in range(20):
            c = Raw(port)
            c.send(request(order(100 + i)))
            if reset:
                c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
        # and some that leave in the middle of their body
        for i in range(5):
            c = Raw(port)
            c.send(request(order(200 + i))[:-5])
            c.close()
    c = Raw(port)
    c.send(request(order(300)))
    ok(*c.response()[::2])
    c.close()

    run.check_alive()
    run.terminate()
    assert run.wait(30) == 0
    got = by_message_id(read_topic(kafka.bootstrap, topic, 2,
                                   len(accepted) + 40))
    assert set(accepted) <= set(got)
    assert all(len(v) == 1 for v in got.values())
    counters = summary(run)
    assert counters["requests"] >= len(accepted) + 40 + 10, counters


class LimitedPublisher:
    """sluice run on cfg under `prlimit --nofile=SOFT:HARD`, with n idle
    client connections once it listens; closes all on exit."""

    def __init__(self, cfg, tmp_path, nofile, clients):
        import socket
        import subprocess
        path = tmp_path / "publisher.json"
        path.write_text(json.dumps(cfg))
        self.log_path = tmp_path / "publisher.stderr"
        self.port = int(cfg["source"]["listen"].rsplit(":", 1)[1])
        self.proc = subprocess.Popen(
            ["prlimit", "--nofile=%d:%d" % nofile, harness.binary("sluice"),
             "run", str(path)],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        self.clients = []
        try:
            wait_until(lambda: "listening on" in self.log(), 30,
                       "the publisher to listen")
            for _ in range(clients):
                self.clients.append(socket.create_connection(
                    ("127.0.0.1", self.port), timeout=10))
        except BaseException:
            self.__exit__()
            raise

    def log(self):
        return open(self.log_path).read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for c in self.clients:
            c.close()
        self.proc.terminate()
        assert self.proc.wait(30) == 0


def test_clients_cannot_take_the_descriptors_the_sinks_need(
        kafka, topic_factory, names, sinkd, tmp_path):
    """Under `ulimit -n 300`, 400 idle client connections: the publisher
    holds only as many as leave descriptors to the rest of the process
    (it closes the others at once), so a request still reaches the
    legacy sink, which opens its connection only then. Before, the
    clients took every descriptor and the legacy sink could not
    connect."""
    topic = topic_factory(1)
    port = harness.free_port()
    legacy = sinkd("legacy")
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port)
    cfg["sinks"]["legacy"] = {"type": "http", "url": legacy.url("/apply")}
    with LimitedPublisher(cfg, tmp_path, (300, 300), 0) as pub:
        first = Raw(port)
        pub.clients = [Raw(port).s for _ in range(400)]
        time.sleep(1)  # accepted, or accepted and closed
        first.send(request(json.dumps({"tenant_id": "t"}).encode()))
        status, _, body = first.response()
        assert status == 202, body
        wait_until(lambda: legacy.records(), 15,
                   "the legacy sink to get the request")
        assert "at most 172 client connections" in pub.log(), pub.log()
        first.s.close()


def test_the_admin_server_answers_past_descriptor_1024(
        kafka, topic_factory, names, tmp_path):
    """The publisher raises its descriptor limit to hold 4096 clients;
    with 1100 of them connected, the admin server's next connection gets
    a descriptor past 1024, which select() cannot watch. Before, the
    admin server (libmicrohttpd on select) closed such a connection
    unanswered, so /metrics and the probes failed under load."""
    import resource
    from test_admin import http as admin_http
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip("this host allows %d descriptors, not the 1400 that "
                    "1100 clients and the publisher need" % hard)
    if soft != resource.RLIM_INFINITY and soft < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    topic = topic_factory(1)
    port, aport = harness.free_port(), harness.free_port()
    cfg = publisher_cfg(names.pipeline, kafka.bootstrap, topic, port)
    cfg["admin"] = {"listen": "127.0.0.1:%d" % aport}
    # As most hosts start a process: 1024, which it may raise.
    child_hard = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    with LimitedPublisher(cfg, tmp_path, (1024, child_hard), 1100) as pub:
        first = Client(port)
        status, _, answer = first.post({"tenant_id": "t"})
        assert status == 202, answer  # every client was accepted by now
        first.close()
        for _ in range(3):
            status, text = admin_http(aport, "/metrics")
            assert status == 200, text
            assert "sluice_" in text
        if child_hard >= 4096 + 128:
            assert "client connections" not in pub.log(), pub.log()


def test_park_after_is_refused_with_the_http_source(names, tmp_path):
    """A parked record waits in a retry topic, and the http source has
    none (no DLQ): before, parking went on regardless, wrote the record
    nowhere, and the acknowledging sink's request was answered 202."""
    cfg = publisher_cfg(names.pipeline, "127.0.0.1:9", "t", 1)
    cfg["sinks"]["kafka"]["park_after"] = "1s"
    path = tmp_path / "publisher.json"
    path.write_text(json.dumps(cfg))
    p = harness.sluice_cmd(["validate", str(path)])
    assert p.returncode != 0, p.stderr
    assert "park_after" in p.stderr and "source.type http" in p.stderr, \
        p.stderr
