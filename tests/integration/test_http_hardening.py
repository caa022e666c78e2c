"""The http sink under hostile configuration, transforms and networks.

Configured headers must not split a request; a transform may not leave
the URL path, method set or headers its sink is configured for; names
are resolved off the lane's loop and transport errors say what failed.
Where it matters, each test runs on both transports: sluice's lean
HTTP/1.1 client (plain http://) and libcurl (`curl`: http_proxy set to
the sinkd itself, which answers proxied requests like any other).
"""

import os
import re
import socket
import subprocess
import textwrap
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

import harness
from harness import sluice_cmd, wait_until

TRANSPORTS = pytest.mark.parametrize("transport", ["lean", "curl"])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def config_file(tmp_path, sink, name="p.yaml"):
    """A minimal pipeline file with one http sink `s`; sink: its YAML."""
    path = tmp_path / name
    path.write_text(textwrap.dedent("""\
        pipeline: p
        source:
          brokers: 127.0.0.1:9
          topics: [orders]
          group: g
        sinks:
          s:
            type: http
            url: http://127.0.0.1:9/in
        """) + textwrap.indent(textwrap.dedent(sink), " " * 4))
    return str(path)


# ---- 3. header injection from the configuration --------------------------

@pytest.mark.parametrize("sink, env, message", [
    # A secret from the environment with a line break in it.
    ("headers:\n  X-Token: \"${HH_TOKEN}\"\n",
     {"HH_TOKEN": "abcdef\r\nX-Admin: yes"},
     r"sinks\.s\.headers: header `X-Token` value contains a line break "
     r"\(byte 7\)"),
    # Written in the file itself.
    ("headers:\n  X-Token: \"secret1\\nX-Admin: yes\"\n", {},
     r"sinks\.s\.headers: header `X-Token` value contains a line break "
     r"\(byte 8\)"),
    # (A NUL in a YAML scalar ends the string when cfg.c stores it.)
    ("headers:\n  X-Token: \"sec\\x7fret\"\n", {},
     r"header `X-Token` value contains a control character \(byte 4\)"),
    ("headers:\n  X-Token: \"sec\\x01ret\"\n", {},
     r"header `X-Token` value contains a control character \(byte 4\)"),
    ("headers:\n  \"X-Bad\\r\\nName\": v\n", {},
     r"sinks\.s\.headers: header name `X-Bad\?\?Name` is not an HTTP token"),
    ("headers:\n  Content-Length: \"0\"\n", {},
     r"header `Content-Length` is the connector's to set"),
    ("content_type: \"text/plain\\r\\nX-Admin: yes\"\n", {},
     r"sinks\.s\.content_type: content_type contains a line break "
     r"\(byte 11\)"),
    ("methods: [POST, \"DE LETE\"]\n", {},
     r"sinks\.s\.methods: `DE LETE` is not an HTTP method"),
])
def test_configured_header_injection_is_refused_at_load(tmp_path, sink, env,
                                                        message):
    path = config_file(tmp_path, sink)
    for command in ("validate", "run"):
        p = sluice_cmd([command, path], env=env)
        assert p.returncode == 2, (command, p.stdout, p.stderr)
        # file:line:col of the option, then the reason.
        assert re.search(r"^%s:\d+:\d+: .*%s" % (re.escape(path), message),
                         p.stderr, re.M), p.stderr
        for secret in ("abcdef", "secret1", "sec"):
            assert secret not in p.stderr, p.stderr


def test_tab_and_utf8_in_configured_header_value_are_fine(tmp_path):
    path = config_file(tmp_path, """\
        headers:
          X-Note: "a\\tb Zürich"
          Host: billing.internal
        """)
    p = sluice_cmd(["validate", path])
    assert p.returncode == 0, p.stderr


# ---- 4. a transform stays within its sink --------------------------------

