"""Garbage on one connection closes that connection only: the broker keeps serving real
clients on every shard."""

import random
import socket
import struct

from confluent_kafka import OFFSET_BEGINNING, Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from helpers import consume, create_topic


def send_garbage(port, payload):
    """Sends `payload` and waits (up to 1 s) for the broker to close or answer."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(payload)
        s.settimeout(1)
        try:
            s.recv(1 << 16)
        except (socket.timeout, ConnectionResetError):
            pass


def test_garbage_on_one_connection_does_not_hurt_others(broker, topic):
    rng = random.Random(1)
    payloads = [
        rng.randbytes(4096),                            # random bytes
        b"\x00\x00\x00\x10garbage-garbage!",            # a frame that is not a request
        b"\xff\xff\xff\xff",                            # negative length
        b"\x7f" * 64,                                   # absurd length
        struct.pack(">iHhi", 8, 0x7FFF, 0, 1),          # unknown API key
        struct.pack(">ihhi", 10, 0, 99, 1) + b"\x00\x00",  # Produce at an unknown version
        b"\x00\x00\x00\x08\x00\x12\x00",                # truncated, then the peer hangs up
    ] + [rng.randbytes(rng.randrange(1, 200)) for _ in range(20)]
    for port in broker.ports:
        for payload in payloads:
            send_garbage(port, payload)

    # A connection stuck half way through a frame on each shard must not block anyone.
    stuck = []
    for port in broker.ports:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(struct.pack(">i", 1000) + b"\x00\x03\x00")
        stuck.append(s)
    try:
        create_topic(broker, topic, 2)  # one partition on each shard
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for i in range(20):
            producer.produce(topic, key=b"k%d" % i, value=b"still here %d" % i, partition=i % 2,
                             headers=[("i", str(i).encode())])
        assert producer.flush(30) == 0
        got = consume(broker, topic, 2, OFFSET_BEGINNING, 20)
        assert got == {
            p: [(j, b"k%d" % i, b"still here %d" % i, [("i", str(i).encode())])
                for j, i in enumerate(range(p, 20, 2))]
            for p in range(2)
        }

        # A second client library, too.
        kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        meta = kp.send(topic, value=b"from kafka-python", partition=1).get(timeout=30)
        kp.close()
        assert (meta.partition, meta.offset) == (1, 10)
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                 consumer_timeout_ms=10_000)
        consumer.assign([TopicPartition(topic, 1)])
        consumer.seek(TopicPartition(topic, 1), 10)
        assert [(r.offset, r.value) for r in consumer] == [(10, b"from kafka-python")]
        consumer.close()
    finally:
        for s in stuck:
            s.close()
    assert "closing connection" in broker.log()
