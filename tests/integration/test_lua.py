"""Lua through the real binary: drop, split, per-sink requests, skips,
scripted retry decisions against sinkd's scripted statuses, transform
errors that cost one message and not the worker, and scripts that fail
at start."""

import json
import os
import re
import textwrap

from confluent_kafka import Producer

import harness
from harness import wait_until


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def produce(bootstrap, topic, messages):
    """messages: (key, value bytes or dict, headers dict) tuples, all to
    partition 0 in order."""
    p = Producer({"bootstrap.servers": bootstrap,
                  "compression.type": "lz4", "linger.ms": 5})
    for key, value, headers in messages:
        if isinstance(value, dict):
            value = json.dumps(value, separators=(",", ":")).encode()
        p.produce(topic, value=value, key=key, partition=0,
                  headers=list((headers or {}).items()))
    assert p.flush(30) == 0


TRANSFORM = """\
    -- drop, split, or enrich
    function transform(msg)
      local v = msg.json
      if v.kind == "drop" then
        return nil
      end
      if v.kind == "keep" then
        return msg              -- read, not changed: forwarded as it came
      end
      if v.kind == "split" then
        local out = {}
        for i, item in ipairs(v.items) do
          out[i] = { key = "item-" .. item, json = { parent = v.id, item = item } }
        end
        return out
      end
      v.seen = true
      msg.headers["x-stage"] = "transformed"
      return msg
    end
    """


def test_drop_split_and_enrich(kafka, topic_factory, names, sinkd, sluice,
                               offsets, tmp_path):
    topic = topic_factory(1)
    sink = sinkd("a")
    write(tmp_path, "t.lua", TRANSFORM)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": sink.url()})
    cfg["transform"] = "t.lua"
    run = sluice(cfg)
    produce(kafka.bootstrap, topic, [
        (b"k1", {"id": 1, "amount": 71.20, "big": 9007199254740993,
                 "none": None}, {"message-id": "m-1"}),
        (b"k2", {"id": 2, "kind": "drop"}, {"message-id": "m-2"}),
        (b"k3", {"id": 3, "kind": "split", "items": [7, 8, 9]},
         {"message-id": "m-3"}),
        (b"k4", b'{"id":4,  "kind" : "keep"}', {"message-id": "m-4"}),
    ])
    wait_until(lambda: sink.ok_count() >= 5, 60, "5 requests",
               alive=[run], details=sink.stats)
    harness.wait_commits_at_end(offsets(cfg["source"]["group"]), topic, 1,
                                [run])
    recs = sink.records()
    by_key = {r.key: r for r in recs}
    assert sorted(by_key) == ["m-1", "m-3#1", "m-3#2", "m-3#3", "m-4"], recs
    assert len(recs) == 5

    # Enriched: new field in, untouched numbers exactly as they came,
    # null kept, the new header forwarded.
    body = by_key["m-1"].body
    assert json.loads(body) == {"id": 1, "amount": 71.2,
                                "big": 9007199254740993, "none": None,
                                "seen": True}
    assert '"amount":71.2' in body and '"big":9007199254740993' in body
    assert by_key["m-1"].headers["kafka-header-x-stage"] == "transformed"
    assert by_key["m-1"].headers["kafka-key"] == "k1"

    # Split: one request per item, each with its own key and dedupe key,
    # all from the same offset.
    for n, item in enumerate([7, 8, 9], 1):
        r = by_key["m-3#%d" % n]
        assert json.loads(r.body) == {"parent": 3, "item": item}
        assert r.headers["kafka-key"] == "item-%d" % item
        assert r.offset == 2

    # A transform that only reads the JSON forwards the bytes untouched.
    assert by_key["m-4"].body == '{"id":4,  "kind" : "keep"}'
    run.terminate()
    assert run.wait(30) == 0
    _, _, counters = run.summary()
    assert counters.get("dropped") == 1, run.summary()


