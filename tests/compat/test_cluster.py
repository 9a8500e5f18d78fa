"""Several Strand nodes as one cluster (tests/compat/cluster.py starts them).

Cluster metadata (topics, node registrations, producer-id blocks) is replicated by a Raft
group over every node; partitions are not replicated (replication factor 1) but spread
over the nodes. Node N shard k is Kafka broker N * 1024 + k; any node answers Metadata
with every node's shards and the metadata leader's shard 0 as controller.

- a formed cluster: every node lists every broker at its port and the same controller;
  kcat sees them all; SIGTERM stops every node cleanly;
- CreateTopics through any node (real clients send it to the controller; raw requests to
  a follower check forwarding, and that the answer comes once the follower applied it),
  as are DeleteTopics, CreatePartitions and AlterConfigs; rf > 1 is refused;
- produce through one node, consume in a group through another;
- the metadata leader killed: a new one takes over, topics can still be created, the
  survivors' partitions keep working, the killed node catches up when back;
- every node killed at once: topics, records and committed offsets survive;
- two of three nodes down: metadata changes fail (NOT_CONTROLLER or a timeout), the
  survivor's own partitions keep working;
- `strand cluster health`, and `strand produce`/`strand consume` across a leader change.
"""

import concurrent.futures
import json
import os
import signal
import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition,
)
from confluent_kafka.admin import NewTopic

from cluster import (
    INVALID_REPLICATION_FACTOR, NOT_CONTROLLER, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT,
    TOPIC_ALREADY_EXISTS, Cluster, _read_string, _string, alter_topic_configs_raw, broker_id,
    call, create_partitions_raw, create_topic_raw, delete_topic_raw, fetch_error, metadata,
    node_of, topic_config_raw, wait_for,
)
from helpers import consume

pytestmark = pytest.mark.timeout(150)

# The first rebalance of a new group completes at once: these tests use one consumer.
EXTRA = ["--group-initial-rebalance-delay-ms", "0"]
SPREAD_TIMEOUT_S = 10  # a change applied on one node shows on the others within this
TAKEOVER_TIMEOUT_S = 20  # a new metadata leader, or a restarted node caught up


@pytest.fixture
def make_cluster(tmp_path, request):
    """make_cluster(nodes=3, shards=1, extra=()) starts a cluster and waits until it is
    formed. At teardown every node is killed; a node that died on its own or a panic in
    any log fails the test; the logs are printed when the test failed."""
    made = []
    dumped = set()

    def make(nodes=3, shards=1, extra=()):
        c = Cluster(tmp_path / f"cluster{len(made)}", nodes=nodes, shards=shards,
                    extra=[*EXTRA, *extra])
        made.append(c)
        try:
            c.start()
            c.wait_formed()
        except BaseException:
            # Output printed at teardown is not shown for a failed setup: print it now.
            print(c.dump_logs())
            c.stop_all()
            dumped.add(id(c))
            raise
        return c

    yield make
    failed = any(
        getattr(request.node, "rep_" + when, None) is not None
        and getattr(request.node, "rep_" + when).failed
        for when in ("setup", "call")
    )
    problems = []
    for c in made:
        crashed = [n.node_id for n in c.nodes if n.crashed()]
        c.stop_all()
        panicked = c.panicked()
        if (failed or crashed or panicked) and id(c) not in dumped:
            print(c.dump_logs())
        if crashed:
            problems.append(f"node(s) {crashed} died during the test")
        if panicked:
            problems.append(f"node(s) {panicked} panicked")
    assert not problems, "; ".join(problems) + " (logs above)"


@pytest.fixture
def cluster(make_cluster):
    return make_cluster()


def topic_name(prefix="c"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kcat(*args, timeout=30):
    result = subprocess.run(["kcat", *args], capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"kcat {args}: {result.stderr.decode(errors='replace')}"
    return result.stdout.decode()


def admin_create(node, name, partitions, replication_factor=1, timeout=15):
    """CreateTopics with confluent-kafka's AdminClient bootstrapped on `node` (librdkafka
    sends it to the controller): None, or the KafkaError it failed with."""
    admin = node.admin()  # the futures fail with _DESTROY once the client is collected
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)],
        request_timeout=timeout,
    )
    try:
        futures[name].result(timeout=timeout + 5)
        return None
    except KafkaException as e:
        return e.args[0]


def refused(node, name, partitions, replication_factor=1):
    """The error code admin_create failed with; fails the test if it succeeded."""
    err = admin_create(node, name, partitions, replication_factor)
    assert err is not None, f"CreateTopics {name} (rf {replication_factor}) succeeded"
    return err.code()


RETRIABLE = {
    KafkaError.NOT_CONTROLLER, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
}


def admin_create_retrying(node, name, partitions, timeout):
    """CreateTopics through `node` until it succeeds: NOT_CONTROLLER and timeouts are
    retried (an attempt that timed out may still have created it, so TOPIC_ALREADY_EXISTS
    after one counts as success). Returns the seconds it took."""
    started = time.time()
    uncertain = False
    last = None
    while time.time() - started < timeout:
        admin = node.admin()
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            request_timeout=5,
        )
        try:
            futures[name].result(timeout=8)
            return time.time() - started
        except KafkaException as e:
            code = e.args[0].code()
            if code == KafkaError.TOPIC_ALREADY_EXISTS and uncertain:
                return time.time() - started
            assert code in RETRIABLE, f"CreateTopics {name}: {e}"
            last = e
        except concurrent.futures.TimeoutError as e:
            last = e
        uncertain = True
        time.sleep(0.3)
    raise AssertionError(f"CreateTopics {name} did not succeed within {timeout}s: {last!r}")


def view(node, name, partitions):
    """{partition: leader} of `name` in `node`'s own metadata if it lists the topic
    without error, with `partitions` partitions, each with a leader; else None (also when
    the node does not answer)."""
    try:
        md = metadata(node.port)
    except OSError:
        return None
    if name not in md.topics:
        return None
    error_code, leaders = md.topics[name]
    if error_code != 0 or len(leaders) != partitions or min(leaders.values()) < 0:
        return None
    assert sorted(leaders) == list(range(partitions)), leaders
    return leaders


def wait_topic(cluster, name, partitions, nodes=None, timeout=SPREAD_TIMEOUT_S):
    """Waits until every given node (default: all live ones) shows `name` with all its
    partitions led, the same leaders everywhere, each a broker of a cluster node; returns
    {partition: leader}."""
    nodes = cluster.live() if nodes is None else nodes

    def everywhere():
        views = {n.node_id: view(n, name, partitions) for n in nodes}
        return None if None in views.values() else views

    views = wait_for(f"{name} in the metadata of nodes {[n.node_id for n in nodes]}",
                     everywhere, timeout)
    leaders = next(iter(views.values()))
    assert all(v == leaders for v in views.values()), f"nodes disagree on leaders: {views}"
    assert set(leaders.values()) <= set(cluster.broker_ids()), leaders
    return leaders


def shard_port(cluster, broker):
    """The client port of Kafka broker id `broker`."""
    return cluster.node(node_of(broker)).port + broker % 1024


def produce(bootstrap, records, idempotent=True, timeout=30):
    """Produces [(topic, partition, value)] with acks=all; returns {(topic, partition):
    [(offset, value)]} of the acknowledged records in offset order. Fails on any error."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": idempotent,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": timeout * 1000,
    })
    acked = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append((msg.partition(), err))
        else:
            acked.setdefault((msg.topic(), msg.partition()), []).append((msg.offset(), msg.value()))

    for topic, partition, value in records:
        producer.produce(topic, value=value, key=value[:8], partition=partition,
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(timeout + 5) == 0, "records still unacknowledged"
    assert errors == [], errors[:10]
    assert sum(len(v) for v in acked.values()) == len(records)
    for key in acked:
        acked[key].sort()
    return acked


def read_back(bootstrap, topic, partitions, expected, timeout=30):
    """Every record of the given partitions from offset 0 (assigned, no group):
    {(topic, partition): [(offset, value)]}."""
    got = consume(_Bootstrap(bootstrap), topic, partitions, OFFSET_BEGINNING, expected,
                  timeout=timeout)
    return {(topic, p): [(o, v) for o, _, v, _ in msgs] for p, msgs in got.items()}


class _Bootstrap:
    """What helpers.consume wants of a broker: a bootstrap string."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap


def only(acked, topic):
    return {k: v for k, v in acked.items() if k[0] == topic}


# ------------------------------------------------------------------ the tests

def test_formed_cluster_lists_every_shard_as_a_broker(cluster):
    expected = {broker_id(n.node_id, 0): ("127.0.0.1", n.port) for n in cluster.nodes}
    assert sorted(expected) == [1024, 2048, 3072]
    controller = cluster.controller_node()
    controller_id = broker_id(controller.node_id, 0)
    for n in cluster.nodes:
        md = n.list_topics()
        assert {b: (m.host, m.port) for b, m in md.brokers.items()} == expected, n
        assert md.controller_id == controller_id, n
        raw = metadata(n.port)
        assert raw.brokers == expected, n
        assert raw.controller_id == controller_id, n

    text = kcat("-b", cluster.node(2).bootstrap, "-L")
    assert " 3 brokers:" in text, text
    for b, (host, port) in expected.items():
        assert f"broker {b} at {host}:{port}" in text, text
    assert f"broker {controller_id} at 127.0.0.1:{controller.port} (controller)" in text, text
    listed = json.loads(kcat("-b", cluster.node(3).bootstrap, "-L", "-J"))
    assert sorted(b["id"] for b in listed["brokers"]) == sorted(expected)
    assert listed["controllerid"] == controller_id

    # SIGTERM stops every node, each with exit code 0.
    assert cluster.terminate_all() == {1: 0, 2: 0, 3: 0}


