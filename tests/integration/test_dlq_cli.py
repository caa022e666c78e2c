"""`sluice dlq stats|list|show` against synthetic DLQ records on a real
broker, and the exit codes of every `sluice dlq` command.

The records carry the context headers of worker/dlq.h as sluice writes
them; a sink's replay group <pipeline>.dlq.<sink> is given a committed
offset by hand (never subscribed) to mark records worked.
"""

import json
import re
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import harness
from harness import sluice_cmd

MIN = 60000

# The seeded DLQ: (partition, sink, stage, class, status, minutes ago).
# Offsets follow the order per partition. Oldest first across partitions:
# 0:0, 1:0, 0:1, 0:2, 0:3, 0:4, 1:1.
RECORDS = [
    (0, "crm", "sink", "rejected", 400, 10),
    (0, "crm", "sink", "rejected", 400, 9),
    (0, "billing", "sink", "rejected", 422, 8),
    (0, "crm", "sink", "deadline", 503, 7),  # the value is not JSON
    (0, "*", "transform", "transform_error", None, 6),
    (1, "crm", "sink", "rejected", 400, 9.5),
    (1, "crm", "sink", "deadline", 503, 5),
]
NOT_JSON = b"not json \x00\x1b[31m"
BIG = 9007199254740993  # 2**53 + 1: a double would round it


def context(pipeline, sink, stage, cls, status, attempts, src_offset):
    h = [
        ("sluice.pipeline", pipeline),
        ("sluice.sink", sink),
        ("sluice.stage", stage),
        ("sluice.error.class", cls),
        ("sluice.error.reason", "%s for a test" % cls),
        ("sluice.attempts", str(attempts)),
        ("sluice.attempt.first.ms", "1700000000000"),
        ("sluice.attempt.last.ms", "1700000001000"),
        ("sluice.source.topic", "orders"),
        ("sluice.source.partition", "0"),
        ("sluice.source.offset", str(src_offset)),
        ("sluice.dedupe.key", "orders-0-%d" % src_offset),
        ("sluice.worker.id", "w1"),
        ("sluice.replay.count", "0"),
    ]
    if status is not None:
        h += [("sluice.http.status", str(status)),
              ("sluice.http.body", '{"error": "nope"}')]
    return h


def produce(bootstrap, topic, records):
    """records: (partition, key, value, headers, timestamp_ms)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for part, key, value, headers, ts in records:
        p.produce(topic, key=key, value=value, partition=part,
                  headers=headers, timestamp=ts)
        p.flush(30)  # one at a time: offsets in list order
    assert p.flush(30) == 0


def commit(bootstrap, group, topic, partition, offset):
    """Commits offset for group without ever joining it."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, partition, offset)],
                 asynchronous=False)
    finally:
        c.close()


class Dlq:
    def __init__(self, kafka, names, tmp_path, billing_commit=3):
        self.kafka = kafka
        self.pipeline = names.pipeline
        self.topic = names.topic()
        kafka.create_topic(self.topic, 2)
        self.now = int(time.time() * 1000)
        recs = []
        for i, (part, sink, stage, cls, status, ago) in enumerate(RECORDS):
            if i == 3:
                value = NOT_JSON
            else:
                value = json.dumps({"order_id": i, "big": BIG,
                                    "nested": {"tags": ["a", "b"]}})
            headers = [("trace-id", "abc-%d" % i),
                       ("bin", b"\x00\x01\xfe")] + \
                context(self.pipeline, sink, stage, cls, status, i + 1,
                        100 + i)
            recs.append((part, "tenant-%d" % i, value, headers,
                         self.now - int(ago * MIN)))
        produce(kafka.bootstrap, self.topic, recs)
        self.billing_commit = billing_commit
        if billing_commit is not None:
            commit(kafka.bootstrap, self.pipeline + ".dlq.billing",
                   self.topic, 0, billing_commit)
        cfg = harness.pipeline(
            self.pipeline, kafka.bootstrap, names.topic(), names.group(),
            {"billing": "http://127.0.0.1:9/billing",
             "crm": "http://127.0.0.1:9/crm"})
        cfg["dlq"] = {"topic": self.topic}
        self.path = harness.write_yaml(str(tmp_path / "p.yaml"), cfg)
        cfg["dlq"]["brokers"] = "embedded"
        self.embedded_path = harness.write_yaml(
            str(tmp_path / "embedded.yaml"), cfg)

    def run(self, command, *args, path=None):
        return sluice_cmd(["dlq", command, path or self.path] + list(args),
                          timeout=60)

    def ok(self, command, *args):
        p = self.run(command, *args)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
        return p.stdout


