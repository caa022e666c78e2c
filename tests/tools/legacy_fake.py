#!/usr/bin/env python3
"""legacy_fake.py -- the legacy synchronous endpoint of a migration test.

It stands for the service being migrated away from: each POST of an order
"applies" it to four downstream systems at once (HTTP calls to the URLs
given), then answers. For every call it writes one outcome line
(docs/outcomes.md) to --outcomes: the few lines of code a legacy service
adds so that `sluice reconcile` can compare it with the pipeline.

    legacy_fake.py --port-file F --outcomes O.ndjson \
        --sink crm=http://127.0.0.1:1/crm --sink billing=... ...

What each system gets mirrors tests/integration/migration/*.lua: the
pipeline that replaces this service must send the same.
"""

import argparse
import datetime
import hashlib
import http.client
import http.server
import json
import threading
import urllib.parse


def shape(sink, order):
    """The body the legacy code sends each system, as JSON."""
    if sink == "billing":
        return {"invoice_ref": order["order_id"],
                "amount_cents": order["amount_cents"]}
    if sink == "crm":
        return {"customer": order["customer_id"],
                "last_order": order["order_id"]}
    if sink == "search":
        return {"id": order["order_id"], "tenant": order["tenant_id"]}
    return order  # analytics: the order as it came


class State:
    def __init__(self, sinks, outcomes):
        self.sinks = sinks  # name -> (host, port, path)
        self.out = open(outcomes, "a", buffering=1)
        self.lock = threading.Lock()

    def call(self, name, key, order):
        host, port, path = self.sinks[name]
        body = json.dumps(shape(name, order), separators=(",", ":")).encode()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("POST", path, body=body,
                         headers={"Content-Type": "application/json",
                                  "Idempotency-Key": key})
            status = conn.getresponse().status
        finally:
            conn.close()
        now = datetime.datetime.now(datetime.timezone.utc)
        line = {"v": 1,
                "ts": now.isoformat(timespec="milliseconds")
                         .replace("+00:00", "Z"),
                "pipeline": "legacy", "sink": name, "key": key,
                "outcome": "delivered" if 200 <= status < 300 else
                           "dead_lettered",
                "method": "POST", "path": path, "status": status,
                "attempts": 1,
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body": json.loads(body)}
        with self.lock:
            self.out.write(json.dumps(line) + "\n")
        return status


def handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            key = self.headers.get("Idempotency-Key", "")
            try:
                order = json.loads(body)
                statuses = [state.call(s, key, order) for s in state.sinks]
                code = 200 if all(200 <= s < 300 for s in statuses) else 502
            except (ValueError, KeyError, OSError):
                code = 400
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--outcomes", required=True)
    ap.add_argument("--sink", action="append", default=[],
                    help="NAME=URL, once per downstream system")
    a = ap.parse_args()
    sinks = {}
    for spec in a.sink:
        name, _, url = spec.partition("=")
        u = urllib.parse.urlsplit(url)
        sinks[name] = (u.hostname, u.port, u.path or "/")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port),
                                             handler(State(sinks, a.outcomes)))
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(a.port_file + ".tmp", a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
