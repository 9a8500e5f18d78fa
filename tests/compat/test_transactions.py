"""Transactions with real clients: what read_committed and read_uncommitted consumers see of
committed, aborted, interleaved and open transactions on partitions of both shards; the last
stable offset; fencing of an old producer instance; transactions the coordinator aborts on
timeout; consume-transform-produce with send_offsets_to_transaction; kill -9 of the broker
with transactions committed and open; the inspection APIs (DescribeTransactions,
ListTransactions, DescribeProducers through kafka-python's admin client); kafka-python and
aiokafka transactional producers; and the exactly-once crash loop (tests/eos_loop.py) in a
short form.

Every check compares exact record lists (offsets and values) rather than counts: a record
of an aborted transaction that leaks, a committed one that goes missing or a marker that
takes the wrong offset all fail.

librdkafka is the reference client here. What it expects of the broker (from its source):
a Produce with a stale epoch must answer INVALID_PRODUCER_EPOCH (47), the only produce error
it turns into its fatal _FENCED (a PRODUCER_FENCED there would only abort the transaction);
AddPartitionsToTxn and EndTxn may answer either 47 or PRODUCER_FENCED (90); AddOffsetsToTxn
and TxnOffsetCommit must answer 47, since they treat 90 as abortable only. librdkafka 2.16
sends InitProducerId v4, AddPartitionsToTxn v0, AddOffsetsToTxn v0, EndTxn v1 and
TxnOffsetCommit v3 (whatever higher versions the broker offers), and a read_committed
consumer's OffsetFetch (v9) sets require_stable.
"""

import asyncio
import os
import random
import select
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from helpers import consumer_config, create_topic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import eos_loop  # noqa: E402

PARTITIONS = 4
PARTS = list(range(PARTITIONS))
# librdkafka reports both fencing codes as its own _FENCED; the raw codes are accepted too.
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


# --- helpers --------------------------------------------------------------------------------

def txn_producer(broker, txn_id, **extra):
    return Producer({
        "bootstrap.servers": broker.bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
        **extra,
    })


def plain_producer(broker):
    return Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})


def produce(producer, topic, tag, partitions, count):
    """Produces `count` records (or count(partition)) tagged `tag` to each partition and
    waits until every one is acknowledged; returns {partition: [value]} in send order."""
    sent = {}
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append((msg.partition(), err))

    for p in partitions:
        for i in range(count(p) if callable(count) else count):
            value = f"{tag}-p{p}-{i}".encode()
            producer.produce(topic, key=f"{tag}-{i}".encode(), value=value, partition=p, on_delivery=on_delivery)
            sent.setdefault(p, []).append(value)
    left = producer.flush(30)
    assert left == 0 and not failures, f"{tag}: {left} undelivered, failures {failures[:3]}"
    return sent


class LogModel:
    """What a partition's log must hold: every record with its offset and the transaction
    (or "plain") it belongs to; each commit or abort marker takes one offset."""

    def __init__(self, partitions):
        self.entries = {p: [] for p in partitions}
        self.next = {p: 0 for p in partitions}

    def records(self, sent, owner):
        for p, values in sent.items():
            for v in values:
                self.entries[p].append((self.next[p], v, owner))
                self.next[p] += 1

    def marker(self, partitions):
        for p in partitions:
            self.next[p] += 1

    def visible(self, owners):
        return {p: [(o, v) for o, v, who in entries if who in owners] for p, entries in self.entries.items()}


class Reader:
    """A confluent-kafka consumer assigned to partitions from the beginning (or from
    `start[partition]`), collecting {partition: [(offset, value)]}."""

    def __init__(self, broker, topic, partitions, isolation, start=None, **config):
        assert isolation in ("read_committed", "read_uncommitted")
        self.topic = topic
        self.consumer = Consumer(consumer_config(broker, **{"isolation.level": isolation}, **config))
        self.consumer.assign([
            TopicPartition(topic, p, OFFSET_BEGINNING if start is None else start[p]) for p in partitions
        ])
        self.got = {p: [] for p in partitions}

    def count(self):
        return sum(len(v) for v in self.got.values())

    def _take(self, m):
        assert m.error() is None, m.error()
        self.got[m.partition()].append((m.offset(), m.value()))

    def poll_for(self, seconds):
        until = time.time() + seconds
        while time.time() < until:
            m = self.consumer.poll(0.1)
            if m is not None:
                self._take(m)
        return self.got

    def poll_until(self, count, timeout=30, settle=1.0):
        """Until `count` records arrived (or `timeout`), then `settle` seconds more so that
        anything beyond them shows up too."""
        deadline = time.time() + timeout
        while self.count() < count and time.time() < deadline:
            m = self.consumer.poll(0.1)
            if m is not None:
                self._take(m)
        return self.poll_for(settle)

    def end(self, partition):
        """The high end this consumer's isolation level sees: the last stable offset for
        read_committed, the high watermark for read_uncommitted (ListOffsets, latest)."""
        return self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10)[1]

    def close(self):
        self.consumer.close()


