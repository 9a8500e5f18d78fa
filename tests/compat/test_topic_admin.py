"""Topic lifecycle with real admin clients: configs (create, describe with sources and
synonyms, alter, incremental alter, invalid ones refused), CreatePartitions, DeleteRecords,
DescribeCluster, DescribeLogDirs, ListOffsets by max timestamp, per-topic
max.message.bytes and LogAppendTime, retention by size and time, and compaction with
tombstones and compressed batches compared with a model of "latest value per key"."""

import os
import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from conftest import Broker
from helpers import consume, consumer_config, create_topic

# Retention and compaction run every half second in these tests.
FAST_MAINTENANCE = [
    "--log-retention-check-interval-ms",
    "500",
    "--log-cleaner-backoff-ms",
    "500",
]


@pytest.fixture
def fast_broker(tmp_path):
    b = Broker(tmp_path, extra=FAST_MAINTENANCE + ["--log-retention-ms", "86400000"])
    b.start()
    yield b
    log = b.log()
    b.kill9()
    assert "panicked" not in log, log


def admin(broker):
    """One AdminClient per broker, kept alive as long as the broker (a client that is
    garbage-collected fails its pending futures)."""
    client = getattr(broker, "admin_client", None)
    if client is None:
        client = AdminClient({"bootstrap.servers": broker.bootstrap})
        broker.admin_client = client
    return client


def create_with_configs(broker, name, partitions, configs):
    fs = admin(broker).create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)]
    )
    fs[name].result(timeout=15)
    create_topic_wait(broker, name, partitions)


def create_topic_wait(broker, name, partitions):
    a = admin(broker)
    deadline = time.time() + 15
    while time.time() < deadline:
        t = a.list_topics(name, timeout=10).topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} has no metadata")


