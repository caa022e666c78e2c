"""`sluice reconcile LEFT RIGHT` on outcome logs (docs/outcomes.md): files
written here, and one topic on the session's broker (only that test
needs Kafka).
"""

import hashlib
import json

from confluent_kafka import Producer

from harness import sluice_cmd


def outcome(key, sink="crm", ts="2026-12-05T12:00:00.123Z", body=None,
            outcome_="delivered", method="POST", path="/orders",
            body_text=None, **extra):
    """One outcome line (a dict); body_text is the exact body sent (its
    sha256), body the JSON kept (default: parsed from body_text)."""
    line = {"v": 1, "ts": ts, "pipeline": "orders", "sink": sink,
            "key": key, "outcome": outcome_}
    if outcome_ in ("delivered", "applied", "shadow"):
        if body_text is None:
            body_text = json.dumps(body if body is not None
                                   else {"order_id": key, "total": 42})
        line.update({"method": method, "path": path, "status": 200,
                     "attempts": 1,
                     "body_sha256": hashlib.sha256(
                         body_text.encode()).hexdigest()})
        line["body"] = body if body is not None else json.loads(body_text)
    line.update(extra)
    return line


def write_log(path, lines):
    with open(path, "w") as f:
        for l in lines:
            f.write((l if isinstance(l, str) else json.dumps(l)) + "\n")
    return str(path)


def reconcile(*args):
    return sluice_cmd(["reconcile"] + [str(a) for a in args])


def reconcile_json(*args):
    p = reconcile("--output", "json", *args)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def counts(m=0, ml=0, mr=0, mm=0, ne=0):
    return {"matched": m, "missing_left": ml, "missing_right": mr,
            "mismatched": mm, "no_effect": ne}


def test_zero_diff(tmp_path):
    lines = []
    for i in range(20):
        sink = ("crm", "billing")[i % 2]
        day = "2026-12-0%d" % (1 + i % 3)
        lines.append(outcome("order-%d" % i, sink=sink,
                             ts=day + "T10:00:00.000Z"))
    left = write_log(tmp_path / "left.ndjson", lines)
    # The legacy side logged them in another order, a second later.
    right_lines = []
    for l in reversed(lines):
        r = dict(l)
        r["ts"] = l["ts"].replace("10:00:00", "10:00:01")
        r["pipeline"] = "legacy"
        right_lines.append(r)
    right = write_log(tmp_path / "right.ndjson", right_lines)

    rc, rep = reconcile_json(left, right)
    assert rc == 0
    assert rep["diff"] is False
    assert rep["totals"] == counts(m=20)
    assert sorted(rep["sinks"]) == ["billing", "crm"]
    assert rep["sinks"]["crm"]["days"] == {
        "2026-12-01": counts(m=4), "2026-12-02": counts(m=3),
        "2026-12-03": counts(m=3)}
    assert rep["sinks"]["crm"]["totals"] == counts(m=10)
    assert rep["sinks"]["crm"]["examples"] == {
        "missing_left": [], "missing_right": [], "mismatched": []}
    assert rep["streak_days"] == 3
    assert rep["left"]["lines"] == 20 and rep["right"]["lines"] == 20

    p = reconcile(left, right)
    assert p.returncode == 0, p.stderr
    assert "no diff" in p.stdout
    assert "zero-diff streak: 3 day(s)" in p.stdout
    assert "crm" in p.stdout and "2026-12-03" in p.stdout


