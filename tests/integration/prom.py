"""Prometheus for the integration tests: `promtool check metrics` on an
exposition text, and a real Prometheus server scraping sluice's admin
server on loopback (Debian's `prometheus` package, installed by
scripts/install-deps.sh). Importable without it; using it fails then."""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import harness


def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise RuntimeError("%s is not installed (scripts/install-deps.sh "
                           "installs Debian's prometheus package)" % name)
    return path


def promtool_check_metrics(text):
    """(ok, output) of `promtool check metrics` on text: it exits 1 on
    lint problems (a counter without _total, a missing HELP) as well as
    on a malformed exposition."""
    p = subprocess.run([_tool("promtool"), "check", "metrics"],
                       input=text.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return p.returncode == 0, p.stdout.decode(errors="replace")


def promtool_check_rules(path):
    p = subprocess.run([_tool("promtool"), "check", "rules", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return p.returncode == 0, p.stdout.decode(errors="replace")


class PrometheusServer:
    """A prometheus on 127.0.0.1 scraping targets ("host:port") every
    second, its data and logs in workdir."""

    def __init__(self, workdir, targets):
        self.dir = os.path.join(workdir, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        self.port = harness.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: sluice\n"
                    "    metrics_path: /metrics\n"
                    "    static_configs:\n      - targets: %s\n"
                    % json.dumps(list(targets)))
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    def start(self, timeout=30):
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [_tool("prometheus"), "--config.file=" + self.config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--storage.tsdb.retention.time=1h",
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        harness.wait_until(self._ready, timeout, "prometheus ready",
                           details=self.log_tail)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited %s:\n%s" % (
                self.proc.returncode, self.log_tail()))
        try:
            with urllib.request.urlopen(self.url + "/-/ready",
                                        timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self):
        try:
            with open(self.log_path) as f:
                return harness.tail(f.read(), 40)
        except OSError:
            return ""

    def _get(self, path, **params):
        url = "%s%s?%s" % (self.url, path, urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """The result list of an instant query."""
        return self._get("/api/v1/query", query=expr)["result"]

    def targets(self):
        return self._get("/api/v1/targets")["activeTargets"]

    def wait_for(self, expr, timeout=30):
        """Polls until expr returns at least one series; returns them."""
        out = []

        def some():
            out[:] = self.query(expr)
            return bool(out)
        harness.wait_until(some, timeout, "prometheus: %s" % expr,
                           details=lambda: "%s\n%s" % (self.targets(),
                                                       self.log_tail()))
        return out

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