def test_create_topic_through_any_node(cluster):
    name = topic_name()
    n2, n3 = cluster.node(2), cluster.node(3)
    assert admin_create(n2, name, 6) is None
    leaders = wait_topic(cluster, name, 6)
    nodes = {node_of(b) for b in leaders.values()}
    assert len(nodes) >= 2, f"6 partitions all on node {nodes}: {leaders}"

    # Replication factor: -1 means 1; more than the live nodes is refused, and nothing
    # is created.
    default_rf = topic_name()
    assert admin_create(n2, default_rf, 2, replication_factor=-1) is None
    not_created = [topic_name(), topic_name()]
    assert refused(n2, not_created[0], 2, replication_factor=4) == KafkaError.INVALID_REPLICATION_FACTOR
    assert refused(n3, not_created[1], 2, replication_factor=0) == KafkaError.INVALID_REPLICATION_FACTOR
    assert refused(n3, name, 6) == KafkaError.TOPIC_ALREADY_EXISTS
    assert refused(n3, name, 3) == KafkaError.TOPIC_ALREADY_EXISTS
    wait_topic(cluster, default_rf, 2)
    for n in cluster.nodes:
        md = metadata(n.port)
        assert not set(not_created) & set(md.topics), (n, sorted(md.topics))
        assert len(md.topics[name][1]) == 6

    # Each partition is served by its leader only; any other broker answers
    # NOT_LEADER_OR_FOLLOWER.
    for p, leader in leaders.items():
        assert fetch_error(shard_port(cluster, leader), name, p) == 0
        for n in cluster.nodes:
            if n.node_id != node_of(leader):
                assert fetch_error(n.port, name, p) == NOT_LEADER_OR_FOLLOWER, (p, leader, n)


def test_topic_changes_sent_to_a_follower_are_forwarded(cluster):
    """Raw requests to each node that does not lead the metadata group: the follower
    forwards, and answers once it has applied the change itself."""
    leader = cluster.controller_node()
    followers = [n for n in cluster.nodes if n is not leader]
    for f in followers:
        name = topic_name()
        assert create_topic_raw(f.port, name, 4) == (0, None)
        assert view(f, name, 4) is not None, f"{f} answered before applying {name}"
        wait_topic(cluster, name, 4)
        error_code, _ = create_topic_raw(f.port, name, 4)
        assert error_code == TOPIC_ALREADY_EXISTS
        error_code, _ = create_topic_raw(f.port, topic_name(), 1, replication_factor=4)
        assert error_code == INVALID_REPLICATION_FACTOR

        assert create_partitions_raw(f.port, name, 7) == (0, None)
        assert view(f, name, 7) is not None, f"{f} answered before growing {name}"
        wait_topic(cluster, name, 7)

        assert alter_topic_configs_raw(f.port, name, {"retention.ms": "7654321"}) == (0, None)
        assert topic_config_raw(f.port, name, "retention.ms") == (0, "7654321")
        for n in cluster.nodes:
            wait_for(f"retention.ms of {name} on {n}",
                     lambda: topic_config_raw(n.port, name, "retention.ms") == (0, "7654321"),
                     SPREAD_TIMEOUT_S)

        assert delete_topic_raw(f.port, name) == 0
        assert name not in metadata(f.port).topics, f"{f} answered before deleting {name}"
        for n in cluster.nodes:
            wait_for(f"{name} gone from {n}", lambda: name not in metadata(n.port).topics,
                     SPREAD_TIMEOUT_S)


def test_produce_through_one_node_consume_in_a_group_through_another(cluster):
    name = topic_name()
    n1, n3 = cluster.node(1), cluster.node(3)
    assert admin_create(n1, name, 6) is None
    leaders = wait_topic(cluster, name, 6)
    assert len({node_of(b) for b in leaders.values()}) >= 2, leaders

    records = [(name, i % 6, f"value-{i:04d}".encode()) for i in range(600)]
    acked = produce(n1.bootstrap, records)
    assert sorted(p for _, p in acked) == list(range(6))
    for (_, p), msgs in acked.items():
        assert [o for o, _ in msgs] == list(range(100)), f"partition {p}: offsets not dense"
        sent = [v for t, q, v in records if q == p]
        assert [v for _, v in msgs] == sent, f"partition {p}: send order lost"

    group = "g-" + uuid.uuid4().hex[:10]
    consumer = Consumer({
        "bootstrap.servers": n3.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([name])
    got = {}
    count = 0
    try:
        deadline = time.time() + 40
        settle_until = None
        while time.time() < deadline and (settle_until is None or time.time() < settle_until):
            m = consumer.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.setdefault((m.topic(), m.partition()), []).append((m.offset(), m.value()))
            count += 1
            if count == len(records) and settle_until is None:
                settle_until = time.time() + 1  # anything beyond them shows up too
        assert got == acked, f"consumed {count} of {len(records)}"
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(name, p) for p in range(6)], timeout=10)
        assert sorted((tp.partition, tp.offset) for tp in committed) == [(p, 100) for p in range(6)]
    finally:
        consumer.close()


def test_metadata_leader_killed(cluster):
    before = topic_name("before")
    assert admin_create(cluster.node(1), before, 6) is None
    leaders = wait_topic(cluster, before, 6)
    acked = produce(cluster.bootstrap_all(), [(before, i % 6, f"b-{i}".encode()) for i in range(60)])

    dead = cluster.controller_node()
    dead.kill9()
    survivors = cluster.live()
    assert len(survivors) == 2

    during = topic_name("during")
    took = admin_create_retrying(survivors[0], during, 4, TAKEOVER_TIMEOUT_S)
    print(f"CreateTopics succeeded {took:.1f}s after node {dead.node_id} was killed")
    alive = {n.node_id for n in survivors}

    def new_controller():
        try:
            ids = {metadata(n.port).controller_id for n in survivors}
        except OSError:
            return False
        return len(ids) == 1 and node_of(next(iter(ids))) in alive
    wait_for("the survivors to name a new controller", new_controller, TAKEOVER_TIMEOUT_S)
    during_leaders = wait_topic(cluster, during, 4, nodes=survivors)

    # The survivors' partitions of `before` keep working, from one of their bootstraps.
    theirs = sorted(p for p, b in leaders.items() if node_of(b) in alive)
    assert theirs, f"no partition of {before} on a survivor: {leaders}"
    bootstrap = cluster.bootstrap_all(survivors)
    more = produce(bootstrap, [(before, p, f"a-{p}-{i}".encode()) for p in theirs for i in range(20)])
    expected = {k: acked[k] + more[k] for k in more}
    assert read_back(bootstrap, before, theirs, sum(map(len, expected.values()))) == expected

    # Back, the killed node learns what happened while it was down, and serves its share.
    dead.start()
    assert wait_topic(cluster, during, 4, timeout=TAKEOVER_TIMEOUT_S) == during_leaders
    assert wait_topic(cluster, before, 6) == leaders
    produce(cluster.bootstrap_all(), [(during, p, f"d-{p}".encode()) for p in range(4)],
            timeout=TAKEOVER_TIMEOUT_S)
    mine = sorted(p for p, b in leaders.items() if node_of(b) == dead.node_id)
    if mine:
        assert read_back(dead.bootstrap, before, mine, sum(len(acked[(before, p)]) for p in mine)) \
            == {(before, p): acked[(before, p)] for p in mine}


def test_every_node_killed_and_restarted(cluster):
    topics = {topic_name("a"): 6, topic_name("b"): 3}
    leaders = {}
    for i, (name, partitions) in enumerate(topics.items()):
        assert admin_create(cluster.node(i + 1), name, partitions) is None
        leaders[name] = wait_topic(cluster, name, partitions)
    records = [(name, i % n, f"{name}-{i}".encode()) for name, n in topics.items() for i in range(150)]
    acked = produce(cluster.bootstrap_all(), records)

    a = next(iter(topics))
    group = "g-" + uuid.uuid4().hex[:10]
    committer = Consumer({"bootstrap.servers": cluster.node(2).bootstrap, "group.id": group,
                          "enable.auto.commit": False})
    offsets = [TopicPartition(a, p, 10 + p) for p in range(6)]
    committer.commit(offsets=offsets, asynchronous=False)
    committer.close()

    cluster.kill9_all()
    cluster.start()
    cluster.wait_formed()
    for name, partitions in topics.items():
        assert wait_topic(cluster, name, partitions, timeout=TAKEOVER_TIMEOUT_S) == leaders[name]
    for name, partitions in topics.items():
        expected = only(acked, name)
        got = read_back(cluster.bootstrap_all(), name, partitions, sum(map(len, expected.values())))
        assert got == expected, name

    reader = Consumer({"bootstrap.servers": cluster.node(3).bootstrap, "group.id": group,
                       "enable.auto.commit": False})
    try:
        committed = reader.committed([TopicPartition(a, p) for p in range(6)], timeout=15)
        assert [(tp.partition, tp.offset) for tp in committed] == [(p, 10 + p) for p in range(6)]
    finally:
        reader.close()

    # Offsets go on from where they were.
    after = produce(cluster.bootstrap_all(), [(a, p, b"after") for p in range(6)])
    assert after == {(a, p): [(len(acked[(a, p)]), b"after")] for p in range(6)}


def test_two_of_three_down(cluster):
    name = topic_name()
    assert admin_create(cluster.node(1), name, 6) is None
    leaders = wait_topic(cluster, name, 6)
    holders = {node_of(b) for b in leaders.values()}
    # The lone survivor is the metadata leader if it holds a partition: a leader left alone
    # must not commit changes either.
    controller = cluster.controller_node()
    survivor = controller if controller.node_id in holders else cluster.node(min(holders))
    for n in cluster.nodes:
        if n is not survivor:
            n.kill9()

    lost = topic_name("lost")
    started = time.time()
    admin = survivor.admin()
    futures = admin.create_topics([NewTopic(lost, num_partitions=2, replication_factor=1)],
                                  request_timeout=10)
    try:
        futures[lost].result(timeout=20)
        raise AssertionError("CreateTopics succeeded with 2 of 3 nodes down")
    except KafkaException as e:
        assert e.args[0].code() in (
            KafkaError.NOT_CONTROLLER, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
        ), e
    except concurrent.futures.TimeoutError:
        pass
    print(f"AdminClient CreateTopics failed after {time.time() - started:.1f}s")

    raw = topic_name("raw")
    started = time.time()
    error_code, message = create_topic_raw(survivor.port, raw, 2, socket_timeout=45)
    assert error_code in (NOT_CONTROLLER, REQUEST_TIMED_OUT), (error_code, message)
    print(f"raw CreateTopics: error {error_code} after {time.time() - started:.1f}s")
    md = metadata(survivor.port)
    assert lost not in md.topics and raw not in md.topics, sorted(md.topics)

    # Its own partitions still take and serve records (not idempotent: a new producer id
    # may need the metadata group).
    mine = sorted(p for p, b in leaders.items() if node_of(b) == survivor.node_id)
    acked = produce(survivor.bootstrap, [(name, p, f"{p}-{i}".encode()) for p in mine for i in range(30)],
                    idempotent=False)
    assert read_back(survivor.bootstrap, name, mine, 30 * len(mine)) == acked


