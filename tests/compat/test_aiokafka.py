"""aiokafka 0.14 (asyncio, codecs through cramjam): produce keyed messages with headers,
read back byte-exact with assigned partitions (no consumer group)."""

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from helpers import create_topic

PARTITIONS = 4


def messages(n, tag):
    out = []
    for i in range(n):
        key = None if i % 4 == 0 else f"{tag}-key-{i % 9}".encode()
        value = b"" if i % 25 == 1 else f"{tag}-value-{i}-".encode() + bytes(range(256)) * (i % 3)
        headers = [("n", str(i).encode()), ("tag", tag.encode())] if i % 2 else []
        out.append((key, value, headers))
    return out


async def produce_and_read(broker, topic, codec, idempotent):
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                                enable_idempotence=idempotent, linger_ms=5)
    await producer.start()
    sent_messages = messages(300, f"aio-{codec}")
    results = []
    try:
        pending = []
        for i, (key, value, headers) in enumerate(sent_messages):
            if i < 100:
                # One at a time ...
                results.append(await producer.send_and_wait(topic, key=key, value=value, headers=headers))
            else:
                # ... then batched.
                pending.append(await producer.send(topic, key=key, value=value, headers=headers))
        results += await asyncio.wait_for(asyncio.gather(*pending), 30)
    finally:
        await producer.stop()
    sent = {}
    for i, meta in enumerate(results):
        sent.setdefault(meta.partition, []).append((meta.offset, i) + sent_messages[i])

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    got = {}

    def take(batch):
        for tp, records in batch.items():
            for r in records:
                got.setdefault(tp.partition, []).append((r.offset, r.key, r.value, list(r.headers)))

    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.time() + 30
        while sum(len(v) for v in got.values()) < len(sent_messages) and time.time() < deadline:
            take(await consumer.getmany(timeout_ms=500))
        take(await consumer.getmany(timeout_ms=500))  # anything beyond the expected shows up too
    finally:
        await consumer.stop()
    return sent, got


@pytest.mark.parametrize("codec,idempotent", [
    (None, False), ("gzip", False), ("snappy", False), ("lz4", False), ("zstd", False), ("gzip", True),
])
def test_round_trip(broker, topic, codec, idempotent):
    leaders = create_topic(broker, topic, PARTITIONS)
    assert set(leaders.values()) == {0, 1}
    sent, got = asyncio.run(produce_and_read(broker, topic, codec, idempotent))
    assert len(sent) >= 2, sent.keys()
    expected = {}
    for p, msgs in sent.items():
        msgs.sort()
        assert [o for o, *_ in msgs] == list(range(len(msgs))), f"partition {p}: offsets not dense"
        assert [i for _, i, *_ in msgs] == sorted(i for _, i, *_ in msgs), f"partition {p}: send order lost"
        expected[p] = [(o, k, v, h) for o, _, k, v, h in msgs]
    assert got == expected
