"""`sluice validate` on bad pipeline files, through the real binary: each
error one `file:line:col: key: message` line, refused quickly, and the JSON
Schema editors use (pipelines/sluice-pipeline.schema.json) agreeing with
the loader on the examples."""

import glob
import json
import os
import re
import stat
import textwrap
import time

import pytest
import yaml

import harness
from harness import sluice_cmd

HEAD = textwrap.dedent("""\
    pipeline: p
    source:
      brokers: 127.0.0.1:9
      topics: [orders]
    """)
SINKS = textwrap.dedent("""\
    sinks:
      billing:
        type: http
        url: http://127.0.0.1:9/billing
    """)
SCHEMA_PATH = os.path.join(harness.REPO, "pipelines",
                           "sluice-pipeline.schema.json")


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def validate(path, **kw):
    p = sluice_cmd(["validate", path], **kw)
    for line in p.stderr.splitlines():
        assert line.startswith(path) or line.startswith("sluice: "), line
    return p


def assert_error(p, path, where, needle):
    want = "%s:%s: %s" % (path, where, needle)
    assert p.returncode == 2, p.stderr
    assert want in p.stderr, "expected %r in:\n%s" % (want, p.stderr)


def test_duplicate_keys_at_every_level(tmp_path):
    path = write(tmp_path, "dup.yaml", textwrap.dedent("""\
        pipeline: p
        source:
          brokers: 127.0.0.1:9
          topics: [orders]
          topics: [refunds]
          properties:
            session.timeout.ms: 6000
            session.timeout.ms: 7000
        sinks:
          billing:
            type: http
            url: http://127.0.0.1:9/billing
            headers: {X-A: 1, X-A: 2}
        pipeline: q
        """))
    p = validate(path)
    assert_error(p, path, "5:3", "source.topics: duplicate key (first at "
                                 "line 4)")
    assert_error(p, path, "8:5", "source.properties.session.timeout.ms: "
                                 "duplicate key (first at line 7)")
    assert_error(p, path, "13:23", "sinks.billing.headers.X-A: duplicate "
                                   "key (first at line 13)")
    assert_error(p, path, "14:1", "pipeline: duplicate key (first at line 1)")


def test_missing_file_has_no_fake_position(tmp_path):
    path = str(tmp_path / "nope.yaml")
    p = validate(path)
    assert p.returncode == 2
    assert p.stderr.startswith(
        path + ": cannot open: No such file or directory\n"), p.stderr


def test_fifo_and_directory_are_refused_without_blocking(tmp_path):
    fifo = str(tmp_path / "fifo.yaml")
    os.mkfifo(fifo)
    p = validate(fifo, timeout=10)
    assert p.returncode == 2
    assert fifo + ": cannot open: is a FIFO" in p.stderr, p.stderr
    p = validate(str(tmp_path), timeout=10)
    assert str(tmp_path) + ": cannot open: is a directory" in p.stderr
    # The same for a script path, at its YAML key.
    path = write(tmp_path, "script.yaml", HEAD + "transform: fifo.yaml\n" +
                 SINKS + "    retry: ''\n")
    p = validate(path, timeout=10)
    assert_error(p, path, "5:12", "transform: cannot read %s: is a FIFO"
                 % fifo)
    assert_error(p, path, "10:12", "sinks.billing.retry: expected a file "
                                   "name, found an empty string")


def test_script_path_problems_all_have_a_position(tmp_path):
    big = write(tmp_path, "big.lua", "-- x\n" * 300000)
    locked = write(tmp_path, "locked.lua", "function transform(m) end\n")
    os.chmod(locked, 0)
    os.mkdir(str(tmp_path / "dir.lua"))
    path = write(tmp_path, "scripts.yaml", HEAD + textwrap.dedent("""\
        sinks:
          a: {type: http, url: "http://h/", transform: missing.lua}
          b: {type: http, url: "http://h/", transform: dir.lua}
          c: {type: http, url: "http://h/", transform: big.lua}
          d: {type: http, url: "http://h/", transform: locked.lua}
          e: {type: http, url: "http://h/", transform: locked.lua/x}
        """))
    p = validate(path)
    assert_error(p, path, "6:48", "sinks.a.transform: cannot read")
    assert "missing.lua: No such file or directory" in p.stderr
    assert_error(p, path, "7:48", "sinks.b.transform: cannot read")
    assert "dir.lua: is a directory" in p.stderr
    assert_error(p, path, "8:48", "sinks.c.transform: cannot read")
    assert "big.lua: too big (1500000 bytes; at most 1048576)" in p.stderr
    if os.geteuid() != 0:  # root reads anything
        assert_error(p, path, "9:48", "sinks.d.transform: cannot read")
    assert_error(p, path, "10:48", "sinks.e.transform: cannot read")
    assert "locked.lua/x: Not a directory" in p.stderr
    os.chmod(locked, stat.S_IRUSR | stat.S_IWUSR)