@pytest.fixture
def dlq(kafka, names, tmp_path):
    return Dlq(kafka, names, tmp_path)


def positions(text, worked=False):
    """The POSITION column (and WORKED with --all) of `list` text."""
    if text == "no matching records\n":
        return []
    lines = text.splitlines()
    assert lines[0].split()[0] == "POSITION", text
    rows = [l.split() for l in lines[1:]]
    if worked:
        return [(r[0], r[1]) for r in rows]
    return [r[0] for r in rows]


def age_s(text):
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
    assert m, text
    return int(m.group(1) or 0) * 60 + int(m.group(2))


# ---- stats ----------------------------------------------------------------

def test_stats_text(dlq):
    out = dlq.ok("stats")
    lines = out.splitlines()
    m = re.match(r"DLQ %s: 6 record\(s\) not yet worked, oldest (\S+), "
                 r"newest (\S+)$" % re.escape(dlq.topic), lines[0])
    assert m, out
    assert 600 <= age_s(m.group(1)) < 660, out
    assert 300 <= age_s(m.group(2)) < 360, out
    rows = {l.split()[0]: l.split() for l in lines if l.split() and
            l.split()[0] in ("billing", "crm")}
    # billing worked its own record (offset 2 < 3); the `*` record counts
    # for both sinks.
    assert rows["billing"][1] == "1", out
    assert rows["crm"][1] == "6", out
    assert "transform_error (1)" in " ".join(rows["billing"]), out
    assert "rejected 400 (3), deadline 503 (2), transform_error (1)" in \
        " ".join(rows["crm"]), out
    reasons = {}
    for l in lines[lines.index(next(l for l in lines
                                    if l.startswith("REASON"))) + 1:]:
        name, n = l.rsplit(None, 1)
        reasons[name.strip()] = int(n)
    assert reasons == {"rejected 400": 3, "deadline 503": 2,
                       "transform_error": 1}, out


def test_stats_json(dlq):
    st = json.loads(dlq.ok("stats", "--output", "json"))
    assert st["topics"] == [dlq.topic]
    assert st["pipeline"] == dlq.pipeline
    assert st["depth"] == 6
    assert st["reasons"] == {"rejected 400": 3, "deadline 503": 2,
                             "transform_error": 1}
    assert set(st["sinks"]) == {"billing", "crm"}
    billing, crm = st["sinks"]["billing"], st["sinks"]["crm"]
    assert billing["depth"] == 1
    assert billing["reasons"] == {"transform_error": 1}
    assert crm["depth"] == 6
    assert crm["reasons"] == {"rejected 400": 3, "deadline 503": 2,
                              "transform_error": 1}
    assert st["oldest_timestamp_ms"] == dlq.now - 10 * MIN
    assert st["newest_timestamp_ms"] == dlq.now - 5 * MIN
    assert 10 * MIN <= st["oldest_age_ms"] < 11 * MIN
    assert 5 * MIN <= st["newest_age_ms"] < 6 * MIN
    assert 6 * MIN <= billing["oldest_age_ms"] < 7 * MIN
    assert st["other_pipelines"] == 0

    one = json.loads(dlq.ok("stats", "--sink", "billing", "--output",
                            "json"))
    assert one["depth"] == 1
    assert list(one["sinks"]) == ["billing"]
    assert one["reasons"] == {"transform_error": 1}


