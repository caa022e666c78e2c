"""Fixtures for sluice's integration suite.

    kafka         session-wide broker: .bootstrap, .create_topic(name, parts)
                  (bin/kafka-mock; $KAFKA_BOOTSTRAP is the seam for a real
                  broker, see harness.RealKafka)
    names         unique topic / group / pipeline names for this test
    topic_factory creates a uniquely named topic, returns its name
    sinkd         factory: sinkd(name, port=0) -> harness.Sinkd
    sluice        factory: sluice(pipeline dict or YAML text, args=...,
                  env=..., path=existing file instead of a config)
                  -> harness.Sluice (YAML written to tmp_path; env entries
                  set to None are removed from the environment)
    offsets       factory: offsets(group) -> harness.OffsetReader

Every process is killed at teardown, also when the test failed, and the
stderr of each sluice run is attached to a failing test's report.

Tests marked @pytest.mark.sluice_bug demonstrate a known, unfixed sluice
bug: they are expected to fail until it is fixed, and run last so that
`pytest -x` still runs everything else first.
"""

import itertools
import os
import re
import uuid

import pytest

import harness

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
              "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "sluice_bug(text): shows a known sluice bug (runs last)")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.get_closest_marker("sluice_bug")
               is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for run in getattr(item, "_sluice_runs", []):
            rep.sections.append(("stderr of %s (%s)" % (run.name, run.cmd[-1]),
                                 harness.tail(run.log(), 150)))


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        broker = harness.RealKafka(bootstrap)
    else:
        broker = harness.MockKafka(str(tmp_path_factory.mktemp("kafka")))
    yield broker
    broker.close()


class Names:
    def __init__(self, node_name):
        base = re.sub(r"[^A-Za-z0-9]+", "-", node_name).strip("-")[:40]
        self.base = "%s-%s" % (base, uuid.uuid4().hex[:8])
        self._n = itertools.count()

    def topic(self):
        return "t-%s-%d" % (self.base, next(self._n))

    def group(self):
        return "g-%s-%d" % (self.base, next(self._n))

    @property
    def pipeline(self):
        return "p-%s" % self.base


@pytest.fixture
def names(request):
    return Names(request.node.name)


@pytest.fixture
def topic_factory(kafka, names):
    def make(partitions):
        t = names.topic()
        kafka.create_topic(t, partitions)
        return t
    return make


@pytest.fixture
def sinkd(tmp_path):
    made = []

    def make(name, port=0):
        s = harness.Sinkd(name, str(tmp_path), port=port)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture
def sluice(request, tmp_path):
    runs = []
    request.node._sluice_runs = runs
    counter = itertools.count(1)

    def run(config=None, args=("--progress",), env=None, name=None,
            path=None):
        n = next(counter)
        name = name or "sluice-%d" % n
        if path is None:
            path = harness.write_yaml(str(tmp_path / ("%s.yaml" % name)),
                                      config)
        full_env = dict(os.environ)
        # Sinks are local: a proxy from the environment would reroute
        # them (and switch sluice's http:// transport to curl).
        for k in PROXY_VARS:
            full_env.pop(k, None)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        s = harness.Sluice(name, str(tmp_path), path, args, full_env)
        runs.append(s)
        return s
    yield run
    for s in runs:
        s.close()
    # A run that exited by itself must not have left sanitizer reports,
    # even when the test did not wait() for it.
    for s in runs:
        if not s.killed:
            s.check_sanitizers()


@pytest.fixture
def offsets(kafka):
    readers = []

    def make(group):
        r = harness.OffsetReader(kafka.bootstrap, group)
        readers.append(r)
        return r
    yield make
    for r in readers:
        r.close()
