#!/usr/bin/python3
"""Smoke test for the test broker started by tests/kafka/kafka.sh.

    smoke.py BOOTSTRAP produce   create an 8-partition topic, produce N
                                 messages, consume them all in a group,
                                 commit, check committed() offsets
    smoke.py BOOTSTRAP verify    (e.g. after `kafka.sh restart`) the topic
                                 still holds N messages and the group's
                                 committed offsets survived

Exit 0 on success.  Needs python3-confluent-kafka.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "kafka-sh-smoke"
GROUP = "kafka-sh-smoke-group"
PARTS = 8
N = 10_000


def consume_all(boot, group, expect, timeout=60):
    c = Consumer({"bootstrap.servers": boot, "group.id": group,
                  "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([TOPIC])
    seen = set()
    deadline = time.monotonic() + timeout
    while len(seen) < expect and time.monotonic() < deadline:
        for m in c.consume(1000, 1.0):
            if m.error():
                raise SystemExit("consume error: %s" % m.error())
            seen.add(m.value())
    return c, seen


def watermarks(boot):
    c = Consumer({"bootstrap.servers": boot, "group.id": "wm-" + uuid.uuid4().hex})
    hw = {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), 10)[1]
          for p in range(PARTS)}
    c.close()
    return hw


def check_committed(c, hw):
    tps = [TopicPartition(TOPIC, p) for p in range(PARTS)]
    got = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    if got != hw:
        raise SystemExit("committed %s != high watermarks %s" % (got, hw))


def produce(boot):
    a = AdminClient({"bootstrap.servers": boot})
    fs = a.create_topics([NewTopic(TOPIC, PARTS, 1)])
    fs[TOPIC].result(30)
    md = a.list_topics(TOPIC, timeout=10)
    assert len(md.topics[TOPIC].partitions) == PARTS, md.topics[TOPIC]

    t0 = time.monotonic()
    p = Producer({"bootstrap.servers": boot, "linger.ms": 5, "acks": "all"})
    errs = []
    for i in range(N):
        p.produce(TOPIC, key=str(i).encode(), value=b"msg-%d" % i,
                  on_delivery=lambda e, m: e and errs.append(e))
        p.poll(0)
    left = p.flush(30)
    if left or errs:
        raise SystemExit("produce: %d undelivered, errors %s" % (left, errs[:3]))
    t1 = time.monotonic()

    c, seen = consume_all(boot, GROUP, N)
    if len(seen) != N:
        raise SystemExit("consumed %d/%d distinct messages" % (len(seen), N))
    c.commit(asynchronous=False)
    t2 = time.monotonic()
    hw = watermarks(boot)
    if sum(hw.values()) != N or 0 in hw.values():
        raise SystemExit("bad watermarks %s" % hw)
    check_committed(c, hw)
    c.close()
    print("produce %d in %.2fs, consume+commit in %.2fs, committed %s"
          % (N, t1 - t0, t2 - t1, hw))


def verify(boot):
    hw = watermarks(boot)
    if sum(hw.values()) != N:
        raise SystemExit("after restart: watermarks %s (want %d)" % (hw, N))
    # committed offsets survived
    c = Consumer({"bootstrap.servers": boot, "group.id": GROUP})
    check_committed(c, hw)
    c.close()
    # data survived: a fresh group reads everything again
    c, seen = consume_all(boot, "fresh-" + uuid.uuid4().hex, N)
    c.close()
    if len(seen) != N:
        raise SystemExit("after restart: consumed %d/%d" % (len(seen), N))
    print("verify: %d messages and committed offsets intact" % N)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("produce", "verify"):
        raise SystemExit(__doc__)
    {"produce": produce, "verify": verify}[sys.argv[2]](sys.argv[1])