def test_stats_partly_worked(kafka, names, tmp_path):
    # billing's group is past the `*` record too: it is crm's alone now.
    d = Dlq(kafka, names, tmp_path, billing_commit=5)
    st = json.loads(d.ok("stats", "--output", "json"))
    assert st["depth"] == 6
    assert st["sinks"]["billing"]["depth"] == 0
    assert st["sinks"]["billing"]["oldest_age_ms"] is None
    assert st["sinks"]["crm"]["depth"] == 6
    rows = positions(d.ok("list", "--all"), worked=True)
    assert rows == [("0:0", "no"), ("1:0", "no"), ("0:1", "no"),
                    ("0:2", "yes"), ("0:3", "no"), ("0:4", "partly"),
                    ("1:1", "no")]
    assert positions(d.ok("list", "--sink", "billing")) == []


# ---- list -----------------------------------------------------------------

def test_list_text(dlq, offsets):
    out = dlq.ok("list")
    # Oldest first across both partitions; billing's 0:2 is worked.
    assert positions(out) == ["0:0", "1:0", "0:1", "0:3", "0:4", "1:1"]
    header = out.splitlines()[0].split()
    assert header == ["POSITION", "SINK", "STAGE", "CLASS", "STATUS",
                      "ATTEMPTS", "AGE", "SOURCE", "DEDUPE", "KEY"]
    rows = {r.split()[0]: r.split() for r in out.splitlines()[1:]}
    assert rows["0:0"][1:6] == ["crm", "sink", "rejected", "400", "1"]
    assert 600 <= age_s(rows["0:0"][6]) < 660
    assert rows["0:0"][7:] == ["orders/0/100", "orders-0-100"]
    assert rows["0:4"][1:6] == ["*", "transform", "transform_error", "-",
                                "5"]
    assert rows["1:1"][1:5] == ["crm", "sink", "deadline", "503"]

    assert positions(dlq.ok("list", "--sink", "billing")) == ["0:4"]
    assert positions(dlq.ok("list", "--sink", "crm")) == \
        ["0:0", "1:0", "0:1", "0:3", "0:4", "1:1"]
    assert positions(dlq.ok("list", "--all")) == \
        ["0:0", "1:0", "0:1", "0:2", "0:3", "0:4", "1:1"]
    assert positions(dlq.ok("list", "--all", "--sink", "billing"),
                     worked=True) == [("0:2", "yes"), ("0:4", "no")]
    assert positions(dlq.ok("list", "--limit", "2")) == ["0:0", "1:0"]

    # The commands read, never commit: the groups are as they were.
    assert offsets(dlq.pipeline + ".dlq.billing").committed(
        dlq.topic, 2) == [3, -1]
    assert offsets(dlq.pipeline + ".dlq.crm").committed(
        dlq.topic, 2) == [-1, -1]


def test_list_filters(dlq):
    def pos(*args):
        return positions(dlq.ok("list", *args))

    assert pos("--reason", "5xx") == ["0:3", "1:1"]
    assert pos("--reason", "deadline") == ["0:3", "1:1"]
    assert pos("--reason", "400") == ["0:0", "1:0", "0:1"]
    assert pos("--reason", "rejected 400") == ["0:0", "1:0", "0:1"]
    assert pos("--reason", "4xx", "--all") == ["0:0", "1:0", "0:1", "0:2"]
    assert pos("--reason", "transform_error") == ["0:4"]
    assert pos("--reason", "rejected", "--limit", "1") == ["0:0"]
    assert dlq.ok("list", "--reason", "gave_up") == "no matching records\n"
    # A duration ago: 390 s reaches back past 0:4 (6 min), not 0:3 (7 min).
    assert pos("--since", "390s") == ["0:4", "1:1"]
    assert pos("--since", "2h") == ["0:0", "1:0", "0:1", "0:3", "0:4", "1:1"]
    # Epoch milliseconds.
    assert pos("--since", str(dlq.now - int(7.5 * MIN))) == \
        ["0:3", "0:4", "1:1"]
    assert pos("--since", str(dlq.now + MIN)) == []


