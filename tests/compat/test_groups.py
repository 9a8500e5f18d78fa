"""Consumer groups with real clients: partitions shared and rebalanced, members that die,
committed offsets that survive restarts, cooperative rebalancing, static membership, the
admin APIs, and groups with kcat, kafka-python and aiokafka."""

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

SESSION_MS = 6000


def create(broker, topic, partitions, messages_per_partition=0):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(15)
    if messages_per_partition:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})
        for p in range(partitions):
            for i in range(messages_per_partition):
                producer.produce(topic, value=f"{p}:{i}".encode(), partition=p)
        assert producer.flush(30) == 0


def consumer(broker, group, **extra):
    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
    }
    config.update(extra)
    return Consumer(config)


def assignments(consumers):
    return [sorted(tp.partition for tp in c.assignment()) for c in consumers]


def poll_until(consumers, done, timeout=60):
    """Polls every consumer until done() holds; returns the messages seen per consumer."""
    seen = [[] for _ in consumers]
    deadline = time.time() + timeout
    while time.time() < deadline:
        for i, c in enumerate(consumers):
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                seen[i].append((m.partition(), m.offset()))
        if done():
            return seen
    raise AssertionError(f"not done after {timeout}s: assignments {assignments(consumers)}")


def is_partitioned(consumers, partitions):
    owned = [p for a in assignments(consumers) for p in a]
    return sorted(owned) == list(range(partitions)) and all(assignments(consumers))


def test_members_share_partitions_and_rebalance(broker, topic):
    create(broker, topic, 6, messages_per_partition=50)
    group = "g-" + uuid.uuid4().hex[:8]
    members = [consumer(broker, group) for _ in range(3)]
    for c in members:
        c.subscribe([topic])
    poll_until(members, lambda: is_partitioned(members, 6))
    assert all(len(a) == 2 for a in assignments(members)), assignments(members)

    # A fourth member joins: the six partitions are spread over four.
    fourth = consumer(broker, group)
    fourth.subscribe([topic])
    members.append(fourth)
    poll_until(members, lambda: is_partitioned(members, 6) and sorted(len(a) for a in assignments(members)) == [1, 1, 2, 2])

    # One leaves: the other three take its partitions.
    members.pop(0).close()
    poll_until(members, lambda: is_partitioned(members, 6))
    for c in members:
        c.close()


def test_all_messages_read_exactly_once_across_members(broker, topic):
    create(broker, topic, 6, messages_per_partition=100)
    group = "g-" + uuid.uuid4().hex[:8]
    members = [consumer(broker, group) for _ in range(3)]
    for c in members:
        c.subscribe([topic])
    got = {}

    def drain():
        for c in members:
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                key = (m.partition(), m.offset())
                assert key not in got, f"{key} read twice"
                got[key] = m.value()
        return len(got) == 600

    deadline = time.time() + 60
    while not drain():
        assert time.time() < deadline, f"read {len(got)} of 600"
    assert got == {(p, i): f"{p}:{i}".encode() for p in range(6) for i in range(100)}
    for c in members:
        c.close()


MEMBER_SCRIPT = textwrap.dedent("""
    import sys, time
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": %d,
                  "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"})
    c.subscribe([sys.argv[3]])
    while True:
        c.poll(0.1)
        if c.assignment():
            print("assigned", flush=True)
""" % SESSION_MS)


def test_killed_member_partitions_move_after_session_timeout(broker, topic):
    create(broker, topic, 4)
    group = "g-" + uuid.uuid4().hex[:8]
    survivor = consumer(broker, group)
    survivor.subscribe([topic])
    victim = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, broker.bootstrap, group, topic],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert victim.stdout.readline().strip() == "assigned"
        poll_until([survivor], lambda: len(assignments([survivor])[0]) == 2)
        victim.kill()  # SIGKILL: no LeaveGroup, only the session timeout tells
        victim.wait()
        killed_at = time.time()
        poll_until([survivor], lambda: assignments([survivor])[0] == [0, 1, 2, 3], timeout=60)
        waited = time.time() - killed_at
        assert waited > 2, f"partitions moved after {waited:.1f}s, before any session timeout"
    finally:
        victim.kill()
        survivor.close()


def test_committed_offsets_with_metadata_survive_broker_kill_9(broker, topic):
    create(broker, topic, 2, messages_per_partition=20)
    group = "g-" + uuid.uuid4().hex[:8]
    c = consumer(broker, group)
    c.subscribe([topic])
    poll_until([c], lambda: len(assignments([c])[0]) == 2)
    commits = [TopicPartition(topic, 0, 7, metadata="checkpoint-a"), TopicPartition(topic, 1, 13, metadata="checkpoint-b")]
    c.commit(offsets=commits, asynchronous=False)
    c.close()
    broker.kill9()
    broker.start()
    c = consumer(broker, group)
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=20)
    assert [(tp.offset, tp.metadata) for tp in committed] == [(7, "checkpoint-a"), (13, "checkpoint-b")]
    # A consumer of the group resumes exactly there.
    c.subscribe([topic])
    first = {}
    deadline = time.time() + 60
    while len(first) < 2 and time.time() < deadline:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            first.setdefault(m.partition(), m.offset())
    assert first == {0: 7, 1: 13}
    c.close()