def read(broker, topic, isolation, expected, partitions=PARTS, timeout=30, settle=1.0, start=None, **config):
    reader = Reader(broker, topic, partitions, isolation, start=start, **config)
    try:
        return reader.poll_until(expected, timeout=timeout, settle=settle)
    finally:
        reader.close()


def values(got):
    return {p: [v for _, v in records] for p, records in got.items()}


def total(expected):
    return sum(len(v) for v in expected.values())


def ends(broker, topic, isolation, partitions=PARTS):
    reader = Reader(broker, topic, [], isolation)
    try:
        return {p: reader.end(p) for p in partitions}
    finally:
        reader.close()


def fencing_error(call):
    """Runs `call`, which must fail with a fatal fencing error; returns the KafkaError."""
    with pytest.raises(KafkaException) as raised:
        call()
    err = raised.value.args[0]
    assert err.code() in FENCED and err.fatal(), (
        f"expected a fatal fencing error, got {err.name()} (code {err.code()}, fatal {err.fatal()}, "
        f"abortable {err.txn_requires_abort()}, retriable {err.retriable()}): {err}"
    )
    return err


# A producer in its own process that opens a transaction, writes to some partitions and then
# waits to be killed: the broker never hears from it again.
ZOMBIE = textwrap.dedent("""
    import sys, time
    from confluent_kafka import Producer
    bootstrap, topic, txn_id, timeout_ms, tag, parts = sys.argv[1:7]
    failures = []
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": int(timeout_ms), "linger.ms": 5})
    p.init_transactions(30)
    p.begin_transaction()
    for part in [int(x) for x in parts.split(",")]:
        for i in range(2):
            p.produce(topic, key=f"{tag}-{i}".encode(), value=f"{tag}-p{part}-{i}".encode(), partition=part,
                      on_delivery=lambda err, msg: failures.append(err) if err else None)
    left = p.flush(30)
    print("produced" if not left and not failures else f"failed {left} {failures}", flush=True)
    time.sleep(3600)
""")


