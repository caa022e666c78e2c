"""The Lua budget holds whatever a script calls: pathological patterns,
huge string and table building, runaway recursion and looping xpcall
handlers each end that call within seconds with the default limits, and
the next case still runs. Through the real binary (`sluice test`, no
Kafka), each case first with a script that breaks a limit, then one that
must still pass in the same state."""

import textwrap

import pytest

import harness

# Generous: with the default 1 s lua.time_limit every case ends in about
# a second at most; before the fix these ran for minutes or for ever.
LIMIT_S = 10


def setup_pipeline(tmp_path, transform, sink_transform=None, lua=None):
    (tmp_path / "t.lua").write_text(textwrap.dedent(transform))
    cfg = harness.pipeline("p", "127.0.0.1:9", "t", "g",
                           {"a": "http://127.0.0.1:9/a"})
    cfg["transform"] = "t.lua"
    if sink_transform is not None:
        (tmp_path / "s.lua").write_text(textwrap.dedent(sink_transform))
        cfg["sinks"]["a"]["transform"] = "s.lua"
    if lua:
        cfg["lua"] = lua
    return harness.write_yaml(str(tmp_path / "p.yaml"), cfg)


def sluice_test_case(tmp_path, bad_body, error, lua=None):
    """A transform that runs bad_body on the first message (which must
    fail with `error` in its text) and passes the second through."""
    path = setup_pipeline(tmp_path, """\
        function transform(msg)
          if msg.json.bad then
        %s
          end
          return msg
        end
        """ % textwrap.indent(textwrap.dedent(bad_body), "    "), lua=lua)
    (tmp_path / "p.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: breaks a limit
            input: {value: {bad: true}}
            expect: {error: %s}
          - name: the next message is fine
            input: {value: {a: 1}}
            expect: {value: {a: 1}}
        """ % json_str(error)))
    rc, out, err, elapsed, _ = harness.run_measured(["test", path], LIMIT_S * 6)
    assert rc == 0, out + err
    assert "2 passed, 0 failed" in out, out
    assert elapsed < LIMIT_S, "took %.1f s" % elapsed
    return elapsed


def json_str(s):
    import json
    return json.dumps(s)


PATHOLOGICAL = [
    ("find", 'string.find(string.rep("a", 3000), ".-.-.-b")'),
    ("match", 'string.match(string.rep("a", 3000), "(.-)(.-)(.-)b")'),
    ("gmatch", 'for x in string.gmatch(string.rep("a", 3000), '
               '".-.-.-b") do end'),
    ("gsub", 'string.gsub(string.rep("a", 3000), ".-.-.-b", "x")'),
    ("method", '(string.rep("a", 3000)):find(".*.*.*b")'),
]


@pytest.mark.parametrize("name,body", PATHOLOGICAL,
                         ids=[n for n, _ in PATHOLOGICAL])
def test_pathological_patterns_end_within_the_budget(tmp_path, name, body):
    sluice_test_case(tmp_path, body, "budget exceeded")


def test_patterns_keep_their_semantics(tmp_path):
    # A few of the manual's examples through the replaced functions.
    path = setup_pipeline(tmp_path, """\
        function transform(msg)
          local v = msg.json
          v.find = {string.find("hello world", "o w")}
          v.plain = {string.find("a.b", ".", 1, true)}
          v.match = {string.match("key = value", "(%w+)%s*=%s*(%w+)")}
          v.pos = {string.match("hello", "()ll()")}
          local words = {}
          for w in string.gmatch("one two  three", "%a+") do
            words[#words + 1] = w
          end
          v.words = words
          v.gsub = {string.gsub("hello world", "(%w+)", "<%1>")}
          v.gsubt = (string.gsub("$name is $age", "%$(%w+)",
                                 {name = "Ann", age = "7"}))
          v.gsubf = (string.gsub("abc", "%w", function(c)
                                   return c:upper() .. "." end))
          v.bal = string.match("f(a(b)c) x", "%b()")
          v.frontier = (string.gsub("THE (quick) fox", "%f[%a]%a+", "W"))
          v.anchor = string.find("aaa", "^b")
          v.empty = {string.gsub("abc", "", "-")}
          local ok, e = pcall(string.find, "x", "[a")
          v.err = e
          return msg
        end
        """)
    (tmp_path / "p.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: semantics
            input: {value: {}}
            expect:
              value:
                find: [5, 7]
                plain: [2, 2]
                match: [key, value]
                pos: [3, 5]
                words: [one, two, three]
                gsub: ["<hello> <world>", 2]
                gsubt: "Ann is 7"
                gsubf: "A.B.C."
                bal: "(a(b)c)"
                frontier: "W (W) W"
                empty: ["-a-b-c-", 4]
                err: "malformed pattern (missing ']')"
        """))
    rc, out, err, _, _ = harness.run_measured(["test", path], 60)
    assert rc == 0, out + err


