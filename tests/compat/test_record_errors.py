"""KIP-467 with a real client: a batch refused because of some of its records names them
in the Produce response's `record_errors`, and librdkafka fails exactly those with
INVALID_RECORD (its test 0011 checks the same). The records are keyless ones on a
compacted topic, which Kafka refuses. Kafka appends a batch whole or not at all, so the
keyed records of a refused batch fail too, with librdkafka's own
_INVALID_DIFFERENT_RECORD; in batches of their own they land."""

import time

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import consume

MESSAGES = 100
KEYLESS_EVERY = 10  # 10 of the 100 records have no key


def create_compacted(broker, name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1,
                                            config={"cleanup.policy": "compact"})])
    futures[name].result(timeout=15)
    deadline = time.time() + 15
    while True:
        t = admin.list_topics(name, timeout=10).topics.get(name)
        if t is not None and t.error is None and t.partitions and t.partitions[0].leader >= 0:
            return
        assert time.time() < deadline, f"metadata for {name}"
        time.sleep(0.1)


def produce_mixed(broker, topic, **config):
    """Produces MESSAGES records to partition 0, every KEYLESS_EVERY-th without a key;
    returns the delivery reports as {index: error or None}. (The per-record message of
    record_errors is checked by the raw-protocol test: confluent-kafka reports only the
    code.)"""
    producer = Producer({"bootstrap.servers": broker.bootstrap, **config})
    # Know the partition's leader first: records produced before the metadata arrives wait
    # in librdkafka's unassigned queue, and those still there when flush() forces the
    # lingering batch out are sent in a batch of their own.
    assert producer.list_topics(topic, timeout=10).topics[topic].partitions
    reports = {}

    def on_delivery(index):
        def report(err, msg):
            reports[index] = err
        return report

    for i in range(MESSAGES):
        key = None if i % KEYLESS_EVERY == 0 else f"key-{i}".encode()
        producer.produce(topic, key=key, value=f"value-{i}".encode(), partition=0, on_delivery=on_delivery(i))
    assert producer.flush(30) == 0
    assert len(reports) == MESSAGES
    return reports


def test_keyless_records_fail_alone_with_invalid_record_in_one_batch(broker, topic):
    create_compacted(broker, topic)
    # One batch for all 100 records: a long linger, nothing else flushes it earlier.
    reports = produce_mixed(broker, topic, **{"linger.ms": 2000})
    keyless = {i for i in range(MESSAGES) if i % KEYLESS_EVERY == 0}
    for i, err in reports.items():
        assert err is not None, f"record {i} was appended"
        if i in keyless:
            assert err.code() == KafkaError.INVALID_RECORD, (i, err)
        else:
            assert err.code() == KafkaError._INVALID_DIFFERENT_RECORD, (i, err)
    assert consume(broker, topic, 1, 0, 0, timeout=1, settle=1.0) == {}


def test_keyless_records_fail_and_keyed_ones_land_in_batches_of_their_own(broker, topic):
    create_compacted(broker, topic)
    reports = produce_mixed(broker, topic, **{"batch.size": 1, "linger.ms": 0})
    failed = {i for i, err in reports.items() if err is not None}
    assert failed == {i for i in range(MESSAGES) if i % KEYLESS_EVERY == 0}
    for i in failed:
        err = reports[i]
        assert err.code() == KafkaError.INVALID_RECORD, (i, err)
    got = consume(broker, topic, 1, 0, MESSAGES - len(failed))
    landed = [(k, v) for _, k, v, _ in got[0]]
    assert landed == [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(MESSAGES) if i not in failed]


def test_large_compressed_keyed_batch_lands(broker, topic):
    """A zstd batch of ~900 KB of keyed records (compressed size well over the 64 KiB
    inline limit, so its keys are read on a key-check thread) is accepted whole."""
    import os

    create_compacted(broker, topic)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "zstd",
                         "linger.ms": 2000, "batch.size": 1000000})
    failures = []
    values = [os.urandom(1000) for _ in range(900)]
    for i, v in enumerate(values):
        producer.produce(topic, key=f"key-{i}".encode(), value=v, partition=0,
                         on_delivery=lambda err, msg: failures.append(err) if err else None)
    assert producer.flush(30) == 0
    assert failures == []
    got = consume(broker, topic, 1, 0, len(values))
    assert [v for _, _, v, _ in got[0]] == values
