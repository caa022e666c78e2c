"""The command line: configuration errors, exit codes, help and version."""

import os
import re
import textwrap

import pytest

import harness
from harness import sluice_cmd

GOOD = textwrap.dedent("""\
    pipeline: p
    source:
      brokers: 127.0.0.1:9
      topics: [orders]
    sinks:
      billing:
        type: http
        url: http://127.0.0.1:9/billing
    """)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_accepts_a_good_file(tmp_path):
    path = write(tmp_path, "good.yaml", GOOD)
    p = sluice_cmd(["validate", path])
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(path + ": ok"), p.stdout


def test_validate_accepts_the_shipped_example():
    path = os.path.join(harness.REPO, "pipelines", "orders-fanout.yaml")
    unset = ("KAFKA_BROKERS", "GROUP", "RETRY_BACKOFF")
    p = sluice_cmd(["validate", path], env={k: None for k in unset})
    assert p.returncode == 0, p.stderr
    assert ": ok" in p.stdout


@pytest.mark.parametrize("command", ["validate", "run"])
def test_invalid_yaml_reports_file_line_col(tmp_path, command):
    path = write(tmp_path, "bad.yaml", textwrap.dedent("""\
        pipeline: p
        source:
          brokers: 127.0.0.1:9
          topics: [orders
        sinks:
          billing: {type: http, url: "http://127.0.0.1:9/"}
        """))
    p = sluice_cmd([command, path])
    assert p.returncode == 2, p.stderr
    m = re.search(r"^%s:(\d+):(\d+): .*invalid YAML" % re.escape(path),
                  p.stderr, re.M)
    assert m, p.stderr
    assert int(m.group(1)) in (4, 5), p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("command", ["validate", "run"])
def test_unknown_keys_get_did_you_mean(tmp_path, command):
    path = write(tmp_path, "typo.yaml", textwrap.dedent("""\
        pipeline: p
        source:
          brokers: 127.0.0.1:9
          topics: [orders]
        delivery:
          max_inflight: 5
        sinks:
          billing:
            type: http
            url: http://127.0.0.1:9/billing
            timout: 5s
        """))
    p = sluice_cmd([command, path])
    assert p.returncode == 2, p.stderr
    assert "%s:6:3: delivery.max_inflight: unknown key; did you mean " \
        "`max_in_flight`?" % path in p.stderr, p.stderr
    assert "%s:11:5: sinks.billing.timout: unknown key; did you mean " \
        "`timeout`?" % path in p.stderr, p.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
def test_unset_env_var_is_named(tmp_path, command):
    var = "SLUICE_IT_UNSET_%d" % os.getpid()
    path = write(tmp_path, "env.yaml", GOOD.replace(
        "127.0.0.1:9\n", "${%s}\n" % var, 1))
    assert var not in os.environ
    p = sluice_cmd([command, path])
    assert p.returncode == 2, p.stderr
    assert re.search(r"^%s:3:\d+: source\.brokers: .*%s" % (
        re.escape(path), var), p.stderr, re.M), p.stderr
    # With the variable set, or with a default, the same file is fine.
    assert sluice_cmd(["validate", path], env={var: "127.0.0.1:9"}) \
        .returncode == 0
    path2 = write(tmp_path, "env2.yaml", GOOD.replace(
        "127.0.0.1:9\n", "${%s:-127.0.0.1:9}\n" % var, 1))
    assert sluice_cmd(["validate", path2]).returncode == 0


def test_bad_values_from_env_are_not_echoed(tmp_path):
    secret = "s3cr3t-%d" % os.getpid()
    text = GOOD + "    timeout: ${SLUICE_IT_SECRET}\n"
    path = write(tmp_path, "secret.yaml", text)
    p = sluice_cmd(["validate", path], env={"SLUICE_IT_SECRET": secret})
    assert p.returncode == 2, p.stderr
    assert "sinks.billing.timeout" in p.stderr, p.stderr
    assert secret not in p.stderr + p.stdout


def test_managed_and_unknown_kafka_properties(tmp_path):
    text = GOOD.replace("  topics: [orders]\n",
                        "  topics: [orders]\n"
                        "  properties:\n"
                        "    group.id: other\n"
                        "    no.such.property: \"1\"\n", 1)
    path = write(tmp_path, "props.yaml", text)
    p = sluice_cmd(["validate", path])
    assert p.returncode == 2, (text, p.stderr)
    assert re.search(r"source\.properties: `group\.id` is managed",
                     p.stderr), p.stderr
    assert "no.such.property" in p.stderr, p.stderr
    # The DLQ producer's properties too, in the same run.
    text += ("dlq:\n"
             "  properties:\n"
             "    enable.idempotence: \"false\"\n"
             "    linger.ms: soon\n")
    path = write(tmp_path, "props-dlq.yaml", text)
    p = sluice_cmd(["validate", path])
    assert p.returncode == 2, (text, p.stderr)
    assert "source.properties: `group.id` is managed" in p.stderr, p.stderr
    assert re.search(r"dlq\.properties: `enable\.idempotence` is managed",
                     p.stderr), p.stderr
    assert "`linger.ms`" in p.stderr and "4 error(s)" in p.stderr, p.stderr


def test_missing_file_and_missing_argument(tmp_path):
    p = sluice_cmd(["validate", str(tmp_path / "nope.yaml")])
    assert p.returncode == 2 and "nope.yaml" in p.stderr
    p = sluice_cmd(["run", str(tmp_path / "nope.yaml")])
    assert p.returncode == 2 and "nope.yaml" in p.stderr
    for args in (["validate"], ["run"], ["run", "--no-such-flag", "x.yaml"],
                 ["run", "--log-level", "loud", "x.yaml"], []):
        p = sluice_cmd(args)
        assert p.returncode == 2, (args, p.stderr)
        assert "usage" in p.stderr or "unknown" in p.stderr, (args, p.stderr)


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"],
                                  ["run", "--help"], ["validate", "--help"]])
def test_help_exits_0(args):
    p = sluice_cmd(args)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: sluice"), p.stdout


def test_version_exits_0():
    for flag in ("--version", "-V"):
        p = sluice_cmd([flag])
        assert p.returncode == 0, p.stderr
        assert re.match(r"sluice \d+\.\d+\.\d+", p.stdout), p.stdout


def test_unknown_command_exits_2():
    p = sluice_cmd(["frobnicate"])
    assert p.returncode == 2
    assert "unknown command `frobnicate`" in p.stderr


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/billing",
                                 "127.0.0.1:8080/billing"])
def test_bad_sink_url_is_a_configuration_error(tmp_path, url):
    path = write(tmp_path, "url.yaml", GOOD.replace(
        "http://127.0.0.1:9/billing", url))
    v = sluice_cmd(["validate", path])
    r = sluice_cmd(["run", path])
    assert (v.returncode, r.returncode) == (2, 2), (
        "url %s: validate exited %d (%s), run exited %d (%s); both should "
        "exit 2 with a file:line:col error on sinks.billing.url"
        % (url, v.returncode, (v.stdout + v.stderr).strip(), r.returncode,
           r.stderr.strip()))
    assert re.search(r"^%s:8:\d+: sinks\.billing\.url: " % re.escape(path),
                     v.stderr, re.M), v.stderr