def test_reference_refuses_unknown_options():
    for args in (["--bogus"], ["--format", "html"], ["extra"]):
        p = sluice_cmd(["reference"] + args)
        assert p.returncode == 2, (args, p.stdout)
        assert p.stderr.startswith("usage: sluice reference") or \
            "unknown reference format" in p.stderr, p.stderr
        assert p.stdout == ""
    p = sluice_cmd(["reference", "--help"])
    assert p.returncode == 0 and p.stdout.startswith("usage:")


def test_deep_nesting_is_refused_quickly(tmp_path):
    depth = 100000
    path = write(tmp_path, "deep.yaml",
                 "x: " + "[" * depth + "]" * depth + "\n")
    start = time.monotonic()
    p = validate(path, timeout=60)
    assert time.monotonic() - start < 10
    assert_error(p, path, "1:67", "nested deeper than 64 levels")


def test_huge_file_is_refused_before_parsing(tmp_path):
    # ~10 MB listing ~1.6 million topics: refused by size, at once.
    path = write(tmp_path, "huge.yaml", HEAD.replace(
        "[orders]", "[" + ", ".join(["t%05d" % (i % 100000)
                                     for i in range(1300000)]) + "]") +
        SINKS)
    assert os.path.getsize(path) > 9_000_000
    start = time.monotonic()
    p = validate(path, timeout=60)
    assert time.monotonic() - start < 10
    assert p.returncode == 2
    assert re.match(r"%s: cannot open: too big \(\d+ bytes; at most 1048576\)"
                    % re.escape(path), p.stderr), p.stderr


def test_long_lists_are_refused(tmp_path):
    topics = ", ".join("t%d" % i for i in range(1025))
    path = write(tmp_path, "many.yaml",
                 HEAD.replace("[orders]", "[%s]" % topics) + SINKS)
    p = validate(path)
    assert_error(p, path, "4:11", "source.topics: more than 1024 entries")


def test_second_document_and_bad_bytes(tmp_path):
    path = write(tmp_path, "two.yaml", HEAD + SINKS + "---\npipeline: q\n")
    p = validate(path)
    assert_error(p, path, "9:1", "a second YAML document")
    path = write(tmp_path, "nul.yaml",
                 (HEAD + SINKS).encode().replace(b"orders", b"ord\0ers"),
                 mode="wb")
    p = validate(path)
    assert_error(p, path, "4:15", "a NUL byte")
    path = write(tmp_path, "utf8.yaml",
                 (HEAD + SINKS).encode().replace(b"orders", b"ord\xe9rs"),
                 mode="wb")
    p = validate(path)
    assert_error(p, path, "4:15", "invalid UTF-8 (byte 0xe9)")


@pytest.mark.parametrize("value, where, needle", [
    ("' 5'", "7:18", "expected an integer, found ` 5`"),
    ("'5 '", "7:18", "expected an integer, found `5 `"),
])
def test_integers_with_spaces_are_refused(tmp_path, value, where, needle):
    path = write(tmp_path, "int.yaml", HEAD + "delivery:\n"
                 "  ordering: key\n  max_in_flight: %s\n" % value + SINKS)
    p = validate(path)
    assert_error(p, path, where, "delivery.max_in_flight: " + needle)


@pytest.mark.parametrize("topic, needle", [
    ("''", "a topic name cannot be empty"),
    ("t" * 250, "a topic name is at most 249 characters"),
    ("'a b'", "a topic name is letters, digits"),
    ("a/b", "a topic name is letters, digits"),
    ("'..'", "a topic name cannot be `.` or `..`"),
])
def test_bad_topic_names_are_refused(tmp_path, topic, needle):
    path = write(tmp_path, "topic.yaml", HEAD.replace(
        "[orders]", "[orders, %s]" % topic) + SINKS +
        "dlq: {topic: %s}\n" % topic)
    p = validate(path)
    assert_error(p, path, "4:20", "source.topics: " + needle)
    assert_error(p, path, "9:14", "dlq.topic: " + needle)


def test_control_characters_stay_on_one_line(tmp_path):
    path = write(tmp_path, "nl.yaml",
                 HEAD + 'transform: "x\\ny.lua"\n' + SINKS)
    p = validate(path)
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr  # the error and the count
    assert lines[0].startswith(path + ":5:12: transform: cannot read ")
    assert "x\\ny.lua" in lines[0]


# ---- the JSON Schema ----
#
# python3-jsonschema is not installed here (scripts/install-deps.sh could
# add it); this checks the subset of draft-07 the generated schema uses,
# strictly: an unknown keyword in the schema fails the test.

KNOWN = {"$schema", "$comment", "title", "description", "default", "type",
         "properties", "additionalProperties", "required", "enum", "const",
         "anyOf", "allOf", "if", "then", "else", "pattern", "minimum", "maximum",
         "minItems", "maxItems", "items", "minProperties", "maxProperties",
         "propertyNames", "$ref", "minLength", "definitions"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool,
         "integer": int, "number": (int, float)}


def is_type(value, name):
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[name])