def test_list_json(dlq):
    out = dlq.ok("list", "--output", "json", "--all")
    recs = [json.loads(l) for l in out.splitlines()]
    assert [r["position"] for r in recs] == \
        ["0:0", "1:0", "0:1", "0:2", "0:3", "0:4", "1:1"]
    by = {r["position"]: r for r in recs}
    r = by["0:0"]
    assert r["topic"] == dlq.topic and r["partition"] == 0 and \
        r["offset"] == 0
    assert (r["sink"], r["stage"], r["class"], r["status"]) == \
        ("crm", "sink", "rejected", 400)
    assert r["reason"] == "rejected for a test"
    assert r["attempts"] == 1
    assert r["timestamp_ms"] == dlq.now - 10 * MIN
    assert 10 * MIN <= r["age_ms"] < 11 * MIN
    assert r["source"] == {"topic": "orders", "partition": 0, "offset": 100}
    assert r["dedupe_key"] == "orders-0-100"
    assert r["worked"] is False and r["pending_sinks"] == ["crm"]
    assert by["0:2"]["worked"] is True and by["0:2"]["pending_sinks"] == []
    star = by["0:4"]
    assert star["sink"] == "*" and star["status"] is None
    assert star["pending_sinks"] == ["billing", "crm"]
    assert star["reason_key"] == "transform_error"


# ---- show -----------------------------------------------------------------

def test_show_json_record_text(dlq):
    out = dlq.ok("show", "0:0")
    assert out.startswith("== %s 0:0\n" % dlq.topic), out
    ctx = out[out.index("context headers:"):out.index("original headers:")]
    orig = out[out.index("original headers:"):out.index("\nkey:") + 1]
    assert "  sluice.sink: crm\n" in ctx
    assert "  sluice.http.status: 400\n" in ctx
    assert "  sluice.error.class: rejected\n" in ctx
    assert "trace-id" not in ctx
    assert "  trace-id: abc-0\n" in orig
    assert "  bin: \\x00\\x01\\xfe\n" in orig
    assert "sluice." not in orig
    assert "\nkey: tenant-0\n" in out
    value = out[out.index("value (JSON"):]
    assert value.startswith("value (JSON, %d bytes):\n{\n" % len(
        json.dumps({"order_id": 0, "big": BIG,
                    "nested": {"tags": ["a", "b"]}})))
    assert '\n  "order_id": 0,\n' in value
    assert '\n  "big": %d,\n' % BIG in value  # exact, not 9007199254740992
    assert '\n  "nested": {\n    "tags": [\n' in value


def test_show_text_value_and_several(dlq):
    # A bare offset is of partition 0.
    out = dlq.ok("show", "3", "1:1")
    first, second = out.split("\n\n== ")
    assert first.startswith("== %s 0:3\n" % dlq.topic)
    assert first.endswith("\nvalue (text, %d bytes):\nnot json "
                          "\\x00\\x1b[31m" % len(NOT_JSON)), first
    assert "\x1b" not in out and "\x00" not in out
    assert second.startswith("%s 1:1\n" % dlq.topic)
    assert "  sluice.error.class: deadline\n" in second


def test_show_json(dlq):
    out = dlq.ok("show", "0:0", "0:3", "0:4", "--output", "json")
    recs = [json.loads(l) for l in out.splitlines()]
    assert [r["position"] for r in recs] == ["0:0", "0:3", "0:4"]
    r = recs[0]
    assert r["topic"] == dlq.topic and r["partition"] == 0 and \
        r["offset"] == 0
    assert r["timestamp_ms"] == dlq.now - 10 * MIN
    assert r["headers"]["sluice.sink"] == "crm"
    assert r["headers"]["sluice.http.status"] == "400"
    assert all(k.startswith("sluice.") for k in r["headers"])
    assert r["original_headers"] == [
        {"name": "trace-id", "value": "abc-0"},
        {"name": "bin", "value": "\\x00\\x01\\xfe"}]
    assert r["key"] == "tenant-0"
    assert r["value_is_json"] is True
    assert r["value"] == {"order_id": 0, "big": BIG,
                          "nested": {"tags": ["a", "b"]}}
    assert type(r["value"]["big"]) is int
    text = recs[1]
    assert text["value_is_json"] is False
    assert text["value"] == NOT_JSON.decode()
    assert recs[2]["headers"]["sluice.sink"] == "*"
    assert "sluice.http.status" not in recs[2]["headers"]