# Per offset: what the transform returns, and whether it is delivered.
CASES = [
    ('{path = "../../admin"}', False),
    ('{path = "x/%2e%2E/%2e%2e/admin"}', False),
    ('{path = "x/..%2fadmin"}', False),
    ('{path = "./admin"}', False),
    ('{path = "x\\\\..\\\\admin"}', False),
    ('{method = "DELETE"}', False),
    ('{method = "HEAD"}', False),
    ('{headers = {Host = "admin.internal"}}', False),
    ('{headers = {["Transfer-Encoding"] = "chunked"}}', False),
    ('{headers = {["Proxy-Authorization"] = "Basic eA=="}}', False),
    ('{headers = {Connection = "close"}}', False),
    ('{headers = {["X-Bad"] = "a\\rb"}}', False),
    ('{headers = {["X-Bad"] = "a\\1b"}}', False),
    # Still fine: dots inside names, a query with dots, PUT/PATCH.
    ('{path = "orders/v1.2/..x/a..b?next=../x"}', True),
    ('{method = "PUT", path = "orders/7"}', True),
    ('{method = "PATCH", headers = {["X-Tenant"] = "t\\tx"}}', True),
]


def transform_for(cases):
    lines = ["local cases = {"]
    for ret, _ in cases:
        lines.append("  function(msg) return " + ret + " end,")
    lines += ["}",
              "function transform(msg)",
              "  return cases[msg.offset + 1](msg)",
              "end", ""]
    return "\n".join(lines)


def run_cases(mock_kafka, names, sinkd, sluice, offsets, tmp_path, transport,
              cases, sink_extra=None):
    kafka = mock_kafka
    topic = names.topic()
    kafka.create_topic(topic, 1)
    group = names.group()
    sink = sinkd("a")
    write(tmp_path, "t.lua", transform_for(cases))
    spec = {"url": sink.url(), "transform": "t.lua"}
    spec.update(sink_extra or {})
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic, group,
                           {"a": spec})
    env = {"http_proxy": sink.base} if transport == "curl" else {}
    run = sluice(cfg, env=env)
    harness.produce_orders(kafka.bootstrap, topic, len(cases))
    reader = offsets(group, kafka.bootstrap)
    wait_until(lambda: reader.committed(topic, 1) == [len(cases)], 60,
               "every case delivered or dead-lettered", alive=[run],
               details=run.log)
    run.terminate()
    assert run.wait(60) == 0
    bad = sum(1 for _, ok in cases if not ok)
    return dlq_reasons(kafka.bootstrap, names.pipeline + ".dlq", bad), \
        sink.records()