def test_per_sink_requests_and_skips(kafka, topic_factory, names, sinkd,
                                     sluice, offsets, tmp_path):
    topic = topic_factory(1)
    a, b, c = sinkd("a"), sinkd("b"), sinkd("c")
    write(tmp_path, "a.lua", """\
        function transform(msg)
          local o = msg.json
          return {
            method = "PUT",
            path = "/orders/" .. o.id,
            json = { order = o.id, cents = math.floor(o.amount * 100 + 0.5) },
            headers = { ["X-Tenant"] = msg.key, ["X-Static"] = "replaced",
                        ["Idempotency-Key"] = "order-" .. o.id },
          }
        end
        """)
    write(tmp_path, "b.lua", """\
        function transform(msg)
          if msg.json.id % 2 == 1 then
            return nil
          end
          return "id=" .. msg.json.id
        end
        """)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {
                               "a": {"url": a.url(), "transform": "a.lua",
                                     "headers": {"X-Static": "configured"}},
                               "b": {"url": b.url(), "transform": "b.lua"},
                               "c": c.url()})
    run = sluice(cfg)
    count = 10
    produce(kafka.bootstrap, topic, [
        (b"tenant-%d" % i, {"id": i, "amount": 1.15 + i},
         {"message-id": "m-%d" % i}) for i in range(count)])
    wait_until(lambda: a.ok_count() >= count and c.ok_count() >= count and
               b.ok_count() >= count // 2, 60, "every sink's requests",
               alive=[run])
    harness.wait_commits_at_end(offsets(cfg["source"]["group"]), topic, 1,
                                [run])

    for r in a.records():
        i = int(r.path.rsplit("/", 1)[1])
        assert (r.method, r.path) == ("PUT", "/a/orders/%d" % i)
        # The script's Idempotency-Key replaces sluice's own: sent once
        # (sinkd would join two as "order-i, m-i").
        assert r.key == "order-%d" % i
        assert json.loads(r.body) == {"order": i,
                                      "cents": round((1.15 + i) * 100)}
        assert r.headers["x-tenant"] == "tenant-%d" % i
        assert r.headers["x-static"] == "replaced"
    brecs = b.records()
    assert sorted(r.body for r in brecs) == sorted(
        "id=%d" % i for i in range(0, count, 2))
    # Without a transform the sink gets the message as it came.
    for r in c.records():
        i = int(r.key.split("-")[1])
        assert json.loads(r.body) == {"id": i, "amount": 1.15 + i}
    run.terminate()
    assert run.wait(30) == 0
    _, _, counters = run.summary()
    assert counters.get("b_skipped") == count // 2, run.summary()


def test_scripted_retry_decides(kafka, topic_factory, names, sinkd, sluice,
                                offsets, tmp_path):
    """Each sink's script answers differently: 409 is done, 503 is retried
    after the script's own short delay, a 400 is given up on (logged and
    dead-lettered)."""
    topic = topic_factory(1)
    done, again, give = sinkd("done"), sinkd("again"), sinkd("give")
    count = 6
    done.script(statuses=[409] * count, then=200)
    again.script(statuses=[503] * 4, then=200)
    give.script(statuses=[400], then=200)
    write(tmp_path, "policy.lua", """\
        local policy = require("sluice.retry")
        function retry(a)
          if a.status == 409 then
            return "done"
          end
          if a.status == 503 then
            return "retry", 20
          end
          if a.status == 400 then
            return "give_up", ("HTTP %d from %s at attempt %d")
              :format(a.status, a.sink, a.attempt)
          end
          return policy.default(a)
        end
        """)
    sinks = {s.name: {"url": s.url(), "retry": "policy.lua"}
             for s in (done, again, give)}
    # 409 is `applied_on` by default (already applied, the policy is not
    # asked): off here, so that the script decides.
    sinks["done"]["applied_on"] = []
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), sinks, retry_backoff="5s",
                           retry_backoff_max="1500ms")
    run = sluice(cfg)
    produce(kafka.bootstrap, topic, [
        (b"k", {"id": i}, {"message-id": "m-%d" % i}) for i in range(count)])
    reader = offsets(cfg["source"]["group"])
    harness.wait_commits_at_end(reader, topic, 1, [run])

    # done: every message answered 409 once and never sent again.
    recs = done.records()
    assert sorted(r.status for r in recs) == [409] * count
    # again: 4 failures retried after ~20 ms (the script's delay, not
    # the 5 s backoff), then each message delivered once.
    recs = again.records()
    assert [r.status for r in recs].count(503) == 4
    assert len(harness.ok_records(recs)) == count
    assert recs[-1].ts_ms - recs[0].ts_ms < 3000, recs
    # give: the first message was given up on, logged with its place and
    # dead-lettered; the rest of its key went on, each delivered once.
    recs = give.records()
    assert recs[0].status == 400 and recs[0].key == "m-0"
    assert harness.id_counts(harness.ok_records(recs)) == {
        "m-%d" % i: 1 for i in range(1, count)}
    log = run.log()
    assert re.search(r"sink give: gave up on %s \[0\] offset 0 \(dedupe key "
                     r"m-0\) after 1 attempt\(s\): HTTP 400 from give at "
                     r"attempt 1" % re.escape(topic), log), log
    run.terminate()
    assert run.wait(30) == 0
    _, _, counters = run.summary()
    assert counters.get("done_done_by_policy") == count, run.summary()
    assert counters.get("give_dead_lettered") == 1, run.summary()
    assert counters.get("give_gave_up") == 1, run.summary()


