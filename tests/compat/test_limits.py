"""Tables keyed by client input have a limit or an expiry.

- Partitions per broker (`--max-partitions-per-shard` × shards): CreateTopics,
  CreatePartitions and auto-creation past it are refused with INVALID_PARTITIONS, so a
  client creating topics in a loop cannot exhaust memory or file descriptors.
- Producer ids (`--producer-id-expiration-ms`, Kafka's `producer.id.expiration.ms`): idle
  producers are forgotten on the retention timer, not only when a segment rolls, so a
  partition that never rolls does not keep every producer that ever wrote to it.
"""

import time

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka import KafkaAdminClient
from kafka.structs import TopicPartition as KTopicPartition

from conftest import Broker

PARTITIONS_PER_SHARD = 3
SHARDS = 2


def create(admin, *topics):
    """{name: KafkaError code or None} of one CreateTopics call."""
    futures = admin.create_topics(list(topics), request_timeout=15)
    out = {}
    for name, future in futures.items():
        try:
            future.result()
            out[name] = None
        except Exception as err:  # a KafkaException carrying the broker's error
            out[name] = err.args[0].code()
    return out


def partition_count(admin):
    metadata = admin.list_topics(timeout=10)
    return sum(len(t.partitions) for n, t in metadata.topics.items() if not t.error)


@pytest.fixture
def capped(tmp_path):
    b = Broker(tmp_path, shards=SHARDS,
               extra=["--max-partitions-per-shard", str(PARTITIONS_PER_SHARD)])
    b.start()
    yield b
    b.kill9()


def test_partition_cap_refuses_creations_past_it(capped):
    admin = AdminClient({"bootstrap.servers": capped.bootstrap})
    cap = PARTITIONS_PER_SHARD * SHARDS
    assert create(admin, NewTopic("first", num_partitions=4)) == {"first": None}
    # 4 + 3 > 6: refused as a whole, before anything is created.
    assert create(admin, NewTopic("second", num_partitions=3)) == {
        "second": KafkaError.INVALID_PARTITIONS}
    assert create(admin, NewTopic("second", num_partitions=2)) == {"second": None}
    assert partition_count(admin) == cap

    futures = admin.create_partitions([NewPartitions("first", 5)], request_timeout=15)
    with pytest.raises(Exception) as refused:
        futures["first"].result()
    assert refused.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    # Auto-creation (a producer naming new topics) stops at the cap too.
    producer = Producer({"bootstrap.servers": capped.bootstrap, "message.timeout.ms": 3000})
    for k in range(5):
        producer.produce(f"auto-{k}", b"x")
    producer.flush(10)
    metadata = admin.list_topics(timeout=10)
    assert not any(name.startswith("auto-") and not t.error
                   for name, t in metadata.topics.items()), metadata.topics
    assert partition_count(admin) == cap

    # Room comes back when a topic is deleted.
    admin.delete_topics(["second"], request_timeout=15)["second"].result()
    assert create(admin, NewTopic("third", num_partitions=2)) == {"third": None}


def test_idle_producer_ids_expire_on_the_timer(tmp_path, topic):
    b = Broker(tmp_path, shards=1, extra=[
        "--producer-id-expiration-ms", "3000",
        "--log-retention-check-interval-ms", "200",
    ])
    b.start()
    try:
        producers = 8
        for k in range(producers):
            p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True})
            p.produce(topic, f"from producer {k}".encode(), partition=0)
            assert p.flush(15) == 0
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            tp = KTopicPartition(topic, 0)

            def active():
                return admin.describe_producers([tp])[tp].active_producers

            # The newest producer is surely still known (earlier ones may already have
            # expired on a slow machine).
            assert len(active()) >= 1
            # The segment never rolls here: only the timer can forget them.
            deadline = time.time() + 30
            while active() and time.time() < deadline:
                time.sleep(0.2)
            assert active() == []
        finally:
            admin.close()
    finally:
        b.kill9()