def start_zombie(broker, topic, txn_id, timeout_ms, tag, partitions):
    """Starts ZOMBIE; returns the process once its records are acknowledged, and the values
    it wrote {partition: [value]}."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ZOMBIE, broker.bootstrap, topic, txn_id, str(timeout_ms), tag,
         ",".join(str(p) for p in partitions)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().strip() if ready else "(nothing after 60 s)"
    if line != "produced":
        proc.kill()
        proc.wait()
        raise AssertionError(f"the transactional producer process said: {line}")
    return proc, {p: [f"{tag}-p{p}-{i}".encode() for i in range(2)] for p in partitions}


def kill9(proc):
    proc.kill()
    proc.wait()


def create(broker, topic, partitions=PARTITIONS):
    leaders = create_topic(broker, topic, partitions)
    assert set(leaders.values()) == {0, 1}, f"partitions are not on both shards: {leaders}"
    return leaders


# --- visibility -----------------------------------------------------------------------------

def test_read_committed_skips_aborted_transactions_on_both_shards(broker, topic):
    """Committed, aborted and back-to-back aborted transactions over four partitions (both
    shards): read_committed sees exactly the committed records, read_uncommitted all of them,
    each at the offset the log model gives (one offset per marker)."""
    create(broker, topic)
    producer = txn_producer(broker, "txn-" + topic)
    producer.init_transactions(30)
    model = LogModel(PARTS)
    rounds = [("c1", True), ("a1", False), ("c2", True), ("a2", False), ("a3", False), ("c3", True)]
    for r, (tag, commit) in enumerate(rounds):
        producer.begin_transaction()
        # 1 to 3 records per partition, varying by round and partition.
        sent = produce(producer, topic, tag, PARTS, lambda p: 1 + (p + r) % 3)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
        model.records(sent, tag)
        model.marker(PARTS)

    committed = model.visible({"c1", "c2", "c3"})
    everything = model.visible({tag for tag, _ in rounds})
    assert read(broker, topic, "read_committed", total(committed)) == committed
    assert read(broker, topic, "read_uncommitted", total(everything)) == everything
    # No transaction is open: the last stable offset is the high watermark, right after the
    # last marker.
    assert ends(broker, topic, "read_committed") == model.next
    assert ends(broker, topic, "read_uncommitted") == model.next

    # One record batch per fetch: the aborted transactions a fetch must report start
    # before the fetched range.
    small = {"message.max.bytes": 1000, "fetch.max.bytes": 1000, "max.partition.fetch.bytes": 1}
    assert read(broker, topic, "read_committed", total(committed), **small) == committed
    # Starting inside an aborted transaction (at its last record): nothing of it is seen.
    start = {p: max(o for o, _, who in model.entries[p] if who == "a1") for p in PARTS}
    later = {p: [(o, v) for o, v in committed[p] if o > start[p]] for p in PARTS}
    assert read(broker, topic, "read_committed", total(later), start=start) == later


def test_interleaved_transactions_of_two_producers(broker, topic):
    """Two producers' transactions interleaved record by record on the same partitions: the
    aborted one's records are filtered out from between the committed one's; while one is
    still open, nothing from its first record on is visible, not even the other's committed
    records."""
    create(broker, topic)
    one = txn_producer(broker, "one-" + topic)
    two = txn_producer(broker, "two-" + topic)
    one.init_transactions(30)
    two.init_transactions(30)
    model = LogModel(PARTS)

    one.begin_transaction()
    two.begin_transaction()
    model.records(produce(one, topic, "x1", PARTS, 1), "one#1")
    model.records(produce(two, topic, "y1", PARTS, 2), "two#1")
    model.records(produce(one, topic, "x2", PARTS, 1), "one#1")
    model.records(produce(two, topic, "y2", PARTS, 1), "two#1")
    two.commit_transaction(30)
    model.marker(PARTS)

    # one#1 is still open from offset 0: read_committed sees nothing yet, and the last
    # stable offset stays at 0 while the high watermark is past two's commit marker.
    reader = Reader(broker, topic, PARTS, "read_committed")
    assert reader.poll_for(2.0) == {p: [] for p in PARTS}
    assert {p: reader.end(p) for p in PARTS} == {p: 0 for p in PARTS}
    assert ends(broker, topic, "read_uncommitted") == model.next

    one.abort_transaction(30)
    model.marker(PARTS)
    expected = model.visible({"two#1"})
    assert reader.poll_until(total(expected)) == expected
    reader.close()

    # The other way round: one commits, two aborts.
    one.begin_transaction()
    two.begin_transaction()
    model.records(produce(two, topic, "y3", PARTS, 1), "two#2")
    model.records(produce(one, topic, "x3", PARTS, 2), "one#2")
    model.records(produce(two, topic, "y4", PARTS, 1), "two#2")
    two.abort_transaction(30)
    model.marker(PARTS)
    one.commit_transaction(30)
    model.marker(PARTS)

    committed = model.visible({"two#1", "one#2"})
    everything = model.visible({"one#1", "two#1", "one#2", "two#2"})
    assert read(broker, topic, "read_committed", total(committed)) == committed
    assert read(broker, topic, "read_uncommitted", total(everything)) == everything
    assert ends(broker, topic, "read_committed") == model.next


def test_read_committed_stops_at_the_last_stable_offset(broker, topic):
    """An open transaction holds read_committed consumers at its first offset: its records
    and everything after them on the partition (even non-transactional records written
    later) stay invisible until it commits; then all of it arrives, in offset order."""
    create(broker, topic)
    plain = plain_producer(broker)
    txn = txn_producer(broker, "txn-" + topic)
    txn.init_transactions(30)
    model = LogModel(PARTS)

    model.records(produce(plain, topic, "before", PARTS, 3), "plain")
    txn.begin_transaction()
    model.records(produce(txn, topic, "open", PARTS, 2), "txn")
    model.records(produce(plain, topic, "after", PARTS, 3), "plain")

    reader = Reader(broker, topic, PARTS, "read_committed")
    before = {p: [(i, f"before-p{p}-{i}".encode()) for i in range(3)] for p in PARTS}
    assert reader.poll_for(3.0) == before
    assert {p: reader.end(p) for p in PARTS} == {p: 3 for p in PARTS}, "last stable offset"
    assert ends(broker, topic, "read_uncommitted") == {p: 8 for p in PARTS}, "high watermark"
    # read_uncommitted is not held back.
    everything = model.visible({"plain", "txn"})
    assert read(broker, topic, "read_uncommitted", total(everything)) == everything

    txn.commit_transaction(30)
    model.marker(PARTS)
    assert reader.poll_until(total(everything)) == everything
    assert {p: reader.end(p) for p in PARTS} == {p: 9 for p in PARTS}
    reader.close()


# --- fencing and timeouts ------------------------------------------------------------------

def test_new_instance_fences_the_old_one_and_aborts_its_transaction(broker, topic):
    """Four instances with one transactional.id in turn. A new instance's init_transactions
    aborts the open transaction of the one before, which then gets a fatal fencing error:
    from EndTxn (A commits), from Produce (B writes more) and from AddOffsetsToTxn (C sends
    offsets). Only what the live instances committed is ever visible; the write of the
    fenced B is refused."""
    create(broker, topic)
    txn_id = "txn-" + topic
    model = LogModel(PARTS)

    a = txn_producer(broker, txn_id)
    a.init_transactions(30)
    a.begin_transaction()
    model.records(produce(a, topic, "a", PARTS, 2), "a")

    b = txn_producer(broker, txn_id)
    b.init_transactions(30)  # fences a; a's transaction is aborted
    model.marker(PARTS)
    fencing_error(lambda: a.commit_transaction(30))

    b.begin_transaction()
    model.records(produce(b, topic, "b", PARTS, 2), "b")
    b.commit_transaction(30)
    model.marker(PARTS)
    b.begin_transaction()
    model.records(produce(b, topic, "b-open", PARTS, 1), "b-open")

    c = txn_producer(broker, txn_id)
    c.init_transactions(30)  # fences b; b's second transaction is aborted
    model.marker(PARTS)

    late = []
    b.produce(topic, value=b"b-late", partition=0, on_delivery=lambda err, msg: late.append(err))
    # confluent-kafka raises the fatal error from flush(), wrapped in a SystemError when it
    # comes up while the delivery callback runs; flush() again to finish.
    raised = []
    for _ in range(3):
        try:
            assert b.flush(30) == 0
            break
        except (KafkaException, SystemError) as e:
            raised.append(e if isinstance(e, KafkaException) else e.__cause__)
    assert len(late) == 1 and late[0] is not None, f"a fenced producer's record was accepted: {late}"
    assert late[0].code() in FENCED, f"the fenced record failed with {late[0]}"
    assert all(isinstance(e, KafkaException) and e.args[0].code() == KafkaError._FENCED for e in raised), raised
    fencing_error(lambda: b.commit_transaction(30))

    c.begin_transaction()
    model.records(produce(c, topic, "c", PARTS, 1), "c")
    c.commit_transaction(30)
    c.begin_transaction()
    model.records(produce(c, topic, "c-open", PARTS, 1), "c-open")

    d = txn_producer(broker, txn_id)
    d.init_transactions(30)  # fences c; c's second transaction is aborted
    group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-" + topic})
    fencing_error(lambda: c.send_offsets_to_transaction(
        [TopicPartition(topic, 0, 1)], group.consumer_group_metadata(), 30))
    group.close()

    d.begin_transaction()
    model.records(produce(d, topic, "d", PARTS, 1), "d")
    d.commit_transaction(30)

    committed = {p: [v for _, v, who in model.entries[p] if who in ("b", "c", "d")] for p in PARTS}
    written = {p: [v for _, v, _ in model.entries[p]] for p in PARTS}
    assert values(read(broker, topic, "read_committed", total(committed))) == committed
    assert values(read(broker, topic, "read_uncommitted", total(written))) == written


def test_timed_out_transactions_are_aborted(broker, topic):
    """Two transactions with transaction.timeout.ms 3000 that never end: one of a producer
    process killed with -9, one of a live producer that just idles. The coordinator aborts
    both; read_committed consumers are not held back (the non-transactional and committed
    records written after them arrive) and never see their records; the idle producer's late
    commit is fenced."""
    create(broker, topic)
    zombie, dead = start_zombie(broker, topic, "dead-" + topic, 3000, "dead", [0, 1])
    idle = txn_producer(broker, "idle-" + topic, **{"transaction.timeout.ms": 3000})
    idle.init_transactions(30)
    idle.begin_transaction()
    idling = produce(idle, topic, "idle", [2, 3], 2)
    kill9(zombie)

    started = time.time()
    after = produce(plain_producer(broker), topic, "after", PARTS, 2)
    later = txn_producer(broker, "later-" + topic)
    later.init_transactions(30)
    later.begin_transaction()
    committed = produce(later, topic, "later", PARTS, 2)
    later.commit_transaction(30)

    expected = {p: after[p] + committed[p] for p in PARTS}
    got = values(read(broker, topic, "read_committed", total(expected), timeout=60))
    waited = time.time() - started
    assert got == expected, f"after {waited:.1f} s"
    written = {p: dead.get(p, []) + idling.get(p, []) + after[p] + committed[p] for p in PARTS}
    assert values(read(broker, topic, "read_uncommitted", total(written))) == written
    assert ends(broker, topic, "read_committed") == ends(broker, topic, "read_uncommitted")

    # The coordinator aborted the idle producer's transaction and, as Kafka's does, bumped
    # the epoch: its commit is fenced and must not bring the records back.
    fencing_error(lambda: idle.commit_transaction(30))
    assert values(read(broker, topic, "read_committed", total(expected))) == expected


# --- consume-transform-produce ----------------------------------------------------------------

def group_offsets(broker, group, topic, require_stable=False):
    """The group's committed offsets {partition: offset} (-1001 where none, the error's name
    where the partition has one), from the AdminClient (OffsetFetch without require_stable
    unless asked)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in PARTS])
    result = admin.list_consumer_group_offsets([request], require_stable=require_stable)[group].result(timeout=20)
    return {tp.partition: tp.error.name() if tp.error else tp.offset for tp in result.topic_partitions}