BUILDERS = [
    # n copies of nothing used to loop n times.
    ("rep_empty", 'local s = string.rep("", math.maxinteger)\n'
                  'assert(s == "")\n'
                  'error("done")', "done"),
    ("rep_empty_sep", 'string.rep("", math.maxinteger, "")\n'
                      'error("done")', "done"),
    ("rep_huge", 'string.rep("x", 1e12)', "resulting string too large"),
    ("rep_past_memory", 'string.rep("xy", 1e9 // 2)', "memory"),
    ("concat_c_index", 'table.concat(setmetatable({}, {__index = rawlen, '
                       '__len = function() return math.maxinteger end}))',
     "budget exceeded"),
    ("concat_huge", 'local t = {}\n'
                    'for i = 1, 1000 do t[i] = string.rep("x", 1000) end\n'
                    'table.concat(t, string.rep(",", 1e6))', "memory"),
    ("format_many", 'local t = {}\n'
                    'for i = 1, 200 do t[i] = string.rep("x", 1e6) end\n'
                    'string.format(string.rep("%s", 200), table.unpack(t))',
     "memory"),
    ("move", 'table.move({}, 1, math.maxinteger - 1, 1)', "budget exceeded"),
    # The default comparator is C: 2 million numbers took 1.7 s unseen.
    ("sort", 'local t = {}\n'
             'for i = 1, 2e6 do t[i] = (i * 7919) % 1000003 end\n'
             'table.sort(t)', "budget exceeded"),
    ("move_meta", 'local p = setmetatable({}, {__index = rawequal, '
                  '__newindex = rawequal})\n'
                  'table.move(p, 1, math.maxinteger - 1, 1)',
     "budget exceeded"),
]


@pytest.mark.parametrize("name,body,error", BUILDERS,
                         ids=[n for n, _, _ in BUILDERS])
def test_string_and_table_building_is_bounded(tmp_path, name, body, error):
    sluice_test_case(tmp_path, body, error)


RECURSION = [
    ("plain", 'local function f() return 1 + f() end\nf()',
     "stack overflow"),
    ("pcall", 'local function f() pcall(f) return 1 + f() end\nf()',
     "stack overflow"),
    ("gsub", 'local function f(s) return (s:gsub(".", f)) end\nf("x")',
     "stack overflow"),
    ("metamethod", 'local m = setmetatable({}, {__index = function(t, k) '
                   'return t[k] end})\nlocal _ = m.x', "stack overflow"),
    ("coroutine", 'local function f() return 1 + coroutine.wrap(f)() end\n'
                  'f()', "t.lua:3:"),  # nested resumes, each adds it
]


@pytest.mark.parametrize("name,body,error", RECURSION,
                         ids=[n for n, _, _ in RECURSION])
def test_runaway_recursion_ends_fast(tmp_path, name, body, error):
    # 11-13 s before the depth limit; now well under a second.
    assert sluice_test_case(tmp_path, body, error) < 5


XPCALL = [
    ("after_error", 'xpcall(error, function(e) while true do end end, "x")'),
    ("after_budget", 'xpcall(function() while true do end end, '
                     'function(e) while true do end end)'),
    ("recursive_handler", 'local h\nh = function(e) error(e) end\n'
                          'xpcall(function() while true do end end, h)\n'
                          'while true do end'),
]


@pytest.mark.parametrize("name,body", XPCALL, ids=[n for n, _ in XPCALL])
def test_looping_xpcall_handler_is_bounded(tmp_path, name, body):
    sluice_test_case(tmp_path, body, "budget exceeded")