def test_two_shards_per_node(make_cluster):
    cluster = make_cluster(shards=2)
    expected = {broker_id(n.node_id, k): ("127.0.0.1", n.port + k)
                for n in cluster.nodes for k in range(2)}
    assert sorted(expected) == [1024, 1025, 2048, 2049, 3072, 3073]
    for n in cluster.nodes:
        for port in n.ports:
            assert metadata(port).brokers == expected, (n, port)

    name = topic_name()
    assert admin_create(cluster.node(3), name, 12) is None
    leaders = wait_topic(cluster, name, 12)
    assert len({node_of(b) for b in leaders.values()}) >= 2, leaders
    for p, leader in leaders.items():
        assert fetch_error(shard_port(cluster, leader), name, p) == 0
        other_shard = leader ^ 1  # the other shard of the same node
        assert fetch_error(shard_port(cluster, other_shard), name, p) == NOT_LEADER_OR_FOLLOWER

    # Bootstrapped on shard 1 of node 1 only; read back through node 2 only.
    acked = produce(f"127.0.0.1:{cluster.node(1).port + 1}",
                    [(name, i % 12, f"v{i}".encode()) for i in range(240)])
    assert read_back(cluster.node(2).bootstrap, name, 12, 240) == acked


def test_a_node_that_is_down_is_not_advertised(cluster):
    """Survivors stop advertising a killed node: its brokers leave Metadata, its
    partitions show no leader (clients are not sent to a dead address), and new
    partitions go to the nodes that are up; back, it is advertised again."""
    name = topic_name("offline")
    assert admin_create(cluster.node(2), name, 6) is None
    leaders = wait_topic(cluster, name, 6)
    controller = cluster.controller_node()
    dead = next(n for n in cluster.nodes if n is not controller)
    dead.kill9()
    survivors = cluster.live()
    theirs = {p for p, b in leaders.items() if node_of(b) == dead.node_id}
    assert theirs, f"no partition of {name} on node {dead.node_id}: {leaders}"

    def offline_everywhere():
        for n in survivors:
            md = metadata(n.port)
            if {node_of(b) for b in md.brokers} != {s.node_id for s in survivors}:
                return False
            partitions = md.topics[name][1]
            if {p for p, b in partitions.items() if b == -1} != theirs:
                return False
        return True
    wait_for(f"survivors to stop advertising node {dead.node_id}", offline_everywhere,
             TAKEOVER_TIMEOUT_S)
    # What a real client sees: those partitions have no leader, the others do.
    md = survivors[0].list_topics()
    for p, meta in md.topics[name].partitions.items():
        assert (meta.leader == -1) == (p in theirs), (p, meta.leader)
        if p in theirs:
            assert meta.error is not None and meta.error.code() == KafkaError.LEADER_NOT_AVAILABLE

    # New partitions are placed on the nodes that are up.
    during = topic_name("placed")
    admin_create_retrying(survivors[0], during, 4, TAKEOVER_TIMEOUT_S)
    placed = wait_topic(cluster, during, 4, nodes=survivors)
    assert {node_of(b) for b in placed.values()} <= {s.node_id for s in survivors}, placed

    dead.start()
    assert wait_topic(cluster, name, 6, timeout=TAKEOVER_TIMEOUT_S) == leaders


def test_paused_metadata_leader(cluster):
    """The metadata leader frozen (SIGSTOP) past an election timeout: the others elect a
    new leader and take changes; thawed, the old leader's first request is not committed
    on its stale term — it steps down, forwards or refuses, and ends with the same
    topics as everyone."""
    old = cluster.controller_node()
    others = [n for n in cluster.nodes if n is not old]
    os.kill(old.pid, signal.SIGSTOP)
    try:
        during = topic_name("paused")
        took = admin_create_retrying(others[0], during, 3, TAKEOVER_TIMEOUT_S)
        print(f"CreateTopics succeeded {took:.1f}s after the leader was paused")
        wait_topic(cluster, during, 3, nodes=others)
    finally:
        os.kill(old.pid, signal.SIGCONT)
    # At once, before it has heard from anyone: a change sent to the thawed node.
    raced = topic_name("thawed")
    error_code, message = create_topic_raw(old.port, raced, 2, socket_timeout=40)
    print(f"a change sent to the thawed leader: error {error_code} {message}")
    assert error_code in (0, NOT_CONTROLLER, REQUEST_TIMED_OUT), (error_code, message)

    def agreed():
        try:
            views = [set(metadata(n.port).topics) for n in cluster.nodes]
        except OSError:
            return False
        return all(v == views[0] for v in views) and during in views[0]
    wait_for("every node to agree on the topics", agreed, TAKEOVER_TIMEOUT_S)
    topics = set(metadata(old.port).topics)
    assert (raced in topics) == (error_code == 0), (error_code, sorted(topics))


@pytest.mark.parametrize("args, says", [
    (["--peers", "1@127.0.0.1:19192"], "--peers needs --node-id"),
    (["--node-id", "2", "--rpc-listen", "127.0.0.1:19192", "--peers", "1@127.0.0.1:19192"],
     "--node-id 2 is not among --peers"),
    (["--node-id", "1", "--peers", "1@127.0.0.1:19192"], "--peers needs --rpc-listen"),
    (["--node-id", "1"], "give --peers too"),
    (["--node-id", "1", "--rpc-listen", "127.0.0.1:19192", "--peers", "1@nowhere"],
     "is not HOST:PORT"),
    (["--node-id", "1", "--rpc-listen", "127.0.0.1:19192", "--peers", "1@127.0.0.1:1,1@127.0.0.1:2"],
     "names node 1 twice"),
])
def test_cluster_flags_are_checked_at_start(tmp_path, args, says):
    from conftest import STRAND_BIN
    result = subprocess.run(
        [STRAND_BIN, "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:19092",
         *args], capture_output=True, timeout=30)
    assert result.returncode != 0
    assert says in result.stderr.decode(errors="replace"), result.stderr


def test_a_node_alones_data_dir_does_not_join_a_cluster(tmp_path):
    from conftest import STRAND_BIN, Broker
    alone = Broker(tmp_path, shards=1)
    alone.start()
    alone.terminate()
    result = subprocess.run(
        [STRAND_BIN, "serve", "--data-dir", str(alone.data_dir), "--listen", "127.0.0.1:19092",
         "--node-id", "1", "--rpc-listen", "127.0.0.1:19192", "--peers", "1@127.0.0.1:19192"],
        capture_output=True, timeout=30)
    assert result.returncode != 0
    assert "holds the metadata of a node running alone" in result.stderr.decode(), result.stderr


# ------------------------------------------------------------ replicated partitions

def segment_batches(node, topic, partition):
    """(base offset, length, leader epoch, crc) of every batch in a replica's segment
    files, in order (the 61-byte batch headers, up to the first hole)."""
    import struct
    out = []
    part_dir = node.data_dir / f"{topic}-{partition}"
    for path in sorted(part_dir.glob("*.log")):
        data = path.read_bytes()
        at = 0
        while at + 61 <= len(data):
            base, length, epoch = struct.unpack_from(">qii", data, at)
            if length <= 0:
                break
            crc = struct.unpack_from(">I", data, at + 17)[0]
            out.append((base, length, epoch, crc))
            at += 12 + length
    return out


def replicated_view(node, topic):
    """{partition: (leader, epoch, replicas, isr)} in confluent-kafka's metadata of a node."""
    md = node.list_topics()
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return {p.id: (p.leader, p.replicas, p.isrs) for p in t.partitions.values()}


def wait_replicated(cluster, topic, partitions, replicas, nodes=None, timeout=TAKEOVER_TIMEOUT_S):
    """Waits until every given node shows each partition with a leader and `replicas`
    replicas, the same everywhere; returns {partition: leader}."""
    nodes = cluster.live() if nodes is None else nodes

    def agreed():
        views = []
        for n in nodes:
            v = replicated_view(n, topic)
            if v is None or len(v) != partitions:
                return None
            if any(leader < 0 or len(r) != replicas for leader, r, _ in v.values()):
                return None
            views.append({p: leader for p, (leader, _, _) in v.items()})
        return views[0] if all(v == views[0] for v in views) else None
    return wait_for(f"{topic} led everywhere", agreed, timeout)


class ProducerLoop:
    """An idempotent acks=all producer writing v-0, v-1, … round-robin to the first
    `partitions` partitions of `topic`, in a thread of its own until `stop()`: `acked`
    {value: (partition, offset)}, delivery `errors`, and `ack_times` per partition."""

    def __init__(self, bootstrap, topic, partitions):
        import threading
        self.acked, self.errors = {}, []
        self.ack_times = {p: [] for p in range(partitions)}
        self._done = threading.Event()
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                   "acks": "all", "linger.ms": 5, "message.timeout.ms": 60_000})
        self._thread = threading.Thread(target=self._run, args=(topic, partitions))
        self._thread.start()

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[msg.value()] = (msg.partition(), msg.offset())
            self.ack_times[msg.partition()].append(time.time())

    def _run(self, topic, partitions):
        i = 0
        while not self._done.is_set():
            try:
                self._producer.produce(topic, value=f"v-{i}".encode(), partition=i % partitions,
                                       on_delivery=self._on_delivery)
                i += 1
            except BufferError:
                pass
            self._producer.poll(0.002)
        self._producer.flush(60)

    def stop(self):
        """Stops producing and waits for every delivery report."""
        self._done.set()
        self._thread.join(90)


