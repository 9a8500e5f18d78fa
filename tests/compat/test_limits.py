"""Tables keyed by client input have a limit or an expiry.

- Partitions per broker (`--max-partitions-per-shard` × shards): CreateTopics,
  CreatePartitions and auto-creation past it are refused with INVALID_PARTITIONS, so a
  client creating topics in a loop cannot exhaust memory or file descriptors.
- Producer ids (`--producer-id-expiration-ms`, Kafka's `producer.id.expiration.ms`): idle
  producers are forgotten on the retention timer, not only when a segment rolls, so a
  partition that never rolls does not keep every producer that ever wrote to it.
- Consumer groups and committed offsets (`--offsets-retention-minutes`, or Strand's own
  `--offsets-retention-ms`): offsets of a group without members expire, and an empty group
  with nothing committed is removed, so groups created in a loop do not pile up; the group
  log is compacted while running.
- Transactional ids (`--transactional-id-expiration-ms`): idle ids are forgotten while the
  broker runs, not only at start-up; an open transaction is kept.
- Metadata responses: a topic named many times in one request is answered once.
"""

import socket
import struct
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

    # Room comes back when a topic is deleted.
    admin.delete_topics(["second"], request_timeout=15)["second"].result()
    assert create(admin, NewTopic("third", num_partitions=2)) == {"third": None}

    # Auto-creation (a producer naming new topics) stops at the cap too. (Last: the
    # producer keeps asking for these topics in the background while it lives.)
    producer = Producer({"bootstrap.servers": capped.bootstrap, "message.timeout.ms": 3000})
    for k in range(5):
        producer.produce(f"auto-{k}", b"x")
    producer.flush(10)
    metadata = admin.list_topics(timeout=10)
    assert not any(name.startswith("auto-") and not t.error
                   for name, t in metadata.topics.items()), metadata.topics
    assert partition_count(admin) == cap


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


# ------------------------------------------------------------------ raw protocol helpers

def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _call(sock, api_key, version, body, correlation_id=1):
    """Sends one request (v1 header) and returns the response body after its correlation id."""
    msg = struct.pack(">hhi", api_key, version, correlation_id) + _string("limits") + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv(sock, 4))[0]
    response = _recv(sock, size)
    assert struct.unpack(">i", response[:4])[0] == correlation_id
    return response[4:]


