"""Tracing through the binary: a record's W3C trace context reaches
every sink request as a child span, the spans reach an OTLP/HTTP JSON
receiver with the conventions' attributes, a receiver that is down costs
the pipeline nothing (drops are counted), and without a tracing section
sluice passes the producer's context on unchanged."""

import json
import os
import re
import textwrap
import urllib.request

from confluent_kafka import Producer

import harness
from harness import wait_until

TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# The transform writes the trace id it sees into the body: Lua reads it.
TRANSFORM = """\
    function transform(msg)
      local v = msg.json
      v.trace = msg.trace_id or "none"
      return msg
    end
    """


def new_context(flags="01"):
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, span_id, "00-%s-%s-%s" % (trace_id, span_id, flags)


def produce(bootstrap, topic, records):
    """records: (id, headers dict) to partition id % 2."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for rid, headers in records:
        value = json.dumps({"id": rid}).encode()
        p.produce(topic, value=value, key=b"k%d" % rid, partition=rid % 2,
                  headers=list(headers.items()))
    assert p.flush(30) == 0


def traceparent_of(req):
    v = req.headers.get("traceparent")
    if v is None:
        return None
    m = TRACEPARENT_RE.match(v)
    assert m, "malformed traceparent %r in %r" % (v, req)
    return m.groups()


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, _, v = line.rpartition(" ")
            out[name_labels.split("{")[0]] = out.get(
                name_labels.split("{")[0], 0) + float(v)
    return out


def test_a_records_trace_reaches_every_sink_and_the_collector(
        kafka, topic_factory, names, sinkd, sluice, offsets, otlp,
        tmp_path):
    topic = topic_factory(2)
    a = sinkd("a")
    b = sinkd("b")
    b.script(statuses=[503, 503], then=200)  # two failed attempts at b
    (tmp_path / "t.lua").write_text(textwrap.dedent(TRANSFORM))
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url(), "b": b.url()})
    cfg["transform"] = "t.lua"
    cfg["tracing"] = {"otlp_endpoint": otlp.url, "batch_delay": "100ms"}
    run = sluice(cfg, args=("--log-format", "json"))

    sampled = {}  # id -> (trace id, producer span id)
    records = []
    for rid in range(12):
        trace_id, span_id, tp = new_context()
        headers = {"traceparent": tp}
        if rid == 3:
            headers["tracestate"] = "vendor=abc,other=x y"
        sampled[rid] = (trace_id, span_id)
        records.append((rid, headers))
    unsampled_trace, unsampled_span, tp = new_context("00")
    records.append((12, {"traceparent": tp}))
    records.append((13, {}))  # no context: a new trace
    records.append((14, {"traceparent": "00-" + "A" * 32 + "-" + "b" * 16 +
                         "-01"}))  # invalid (uppercase): a new trace too
    produce(kafka.bootstrap, topic, records)

    total = len(records)
    wait_until(lambda: a.ok_count() >= total and b.ok_count() >= total, 60,
               "every record at both sinks", alive=[run])
    harness.wait_commits_at_end(offsets(cfg["source"]["group"]), topic, 2,
                                [run])

    requests = {"a": a.records(), "b": b.records()}
    assert len(requests["b"]) == total + 2
    by_trace = {}
    for sink, reqs in requests.items():
        for req in reqs:
            rid = json.loads(req.body)["id"]
            body_trace = json.loads(req.body)["trace"]
            got = traceparent_of(req)
            assert got is not None, req
            trace_id, span_id, flags = got
            # Lua saw the trace the request carries.
            assert body_trace == trace_id, (rid, body_trace, trace_id)
            if rid in sampled:
                assert trace_id == sampled[rid][0]
                assert span_id != sampled[rid][1]
                assert flags == "01"
            elif rid == 12:
                assert (trace_id, flags) == (unsampled_trace, "00")
                assert span_id != unsampled_span
            else:
                assert flags == "01"  # sample_ratio defaults to 1
            if rid == 3:
                assert req.headers["tracestate"] == "vendor=abc,other=x y"
            else:
                assert "tracestate" not in req.headers
            by_trace.setdefault(trace_id, []).append((sink, rid, span_id,
                                                      req))
    assert len(by_trace) == total
    new_traces = [t for t, reqs in by_trace.items()
                  if reqs[0][1] in (13, 14)]
    assert len(new_traces) == 2

    # Spans: per sampled record a process span, a transform span and one
    # client span per request it made.
    sampled_traces = set(by_trace) - {unsampled_trace}
    expected = sum(2 + len(by_trace[t]) for t in sampled_traces)
    wait_until(lambda: len(otlp.spans()) >= expected, 30,
               "%d spans at the receiver" % expected, alive=[run])
    spans = otlp.spans()
    assert len(spans) == expected, (len(spans), expected)
    assert not [s for s in spans if s["trace_id"] == unsampled_trace]
    for sp in spans:
        assert sp["resource"]["service.name"] == "sluice"
        assert sp["resource"]["sluice.pipeline"] == names.pipeline
    for trace_id in sampled_traces:
        mine = [s for s in spans if s["trace_id"] == trace_id]
        process = [s for s in mine if s["kind"] == 5]
        assert len(process) == 1, mine
        process = process[0]
        rid = by_trace[trace_id][0][1]
        if rid in sampled:
            assert process["parent_span_id"] == sampled[rid][1]
        else:
            assert not process["parent_span_id"]
        attrs = process["attributes"]
        assert process["name"] == "process " + topic
        assert attrs["messaging.system"] == "kafka"
        assert attrs["messaging.destination.name"] == topic
        assert attrs["messaging.destination.partition.id"] == str(rid % 2)
        assert attrs["messaging.consumer.group.name"] == \
            cfg["source"]["group"]
        req0 = by_trace[trace_id][0][3]
        assert attrs["messaging.kafka.offset"] == req0.offset
        transform = [s for s in mine if s["name"] == "transform"]
        assert len(transform) == 1
        assert transform[0]["parent_span_id"] == process["span_id"]
        assert transform[0]["attributes"]["sluice.transform.outputs"] == 1
        clients = {s["span_id"]: s for s in mine if s["kind"] == 3}
        assert len(clients) == len(by_trace[trace_id])
        for sink, _, span_id, req in by_trace[trace_id]:
            sp = clients[span_id]  # the span id the request carried
            assert sp["parent_span_id"] == process["span_id"]
            assert sp["name"] == "POST"
            at = sp["attributes"]
            assert at["http.request.method"] == "POST"
            assert at["http.response.status_code"] == req.status
            assert at["sluice.sink"] == sink
            assert at["server.address"] == "127.0.0.1"
            assert at["server.port"] == int(
                re.search(r":(\d+)", (a if sink == "a" else b).url()
                          ).group(1))
            if req.status == 503:
                assert at["error.type"] == "503"
                assert sp["status_code"] == 2
            else:
                assert "error.type" not in at
                assert sp["status_code"] in (0, None)
    retried = [s for s in spans if s["kind"] == 3 and
               s["attributes"].get("http.request.resend_count")]
    assert len(retried) == 2, retried

    # Log lines about a message carry its trace id.
    run.terminate()
    assert run.wait(60) == 0
    warned = [json.loads(line) for line in run.log().splitlines()
              if '"sink":"b"' in line and '"status":503' in line]
    assert warned, run.log()
    assert warned[0].get("trace_id") in by_trace, warned[0]


def test_a_collector_that_is_down_costs_the_pipeline_nothing(
        kafka, topic_factory, names, sinkd, sluice, offsets):
    count = 200
    topic = topic_factory(1)
    a = sinkd("a")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url()})
    dead = harness.free_port()  # nothing listens there
    cfg["tracing"] = {"otlp_endpoint": "http://127.0.0.1:%d/v1/traces" % dead,
                      "batch_delay": "50ms", "batch_size": 16}
    cfg["admin"] = {"listen": "127.0.0.1:0"}
    run = sluice(cfg)
    port = int(run.wait_for_log(r"admin server on port (\d+)", 30).group(1))
    harness.produce_orders(kafka.bootstrap, topic, count)
    wait_until(lambda: a.ok_count() >= count, 60, "every order at a",
               alive=[run])
    harness.wait_commits_at_end(offsets(cfg["source"]["group"]), topic, 1,
                                [run])
    assert all(traceparent_of(r) for r in a.records())
    # Each record's process span and request span were dropped, counted.
    wait_until(lambda: metrics(port).get("sluice_spans_dropped_total", 0)
               >= 2 * count, 30, "the drops counted", alive=[run])
    m = metrics(port)
    assert m["sluice_spans_exported_total"] == 0
    run.terminate()
    assert run.wait(30) == 0


def test_without_tracing_the_producers_context_passes_unchanged(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    topic = topic_factory(2)
    a = sinkd("a")
    (tmp_path / "t.lua").write_text(textwrap.dedent(TRANSFORM))
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url()})
    cfg["transform"] = "t.lua"
    run = sluice(cfg)
    trace_id, _, tp = new_context()
    produce(kafka.bootstrap, topic, [
        (0, {"traceparent": tp, "tracestate": "k=v"}),
        (1, {}),
        # A future version with more fields: read as version 00.
        (2, {"traceparent": "cc-%s-%s-01-what-is-this" % (trace_id,
                                                          "1" * 16)}),
        (3, {"traceparent": "00-%s-%s-01\r\nX-Evil: 1" % (trace_id,
                                                           "2" * 16)}),
        (4, {"traceparent": tp, "tracestate": "k=v\r\nX-Evil: 1"}),
    ])
    wait_until(lambda: a.ok_count() >= 5, 60, "5 records", alive=[run])
    got = {json.loads(r.body)["id"]: r for r in a.records()}
    assert got[0].headers["traceparent"] == tp
    assert got[0].headers["tracestate"] == "k=v"
    assert json.loads(got[0].body)["trace"] == trace_id
    assert "traceparent" not in got[1].headers
    assert json.loads(got[1].body)["trace"] == "none"
    assert got[2].headers["traceparent"] == "00-%s-%s-01" % (trace_id,
                                                             "1" * 16)
    assert "traceparent" not in got[3].headers
    assert "x-evil" not in got[3].headers
    assert got[4].headers["traceparent"] == tp
    assert "tracestate" not in got[4].headers and "x-evil" not in \
        got[4].headers
    run.terminate()
    assert run.wait(30) == 0