def test_auto_commit_resumes_after_consumer_restart(broker, topic):
    create(broker, topic, 1, messages_per_partition=30)
    group = "g-" + uuid.uuid4().hex[:8]
    c = consumer(broker, group, **{"enable.auto.commit": True, "auto.commit.interval.ms": 100})
    c.subscribe([topic])
    read = []
    deadline = time.time() + 30
    while len(read) < 30 and time.time() < deadline:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            read.append(m.offset())
    time.sleep(0.5)
    c.close()  # commits the final position
    assert read == list(range(30))
    c = consumer(broker, group)
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 30
    c.close()


def test_cooperative_sticky_rebalances_incrementally(broker, topic):
    create(broker, topic, 6)
    group = "g-" + uuid.uuid4().hex[:8]
    events = {0: [], 1: []}

    def callbacks(i):
        def on_assign(c, partitions):
            events[i].append(("assign", sorted(p.partition for p in partitions)))

        def on_revoke(c, partitions):
            events[i].append(("revoke", sorted(p.partition for p in partitions)))
        return on_assign, on_revoke

    a = consumer(broker, group, **{"partition.assignment.strategy": "cooperative-sticky"})
    on_assign, on_revoke = callbacks(0)
    a.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    poll_until([a], lambda: len(assignments([a])[0]) == 6)
    b = consumer(broker, group, **{"partition.assignment.strategy": "cooperative-sticky"})
    on_assign, on_revoke = callbacks(1)
    b.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    poll_until([a, b], lambda: is_partitioned([a, b], 6) and sorted(len(x) for x in assignments([a, b])) == [3, 3])
    # Incremental: the first member only gave up three partitions, it never lost all six.
    assert ("revoke", list(range(6))) not in events[0], events[0]
    revoked = [p for kind, ps in events[0] if kind == "revoke" for p in ps]
    assert len(revoked) == 3, events[0]
    a.close()
    b.close()


def test_static_member_restart_within_session_does_not_rebalance(broker, topic):
    create(broker, topic, 4)
    group = "g-" + uuid.uuid4().hex[:8]
    stay_events = []
    stay = consumer(broker, group)
    stay.subscribe([topic], on_revoke=lambda c, ps: stay_events.append("revoke"))
    static = consumer(broker, group, **{"group.instance.id": "static-1"})
    static.subscribe([topic])
    poll_until([stay, static], lambda: is_partitioned([stay, static], 4))
    before = assignments([stay, static])
    stay_events.clear()
    static.close()  # a static member leaves no LeaveGroup behind
    static = consumer(broker, group, **{"group.instance.id": "static-1"})
    static.subscribe([topic])
    poll_until([stay, static], lambda: assignments([stay, static]) == before, timeout=30)
    # Keep polling a while: no rebalance may happen.
    deadline = time.time() + 3
    while time.time() < deadline:
        stay.poll(0.05)
        static.poll(0.05)
    assert stay_events == [], stay_events
    assert assignments([stay, static]) == before
    stay.close()
    static.close()


def test_admin_list_describe_lag_delete(broker, topic):
    create(broker, topic, 2, messages_per_partition=10)
    group = "g-" + uuid.uuid4().hex[:8]
    c = consumer(broker, group, **{"client.id": "lag-checker"})
    c.subscribe([topic])
    poll_until([c], lambda: len(assignments([c])[0]) == 2)
    c.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 10)], asynchronous=False)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=20)
    assert group in [g.group_id for g in listed.valid]
    described = admin.describe_consumer_groups([group])[group].result(timeout=20)
    assert str(described.state).endswith("STABLE")
    assert len(described.members) == 1
    member = described.members[0]
    assert member.client_id == "lag-checker"
    assert sorted(tp.partition for tp in member.assignment.topic_partitions) == [0, 1]
    # Lag: log end minus committed.
    from confluent_kafka import ConsumerGroupTopicPartitions
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=20)
    committed = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(2)}
    assert {p: ends[p] - committed[p] for p in range(2)} == {0: 6, 1: 0}
    # A group with members cannot be deleted; an empty one can.
    try:
        admin.delete_consumer_groups([group])[group].result(timeout=20)
        raise AssertionError("deleted a group with a live member")
    except KafkaException as err:
        assert "NON_EMPTY_GROUP" in str(err) or "not empty" in str(err).lower(), err
    c.close()
    deadline = time.time() + 20
    while True:
        try:
            admin.delete_consumer_groups([group])[group].result(timeout=20)
            break
        except KafkaException:
            assert time.time() < deadline
            time.sleep(0.2)
    listed = admin.list_consumer_groups().result(timeout=20)
    assert group not in [g.group_id for g in listed.valid]
    c = consumer(broker, group)
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < 0
    c.close()


