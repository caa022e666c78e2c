"""Fixtures for sluice's integration suite.

    kafka         session-wide real Apache Kafka: .bootstrap,
                  .create_topic(name, parts) (AdminClient; returns once the
                  metadata shows the topic). By default a single-node broker
                  started with tests/kafka/kafka.sh in a tmp dir for the
                  session (stopped at the end, also on failure or Ctrl-C);
                  KAFKA_BOOTSTRAP=host:port uses that cluster instead.
    mock_kafka    session-wide bin/kafka-mock, only for what a real broker
                  cannot do: injected request errors, round-trip delays
                  (see harness.MockKafka)
    kafka_broker  factory: kafka_broker() -> harness.KafkaBroker, started;
                  a dedicated real broker in this test's tmp dir, for tests
                  that stop or restart the broker (stopped at teardown)
    names         unique topic / group / pipeline names for this test
    topic_factory creates a uniquely named topic on `kafka`, returns its name
    sinkd         factory: sinkd(name, port=0) -> harness.Sinkd
    sluice        factory: sluice(pipeline dict or YAML text, args=...,
                  env=..., path=existing file instead of a config)
                  -> harness.Sluice (YAML written to tmp_path; env entries
                  set to None are removed from the environment)
    offsets       factory: offsets(group, bootstrap=kafka.bootstrap)
                  -> harness.OffsetReader
    otlp          an OTLP/HTTP JSON receiver (tests/tools/otlp_recorder.py),
                  started: .url, .spans(), .fail_with(status), .delay(s)

Every process is killed at teardown, also when the test failed, and the
stderr of each sluice run (and the log of each dedicated broker) is
attached to a failing test's report.

Tests marked @pytest.mark.sluice_bug demonstrate a known, unfixed sluice
bug: they are expected to fail until it is fixed, and run last so that
`pytest -x` still runs everything else first.
"""

import itertools
import os
import re
import signal
import sys
import uuid

import pytest

# The test tools written in Python (the OTLP receiver) live beside sinkd.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tools"))

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
        for broker in getattr(item, "_kafka_brokers", []):
            rep.sections.append(("log of the broker in %s" % broker.dir,
                                 broker.log_tail(60)))


def _sigterm_as_interrupt():
    """SIGTERM to pytest ends the session like Ctrl-C, so that session
    fixtures (the broker) are torn down instead of left running."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    broker = None
    real = None
    try:
        if not bootstrap:
            _sigterm_as_interrupt()
            broker = harness.KafkaBroker(str(tmp_path_factory.mktemp("kafka")))
            bootstrap = broker.start()
        real = harness.RealKafka(bootstrap, broker=broker)
        real.warm_up()
        yield real
    finally:
        try:
            if real is not None:
                real.close()
        finally:
            if broker is not None:
                broker.close()


@pytest.fixture(scope="session")
def mock_kafka(tmp_path_factory):
    broker = harness.MockKafka(str(tmp_path_factory.mktemp("kafka-mock")))
    yield broker
    broker.close()


@pytest.fixture
def kafka_broker(request, tmp_path):
    made = []
    request.node._kafka_brokers = made

    def make():
        b = harness.KafkaBroker(str(tmp_path / ("broker-%d" % len(made))))
        made.append(b)
        b.start()
        return b
    yield make
    for b in made:
        b.close()


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
        if os.environ.get("SLUICE_IT_KAFKA_DEBUG") and \
                "--log-level" not in args:
            # harness.pipeline adds librdkafka's `debug` property; its
            # lines are logged at sluice's debug level.
            args = tuple(args) + ("--log-level", "debug")
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
def redis_server(tmp_path):
    made = []

    def make():
        r = harness.RedisServer(str(tmp_path))
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


@pytest.fixture
def offsets(kafka):
    readers = []

    def make(group, bootstrap=None):
        r = harness.OffsetReader(bootstrap or kafka.bootstrap, group)
        readers.append(r)
        return r
    yield make
    for r in readers:
        r.close()


@pytest.fixture
def otlp():
    from otlp_recorder import OtlpRecorder
    r = OtlpRecorder()
    r.start()
    yield r
    r.stop()
