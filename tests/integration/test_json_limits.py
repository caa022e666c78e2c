"""json.encode and json.decode of big inputs are bounded by the script's
memory cap (lua.memory_limit): their buffers are counted like Lua's own
memory, so a huge document fails that call with "out of memory" instead
of growing the process (one json.encode once grew it to 2.47 GB), and the
codec works for the next call."""

import harness
from test_lua import write

BIG_ENCODE = """\
    function transform(msg)
      local t, s = {}, string.rep("x", 1000)
      for i = 1, 1000000 do t[i] = s end   -- 1 GB of JSON text
      local ok, err = pcall(json.encode, t)
      msg.json.big_ok = ok
      msg.json.err = tostring(err)
      msg.json.after = json.encode({1})
      return msg
    end
    """

TESTS = """\
tests:
  - name: a huge encode fails alone
    input: {value: {n: 1}}
    expect:
      value: {n: 1, big_ok: false, err: "json: out of memory", after: "[1]"}
  - name: the next message is fine
    input: {value: {n: 2}}
    expect:
      value: {n: 2, big_ok: false, err: "json: out of memory", after: "[1]"}
"""


def test_json_encode_is_bounded_by_the_memory_cap(tmp_path):
    write(tmp_path, "t.lua", BIG_ENCODE)
    cfg = harness.pipeline("p", "127.0.0.1:9", "t", "g",
                           {"a": "http://127.0.0.1:9/a"})
    cfg["transform"] = "t.lua"
    path = harness.write_yaml(str(tmp_path / "p.yaml"), cfg)
    (tmp_path / "p.test.yaml").write_text(TESTS)
    rc, out, err, _, rss_kib = harness.run_measured(["test", path], 120)
    assert rc == 0, out + err
    assert "2 passed, 0 failed" in out, out
    # 64 MiB for Lua (the default cap) plus the process itself (about
    # 45 MiB, 220 MiB under AddressSanitizer); unbounded, it was past 1 GB.
    assert rss_kib < 400 * 1024, "peak RSS %d KiB\n%s" % (rss_kib, out)