def _recv(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the broker")
        out += chunk
    return bytes(out)


def _read_string(buf, at):
    n = struct.unpack_from(">h", buf, at)[0]
    at += 2
    if n < 0:
        return None, at
    return buf[at:at + n].decode(), at + n


def commit_offset_v2(sock, group, topic, partition, offset):
    """A standalone OffsetCommit (generation -1, no member): the error code."""
    body = (_string(group) + struct.pack(">i", -1) + _string("") + struct.pack(">q", -1)
            + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iiqh", 1, partition, offset, -1))
    response = _call(sock, 8, 2, body)
    # [topics: 1][name][partitions: 1][partition][error_code]
    _, at = _read_string(response, 4)
    return struct.unpack_from(">h", response, at + 8)[0]


def list_groups_v0(sock):
    response = _call(sock, 16, 0, b"")
    error_code, count = struct.unpack_from(">hi", response, 0)
    assert error_code == 0
    at, groups = 6, []
    for _ in range(count):
        group, at = _read_string(response, at)
        _, at = _read_string(response, at)
        groups.append(group)
    return groups


def metadata_v1_topic_names(sock, names):
    """Names of the topics a Metadata v1 response lists."""
    body = struct.pack(">i", len(names)) + b"".join(_string(n) for n in names)
    response = _call(sock, 3, 1, body)
    brokers = struct.unpack_from(">i", response, 0)[0]
    at = 4
    for _ in range(brokers):
        at += 4
        _, at = _read_string(response, at)
        at += 4
        _, at = _read_string(response, at)
    at += 4  # controller id
    count = struct.unpack_from(">i", response, at)[0]
    at += 4
    topics = []
    for _ in range(count):
        at += 2  # error code
        name, at = _read_string(response, at)
        at += 1  # is_internal
        partitions = struct.unpack_from(">i", response, at)[0]
        at += 4
        for _ in range(partitions):
            at += 2 + 4 + 4
            for _ in range(2):  # replicas, isr
                at += 4 + 4 * struct.unpack_from(">i", response, at)[0]
        topics.append(name)
    return topics


def wait_for(what, condition, timeout_s=60):
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ------------------------------------------------------------------ groups and offsets

GROUPS = 2000
RETENTION_MS = 3000


def test_empty_groups_and_their_offsets_expire_and_the_group_log_compacts(tmp_path, topic):
    from confluent_kafka import Consumer, TopicPartition

    # First with the default retention: the groups pile up and nothing expires meanwhile.
    b = Broker(tmp_path, shards=1)
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        assert create(admin, NewTopic(topic, num_partitions=1)) == {topic: None}
        producer = Producer({"bootstrap.servers": b.bootstrap})
        for k in range(5):
            producer.produce(topic, f"m{k}".encode(), partition=0)
        assert producer.flush(15) == 0
        log = b.data_dir / "groups" / "shard-0.log"
        with socket.create_connection(("127.0.0.1", b.port), timeout=30) as sock:
            for g in range(GROUPS):
                assert commit_offset_v2(sock, f"standalone-{g}", topic, 0, g) == 0
            assert len(list_groups_v0(sock)) == GROUPS
        full = log.stat().st_size
        assert full > 100 * GROUPS, full

        # Then with a short one: groups read at start-up count as empty since start-up.
        b.extra = ["--offsets-retention-ms", str(RETENTION_MS),
                   "--offsets-retention-check-interval-ms", "200"]
        b.restart()

        # A group with a member keeps its offsets however long it lives.
        member = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "alive",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        member.subscribe([topic])
        got = None
        deadline = time.time() + 30
        while got is None and time.time() < deadline:
            got = member.poll(0.5)
        assert got is not None and not got.error()
        member.commit(message=got, asynchronous=False)

        with socket.create_connection(("127.0.0.1", b.port), timeout=30) as sock:
            # Past the retention every standalone group is gone, and the log is rewritten
            # with the live state only.
            def only_alive():
                member.poll(0.1)  # keeps its session
                return list_groups_v0(sock) == ["alive"]

            wait_for("the standalone groups to expire", only_alive)
            wait_for("the group log to be compacted", lambda: log.stat().st_size < full // 10)
            time.sleep(2 * RETENTION_MS / 1000)
            member.poll(0.1)
            committed = member.committed([TopicPartition(topic, 0)], timeout=10)
            assert committed[0].offset == got.offset() + 1, committed

            # Once its last member left, the group expires too.
            member.close()
            wait_for("the emptied group to expire", lambda: list_groups_v0(sock) == [])

        # Expiry was durable: nothing comes back after a restart.
        b.restart()
        with socket.create_connection(("127.0.0.1", b.port), timeout=30) as sock:
            assert list_groups_v0(sock) == []
    finally:
        b.kill9()


# ------------------------------------------------------------------ transactional ids

def test_idle_transactional_ids_expire_while_running(tmp_path, topic):
    from kafka import KafkaAdminClient

    b = Broker(tmp_path, shards=1, extra=["--transactional-id-expiration-ms", "3000"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        assert create(admin, NewTopic(topic, num_partitions=1)) == {topic: None}
        ids = 20
        for k in range(ids):
            p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": f"idle-{k}"})
            p.init_transactions(30)
            p.begin_transaction()
            p.produce(topic, b"x", partition=0)
            p.commit_transaction(30)
        # One stays in an open transaction past the expiration: it must be kept.
        open_txn = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "open",
                             "transaction.timeout.ms": 120000})
        open_txn.init_transactions(30)
        open_txn.begin_transaction()
        open_txn.produce(topic, b"y", partition=0)
        assert open_txn.flush(15) == 0

        kadmin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            def listed():
                return sorted(t.transactional_id for ts in kadmin.list_transactions().values()
                              for t in ts)

            assert len(listed()) >= 2
            wait_for("idle transactional ids to expire", lambda: listed() == ["open"])
            time.sleep(1)
            assert listed() == ["open"]
        finally:
            kadmin.close()
        open_txn.commit_transaction(30)
        # An expired id starts afresh.
        again = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "idle-0"})
        again.init_transactions(30)
    finally:
        b.kill9()


# ------------------------------------------------------------------ metadata

def test_metadata_answers_a_topic_named_many_times_once(tmp_path, topic):
    b = Broker(tmp_path, shards=1)
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        assert create(admin, NewTopic(topic, num_partitions=4)) == {topic: None}
        with socket.create_connection(("127.0.0.1", b.port), timeout=60) as sock:
            assert metadata_v1_topic_names(sock, [topic] * 100_000) == [topic]
            unknown = [f"unknown-{k}" for k in range(3)]
            names = metadata_v1_topic_names(sock, [topic] + unknown * 1000 + [topic])
            assert sorted(names) == sorted([topic] + unknown)
    finally:
        b.kill9()
