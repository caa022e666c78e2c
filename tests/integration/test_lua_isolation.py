"""Scripts are isolated: nothing one script does to the shared libraries,
the globals, a required module or the string metatable reaches another
script, or the next message. Before this held, a pipeline transform that
replaced require("sluice.retry").default turned another sink's retries
into "done": messages committed and never delivered."""

import time

import harness
from test_lua import produce, write

# The pipeline transform tries every way into the others' state and
# records which of them the sandbox refused.
INTRUDER = """\
    function transform(msg)
      local v = msg.json
      local function try(f, ...) return (pcall(f, ...)) end
      v.string_write = try(function()
        string.upper = function() return "pwned" end end)
      v.json_write = try(function()
        json.encode = function() return "pwned" end end)
      v.rawset_string = try(rawset, string, "upper",
                            function() return "pwned" end)
      v.rawset_globals = try(function()
        rawset(getmetatable(_ENV).__index, "leak_raw", "pwned") end)
      v.setmetatable_string = try(setmetatable, string, {})
      v.string_meta = try(function()
        getmetatable("").__index = {upper = function() return "pwned" end}
      end)
      -- Its own globals are its own: these succeed, in its environment.
      v.own_global = try(function() _G.shared = "pwned" end)
      v.load_global = try(function() load("leak = 'pwned'")() end)
      local policy = require("sluice.retry")
      policy.default = function() return "done" end
      v.own_module = policy.default({}) == "done"
      v.sees_own = shared == "pwned" and leak == "pwned"
      return msg
    end
    """

# A sink's transform reports what it sees.
VICTIM = """\
    function transform(msg)
      local policy = require("sluice.retry")
      return { json = {
        upper = ("x"):upper(), upper2 = string.upper("y"),
        enc = json.encode({1}), shared = tostring(shared),
        leak = tostring(leak), leak_raw = tostring(leak_raw),
        g = tostring(_G.shared),
        default = (policy.default({status = 400, attempt = 1})),
      } }
    end
    """

CASE = """\
  - name: %s
    input: {value: {n: %d}}
    expect:
      value: {n: %d, string_write: false, json_write: false,
              rawset_string: false, rawset_globals: false,
              setmetatable_string: false, string_meta: false,
              own_global: true, load_global: true, own_module: true,
              sees_own: true}
      sinks:
        a:
          body: {upper: X, upper2: Y, enc: "[1]", shared: "nil",
                 leak: "nil", leak_raw: "nil", g: "nil", default: give_up}
"""


def test_scripts_cannot_reach_each_other(tmp_path):
    write(tmp_path, "intruder.lua", INTRUDER)
    write(tmp_path, "victim.lua", VICTIM)
    cfg = harness.pipeline("p", "127.0.0.1:9", "t", "g",
                           {"a": {"url": "http://127.0.0.1:9/a",
                                  "transform": "victim.lua"}})
    cfg["transform"] = "intruder.lua"
    path = harness.write_yaml(str(tmp_path / "p.yaml"), cfg)
    # Twice: what the first message did must not show in the second.
    (tmp_path / "p.test.yaml").write_text(
        "tests:\n" + CASE % ("first message", 1, 1) +
        CASE % ("the next message", 2, 2))
    p = harness.sluice_cmd(["test", path], timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed, 0 failed" in p.stdout, p.stdout


POLICY_THIEF = """\
    function transform(msg)
      require("sluice.retry").default = function() return "done" end
      return msg
    end
    """

RETRY = """\
    local policy = require("sluice.retry")
    function retry(a)
      return policy.default(a)
    end
    """


def test_replaced_module_does_not_change_another_sinks_retries(
        kafka, topic_factory, names, sinkd, sluice, tmp_path):
    """Sink a answers 503 to everything: its messages must keep being
    retried, never counted as done by a policy the transform replaced."""
    topic = topic_factory(1)
    a, b = sinkd("a"), sinkd("b")
    a.script(then=503)
    write(tmp_path, "thief.lua", POLICY_THIEF)
    write(tmp_path, "policy.lua", RETRY)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(),
                           {"a": {"url": a.url(), "retry": "policy.lua"},
                            "b": b.url()})
    cfg["transform"] = "thief.lua"
    run = sluice(cfg)
    produce(kafka.bootstrap, topic,
            [(b"k%d" % i, {"n": i}, {"message-id": "m-%d" % i})
             for i in range(5)])
    harness.wait_until(lambda: b.ok_count() >= 5, 60, "b has all 5",
                       alive=[run])
    # a keeps failing: several attempts each, none taken as done.
    harness.wait_until(lambda: len(a.records()) >= 10, 60,
                       "a retried", alive=[run])
    time.sleep(1)
    counters = run.progress()[-1][2]
    assert counters.get("a", 0) == 0, counters
    assert counters.get("a_done_by_policy", 0) == 0, counters
    run.terminate()
    run.wait(60)
    summary = run.summary()
    assert summary is not None and summary[2].get("a_done_by_policy", 0) == 0, \
        run.log()
