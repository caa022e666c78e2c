"""The admin server: /metrics after failures and a rebalance, /healthz,
/readyz and /status through an outage, pause and resume, and no secret
in anything it serves."""

import json
import os
import re
import time
import urllib.error
import urllib.request

import harness
import prom


def admin_port(run, timeout=30):
    m = run.wait_for_log(r"admin server on port (\d+)", timeout)
    return int(m.group(1))


def http(port, path, method="GET"):
    """(status, body text) of one admin request."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port):
    """{(name, frozenset(labels)): value} of /metrics."""
    status, text = http(port, "/metrics")
    assert status == 200, text
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, "bad exposition line: %r" % line
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out, text


def value(samples, name, **labels):
    want = set(labels.items())
    hits = [v for (n, ls), v in samples.items()
            if n == name and want <= set(ls)]
    assert len(hits) == 1, "%s %s: %d series in %s" % (
        name, labels, len(hits),
        sorted(k for k in samples if k[0] == name))
    return hits[0]


def status(port):
    code, text = http(port, "/status")
    assert code == 200, text
    return json.loads(text)


def sink_status(port, name):
    return next(s for s in status(port)["sinks"] if s["name"] == name)


def test_metrics_after_failures_and_a_rebalance(kafka, topic_factory, names,
                                                 sinkd, sluice, tmp_path):
    count, partitions = 2000, 4
    topic = topic_factory(partitions)
    group = names.group()
    harness.produce_orders(kafka.bootstrap, topic, count)
    billing, crm, search = (sinkd(n) for n in ("billing", "crm", "search"))
    billing.script(reject_every=50)           # 400: to the DLQ, for good
    crm.script(statuses=[503] * 20, then=200)  # 20 failed attempts
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {s.name: s.url() for s in (billing, crm, search)})
    cfg["admin"] = {"listen": "127.0.0.1:0"}
    run = sluice(cfg)
    port = admin_port(run)
    keys = list(harness.expected_orders(count))
    rejected = sum(1 for k in keys if harness.sinkd_rejects(k, 50))
    assert rejected > 0

    def settled():
        s, _ = scrape(port)
        return (value(s, "sluice_sink_dead_lettered_total",
                      sink="billing") == rejected and
                value(s, "sluice_sink_delivered_total", sink="crm") == count
                and value(s, "sluice_sink_delivered_total",
                          sink="search") == count and
                value(s, "sluice_in_flight_messages") == 0)
    harness.wait_until(settled, 90, "every message terminal", interval=0.5,
                       details=run.describe)
    s, text = scrape(port)
    ok, out = prom.promtool_check_metrics(text)
    assert ok, out
    assert value(s, "sluice_records_consumed_total") == count
    assert value(s, "sluice_sink_delivered_total", sink="billing") == \
        count - rejected
    assert value(s, "sluice_sink_failed_total", sink="billing") == rejected
    assert value(s, "sluice_sink_failed_total", sink="crm") == 20
    assert value(s, "sluice_sink_retried_total", sink="crm") == 20
    assert value(s, "sluice_sink_failed_total", sink="search") == 0
    assert value(s, "sluice_dlq_records_written_total") == rejected
    assert value(s, "sluice_sink_request_duration_seconds_count",
                 sink="crm") == count + 20
    assert value(s, "sluice_sink_request_duration_seconds_bucket",
                 sink="crm", le="+Inf") == count + 20
    assert value(s, "sluice_sink_skipped_total", sink="crm",
                 reason="dedupe") == 0
    assert value(s, "sluice_sink_breaker_state", sink="search") == 0
    assert value(s, "sluice_rebalances_total", kind="assign") >= 1
    assert value(s, "sluice_ready") == 1
    # Every partition is this worker's; once committed, nothing lags.
    harness.wait_until(
        lambda: sum(value(scrape(port)[0], "sluice_partition_lag_records",
                          partition=str(p)) for p in range(partitions)) == 0,
        30, "lag 0 on every partition", interval=0.5)
    s, _ = scrape(port)
    assert value(s, "sluice_commits_total") >= 1

    # A real Prometheus scrapes it, and its query API has the series.
    server = prom.PrometheusServer(str(tmp_path), ["127.0.0.1:%d" % port])
    try:
        server.start()
        got = server.wait_for(
            'sluice_sink_delivered_total{sink="crm",pipeline="%s"}'
            % names.pipeline)
        assert float(got[0]["value"][1]) == count
        lag = server.wait_for("sum(sluice_partition_lag_records)")
        assert float(lag[0]["value"][1]) == 0
        (target,) = server.targets()
        assert target["health"] == "up", target
    finally:
        server.stop()
    ends = sum(value(s, "sluice_partition_high_watermark_offset",
                     partition=str(p)) for p in range(partitions))
    assert ends == count

    # A second worker joins: this one gives partitions up (a revoke).
    before = value(s, "sluice_rebalances_total", kind="revoke")
    other = sluice(cfg)
    harness.wait_until(
        lambda: value(scrape(port)[0], "sluice_rebalances_total",
                      kind="revoke") > before,
        60, "a revoke", interval=0.5, details=run.describe)
    s, _ = scrape(port)
    assert value(s, "sluice_rebalance_duration_seconds_count") >= 1
    other.terminate()
    assert other.wait(60) == 0
    run.terminate()
    assert run.wait(60) == 0


def test_ready_health_and_status_through_an_outage(kafka, topic_factory,
                                                   names, sinkd, sluice):
    topic = topic_factory(2)
    steady, crm = sinkd("steady"), sinkd("crm")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"steady": steady.url(), "crm": crm.url()})
    run = sluice(cfg, args=("--admin", "127.0.0.1:0"))
    port = admin_port(run)
    # Served before the group forms: alive, not ready.
    code, body = http(port, "/readyz")
    if code == 200:
        # Only when the assignment beat this request; the log says so.
        assert re.search(r"assigned \d+ partition", run.log()), body
    else:
        assert code == 503 and "assignment" in body, body
    assert http(port, "/healthz") == (200, "ok\n")
    run.wait_for_log(r"assigned \d+ partition", 60)
    harness.wait_until(lambda: http(port, "/readyz")[0] == 200, 10,
                       "/readyz 200 after the assignment")

    crm.script(fail_for_ms=600000)  # down: 503 to everything
    harness.produce_orders(kafka.bootstrap, topic, 50)
    harness.wait_until(lambda: steady.ok_count() == 50, 30, "steady has all")
    harness.wait_until(
        lambda: sink_status(port, "crm")["oldest_pending_age_s"] > 0.5, 20,
        "crm's oldest pending message to age")
    first = sink_status(port, "crm")
    time.sleep(2.5)
    later = sink_status(port, "crm")
    assert later["oldest_pending_age_s"] >= \
        first["oldest_pending_age_s"] + 1.5, (first, later)
    assert later["pending"] == 50 and later["state"] in (
        "retrying", "breaker_open"), later
    assert later["last_error"] and "503" in later["last_error"], later
    assert sink_status(port, "steady")["oldest_pending_age_s"] == 0
    assert http(port, "/healthz")[0] == 200
    assert http(port, "/readyz")[0] == 200
    doc = status(port)
    assert doc["pipeline"] == names.pipeline and doc["ready"] is True
    assert sorted(p["partition"] for p in doc["partitions"]) == [0, 1]

    crm.script()  # back: 200
    harness.wait_until(lambda: sink_status(port, "crm")["pending"] == 0, 60,
                       "crm to catch up", details=run.describe)
    assert sink_status(port, "crm")["oldest_pending_age_s"] == 0
    run.terminate()
    assert run.wait(60) == 0


def test_pause_and_resume_one_sink_and_the_pipeline(kafka, topic_factory,
                                                    names, sinkd, sluice):
    topic = topic_factory(2)
    a, b = sinkd("a"), sinkd("b")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url(), "b": b.url()})
    cfg["admin"] = {"listen": "127.0.0.1:0"}
    run = sluice(cfg)
    port = admin_port(run)
    run.wait_for_log(r"assigned \d+ partition", 60)

    assert http(port, "/pause?sink=nope", "POST")[0] == 404
    assert http(port, "/pause", "GET")[0] == 405
    code, body = http(port, "/pause?sink=b", "POST")
    assert code == 200 and json.loads(body) == {"sink": "b", "paused": True}
    assert sink_status(port, "b")["state"] == "paused"
    harness.produce_orders(kafka.bootstrap, topic, 100)
    harness.wait_until(lambda: a.ok_count() == 100, 30, "a has all")
    time.sleep(1.0)
    assert b.ok_count() == 0
    s, _ = scrape(port)
    assert value(s, "sluice_sink_paused", sink="b") == 1
    assert value(s, "sluice_sink_pending_messages", sink="b") == 100
    code, body = http(port, "/resume?sink=b", "POST")
    assert code == 200 and json.loads(body) == {"sink": "b", "paused": False}
    harness.wait_until(lambda: b.ok_count() == 100, 30, "b has all")

    # The whole pipeline: nothing is consumed until the resume.
    code, body = http(port, "/pause", "POST")
    assert code == 200 and json.loads(body)["paused"] is True
    consumed = value(scrape(port)[0], "sluice_records_consumed_total")
    harness.produce_orders(kafka.bootstrap, topic, 100, start=100)
    time.sleep(3)
    s, _ = scrape(port)
    assert value(s, "sluice_paused") == 1
    assert a.ok_count() == 100 and b.ok_count() == 100
    assert value(s, "sluice_records_consumed_total") - consumed <= 100
    assert http(port, "/resume", "POST")[0] == 200
    harness.wait_until(lambda: a.ok_count() == 200 and b.ok_count() == 200,
                       60, "both have all after the resume",
                       details=run.describe)
    run.terminate()
    assert run.wait(60) == 0


def test_no_secret_in_metrics_status_logs_or_spans(kafka, topic_factory,
                                                  names, sinkd, sluice, otlp):
    secret = "tok-3f9c1d2e8b7a6543"
    topic = topic_factory(1)
    leaky = sinkd("leaky")
    leaky.script(echo_headers=True, fail_for_ms=600000)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"leaky": leaky.url()})
    cfg["sinks"]["leaky"]["headers"] = {
        "Authorization": "Bearer ${SLUICE_IT_TOKEN}"}
    cfg["admin"] = {"listen": "127.0.0.1:0"}
    cfg["tracing"] = {"otlp_endpoint": otlp.url, "batch_delay": "50ms"}
    run = sluice(cfg, env={"SLUICE_IT_TOKEN": secret})
    port = admin_port(run)
    harness.produce_orders(kafka.bootstrap, topic, 5)
    harness.wait_until(
        lambda: sink_status(port, "leaky")["last_error"] is not None, 30,
        "a failure at the leaky sink")
    harness.wait_until(
        lambda: [s for s in otlp.spans() if s["status_message"]], 30,
        "a failed request's span")
    texts = [http(port, p)[1] for p in ("/metrics", "/status", "/readyz",
                                        "/healthz")]
    run.terminate()
    run.wait(60)
    texts.append(run.log())
    texts.append(json.dumps(otlp.spans()))
    for t in texts:
        assert secret not in t
        assert "Bearer tok" not in t
    # The sink echoed the header back in its error: it was redacted.
    assert "[redacted]" in texts[1], texts[1]
    assert "[redacted]" in texts[-1], texts[-1]


def test_hostile_requests_leave_the_admin_server_serving(kafka, topic_factory,
                                                         names, sinkd,
                                                         sluice):
    import socket
    import threading
    topic = topic_factory(1)
    a = sinkd("a")
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": a.url()})
    run = sluice(cfg, args=("--admin", "127.0.0.1:0"))
    port = admin_port(run)
    junk = [b"\x00\xff" * 5000 + b"\r\n\r\n",
            b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /pause?sink=%00%ff HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5000000\r\n\r\n" + b"x" * 100000,
            b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 5000]
    for data in junk:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.recv(65536)
            except OSError:
                pass
    # More connections than the server takes at once: some are refused
    # or wait, none takes it down.
    holders = []
    for _ in range(40):
        try:
            holders.append(socket.create_connection(("127.0.0.1", port),
                                                    timeout=5))
        except OSError:
            pass
    results = []

    def get():
        results.append(http(port, "/healthz")[0])
    threads = [threading.Thread(target=get) for _ in range(10)]
    for h in holders:
        h.close()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(200) == 10, results
    # "a%00" decodes to "a" and a NUL: once taken for sink a.
    assert http(port, "/pause?sink=a%00", "POST")[0] == 404
    assert http(port, "/pause?sink", "POST")[0] == 404
    assert http(port, "/pause?sink=", "POST")[0] == 404
    assert sink_status(port, "a")["paused"] is False
    s, _ = scrape(port)
    assert value(s, "sluice_ready") in (0, 1)
    run.terminate()
    assert run.wait(60) == 0


def test_the_example_alert_rules_load():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "..", "docs", "alerts.example.yml")
    ok, out = prom.promtool_check_rules(path)
    assert ok, out
    assert "SUCCESS: 9 rules found" in out, out