def describe(broker, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin(broker).describe_configs([res])[res].result(timeout=15)


def produce_all(broker, topic, messages, **config):
    """Produces (partition, key, value) tuples with acks=all; returns delivery reports."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, **config})
    reports = []

    def done(err, msg):
        reports.append((err, msg.partition() if msg else None, msg.offset() if msg else None))

    for partition, key, value in messages:
        p.produce(topic, key=key, value=value, partition=partition, on_delivery=done)
        p.poll(0)
    assert p.flush(30) == 0
    return reports


def earliest(broker, topic, partition=0):
    tp = TopicPartition(topic, partition)
    # Right after a broker restart librdkafka's admin client can answer "No leaders found"
    # (_NOENT) from a metadata cache it has not filled yet; it is not the broker's answer,
    # so ask again a few times.
    for attempt in range(5):
        fs = admin(broker).list_offsets({tp: OffsetSpec.earliest()})
        try:
            return fs[tp].result(timeout=15).offset
        except KafkaException as err:
            if err.args[0].code() != KafkaError._NOENT or attempt == 4:
                raise
            time.sleep(0.5)


def test_create_with_configs_and_describe_sources_and_synonyms(tmp_path, topic):
    b = Broker(tmp_path, extra=["--log-retention-ms", "3600000"])
    b.start()
    try:
        create_with_configs(
            b, topic, 1, {"cleanup.policy": "compact,delete", "segment.bytes": "1048576"}
        )
        configs = describe(b, topic)
        assert configs["cleanup.policy"].value == "compact,delete"
        assert configs["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        synonyms = configs["segment.bytes"].synonyms
        assert synonyms["segment.bytes"].value == "1048576"
        assert synonyms["log.segment.bytes"].value == str(1 << 30)
        # Set by a flag: static broker config; untouched: the built-in default.
        assert configs["retention.ms"].value == "3600000"
        assert configs["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
        assert configs["delete.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
        assert configs["message.timestamp.type"].value == "CreateTime"
        # The broker's own configs are described read-only.
        res = ConfigResource(ResourceType.BROKER, "0")
        broker_configs = admin(b).describe_configs([res])[res].result(timeout=15)
        assert broker_configs["log.retention.ms"].value == "3600000"
        assert broker_configs["log.retention.ms"].is_read_only
    finally:
        b.kill9()


@pytest.mark.parametrize(
    "configs,fragment",
    [
        ({"no.such.config": "1"}, "unknown topic config"),
        ({"retention.ms": "soon"}, "integer"),
        ({"cleanup.policy": "archive"}, "cleanup.policy"),
        ({"message.timestamp.type": "WallClock"}, "message.timestamp.type"),
    ],
)
def test_invalid_configs_are_refused(broker, topic, configs, fragment):
    fs = admin(broker).create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1, config=configs)]
    )
    with pytest.raises(KafkaException) as err:
        fs[topic].result(timeout=15)
    assert err.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert fragment in err.value.args[0].str()
    assert topic not in admin(broker).list_topics(timeout=10).topics


def test_incremental_and_legacy_alter_configs(broker, topic):
    create_topic(broker, topic, 1)
    a = admin(broker)
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=15)
    configs = describe(broker, topic)
    assert configs["retention.ms"].value == "123456"
    assert configs["cleanup.policy"].value == "delete,compact"

    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=15)
    configs = describe(broker, topic)
    assert configs["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "compact"

    # An invalid value is refused and changes nothing.
    bad = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("segment.bytes", "-5", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    with pytest.raises(KafkaException) as err:
        a.incremental_alter_configs([bad])[bad].result(timeout=15)
    assert err.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe(broker, topic)["cleanup.policy"].value == "compact"

    # Legacy AlterConfigs replaces the whole override set.
    legacy = ConfigResource(ResourceType.TOPIC, topic, set_config={"segment.ms": "60000"})
    a.alter_configs([legacy])[legacy].result(timeout=15)
    configs = describe(broker, topic)
    assert configs["segment.ms"].value == "60000"
    assert configs["cleanup.policy"].value == "delete"

    # Broker configs are static.
    res = ConfigResource(ResourceType.BROKER, "0", set_config={"log.retention.ms": "1"})
    with pytest.raises(KafkaException):
        a.alter_configs([res])[res].result(timeout=15)


def test_configs_survive_restart(broker, topic):
    # Configs Strand acts on and configs it only stores (in Kafka's canonical form).
    create_with_configs(
        broker, topic, 1,
        {"retention.bytes": "99999", "preallocate": "TRUE", "min.cleanable.dirty.ratio": ".25"},
    )
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("min.compaction.lag.ms", "5000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("leader.replication.throttled.replicas", "0:0, 1:0", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("message.timestamp.after.max.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin(broker).incremental_alter_configs([res])[res].result(timeout=15)
    broker.kill9()
    broker.start()
    configs = describe(broker, topic)
    expected = {
        "retention.bytes": "99999",
        "min.compaction.lag.ms": "5000",
        "preallocate": "true",
        "min.cleanable.dirty.ratio": "0.25",
        "leader.replication.throttled.replicas": "0:0,1:0",
        "message.timestamp.after.max.ms": "60000",
    }
    for name, value in expected.items():
        assert configs[name].value == value, name
        assert configs[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
    assert configs["segment.jitter.ms"].value == "0"
    assert configs["segment.jitter.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_kafka_python_admin_configs_partitions_log_dirs_and_records(broker, topic):
    from kafka import KafkaProducer
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewPartitions as KNewPartitions
    from kafka.admin import NewTopic as KNewTopic
    from kafka.structs import TopicPartition as KTopicPartition

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        client.create_topics(
            [KNewTopic(topic, 1, 1, topic_configs={"retention.ms": "600000"})]
        )
        create_topic_wait(broker, topic, 1)
        described = client.describe_configs(
            [KConfigResource(ConfigResourceType.TOPIC, topic)], include_synonyms=True
        )
        text = repr(described)
        assert "retention.ms" in text and "600000" in text
        client.alter_configs(
            [KConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "700000"})]
        )
        assert "700000" in repr(
            client.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic)])
        )

        client.create_partitions({topic: KNewPartitions(total_count=4)})
        create_topic_wait(broker, topic, 4)

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for i in range(40):
            producer.send(topic, key=b"k%d" % i, value=b"v" * 100, partition=i % 4)
        producer.flush()
        producer.close()

        dirs = repr(client.describe_log_dirs())
        assert topic in dirs

        deleted = client.delete_records({KTopicPartition(topic, 0): 4})
        assert "4" in repr(deleted)
    finally:
        client.close()
    assert earliest(broker, topic, 0) == 4


def test_create_partitions_spreads_over_shards_and_is_usable(broker, topic):
    create_topic(broker, topic, 1)
    a = admin(broker)
    fs = a.create_partitions([NewPartitions(topic, 4)])
    fs[topic].result(timeout=15)
    create_topic_wait(broker, topic, 4)
    leaders = {p.id: p.leader for p in a.list_topics(topic, timeout=10).topics[topic].partitions.values()}
    assert set(leaders.values()) == {0, 1}
    # Shrinking is refused.
    with pytest.raises(KafkaException) as err:
        a.create_partitions([NewPartitions(topic, 2)])[topic].result(timeout=15)
    assert err.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    reports = produce_all(broker, topic, [(p, b"k", b"v%d" % p) for p in range(4)], acks="all")
    assert all(err is None for err, _, _ in reports)
    got = consume(broker, topic, 4, OFFSET_BEGINNING, 4)
    assert sorted(got) == [0, 1, 2, 3]


def test_delete_records_moves_start_and_consumers_reset(broker, topic):
    create_topic(broker, topic, 1)
    produce_all(broker, topic, [(0, None, b"m%d" % i) for i in range(20)], acks="all")
    tp = TopicPartition(topic, 0, 12)
    result = admin(broker).delete_records([tp])[tp].result(timeout=15)
    assert result.low_watermark == 12
    assert earliest(broker, topic) == 12
    # A consumer positioned before the start gets OFFSET_OUT_OF_RANGE and resets to earliest.
    c = Consumer(consumer_config(broker, **{"auto.offset.reset": "earliest"}))
    c.assign([TopicPartition(topic, 0, 3)])
    seen = []
    deadline = time.time() + 20
    while len(seen) < 8 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            seen.append(m.offset())
    c.close()
    assert seen == list(range(12, 20))
    # Survives a crash.
    broker.kill9()
    broker.start()
    assert earliest(broker, topic) == 12


def test_describe_cluster_and_max_timestamp(broker, topic):
    a = admin(broker)
    cluster = a.describe_cluster().result(timeout=15)
    assert sorted(n.id for n in cluster.nodes) == [0, 1]
    assert cluster.controller.id == 0
    assert cluster.cluster_id
    create_topic(broker, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for ts in [1_700_000_001_000, 1_700_000_009_000, 1_700_000_005_000]:
        p.produce(topic, value=b"x", partition=0, timestamp=ts)
    p.flush(10)
    tp = TopicPartition(topic, 0)
    info = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=15)
    assert (info.offset, info.timestamp) == (1, 1_700_000_009_000)


def test_topic_max_message_bytes_and_log_append_time(broker, topic):
    create_with_configs(
        broker,
        topic,
        1,
        {"max.message.bytes": "2000", "message.timestamp.type": "LogAppendTime"},
    )
    reports = produce_all(
        broker,
        topic,
        [(0, b"small", b"x" * 100), (0, b"big", b"y" * 5000)],
        **{"compression.type": "none", "linger.ms": 0, "batch.size": 1},
    )
    errors = {off is None or off < 0: err for err, _, off in reports}
    assert any(err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE for err, _, _ in reports)
    assert any(err is None for err, _, _ in reports), errors
    before = int(time.time() * 1000)
    c = Consumer(consumer_config(broker))
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    m = None
    deadline = time.time() + 15
    while m is None and time.time() < deadline:
        m = c.poll(0.2)
    c.close()
    assert m is not None and m.error() is None
    kind, ts = m.timestamp()
    assert kind == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert abs(ts - before) < 60_000


def test_retention_by_size_deletes_segments_and_advances_start(fast_broker, topic):
    create_with_configs(
        fast_broker, topic, 1, {"segment.bytes": "16384", "retention.bytes": "65536"}
    )
    produce_all(
        fast_broker,
        topic,
        [(0, None, bytes([i % 256]) * 1000) for i in range(400)],
        acks="all",
        **{"batch.size": 4000, "compression.type": "none"},
    )
    # 400 KB in 16 KiB segments; kept: at most 64 KiB plus the segment that crosses it.
    segments = lambda: list((fast_broker.data_dir / f"{topic}-0").glob("*.log"))
    deadline = time.time() + 20
    while len(segments()) > 6 and time.time() < deadline:
        time.sleep(0.25)
    assert 1 <= len(segments()) <= 6, segments()
    start = earliest(fast_broker, topic)
    assert start > 0, "retention never ran"
    got = consume(fast_broker, topic, 1, OFFSET_BEGINNING, 400 - start)
    offsets = [o for o, *_ in got[0]]
    assert offsets[0] >= start and offsets[-1] == 399
    assert "deleted old segments" in fast_broker.log()


def test_retention_by_time(fast_broker, topic):
    create_with_configs(fast_broker, topic, 1, {"retention.ms": "60000", "segment.bytes": "4096"})
    old = int(time.time() * 1000) - 3_600_000
    p = Producer({"bootstrap.servers": fast_broker.bootstrap, "acks": "all"})
    for i in range(50):
        p.produce(topic, value=b"o" * 200, partition=0, timestamp=old)
    p.flush(10)
    deadline = time.time() + 20
    while earliest(fast_broker, topic) < 50 and time.time() < deadline:
        time.sleep(0.25)
    assert earliest(fast_broker, topic) == 50
    p.produce(topic, value=b"fresh", partition=0)
    p.flush(10)
    got = consume(fast_broker, topic, 1, OFFSET_BEGINNING, 1)
    assert [v for _, _, v, _ in got[0]] == [b"fresh"]


def test_compaction_keeps_latest_per_key_with_compressed_batches(fast_broker, topic):
    create_with_configs(
        fast_broker,
        topic,
        1,
        {
            "cleanup.policy": "compact",
            "segment.bytes": "8192",
            "delete.retention.ms": "0",
            "min.compaction.lag.ms": "0",
        },
    )
    produced = []  # (key, value) in offset order
    for round_no, codec in enumerate(["lz4", "zstd", "gzip", "snappy", "none"]):
        messages = []
        for i in range(200):
            key = b"key-%d" % ((i * 7 + round_no) % 37)
            value = None if (i + round_no) % 11 == 0 else b"%s-%d-%d" % (codec.encode(), round_no, i) * 3
            messages.append((0, key, value))
        reports = produce_all(
            fast_broker, topic, messages, acks="all", **{"compression.type": codec, "batch.size": 3000}
        )
        assert all(err is None for err, _, _ in reports)
        produced.extend((k, v) for _, k, v in messages)
    # A record without a key is refused on a compacted topic.
    reports = produce_all(fast_broker, topic, [(0, None, b"keyless")], acks="all")
    assert reports[0][0] is not None and reports[0][0].code() == KafkaError.INVALID_RECORD

    deadline = time.time() + 30
    while "compacted" not in fast_broker.log() and time.time() < deadline:
        time.sleep(0.25)
    assert "compacted" in fast_broker.log()
    # Let passes settle (every closed segment cleaned).
    time.sleep(2)

    # Where the active segment starts: its records are never touched.
    bases = sorted(int(p.stem) for p in (fast_broker.data_dir / f"{topic}-0").glob("*.log"))
    active_base = bases[-1]
    closed = produced[:active_base]
    latest = {}
    for offset, (k, v) in enumerate(closed):
        latest[k] = offset
    expected = [
        (offset, k, v)
        for offset, (k, v) in enumerate(closed)
        if latest[k] == offset and v is not None
    ] + [(offset, k, v) for offset, (k, v) in enumerate(produced) if offset >= active_base]
    got = consume(fast_broker, topic, 1, OFFSET_BEGINNING, len(expected), settle=1.0)
    assert [(o, k, v) for o, k, v, _ in got[0]] == expected
    assert len(expected) < len(produced) / 2


def test_produce_latency_while_compacting_is_reported(fast_broker, topic):
    """Measures acks=all produce latency on one shard before and while a large compaction
    runs on a partition of the same shard. Reports the figures; asserts only behaviour
    (every produce acknowledged, the compaction finished)."""
    RECORDS = 150_000  # ~150 MB of incompressible values
    busy, probe = topic + "-big", topic + "-probe"
    a = admin(fast_broker)
    fs = a.create_topics(
        [
            NewTopic(busy, num_partitions=1, replica_assignment=[[0]], config={"segment.bytes": "8388608"}),
            NewTopic(probe, num_partitions=1, replica_assignment=[[0]]),
        ]
    )
    for f in fs.values():
        f.result(timeout=15)
    create_topic_wait(fast_broker, busy, 1)
    create_topic_wait(fast_broker, probe, 1)
    p = Producer(
        {
            "bootstrap.servers": fast_broker.bootstrap,
            "compression.type": "zstd",
            "linger.ms": 20,
            "batch.size": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
    )
    for i in range(RECORDS):
        p.produce(busy, key=b"key-%d" % (i % 2000), value=os.urandom(1000), partition=0)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(120) == 0

    probe_producer = Producer(
        {"bootstrap.servers": fast_broker.bootstrap, "acks": "all", "linger.ms": 0}
    )

    def sample(n):
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            probe_producer.produce(probe, value=b"probe-%d" % i, partition=0)
            assert probe_producer.flush(10) == 0
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        return latencies

    def summary(latencies):
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
        return f"n={len(latencies)} p50={pick(0.5):.2f}ms p99={pick(0.99):.2f}ms max={latencies[-1]:.2f}ms"

    baseline = sample(300)
    res = ConfigResource(
        ResourceType.TOPIC,
        busy,
        incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=15)
    started = time.time()
    during = []
    while "compacted" not in fast_broker.log() and time.time() - started < 60:
        during.extend(sample(20))
    took = time.time() - started
    assert "compacted" in fast_broker.log(), "compaction never finished"
    during.sort()
    print(f"\nproduce latency, acks=all, same shard: before {summary(baseline)}")
    if during:
        print(f"produce latency while compacting ~150 MB for {took:.1f}s: {summary(during)}")
    line = [l for l in fast_broker.log().splitlines() if "compacted" in l][0]
    print(line)


def test_min_insync_replicas_above_the_replicas_refuses_acks_all(broker, topic):
    """A node alone holds one replica per partition: min.insync.replicas 2 is accepted
    (as Kafka accepts it) and every acks=all produce is refused with NOT_ENOUGH_REPLICAS,
    never acknowledged; acks=1 still is. Back to 1, acks=all goes through."""
    create_with_configs(broker, topic, 1, {"min.insync.replicas": "2"})
    reports = produce_all(broker, topic, [(0, b"k", b"all")], acks="all", retries=0,
                          **{"enable.idempotence": False})
    assert [err.code() if err else None for err, _, _ in reports] == [KafkaError.NOT_ENOUGH_REPLICAS]
    reports = produce_all(broker, topic, [(0, b"k", b"one")], acks=1)
    assert [err for err, _, _ in reports] == [None]
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET)])
    for f in admin(broker).incremental_alter_configs([res]).values():
        f.result(timeout=15)
    deadline = time.time() + 15
    while True:
        reports = produce_all(broker, topic, [(0, b"k", b"all-again")], acks="all", retries=0,
                              **{"enable.idempotence": False})
        if reports[0][0] is None or time.time() > deadline:
            break
        time.sleep(0.2)
    assert [err for err, _, _ in reports] == [None]
    c = Consumer(consumer_config(broker))
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.time() + 15
    while len(got) < 2 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [b"one", b"all-again"]