def test_admin_lists_groups_by_type(broker, topic):
    """ListGroups v5 (KIP-848): each group reports its type, and the type filter applies.
    Every Strand group is a classic one, as librdkafka's test 0081 expects of a 3.8+
    broker."""
    from confluent_kafka import ConsumerGroupType

    create(broker, topic, 1, messages_per_partition=1)
    group = "g-" + uuid.uuid4().hex[:8]
    c = consumer(broker, group)
    c.subscribe([topic])
    poll_until([c], lambda: len(assignments([c])[0]) == 1)
    c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def listed(**kwargs):
        result = admin.list_consumer_groups(**kwargs).result(timeout=20)
        assert result.errors == []
        return {g.group_id: g for g in result.valid}

    every = listed()
    assert every[group].type == ConsumerGroupType.CLASSIC
    assert group in listed(types={ConsumerGroupType.CLASSIC})
    assert group not in listed(types={ConsumerGroupType.CONSUMER})
    c.close()


def test_kcat_group_consumes_and_resumes(broker, topic):
    create(broker, topic, 2, messages_per_partition=5)
    group = "g-" + uuid.uuid4().hex[:8]

    def kcat_group():
        out = subprocess.run(
            # No -o: in -G mode kcat would apply it over the committed offsets.
            ["kcat", "-b", broker.bootstrap, "-G", group, "-e", "-f", "%p:%o:%s\n",
             "-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=100", topic],
            capture_output=True, timeout=120, text=True)
        return sorted(line for line in out.stdout.splitlines() if line)

    first = kcat_group()
    assert first == sorted(f"{p}:{i}:{p}:{i}" for p in range(2) for i in range(5))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, value=b"0:new", partition=0)
    producer.flush(10)
    assert kcat_group() == ["0:5:0:new"]


def test_kafka_python_group_commits_and_resumes(broker, topic):
    from kafka import KafkaConsumer
    create(broker, topic, 2, messages_per_partition=10)
    group = "g-" + uuid.uuid4().hex[:8]

    def read(expected):
        c = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=False, consumer_timeout_ms=8000)
        got = []
        for record in c:
            got.append((record.partition, record.offset))
            if len(got) == expected:
                break
        c.commit()
        c.close()
        return sorted(got)

    assert read(20) == sorted((p, i) for p in range(2) for i in range(10))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, value=b"1:new", partition=1)
    producer.flush(10)
    assert read(1) == [(1, 10)]


def test_aiokafka_group_commits_and_resumes(broker, topic):
    from aiokafka import AIOKafkaConsumer
    create(broker, topic, 2, messages_per_partition=10)
    group = "g-" + uuid.uuid4().hex[:8]

    async def read(expected):
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        got = []
        try:
            deadline = time.time() + 30
            while len(got) < expected and time.time() < deadline:
                for records in (await c.getmany(timeout_ms=500)).values():
                    got += [(r.partition, r.offset) for r in records]
            await c.commit()
        finally:
            await c.stop()
        return sorted(got)

    assert asyncio.run(read(20)) == sorted((p, i) for p in range(2) for i in range(10))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, value=b"0:new", partition=0)
    producer.flush(10)
    assert asyncio.run(read(1)) == [(0, 10)]


def test_offset_delete_refuses_subscribed_topics_only(broker, topic):
    """OffsetDelete (kafka-python's delete_group_offsets) on a live group: offsets of a
    topic its members subscribe to are kept (GROUP_SUBSCRIBED_TO_TOPIC), others go."""
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition as KTopicPartition

    other = topic + "-other"
    create(broker, topic, 1, messages_per_partition=5)
    create(broker, other, 1, messages_per_partition=5)
    group = "g-" + uuid.uuid4().hex[:8]
    c = consumer(broker, group)
    c.subscribe([topic])
    poll_until([c], lambda: len(assignments([c])[0]) == 1)
    c.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(other, 0, 2)], asynchronous=False)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        result = admin.delete_group_offsets(
            group, [KTopicPartition(topic, 0), KTopicPartition(other, 0)]
        )
        errors = {tp.topic: err.__name__ for tp, err in result.items()}
        assert errors == {topic: "GroupSubscribedToTopicError", other: "NoError"}, errors
    finally:
        admin.close()
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(other, 0)], timeout=10)
    assert [tp.offset for tp in committed] == [3, -1001]
    c.close()