def test_replicated_topic_keeps_every_acked_record_through_a_leader_kill(cluster):
    """rf 3: an idempotent acks=all producer runs while the leader of partition 0 is
    killed -9; a new leader is elected and the producer carries on; every acknowledged
    record is read back exactly once at its offset; the killed node, restarted, catches
    up and every replica holds the same batches."""
    name = topic_name("r3")
    assert admin_create(cluster.node(2), name, 3, replication_factor=3) is None
    leaders = wait_replicated(cluster, name, 3, 3)
    assert len({node_of(b) for b in leaders.values()}) >= 2, f"leaders not spread: {leaders}"
    # Only the leader serves; followers answer NOT_LEADER_OR_FOLLOWER.
    for p, leader in leaders.items():
        assert fetch_error(shard_port(cluster, leader), name, p) == 0
        for n in cluster.nodes:
            if n.node_id != node_of(leader):
                assert fetch_error(n.port, name, p) == NOT_LEADER_OR_FOLLOWER, (p, n)

    writer = ProducerLoop(cluster.bootstrap_all(), name, 3)
    acked, errors = writer.acked, writer.errors
    try:
        wait_for("records acknowledged", lambda: len(acked) > 300, 20)
        victim = cluster.node(node_of(leaders[0]))
        on_p0 = lambda: sum(1 for q, _ in list(acked.values()) if q == 0)  # noqa: E731
        before = on_p0()
        killed_at = time.time()
        victim.kill9()
        wait_for("partition 0 acks after its leader was killed",
                 lambda: on_p0() > before + 100, 30)
        print(f"partition 0 acks resumed within {time.time() - killed_at:.1f}s of the kill")
    finally:
        writer.stop()
    assert errors == [], errors[:5]
    survivors = cluster.live()
    new = wait_replicated(cluster, name, 3, 3, nodes=survivors)
    assert node_of(new[0]) != victim.node_id, new

    victim.start()
    wait_replicated(cluster, name, 3, 3)
    # Read everything back from the leaders.
    per_partition = {p: sorted((o, v) for v, (q, o) in acked.items() if q == p) for p in range(3)}
    got = read_back(cluster.bootstrap_all(), name, [0, 1, 2], len(acked), timeout=60)
    for p in range(3):
        records = got.get((name, p), [])
        values = [v for _, v in records]
        assert len(values) == len(set(values)), f"partition {p}: duplicates"
        assert set(per_partition[p]) <= set(records), \
            f"partition {p}: {len(set(per_partition[p]) - set(records))} acked records missing or moved"

    # The restarted replica catches up: every replica holds the same batches.
    def identical():
        for p in range(3):
            logs = [segment_batches(n, name, p) for n in cluster.nodes]
            if not all(log == logs[0] for log in logs) or len(logs[0]) < len(per_partition[p]) // 50:
                return False
        return True
    wait_for("every replica to hold the same batches", identical, TAKEOVER_TIMEOUT_S)


def test_replication_factor_two_on_three_nodes(cluster):
    """rf 2 of 3: the node holding no replica of a partition still names its leader;
    produce and consume through that node's bootstrap."""
    name = topic_name("r2")
    assert admin_create(cluster.node(1), name, 3, replication_factor=2) is None
    leaders = wait_replicated(cluster, name, 3, 2)
    md = cluster.node(1).list_topics()
    holders = [{r // 1024 for r in md.topics[name].partitions[p].replicas} for p in range(3)]
    assert all(len(h) == 2 for h in holders), holders
    outsider = next(n for n in cluster.nodes if any(n.node_id not in h for h in holders))
    acked = produce(outsider.bootstrap, [(name, i % 3, f"x-{i}".encode()) for i in range(90)])
    got = read_back(outsider.bootstrap, name, [0, 1, 2], 90)
    assert got == acked
    assert set(leaders.values()) <= set(cluster.broker_ids())


def test_every_client_skips_a_new_leaders_control_batch(cluster):
    """A replicated partition's first entry of each term is a LEADER_CHANGE control batch
    (it takes an offset, as a transaction marker does): kafka-python, aiokafka and kcat
    read past it like confluent-kafka does."""
    import asyncio

    import aiokafka
    import kafka
    name = topic_name("ctl")
    assert admin_create(cluster.node(1), name, 1, replication_factor=3) is None
    wait_replicated(cluster, name, 1, 3)
    acked = produce(cluster.bootstrap_all(), [(name, 0, f"v{i}".encode()) for i in range(20)])
    expected = acked[(name, 0)]
    assert expected[0][0] >= 1, "the leader's control batch takes offset 0"

    consumer = kafka.KafkaConsumer(bootstrap_servers=cluster.bootstrap_all().split(","),
                                   auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([kafka.TopicPartition(name, 0)])
    consumer.seek_to_beginning()
    assert [(m.offset, m.value) for m in consumer] == expected
    consumer.close()

    async def with_aiokafka():
        c = aiokafka.AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap_all(),
                                      auto_offset_reset="earliest")
        await c.start()
        try:
            tp = aiokafka.TopicPartition(name, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            got = []
            while len(got) < len(expected):
                batches = await asyncio.wait_for(c.getmany(timeout_ms=1000), 10)
                for msgs in batches.values():
                    got += [(m.offset, m.value) for m in msgs]
            return got
        finally:
            await c.stop()
    assert asyncio.run(with_aiokafka()) == expected

    out = kcat("-b", cluster.node(2).bootstrap, "-C", "-t", name, "-o", "beginning", "-e",
               "-f", "%o %s\\n")
    assert [tuple(line.split(" ", 1)) for line in out.splitlines()] == \
        [(str(o), v.decode()) for o, v in expected]


# ------------------------------------------------- in-sync replicas, epochs, leader hints

NOT_ENOUGH_REPLICAS = 19
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


def produce_one(bootstrap, topic, acks, partition=0, timeout_s=20):
    """One record, not idempotent and never retried, so the broker's own answer is the
    delivery error: None (acknowledged) or the KafkaError."""
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": str(acks),
        "retries": 0, "message.timeout.ms": timeout_s * 1000,
    })
    outcome = []
    producer.produce(topic, value=f"one-{uuid.uuid4().hex}".encode(), partition=partition,
                     on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(timeout_s + 5)
    assert len(outcome) == 1, "no delivery report"
    return outcome[0]


def wait_produce_error(bootstrap, topic, acks, code, timeout=TAKEOVER_TIMEOUT_S):
    """Produces single records until one fails with `code` (other failures, such as a
    leader not known yet, are retried); fails if one is acknowledged."""
    def attempt():
        err = produce_one(bootstrap, topic, acks, timeout_s=5)
        assert err is None or err.code() != KafkaError.NO_ERROR
        if err is None:
            raise AssertionError(f"acks={acks} produce to {topic} acknowledged; expected {code}")
        return err.code() == code
    return wait_for(f"acks={acks} produce to fail with {code}", attempt, timeout, interval=0.5)


def wait_isr(node, topic, size, timeout=TAKEOVER_TIMEOUT_S):
    """Waits until `node`'s metadata shows partition 0 of `topic` with `size` in-sync
    replicas (the leader noticed a follower go or come back)."""
    def shown():
        v = replicated_view(node, topic)
        return v is not None and len(v[0][2]) == size
    wait_for(f"{topic} with {size} in-sync replicas on {node}", shown, timeout)


def set_min_insync(node, topic, value):
    """Sets the topic's only override, min.insync.replicas, through `node` (AlterConfigs,
    forwarded to the metadata leader; retried while a new one is elected)."""
    def done():
        code, message = alter_topic_configs_raw(node.port, topic, {"min.insync.replicas": str(value)})
        assert code in (0, NOT_CONTROLLER, REQUEST_TIMED_OUT), (code, message)
        return code == 0
    wait_for("min.insync.replicas changed", done, TAKEOVER_TIMEOUT_S, interval=0.5)


def test_min_insync_replicas_refuses_acks_all_but_not_acks_1(cluster):
    """rf 3, min.insync.replicas 3: acks=all is acknowledged while all three replicas are
    in sync; with one follower killed it is refused with NOT_ENOUGH_REPLICAS (never
    acknowledged), while acks=1 still is. Lowered to 2, acks=all goes through again; with
    the second follower killed too, it is refused again. Nothing acknowledged is lost."""
    name = topic_name("isr")
    admin = cluster.node(1).admin()
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=3,
                                            config={"min.insync.replicas": "3"})])
    futures[name].result(timeout=20)
    leaders = wait_replicated(cluster, name, 1, 3)
    leader = cluster.node(node_of(leaders[0]))
    followers = [n for n in cluster.nodes if n is not leader]
    acked = produce(leader.bootstrap, [(name, 0, f"a{i}".encode()) for i in range(10)])

    followers[0].kill9()
    wait_isr(leader, name, 2)
    wait_produce_error(leader.bootstrap, name, "all", KafkaError.NOT_ENOUGH_REPLICAS)
    assert produce_one(leader.bootstrap, name, 1) is None, "acks=1 refused with 2 of 3 in sync"

    set_min_insync(leader, name, 2)
    wait_for("acks=all accepted with min.insync.replicas 2",
             lambda: produce_one(leader.bootstrap, name, "all", timeout_s=5) is None, SPREAD_TIMEOUT_S)
    more = produce(leader.bootstrap, [(name, 0, f"b{i}".encode()) for i in range(10)])

    followers[1].kill9()
    wait_isr(leader, name, 1)
    wait_produce_error(leader.bootstrap, name, "all", KafkaError.NOT_ENOUGH_REPLICAS)

    followers[0].start()
    followers[1].start()
    wait_replicated(cluster, name, 1, 3)
    got = read_back(cluster.bootstrap_all(), name, [0], 22, timeout=60)[(name, 0)]
    values = [v for _, v in got]
    for offset, value in acked[(name, 0)] + more[(name, 0)]:
        assert (offset, value) in got, f"acknowledged {value} at {offset} missing"
    assert len(values) == len(set(values)), "duplicates"


