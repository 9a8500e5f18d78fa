"""Helpers shared by the real-client tests (imported by name: pytest puts this directory on
sys.path)."""

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(broker, name, partitions):
    """Creates `name` with confluent-kafka's AdminClient and waits until metadata shows every
    partition with a leader; returns {partition: leader broker id}."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=15)
    deadline = time.time() + 15
    while True:
        md = admin.list_topics(name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            break
        assert time.time() < deadline, f"metadata for {name}: {t and t.partitions}"
        time.sleep(0.1)
    leaders = {p.id: p.leader for p in t.partitions.values()}
    assert sorted(leaders) == list(range(partitions))
    return leaders


def consumer_config(broker, **extra):
    # librdkafka wants a group.id even for assign(); nothing here joins or commits.
    return {
        "bootstrap.servers": broker.bootstrap,
        "group.id": "compat-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        **extra,
    }


def consume(broker, topic, partitions, start, expected, timeout=30, settle=0.5):
    """confluent-kafka: reads from offset `start` (or OFFSET_BEGINNING / OFFSET_END) on every
    partition until `expected` messages arrived, then `settle` seconds more so that any
    message beyond those shows up too. Returns {partition: [(offset, key, value, headers)]}
    in arrival order (headers as a list of (name, value) tuples; [] if none)."""
    if isinstance(partitions, int):
        partitions = range(partitions)
    consumer = Consumer(consumer_config(broker))
    consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    got = {}
    count = 0

    def take(m):
        nonlocal count
        assert m.error() is None, m.error()
        got.setdefault(m.partition(), []).append((m.offset(), m.key(), m.value(), m.headers() or []))
        count += 1

    try:
        deadline = time.time() + timeout
        while count < expected and time.time() < deadline:
            m = consumer.poll(0.2)
            if m is not None:
                take(m)
        settle_until = time.time() + settle
        while time.time() < settle_until:
            m = consumer.poll(0.1)
            if m is not None:
                take(m)
    finally:
        consumer.close()
    return got