def test_send_offsets_commits_the_group_offsets_with_the_transaction(broker, topic):
    """A consume-transform-produce loop: offsets sent with send_offsets_to_transaction become
    the group's committed offsets when the transaction commits, not before, and never when
    it aborts; re-reading from the committed offsets after an abort gives an output with
    every input record exactly once."""
    source, sink = topic + "-in", topic + "-out"
    create(broker, source)
    create(broker, sink)
    produce(plain_producer(broker), source, "in", PARTS, 10)
    group = "g-" + uuid.uuid4().hex[:8]
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    })
    consumer.subscribe([source])
    producer = txn_producer(broker, "ctp-" + topic)
    producer.init_transactions(30)
    # Where the consumer reads next in each partition. (librdkafka's position() does not
    # follow a seek until a record is read, so it is tracked here.)
    next_offset = {p: 0 for p in PARTS}

    def take(n=None, timeout=60):
        """The next n records (all of the input's rest if n is None)."""
        out = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            if n is not None and len(out) == n:
                return out
            if n is None and all(o == 10 for o in next_offset.values()):
                return out
            m = consumer.poll(0.1)
            if m is not None:
                assert m.error() is None, m.error()
                assert m.offset() == next_offset[m.partition()], (m.partition(), m.offset(), next_offset)
                next_offset[m.partition()] = m.offset() + 1
                out.append(m)
        raise AssertionError(f"took {len(out)} of {n} records; next offsets {next_offset}")

    def transform(records):
        for m in records:
            producer.produce(sink, key=m.key(), value=b"out:" + m.value(), partition=m.partition())
        assert producer.flush(30) == 0

    def positions():
        return {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}

    def send_offsets():
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)

    nothing = {p: -1001 for p in PARTS}
    assert group_offsets(broker, group, source) == nothing

    # Round 1, committed.
    producer.begin_transaction()
    transform(take(12))
    after_first = positions()
    send_offsets()
    assert group_offsets(broker, group, source) == nothing, "offsets visible before the commit"
    producer.commit_transaction(30)
    # Partitions the round read nothing of have no position (-1001) and get no offset.
    first = {p: max(after_first.get(p, -1001), -1001) for p in PARTS}
    assert group_offsets(broker, group, source) == first

    # Round 2, aborted: the group's offsets stay.
    producer.begin_transaction()
    transform(take(12))
    send_offsets()
    producer.abort_transaction(30)
    assert group_offsets(broker, group, source) == first

    # Rewind to the committed offsets, as an application does after an abort.
    for p, offset in first.items():
        consumer.seek(TopicPartition(source, p, offset if offset >= 0 else OFFSET_BEGINNING))
        next_offset[p] = max(offset, 0)

    # Round 3, the rest, committed.
    producer.begin_transaction()
    records = take(None)
    transform(records)
    send_offsets()
    assert group_offsets(broker, group, source) == first, "offsets visible before the commit"
    # OffsetFetch with require_stable (what a read_committed consumer sends): partitions with
    # offsets pending in an open transaction answer UNSTABLE_OFFSET_COMMIT, so a consumer
    # taking them over waits rather than reading offsets about to move.
    pending = {m.partition() for m in records}
    assert group_offsets(broker, group, source, require_stable=True) == {
        p: "UNSTABLE_OFFSET_COMMIT" if p in pending else first[p] for p in PARTS}
    producer.commit_transaction(30)
    assert group_offsets(broker, group, source) == {p: 10 for p in PARTS}
    assert group_offsets(broker, group, source, require_stable=True) == {p: 10 for p in PARTS}

    # A transaction of offsets only (no records) commits them too.
    producer.begin_transaction()
    producer.send_offsets_to_transaction([TopicPartition(source, 0, 4)], consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(30)
    assert group_offsets(broker, group, source) == {p: 4 if p == 0 else 10 for p in PARTS}
    consumer.close()

    # Every input record exactly once, in order, in the committed output.
    expected = {p: [b"out:" + f"in-p{p}-{i}".encode() for i in range(10)] for p in PARTS}
    assert values(read(broker, sink, "read_committed", total(expected))) == expected


# --- kill -9 ---------------------------------------------------------------------------------

def test_transactions_survive_broker_kill_9(broker, topic):
    """The broker is kill -9ed with one transaction committed and three open: one of a live
    producer (which writes more and commits after the restart), one of a dead producer
    replaced by a new instance (whose init_transactions aborts it), one of a dead producer
    with a 4 s timeout that nobody replaces (the coordinator must abort it from its recovered
    state). After the restart read_committed sees exactly the committed and completed
    transactions, each record once, and its last stable offset reaches the high watermark."""
    create(broker, topic)
    committed = txn_producer(broker, "c-" + topic)
    committed.init_transactions(30)
    committed.begin_transaction()
    c = produce(committed, topic, "c", PARTS, 2)
    committed.commit_transaction(30)

    live = txn_producer(broker, "live-" + topic)
    live.init_transactions(30)
    live.begin_transaction()
    before = produce(live, topic, "live", PARTS, 2)
    replaced, _ = start_zombie(broker, topic, "replaced-" + topic, 60000, "replaced", PARTS)
    dead, _ = start_zombie(broker, topic, "dead-" + topic, 4000, "dead", PARTS)
    kill9(replaced)
    kill9(dead)

    broker.kill9()
    broker.start()

    # The committed transaction is intact right away (its marker was durable before the
    # commit was answered).
    got = read(broker, topic, "read_committed", total(c), timeout=30)
    assert values(got) == c

    # The live producer carries on: more records, then commit.
    after = produce(live, topic, "live-after", PARTS, 1)
    deadline = time.time() + 60
    while True:
        try:
            live.commit_transaction(30)
            break
        except KafkaException as e:
            err = e.args[0]
            assert err.retriable() and time.time() < deadline, (
                f"the open transaction could not be committed after the restart: {err.name()} "
                f"(fatal {err.fatal()}, abortable {err.txn_requires_abort()}): {err}")

    new = txn_producer(broker, "replaced-" + topic)
    new.init_transactions(60)
    new.begin_transaction()
    renewed = produce(new, topic, "renewed", PARTS, 1)
    new.commit_transaction(30)

    expected = {p: c[p] + before[p] + after[p] + renewed[p] for p in PARTS}
    got = values(read(broker, topic, "read_committed", total(expected), timeout=60))
    assert got == expected
    assert ends(broker, topic, "read_committed") == ends(broker, topic, "read_uncommitted")

    # And once more after a second restart: the markers and the aborted list are durable.
    broker.restart()
    assert values(read(broker, topic, "read_committed", total(expected))) == expected


# --- inspection APIs (kafka-python's admin client) -----------------------------------------

def test_describe_and_list_transactions_and_producers(broker, topic):
    from kafka import KafkaAdminClient
    from kafka.admin._transactions import TransactionListing, TransactionState
    from kafka.errors import TransactionalIdNotFoundError
    from kafka.structs import TopicPartition as KTopicPartition

    leaders = create(broker, topic)
    # One partition on each shard in the transaction, one outside it.
    mine = [min(p for p, s in leaders.items() if s == 0), min(p for p, s in leaders.items() if s == 1)]
    other = next(p for p in PARTS if p not in mine)
    txn_id = "txn-" + topic
    producer = txn_producer(broker, txn_id, **{"transaction.timeout.ms": 45000})
    producer.init_transactions(30)
    started_ms = time.time() * 1000
    producer.begin_transaction()
    produce(producer, topic, "x", mine, 3)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        desc = admin.describe_transactions([txn_id])[txn_id]
        assert desc.state == TransactionState.ONGOING, desc
        assert desc.topic_partitions == {KTopicPartition(topic, p) for p in mine}, desc
        assert desc.transaction_timeout_ms == 45000, desc
        assert started_ms - 2000 <= desc.transaction_start_time_ms <= time.time() * 1000 + 2000, desc
        assert desc.producer_id >= 0 and desc.producer_epoch >= 0, desc

        def listed(**filters):
            return [t for ts in admin.list_transactions(**filters).values() for t in ts if t.transactional_id == txn_id]

        assert listed() == [TransactionListing(txn_id, desc.producer_id, TransactionState.ONGOING)]
        assert len(listed(state_filters=["Ongoing"])) == 1
        assert listed(state_filters=["CompleteCommit"]) == []
        assert len(listed(producer_id_filters=[desc.producer_id])) == 1
        assert listed(producer_id_filters=[desc.producer_id + 1000]) == []

        tps = [KTopicPartition(topic, p) for p in mine + [other]]
        producers = admin.describe_producers(tps)
        for p in mine:
            active = [s for s in producers[KTopicPartition(topic, p)].active_producers if s.producer_id == desc.producer_id]
            assert len(active) == 1, producers[KTopicPartition(topic, p)]
            assert active[0].producer_epoch == desc.producer_epoch, active
            assert active[0].last_sequence == 2, active  # three records: sequences 0, 1, 2
            assert active[0].current_transaction_start_offset == 0, active
        assert [s for s in producers[KTopicPartition(topic, other)].active_producers
                if s.producer_id == desc.producer_id] == []

        producer.commit_transaction(30)
        desc = admin.describe_transactions([txn_id])[txn_id]
        assert desc.state == TransactionState.COMPLETE_COMMIT, desc
        assert listed(state_filters=["Ongoing"]) == []
        producers = admin.describe_producers([KTopicPartition(topic, p) for p in mine])
        for p in mine:
            active = [s for s in producers[KTopicPartition(topic, p)].active_producers if s.producer_id == desc.producer_id]
            assert len(active) == 1 and active[0].current_transaction_start_offset == -1, active

        with pytest.raises(TransactionalIdNotFoundError):
            admin.describe_transactions(["no-such-" + txn_id])
        # Kafka empties a transaction's partition set when it completes
        # (TransactionMetadata.completeTransitionTo clears it on CompleteCommit/CompleteAbort).
        assert desc.topic_partitions == set(), desc
    finally:
        admin.close()


# --- other clients ---------------------------------------------------------------------------

def test_kafka_python_transactional_producer(broker, topic):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition

    create(broker, topic)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-" + topic)
    producer.init_transactions()
    sent = {}

    def send(tag):
        out = {}
        for p in PARTS:
            for i in range(3):
                value = f"{tag}-p{p}-{i}".encode()
                producer.send(topic, value=value, partition=p)
                out.setdefault(p, []).append(value)
        producer.flush(timeout=30)
        return out

    for tag, commit in (("c1", True), ("a1", False), ("c2", True)):
        producer.begin_transaction()
        sent[tag] = send(tag)
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()
    producer.close()

    def kp_read(isolation, expected):
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                          isolation_level=isolation)
        tps = [KTopicPartition(topic, p) for p in PARTS]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = {p: [] for p in PARTS}
        deadline = time.time() + 30
        while sum(len(v) for v in got.values()) < expected and time.time() < deadline:
            for tp, records in c.poll(timeout_ms=500).items():
                got[tp.partition] += [r.value for r in records]
        for tp, records in c.poll(timeout_ms=1000).items():
            got[tp.partition] += [r.value for r in records]
        c.close()
        return got

    committed = {p: sent["c1"][p] + sent["c2"][p] for p in PARTS}
    everything = {p: sent["c1"][p] + sent["a1"][p] + sent["c2"][p] for p in PARTS}
    assert kp_read("read_committed", total(committed)) == committed
    assert kp_read("read_uncommitted", total(everything)) == everything
    assert values(read(broker, topic, "read_committed", total(committed))) == committed