def dlq_reasons(bootstrap, topic, count):
    """source offset -> sluice.error.reason of each dead-letter record
    (the log rate-limits its give-up lines; the DLQ holds every one)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "hh-dlq",
                  "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out = {}
    try:
        deadline = time.time() + 20
        while time.time() < deadline and len(out) < count:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            h = {k: v.decode() for k, v in m.headers() or []}
            out[int(h["sluice.source.offset"])] = h["sluice.error.reason"]
    finally:
        c.close()
    return out


@TRANSPORTS
def test_transform_cannot_leave_its_sink(mock_kafka, names, sinkd, sluice,
                                         offsets, tmp_path, transport):
    reasons, recs = run_cases(mock_kafka, names, sinkd, sluice, offsets,
                              tmp_path, transport, CASES)
    good = [i for i, (_, ok) in enumerate(CASES) if ok]
    got = sorted(r.offset for r in recs)
    assert got == good, (got, recs)
    for r in recs:
        path = r.path.split("://", 1)[-1]
        path = path[path.find("/"):] if "://" in r.path else path
        assert path.startswith("/a/") or path == "/a", r
        assert r.method in ("POST", "PUT", "PATCH"), r
        assert "admin" not in path.split("?")[0], r
    by_offset = {r.offset: r for r in recs}
    assert by_offset[13].path.endswith("/a/orders/v1.2/..x/a..b")
    assert by_offset[14].method == "PUT"
    assert by_offset[15].headers["x-tenant"] == "t\tx"
    assert sorted(reasons) == [i for i, (_, ok) in enumerate(CASES)
                               if not ok], reasons
    expect = {
        0: r"invalid path `\.\./\.\./admin`: a `\.` or `\.\.` segment",
        1: r"invalid path `x/%2e%2E/%2e%2e/admin`: a `\.` or `\.\.` segment",
        5: r"method `DELETE` is not allowed on this sink \(allowed: POST, "
           r"PUT, PATCH; see the sink's `methods`\)",
        6: r"method `HEAD` is not allowed",
        7: r"request header `Host` is the connector's to set",
        9: r"request header `Proxy-Authorization` is the connector's to set",
        11: r"request header `X-Bad` value contains a line break \(byte 2\)",
        12: r"request header `X-Bad` value contains a control character "
            r"\(byte 2\)",
    }
    for offset, reason in expect.items():
        assert re.search(reason, reasons[offset]), (offset, reasons[offset])
    for offset in (2, 3, 4):
        assert "segment" in reasons[offset], reasons[offset]


@TRANSPORTS
def test_methods_option_widens_what_a_transform_may_send(
        mock_kafka, names, sinkd, sluice, offsets, tmp_path, transport):
    cases = [('{method = "DELETE", path = "orders/1"}', True),
             ('{method = "PUT"}', True),
             ('{method = "PATCH"}', False)]
    reasons, recs = run_cases(mock_kafka, names, sinkd, sluice, offsets,
                              tmp_path, transport, cases,
                          sink_extra={"method": "PUT",
                                      "methods": ["DELETE"]})
    assert sorted((r.offset, r.method) for r in recs) == [
        (0, "DELETE"), (1, "PUT")], recs
    assert re.search(r"method `PATCH` is not allowed on this sink "
                     r"\(allowed: PUT, DELETE;", reasons[2]), reasons


# ---- 1. names resolved off the loop; errors that say what failed ---------

def one_sink_run(mock_kafka, names, sluice, sinks, count=1, env=None,
                 **delivery):
    kafka = mock_kafka
    topic = names.topic()
    kafka.create_topic(topic, 1)
    cfg = harness.pipeline(names.pipeline, kafka.bootstrap, topic,
                           names.group(), sinks, **delivery)
    run = sluice(cfg, env=env)
    harness.produce_orders(kafka.bootstrap, topic, count)
    return run


@pytest.mark.parametrize("scheme", ["http", "https"])  # lean, curl
def test_unresolvable_host_says_cannot_resolve(mock_kafka, names, sluice,
                                               scheme):
    host = "sluice-hh-%s.invalid" % names.base[-8:]
    run = one_sink_run(mock_kafka, names, sluice,
                       {"s": "%s://%s:9/in" % (scheme, host)})
    line = run.wait_for_log(r"sink s: .* attempt 1 failed: .*", 30)
    log = run.log()
    assert re.search(r"sink s: .* attempt 1 failed: cannot resolve %s: "
                     % re.escape(host), log), log
    if scheme == "http":
        assert re.search(r"cannot resolve %s: (Name or service not known|"
                         r"No address associated with hostname|"
                         r"Temporary failure in name resolution)"
                         % re.escape(host), log), log
    assert "No route to host" not in log
    del line
    run.terminate()
    run.wait(60)


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Names under .slow.test answer as 127.0.0.1 once $HH_DNS_GATE exists:
 * a resolver that takes as long as the test wants. */
int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res)
{
    int (*real)(const char *, const char *, const struct addrinfo *,
                struct addrinfo **) = dlsym(RTLD_NEXT, "getaddrinfo");
    const char *suffix = ".slow.test";
    size_t n = node != NULL ? strlen(node) : 0, k = strlen(suffix);

    if (n > k && strcmp(node + n - k, suffix) == 0) {
        const char *gate = getenv("HH_DNS_GATE");
        for (int i = 0; i < 1200 && gate && access(gate, F_OK) != 0; i++) {
            usleep(50000);
        }
        node = "127.0.0.1";
    }
    return real(node, service, hints, res);
}
"""