def test_planted_missing_and_mismatched(tmp_path):
    left = [outcome("a"), outcome("b"), outcome("only-left"),
            outcome("body-diff", body={"order_id": "x", "total": 42}),
            outcome("path-diff", path="/a")]
    right = [outcome("a"), outcome("b"), outcome("only-right"),
             outcome("body-diff", body={"total": 43, "order_id": "x"}),
             outcome("path-diff", path="/b")]
    rc, rep = reconcile_json(write_log(tmp_path / "l", left),
                             write_log(tmp_path / "r", right))
    assert rc == 1
    assert rep["diff"] is True
    assert rep["totals"] == counts(m=2, ml=1, mr=1, mm=2)
    ex = rep["sinks"]["crm"]["examples"]
    assert ex["missing_left"] == [{"key": "only-right", "day": "2026-12-05",
                                   "detail": "absent on the left"}]
    assert ex["missing_right"] == [{"key": "only-left", "day": "2026-12-05",
                                    "detail": "absent on the right"}]
    assert ex["mismatched"] == [
        {"key": "body-diff", "day": "2026-12-05",
         "detail": "body.total: 42 != 43"},
        {"key": "path-diff", "day": "2026-12-05",
         "detail": "path: /a != /b"}]
    assert rep["streak_days"] == 0

    p = reconcile(tmp_path / "l", tmp_path / "r")
    assert p.returncode == 1
    assert "body-diff: body.total: 42 != 43" in p.stdout
    assert "DIFF: 1 missing on the left, 1 missing on the right, " \
           "2 mismatched" in p.stdout

    # --examples bounds them; 0 shows none.
    rc, rep = reconcile_json("--examples", "1", tmp_path / "l",
                             tmp_path / "r")
    assert len(rep["sinks"]["crm"]["examples"]["mismatched"]) == 1
    rc, rep = reconcile_json("--examples", "0", tmp_path / "l",
                             tmp_path / "r")
    assert rep["sinks"]["crm"]["examples"]["mismatched"] == []


def test_dead_lettered(tmp_path):
    left = [outcome("failed-right"),
            outcome("failed-left", outcome_="dead_lettered",
                    error="deadline"),
            outcome("failed-both", outcome_="dead_lettered",
                    error="rejected"),
            # Dead-lettered, then replayed from the DLQ: applied.
            outcome("replayed", outcome_="dead_lettered", error="deadline"),
            outcome("replayed")]
    right = [outcome("failed-right", outcome_="dead_lettered",
                     error="rejected"),
             outcome("failed-left"),
             outcome("failed-both", outcome_="dead_lettered",
                     error="rejected"),
             outcome("replayed")]
    rc, rep = reconcile_json(write_log(tmp_path / "l", left),
                             write_log(tmp_path / "r", right))
    assert rc == 1
    assert rep["totals"] == counts(m=1, ml=1, mr=1, ne=1)
    ex = rep["sinks"]["crm"]["examples"]
    assert ex["missing_right"] == [
        {"key": "failed-right", "day": "2026-12-05",
         "detail": "dead_lettered (rejected) on the right"}]
    assert ex["missing_left"] == [
        {"key": "failed-left", "day": "2026-12-05",
         "detail": "dead_lettered (deadline) on the left"}]


def test_duplicates_and_already_handled(tmp_path):
    left = [outcome("a"), outcome("a", ts="2026-12-06T00:00:00.000Z"),
            outcome("a", outcome_="already_handled"),
            outcome("b", outcome_="applied")]
    right = [outcome("a", outcome_="shadow"),
             outcome("b", outcome_="already_handled"),
             outcome("b"), outcome("b"), outcome("b")]
    rc, rep = reconcile_json(write_log(tmp_path / "l", left),
                             write_log(tmp_path / "r", right))
    assert rc == 0
    # The first effect counts (its day), the repeats are reported only.
    assert rep["totals"] == counts(m=2)
    assert list(rep["sinks"]["crm"]["days"]) == ["2026-12-05"]
    assert rep["duplicates"] == {"left": 1, "right": 2}
    assert rep["sinks"]["crm"]["duplicates"] == {"left": 1, "right": 2}
    p = reconcile(tmp_path / "l", tmp_path / "r")
    assert "duplicates (repeated effects, not a diff): left 1, right 2" \
        in p.stdout


def test_ignore_field(tmp_path):
    left = [outcome("a", body={"total": 1, "meta": {"sent_at": "10:00:00",
                                                    "v": 1}}),
            outcome("no-body", body_text='{"total": 1}')]
    right = [outcome("a", body={"meta": {"v": 1, "sent_at": "10:00:07"},
                                "total": 1}),
             outcome("no-body", body_text='{"total": 1}')]
    del left[1]["body"]
    l = write_log(tmp_path / "l", left)
    r = write_log(tmp_path / "r", right)

    rc, rep = reconcile_json(l, r)
    assert rc == 1
    assert rep["sinks"]["crm"]["examples"]["mismatched"] == [
        {"key": "a", "day": "2026-12-05",
         "detail": 'body.meta.sent_at: "10:00:00" != "10:00:07"'}]

    rc, rep = reconcile_json("--ignore-field", "meta.sent_at",
                             "--ignore-field", "not.there", l, r)
    assert rc == 0
    assert rep["totals"] == counts(m=2)
    assert rep["ignored_fields"] == ["meta.sent_at", "not.there"]
    # One pair had no body on a side: compared by body_sha256, said so.
    assert rep["compared_by_hash"] == 1
    p = reconcile("--ignore-field", "meta.sent_at", l, r)
    assert p.returncode == 0
    assert "1 pair(s) compared by body_sha256" in p.stdout

    p = reconcile("--ignore-field", "a..b", l, r)
    assert p.returncode == 2
    assert "empty component" in p.stderr