def test_aiokafka_transactional_producer(broker, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATopicPartition

    create(broker, topic)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-" + topic)
        await producer.start()
        sent = {}
        try:
            for tag, commit in (("c1", True), ("a1", False), ("c2", True)):
                await producer.begin_transaction()
                out = {}
                for p in PARTS:
                    for i in range(3):
                        value = f"{tag}-p{p}-{i}".encode()
                        await producer.send_and_wait(topic, value=value, partition=p)
                        out.setdefault(p, []).append(value)
                sent[tag] = out
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()

        async def aio_read(isolation, expected):
            c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                                 isolation_level=isolation)
            await c.start()
            got = {p: [] for p in PARTS}
            try:
                tps = [ATopicPartition(topic, p) for p in PARTS]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                deadline = time.time() + 30
                while sum(len(v) for v in got.values()) < expected and time.time() < deadline:
                    for tp, records in (await c.getmany(timeout_ms=500)).items():
                        got[tp.partition] += [r.value for r in records]
                for tp, records in (await c.getmany(timeout_ms=1000)).items():
                    got[tp.partition] += [r.value for r in records]
            finally:
                await c.stop()
            return got

        committed = {p: sent["c1"][p] + sent["c2"][p] for p in PARTS}
        everything = {p: sent["c1"][p] + sent["a1"][p] + sent["c2"][p] for p in PARTS}
        assert await aio_read("read_committed", total(committed)) == committed
        assert await aio_read("read_uncommitted", total(everything)) == everything
        return committed

    committed = asyncio.run(run())
    assert values(read(broker, topic, "read_committed", total(committed))) == committed


