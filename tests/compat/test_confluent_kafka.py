"""confluent-kafka (librdkafka 2.16): admin, every codec, keys and headers, positions,
idempotence, and kill -9 during an acks=all produce."""

import json
import random
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import consume, consumer_config, create_topic


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
    """Keyed and unkeyed messages, with and without headers, null / empty / 100 KiB binary
    values, on 4 partitions over both shards: read back byte-exact, in send order per
    partition, each exactly once."""
    leaders = create_topic(broker, topic, 4)
    assert set(leaders.values()) == {0, 1}
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "compression.type": codec,
        "acks": "all",
        "linger.ms": 5,
    })
    total = 300
    acked = []
    errors = []

    def delivered(index, sent_headers):
        # Delivery reports do not carry headers back: remember the ones sent.
        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
                return
            acked.append((msg.partition(), msg.offset(), index, msg.key(), msg.value(), sent_headers))
        return on_delivery

    rng = random.Random(codec)
    produced = []
    for i in range(total):
        key = None if i % 3 == 0 else f"key-{i % 11}".encode()
        if i % 60 == 0:
            value = None
        elif i % 60 == 1:
            value = b""
        elif i % 60 == 2:
            value = rng.randbytes(100 * 1024)
        else:
            value = f"{codec}-{i}-".encode() + bytes(rng.randrange(256) for _ in range(i % 50))
        headers = [("h1", bytes([i % 256, 0, 255])), ("empty", None), ("h1", b"again")] if i % 2 == 0 else None
        kwargs = {"key": key, "value": value, "headers": headers, "on_delivery": delivered(i, headers or [])}
        if key is None and i % 2 == 0:
            kwargs["partition"] = i % 4  # the rest of the unkeyed ones go where librdkafka likes
        producer.produce(topic, **kwargs)
        produced.append((key, value, headers or []))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    assert len(acked) == total
    assert sorted(index for _, _, index, _, _, _ in acked) == list(range(total))
    sent = {}
    for p, offset, index, key, value, headers in sorted(acked):
        assert (key, value, headers) == produced[index]
        sent.setdefault(p, []).append((offset, index, key, value, headers))
    assert set(sent) == {0, 1, 2, 3}
    for p, msgs in sent.items():
        assert [o for o, *_ in msgs] == list(range(len(msgs))), f"partition {p}: offsets not dense"
        assert [i for _, i, *_ in msgs] == sorted(i for _, i, *_ in msgs), f"partition {p}: send order lost"
    got = consume(broker, topic, 4, OFFSET_BEGINNING, total)
    assert got == {p: [(o, k, v, h) for o, _, k, v, h in msgs] for p, msgs in sent.items()}


def test_from_end_and_from_timestamp(broker, topic):
    create_topic(broker, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    # Explicit create timestamps: 10 messages at t0, 6 at t0 + 1000.
    t0 = int(time.time() * 1000) - 60_000
    for i in range(10):
        producer.produce(topic, value=f"before-{i}".encode(), partition=i % 2, timestamp=t0)
    assert producer.flush(10) == 0
    for i in range(6):
        producer.produce(topic, value=f"after-{i}".encode(), partition=i % 2, timestamp=t0 + 1000)
    assert producer.flush(10) == 0

    consumer = Consumer(consumer_config(broker))
    found = consumer.offsets_for_times([TopicPartition(topic, p, t0 + 1) for p in range(2)], timeout=10)
    assert [(tp.partition, tp.offset, tp.error) for tp in found] == [(0, 5, None), (1, 5, None)]
    found = consumer.offsets_for_times([TopicPartition(topic, p, t0) for p in range(2)], timeout=10)
    assert [tp.offset for tp in found] == [0, 0]
    # After the last timestamp: no such offset (-1, i.e. the end).
    found = consumer.offsets_for_times([TopicPartition(topic, p, t0 + 2000) for p in range(2)], timeout=10)
    assert [tp.offset for tp in found] == [-1, -1]
    low_high = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(2)]
    assert low_high == [(0, 8), (0, 8)]
    consumer.close()

    got = consume(broker, topic, 2, 5, 6)
    assert got == {
        p: [(5 + j, None, f"after-{i}".encode(), []) for j, i in enumerate(range(p, 6, 2))]
        for p in range(2)
    }

    # From the end: only what is produced after the consumer has its position. librdkafka's
    # statistics tell when both partitions resolved the end (8) and are fetching from it.
    fetching = {}

    def on_stats(text):
        parts = json.loads(text)["topics"].get(topic, {}).get("partitions", {})
        for p in range(2):
            st = parts.get(str(p))
            if st is not None:
                fetching[p] = (st["fetch_state"], st["next_offset"])

    consumer = Consumer(consumer_config(broker, **{"statistics.interval.ms": 100, "stats_cb": on_stats}))
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(2)])
    deadline = time.time() + 30
    while fetching != {0: ("active", 8), 1: ("active", 8)}:
        assert consumer.poll(0.1) is None
        assert time.time() < deadline, fetching
    for p in range(2):
        producer.produce(topic, value=f"tail-{p}".encode(), partition=p)
    assert producer.flush(10) == 0
    got = []
    deadline = time.time() + 30
    while len(got) < 2 and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset(), m.value()))
    extra = consumer.poll(0.5)
    consumer.close()
    assert sorted(got) == [(0, 8, b"tail-0"), (1, 8, b"tail-1")]
    assert extra is None


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
    errors = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    total = 30_000
    crash_after_acks = 2_000
    crashed_at = None  # index of the first message produced after the kill
    restarted = False

    def produce(i):
        while True:
            try:
                producer.produce(topic, value=f"m{i}".encode(), partition=i % 4, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.05)

    for i in range(total):
        if crashed_at is None and i == 10_000:
            # Keep the rest back until the crash has happened.
            deadline = time.time() + 60
            while len(acked) < crash_after_acks:
                assert time.time() < deadline, f"only {len(acked)} acknowledged, errors {errors[:5]}"
                producer.poll(0.05)
        if crashed_at is None and len(acked) >= crash_after_acks:
            # Mid-stream: requests in flight, more queued; 5,000 more are produced while it is down.
            broker.kill9()
            crashed_at = i
            acked_before_crash = dict(acked)
        elif crashed_at is not None and not restarted and i == crashed_at + 5_000:
            broker.start()
            restarted = True
        produce(i)
        producer.poll(0)
    assert restarted
    print(f"killed after {crashed_at} produced, {len(acked_before_crash)} acknowledged")
    assert len(acked_before_crash) < crashed_at
    assert producer.flush(90) == 0
    # The idempotent producer retries through the crash: every message ends up acknowledged.
    assert errors == []
    assert len(acked) == total
    got = consume(broker, topic, 4, OFFSET_BEGINNING, len(acked), timeout=60)
    seen = {}
    for p, msgs in got.items():
        for offset, _, value, _ in msgs:
            assert value not in seen, f"{value} appears twice"
            seen[value] = (p, offset)
        # The idempotent producer keeps order through retries.
        numbers = [int(value[1:]) for _, _, value, _ in msgs]
        assert numbers == sorted(numbers), f"partition {p} out of order"
        assert [o for o, _, _, _ in msgs] == list(range(len(msgs)))
    # Acknowledged before the crash: still there, at the same offset.
    moved = [v for v in acked_before_crash if seen.get(v) != acked_before_crash[v]]
    assert moved == [], f"{len(moved)} messages acknowledged before kill -9 missing or moved, e.g. {moved[:5]}"
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
