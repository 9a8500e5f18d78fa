"""confluent-kafka (librdkafka 2.16): admin, every codec, keys and headers, positions,
idempotence, and kill -9 during an acks=all produce."""

import random
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=15)
    md = admin.list_topics(name, timeout=10)
    leaders = {p.id: p.leader for p in md.topics[name].partitions.values()}
    assert sorted(leaders) == list(range(partitions))
    return leaders


def consume(broker, topic, partitions, start, expected, timeout=30):
    """Reads from `start` on every partition until `expected` messages arrived; returns
    {partition: [(offset, key, value, headers)]} in arrival order."""
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "compat-assign-only",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
    got = {}
    count = 0
    deadline = time.time() + timeout
    while count < expected and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.setdefault(m.partition(), []).append((m.offset(), m.key(), m.value(), m.headers() or []))
        count += 1
    # Anything beyond what was expected shows up too.
    extra_deadline = time.time() + 0.5
    while time.time() < extra_deadline:
        m = consumer.poll(0.1)
        if m is not None and m.error() is None:
            got.setdefault(m.partition(), []).append((m.offset(), m.key(), m.value(), m.headers() or []))
    consumer.close()
    return got


def test_admin_create_spreads_partitions_over_both_shards(broker, topic):
    leaders = create_topic(broker, topic, 4)
    assert set(leaders.values()) == {0, 1}
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    assert sorted(md.brokers) == [0, 1]
    assert {b.port for b in md.brokers.values()} == {broker.port, broker.port + 1}
    # Creating it again is refused.
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    with pytest.raises(Exception, match="TOPIC_ALREADY_EXISTS|already exists"):
        futures[topic].result(timeout=10)
    # Deleting it works and it is gone.
    admin.delete_topics([topic])[topic].result(timeout=10)
    deadline = time.time() + 10
    while topic in admin.list_topics(timeout=10).topics and time.time() < deadline:
        time.sleep(0.1)
    assert topic not in admin.list_topics(timeout=10).topics


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_round_trip_every_codec(broker, topic, codec):
    create_topic(broker, topic, 4)
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "compression.type": codec,
        "acks": "all",
        "linger.ms": 5,
    })
    sent = {}
    acked = []

    def delivered(sent_headers):
        # Delivery reports do not carry headers back: remember the ones sent.
        def on_delivery(err, msg):
            assert err is None, err
            acked.append((msg.partition(), msg.offset(), msg.key(), msg.value(), sent_headers))
        return on_delivery

    rng = random.Random(7)
    for i in range(300):
        key = None if i % 3 == 0 else f"key-{i % 11}".encode()
        if i % 60 == 0:
            value = None
        elif i % 60 == 1:
            value = b""
        elif i % 60 == 2:
            value = bytes(rng.getrandbits(8) for _ in range(100_000))
        else:
            value = f"{codec}-{i}-".encode() + b"x" * (i % 50)
        headers = [("h1", bytes([i % 256, 0, 255])), ("empty", None)] if i % 2 == 0 else None
        kwargs = {"key": key, "value": value, "headers": headers, "on_delivery": delivered(headers or [])}
        if key is None:
            kwargs["partition"] = i % 4
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(acked) == 300
    for p, offset, key, value, headers in acked:
        sent.setdefault(p, []).append((offset, key, value, headers))
    for p in sent:
        sent[p].sort()
    assert len(sent) == 4
    got = consume(broker, topic, 4, OFFSET_BEGINNING, 300)
    assert got == sent


def test_from_end_and_from_timestamp(broker, topic):
    create_topic(broker, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    for i in range(10):
        producer.produce(topic, value=f"before-{i}".encode(), partition=i % 2)
    producer.flush(10)
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(6):
        producer.produce(topic, value=f"after-{i}".encode(), partition=i % 2)
    producer.flush(10)

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-assign-only",
                         "enable.auto.commit": False})
    found = consumer.offsets_for_times([TopicPartition(topic, p, middle) for p in range(2)], timeout=10)
    assert [tp.offset for tp in found] == [5, 5]
    consumer.close()
    got = consume(broker, topic, 2, 5, 6)
    assert sorted(v for msgs in got.values() for _, _, v, _ in msgs) == sorted(f"after-{i}".encode() for i in range(6))

    # From the end: only what is produced after the consumer has its position.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-assign-only",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    # Let the consumer resolve the end offset (8) before producing.
    deadline = time.time() + 2
    while time.time() < deadline:
        assert consumer.poll(0.1) is None
    producer.produce(topic, value=b"tail", partition=0)
    producer.flush(10)
    m = None
    deadline = time.time() + 10
    while m is None and time.time() < deadline:
        m = consumer.poll(0.2)
    assert m is not None and m.error() is None and m.value() == b"tail" and m.offset() == 8
    consumer.close()


def test_idempotent_producer_no_duplicates_in_order(broker, topic):
    create_topic(broker, topic, 4)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2})
    errors = []
    for i in range(20_000):
        producer.produce(topic, value=str(i).encode(), partition=i % 4,
                         on_delivery=lambda err, msg: err and errors.append(err))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    got = consume(broker, topic, 4, OFFSET_BEGINNING, 20_000)
    for p, msgs in got.items():
        numbers = [int(v) for _, _, v, _ in msgs]
        assert numbers == list(range(p, 20_000, 4)), f"partition {p}"
        assert [o for o, _, _, _ in msgs] == list(range(5_000))


def test_kill_9_during_acks_all_produce_loses_no_acknowledged_message(broker, topic):
    create_topic(broker, topic, 4)
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": 60_000,
    })
    acked = {}

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())

    restarted = []

    def crash_and_restart():
        while len(acked) < 2_000:
            time.sleep(0.005)
        broker.kill9()
        try:
            broker.start()
            restarted.append(True)
        except Exception as err:  # reported by the main thread
            restarted.append(err)

    crasher = threading.Thread(target=crash_and_restart)
    crasher.start()
    total = 30_000
    for i in range(total):
        while True:
            try:
                producer.produce(topic, value=f"m{i}".encode(), partition=i % 4, on_delivery=on_delivery)
                break
            except BufferError:
                assert restarted in ([], [True]), restarted
                producer.poll(0.05)
        producer.poll(0)
    # Delivery callbacks run only inside poll(): keep serving them while the crash happens.
    while crasher.is_alive():
        producer.poll(0.05)
    crasher.join()
    assert restarted == [True], restarted
    assert producer.flush(90) == 0
    assert len(acked) > 2_000
    got = consume(broker, topic, 4, OFFSET_BEGINNING, len(acked), timeout=60)
    seen = {}
    for p, msgs in got.items():
        for offset, _, value, _ in msgs:
            assert value not in seen, f"{value} appears twice"
            seen[value] = (p, offset)
    missing = [v for v in acked if seen.get(v) != acked[v]]
    assert missing == [], f"{len(missing)} acknowledged messages missing or moved, e.g. {missing[:5]}"


def test_sigterm_then_restart_keeps_everything(broker, topic):
    create_topic(broker, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(1000):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    assert broker.terminate() == 0
    assert "stopped" in broker.log()
    broker.start()
    got = consume(broker, topic, 2, OFFSET_BEGINNING, 1000)
    assert sum(len(v) for v in got.values()) == 1000
    for p, msgs in got.items():
        assert [v for _, _, v, _ in msgs] == [f"v{i}".encode() for i in range(p, 1000, 2)]