# --- the exactly-once crash loop -------------------------------------------------------------

def eos_seed():
    return int(os.environ.get("STRAND_EOS_SEED") or random.SystemRandom().randrange(1 << 31))


def test_eos_loop_copies_exactly_once_through_kill_9s(tmp_path):
    """tests/eos_loop.py in a short form: a transactional copier kill -9ed and restarted 5
    times and the broker kill -9ed and restarted 3 times while it copies 2000 records; the
    output must hold every input record exactly once. The seed is printed; replay with
    `tests/eos_loop.py --seed SEED ...` (the command is printed on failure) or
    STRAND_EOS_SEED=SEED here."""
    args = eos_loop.parse_args([
        "--seed", str(eos_seed()),
        "--records", "2000",
        "--client-kills", "5",
        "--broker-kills", "3",
        "--duration", "40",
        "--workdir", str(tmp_path),
    ])
    ok, stats = eos_loop.run(args)
    assert ok, f"eos loop failed with seed {args.seed}: {stats.problems[:5]}"
    assert (stats.client_kills, stats.broker_kills) == (5, 3)
    assert stats.records_verified == stats.records
    assert stats.commits > 0


def test_eos_loop_notices_a_duplicate(tmp_path):
    """The checker itself: one output record written twice must be reported."""
    args = eos_loop.parse_args([
        "--seed", str(eos_seed()),
        "--records", "200",
        "--client-kills", "0",
        "--broker-kills", "0",
        "--duration", "1",
        "--inject-duplicate",
        "--workdir", str(tmp_path),
    ])
    ok, stats = eos_loop.run(args)
    assert not ok
    assert [kind for kind, _ in stats.problems] == ["duplicate"], stats.problems[:5]


