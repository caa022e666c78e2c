"""sinkd's own script keys: reject_every / reject_status, echo_headers, body,
and the fault injection of the chaos suite: chaos (503 / 429 / timeout /
reset percentages) and hang.

Other tests rely on these to make a sink refuse messages for good or leak
secrets into its errors, so they are checked here on their own. No Kafka.
"""

import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

import harness

# sinkd is local: a proxy from the environment must not reroute requests.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def send(url, key=None, headers=None):
    """POST a small body; returns (status, response body bytes)."""
    req = urllib.request.Request(url, data=b'{"n":1}', method="POST")
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Idempotency-Key", key)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with OPENER.open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def script_error(sk, **kw):
    """The error sinkd gives for a script it refuses, or None."""
    try:
        sk.script(**kw)
    except RuntimeError as e:
        return str(e)
    return None


def test_sinkd_rejects_matches_fnv1a():
    # Published 32-bit FNV-1a values: "a" -> 0xe40c292c, "foobar" ->
    # 0xbf9cf968; a hash is 0 modulo itself.
    assert harness.sinkd_rejects("a", 0xe40c292c)
    assert harness.sinkd_rejects("foobar", 0xbf9cf968)
    assert not harness.sinkd_rejects("a", 0xbf9cf968)
    assert harness.sinkd_rejects("anything", 1)
    assert not harness.sinkd_rejects("anything", 0)


def test_reject_every_is_deterministic_per_key(sinkd):
    sk = sinkd("rej")
    sk.script("/rej", reject_every=10)
    keys = ["order-%d" % i for i in range(200)]
    expected = {k for k in keys if harness.sinkd_rejects(k, 10)}
    # The sample must exercise both answers.
    assert 0 < len(expected) < len(keys)

    got = {}
    for k in keys:
        status, _ = send(sk.url("/rej"), key=k)
        got[k] = status
    assert {k for k, s in got.items() if s == 400} == expected
    assert {s for k, s in got.items() if k not in expected} == {200}

    # A resend gets the same answer: the message fails for good.
    for k in sorted(expected)[:5] + sorted(set(keys) - expected)[:5]:
        status, _ = send(sk.url("/rej"), key=k)
        assert status == (400 if k in expected else 200), k

    # Without the header the rule never applies.
    assert send(sk.url("/rej"))[0] == 200

    # Rejections count like any other answer.
    by_status = sk.stats()["by_status"]
    assert by_status.get("400") == len(expected) + 5
    assert by_status.get("200") == len(keys) - len(expected) + 5 + 1
    recorded = [r.status for r in sk.records()]
    assert recorded.count(400) == len(expected) + 5


def test_reject_status_and_precedence(sinkd):
    sk = sinkd("prec")
    key = next("order-%d" % i for i in range(1000)
               if harness.sinkd_rejects("order-%d" % i, 3))
    other = next("order-%d" % i for i in range(1000)
                 if not harness.sinkd_rejects("order-%d" % i, 3))

    # reject_every comes before statuses; statuses still advance for
    # requests the rule lets through.
    sk.script("/p", reject_every=3, reject_status=422, statuses=[503])
    assert send(sk.url("/p"), key=key)[0] == 422
    assert send(sk.url("/p"), key=other)[0] == 503
    assert send(sk.url("/p"), key=other)[0] == 200
    assert send(sk.url("/p"), key=key)[0] == 422

    # Inside a failure window the window's status wins.
    sk.script("/p", reject_every=1, fail_for_ms=60000, fail_status=502)
    assert send(sk.url("/p"), key=key)[0] == 502


def test_echo_headers_leaks_authorization(sinkd):
    sk = sinkd("echo")
    secret = "Bearer s3cret-token-42"
    sk.script("/e", statuses=[503], echo_headers=True)
    status, body = send(sk.url("/e"), key="order-1",
                        headers={"Authorization": secret, "X-Trace": "t1"})
    assert status == 503
    doc = json.loads(body)
    assert isinstance(doc["error"], str)
    hdrs = {k.lower(): v for k, v in doc["request_headers"].items()}
    assert hdrs["authorization"] == secret
    assert hdrs["idempotency-key"] == "order-1"
    assert hdrs["x-trace"] == "t1"

    # 2xx answers carry no body.
    status, body = send(sk.url("/e"), headers={"Authorization": secret})
    assert (status, body) == (200, b"")

    # A failure window echoes too; echo_headers wins over body.
    sk.script("/e", fail_for_ms=60000, echo_headers=True, body="ignored")
    status, body = send(sk.url("/e"), headers={"Authorization": secret})
    assert status == 503
    assert secret in body.decode()
    assert "ignored" not in body.decode()


def test_body_on_non_2xx(sinkd):
    sk = sinkd("body")
    text = '{"error": "quota exceeded"}'
    sk.script("/b", statuses=[500, 200], then=429, body=text)
    assert send(sk.url("/b")) == (500, text.encode())
    assert send(sk.url("/b")) == (200, b"")
    assert send(sk.url("/b")) == (429, text.encode())

    # Without body or echo_headers a failure stays empty.
    sk.script("/b", statuses=[500])
    assert send(sk.url("/b")) == (500, b"")


