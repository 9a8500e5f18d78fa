"""Replicated partitions (replication factor 3) under network partitions and crashes.

`Cluster(..., proxied=True)` (tests/compat/cluster.py) runs every inter-node link through a
TCP proxy in the test process, so a test can cut a node off ("reset": connections reset
and dials refused; "stall": a silent black hole that closes nothing) and heal it. Client
ports are never proxied: clients still reach a node that its peers cannot.

- the node leading a partition isolated, under an idempotent acks=all producer: the
  majority elects a new leader and acks go on; the isolated node acknowledges nothing
  sent to it after the cut and serves no read past what was committed; healed, every
  replica holds the same batches, byte for byte, up to the high watermark, and every
  acknowledged record is there exactly once, in order;
- every node killed -9 at once under that producer, then restarted: every acknowledged
  record is there exactly once, in order;
- two shards per node: the leader of a partition on shard 1 killed -9: acks resume, the
  restarted node catches up;
- one follower cut off: acks go on; healed, it catches up without unseating the leader;
- every link slowed down: no leader changes, nothing lost;
- the proxy itself, against an echo server.

A cut-off leader's answers: NOT_ENOUGH_REPLICAS to new acks=all Produce requests (it
reaches no majority), REQUEST_TIMED_OUT to one left waiting while its entry's fate is
unknown, and success once healed for an entry its successor committed.
"""

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster import (
    NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, Cluster, fetch_raw, metadata, node_of,
    produce_raw, replica_batches, wait_for,
)

pytestmark = pytest.mark.timeout(150)

EXTRA = ["--group-initial-rebalance-delay-ms", "0"]
TAKEOVER_TIMEOUT_S = 20  # a new leader elected, or a restarted or healed node caught up
RESUME_TIMEOUT_S = 30  # acks resume after a fault
ACKS = 200  # acks that count as "acks go on"


@pytest.fixture
def make_cluster(tmp_path, request):
    """make_cluster(nodes=3, shards=1, proxied=False) starts a cluster and waits until it is
    formed. At teardown every node is killed and the proxies stopped; a node that died on
    its own or a panic in any log fails the test; the logs are printed when it failed."""
    made = []

    def make(nodes=3, shards=1, proxied=False, extra=()):
        c = Cluster(tmp_path / f"cluster{len(made)}", nodes=nodes, shards=shards,
                    extra=[*EXTRA, *extra], proxied=proxied)
        made.append(c)
        c.start()
        c.wait_formed()
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
        c.close()
        panicked = c.panicked()
        if failed or crashed or panicked:
            print(c.dump_logs())
        if crashed:
            problems.append(f"node(s) {crashed} died during the test")
        if panicked:
            problems.append(f"node(s) {panicked} panicked")
    assert not problems, "; ".join(problems) + " (logs above)"


def topic_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_replicated(cluster, name, partitions, replication_factor=3):
    """CreateTopics through node 1's AdminClient (sent to the controller); then waits
    until every live node names a leader for each partition, the same everywhere, with
    `replication_factor` replicas. Returns {partition: leader broker id}."""
    admin = cluster.node(1).admin()
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=replication_factor)],
                                  request_timeout=15)
    futures[name].result(timeout=20)
    return wait_led(cluster, name, partitions, cluster.live())


def led_view(node, name):
    """{partition: (leader broker, replica count)} in a node's own raw metadata; None if
    it does not answer or lists the topic with an error."""
    try:
        md = metadata(node.port, timeout=5)
    except (OSError, AssertionError):
        return None
    if name not in md.topics or md.topics[name][0] != 0:
        return None
    return md.topics[name][1]