def test_show_unknown_positions(dlq):
    p = dlq.run("show", "0:99")
    assert p.returncode == 1, p.stderr
    assert "no record at 0:99 in %s" % dlq.topic in p.stderr
    assert "offsets 0 to 4" in p.stderr
    p = dlq.run("show", "7:0")
    assert p.returncode == 1
    assert "partition 7 does not exist" in p.stderr
    # The others are still shown.
    p = dlq.run("show", "0:1", "0:5", "1:0")
    assert p.returncode == 1
    assert "== %s 0:1\n" % dlq.topic in p.stdout
    assert "== %s 1:0\n" % dlq.topic in p.stdout
    assert "no record at 0:5" in p.stderr
    p = dlq.run("show", "0:0", "--topic", dlq.topic + "-nope")
    assert p.returncode == 1
    assert "does not exist" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


# ---- untrusted records ------------------------------------------------------

def test_malformed_records(kafka, names, tmp_path):
    d = Dlq(kafka, names, tmp_path, billing_commit=None)
    t = d.now
    huge = b"\xff\x00" * 50000
    produce(kafka.bootstrap, d.topic, [
        (1, None, b"no headers at all", None, t),
        (1, huge, huge, [("sluice.sink", b"crm\x00x"),
                         ("sluice.error.class", huge),
                         ("sluice.http.status", b"4\x000"),
                         ("sluice.attempts", b"many"),
                         ("sluice.source.topic", "\u202eevil".encode()),
                         ("sluice.dedupe.key", huge),
                         ("weird\x1bname", b"\x1b]0;pwned\x07")] +
         [("h%d" % i, b"x") for i in range(2000)], t),
        (1, None, None, [("sluice.sink", None), ("sluice.pipeline", None)],
         t),
        # Another pipeline's record in a shared topic is not counted.
        (1, None, b"{}", [("sluice.pipeline", "someone-else"),
                          ("sluice.sink", "crm")], t),
        (1, None, b'{"n": 123456789012345678901234567890}',
         [("sluice.sink", b"crm"), ("sluice.error.class", b"rejected"),
          ("sluice.http.status", b"400")], t),
    ])
    st = json.loads(d.ok("stats", "--output", "json"))
    assert st["depth"] == 7 + 4
    assert st["other_pipelines"] == 1
    assert st["sinks"]["crm"]["depth"] == 6 + 1
    assert st["sinks"]["?"]["depth"] == 2
    assert st["sinks"]["crm\\x00x"]["depth"] == 1
    text = d.ok("stats")
    assert "\x00" not in text and "\x1b" not in text

    out = d.ok("list")
    assert "\x00" not in out and "\x1b" not in out and "\u202e" not in out
    rows = {r.split()[0]: r.split() for r in out.splitlines()[1:]}
    assert rows["1:2"][1:6] == ["?", "?", "?", "-", "?"]
    assert rows["1:3"][1:6] == ["crm\\x00x", "?", "\\xff\\x00" * 8 +
                                "...", "?", "many"]
    assert rows["1:3"][7].startswith("\\u202eevil/?/?")
    assert len(max(out.splitlines(), key=len)) < 2000
    for line in d.ok("list", "--output", "json").splitlines():
        json.loads(line)

    p = d.run("show", "1:2", "1:3", "1:4", "1:5", "1:6")
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout
    assert "  weird\\x1bname: \\x1b]0;pwned\\x07\n" in p.stdout
    assert "context headers: (none)\noriginal headers: (none)\n" \
        "key: (none)\nvalue (text, 17 bytes):\nno headers at all\n" \
        in p.stdout
    assert "value: (none)\n" in p.stdout
    # Too big an integer for 64 bits: shown as the text it is.
    too_big = '{"n": 123456789012345678901234567890}'
    assert "value (text, %d bytes):\n%s\n" % (len(too_big), too_big) \
        in p.stdout
    p = d.run("show", "1:3", "1:4", "--output", "json")
    assert p.returncode == 0, p.stderr
    recs = [json.loads(l) for l in p.stdout.splitlines()]
    assert len(recs[0]["original_headers"]) == 2001
    assert recs[1]["headers"] == {"sluice.sink": None,
                                  "sluice.pipeline": None}
    assert recs[1]["value"] is None and recs[1]["key"] is None