def test_json_key_order_and_whitespace_match(tmp_path):
    left = [outcome("a", body_text='{"order_id":"a","total":42,'
                                   '"items":[{"sku":"x","qty":1}]}')]
    right_text = ' {\n "items" : [ { "qty" : 1 , "sku" : "\\u0078" } ] ,' \
                 ' "total" : 42 , "order_id" : "a" } '
    right = [outcome("a", body_text=right_text)]
    # The bodies' bytes differ: so do their hashes.
    assert left[0]["body_sha256"] != right[0]["body_sha256"]
    # The line itself written with other key order and spacing.
    body_json = json.dumps(json.loads(right_text), indent=None,
                           separators=(" , ", " : "))
    line = dict(right[0])
    line.pop("body")
    right_line = json.dumps(line, separators=(" ,  ", ":")) \
        .rstrip("}") + ' ,  "body" : ' + body_json + " }"
    rc, rep = reconcile_json(write_log(tmp_path / "l", left),
                             write_log(tmp_path / "r", [right_line]))
    assert rc == 0, rep
    assert rep["totals"] == counts(m=1)

    # 1 and 1.0 are not the same number (as jansson reads them).
    rc, rep = reconcile_json(
        write_log(tmp_path / "l2", [outcome("a", body={"total": 1})]),
        write_log(tmp_path / "r2", [outcome("a", body_text='{"total":1.0}')]))
    assert rc == 1
    assert rep["sinks"]["crm"]["examples"]["mismatched"][0]["detail"] == \
        "body.total: 1 != 1.0"


def test_streak_over_days(tmp_path):
    def day(d):
        return "2026-12-%02dT08:00:00.000Z" % d
    left, right = [], []
    for d in range(1, 7):
        for s in ("crm", "billing"):
            left.append(outcome("k%d" % d, sink=s, ts=day(d)))
            if not (d == 3 and s == "billing"):
                right.append(outcome("k%d" % d, sink=s, ts=day(d)))
    rc, rep = reconcile_json(write_log(tmp_path / "l", left),
                             write_log(tmp_path / "r", right))
    assert rc == 1
    # Days 4, 5 and 6 were clean for every sink; day 3 was not.
    assert rep["streak_days"] == 3
    assert rep["sinks"]["billing"]["days"]["2026-12-03"] == counts(mr=1)
    assert rep["sinks"]["crm"]["days"]["2026-12-03"] == counts(m=1)

    # A day without any outcome ends the streak (no evidence that day).
    left.append(outcome("late", ts=day(8)))
    right.append(outcome("late", ts=day(8)))
    rc, rep = reconcile_json(write_log(tmp_path / "l", left),
                             write_log(tmp_path / "r", right))
    assert rep["streak_days"] == 1

    # A pair counts on the left line's day; the right's when only there.
    rc, rep = reconcile_json(
        write_log(tmp_path / "l3", [outcome("x", ts=day(1))]),
        write_log(tmp_path / "r3", [outcome("x", ts=day(2)),
                                    outcome("y", ts=day(9))]))
    assert rep["sinks"]["crm"]["days"] == {"2026-12-01": counts(m=1),
                                           "2026-12-09": counts(ml=1)}


def test_sink_filter(tmp_path):
    left = [outcome("a", sink="crm"), outcome("b", sink="billing")]
    right = [outcome("a", sink="crm")]
    l = write_log(tmp_path / "l", left)
    r = write_log(tmp_path / "r", right)
    rc, rep = reconcile_json("--sink", "crm", l, r)
    assert rc == 0
    assert list(rep["sinks"]) == ["crm"]
    rc, rep = reconcile_json("--sink", "crm", "--sink", "billing", l, r)
    assert rc == 1
    assert rep["totals"] == counts(m=1, mr=1)