@pytest.mark.parametrize("kw, word", [
    ({"reject_every": -1}, "reject_every"),
    ({"reject_every": "10"}, "reject_every"),
    ({"reject_status": 150}, "reject_status"),
    ({"echo_headers": "yes"}, "echo_headers"),
    ({"body": 5}, "body"),
    ({"bodi": "x"}, "unknown field"),
    ({"chaos": 5}, "chaos"),
    ({"chaos": {"reset": 101}}, "chaos.reset"),
    ({"chaos": {"503": 60, "reset": 41}}, "add up to 101"),
    ({"chaos": {"503": "10"}}, "chaos.503"),
    ({"chaos": {"rst": 10}}, "unknown field: rst"),
    ({"chaos": {"timeout": 10, "timeout_ms": 0}}, "timeout_ms"),
    ({"hang": 1}, "hang"),
])
def test_script_validation(sinkd, kw, word):
    sk = sinkd("val")
    err = script_error(sk, **kw)
    assert err is not None and "HTTP 400" in err and word in err, err
    # A valid script with every new key is accepted.
    assert script_error(sk, reject_every=7, reject_status=409,
                        echo_headers=False, body="x") is None


def raw_post(port, path, timeout=10):
    """One POST on a fresh connection: (status, headers dict) or the
    exception the client got instead of an answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=b'{"n":1}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException) as e:
        return e
    finally:
        conn.close()


def test_chaos_reset_is_an_rst(sinkd):
    sk = sinkd("rst")
    sk.script("/r", chaos={"reset": 100})
    for _ in range(3):
        got = raw_post(sk.port, "/r")
        # An RST, not an orderly close: the client's read fails with
        # ECONNRESET instead of seeing EOF.
        assert isinstance(got, ConnectionResetError), got
    recs = sk.records()
    assert [(r.status, r.raw.get("fault")) for r in recs] == \
        [(0, "reset")] * 3
    st = sk.stats()
    assert st["faults"]["reset"] == 3 and st["by_status"] == {"0": 3}


def test_chaos_429_has_retry_after_and_timeout_answers_late(sinkd):
    sk = sinkd("c429")
    sk.script("/a", chaos={"429": 100})
    status, hdrs = raw_post(sk.port, "/a")
    assert status == 429 and hdrs["retry-after"] == "1"
    sk.script("/a", chaos={"429": 100}, retry_after=7)
    assert raw_post(sk.port, "/a")[1]["retry-after"] == "7"

    sk.script("/t", chaos={"timeout": 100, "timeout_ms": 1500})
    # A client that waits less than timeout_ms times out ...
    got = raw_post(sk.port, "/t", timeout=0.5)
    assert isinstance(got, socket.timeout), got
    # ... one that waits longer gets a 200, late.
    t0 = time.monotonic()
    assert raw_post(sk.port, "/t")[0] == 200
    assert time.monotonic() - t0 >= 1.4
    recs = [r for r in sk.records() if r.path == "/t"]
    assert [(r.status, r.raw.get("fault")) for r in recs] == \
        [(200, "timeout")] * 2
    assert sk.stats()["faults"]["timeout"] == 2


def test_chaos_mix_follows_the_percentages(sinkd):
    sk = sinkd("mix")
    sk.script("/m", chaos={"503": 30, "429": 20, "reset": 10, "seed": 7})
    n = 300
    got = []
    for _ in range(n):
        r = raw_post(sk.port, "/m")
        got.append("reset" if isinstance(r, ConnectionResetError) else r[0])
    counts = {k: got.count(k) for k in (200, 503, 429, "reset")}
    assert sum(counts.values()) == n, got
    # Generous limits: these are draws, not a schedule.
    assert 60 <= counts[503] <= 120, counts
    assert 30 <= counts[429] <= 90, counts
    assert 10 <= counts["reset"] <= 55, counts
    assert 90 <= counts[200] <= 180, counts
    by_status = sk.stats()["by_status"]
    assert by_status.get("503") == counts[503]
    assert by_status.get("0") == counts["reset"]

    # The same seed gives the same sequence.
    sk.script("/m", chaos={"503": 30, "429": 20, "reset": 10, "seed": 7})
    again = []
    for _ in range(40):
        r = raw_post(sk.port, "/m")
        again.append("reset" if isinstance(r, ConnectionResetError) else r[0])
    assert again == got[:40]


def test_hang_never_answers(sinkd):
    sk = sinkd("hang")
    sk.script("/h", hang=True)
    t0 = time.monotonic()
    got = raw_post(sk.port, "/h", timeout=1.5)
    assert isinstance(got, socket.timeout), got
    assert time.monotonic() - t0 >= 1.4
    # Other paths still answer while a connection hangs.
    assert raw_post(sk.port, "/other")[0] == 200
    recs = [r for r in sk.records() if r.path == "/h"]
    assert [(r.status, r.raw.get("fault")) for r in recs] == [(0, "hang")]
    assert sk.stats()["faults"]["hang"] == 1
    # Back to normal once the script says so.
    sk.script("/h")
    assert raw_post(sk.port, "/h")[0] == 200
