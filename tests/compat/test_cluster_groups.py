"""Consumer groups on a cluster: their state lives in the replicated __consumer_offsets
topic, and the leader of a group's partition of it coordinates the group.

- kill -9 of the node coordinating a group while two members consume and commit: the
  group moves to another node with its membership (same members, same generation, no
  rebalance), and the members go on from the committed offsets;
  every record is consumed, none is consumed again once a commit covered it, and the
  commits are all there afterwards (also after the killed node is back);
- the offsets topic is Kafka's: internal in Metadata, refused to producers, never deleted
  or grown by a client; an offset commit to a node that does not coordinate the group is
  NOT_COORDINATOR.
"""

import concurrent.futures
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from cluster import node_of, wait_for
from test_cluster import (  # noqa: F401 (fixtures)
    TAKEOVER_TIMEOUT_S, admin_create, cluster, make_cluster, produce, wait_replicated,
)

pytestmark = pytest.mark.timeout(240)

OFFSETS_TOPIC = "__consumer_offsets"


def describe(bootstrap, group, timeout=10):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(timeout=timeout)


def coordinator_node(bootstrap, group, timeout=10):
    """The node coordinating `group`, as DescribeConsumerGroups reports it."""
    return node_of(describe(bootstrap, group, timeout).coordinator.id)


def member_ids(bootstrap, group):
    return sorted(m.member_id for m in describe(bootstrap, group).members)


class Member:
    """A group member in a thread: polls, and commits each record's offset (synchronous)
    right after taking it. Records what it consumed and what the group had committed
    (as far as any member knows) at that moment."""

    def __init__(self, name, bootstrap, group, topic, log, lock):
        self.name = name
        self.log = log  # shared: (member, partition, offset, committed-before)
        self.lock = lock
        self.committed = {}  # shared through `log`'s owner: partition -> next offset
        self.errors = []
        self.stop = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 2000,
        })
        self.assignments = 0  # times the group gave this member partitions
        self.consumer.subscribe([topic], on_assign=self._assigned)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _assigned(self, _consumer, _partitions):
        self.assignments += 1

    def _run(self):
        while not self.stop.is_set():
            m = self.consumer.poll(0.2)
            if m is None:
                continue
            if m.error():
                if not m.error().retriable() and m.error().code() != KafkaError._PARTITION_EOF:
                    self.errors.append(m.error())
                continue
            p, o = m.partition(), m.offset()
            with self.lock:
                self.log.append((self.name, p, o, GROUP_COMMITS.get(p, 0)))
            try:
                done = self.consumer.commit(offsets=[TopicPartition(m.topic(), p, o + 1)],
                                            asynchronous=False)
            except KafkaException:
                continue  # a later commit covers it (the coordinator is moving)
            for tp in done or []:
                if tp.error is None:
                    with self.lock:
                        GROUP_COMMITS[p] = max(GROUP_COMMITS.get(p, 0), tp.offset)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=30)
        self.consumer.close()


GROUP_COMMITS = {}