def test_looping_xpcall_handler_in_a_sink_transform(tmp_path):
    path = setup_pipeline(tmp_path, """\
        function transform(msg) return msg end
        """, sink_transform="""\
        function transform(msg)
          if msg.json.bad then
            xpcall(function() while true do end end,
                   function(e) while true do end end)
          end
          return {json = msg.json}
        end
        """)
    (tmp_path / "p.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: the sink transform fails
            input: {value: {bad: true}}
            expect: {sinks: {a: {error: "budget exceeded"}}}
          - name: the next message is fine
            input: {value: {a: 1}}
            expect: {sinks: {a: {body: {a: 1}}}}
        """))
    rc, out, err, elapsed, _ = harness.run_measured(["test", path], LIMIT_S * 6)
    assert rc == 0, out + err
    assert elapsed < LIMIT_S, "took %.1f s" % elapsed


def test_looping_xpcall_handler_at_top_level_fails_validate(tmp_path):
    path = setup_pipeline(tmp_path, """\
        xpcall(function() while true do end end,
               function(e) while true do end end)
        function transform(msg) return msg end
        """)
    rc, out, err, elapsed, _ = harness.run_measured(["validate", path], LIMIT_S * 6)
    assert elapsed < LIMIT_S, "took %.1f s" % elapsed
    assert rc == 2, out + err
    assert "budget exceeded" in err, err


def test_time_limit_bounds_a_call(tmp_path):
    # A C loop the instruction budget counts cheaply (one unit per
    # element): the deadline ends it, at lua.time_limit.
    body = ('table.concat(setmetatable({}, {__index = rawlen, '
            '__len = function() return math.maxinteger end}))')
    path = setup_pipeline(tmp_path, """\
        function transform(msg)
          if msg.json.bad then
            %s
          end
          return msg
        end
        """ % body, lua={"time_limit": "200ms",
                         "instruction_limit": 1 << 40})
    (tmp_path / "p.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: over time
            input: {value: {bad: true}}
            expect: {error: "time budget exceeded (lua.time_limit 200 ms)"}
        """))
    rc, out, err, elapsed, _ = harness.run_measured(["test", path], 60)
    assert rc == 0, out + err
    assert elapsed < 5, "took %.1f s" % elapsed


def test_memory_cap_holds_for_string_and_table_building(tmp_path):
    body = """\
        local parts = {}
        for i = 1, 1e7 do parts[i] = string.rep("x", 100) .. i end
        table.concat(parts)
        """
    path = setup_pipeline(tmp_path, """\
        function transform(msg)
          if msg.json.bad then
        %s
          end
          return msg
        end
        """ % textwrap.indent(textwrap.dedent(body), "    "),
        lua={"memory_limit": "64MiB", "instruction_limit": 1 << 40,
             "time_limit": "60s"})
    (tmp_path / "p.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: too big
            input: {value: {bad: true}}
            expect: {error: "memory"}
        """))
    rc, out, err, _, rss_kib = harness.run_measured(["test", path], 120)
    assert rc == 0, out + err
    # 64 MiB for Lua plus the binary's own: far from the gigabytes an
    # unbounded build would take.
    assert rss_kib < 400 * 1024, "peak RSS %d KiB" % rss_kib


JSON = [
    # 160 MB of JSON from 20 MB of strings: past the memory limit.
    ("encode_big", 'local t = {}\n'
                   'for i = 1, 20 do t[i] = string.rep("x", 1e6) end\n'
                   'json.encode({t, t, t, t, t, t, t, t})', "memory"),
    ("decode_big", 'json.decode("[" .. string.rep("1,", 3e6) .. "1]")',
     "memory"),
    ("decode_deep", 'json.decode(string.rep("[", 1e6))', "nesting"),
]


@pytest.mark.parametrize("name,body,error", JSON, ids=[n for n, _, _ in JSON])
def test_json_of_big_inputs_is_bounded(tmp_path, name, body, error):
    sluice_test_case(tmp_path, body, error)


def test_json_encode_memory_stays_under_the_cap(tmp_path):
    # 400 MB of output from one 1 MB string: the 64 MiB cap must bound the
    # process, not only the Lua state (it grew to 400 MB here, to 2.47 GB
    # with more copies).
    path = setup_pipeline(tmp_path, """\
        function transform(msg)
          local s = string.rep("x", 1e6)
          local t = {}
          for i = 1, 400 do t[i] = s end
          json.encode(t)
          return msg
        end
        """)
    (tmp_path / "p.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: too big
            input: {value: {}}
            expect: {error: "memory"}
        """))
    rc, out, err, _, rss_kib = harness.run_measured(["test", path], 120)
    assert rc == 0, out + err
    assert rss_kib < 250 * 1024, "peak RSS %d KiB" % rss_kib


def test_peak_rss_is_sluices_own_not_the_test_runners(tmp_path):
    # The bound above once read pytest's own memory: Linux keeps the RSS
    # high-water mark of the image exec replaces, so a process pytest forks
    # started its count at pytest's size (~250 MiB late in the suite).
    path = setup_pipeline(tmp_path, "function transform(msg) return msg end\n")
    ballast = b"x" * (300 << 20)
    rc, out, err, _, rss_kib = harness.run_measured(["validate", path], 60)
    assert len(ballast) == 300 << 20
    assert rc == 0, out + err
    assert rss_kib < 150 * 1024, "peak RSS %d KiB" % rss_kib