def test_two_of_three_replicas_down_is_not_enough_replicas(cluster):
    """rf 3, min.insync.replicas 2, both followers killed: the leader left alone answers
    acks=all with NOT_ENOUGH_REPLICAS, both before and after it steps down for lack of a
    quorum; it never acknowledges."""
    name = topic_name("ner")
    admin = cluster.node(1).admin()
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[name].result(timeout=20)
    leaders = wait_replicated(cluster, name, 1, 3)
    survivor = cluster.node(node_of(leaders[0]))
    produce(survivor.bootstrap, [(name, 0, b"before")])
    for n in cluster.nodes:
        if n is not survivor:
            n.kill9()
    wait_produce_error(survivor.bootstrap, name, "all", KafkaError.NOT_ENOUGH_REPLICAS)
    # Past an election timeout (1-2 s) the lone replica is no leader; still refused.
    time.sleep(3)
    wait_produce_error(survivor.bootstrap, name, "all", KafkaError.NOT_ENOUGH_REPLICAS)


# Raw requests (the versions that carry leader epochs and KIP-951 hints).

def _i32s(*values):
    return struct.pack(">" + "i" * len(values), *values)


def _uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_uvarint(buf, at):
    shift = value = 0
    while True:
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def _cstring(s):
    b = s.encode()
    return _uvarint(len(b) + 1) + b


def _read_cstring(buf, at):
    n, at = _read_uvarint(buf, at)
    if n == 0:
        return None, at
    return buf[at:at + n - 1].decode(), at + n - 1


def _read_tags(buf, at):
    """A tagged-field section: ({tag: bytes}, position after it)."""
    tags = {}
    count, at = _read_uvarint(buf, at)
    for _ in range(count):
        tag, at = _read_uvarint(buf, at)
        size, at = _read_uvarint(buf, at)
        tags[tag] = buf[at:at + size]
        at += size
    return tags, at


def _call_flexible(port, api_key, version, body, timeout=10):
    """A request with a v2 header; the response body after its v1 header."""
    msg = (struct.pack(">hhi", api_key, version, 9) + struct.pack(">h", 4) + b"test"
           + b"\x00" + body)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        response = _recv_exact(sock, size)
    assert struct.unpack_from(">i", response)[0] == 9
    _, at = _read_tags(response, 4)
    return response[at:]


def _recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the broker")
        out += chunk
    return bytes(out)


def produce_v10_hint(port, topic, partition):
    """Produce v10 of an empty (null) batch: (error code, current leader (id, epoch) or
    None, {node id: (host, port)} of the response's node endpoints) — KIP-951."""
    body = (_uvarint(0) + struct.pack(">hi", -1, 5000)
            + _uvarint(2) + _cstring(topic)
            + _uvarint(2) + struct.pack(">i", partition) + _uvarint(0) + b"\x00"
            + b"\x00" + b"\x00")
    r = _call_flexible(port, 0, 10, body)
    n, at = _read_uvarint(r, 0)
    assert n == 2
    got, at = _read_cstring(r, at)
    assert got == topic
    n, at = _read_uvarint(r, at)
    assert n == 2
    index, code = struct.unpack_from(">ih", r, at)
    assert index == partition
    at += 6 + 24
    n, at = _read_uvarint(r, at)  # record errors
    assert n <= 1
    _, at = _read_cstring(r, at)  # error message
    tags, at = _read_tags(r, at)
    leader = struct.unpack(">ii", tags[0][:8]) if 0 in tags else None
    _, at = _read_tags(r, at)  # topic
    at += 4  # throttle
    tags, at = _read_tags(r, at)
    assert at == len(r), f"produce v10: {len(r) - at} bytes left over"
    endpoints = {}
    if 0 in tags:
        e = tags[0]
        n, pos = _read_uvarint(e, 0)
        for _ in range(n - 1):
            node = struct.unpack_from(">i", e, pos)[0]
            host, pos = _read_cstring(e, pos + 4)
            p = struct.unpack_from(">i", e, pos)[0]
            _, pos = _read_cstring(e, pos + 4)
            _, pos = _read_tags(e, pos)
            endpoints[node] = (host, p)
    return code, leader, endpoints