def test_killing_the_group_coordinator_moves_the_group_with_its_offsets(cluster):
    name = "orders-" + uuid.uuid4().hex[:6]
    partitions = 4
    assert admin_create(cluster.node(1), name, partitions, replication_factor=3) is None
    wait_replicated(cluster, name, partitions, 3)
    # Enough commits before the kill that the group's offsets partition gets a checkpoint
    # (more than 1000 records): the new coordinator reads the group back through it.
    total = 3000
    acked = produce(cluster.bootstrap_all(),
                    [(name, i % partitions, f"v{i}".encode()) for i in range(total)])
    # Offsets are not dense (a leader's first entry of a term is a control batch): the
    # acknowledged ones are what must be consumed.
    offsets = {p: [o for o, _ in msgs] for (_, p), msgs in acked.items()}
    assert sum(len(o) for o in offsets.values()) == total
    ends = {p: max(o) + 1 for p, o in offsets.items()}

    group = "g-" + uuid.uuid4().hex[:8]
    GROUP_COMMITS.clear()
    log, lock = [], threading.Lock()
    members = [Member(f"m{i}", cluster.bootstrap_all(), group, name, log, lock) for i in range(2)]
    for m in members:
        m.thread.start()
    try:
        wait_for("half of the records consumed", lambda: len(log) >= total // 2, 90)
        victim = coordinator_node(cluster.bootstrap_all(), group)
        assert victim in (1, 2, 3)
        wait_for("the group's offsets partition checkpointed",
                 lambda: "checkpointed an offsets partition" in cluster.node(victim).log(), 30)
        wait_for("both members in the group", lambda: len(member_ids(
            cluster.bootstrap_all(), group)) == 2, 30)
        members_before = member_ids(cluster.bootstrap_all(), group)
        assignments_before = [m.assignments for m in members]
        cluster.node(victim).kill9()
        killed_at = time.time()
        survivors = [cluster.node(n) for n in (1, 2, 3) if n != victim]
        bootstrap = cluster.bootstrap_all(survivors)
        wait_for("the group coordinated elsewhere",
                 lambda: _coordinator_or_none(bootstrap, group) not in (None, victim),
                 TAKEOVER_TIMEOUT_S, interval=0.1)
        moved = _coordinator_or_none(bootstrap, group)
        failover_s = time.time() - killed_at
        print(f"group {group}: coordinator node {victim} killed, node {moved} took over "
              f"in {failover_s:.2f} s")
        # The membership moved with the group (stored at each generation): the same
        # members, known to the new coordinator at once, without a rebalance.
        assert member_ids(bootstrap, group) == members_before

        def all_committed():
            with lock:
                return all(GROUP_COMMITS.get(p, 0) >= ends[p] for p in ends)
        wait_for("every record consumed and committed", all_committed, 120)
    finally:
        for m in members:
            m.close()

    assert not [e for m in members for e in m.errors], [e for m in members for e in m.errors]
    # Every offset consumed; an offset consumed again only while no commit covered it.
    seen = {}
    for member, p, o, committed_before in log:
        if (p, o) in seen:
            assert o >= committed_before, (
                f"{member} consumed {name}[{p}] offset {o} again, though {committed_before} "
                f"was committed (first consumed by {seen[(p, o)]})")
        seen.setdefault((p, o), member)
    for p, acked_offsets in offsets.items():
        missing = [o for o in acked_offsets if (p, o) not in seen]
        assert not missing, f"partition {p}: offsets never consumed: {missing[:10]}"
    redelivered = len(log) - len(seen)
    print(f"{len(log)} records consumed, {redelivered} redelivered after the failover")
    rebalances = [m.assignments - before for m, before in zip(members, assignments_before)]
    print(f"assignments after the failover, per member: {rebalances}")
    assert rebalances == [0, 0], "the coordinator move made the group rebalance"

    # The commits are all there, read from the new coordinator and, once the killed node
    # is back (and may lead the partition again), from whoever coordinates then.
    def committed_offsets(bootstrap):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            got = c.committed([TopicPartition(name, p) for p in ends], timeout=20)
            return {tp.partition: tp.offset for tp in got}
        finally:
            c.close()
    assert committed_offsets(cluster.bootstrap_all(survivors)) == ends
    cluster.node(victim).start()
    cluster.wait_formed()
    wait_for("the commits readable with every node up",
             lambda: _quiet(lambda: committed_offsets(cluster.bootstrap_all())) == ends,
             TAKEOVER_TIMEOUT_S)


def _coordinator_or_none(bootstrap, group):
    return _quiet(lambda: coordinator_node(bootstrap, group, timeout=2))


def _quiet(call):
    try:
        return call()
    except (KafkaException, concurrent.futures.TimeoutError):
        return None


def test_the_offsets_topic_is_internal_and_protected(cluster):
    name = "t-" + uuid.uuid4().hex[:6]
    assert admin_create(cluster.node(1), name, 1, replication_factor=3) is None
    produce(cluster.bootstrap_all(), [(name, 0, b"x")])
    group = "g-" + uuid.uuid4().hex[:8]
    c = Consumer({"bootstrap.servers": cluster.bootstrap_all(), "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(name, 0, 1)], asynchronous=False)
    finally:
        c.close()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_all()})
    meta = admin.list_topics(timeout=10)
    offsets = meta.topics[OFFSETS_TOPIC]
    assert len(offsets.partitions) == 16
    assert all(len(p.replicas) == 3 for p in offsets.partitions.values())

    from confluent_kafka import Producer
    errors = []
    p = Producer({"bootstrap.servers": cluster.bootstrap_all(), "message.timeout.ms": 10000})
    p.produce(OFFSETS_TOPIC, b"forged", partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(20)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors[0]

    deleted = admin.delete_topics([OFFSETS_TOPIC])[OFFSETS_TOPIC]
    with pytest.raises(KafkaException) as refused:
        deleted.result(timeout=20)
    assert refused.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    grown = admin.create_partitions([NewPartitions(OFFSETS_TOPIC, 20)])[OFFSETS_TOPIC]
    with pytest.raises(KafkaException) as refused:
        grown.result(timeout=20)
    assert refused.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    assert OFFSETS_TOPIC in admin.list_topics(timeout=10).topics
