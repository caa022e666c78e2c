#!/usr/bin/python3
"""Sample-order generator for the demo, the tests and the benchmark.

Produces deterministic JSON orders (~260 bytes each) keyed by tenant_id, so
tests can recompute what was sent: order ``i`` is ``make_order(i, tenants,
seed=seed)``, with order_id ``ord-%09d % i``, tenant ``tenant-%02d %
(i % tenants)`` and ``sequence`` 2**53 + 1 + i (not representable as a
double, on purpose).

Import ``make_order`` / ``produce`` or run it:

    gen_orders.py --bootstrap B --topic T --count N [--tenants 50]
                  [--seed 1] [--start 0] [--rate MSGS_PER_S]

Pure stdlib + confluent_kafka.
"""

import argparse
import sys
import time

from confluent_kafka import KafkaException, Producer

BIG_SEQUENCE_BASE = 9007199254740993  # 2**53 + 1
CREATED_AT_BASE = 1795975200  # 2026-11-29T18:00:00Z
CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP", "CHF")
STATUSES = ("new", "new", "new", "paid", "cancelled")
_MASK64 = (1 << 64) - 1

PRODUCER_CONFIG = {
    "compression.type": "lz4",
    "linger.ms": 50,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 1000000,
}


def tenant_id(i, tenants=50):
    """Tenant (and message key) of order ``i``: round-robin over tenants."""
    width = max(2, len(str(tenants - 1)))
    return "tenant-%0*d" % (width, i % tenants)


def order_id(i):
    return "ord-%09d" % i


class OrderRng:
    """Per-order splitmix64 stream: cheaper to set up than random.Random
    (which matters at 200k orders) and makes order i independent of the
    orders produced before it."""

    __slots__ = ("state",)

    def __init__(self, seed, i):
        self.state = ((seed & 0xFFFFFF) << 40) ^ i

    def randint(self, a, b):
        x = self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return a + (x ^ (x >> 31)) % (b - a + 1)

    def choice(self, seq):
        return seq[self.randint(0, len(seq) - 1)]


def _money(cents):
    # Formatted from integer cents so the JSON always has two decimals.
    return "%d.%02d" % (cents // 100, cents % 100)


def make_order(i, tenants=50, rng=None, seed=1):
    """Return order ``i`` as compact JSON bytes (~260 bytes).

    ``rng`` (anything with randint/choice, e.g. random.Random) drives the
    random-looking fields; by default ``OrderRng(seed, i)``, so the same
    (i, tenants, seed) always gives the same bytes. Ids, tenant, sequence
    and created_at depend on ``i`` only.
    """
    if rng is None:
        rng = OrderRng(seed, i)
    items = []
    total = 0
    for _ in range(rng.randint(1, 2)):
        qty = rng.randint(1, 5)
        price = rng.randint(199, 19999)
        total += qty * price
        items.append('{"sku":"SKU-%05d","qty":%d,"price":%s}'
                     % (rng.randint(0, 99999), qty, _money(price)))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                            time.gmtime(CREATED_AT_BASE + i))
    # Built by hand: every string is plain ASCII from this module, and
    # json.dumps would print 71.2 instead of 71.20.
    return ('{"order_id":"%s","tenant_id":"%s","customer_id":"cust-%06d",'
            '"sequence":%d,"amount":%s,"currency":"%s","items":[%s],'
            '"created_at":"%s","status":"%s"}'
            % (order_id(i), tenant_id(i, tenants), rng.randint(0, 999999),
               BIG_SEQUENCE_BASE + i, _money(total), rng.choice(CURRENCIES),
               ",".join(items), created, rng.choice(STATUSES))).encode()


def produce(bootstrap, topic, count, tenants=50, seed=1, start=0,
            headers=None, rate=0, config=None):
    """Produce orders ``start .. start+count-1`` to ``topic``.

    Key = tenant_id(i), value = make_order(i, tenants, seed=seed), header
    ``message-id: <order_id>`` plus ``headers`` (list of (name, value)
    pairs or a dict) on every message. ``rate`` > 0 paces production at
    that many messages per second; ``config`` overrides/extends the
    producer config. Flushes, raises RuntimeError if any delivery failed,
    and returns the number of messages produced (an int: keys, ids and
    bodies are recomputable with tenant_id(), order_id(), make_order()).
    """
    extra = list(headers.items()) if isinstance(headers, dict) else \
        list(headers or [])
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)

    conf = dict(PRODUCER_CONFIG)
    conf["bootstrap.servers"] = bootstrap
    # Only failures call back into Python: a callback per message would
    # cost more than the produce itself.
    conf["delivery.report.only.error"] = True
    conf["on_delivery"] = on_delivery
    conf.update(config or {})
    producer = Producer(conf)
    t0 = time.monotonic()

    for n in range(count):
        i = start + n
        if rate > 0:
            ahead = t0 + n / rate - time.monotonic()
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        oid = order_id(i)
        value = make_order(i, tenants, seed=seed)
        hdrs = [("message-id", oid.encode())] + extra
        while True:
            try:
                producer.produce(topic, value, tenant_id(i, tenants),
                                 headers=hdrs)
                break
            except BufferError:
                # Local queue full: let deliveries drain, then retry.
                producer.poll(0.1)
        if n % 10000 == 0:
            producer.poll(0)

    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError("%d of %d orders not delivered after 120 s"
                           % (remaining, count))
    if failures:
        raise RuntimeError("%d of %d orders failed: %s"
                           % (len(failures), count, failures[0]))
    return count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--tenants", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0,
                    help="messages per second, 0 = as fast as possible")
    args = ap.parse_args(argv)
    if args.count < 0 or args.tenants < 1 or args.start < 0 or args.rate < 0:
        ap.error("--count, --start and --rate must be >= 0, --tenants >= 1")

    t0 = time.monotonic()
    try:
        n = produce(args.bootstrap, args.topic, args.count,
                    tenants=args.tenants, seed=args.seed, start=args.start,
                    rate=args.rate)
    except (RuntimeError, KafkaException) as e:
        print("gen_orders: %s" % e, file=sys.stderr)
        return 1
    dt = time.monotonic() - t0
    print("gen_orders: produced %d orders to %s in %.2fs (%.0f msg/s)"
          % (n, args.topic, dt, n / dt if dt > 0 else 0.0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