def test_bad_messages_and_runaway_scripts_cost_one_message(
        kafka, topic_factory, names, sinkd, sluice, offsets, tmp_path):
    topic = topic_factory(1)
    sink = sinkd("a")
    write(tmp_path, "t.lua", """\
        local hoard = {}
        function transform(msg)
          local v = msg.json              -- raises on a value that is not JSON
          if v.kind == "loop" then
            while true do end
          elseif v.kind == "bomb" then
            while true do hoard[#hoard + 1] = string.rep("x", 65536) end
          elseif v.kind == "escape" then
            os.execute("touch /tmp/sluice-escaped")
          end
          return msg
        end
        """)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), {"a": sink.url()})
    cfg["transform"] = "t.lua"
    cfg["lua"] = {"memory_limit": "16MiB", "instruction_limit": 2000000}
    run = sluice(cfg)
    produce(kafka.bootstrap, topic, [
        (b"k", {"id": 0}, {}),
        (b"k", b"not json", {}),
        (b"k", {"id": 2, "kind": "loop"}, {}),
        (b"k", {"id": 3, "kind": "bomb"}, {}),
        (b"k", {"id": 4, "kind": "escape"}, {}),
        (b"k", {"id": 5}, {}),
    ])
    wait_until(lambda: sink.ok_count() >= 2, 60, "the good messages",
               alive=[run])
    harness.wait_commits_at_end(offsets(cfg["source"]["group"]), topic, 1,
                                [run])
    assert sorted(json.loads(r.body)["id"] for r in sink.records()) == [0, 5]
    log = run.log()
    for offset, why in ((1, "not JSON"), (2, "instruction budget"),
                        (3, "memory limit"), (4, "attempt to call a nil")):
        assert re.search(r"transform failed on %s \[0\] offset %d: .*%s"
                         % (re.escape(topic), offset, why), log), (why, log)
    assert "t.lua:" in log  # the script's file and line
    assert not os.path.exists("/tmp/sluice-escaped")
    run.terminate()
    assert run.wait(30) == 0
    _, _, counters = run.summary()
    assert counters.get("transform_failed") == 4, run.summary()


def minimal(tmp_path, **extra):
    cfg = harness.pipeline("p", "127.0.0.1:9", "t", "g",
                           {"a": "http://127.0.0.1:9/a"})
    cfg.update(extra)
    return harness.write_yaml(str(tmp_path / "p.yaml"), cfg)


def test_bad_scripts_fail_at_start(tmp_path):
    write(tmp_path, "syntax.lua", "function transform(msg)\n  return msg\n"
                                  "end end\n")
    write(tmp_path, "nofn.lua", "function transfrom(msg) return msg end\n")
    cases = [
        ({"transform": "syntax.lua"}, r"p\.yaml:\d+:\d+: transform: "
                                      r".*syntax\.lua:3: <eof> expected"),
        ({"transform": "nofn.lua"}, r"p\.yaml:\d+:\d+: transform: "
                                    r".*nofn\.lua: defines no function "
                                    r"`transform` \(did you mean "
                                    r"`transfrom`\?\)"),
        ({"transform": "missing.lua"}, r"p\.yaml:\d+:\d+: transform: cannot "
                                       r"read .*missing\.lua"),
    ]
    for extra, pattern in cases:
        path = minimal(tmp_path, **extra)
        for command in ("validate", "run"):
            p = harness.sluice_cmd([command, path], timeout=60)
            assert p.returncode == 2, (command, extra, p.stderr)
            assert re.search(pattern, p.stderr), (command, p.stderr)