def test_bad_input_exit_2(tmp_path):
    good = json.dumps(outcome("a"))
    l = write_log(tmp_path / "left.ndjson", [good, "", good])
    # Line 3 (an empty line 2 counts) is cut short.
    r = write_log(tmp_path / "right.ndjson", [good, "", good[:40], good])
    p = reconcile(l, r)
    assert p.returncode == 2
    assert "right.ndjson:3: not JSON" in p.stderr
    assert p.stdout == ""

    r = write_log(tmp_path / "r2.ndjson",
                  [good, json.dumps({"v": 1, "ts": "2026-12-05T12:00:00Z",
                                     "sink": "crm", "outcome": "delivered"})])
    p = reconcile(l, r)
    assert p.returncode == 2
    assert "r2.ndjson:2: missing field `key`" in p.stderr

    r = write_log(tmp_path / "r3.ndjson", ["[1,2]"])
    p = reconcile(l, r)
    assert p.returncode == 2
    assert "r3.ndjson:1: not a JSON object" in p.stderr

    # Binary garbage and a line over the bound: errors, not crashes.
    with open(tmp_path / "r4.ndjson", "wb") as f:
        f.write(b"\x00\xff{\"v\":\n")
    p = reconcile(l, tmp_path / "r4.ndjson")
    assert p.returncode == 2
    assert "r4.ndjson:1:" in p.stderr
    with open(tmp_path / "r5.ndjson", "wb") as f:
        f.write(good.encode() + b"\n" + b" " * (17 * 1024 * 1024) + b"x\n")
    p = reconcile(l, tmp_path / "r5.ndjson")
    assert p.returncode == 2
    assert "r5.ndjson:2: line longer than 16 MiB" in p.stderr

    # An empty file is a log without outcomes.
    write_log(tmp_path / "empty", [])
    p = reconcile(tmp_path / "empty", tmp_path / "empty")
    assert p.returncode == 0, p.stderr


def test_usage_exit_2(tmp_path):
    l = write_log(tmp_path / "l", [outcome("a")])
    for args in ([], [l], [l, l, l], ["--output", "xml", l, l],
                 ["--examples", "-1", l, l], ["--examples", "x", l, l],
                 ["--bogus", l, l], [l, tmp_path / "missing"],
                 [l, tmp_path], [l, "kafka://nohost"]):
        p = reconcile(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stderr, args
    p = reconcile("--help")
    assert p.returncode == 0 and "usage: sluice reconcile" in p.stdout
    p = sluice_cmd(["--help"])
    assert "reconcile [options] LEFT RIGHT" in p.stdout


def test_kafka_input(tmp_path, kafka, topic_factory):
    lines = [outcome("order-%d" % i, sink=("crm", "billing")[i % 2])
             for i in range(30)]
    topic = topic_factory(3)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    for i, l in enumerate(lines):
        p.produce(topic, key=l["key"], value=json.dumps(l), partition=i % 3)
    assert p.flush(30) == 0
    f = write_log(tmp_path / "file.ndjson", reversed(lines))
    url = "kafka://%s/%s" % (kafka.bootstrap, topic)

    rc, rep = reconcile_json(url, f)
    assert rc == 0
    assert rep["totals"] == counts(m=30)
    assert rep["left"] == {"input": url, "lines": 30, "duplicates": 0}

    # A record that is not an outcome line names its partition and offset;
    # one more outcome is missing on the right.
    p.produce(topic, value=json.dumps(outcome("extra")).encode(),
              partition=0)
    assert p.flush(30) == 0
    rc, rep = reconcile_json(url, f)
    assert rc == 1
    assert rep["totals"] == counts(m=30, mr=1)
    assert rep["sinks"]["crm"]["examples"]["missing_right"][0]["key"] == \
        "extra"
    p.produce(topic, value=b"not json", partition=1)
    assert p.flush(30) == 0
    r = reconcile(url, f)
    assert r.returncode == 2
    assert "%s partition 1 offset 10: not a JSON object" % url in r.stderr

    r = reconcile("kafka://%s/%s-none" % (kafka.bootstrap, topic), f)
    assert r.returncode == 2
    assert "does not exist" in r.stderr
