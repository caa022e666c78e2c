#!/usr/bin/env python3
"""otlp_recorder -- an OTLP/HTTP JSON trace receiver for sluice's tests.

    r = OtlpRecorder(port=0); r.start()
    r.url            "http://127.0.0.1:PORT/v1/traces"
    r.spans()        every span received, flat dicts:
                     trace_id, span_id, parent_span_id (None for a root),
                     name, kind, start_ns, end_ns, attributes (key -> str or
                     int), status_code, status_message, resource (key ->
                     value)
    r.requests       export requests received (answered or not)
    r.span_count     spans received (count_only=True keeps only this)
    r.fail_with(503) answer every request with 503 (None: 200 again)
    r.delay(2.5)     wait that long before answering (0: no delay)
    r.stop()

A request whose body is not OTLP JSON is answered 400 and counted in
r.bad_requests. GET / answers {"spans": N, "requests": M}. As a script:
`otlp_recorder.py --port N` prints each span as a JSON line;
`--count-only` (for the benchmark) counts spans without decoding them;
`--self-test` checks the class against itself.
"""

import argparse
import http.server
import json
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request


def _value(v):
    """An OTLP AnyValue as a Python value."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])  # a string in OTLP JSON
    if "boolValue" in v:
        return v["boolValue"]
    if "doubleValue" in v:
        return v["doubleValue"]
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    raise ValueError("unknown AnyValue %r" % (v,))


def _attrs(items):
    return {a["key"]: _value(a["value"]) for a in items or []}


def flatten(body):
    """The spans of one ExportTraceServiceRequest (a dict) as flat dicts;
    raises ValueError (KeyError, TypeError) on a malformed one."""
    out = []
    for rs in body["resourceSpans"]:
        resource = _attrs(rs.get("resource", {}).get("attributes"))
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                status = s.get("status", {})
                out.append({
                    "trace_id": s["traceId"],
                    "span_id": s["spanId"],
                    "parent_span_id": s.get("parentSpanId") or None,
                    "name": s["name"],
                    "kind": s.get("kind", 0),
                    "start_ns": int(s["startTimeUnixNano"]),
                    "end_ns": int(s["endTimeUnixNano"]),
                    "attributes": _attrs(s.get("attributes")),
                    "status_code": status.get("code", 0),
                    "status_message": status.get("message"),
                    "resource": resource,
                })
    return out


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class OtlpRecorder:
    def __init__(self, port=0, host="127.0.0.1", echo=None, count_only=False):
        self._lock = threading.Lock()
        self._spans = []
        self.span_count = 0
        self._count_only = count_only
        self._status = None
        self._delay = 0.0
        self.requests = 0
        self.bad_requests = 0
        self._echo = echo
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the
            # body waits for the client's delayed ACK (40 ms a request).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                recorder._take(self, data)

            def do_GET(self):
                with recorder._lock:
                    body = json.dumps({"spans": recorder.span_count,
                                       "requests": recorder.requests})
                body = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server((host, port), Handler)
        self.port = self._server.server_address[1]
        self.url = "http://%s:%d/v1/traces" % (host, self.port)
        self._thread = None

    def _take(self, handler, data):
        with self._lock:
            self.requests += 1
            status, delay = self._status, self._delay
        if delay:
            time.sleep(delay)
        if status is None and self._count_only:
            # parentSpanId has a capital S: this counts spans only.
            with self._lock:
                self.span_count += data.count(b'"spanId"')
            status = 200
        elif status is None:
            try:
                spans = flatten(json.loads(data))
            except (ValueError, KeyError, TypeError):
                with self._lock:
                    self.bad_requests += 1
                status = 400
            else:
                with self._lock:
                    self._spans.extend(spans)
                    self.span_count += len(spans)
                if self._echo is not None:
                    for s in spans:
                        self._echo.write(json.dumps(s) + "\n")
                    self._echo.flush()
                status = 200
        body = b"{}"
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def spans(self):
        with self._lock:
            return list(self._spans)

    def fail_with(self, status):
        with self._lock:
            self._status = status

    def delay(self, seconds):
        with self._lock:
            self._delay = seconds


def _self_test():
    r = OtlpRecorder().start()
    body = {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "t"}}]},
        "scopeSpans": [{"scope": {"name": "x"}, "spans": [{
            "traceId": "1" * 32, "spanId": "2" * 16, "name": "POST",
            "kind": 3, "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            "attributes": [{"key": "n", "value": {"intValue": "7"}}],
            "status": {"code": 2, "message": "m"}}]}]}]}

    def post(data):
        req = urllib.request.Request(r.url, data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post(json.dumps(body).encode()) == 200
    assert post(b"nope") == 400 and r.bad_requests == 1
    r.fail_with(503)
    assert post(json.dumps(body).encode()) == 503
    (s,) = r.spans()
    assert s["attributes"] == {"n": 7} and s["parent_span_id"] is None
    assert s["status_code"] == 2 and s["resource"]["service.name"] == "t"
    assert r.requests == 3
    r.stop()
    print("otlp_recorder: self-test passed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=4318)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--count-only", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        _self_test()
        return
    r = OtlpRecorder(port=args.port,
                     echo=None if args.count_only else sys.stdout,
                     count_only=args.count_only).start()
    print("listening on %s" % r.url, file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        r.stop()


if __name__ == "__main__":
    main()