def list_offsets_epoch(port, topic, partition, current_epoch=-1):
    """ListOffsets v4 of the log end: (error code, offset, leader epoch)."""
    body = (struct.pack(">ib", -1, 0) + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iiiq", 1, partition, current_epoch, -1))
    r = call(port, 2, 4, body)
    at = 4 + 4
    _, at = _read_string(r, at)
    assert struct.unpack_from(">i", r, at)[0] == 1
    index, code, _, offset, epoch = struct.unpack_from(">ihqqi", r, at + 4)
    assert index == partition
    return code, offset, epoch


def fetch_v9_error(port, topic, partition, current_epoch, offset=0):
    """Fetch v9 (no wait) of one partition with its current_leader_epoch: the error code."""
    body = (struct.pack(">iiiibii", -1, 0, 0, 1 << 20, 0, 0, -1)
            + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iiiqqi", 1, partition, current_epoch, offset, -1, 1 << 20)
            + struct.pack(">i", 0))
    r = call(port, 1, 9, body)
    at = 4 + 2 + 4
    assert struct.unpack_from(">i", r, at)[0] == 1
    _, at = _read_string(r, at + 4)
    assert struct.unpack_from(">i", r, at)[0] == 1
    index, code = struct.unpack_from(">ih", r, at + 4)
    assert index == partition
    return code


def offset_for_leader_epoch(port, topic, partition, epoch, current_epoch=-1):
    """OffsetForLeaderEpoch v2: (error code, leader epoch, end offset)."""
    body = (struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iiii", 1, partition, current_epoch, epoch))
    r = call(port, 23, 2, body)
    at = 4
    assert struct.unpack_from(">i", r, at)[0] == 1
    _, at = _read_string(r, at + 4)
    assert struct.unpack_from(">i", r, at)[0] == 1
    code, index, leader_epoch, end = struct.unpack_from(">hiiq", r, at + 4)
    assert index == partition
    return code, leader_epoch, end


def test_leader_epochs_fence_and_followers_name_the_leader(cluster):
    """The leader epoch is the Raft term: ListOffsets reports it; a Fetch with an older
    current_leader_epoch is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH;
    OffsetForLeaderEpoch answers from the epoch cache (the old epoch ends where the new
    leader's starts); a follower answers Produce with NOT_LEADER_OR_FOLLOWER naming the
    leader, its epoch and endpoint (KIP-951)."""
    name = topic_name("ep")
    assert admin_create(cluster.node(1), name, 1, replication_factor=3) is None
    leaders = wait_replicated(cluster, name, 1, 3)
    leader = cluster.node(node_of(leaders[0]))
    code, _, epoch = list_offsets_epoch(leader.port, name, 0)
    assert code == 0 and epoch >= 1, (code, epoch)
    assert fetch_v9_error(leader.port, name, 0, epoch) == 0
    assert fetch_v9_error(leader.port, name, 0, epoch - 1) == FENCED_LEADER_EPOCH
    assert fetch_v9_error(leader.port, name, 0, epoch + 1) == UNKNOWN_LEADER_EPOCH
    assert list_offsets_epoch(leader.port, name, 0, epoch - 1)[0] == FENCED_LEADER_EPOCH
    acked = produce(leader.bootstrap, [(name, 0, f"e{i}".encode()) for i in range(20)])
    end = acked[(name, 0)][-1][0] + 1
    assert offset_for_leader_epoch(leader.port, name, 0, epoch, epoch) == (0, epoch, end)
    assert offset_for_leader_epoch(leader.port, name, 0, epoch, epoch + 1)[0] == UNKNOWN_LEADER_EPOCH

    for n in cluster.nodes:
        if n is not leader:
            code, hint, endpoints = produce_v10_hint(n.port, name, 0)
            assert code == NOT_LEADER_OR_FOLLOWER, code
            assert hint == (leaders[0], epoch), hint
            assert endpoints == {leaders[0]: ("127.0.0.1", leader.port)}, endpoints

    leader.kill9()
    survivors = cluster.live()
    new = wait_for("a new leader", lambda: (lambda v: v if node_of(v[0]) != leader.node_id else None)(
        wait_replicated(cluster, name, 1, 3, nodes=survivors)), TAKEOVER_TIMEOUT_S)
    successor = cluster.node(node_of(new[0]))

    def new_epoch():
        code, _, e = list_offsets_epoch(successor.port, name, 0)
        return e if code == 0 and e > epoch else None
    epoch2 = wait_for("the new leader's epoch", new_epoch, TAKEOVER_TIMEOUT_S)
    assert fetch_v9_error(successor.port, name, 0, epoch) == FENCED_LEADER_EPOCH
    # The old epoch ends where the new leader's first entry starts: after every record
    # acknowledged in it.
    code, got_epoch, got_end = offset_for_leader_epoch(successor.port, name, 0, epoch, epoch2)
    assert (code, got_epoch) == (0, epoch) and got_end == end, (code, got_epoch, got_end, end)
    other = next(n for n in survivors if n is not successor)
    code, hint, endpoints = produce_v10_hint(other.port, name, 0)
    assert code == NOT_LEADER_OR_FOLLOWER and hint == (new[0], epoch2), (code, hint)
    assert endpoints == {new[0]: ("127.0.0.1", successor.port)}, endpoints


def test_a_follower_that_falls_behind_leaves_the_isr(make_cluster):
    """`--replica-lag-time-max-ms 2000`: a follower paused with SIGSTOP (its links stay
    up) while records flow leaves the ISR every node's Metadata shows, and acks=all goes
    on with the two others; thawed, it catches up and is back in the ISR."""
    c = make_cluster(extra=["--replica-lag-time-max-ms", "2000"])
    name = topic_name("lag")
    assert admin_create(c.node(1), name, 1, replication_factor=3) is None
    leaders = wait_replicated(c, name, 1, 3)
    leader = c.node(node_of(leaders[0]))
    wait_isr(leader, name, 3)
    lagging = next(n for n in c.nodes if n is not leader)
    os.kill(lagging.pid, signal.SIGSTOP)
    try:
        acked = produce(leader.bootstrap, [(name, 0, f"l{i}".encode()) for i in range(20)])
        started = time.time()

        def shrunk():
            produce(leader.bootstrap, [(name, 0, b"tick")])
            v = replicated_view(leader, name)
            return v is not None and broker_id(lagging.node_id, 0) not in v[0][2] and len(v[0][2]) == 2
        wait_for("the paused follower to leave the ISR", shrunk, TAKEOVER_TIMEOUT_S, interval=0.5)
        print(f"left the ISR {time.time() - started:.1f}s after records it missed")
        assert len(replicated_view(leader, name)[0][1]) == 3, "still a replica"
    finally:
        os.kill(lagging.pid, signal.SIGCONT)
    wait_isr(leader, name, 3)
    wait_isr(lagging, name, 3)
    got = read_back(leader.bootstrap, name, [0], 20, timeout=30)[(name, 0)]
    assert set(acked[(name, 0)]) <= set(got)


def test_explicit_replica_assignments(cluster):
    """CreateTopics and CreatePartitions with replica lists: each partition's replicas are
    the brokers given, in order (the first is the preferred leader), on every node;
    malformed lists are refused with INVALID_REPLICA_ASSIGNMENT. A config change reaches
    the replicated partitions (max.message.bytes)."""
    from confluent_kafka.admin import NewPartitions
    b = [broker_id(n, 0) for n in (1, 2, 3)]
    name = topic_name("asg")
    admin = cluster.node(2).admin()
    assignment = [[b[0], b[1], b[2]], [b[1], b[2], b[0]], [b[2], b[0], b[1]]]
    admin.create_topics([NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment)])[name].result(timeout=20)
    wait_replicated(cluster, name, 3, 3)
    for n in cluster.nodes:
        v = replicated_view(n, name)
        assert {p: list(r) for p, (_, r, _) in v.items()} == dict(enumerate(assignment)), (n, v)
    # The preferred replica of a new partition stands first.
    wait_for("preferred leaders", lambda: {p: l for p, (l, _, _) in replicated_view(cluster.node(1), name).items()}
             == {p: a[0] for p, a in enumerate(assignment)}, TAKEOVER_TIMEOUT_S)
    acked = produce(cluster.bootstrap_all(), [(name, i % 3, f"a{i}".encode()) for i in range(30)])
    assert read_back(cluster.bootstrap_all(), name, [0, 1, 2], 30) == acked

    admin.create_partitions([NewPartitions(name, 4, replica_assignment=[[b[1], b[0], b[2]]])])[name].result(timeout=20)
    wait_replicated(cluster, name, 4, 3)
    assert list(replicated_view(cluster.node(3), name)[3][1]) == [b[1], b[0], b[2]]

    def refused_assignment(assignment):
        bad = topic_name("bad")
        err = None
        try:
            admin.create_topics([NewTopic(bad, num_partitions=len(assignment), replica_assignment=assignment)])[bad].result(timeout=20)
        except KafkaException as e:
            err = e.args[0]
        assert err is not None, f"{assignment} accepted"
        return err.code()
    assert refused_assignment([[b[0], b[0] + 1]]) == KafkaError.INVALID_REPLICA_ASSIGNMENT  # no shard 1
    assert refused_assignment([[b[0], b[0]]]) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert refused_assignment([[b[0], b[1]], [b[2]]]) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert refused_assignment([[b[0], 9 * 1024]]) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    err = None
    try:
        admin.create_partitions([NewPartitions(name, 5, replica_assignment=[[b[0]]])])[name].result(timeout=20)
    except KafkaException as e:
        err = e.args[0]
    assert err is not None and err.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, err

    # max.message.bytes lowered on the replicated topic: a larger batch is refused.
    code, message = alter_topic_configs_raw(cluster.node(1).port, name, {"max.message.bytes": "1000"})
    assert code == 0, message
    leader = cluster.node(node_of(replicated_view(cluster.node(1), name)[0][0]))

    def too_large():
        p = Producer({"bootstrap.servers": leader.bootstrap, "enable.idempotence": False,
                      "retries": 0, "compression.type": "none", "message.max.bytes": 100_000})
        out = []
        p.produce(name, value=b"x" * 5000, partition=0, on_delivery=lambda e, m: out.append(e))
        p.flush(20)
        return out and out[0] is not None and out[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    wait_for("a 5000-byte batch refused", too_large, SPREAD_TIMEOUT_S, interval=0.5)


def test_a_follower_behind_the_leaders_log_start_catches_up_from_a_snapshot(make_cluster):
    """rf 3, 4 KiB segments, retention.bytes 16 KiB: a follower is killed -9, the leader
    writes on until retention removed every entry the follower would need next. The
    restarted follower is sent where the leader's log starts (a Raft snapshot holding
    only that), drops its log and fetches from there: it ends with the leader's batches,
    byte for byte, and with no batch the leader's log does not hold. Then the leader is
    killed: the caught-up follower is one of the two replicas acks=all needs, and every
    record acknowledged since is read back."""
    c = make_cluster(extra=["--log-retention-check-interval-ms", "200"])
    name = topic_name("snap")
    admin = c.node(1).admin()  # kept: its futures fail once it is collected
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=3,
                  config={"segment.bytes": "4096", "retention.bytes": "16384"})],
        request_timeout=15)
    futures[name].result(timeout=20)
    leaders = wait_replicated(c, name, 1, 3)
    leader = c.node(node_of(leaders[0]))
    follower = next(n for n in c.nodes if n is not leader)
    value = lambda tag, i: f"{tag}{i:05d}-".encode() * 6  # noqa: E731
    produce(leader.bootstrap, [(name, 0, value("a", i)) for i in range(100)])
    wait_for("the follower to hold the records",
             lambda: segment_batches(follower, name, 0) == segment_batches(leader, name, 0), 10)
    held = segment_batches(follower, name, 0)
    follower.kill9()

    def past_the_follower():
        produce(leader.bootstrap, [(name, 0, value("b", i)) for i in range(100)])
        # Past it by more than a produce's batches: a leader whose log starts right after
        # the follower's last entry still has what the follower needs next.
        return segment_batches(leader, name, 0)[0][0] > held[-1][0] + 100
    wait_for("the leader's retention to pass the follower's log end", past_the_follower, 60,
             interval=0.1)
    follower.start()

    def caught_up():
        mine, theirs = segment_batches(follower, name, 0), segment_batches(leader, name, 0)
        if not mine or not theirs or mine[-1] != theirs[-1]:
            return None
        # Each replica applies retention itself: one may keep a segment more.
        shorter, longer = sorted([mine, theirs], key=len)
        return shorter == longer[len(longer) - len(shorter):] and (mine, theirs)
    mine, theirs = wait_for("the follower to catch up", caught_up, TAKEOVER_TIMEOUT_S)
    assert mine[0][0] > held[-1][0], "an entry from before the kill survived"
    assert "installing the leader's snapshot" in follower.log(), "no snapshot was installed"

    leader.kill9()
    survivors = c.live()
    wait_replicated(c, name, 1, 3, nodes=survivors)
    acked = produce(follower.bootstrap, [(name, 0, value("c", i)) for i in range(50)])[(name, 0)]
    records = read_back(follower.bootstrap, name, [0], len(acked), timeout=30)[(name, 0)]
    assert set(acked) <= set(records)
    offsets = [o for o, _ in records]
    # Only a new leader's control batch (one offset, not delivered) may sit between two.
    gaps = [b - a for a, b in zip(offsets, offsets[1:]) if b - a != 1]
    assert all(g == 2 for g in gaps) and len(gaps) <= 3, f"gaps in the log: {gaps}"
    assert offsets[0] > 0


def test_cluster_health_names_leaderless_and_under_replicated_partitions(cluster):
    """`strand cluster health` on a 3-node cluster: exit 0 with every node up; node 3
    killed, exit 1 listing the rf-3 partitions as under-replicated and the rf-1 partitions
    node 3 held as leaderless; restarted, exit 0 again. `strand topic describe` through a
    survivor shows node 3's replica offline meanwhile."""
    import json as _json
    from test_admin_cli import strand
    r3, r1 = topic_name("h3"), topic_name("h1")
    b = ["-b", cluster.bootstrap_all()]
    strand("topic", "create", r3, *b, "-p", "2", "-r", "3")
    strand("topic", "create", r1, *b, "-p", "6", "-r", "1")
    wait_replicated(cluster, r3, 2, 3)
    wait_topic(cluster, r1, 6)
    held = [p for p, (leader, _, _) in replicated_view(cluster.node(1), r1).items()
            if node_of(leader) == 3]
    assert held, "node 3 leads none of the rf-1 partitions"
    wait_for("a healthy cluster", lambda: strand("cluster", "health", *b, check=False)[0] == 0,
             TAKEOVER_TIMEOUT_S)

    cluster.node(3).kill9()
    survivors = ["-b", cluster.bootstrap_all(cluster.live())]

    def unhealthy():
        code, out, _ = strand("cluster", "health", *survivors, "--format", "json", check=False)
        report = _json.loads(out)
        problems = {(p["topic"], p["partition"]): p["problem"] for p in report["problems"]}
        wanted = {(r3, 0): "under-replicated", (r3, 1): "under-replicated",
                  **{(r1, p): "leaderless" for p in held}}
        return code == 1 and all(problems.get(k) == v for k, v in wanted.items()) and report
    report = wait_for("health to report node 3's partitions", unhealthy, TAKEOVER_TIMEOUT_S)
    assert report["healthy"] is False
    described = _json.loads(strand("topic", "describe", r3, *survivors, "--format", "json")[1])
    for p in described["partitions"]:
        assert broker_id(3, 0) in p["replicas"] and broker_id(3, 0) not in p["isr"], p
        assert p["leader"] >= 0 and node_of(p["leader"]) != 3

    cluster.node(3).start()
    wait_for("a healthy cluster again",
             lambda: strand("cluster", "health", *b, check=False)[0] == 0, TAKEOVER_TIMEOUT_S)