def test_slow_resolver_does_not_stall_the_other_sinks(
        mock_kafka, names, sinkd, sluice, offsets, tmp_path):
    """One sink's name takes as long to resolve as the test wants (an
    LD_PRELOAD getaddrinfo); the other sink of the lane, and the
    consumer, must go on meanwhile."""
    src = tmp_path / "slowdns.c"
    src.write_text(SHIM)
    shim = str(tmp_path / "slowdns.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", shim, str(src), "-ldl"],
                   check=True)
    gate = str(tmp_path / "gate")
    fast, slow = sinkd("fast"), sinkd("slow")
    port = slow.url().split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    count = 20
    env = {"LD_PRELOAD": shim, "HH_DNS_GATE": gate,
           # The shim cannot come after ASan's runtime in a sanitizer build.
           "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                            ":verify_asan_link_order=0").lstrip(":")}
    run = one_sink_run(
        mock_kafka, names, sluice,
        {"fast": fast.url(),
         "slow": {"url": "http://sink.slow.test:%s/slow" % port,
                  "connect_timeout": "60s"}},
        count=count, env=env)
    try:
        wait_until(lambda: fast.ok_count() >= count, 30,
                   "the fast sink's deliveries while the other sink's name "
                   "is being resolved", alive=[run], details=run.log)
        assert slow.ok_count() == 0
    finally:
        open(gate, "w").close()
    wait_until(lambda: slow.ok_count() >= count, 30,
               "the slow sink's deliveries once its name resolved",
               alive=[run], details=run.log)
    run.terminate()
    assert run.wait(60) == 0


# ---- 2. timeouts and TLS failures say which ------------------------------

class Silent:
    """A TCP listener that takes connections and requests but never
    answers (response timeout), or, with full=True, one whose accept
    queue is full so that a connect never completes (connect timeout)."""

    def __init__(self, full=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._stop = False
        if full:
            # Backlog 0 holds one pending connection; the next SYNs are
            # dropped (tcp_abort_on_overflow is 0).
            self.sock.listen(0)
            for _ in range(3):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", self.port))
                self.conns.append(c)
            time.sleep(0.2)
        else:
            self.sock.listen(16)
            self.thread = threading.Thread(target=self._accept, daemon=True)
            self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                pass

    @property
    def url(self):
        return "http://127.0.0.1:%d/in" % self.port

    def close(self):
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


@TRANSPORTS
def test_response_timeout_says_so(mock_kafka, names, sluice, transport):
    srv = Silent()
    try:
        env = {"http_proxy": "http://127.0.0.1:%d" % srv.port} \
            if transport == "curl" else {}
        run = one_sink_run(mock_kafka, names, sluice,
                           {"s": {"url": srv.url, "timeout": "1s"}},
                           env=env)
        run.wait_for_log(r"sink s: .* attempt 1 failed", 30)
        assert re.search(r"attempt 1 failed: response timeout: no (complete "
                         r")?response from 127\.0\.0\.1:%d within 1000 ms"
                         % srv.port, run.log()), run.log()
        run.terminate()
        run.wait(60)
    finally:
        srv.close()


@TRANSPORTS
def test_connect_timeout_says_so(mock_kafka, names, sluice, transport):
    srv = Silent(full=True)
    try:
        env = {"http_proxy": "http://127.0.0.1:%d" % srv.port} \
            if transport == "curl" else {}
        run = one_sink_run(mock_kafka, names, sluice,
                           {"s": {"url": srv.url,
                                  "connect_timeout": "500ms"}},
                           env=env)
        run.wait_for_log(r"sink s: .* attempt 1 failed", 30)
        assert re.search(r"attempt 1 failed: connect timeout: no connection "
                         r"to 127\.0\.0\.1:%d within 500 ms" % srv.port,
                         run.log()), run.log()
        run.terminate()
        run.wait(60)
    finally:
        srv.close()


def make_certs(d):
    """A CA, and server certificates: good (127.0.0.1 by that CA),
    expired, for another name, self-signed, and by an unknown CA. Returns
    name -> (cert path, key path), plus "ca" -> CA file."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(cn, key, issuer, issuer_key, ca=False, san=None,
             start=now - day, end=now + 30 * day):
        b = (x509.CertificateBuilder().subject_name(name(cn))
             .issuer_name(name(issuer)).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                            critical=True))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName(san),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def save(stem, c, key):
        cp, kp = str(d / (stem + ".crt")), str(d / (stem + ".key"))
        with open(cp, "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
        with open(kp, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return cp, kp

    ip = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    ca_key, other_ca_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    ca = cert("hh test CA", ca_key, "hh test CA", ca_key, ca=True)
    out = {"ca": save("ca", ca, ca_key)[0]}
    k = ec.generate_private_key(ec.SECP256R1())
    out["good"] = save("good", cert("127.0.0.1", k, "hh test CA", ca_key,
                                    san=ip), k)
    out["expired"] = save("expired", cert(
        "127.0.0.1", k, "hh test CA", ca_key, san=ip,
        start=now - 30 * day, end=now - day), k)
    out["mismatch"] = save("mismatch", cert(
        "other.example", k, "hh test CA", ca_key,
        san=[x509.DNSName("other.example")]), k)
    out["selfsigned"] = save("selfsigned", cert(
        "127.0.0.1", k, "127.0.0.1", k, san=ip), k)
    out["unknown"] = save("unknown", cert(
        "127.0.0.1", k, "hh other CA", other_ca_key, san=ip), k)
    return out


class TlsServer:
    """Takes TLS handshakes with one certificate, answering 200 to
    whatever request follows (enough for the good certificate)."""

    def __init__(self, cert, key):
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.served = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            try:
                c.settimeout(5)
                s = self.ctx.wrap_socket(c, server_side=True)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.served += 1
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                              b"Connection: close\r\n\r\n")
                s.close()
            except OSError:
                c.close()

    def close(self):
        self._stop = True
        self.thread.join(5)
        self.sock.close()


def test_tls_failures_say_which_check_failed(mock_kafka, names, sluice,
                                             tmp_path):
    certs = make_certs(tmp_path)
    servers = {n: TlsServer(*certs[n]) for n in
               ("good", "expired", "mismatch", "selfsigned", "unknown")}
    try:
        sinks = {n: {"url": "https://127.0.0.1:%d/in" % s.port,
                     "ca_file": certs["ca"]} for n, s in servers.items()}
        run = one_sink_run(mock_kafka, names, sluice, sinks,
                           env={"https_proxy": None, "HTTPS_PROXY": None})
        expect = {
            "expired": "certificate expired",
            "mismatch": "hostname mismatch",
            "selfsigned": "self-signed certificate",
            "unknown": "unknown CA",
        }
        for n, why in expect.items():
            run.wait_for_log(r"sink %s: .* attempt 1 failed" % n, 30)
            assert re.search(
                r"sink %s: .* attempt 1 failed: TLS: certificate of "
                r"127\.0\.0\.1:%d not trusted: %s \(" % (
                    n, servers[n].port, re.escape(why)), run.log()), \
                (n, run.log())
        wait_until(lambda: servers["good"].served >= 1, 30,
                   "the good certificate's delivery", alive=[run])
        assert not re.search(r"sink good: .* failed", run.log()), run.log()
        run.terminate()
        run.wait(60)
    finally:
        for s in servers.values():
            s.close()
