"""Kafka 3.x topic configs that clients and tools still send (`message.format.version`,
`message.downconversion.enable`, `message.timestamp.difference.max.ms`) are accepted as a
Kafka 3.x broker accepts them, validated, stored and described, and change nothing; a truly
unknown config still fails the request with INVALID_CONFIG. librdkafka's test 0092 sets
`message.format.version` with AlterConfigs exactly like this."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)
from helpers import consume, create_topic

LEGACY = {
    "message.format.version": "0.10.0.0",
    "message.downconversion.enable": "false",
    "message.timestamp.difference.max.ms": "0",
}


def admin(broker):
    client = getattr(broker, "admin_client", None)
    if client is None:
        client = AdminClient({"bootstrap.servers": broker.bootstrap})
        broker.admin_client = client
    return client


def describe(broker, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin(broker).describe_configs([res])[res].result(timeout=15)


def wait_for_topic(broker, name):
    deadline = time.time() + 15
    while time.time() < deadline:
        t = admin(broker).list_topics(name, timeout=10).topics.get(name)
        if t is not None and t.error is None and t.partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} has no metadata")


def produce_old_timestamps(broker, topic, count):
    """Records stamped at 1970 + 1 s: a Kafka 3.x topic with
    message.timestamp.difference.max.ms=0 would refuse them (INVALID_TIMESTAMP)."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    errors = []
    for i in range(count):
        p.produce(
            topic,
            value=f"v{i}".encode(),
            partition=0,
            timestamp=1000,
            on_delivery=lambda err, msg: errors.append(err) if err else None,
        )
    assert p.flush(30) == 0
    assert errors == []


def test_create_topics_with_kafka_3_configs_succeeds_and_they_change_nothing(broker, topic):
    fs = admin(broker).create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1, config=LEGACY)]
    )
    fs[topic].result(timeout=15)
    wait_for_topic(broker, topic)
    configs = describe(broker, topic)
    for name, value in LEGACY.items():
        assert configs[name].value == value, name
        assert configs[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
    # No-ops: format v2 is written and read, and timestamps are not checked against the clock.
    produce_old_timestamps(broker, topic, 5)
    got = consume(broker, topic, 1, 0, 5)
    assert [v for (_, _, v, _) in got[0]] == [f"v{i}".encode() for i in range(5)]


def test_alter_configs_with_kafka_3_configs_succeeds(broker, topic):
    create_topic(broker, topic, 1)
    a = admin(broker)
    # Before any override, DescribeConfigs reports Kafka 3.x's defaults.
    configs = describe(broker, topic)
    assert configs["message.format.version"].value == "3.0-IV1"
    assert configs["message.downconversion.enable"].value == "true"
    assert configs["message.timestamp.difference.max.ms"].value == str(2**63 - 1)
    assert configs["message.format.version"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    # Legacy AlterConfigs, as librdkafka's test 0092 does it.
    legacy = ConfigResource(
        ResourceType.TOPIC, topic, set_config={"message.format.version": "0.10.0.0"}
    )
    a.alter_configs([legacy])[legacy].result(timeout=15)
    assert describe(broker, topic)["message.format.version"].value == "0.10.0.0"

    # IncrementalAlterConfigs, mixed with a config that does something.
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in {**LEGACY, "retention.ms": "3600000"}.items()
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=15)
    configs = describe(broker, topic)
    for name, value in LEGACY.items():
        assert configs[name].value == value, name
    assert configs["retention.ms"].value == "3600000"
    produce_old_timestamps(broker, topic, 3)


@pytest.mark.parametrize(
    "configs,fragment",
    [
        ({"no.such.config": "1"}, "unknown topic config"),
        ({"message.format.version": "banana"}, "message.format.version"),
        ({"message.downconversion.enable": "maybe"}, "message.downconversion.enable"),
        ({"message.timestamp.difference.max.ms": "-1"}, "message.timestamp.difference.max.ms"),
    ],
)
def test_unknown_or_invalid_configs_still_fail(broker, topic, configs, fragment):
    a = admin(broker)
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1, config={**LEGACY, **configs})]
    )
    with pytest.raises(KafkaException) as err:
        fs[topic].result(timeout=15)
    assert err.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert fragment in err.value.args[0].str()
    assert topic not in a.list_topics(timeout=10).topics

    # AlterConfigs on an existing topic: refused whole, nothing changes.
    create_topic(broker, topic, 1)
    res = ConfigResource(
        ResourceType.TOPIC, topic, set_config={"retention.ms": "1234", **configs}
    )
    with pytest.raises(KafkaException) as err:
        a.alter_configs([res])[res].result(timeout=15)
    assert err.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe(broker, topic)["retention.ms"].value != "1234"