def schema_errors(value, schema, root, where="$"):
    unknown = set(schema) - KNOWN
    assert not unknown, "schema keywords not checked: %s" % unknown
    if "$ref" in schema:
        ref = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            ref = ref[part]
        return schema_errors(value, ref, root, where)
    errs = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) \
            else [schema["type"]]
        if not any(is_type(value, t) for t in types):
            return ["%s: not %s" % (where, types)]
    if "const" in schema and value != schema["const"]:
        errs.append("%s: not %r" % (where, schema["const"]))
    if "enum" in schema and value not in schema["enum"]:
        errs.append("%s: not one of %r" % (where, schema["enum"]))
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append("%s: %r does not match %s"
                        % (where, value, schema["pattern"]))
        if len(value) < schema.get("minLength", 0):
            errs.append("%s: too short" % where)
    if is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append("%s: below minimum" % where)
        if "maximum" in schema and value > schema["maximum"]:
            errs.append("%s: above maximum" % where)
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= \
                schema.get("maxItems", 1 << 30):
            errs.append("%s: item count" % where)
        for i, item in enumerate(value):
            if "items" in schema:
                errs += schema_errors(item, schema["items"], root,
                                      "%s[%d]" % (where, i))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errs.append("%s: missing %s" % (where, key))
        if not schema.get("minProperties", 0) <= len(value) <= \
                schema.get("maxProperties", 1 << 30):
            errs.append("%s: key count" % where)
        for key, item in value.items():
            sub = "%s.%s" % (where, key)
            if "propertyNames" in schema:
                errs += schema_errors(key, schema["propertyNames"], root, sub)
            if key in props:
                errs += schema_errors(item, props[key], root, sub)
            elif schema.get("additionalProperties") is False:
                errs.append("%s: unknown key" % sub)
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += schema_errors(item, schema["additionalProperties"],
                                      root, sub)
    if "anyOf" in schema and all(schema_errors(value, s, root, where)
                                 for s in schema["anyOf"]):
        errs.append("%s: matches none of anyOf" % where)
    if "if" in schema:
        branch = "else" if schema_errors(value, schema["if"], root,
                                         where) else "then"
        if branch in schema:
            errs += schema_errors(value, schema[branch], root, where)
    for sub in schema.get("allOf", []):
        if "if" in sub:
            if not schema_errors(value, sub["if"], root, where):
                errs += schema_errors(value, sub["then"], root, where)
        else:
            errs += schema_errors(value, sub, root, where)
    return errs


def load_schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def test_schema_is_what_reference_prints():
    p = sluice_cmd(["reference", "--format", "json-schema"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == load_schema(), "run make docs"


def example_pipelines():
    return [p for p in sorted(glob.glob(os.path.join(harness.REPO,
                                                     "pipelines", "*.yaml")))
            if not p.endswith(".test.yaml")]


def test_every_example_validates_against_the_schema():
    schema = load_schema()
    examples = example_pipelines()
    assert examples
    for path in examples:
        with open(path) as f:
            doc = yaml.safe_load(f)
        assert schema_errors(doc, schema, schema) == [], path


def test_schema_refuses_what_the_loader_refuses(tmp_path):
    schema = load_schema()
    good = yaml.safe_load(HEAD + SINKS)
    assert schema_errors(good, schema, schema) == []
    for bad in (
        HEAD + SINKS + "colour: blue\n",                  # unknown root key
        HEAD + "  topicz: [x]\n" + SINKS,                 # unknown in source
        HEAD + SINKS + "    urll: http://x/\n",           # unknown sink key
        HEAD + SINKS + "    timeout: 5\n",                # duration w/o unit
        HEAD + SINKS + "    max_in_flight: 0\n",          # below minimum
        HEAD + "delivery: {ordering: random}\n" + SINKS,  # not an enum value
        HEAD + "sinks:\n  a: {type: ftp}\n",              # unknown type
        HEAD,                                             # sinks missing
        "pipeline: p\nsource: {type: http, listen: ':1', key: 'json:a',"
        " topics: [x]}\n" + SINKS,                        # kafka key in http
        "pipeline: p\nsource: {type: http, key: 'json:a'}\n" + SINKS,
    ):
        path = write(tmp_path, "bad.yaml", bad)
        assert schema_errors(yaml.safe_load(bad), schema, schema), bad
        assert validate(path).returncode == 2, bad


def test_kafka_property_errors_point_at_the_key_with_a_hint(tmp_path):
    path = write(tmp_path, "props.yaml", HEAD + textwrap.dedent("""\
          properties:
            fetch.max.bytes: 1000000
            sesion.timeout.ms: 6000
        dlq:
          properties:
            linger.ms: 5
            lingerr.ms: 5
            zzzzzzzzzzzz: 1
        """) + SINKS)
    p = validate(path)
    assert_error(p, path, "7:5", "source.properties: `sesion.timeout.ms` ")
    assert "did you mean `session.timeout.ms`?" in p.stderr, p.stderr
    assert_error(p, path, "11:5", "dlq.properties: `lingerr.ms` ")
    assert "did you mean `linger.ms`?" in p.stderr, p.stderr
    line = [l for l in p.stderr.splitlines() if "zzzz" in l]
    assert len(line) == 1 and line[0].startswith(path + ":12:5: ") \
        and "did you mean" not in line[0], p.stderr
