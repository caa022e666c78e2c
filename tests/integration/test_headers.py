"""Request headers: Kafka headers forwarded, sink headers sent, secrets
never logged.

sluice has two HTTP transports: its lean HTTP/1.1 client for plain
http:// URLs, and libcurl for https:// or when a proxy is configured.
Each test runs on both: `curl` sets http_proxy to the sinkd itself, which
answers proxied (absolute-form) requests like any other.
"""

import base64

import pytest

import harness
from harness import wait_until

TEXT = ("trace-id", b"4bf92f3577b34da6-00f067aa0ba902b7")
BINARY = ("sig", b"\x00\x01\x7f\x80\xfe\xff")
UTF8 = ("city", "Zürich".encode())


TRANSPORTS = pytest.mark.parametrize("transport", ["lean", "curl"])


def run_to_completion(kafka, topic_factory, names, sinkd, sluice, offsets,
                      headers, count, transport, sink_cfg=None,
                      args=("--progress",), env=None, script=None):
    topic = topic_factory(1)
    group = names.group()
    sink = sinkd("hdr")
    env = dict(env or {})
    if transport == "curl":
        env["http_proxy"] = sink.base
    if script:
        sink.script(**script)
    spec = {"url": sink.url()}
    spec.update(sink_cfg or {})
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"hdr": spec})
    run = sluice(cfg, args=args, env=env)
    harness.produce_orders(kafka.bootstrap, topic, count, headers=headers)
    wait_until(lambda: sink.ok_count() >= count, 60, "delivery",
               alive=[run], details=sink.stats)
    reader = offsets(group)
    wait_until(lambda: reader.committed(topic, 1) == [count], 30,
               "commits at the end", alive=[run])
    run.terminate()
    assert run.wait(60) == 0
    return run, sink.records()


@TRANSPORTS
def test_kafka_headers_forwarded_and_secret_sink_headers(
        kafka, topic_factory, names, sinkd, sluice, offsets, transport):
    count = 20
    secret = "sk-live-%s" % names.base
    run, recs = run_to_completion(
        kafka, topic_factory, names, sinkd, sluice, offsets,
        [TEXT, BINARY, UTF8], count, transport,
        sink_cfg={"headers": {"Authorization": "Bearer ${SLUICE_IT_TOKEN}",
                              "X-Tenant-Scope": "all"}},
        args=("--progress", "--log-level", "debug"),
        env={"SLUICE_IT_TOKEN": secret},
        # Some failures first, so the failure paths log too.
        script={"statuses": [500, 503, 0], "then": 200})
    ok = harness.ok_records(recs)
    assert len(ok) == count and len(recs) == count + 3
    for r in recs:
        assert r.path.endswith("/hdr")
        assert ("proxy-connection" in r.headers or r.path.startswith(
            "http://")) == (transport == "curl"), (transport, r.raw)
        h = r.headers
        assert h["authorization"] == "Bearer " + secret
        assert h["x-tenant-scope"] == "all"
        assert h["kafka-header-message-id"] == r.key
        assert h["kafka-header-trace-id"] == TEXT[1].decode()
        assert base64.b64decode(h["kafka-header-sig-base64"]) == BINARY[1]
        assert "kafka-header-sig" not in h
        assert base64.b64decode(h["kafka-header-city-base64"]) == UTF8[1]
        assert h["kafka-timestamp"].isdigit()
        assert h["kafka-partition"] == "0"
    log = run.log()
    assert "retrying" in log, "no failure was logged: " + run.describe()
    assert secret not in log, "the Authorization secret leaked into stderr"


@TRANSPORTS
def test_empty_kafka_header_value_is_forwarded(kafka, topic_factory, names,
                                               sinkd, sluice, offsets,
                                               transport):
    """A Kafka header with an empty value still arrives, as an empty
    Kafka-Header-<name>."""
    count = 3
    _, recs = run_to_completion(kafka, topic_factory, names, sinkd, sluice,
                                offsets, [("flag", b"")], count, transport)
    assert len(recs) == count
    for r in recs:
        assert r.headers.get("kafka-header-flag") == "", \
            "Kafka-Header-flag missing from %s" % sorted(r.headers)


@TRANSPORTS
def test_large_kafka_header_is_forwarded_or_reported(
        kafka, topic_factory, names, sinkd, sluice, offsets, transport):
    """A 5,000-byte header (a big JWT or tracing baggage) either arrives
    as Kafka-Header-<name> or sluice says that it did not."""
    big = ("baggage", b"k=" + b"v" * 4998)
    run, recs = run_to_completion(kafka, topic_factory, names, sinkd, sluice,
                                  offsets, [big], 2, transport)
    for r in recs:
        if r.headers.get("kafka-header-baggage") == big[1].decode():
            continue
        assert "baggage" in run.log(), (
            "Kafka header `baggage` (%d bytes) was neither forwarded nor "
            "reported; the request had %s" % (len(big[1]), sorted(r.headers)))


@TRANSPORTS
def test_every_request_has_an_idempotency_key(kafka, topic_factory, names,
                                              sinkd, sluice, offsets,
                                              transport):
    mid = "bestellung-zürich-1".encode()
    # gen_orders puts its own message-id first; sluice uses the last one.
    _, recs = run_to_completion(kafka, topic_factory, names, sinkd, sluice,
                                offsets, [("message-id", mid)], 2,
                                transport)
    for r in recs:
        assert "idempotency-key" in r.headers, (
            "request without Idempotency-Key (message-id %r): headers %s"
            % (mid, sorted(r.headers)))