def wait_led(cluster, name, partitions, nodes, timeout=TAKEOVER_TIMEOUT_S, avoid=None):
    """Waits until every node in `nodes` names the same leader, a broker of a node in
    `nodes` (and not on node `avoid`), for each of the partitions; returns them."""
    ids = {n.node_id for n in nodes}

    def agreed():
        views = [led_view(n, name) for n in nodes]
        if any(v is None or len(v) != partitions for v in views):
            return None
        if any(v != views[0] for v in views):
            return None
        if not all(node_of(b) in ids and node_of(b) != avoid for b in views[0].values()):
            return None
        return views[0]
    return wait_for(f"{name} led by {sorted(ids)} (not {avoid}) in their metadata", agreed, timeout)


class Workload(threading.Thread):
    """An idempotent acks=all confluent-kafka producer writing b"SEQ" (SEQ = 0, 1, …) to
    partition SEQ % partitions of one topic, from a thread, at `rate` records a second
    (at most `in_flight` records outstanding). Keeps every acknowledgement and error."""

    def __init__(self, bootstrap, topic, partitions, rate=1500, in_flight=5000, **config):
        super().__init__(name=f"producer-{topic}", daemon=True)
        self.topic = topic
        self.partitions = partitions
        self.in_flight = in_flight
        self.rate = rate
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 90_000,
            "reconnect.backoff.max.ms": 1000,
            "retry.backoff.max.ms": 1000,
            **config,
        })
        self.lock = threading.Lock()
        self.acked = {}  # value -> (partition, offset)
        self.errors = []
        self.sent = 0
        self.stopping = threading.Event()
        self.unflushed = None
        self.failure = None

    def on_delivery(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append((msg.value(), err))
            else:
                self.acked[msg.value()] = (msg.partition(), msg.offset())

    def acks(self, partition=None):
        with self.lock:
            if partition is None:
                return len(self.acked)
            return sum(1 for p, _ in self.acked.values() if p == partition)

    def run(self):
        try:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                if self.sent - self.acks() - len(self.errors) >= self.in_flight:
                    self.producer.poll(0.05)
                    continue
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.producer.poll(delay)
                    continue
                next_at = max(next_at + 1 / self.rate, time.monotonic() - 1)
                try:
                    self.producer.produce(self.topic, value=str(self.sent).encode(),
                                          partition=self.sent % self.partitions,
                                          on_delivery=self.on_delivery)
                    self.sent += 1
                except BufferError:
                    self.producer.poll(0.05)
                self.producer.poll(0)
            self.unflushed = self.producer.flush(90)
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.failure = repr(e)

    def wait_more(self, what, more, partition=None, timeout=RESUME_TIMEOUT_S):
        """Waits until `more` records more than now are acknowledged (on `partition`);
        returns the seconds it took."""
        started = time.time()
        target = self.acks(partition) + more
        wait_for(what, lambda: self.acks(partition) >= target or self.failure, timeout)
        assert self.failure is None, self.failure
        return time.time() - started

    def finish(self):
        """Stops producing, waits until every record sent is acknowledged or failed, and
        fails the test on any delivery error."""
        self.stopping.set()
        self.join(120)
        assert not self.is_alive(), "the producer did not finish"
        assert self.failure is None, self.failure
        assert self.unflushed == 0, f"{self.unflushed} records never acknowledged"
        assert self.errors == [], f"{len(self.errors)} delivery errors: {self.errors[:5]}"
        assert len(self.acked) == self.sent
        self.producer = None  # destroyed now, not when collected: no reconnecting later


def read_all(bootstrap, topic, partitions, timeout=60):
    """Every data record of the given partitions from offset 0 up to the high watermark
    (read_committed makes no difference: no transactions): {partition: [(offset, value)]}."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "nemesis-checker",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    log = {p: [] for p in partitions}
    try:
        ends = {}
        for p in partitions:
            _, ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p] > 0])
        remaining = {p for p in partitions if ends[p] > 0}
        deadline = time.time() + timeout
        while remaining and time.time() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                p = m.partition()
                if m.offset() < ends[p]:
                    log[p].append((m.offset(), m.value()))
                if m.offset() >= ends[p] - 1:
                    remaining.discard(p)
        assert not remaining, f"partitions {sorted(remaining)} not read to their ends {ends}"
    finally:
        consumer.close()
    return log, ends


def check_acked(acked, log):
    """Every acknowledged value is at its acknowledged (partition, offset); no value is in
    the log twice; within a partition the values (the producer's sequence) rise with the
    offset; nothing but the producer's values is there. Returns the records read."""
    at = {}
    problems = []
    for p, records in log.items():
        last = -1
        for offset, value in records:
            if value in at:
                problems.append(f"{value!r} at {p}@{offset} and at {at[value]}")
            at[value] = (p, offset)
            if not value.isdigit():
                problems.append(f"foreign record {value!r} at {p}@{offset}")
                continue
            if int(value) <= last:
                problems.append(f"{p}@{offset}: {value!r} after {last}")
            last = int(value)
    missing = [(v, where, at.get(v)) for v, where in acked.items() if at.get(v) != where]
    if missing:
        problems.append(f"{len(missing)} acknowledged records missing or moved "
                        f"(value, acked at, found at): {sorted(missing)[:10]}")
    assert not problems, "\n".join(problems[:20])
    return len(at)


def replicas_identical(cluster, topic, partitions, high_watermarks):
    """(ok, why): every node's replica of each partition holds the same batches, byte for
    byte, up to the partition's high watermark."""
    for p in partitions:
        hw = high_watermarks[p]
        logs = {}
        for n in cluster.nodes:
            batches = replica_batches(n, topic, p)
            covered = [b for b in batches if b[0] < hw]
            if not covered or covered[-1][1] < hw - 1:
                return False, f"node {n.node_id} has partition {p} up to {covered[-1][1] if covered else None}, hw {hw}"
            logs[n.node_id] = covered
        first = next(iter(logs.values()))
        for i, batches in logs.items():
            if batches != first:
                diff = next((k for k, (a, b) in enumerate(zip(batches, first)) if a != b),
                            min(len(batches), len(first)))
                return False, (f"partition {p}: node {i} differs from node {cluster.nodes[0].node_id} at "
                               f"batch {diff} (bases {[b[0] for b in batches[diff:diff + 3]]} vs "
                               f"{[b[0] for b in first[diff:diff + 3]]})")
    return True, "identical"


def wait_identical(cluster, topic, partitions, high_watermarks, timeout=TAKEOVER_TIMEOUT_S):
    why = ["never checked"]

    def check():
        ok, why[0] = replicas_identical(cluster, topic, partitions, high_watermarks)
        return ok
    try:
        wait_for("every replica to hold the same batches", check, timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}: {why[0]}") from None


def check_everything(cluster, workload, topic, partitions):
    """Once healed and the producer finished: every acknowledged record read back exactly
    once, in order, from the leaders; every replica byte-identical up to the high
    watermark. Returns ({partition: [(offset, value)]}, high watermarks, records read)."""
    log, ends = read_all(cluster.bootstrap_all(), topic, partitions)
    read = check_acked(workload.acked, log)
    wait_identical(cluster, topic, partitions, ends)
    return log, ends, read


# ------------------------------------------------------------------ the tests

OK = 0
# A client's request on a connection that a "stall" cut holds ends after these.
STALLED_CONNECTION_TIMEOUTS = {"request.timeout.ms": 5000, "socket.timeout.ms": 6000}


class IsolatedSide(threading.Thread):
    """While a node is cut off: raw acks=all Produce requests straight to it, one after
    another, each with values "isolated-N"; and raw Fetch requests from offset 0. Keeps
    what each answered."""

    def __init__(self, node, topic, partition):
        super().__init__(name="isolated-side", daemon=True)
        self.node = node
        self.topic = topic
        self.partition = partition
        self.stopping = threading.Event()
        self.produced = []  # (t, error code or exception name, base offset)
        self.fetched = []  # (t, error code, high watermark, [(offset, value)])
        self.failure = None

    def run(self):
        k = 0
        try:
            while not self.stopping.is_set():
                try:
                    self.fetched.append((time.time(), *fetch_raw(self.node.port, self.topic,
                                                                 self.partition, 0, socket_timeout=10)))
                except OSError as e:
                    self.fetched.append((time.time(), type(e).__name__, None, []))
                values = [f"isolated-{k}-{i}".encode() for i in range(3)]
                k += 1
                t = time.time()
                try:
                    code, base = produce_raw(self.node.port, self.topic, self.partition, values,
                                             timeout_ms=300, socket_timeout=10)
                    self.produced.append((t, code, base))
                except OSError as e:
                    self.produced.append((t, type(e).__name__, None))
                self.stopping.wait(0.3)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.failure = repr(e)


@pytest.mark.parametrize("mode", ["reset", "stall"])
def test_isolated_partition_leader(make_cluster, mode):
    """rf 3, one partition, an idempotent acks=all producer bootstrapped on every node.
    The partition's leader is cut off from both other nodes and from that producer; its
    own port still answers clients on its side. The majority elects a new leader and acks
    go on; the isolated node acknowledges none of the records sent straight to it after
    the cut (raw acks=all Produce), what it serves to Fetch was committed, and it serves
    none once its read lease ran out (about a second after the cut). Healed:
    every replica byte-identical up to the high watermark, every acknowledged record
    there exactly once, in order, nothing sent to the isolated node."""
    cluster = make_cluster(proxied=True)
    name = topic_name("iso")
    leaders = create_replicated(cluster, name, 1)
    old = cluster.node(node_of(leaders[0]))
    majority = [n for n in cluster.nodes if n is not old]

    # The producer is on the majority's side: it reaches the nodes through their
    # advertised addresses, which the cut covers too (a stalled connection ends after
    # request.timeout.ms). A client that still reaches only the isolated node hears
    # NOT_ENOUGH_REPLICAS from it (test_isolated_leader_answers_not_enough_replicas).
    workload = Workload(cluster.advertised_bootstrap_all(), name, 1, **STALLED_CONNECTION_TIMEOUTS)
    workload.start()
    side = None
    try:
        workload.wait_more("acks before the cut", 300)
        cut_at = time.time()
        cluster.isolate(old, mode=mode, clients=True)
        # A client on the isolated node's side: raw requests to its own port.
        side = IsolatedSide(old, name, 0)
        side.start()
        new = wait_led(cluster, name, 1, majority, avoid=old.node_id)
        elected = time.time() - cut_at
        resumed = workload.wait_more("acks after the leader was cut off", ACKS)
        print(f"{mode}: a new leader {new[0]} named by the majority {elected:.1f}s after the cut; "
              f"{ACKS} more acks {resumed:.1f}s later")
        # The isolated node has long stepped down (an election timeout, 1-2 s): what it
        # answers now is settled.
        wait_for("requests answered by the isolated node", lambda: len(side.produced) >= 10, 30)
    finally:
        if side is not None:
            side.stopping.set()
            side.join(30)
        cluster.heal()
        workload.finish()
    assert side.failure is None, side.failure
    print(f"the isolated node answered Produce with {sorted({str(c) for _, c, _ in side.produced})}, "
          f"Fetch with {sorted({str(c) for _, c, _, _ in side.fetched})}")

    # Nothing sent straight to the isolated node was acknowledged.
    assert side.produced, "no Produce request was sent to the isolated node"
    acked_there = [(t - cut_at, c, b) for t, c, b in side.produced if c == OK]
    assert not acked_there, f"the isolated node acknowledged records after the cut: {acked_there}"

    # Once healed, the old leader follows: every node names the same leader.
    wait_led(cluster, name, 1, cluster.nodes)
    log, ends, read = check_everything(cluster, workload, name, [0])
    # What the isolated node served was committed: each record it returned is at the
    # same offset in the healed log, and it reported no high watermark past the end.
    final = dict(log[0])
    # The read lease: half an election timeout (0.5 s here) after the last heartbeat a
    # majority answered, plus one renewal's wait (0.3 s), the isolated node serves no
    # Fetch any more; it answers NOT_LEADER_OR_FOLLOWER until it learns the new leader.
    late = [round(t - cut_at, 2) for t, code, _, _ in side.fetched if code == OK and t - cut_at > 1.2]
    assert not late, f"the isolated node served Fetch requests sent this long after the cut: {late}"
    served = 0
    for t, code, hw, records in side.fetched:
        if code != OK:
            continue
        assert hw <= ends[0], f"the isolated node reported a high watermark of {hw}, past {ends[0]}"
        for offset, value in records:
            served += 1
            assert offset < hw and final.get(offset) == value, \
                f"the isolated node served {value!r} at {offset}; the log has {final.get(offset)!r}"
    strays = [v for v in final.values() if v.startswith(b"isolated-")]
    assert not strays, f"records sent to the isolated node are in the log: {strays[:5]}"
    print(f"{len(workload.acked)} acknowledged, {read} read back; high watermark {ends[0]}; "
          f"{len(side.produced)} Produce and {len(side.fetched)} Fetch requests to the isolated "
          f"node, {served} records served by it")


def test_minority_cut_does_not_stop_acks(make_cluster):
    """rf 3, one partition: a follower (not the metadata leader when there is a choice)
    cut off from both other nodes, once with reset connections and once as a silent black
    hole, each for 4 s. Acks go on meanwhile and the follower falls behind; healed, it
    catches up without unseating the leader (pre-vote), and every replica is
    byte-identical up to the high watermark."""
    cluster = make_cluster(proxied=True)
    name = topic_name("minority")
    leaders = create_replicated(cluster, name, 1)
    leader = cluster.node(node_of(leaders[0]))
    controller = cluster.controller_node()
    followers = [n for n in cluster.nodes if n is not leader]
    follower = next((n for n in followers if n is not controller), followers[0])

    workload = Workload(cluster.advertised_bootstrap_all(), name, 1, **STALLED_CONNECTION_TIMEOUTS)
    workload.start()
    try:
        workload.wait_more("acks before the cut", 300)
        for mode in ("reset", "stall"):
            cut_at = time.time()
            target = workload.acks() + 3 * ACKS
            cluster.isolate(follower, mode=mode)
            # Past two election timeouts (1-2 s each), so the follower has stood for
            # election (pre-vote) while cut off.
            wait_for(f"acks with follower {follower.node_id} cut off for 4 s ({mode})",
                     lambda: workload.acks() >= target and time.time() - cut_at >= 4, 20)
            assert workload.failure is None, workload.failure
            print(f"{mode}: {workload.acks() - target + 3 * ACKS} acks in the "
                  f"{time.time() - cut_at:.1f}s follower {follower.node_id} was cut off")
            end = max(o for _, o in list(workload.acked.values()))
            behind = replica_batches(follower, name, 0)
            assert behind and behind[-1][1] < end, \
                f"the cut-off follower holds offsets up to {behind[-1][1] if behind else None}, the leader acked {end}"
            cluster.heal()
            workload.wait_more(f"acks after the {mode} cut was healed", ACKS, timeout=20)
            # The follower catches up with what was acknowledged meanwhile, and did not
            # unseat the leader on its way back.
            wait_for(f"follower {follower.node_id} to catch up",
                     lambda: replica_batches(follower, name, 0)[-1][1] >= end, TAKEOVER_TIMEOUT_S)
            assert wait_led(cluster, name, 1, cluster.nodes) == leaders, \
                f"the leader changed: {leaders} before the {mode} cut"
    finally:
        cluster.heal()
        workload.finish()
    log, ends, read = check_everything(cluster, workload, name, [0])
    print(f"{len(workload.acked)} acknowledged, {read} read back, high watermark {ends[0]}")


def test_slow_links_keep_the_leader_and_lose_nothing(make_cluster):
    """rf 3, two partitions: every inter-node link slowed to 150 ms each way (a round trip
    of 300 ms, under the 1 s election timeout) for 5 s. Acks go on, no leader changes,
    and every replica is byte-identical up to the high watermark afterwards."""
    cluster = make_cluster(proxied=True)
    name = topic_name("slow")
    leaders = create_replicated(cluster, name, 2)
    workload = Workload(cluster.advertised_bootstrap_all(), name, 2)
    workload.start()
    try:
        workload.wait_more("acks before the delay", 300)
        slowed_at = time.time()
        target = workload.acks() + ACKS
        cluster.delay(0.15)
        wait_for("acks over slow links for 5 s",
                 lambda: workload.acks() >= target and time.time() - slowed_at >= 5, 30)
        print(f"{workload.acks() - target + ACKS} acks in {time.time() - slowed_at:.1f}s over slow links")
        assert wait_led(cluster, name, 2, cluster.nodes) == leaders, f"leaders changed from {leaders}"
        cluster.heal()
        workload.wait_more("acks after the delay", ACKS)
    finally:
        cluster.heal()
        workload.finish()
    log, ends, read = check_everything(cluster, workload, name, [0, 1])
    print(f"{len(workload.acked)} acknowledged, {read} read back, high watermarks {ends}")


def test_every_node_killed_at_once(make_cluster):
    """rf 3, three partitions, an idempotent acks=all producer running: every node killed
    -9 at the same moment, then all restarted. The producer carries on; every record it
    had acknowledged (before and after) is there exactly once, at its offset, in order;
    every replica byte-identical up to the high watermark."""
    cluster = make_cluster()
    name = topic_name("all")
    create_replicated(cluster, name, 3)
    workload = Workload(cluster.bootstrap_all(), name, 3)
    workload.start()
    try:
        workload.wait_more("acks before the crash", 1000)
        before = workload.acks()
        cluster.kill9_all()
        killed_at = time.time()
        cluster.start()
        cluster.wait_formed()
        wait_led(cluster, name, 3, cluster.nodes)
        took = workload.wait_more("acks after every node was restarted", ACKS, timeout=45)
        print(f"{before} acks before the crash; acks resumed {time.time() - killed_at:.1f}s after it "
              f"({took:.1f}s after the cluster was formed again)")
    finally:
        workload.finish()
    log, ends, read = check_everything(cluster, workload, name, [0, 1, 2])
    print(f"{len(workload.acked)} acknowledged, {read} read back, high watermarks {ends}")


def test_shard_one_leader_killed_with_two_shards(make_cluster):
    """Two shards per node, rf 3, partitions on both shards: the node leading a partition
    of shard 1 killed -9 under an idempotent acks=all producer. Acks on that partition
    resume; nothing acknowledged is lost; restarted, the node catches up on both shards
    (every replica byte-identical up to the high watermark)."""
    cluster = make_cluster(shards=2)
    name = topic_name("shards")
    partitions = 6
    leaders = create_replicated(cluster, name, partitions)
    on_shard = {k: sorted(p for p, b in leaders.items() if b % 1024 == k) for k in (0, 1)}
    assert on_shard[0] and on_shard[1], f"partitions not on both shards: {leaders}"
    target = on_shard[1][0]
    victim = cluster.node(node_of(leaders[target]))

    workload = Workload(cluster.bootstrap_all(), name, partitions)
    workload.start()
    try:
        workload.wait_more("acks before the kill", 600)
        killed_at = time.time()
        victim.kill9()
        took = workload.wait_more(f"acks on partition {target} after its leader was killed", 100,
                                  partition=target)
        print(f"partition {target} (shard 1) acks resumed {took:.1f}s after node {victim.node_id} was killed")
        new = wait_led(cluster, name, partitions, cluster.live())
        assert node_of(new[target]) != victim.node_id and new[target] % 1024 == 1, new
        victim.start()
        wait_led(cluster, name, partitions, cluster.nodes)
        workload.wait_more("acks with the node back", ACKS)
        print(f"node {victim.node_id} back {time.time() - killed_at:.1f}s after the kill")
    finally:
        workload.finish()
    log, ends, read = check_everything(cluster, workload, name, list(range(partitions)))
    print(f"{len(workload.acked)} acknowledged, {read} read back, high watermarks {ends}")


# ------------------------------------------------------------ a cut-off leader's answers

NOT_ENOUGH_REPLICAS = 19


def test_isolated_leader_answers_not_enough_replicas(make_cluster):
    """The isolated old leader reaches no majority: whether it still leads or has stepped
    down, it answers acks=all Produce with NOT_ENOUGH_REPLICAS (Kafka's answer when too
    few replicas are alive), never success; it goes on naming itself in its own Metadata,
    with its old epoch, so a client that reaches only it gets that answer rather than no
    leader. The majority's Metadata names the new leader with a higher epoch."""
    cluster = make_cluster(proxied=True)
    name = topic_name("named")
    leaders = create_replicated(cluster, name, 1)
    old = cluster.node(node_of(leaders[0]))
    assert produce_raw(old.port, name, 0, [b"before"])[0] == OK
    cluster.isolate(old)
    answers = []
    try:
        started = time.time()
        while time.time() - started < 6:  # past its step-down (one to two election timeouts)
            answers.append(produce_raw(old.port, name, 0, [b"x"], timeout_ms=500)[0])
            time.sleep(0.1)
        assert OK not in answers, f"the isolated node acknowledged: {answers}"
        assert answers[-1] == NOT_ENOUGH_REPLICAS, answers
        assert metadata(old.port).topics[name][1][0] == leaders[0]
        others = [n for n in cluster.nodes if n is not old]
        new = wait_led(cluster, name, 1, others, avoid=old.node_id)
        assert node_of(new[0]) != old.node_id
    finally:
        cluster.heal()


def test_a_produce_waiting_on_a_stalled_leader_is_timed_out_not_refused(make_cluster):
    """A Produce appended by a leader whose links then go silent (a black hole: no link
    drops) cannot learn its entry's fate while cut off: it is answered REQUEST_TIMED_OUT
    (possibly persisted) at its timeout, never success and never NOT_LEADER_OR_FOLLOWER
    ("not persisted"), which would invite a producer to send the record again as new."""
    cluster = make_cluster(proxied=True)
    name = topic_name("waiting")
    leaders = create_replicated(cluster, name, 1)
    old = cluster.node(node_of(leaders[0]))
    assert produce_raw(old.port, name, 0, [b"before"])[0] == OK
    cluster.isolate(old, mode="stall")
    try:
        started = time.time()
        code, _ = produce_raw(old.port, name, 0, [b"waiting"], timeout_ms=8_000, socket_timeout=40)
        took = time.time() - started
        assert code in (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS), (code, took)
        if code == REQUEST_TIMED_OUT:
            assert took >= 7, f"timed out after {took:.1f}s, before its 8 s timeout"
    finally:
        cluster.heal()


def test_cut_off_leader_answers_a_produce_its_successor_committed(make_cluster):
    """The followers still hear the leader but it hears nothing back: a Produce sent to it
    is appended and replicated, never committed by it. It steps down; the followers elect
    one of them, which commits the entry. Healed, the old leader's answer to that Produce
    must say what happened: success at the offset where the record is."""
    cluster = make_cluster(proxied=True)
    name = topic_name("fate")
    leaders = create_replicated(cluster, name, 1)
    old = cluster.node(node_of(leaders[0]))
    followers = [n for n in cluster.nodes if n is not old]
    assert produce_raw(old.port, name, 0, [b"before"])[0] == OK
    for f in followers:
        cluster.cut(f, old, both_ways=False)  # what the followers send to it is lost
    answer = {}

    def pending():
        answer["produce"] = produce_raw(old.port, name, 0, [b"fate"], timeout_ms=30_000,
                                        socket_timeout=60)
    thread = threading.Thread(target=pending, daemon=True)
    thread.start()
    try:
        new = wait_led(cluster, name, 1, followers, avoid=old.node_id)
        new_port = cluster.node(node_of(new[0])).port

        def committed_at():
            code, _, records = fetch_raw(new_port, name, 0)
            return code == OK and next((o for o, v in records if v == b"fate"), None)
        offset = wait_for("the new leader to commit the record", committed_at, TAKEOVER_TIMEOUT_S)
    finally:
        cluster.heal()
    thread.join(60)
    assert "produce" in answer, "the Produce was never answered"
    code, base = answer["produce"]
    assert (code, base) == (OK, offset), \
        f"the old leader answered error {code} (base offset {base}); the record is committed at offset {offset}"


# ------------------------------------------------------------------ the proxy itself

def test_net_proxy_cuts_stalls_delays_and_heals(tmp_path):
    """The harness's proxy on its own, in front of an echo server: it forwards; a delay
    slows each direction; a "reset" cut breaks the live connection and refuses dials; a
    "stall" cut holds bytes and loses none; heal restores; a target that is down makes
    the proxy refuse dials until the target is back."""
    import socket

    from cluster import NetProxy
    from conftest import free_base_port

    base = free_base_port(2)
    listen, target = base, base + 1

    def echo_server():
        server = socket.create_server(("127.0.0.1", target), reuse_port=False)

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return

                def pump(conn=conn):
                    with conn:
                        while True:
                            try:
                                data = conn.recv(1 << 16)
                            except OSError:
                                return
                            if not data:
                                return
                            conn.sendall(data)
                threading.Thread(target=pump, daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()
        return server

    def dial(timeout=2):
        s = socket.create_connection(("127.0.0.1", listen), timeout=timeout)
        s.settimeout(timeout)
        return s

    def roundtrip(s, data=b"ping"):
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return got

    server = echo_server()
    proxy = NetProxy([("a", "b", listen, target, 1)])
    pair = [("a", "b")]
    try:
        s = dial()
        assert roundtrip(s) == b"ping"

        proxy.set_delay(pair, 0.3)
        started = time.time()
        assert roundtrip(s, b"slow") == b"slow"
        assert time.time() - started >= 0.55  # 0.3 s each way
        proxy.set_delay(pair, 0.0)

        proxy.cut(pair, "reset")
        with pytest.raises(OSError):
            roundtrip(s)  # reset by the proxy (or closed: ConnectionError)
        with pytest.raises(ConnectionRefusedError):
            dial()
        proxy.heal(pair)
        s = dial()
        assert roundtrip(s) == b"ping"

        proxy.cut(pair, "stall")
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(16)
        proxy.heal(pair)
        s.settimeout(5)
        assert s.recv(16) == b"held"
        s.close()

        # The target goes down: the proxy refuses dials too, until it is back.
        server.close()
        wait_for("the proxy to refuse dials", lambda: _refused(dial, strictly=True), 10)
        server = echo_server()
        wait_for("the proxy to forward again", lambda: not _refused(dial), 10)
        s = dial()
        assert roundtrip(s) == b"ping"
        s.close()
        assert proxy.stats()[("a", "b")]["bytes"] > 0
    finally:
        proxy.close()
        server.close()


def _refused(dial, strictly=False):
    """True if a dial is refused, or (not strictly) the connection is cut before an echo
    comes back."""
    try:
        s = dial()
    except ConnectionRefusedError:
        return True
    if strictly:
        s.close()
        return False
    try:
        s.sendall(b"?")
        return s.recv(1) != b"?"
    except OSError:
        return True
    finally:
        s.close()