def add(acked, more):
    """Adds produce()'s answer `more` to `acked` (both {(topic, partition): [(offset, value)]})."""
    for key, records in more.items():
        acked.setdefault(key, []).extend(records)
        acked[key].sort()


def count(acked):
    return sum(len(v) for v in acked.values())


def leaders_of(node, topic):
    """{partition: leader broker} in `node`'s metadata."""
    return {p: leader for p, (leader, _, _) in replicated_view(node, topic).items()}


def move_leadership_off(cluster, topic, partition, node_id):
    """Kills node `node_id` until another node leads `topic`'s `partition`, then restarts
    it and waits until its replica is back in sync everywhere."""
    cluster.node(node_id).kill9()
    survivor = next(n for n in cluster.live())
    wait_for(f"a leader of {topic}[{partition}] other than node {node_id}",
             lambda: (leaders_of(survivor, topic).get(partition, -1) >= 0
                      and node_of(leaders_of(survivor, topic)[partition]) != node_id),
             TAKEOVER_TIMEOUT_S)
    cluster.node(node_id).start()
    wait_for(f"node {node_id} back in sync",
             lambda: all(broker_id(node_id, 0) in replicated_view(n, topic)[partition][2]
                         for n in cluster.nodes),
             TAKEOVER_TIMEOUT_S)


def test_elect_leaders_moves_leadership_to_the_preferred_replica(make_cluster):
    """With automatic balancing off, a partition whose preferred replica (node 1) was
    killed keeps its new leader after node 1 is back; ElectLeaders (confluent-kafka's
    elect_leaders, PREFERRED) moves it back to node 1 with no acknowledged record lost,
    says ELECTION_NOT_NEEDED for a partition already led by its preferred replica and for
    an unclean election while a leader exists, UNKNOWN_TOPIC_OR_PARTITION for a partition
    that does not exist, and leaves partitions needing nothing out when asked for all."""
    from confluent_kafka import ElectionType
    cluster = make_cluster(extra=["--auto-leader-rebalance-enable", "false"])
    b = [broker_id(n, 0) for n in (1, 2, 3)]
    name = topic_name("el")
    admin = cluster.node(2).admin()
    assignment = [[b[0], b[1], b[2]], [b[1], b[2], b[0]]]
    admin.create_topics([NewTopic(name, num_partitions=2, replica_assignment=assignment)])[name].result(timeout=20)
    wait_replicated(cluster, name, 2, 3)
    wait_for("preferred leaders", lambda: leaders_of(cluster.node(2), name) == {0: b[0], 1: b[1]},
             TAKEOVER_TIMEOUT_S)
    acked = produce(cluster.bootstrap_all(), [(name, i % 2, f"a{i}".encode()) for i in range(40)])

    move_leadership_off(cluster, name, 0, 1)
    add(acked, produce(cluster.bootstrap_all(), [(name, i % 2, f"b{i}".encode()) for i in range(40)]))
    # Nothing moves it back by itself.
    time.sleep(3)
    assert node_of(leaders_of(cluster.node(2), name)[0]) != 1

    tp = [TopicPartition(name, 0), TopicPartition(name, 1), TopicPartition(name, 7)]
    result = admin.elect_leaders(ElectionType.PREFERRED, tp).result(timeout=40)
    codes = {(t.topic, t.partition): (e.code() if e is not None else None) for t, e in result.items()}
    assert codes == {(name, 0): None, (name, 1): KafkaError.ELECTION_NOT_NEEDED,
                     (name, 7): KafkaError.UNKNOWN_TOPIC_OR_PART}, codes
    for n in cluster.nodes:
        wait_for(f"node 1 leading {name}[0] on {n}", lambda: leaders_of(n, name)[0] == b[0],
                 SPREAD_TIMEOUT_S)
    add(acked, produce(cluster.bootstrap_all(), [(name, i % 2, f"c{i}".encode()) for i in range(40)]))
    assert read_back(cluster.bootstrap_all(), name, [0, 1], count(acked)) == acked

    result = admin.elect_leaders(ElectionType.UNCLEAN, [TopicPartition(name, 0)]).result(timeout=40)
    assert [e.code() for e in result.values()] == [KafkaError.ELECTION_NOT_NEEDED]
    # Every partition led by its preferred replica: nothing to report, once the groups'
    # __consumer_offsets partitions (created by read_back's group) have caught up on node 1
    # too: until then ElectLeaders moves those (or says their preferred replica is not in
    # sync).
    wait_for("every partition led by its preferred replica",
             lambda: admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=40) == {},
             TAKEOVER_TIMEOUT_S, interval=1)


def test_leadership_returns_to_preferred_replicas_by_itself(make_cluster):
    """Automatic leader balancing (Kafka's auto.leader.rebalance.enable): after node 1,
    preferred leader of a partition, is killed and restarted, it takes the leadership back
    by itself at its next imbalance check, while a producer keeps writing; every
    acknowledged record is read back."""
    cluster = make_cluster(extra=["--leader-imbalance-check-interval-seconds", "2"])
    b = [broker_id(n, 0) for n in (1, 2, 3)]
    name = topic_name("bal")
    admin = cluster.node(2).admin()
    admin.create_topics([NewTopic(name, num_partitions=1, replica_assignment=[[b[0], b[1], b[2]]])])[name].result(timeout=20)
    wait_replicated(cluster, name, 1, 3)
    acked = produce(cluster.bootstrap_all(), [(name, 0, f"a{i}".encode()) for i in range(50)])
    move_leadership_off(cluster, name, 0, 1)
    add(acked, produce(cluster.bootstrap_all(), [(name, 0, f"b{i}".encode()) for i in range(50)]))
    for n in cluster.nodes:
        wait_for(f"node 1 leading {name}[0] again on {n}", lambda: leaders_of(n, name)[0] == b[0],
                 TAKEOVER_TIMEOUT_S)
    assert "moving leadership back to the preferred replicas" in cluster.node(1).log()
    add(acked, produce(cluster.bootstrap_all(), [(name, 0, f"c{i}".encode()) for i in range(50)]))
    assert read_back(cluster.bootstrap_all(), name, [0], count(acked)) == acked


def test_rolling_restart_fails_no_produce(make_cluster):
    """A rolling restart: each node in turn gets SIGTERM (a controlled shutdown hands every
    leadership it holds to an in-sync follower first), is started again and caught up,
    while an idempotent acks=all producer writes and a consumer group reads. No delivery
    fails, the consumer sees no fatal error and receives every acknowledged record, every
    acknowledged record is read back once at its offset, and afterwards the leadership is
    back on the preferred replicas."""
    import threading
    cluster = make_cluster(extra=["--leader-imbalance-check-interval-seconds", "2"])
    name = topic_name("roll")
    assert admin_create(cluster.node(1), name, 3, replication_factor=3) is None
    preferred = wait_replicated(cluster, name, 3, 3)
    assert len({node_of(b) for b in preferred.values()}) == 3, preferred

    consumed, consumer_errors = set(), []
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_all(), "group.id": f"g-{name}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    consumer.subscribe([name])
    consumer_done = threading.Event()

    def consume_loop():
        while not consumer_done.is_set():
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                consumer_errors.append(msg.error())
            else:
                consumed.add(msg.value())
        consumer.close()

    reader = threading.Thread(target=consume_loop)
    reader.start()
    writer = ProducerLoop(cluster.bootstrap_all(), name, 3)
    try:
        rolling_restart_checks(cluster, name, preferred, writer, consumed, consumer_errors)
    finally:
        writer.stop()
        consumer_done.set()
        reader.join(90)


def all_in_sync(node, topic, replicas):
    """Whether `node`'s metadata shows every partition of `topic` with `replicas` in sync."""
    v = replicated_view(node, topic)
    return v is not None and all(len(isr) == replicas for _, _, isr in v.values())


def rolling_restart_checks(cluster, name, preferred, writer, consumed, consumer_errors):
    acked, errors, ack_times = writer.acked, writer.errors, writer.ack_times
    restarts = []
    try:
        wait_for("records acknowledged", lambda: len(acked) > 300, 20)
        for node in cluster.nodes:
            started = time.time()
            assert node.terminate() == 0
            node.start()
            wait_for(f"{node} back in sync", lambda: all_in_sync(cluster.node(1), name, 3),
                     TAKEOVER_TIMEOUT_S)
            restarts.append((node, started, time.time()))
            count = len(acked)
            wait_for("acks going on", lambda: len(acked) > count + 100, 20)
    finally:
        writer.stop()
    assert errors == [], errors[:5]
    # The longest wait between two acks of a partition across each restart (printed).
    for node, started, ended in restarts:
        gaps = [max((b - a for a, b in zip(ts, ts[1:]) if started <= b <= ended + 1), default=0)
                for ts in ack_times.values()]
        print(f"{node}: longest gap between acks of a partition {max(gaps):.2f}s")
    for node, started, _ in restarts:
        log = node.log()
        assert "controlled shutdown: leadership handed over" in log, node
        assert "still_leading=0" in log, f"{node} stopped while leading"

    wait_for("the consumer to receive every acknowledged record",
             lambda: set(acked) <= consumed, 60)
    assert not [e for e in consumer_errors if e.fatal()], consumer_errors[:5]
    per_partition = {p: sorted((o, v) for v, (q, o) in acked.items() if q == p) for p in range(3)}
    got = read_back(cluster.bootstrap_all(), name, [0, 1, 2], len(acked), timeout=60)
    for p in range(3):
        records = got.get((name, p), [])
        values = [v for _, v in records]
        assert len(values) == len(set(values)), f"partition {p}: duplicates"
        assert set(per_partition[p]) <= set(records), f"partition {p}: acked records missing or moved"
    wait_for("leadership back on the preferred replicas",
             lambda: leaders_of(cluster.node(2), name) == preferred, TAKEOVER_TIMEOUT_S)