# ---- exit codes ---------------------------------------------------------------

def test_help(tmp_path):
    p = sluice_cmd(["--help"])
    assert p.returncode == 0 and "dlq stats|list|show|replay" in p.stdout
    p = sluice_cmd(["dlq", "--help"])
    assert p.returncode == 0
    for cmd in ("stats", "list", "show", "replay"):
        assert re.search(r"^  %s PIPELINE\.yaml" % cmd, p.stdout, re.M), \
            p.stdout
    for cmd in ("stats", "list", "show", "replay"):
        for flag in ("-h", "--help"):
            p = sluice_cmd(["dlq", cmd, flag])
            assert p.returncode == 0, p.stderr
            assert p.stdout.startswith("usage: sluice dlq %s " % cmd)
            assert p.stderr == ""
    p = sluice_cmd(["dlq", "list", "--help"])
    assert "--since T" in p.stdout and "epoch" in p.stdout


def test_bad_usage(dlq):
    path = dlq.path
    cases = [
        [],
        ["frob", path],
        ["list"],
        ["list", path, "extra"],
        ["list", path, "--bogus"],
        ["list", path, "--since", "30"],
        ["list", path, "--since", "yesterday"],
        ["list", path, "--limit", "0"],
        ["list", path, "--limit", "x"],
        ["list", path, "--output", "yaml"],
        ["list", path, "--topic", "t"],  # show's only
        ["stats", path, "--reason", "400"],  # list's and replay's only
        ["show", path],
        ["show", path, "x:1"],
        ["show", path, "1:-1"],
        ["replay", path],
        ["replay", path, "--sink", "crm", "--since", "5"],
    ]
    for args in cases:
        p = sluice_cmd(["dlq"] + args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "usage: sluice dlq" in p.stderr, (args, p.stderr)
        assert p.stdout == "", args
    p = dlq.run("list", "--sink", "nope")
    assert p.returncode == 2
    assert "unknown sink `nope`" in p.stderr and "billing crm" in p.stderr
    bad = harness.write_yaml(path + ".bad.yaml", "pipeline: [\n")
    p = dlq.run("stats", path=bad)
    assert p.returncode == 2 and "invalid YAML" in p.stderr


def test_embedded_brokers_need_brokers(dlq):
    for args in (["stats"], ["list"], ["show", "0:0"],
                 ["replay", "--sink", "crm"]):
        p = dlq.run(args[0], *args[1:], path=dlq.embedded_path)
        assert p.returncode == 2, (args, p.stderr)
        assert "embedded" in p.stderr and "--brokers" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = dlq.run("list", "--brokers", dlq.kafka.bootstrap,
                path=dlq.embedded_path)
    assert p.returncode == 0, p.stderr
    assert positions(p.stdout)[0] == "0:0"


def test_runtime_failures(dlq, tmp_path):
    p = dlq.run("stats", "--brokers", "127.0.0.1:%d" % harness.free_port())
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no answer from" in lines[0], p.stderr
    assert p.stdout == ""

    cfg = harness.pipeline(dlq.pipeline, dlq.kafka.bootstrap, "orders", "g",
                           {"billing": "http://127.0.0.1:9/billing"})
    cfg["dlq"] = {"topic": dlq.topic + "-missing"}
    path = harness.write_yaml(str(tmp_path / "missing.yaml"), cfg)
    for cmd in ("stats", "list"):
        p = dlq.run(cmd, path=path)
        assert p.returncode == 1, p.stderr
        assert p.stderr == "sluice: DLQ topic `%s-missing` does not exist " \
            "on %s\n" % (dlq.topic, dlq.kafka.bootstrap)
