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


def test_kafka_python_latest_and_by_timestamp(broker, topic):
    create_with_kafka_python(broker, topic, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for i in range(5):
        producer.send(topic, value=f"old-{i}".encode(), partition=0).get(timeout=30)
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(3):
        producer.send(topic, value=f"new-{i}".encode(), partition=0).get(timeout=30)
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign([tp])
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 8}
    found = consumer.offsets_for_times({tp: middle})[tp]
    assert found.offset == 5 and found.timestamp >= middle
    consumer.seek(tp, found.offset)
    got = []
    deadline = time.time() + 20
    while len(got) < 3 and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got += [r.value for r in records]
    assert got == [b"new-0", b"new-1", b"new-2"]
    # From the latest: only what comes next.
    consumer.seek_to_end(tp)
    assert consumer.position(tp) == 8
    producer.send(topic, value=b"tail", partition=0).get(timeout=30)
    producer.close()
    got = []
    deadline = time.time() + 20
    while not got and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got += [(r.offset, r.value) for r in records]
    consumer.close()
    assert got == [(8, b"tail")]


def test_aiokafka_latest_and_by_timestamp(broker, topic):
    create_with_kafka_python(broker, topic, 1)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        tp = AioTopicPartition(topic, 0)
        try:
            for i in range(4):
                await producer.send_and_wait(topic, value=f"old-{i}".encode(), partition=0)
            await asyncio.sleep(0.05)
            middle = int(time.time() * 1000)
            await asyncio.sleep(0.05)
            for i in range(2):
                await producer.send_and_wait(topic, value=f"new-{i}".encode(), partition=0)
            consumer.assign([tp])
            found = (await consumer.offsets_for_times({tp: middle}))[tp]
            assert found.offset == 4
            consumer.seek(tp, found.offset)
            got = []
            deadline = time.time() + 20
            while len(got) < 2 and time.time() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in records]
            assert got == [b"new-0", b"new-1"]
            await consumer.seek_to_end(tp)
            assert await consumer.position(tp) == 6
            await producer.send_and_wait(topic, value=b"tail", partition=0)
            got = []
            deadline = time.time() + 20
            while not got and time.time() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [(r.offset, r.value) for r in records]
            assert got == [(6, b"tail")]
        finally:
            await consumer.stop()
            await producer.stop()

    asyncio.run(run())