def test_group_commands_reach_each_groups_coordinator(cluster):
    """`strand group …` through node 1 only, for groups coordinated all over the cluster:
    list gathers every node's groups, describe, reset-offsets and delete go to each
    group's own coordinator."""
    from confluent_kafka.admin import AdminClient
    from test_admin_cli import as_json, strand
    name = topic_name("grp")
    assert admin_create(cluster.node(1), name, 3) is None
    wait_topic(cluster, name, 3)
    produce(cluster.node(1).bootstrap, [(name, p, b"v") for p in range(3) for _ in range(4)])
    groups = [f"g{i}-" + uuid.uuid4().hex[:8] for i in range(6)]
    for i, group in enumerate(groups):
        c = Consumer({"bootstrap.servers": cluster.node(2).bootstrap, "group.id": group})
        c.commit(offsets=[TopicPartition(name, p, i % 4) for p in range(3)], asynchronous=False)
        c.close()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_all()})
    coordinators = {g: f.result(15).coordinator.id
                    for g, f in admin.describe_consumer_groups(groups).items()}
    assert len({node_of(b) for b in coordinators.values()}) >= 2, coordinators

    b = ["-b", cluster.node(1).bootstrap]
    listed = {g["group"]: g["state"] for g in as_json("group", "list", *b)}
    assert {g: listed.get(g) for g in groups} == {g: "Empty" for g in groups}
    described = {d["group"]: d for d in as_json("group", "describe", *groups, *b)}
    for i, group in enumerate(groups):
        lags = [(p["committed_offset"], p["log_end_offset"], p["lag"])
                for p in described[group]["partitions"]]
        assert lags == [(i % 4, 4, 4 - i % 4)] * 3, (group, lags)
        strand("group", "reset-offsets", group, *b, "--all-topics", "--to-latest", "--execute")
    for group in groups:
        assert as_json("group", "describe", group, *b)[0]["total_lag"] == 0
    assert strand("group", "delete", *groups, *b)[1].split("\n")[:-1] == \
        [f"deleted group {g}" for g in groups]
    assert not set(groups) & {g["group"] for g in as_json("group", "list", *b)}


def test_replication_metrics(cluster):
    """Node 1's /metrics (Prometheus' own parser) shows the replication of its shard: the
    partitions it leads and the elections it won, its links to both peers up with bytes
    both ways; with node 3 killed, the link down and its partitions under-replicated with
    a follower lagging; with node 3 back, none under-replicated."""
    from conftest import free_base_port
    from test_metrics import samples, scrape, value
    port = free_base_port(1)
    node1 = cluster.node(1)
    node1.user_extra += ["--metrics-listen", f"127.0.0.1:{port}"]
    node1.restart()
    # A node just started names itself alone, with no controller, until it has met its
    # peers; librdkafka's admin client would wait for a controller it never asks again.
    cluster.wait_formed()
    b = [broker_id(n, 0) for n in (1, 2, 3)]
    name = topic_name("met")
    admin = node1.admin()  # the futures fail with _DESTROY once the client is collected
    admin.create_topics([NewTopic(name, num_partitions=2, replica_assignment=[
        [b[0], b[1], b[2]], [b[0], b[2], b[1]]])])[name].result(timeout=20)
    wait_replicated(cluster, name, 2, 3)
    wait_for("node 1 leading both", lambda: leaders_of(node1, name) == {0: b[0], 1: b[0]},
             TAKEOVER_TIMEOUT_S)
    produce(cluster.bootstrap_all(), [(name, i % 2, b"m") for i in range(50)])

    def metric(name_, **labels):
        return value(samples(scrape(port)), name_, shard="0", **labels)
    assert metric("strand_leader_partitions") >= 2
    assert metric("strand_leader_elections_total") >= 2
    assert metric("strand_under_replicated_partitions") == 0
    assert metric("strand_leaderless_partitions") == 0
    for peer in ("2", "3"):
        assert metric("strand_peer_up", peer=peer) == 1
        assert metric("strand_peer_bytes_sent_total", peer=peer) > 0
        assert metric("strand_peer_bytes_received_total", peer=peer) > 0
        # Inter-node latency: the peers answer the heartbeats of the partitions led here,
        # on loopback well within a second.
        answered = metric("strand_peer_heartbeat_rtt_seconds_count", peer=peer)
        assert answered > 0
        within_1s = metric("strand_peer_heartbeat_rtt_seconds_bucket", peer=peer, le="1")
        assert within_1s >= answered * 0.9, (within_1s, answered)

    # Consumer group lag is reported by the group's coordinator node alone: node 1 shows
    # it for the groups it coordinates (both partitions led there), no other group.
    # A group's coordinator is the leader of its __consumer_offsets partition (FNV-1a of
    # the id mod 16): once that topic exists and its partitions are led by their preferred
    # replicas, pick six groups whose partition node 1 leads and six whose it does not.
    # (Its FindCoordinator creates the topic; the describe itself may not finish.)
    created = admin.describe_consumer_groups(["lag-coord-create"])["lag-coord-create"]
    try:
        created.exception(timeout=10)
    except concurrent.futures.TimeoutError:
        pass
    def settled():
        t = admin.list_topics(timeout=10).topics.get("__consumer_offsets")
        return (t is not None and len(t.partitions) == 16
                and all(m.leader >= 0 for m in t.partitions.values())
                and _quiet_elect(admin) == {})
    wait_for("__consumer_offsets led by its preferred replicas", settled, TAKEOVER_TIMEOUT_S,
             interval=1)
    offsets_leaders = {p: m.leader for p, m in
                       admin.list_topics(timeout=10).topics["__consumer_offsets"].partitions.items()}
    on_node1 = [f"lag-coord-{name}-{i}" for i in range(400)
                if node_of(offsets_leaders[_fnv1a(f"lag-coord-{name}-{i}") % 16]) == 1][:6]
    elsewhere = [f"lag-coord-{name}-{i}" for i in range(400)
                 if node_of(offsets_leaders[_fnv1a(f"lag-coord-{name}-{i}") % 16]) != 1][:6]
    assert len(on_node1) == 6 and len(elsewhere) == 6, offsets_leaders
    groups = on_node1 + elsewhere
    for g in groups:
        c = Consumer({"bootstrap.servers": cluster.bootstrap_all(), "group.id": g,
                      "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(name, 0, 5), TopicPartition(name, 1, 20)],
                 asynchronous=False)
        if g == groups[0]:
            hw = {str(p): c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                  for p in (0, 1)}
        c.close()
    assert min(hw.values()) >= 25, hw  # 25 records each, and whatever the log adds
    coordinator = {g: f.result(timeout=20).coordinator.id
                   for g, f in admin.describe_consumer_groups(groups).items()}
    found = samples(scrape(port))
    for g in groups:
        lag = {(labels["topic"], labels["partition"]): v for labels, v in (
            (dict(ls), v) for (n, ls), v in found.items() if n == "strand_group_lag")
            if labels["group"] == g}
        expected = ({(name, "0"): hw["0"] - 5, (name, "1"): hw["1"] - 20}
                    if coordinator[g] // 1024 == 1 else {})
        assert lag == expected, (g, coordinator[g], lag)
    assert any(c // 1024 == 1 for c in coordinator.values()), coordinator

    cluster.node(3).kill9()
    wait_for("node 3's link down and the partitions under-replicated",
             lambda: metric("strand_peer_up", peer="3") == 0
             and metric("strand_under_replicated_partitions") >= 2, TAKEOVER_TIMEOUT_S)
    produce(cluster.bootstrap_all(cluster.live()), [(name, i % 2, b"n") for i in range(50)])
    assert metric("strand_replica_max_lag_batches") > 0
    assert metric("strand_replica_max_lag_seconds") > 0
    cluster.node(3).start()
    wait_for("no partition under-replicated", lambda: metric("strand_under_replicated_partitions") == 0
             and metric("strand_peer_up", peer="3") == 1, TAKEOVER_TIMEOUT_S)


def _fnv1a(text):
    """Strand's group hash (FNV-1a, 32 bits): a group's __consumer_offsets partition is
    this mod the partition count."""
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _quiet_elect(admin):
    from confluent_kafka import ElectionType
    try:
        return admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=20)
    except Exception as e:  # noqa: BLE001 - retried by the caller
        return e


def test_produce_and_consume_commands_follow_a_new_leader(cluster):
    """`strand produce` and `strand consume` on a replicated partition whose leader's node
    is killed: the consumer started before goes on reading from the new leader, and a
    produce started after the kill retries until the new leader takes the records."""
    from test_admin_cli import strand
    from conftest import STRAND_BIN
    topic = topic_name("pc")
    b = ["-b", cluster.bootstrap_all()]
    strand("topic", "create", topic, *b, "-p", "1", "-r", "3")
    leader = wait_replicated(cluster, topic, 1, 3)[0]
    first = [f"before-{i}" for i in range(50)]
    second = [f"after-{i}" for i in range(50)]
    reader = subprocess.Popen([STRAND_BIN, "consume", topic, *b, "--from-beginning", "-c", "100",
                               "-f", "%o %v\\n"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        subprocess.run([STRAND_BIN, "produce", topic, *b], input="\n".join(first) + "\n",
                       text=True, check=True, timeout=60)
        cluster.node(node_of(leader)).kill9()
        survivors = ["-b", cluster.bootstrap_all(cluster.live())]
        done = subprocess.run([STRAND_BIN, "produce", topic, *survivors, "--timeout-ms", "60000"],
                              input="\n".join(second) + "\n", text=True, capture_output=True,
                              timeout=90)
        assert done.returncode == 0, done.stderr
        out, err = reader.communicate(timeout=90)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    values = [line.split(" ", 1)[1] for line in out.splitlines()]
    assert values == first + second, values
    offsets = [int(line.split(" ", 1)[0]) for line in out.splitlines()]
    assert offsets == sorted(offsets)