# --- hanging transactions (issue 19, hole 1) -------------------------------------------------

def test_operator_aborts_a_hanging_transaction_with_write_txn_markers(broker, topic):
    """A transactional producer that added its partitions and wrote to them is kill -9ed
    with a long transaction timeout: its open transaction holds read_committed consumers
    at its first offset. The operator finds it (DescribeProducers) and aborts it the way
    `kafka-transactions.sh abort` does (Admin.abortTransaction: WriteTxnMarkers to the
    partition leader); the last stable offset moves, and the aborted records stay hidden."""
    from kafka import KafkaAdminClient
    from kafka.admin._transactions import AbortTransactionSpec
    from kafka.structs import TopicPartition as KTopicPartition

    leaders = create(broker, topic)
    mine = [min(p for p, s in leaders.items() if s == 0), min(p for p, s in leaders.items() if s == 1)]
    plain = plain_producer(broker)
    before = produce(plain, topic, "before", mine, 2)
    zombie, _ = start_zombie(broker, topic, "hang-" + topic, 600000, "hung", mine)
    kill9(zombie)
    after = produce(plain, topic, "after", mine, 2)
    # 2 before + 2 of the open transaction + 2 after.
    assert ends(broker, topic, "read_uncommitted", mine) == {p: 6 for p in mine}
    assert ends(broker, topic, "read_committed", mine) == {p: 2 for p in mine}, "held at the open transaction"

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        tps = [KTopicPartition(topic, p) for p in mine]
        described = admin.describe_producers(tps)
        for tp in tps:
            hanging = [s for s in described[tp].active_producers if s.current_transaction_start_offset >= 0]
            assert len(hanging) == 1, described[tp]
            admin.abort_transaction(AbortTransactionSpec(tp, hanging[0].producer_id, hanging[0].producer_epoch))
        described = admin.describe_producers(tps)
        for tp in tps:
            assert [s for s in described[tp].active_producers if s.current_transaction_start_offset >= 0] == []
    finally:
        admin.close()
    # The abort marker is the 7th offset; read_committed reaches the end and skips the
    # aborted records.
    assert ends(broker, topic, "read_committed", mine) == {p: 7 for p in mine}
    expected = {p: before[p] + after[p] for p in mine}
    assert values(read(broker, topic, "read_committed", total(expected), partitions=mine)) == expected


def test_transactional_producer_works_with_partition_verification(broker, topic):
    """KIP-890 verification is invisible to a well-behaved producer: several transactions
    in a row over partitions on both shards, with the coordinator on one of them, commit
    and abort as before."""
    create(broker, topic)
    txn = txn_producer(broker, "verified-" + topic)
    txn.init_transactions(30)
    committed = {p: [] for p in PARTS}
    for round_ in range(3):
        txn.begin_transaction()
        produce(txn, topic, f"aborted{round_}", PARTS, 2)
        txn.abort_transaction(30)
        txn.begin_transaction()
        sent = produce(txn, topic, f"committed{round_}", PARTS, 2)
        txn.commit_transaction(30)
        for p in PARTS:
            committed[p] += sent[p]
    assert values(read(broker, topic, "read_committed", total(committed))) == committed