def test_every_script_error_is_reported_at_its_yaml_key(tmp_path):
    """Not one error at a time: every broken script of the pipeline, each
    at the YAML line that named it, for validate and run alike."""
    write(tmp_path, "syntax.lua", "function transform(msg)\n  return msg\n"
                                  "end end\n")
    write(tmp_path, "nofn.lua", "function transfrom(msg) return msg end\n")
    write(tmp_path, "noretry.lua", "function retyr(a) return 'retry' end\n")
    cfg = harness.pipeline("p", "127.0.0.1:9", "t", "g", {
        "a": {"url": "http://127.0.0.1:9/a", "transform": "nofn.lua"},
        "b": {"url": "http://127.0.0.1:9/b", "retry": "noretry.lua"}})
    cfg["transform"] = "syntax.lua"
    path = harness.write_yaml(str(tmp_path / "p.yaml"), cfg)
    lines = open(path).read().splitlines()

    def line_of(text):
        return 1 + next(i for i, l in enumerate(lines) if text in l)
    want = [
        r"p\.yaml:%d:\d+: transform: .*syntax\.lua:3: <eof> expected"
        % line_of("syntax.lua"),
        r"p\.yaml:%d:\d+: sinks\.a\.transform: .*nofn\.lua: defines no "
        r"function `transform` \(did you mean `transfrom`\?\)"
        % line_of("nofn.lua"),
        r"p\.yaml:%d:\d+: sinks\.b\.retry: .*noretry\.lua: defines no "
        r"function `retry` \(did you mean `retyr`\?\)"
        % line_of("noretry.lua"),
    ]
    for command in ("validate", "run"):
        p = harness.sluice_cmd([command, path], timeout=60)
        assert p.returncode == 2, (command, p.stderr)
        for pattern in want:
            assert re.search(pattern, p.stderr), (command, pattern, p.stderr)
        assert "3 error(s)" in p.stderr, p.stderr


def test_sluice_test_runs_the_example_and_diffs_failures(tmp_path):
    example = os.path.join(harness.REPO, "pipelines", "orders-fanout.yaml")
    p = harness.sluice_cmd(["test", example], timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"^\d+ passed, 0 failed$", p.stdout, re.M), p.stdout

    wrong = write(tmp_path, "wrong.test.yaml", """\
        tests:
          - name: billing gets cents
            input: {value: {order_id: o-1, tenant_id: t, customer_id: c,
                            amount: 2.50, currency: EUR, items: [],
                            status: new}}
            expect:
              sinks:
                billing: {body: {invoice_ref: o-1, tenant: t,
                                 amount_cents: 251, currency: EUR}}
                crm: skip
        """)
    p = harness.sluice_cmd(["test", example, wrong], timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAIL billing gets cents" in p.stdout
    assert "sinks.billing.body.amount_cents: expected 251, got 250" \
        in p.stdout, p.stdout
    assert "sinks.crm: expected skip" in p.stdout, p.stdout


def test_looping_xpcall_handlers_cost_one_message(
        kafka, topic_factory, names, sinkd, sluice, offsets, tmp_path):
    """A message handler that loops for ever, in the pipeline transform, a
    sink transform and a retry policy: Lua runs a handler for the budget's
    error with hooks off, which stalled the worker (no message delivered,
    SIGTERM ignored). Each now fails its call only."""
    topic = topic_factory(1)
    sink = sinkd("a")
    sink.script(statuses=[503], then=200)  # one retry decision
    loop = """\
        xpcall(function() while true do end end,
               function(e) while true do end end)
        """
    write(tmp_path, "t.lua", """\
        function transform(msg)
          if msg.json.kind == "loop" then
            %s
          end
          return msg
        end
        """ % loop)
    write(tmp_path, "s.lua", """\
        function transform(msg)
          if msg.json.kind == "sinkloop" then
            %s
          end
          return {json = msg.json}
        end
        """ % loop)
    write(tmp_path, "r.lua", """\
        function retry(a)
          %s
          return "retry", 10
        end
        """ % loop)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"a": {"url": sink.url(), "transform": "s.lua",
                                  "retry": "r.lua"}})
    cfg["transform"] = "t.lua"
    run = sluice(cfg)
    good = 19
    messages = [(b"k", {"id": i}, {"message-id": "m-%d" % i})
                for i in range(good)]
    messages.insert(3, (b"k", {"id": 100, "kind": "loop"}, {}))
    messages.insert(7, (b"k", {"id": 101, "kind": "sinkloop"}, {}))
    produce(kafka.bootstrap, topic, messages)
    wait_until(lambda: sink.ok_count() >= good, 60, "the good messages",
               alive=[run])
    harness.wait_commits_at_end(offsets(cfg["source"]["group"]), topic, 1,
                                [run])
    ids = sorted(json.loads(r.body)["id"]
                 for r in harness.ok_records(sink.records()))
    assert ids == list(range(good))
    log = run.log()
    assert "budget exceeded" in log, log
    run.terminate()
    assert run.wait(30) == 0
    _, _, counters = run.summary()
    assert counters.get("transform_failed") == 1, run.summary()
