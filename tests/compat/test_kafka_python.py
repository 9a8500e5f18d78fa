"""kafka-python 3.0 (pure Python, idempotent by default): admin, produce with keys, headers
and every codec, read back byte-exact with assigned partitions (no consumer group)."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

PARTITIONS = 4


def messages(n, tag):
    """(key, value, headers): keyed and unkeyed, empty and binary values, some headers."""
    out = []
    for i in range(n):
        key = None if i % 4 == 0 else f"{tag}-key-{i % 9}".encode()
        value = b"" if i % 25 == 1 else f"{tag}-value-{i}-".encode() + bytes(range(256)) * (i % 3)
        headers = [("n", str(i).encode()), ("tag", tag.encode()), ("empty", b"")] if i % 2 else []
        out.append((key, value, headers))
    return out


def create_topic(broker, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        [desc] = admin.describe_topics([topic])
        assert desc["error_code"] == 0, desc
        leaders = {p["partition_index"]: p["leader_id"] for p in desc["partitions"]}
        assert sorted(leaders) == list(range(partitions))
        return leaders
    finally:
        admin.close()


def read_all(broker, topic, partitions, expected, timeout=30):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {}

    def take(batch):
        for tp, records in batch.items():
            for r in records:
                got.setdefault(tp.partition, []).append((r.offset, r.key, r.value, list(r.headers)))

    try:
        deadline = time.time() + timeout
        while sum(len(v) for v in got.values()) < expected and time.time() < deadline:
            take(consumer.poll(timeout_ms=500))
        take(consumer.poll(timeout_ms=500))  # anything beyond the expected shows up too
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_round_trip(broker, topic, codec):
    leaders = create_topic(broker, topic, PARTITIONS)
    assert set(leaders.values()) == {0, 1}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec, linger_ms=5)
    sent_messages = messages(300, f"kp-{codec}")
    futures = []
    for i, (key, value, headers) in enumerate(sent_messages):
        # Batched sends, and every 50th one waited for on its own.
        future = producer.send(topic, key=key, value=value, headers=headers)
        if i % 50 == 0:
            future.get(timeout=30)
        futures.append(future)
    producer.flush(timeout=30)
    sent = {}
    for i, future in enumerate(futures):
        meta = future.get(timeout=30)
        sent.setdefault(meta.partition, []).append((meta.offset, i) + sent_messages[i])
    producer.close()
    assert len(sent) >= 2, sent.keys()
    expected = {}
    for p, msgs in sent.items():
        msgs.sort()
        assert [o for o, *_ in msgs] == list(range(len(msgs))), f"partition {p}: offsets not dense"
        assert [i for _, i, *_ in msgs] == sorted(i for _, i, *_ in msgs), f"partition {p}: send order lost"
        expected[p] = [(o, k, v, h) for o, _, k, v, h in msgs]
    assert read_all(broker, topic, PARTITIONS, len(sent_messages)) == expected
