"""kafka-python 3.0 and aiokafka 0.14: admin, produce with keys, headers and codecs, and read
back byte-exact with assigned partitions (no consumer group)."""

import asyncio
import socket
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as AioTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def messages(n, tag):
    return [
        (
            None if i % 4 == 0 else f"{tag}-key-{i}".encode(),
            f"{tag}-value-{i}-".encode() + bytes(range(256)) * (i % 3),
            [("n", str(i).encode()), ("tag", tag.encode())] if i % 2 else [],
        )
        for i in range(n)
    ]


def create_with_kafka_python(broker, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    assert topic in admin.list_topics()
    admin.close()


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_round_trip(broker, topic, codec):
    create_with_kafka_python(broker, topic, 2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec, linger_ms=5)
    sent = {}
    for i, (key, value, headers) in enumerate(messages(200, f"kp{codec}")):
        meta = producer.send(topic, key=key, value=value, headers=headers, partition=i % 2).get(timeout=30)
        sent.setdefault(meta.partition, []).append((meta.offset, key, value, headers))
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(2)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    got = {}
    deadline = time.time() + 30
    while sum(len(v) for v in got.values()) < 200 and time.time() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                got.setdefault(tp.partition, []).append((r.offset, r.key, r.value, list(r.headers)))
    consumer.close()
    assert got == sent


@pytest.mark.parametrize("codec", [None, "gzip"])
def test_aiokafka_round_trip(broker, topic, codec):
    create_with_kafka_python(broker, topic, 2)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec)
        await producer.start()
        sent = {}
        try:
            for i, (key, value, headers) in enumerate(messages(200, "aio")):
                meta = await producer.send_and_wait(topic, key=key, value=value, headers=headers, partition=i % 2)
                sent.setdefault(meta.partition, []).append((meta.offset, key, value, headers))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        got = {}
        try:
            partitions = [AioTopicPartition(topic, p) for p in range(2)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            deadline = time.time() + 30
            while sum(len(v) for v in got.values()) < 200 and time.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        got.setdefault(tp.partition, []).append((r.offset, r.key, r.value, list(r.headers)))
        finally:
            await consumer.stop()
        return sent, got

    sent, got = asyncio.run(run())
    assert got == sent


def test_garbage_on_one_connection_does_not_hurt_others(broker, topic):
    for payload in [b"\x00\x00\x00\x10garbage-garbage!", b"\xff\xff\xff\xff", b"\x7f" * 64, b"\x00\x00\x00\x08\x00\x12\x00"]:
        with socket.create_connection(("127.0.0.1", broker.port)) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                s.recv(1)
            except (socket.timeout, ConnectionResetError):
                pass
    create_with_kafka_python(broker, topic, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    producer.send(topic, value=b"still here").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    assert [r.value for r in consumer] == [b"still here"]
    consumer.close()
    assert "closing connection" in broker.log()
