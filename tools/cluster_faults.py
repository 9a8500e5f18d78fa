#!/usr/bin/env python3
"""Seeded fault injection on a Strand cluster, with a checker.

Starts `--nodes` nodes (tests/compat/cluster.py) in a temporary directory and, for
`--seconds`, runs at the same time:

* a workload: every ~0.5 s a raw CreateTopics (2-4 partitions, a fresh name) sent to a
  random node that is not killed; and one idempotent acks=all confluent-kafka producer per
  node (bootstrapped on that node only) writing values "PRODUCER:SEQ" to two topics of six
  partitions created at the start. Every delivery report is recorded: acknowledged
  (topic, partition, offset, value), or the error's name (expected while a partition's
  node is down);
* a nemesis driven by random.Random(seed), one fault at a time with quiet gaps of 1-3 s:
  kill -9 one node (often the metadata leader) and restart it 1-5 s later; SIGSTOP one
  node (often the leader) for 3-6 s, then SIGCONT; kill -9 two nodes (the majority) for
  2-4 s, then restart both;
* with `--network-faults`, every inter-node link runs through a TCP proxy
  (tests/compat/cluster.py, `proxied=True`) and the nemesis also cuts the network: it
  isolates one node (often the metadata leader) from the others for 2-6 s, or cuts the
  links between two nodes (now and then one way only) for 2-5 s; either with connections
  reset and dials refused, or as a silent black hole. Clients still reach every node;
* `--group-members` (default 2) consumer-group members (confluent-kafka Consumers, one
  group per run, bootstrapped on every node, subscribed to the two topics, no
  auto-commit): each takes small batches and commits their offsets synchronously (a
  failed commit is counted and the member goes on). Every record consumed is logged with
  the member, its assignment of the partition (a new one at each rebalance) and the
  group's highest successfully committed offset of the partition at that moment. A
  monitor asks DescribeConsumerGroups which node coordinates the group, every second;
* for every fault that hits the metadata leader, a failover probe: a CreateTopics (a
  fresh name each time, every 0.5 s) to a node the fault did not hit, until one succeeds,
  and the survivors' metadata until they all name the same new controller. Times count
  from the fault.

Then it heals everything, waits until the cluster is formed, and checks:

* every acknowledged record is at its acknowledged (partition, offset) with its value;
  no value appears twice; within a partition each producer's sequence numbers rise with
  the offset; nothing foreign is in the log; offsets are dense;
* every node lists the same topics with the same leaders, each with a leader; every
  creation acknowledged (error 0) is there with its partition count; nothing is there
  that was never asked for; a creation refused with NOT_CONTROLLER / REQUEST_TIMED_OUT
  or without an answer may or may not exist (counted); any other error is an anomaly;
* no node log says "panicked"; no node exited on its own; every node runs at the end;
  no fatal idempotent-producer error; a failover probe that never succeeds with a
  majority up is an anomaly;
* the group, once the members have drained (every acknowledged record consumed and a
  commit past it succeeded, within `--group-drain-s`), per Jepsen's Kafka test: a
  **poll skip** (consecutive records of one member's uninterrupted assignment of a
  partition jump over an acknowledged offset), an acknowledged record the group **never
  consumed**, one **consumed twice past the commit** (consumed again though a commit
  covering it had succeeded before), a **non-monotonic poll** (offsets not rising within
  one member's uninterrupted assignment), **inconsistent offsets** (one offset read with
  two values, or with another value than acknowledged). Offsets are not dense (a new
  leader's control batch takes one): acknowledged offsets are what is compared.

Prints the fault log as it goes, one summary line at the end, and exits 1 on any anomaly
(keeping the work directory with every node's data and log). `--out` writes the details
(faults, creations, failover times, anomalies) as JSON.

    tools/cluster_faults.py --seed 7 --seconds 300 --out faults.json
    tools/cluster_faults.py --seed 7 --seconds 120 --network-faults --replication-factor 3
"""

import argparse
import bisect
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compat"))

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402

from cluster import (  # noqa: E402
    NOT_CONTROLLER, REQUEST_TIMED_OUT, Cluster, create_topic_raw, metadata, node_of,
    replica_batches,
)

# What a creation may be refused with while nodes are down or paused; it may still exist.
UNCERTAIN_CODES = {NOT_CONTROLLER, REQUEST_TIMED_OUT}
PROBE_CAP_S = 40  # a failover probe gives up after this long
AGREE_TIMEOUT_S = 60  # after healing: nodes agree on the metadata within this
SLOW_CREATE_S = 10  # a CreateTopics answered (either way) after this long is counted as slow


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def fmt(x):
    return "-" if x is None else f"{x:.2f}"


def with_log_level(workdir, binary, level):
    """A script that runs `binary` with the harness's `--log-level info` replaced by
    `level` (exec: the node's pid is the broker's own, for SIGSTOP and kill -9)."""
    path = workdir / "strand-log-level.sh"
    path.write_text(
        "#!/bin/bash\nargs=()\nprev=\nfor a in \"$@\"; do\n"
        f"  if [ \"$prev\" = --log-level ]; then a='{level}'; fi\n"
        "  args+=(\"$a\"); prev=\"$a\"\ndone\n"
        f"exec '{binary}' \"${{args[@]}}\"\n")
    path.chmod(0o755)
    return str(path)


class Run:
    """Shared state of one run: the cluster, the clock, the fault log, the anomalies."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.replicated = getattr(args, "replication_factor", 1) > 1
        extra = ["--max-partitions-per-shard", str(args.max_partitions_per_shard), *args.extra]
        self.cluster = Cluster(workdir, nodes=args.nodes, shards=args.shards, extra=extra,
                               proxied=getattr(args, "network_faults", False))
        if args.log_level:
            wrapper = with_log_level(workdir, self.cluster.nodes[0].bin, args.log_level)
            for n in self.cluster.nodes:
                n.bin = wrapper
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.lock = threading.RLock()  # node processes: kill / start / exit checks
        self.killed = set()  # node ids the nemesis killed and has not restarted yet
        self.paused = set()  # node ids under SIGSTOP
        self.isolated = set()  # node ids the nemesis cut off from all others
        self.anomalies = []
        self.events = []
        self.stop = threading.Event()  # the fault period is over

    def now(self):
        return round(time.monotonic() - self.t0, 3)

    def say(self, text):
        line = f"[{self.now():8.2f}s {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with self.lock:
            self.events.append(line)

    def anomaly(self, kind, detail):
        with self.lock:
            self.anomalies.append({"kind": kind, "detail": detail, "t": self.now()})
            shown = sum(1 for a in self.anomalies if a["kind"] == kind)
        if shown <= 10:  # all of them go to --out
            self.say(f"ANOMALY {kind}: {detail}")

    def reachable(self):
        """Nodes the nemesis has not killed (paused ones included: a client cannot tell)."""
        with self.lock:
            return [n for n in self.cluster.nodes if n.node_id not in self.killed and n.running()]

    def healthy(self, exclude=()):
        with self.lock:
            return [n for n in self.cluster.nodes
                    if n.node_id not in self.killed and n.node_id not in self.paused
                    and n.node_id not in self.isolated and n.node_id not in exclude and n.running()]

    def check_exits(self):
        """A node that exited without the nemesis killing it is an anomaly (once)."""
        with self.lock:
            for n in self.cluster.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    code = n.proc.returncode
                    n.proc = None
                    self.killed.add(n.node_id)  # so that healing restarts it
                    tail = n.log()[-3000:]
                    self.anomaly("node-exited", f"node {n.node_id} exited on its own with {code}; log tail:\n{tail}")

    def start_nodes(self, nodes):
        """Starts nodes that are down, together; a failure to start is an anomaly (tried
        three times)."""
        for attempt in range(3):
            todo = [n for n in nodes if not n.running()]
            if not todo:
                break
            try:
                self.cluster.start(todo)
            except Exception as e:  # noqa: BLE001 - reported
                self.anomaly("restart-failed", f"nodes {[n.node_id for n in todo]} (attempt {attempt + 1}): {str(e)[-3000:]}")
                time.sleep(1)
        with self.lock:
            for n in nodes:
                if n.running():
                    self.killed.discard(n.node_id)

    def controller_seen(self, exclude=()):
        """The controller id named by a random healthy node's metadata (-1 if none)."""
        for n in self.healthy(exclude):
            try:
                return metadata(n.port, timeout=3).controller_id
            except (OSError, AssertionError):
                continue
        return -1


# ------------------------------------------------------------------ producers

def client_logger(path):
    """A logging.Logger that writes each librdkafka log line, with a wall-clock time, to
    `path`."""
    import logging
    logger = logging.getLogger(f"librdkafka:{path}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


# Producers whose librdkafka reported a produce request timed out (REQTMOUT): a request's
# fate unknown, after which an idempotent producer bumps its epoch and resends.
TIMED_OUT_PRODUCERS = set()


class TimeoutWatch:
    """A logging handler counting librdkafka's request-timeout lines of one producer."""

    def __init__(self, pname):
        import logging
        self.pname = pname
        self.handler = logging.Handler()
        self.handler.emit = self.emit

    def emit(self, record):
        text = record.getMessage()
        if "REQTMOUT" in text or "Timed out" in text:
            TIMED_OUT_PRODUCERS.add(self.pname)


class ProducerThread(threading.Thread):
    """One idempotent acks=all producer bootstrapped on one node, writing "NAME:SEQ" to
    random partitions of the fixed topics at a bounded rate. A fatal error ends the
    instance; the next one has a new name (so each name is one producer id's stream)."""

    def __init__(self, run, node, topics, rng):
        super().__init__(name=f"producer-n{node.node_id}", daemon=True)
        self.run_ = run
        self.node = node
        self.topics = topics  # {name: partitions}
        self.rng = rng
        self.lock = threading.Lock()
        self.acked = []  # (topic, partition, offset, value)
        # Acknowledged, but the delivery report carried no offset (librdkafka's
        # RD_KAFKA_OFFSET_INVALID): checked by value in their partition.
        self.acked_no_offset = []  # (topic, partition, value)
        self.errors = Counter()  # delivery report errors by name
        self.client_errors = Counter()  # error_cb by name
        self.fatal = []
        self.instance = -1
        self.sent = 0
        self.error = None

    def new_producer(self):
        self.instance += 1
        self.pname = f"n{self.node.node_id}.{self.instance}"
        config = {
            "bootstrap.servers": self.node.bootstrap,
            "client.id": f"faults-{self.pname}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": self.run_.args.message_timeout_ms,
            # A request to a leader behind a stalled link is given up (its records
            # possibly persisted) and retried with the same sequence numbers well before
            # its records time out. A record that times out makes librdkafka bump the
            # producer epoch and send the records still queued under new sequences, and
            # one of them already written may then be written twice: the idempotent
            # producer's guarantee ends at message.timeout.ms (librdkafka issue #4953).
            "request.timeout.ms": 5000,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self.on_error,
        }
        if self.run_.args.client_debug:
            # librdkafka's debug log of this producer, to its own file in the work dir.
            logger = client_logger(self.run_.workdir / f"producer-{self.pname}.log")
            config.update({"debug": self.run_.args.client_debug, "log_level": 7})
        else:
            import logging
            logger = logging.getLogger(f"librdkafka-warnings:{self.pname}")
            logger.propagate = False
            logger.setLevel(logging.WARNING)
            config["log_level"] = 4
        # Its request timeouts are noted (see epoch_bump_copy).
        logger.addHandler(TimeoutWatch(self.pname).handler)
        config["logger"] = logger
        return Producer(config)

    def on_error(self, err):
        if err.fatal():
            self.fatal.append(f"{self.pname}: {err}")
        with self.lock:
            self.client_errors[err.name()] += 1

    def on_delivery(self, err, msg):
        with self.lock:
            if err is None and msg.offset() is None:
                self.acked_no_offset.append((msg.topic(), msg.partition(), msg.value().decode()))
            elif err is None:
                self.acked.append((msg.topic(), msg.partition(), msg.offset(), msg.value().decode()))
            else:
                self.errors[err.name()] += 1

    def run(self):
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = repr(e)

    def loop(self):
        producer = self.new_producer()
        seq = 0
        targets = [(t, p) for t, n in sorted(self.topics.items()) for p in range(n)]
        interval = 1.0 / self.run_.args.rate
        next_at = time.monotonic()
        while not self.run_.stop.is_set():
            if self.fatal:
                self.run_.anomaly("producer-fatal", "; ".join(self.fatal))
                self.fatal.clear()
                producer.flush(0)
                producer = self.new_producer()
                seq = 0
            topic, partition = self.rng.choice(targets)
            value = f"{self.pname}:{seq}"
            try:
                producer.produce(topic, value=value.encode(), partition=partition,
                                 on_delivery=self.on_delivery)
                seq += 1
                self.sent += 1
            except BufferError:
                producer.poll(0.1)
                continue
            except KafkaException as e:
                self.fatal.append(f"{self.pname}: produce: {e}")
                continue
            next_at += interval
            producer.poll(0)
            while True:  # poll returns early when it served a callback
                delay = next_at - time.monotonic()
                if delay <= 0:
                    break
                producer.poll(delay)
            if delay < -1:
                next_at = time.monotonic()  # fell behind: do not burst
        left = producer.flush(self.run_.args.final_flush_s)
        if left:
            with self.lock:
                self.errors["_NOT_DELIVERED_AT_END"] += left
        if self.fatal:
            self.run_.anomaly("producer-fatal", "; ".join(self.fatal))


# ------------------------------------------------------------------ consumer group

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 16  # its partitions (Kafka's default, Strand's)


def offsets_partition(group):
    """The __consumer_offsets partition that holds `group`: Strand hashes the group id
    with 32-bit FNV-1a (docs/replication.md)."""
    h = 0x811C9DC5
    for b in group.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % OFFSETS_PARTITIONS


class GroupState:
    """What the members of the group share: the group's highest successfully committed
    offset of each partition, and every record consumed."""

    def __init__(self, group):
        self.group = group
        self.partition = offsets_partition(group)
        self.lock = threading.Lock()
        self.committed = {}  # (topic, partition) -> the next offset, as committed
        # (member, assignment, topic, partition, offset, value, committed then, t)
        self.log = []
        self.assignments = itertools.count(1)
        self.coordinators = []  # (t, node id) each time DescribeConsumerGroups names another
        self.describe_failures = Counter()
        self.events = []  # (t, member, what, detail): assignments, losses, failed commits

    def committed_past(self, ends):
        """Whether a commit at or past `ends[(topic, partition)]` succeeded for each."""
        with self.lock:
            return all(self.committed.get(k, 0) >= end for k, end in ends.items())


class GroupMember(threading.Thread):
    """One member of the run's group, bootstrapped on every node: takes batches of up to
    --group-batch records, logs each with the group's committed offset of its partition
    at that moment, and commits the batch's offsets synchronously. A commit that fails (a
    coordinator moving, a rebalance) is counted and the member goes on: a later one
    covers it."""

    def __init__(self, run, state, index, topics):
        super().__init__(name=f"member-{index}", daemon=True)
        self.run_ = run
        self.state = state
        self.mname = f"m{index}"
        self.topics = sorted(topics)
        self.assignment = {}  # (topic, partition) -> assignment id (a new one each time)
        self.pending = {}  # (topic, partition) -> next offset consumed, not yet committed
        self.stop = threading.Event()
        self.commits = Counter()  # "ok" or the error's name
        self.errors = Counter()  # consume errors by name
        self.rebalances = 0
        self.consumed = 0
        self.error = None

    def on_assign(self, consumer, partitions):
        self.rebalances += 1
        ids = []
        for tp in partitions:
            self.assignment[(tp.topic, tp.partition)] = a = next(self.state.assignments)
            ids.append(f"{tp.topic}/{tp.partition}#{a}")
        self.event("assigned", ids)

    def on_lost(self, consumer, partitions):
        self.event("lost", [f"{tp.topic}/{tp.partition}" for tp in partitions])
        self.drop(partitions)

    def on_revoke(self, consumer, partitions):
        self.event("revoked", [f"{tp.topic}/{tp.partition}" for tp in partitions])
        self.drop(partitions)

    def event(self, what, detail):
        with self.state.lock:
            self.state.events.append((self.run_.now(), self.mname, what, detail))

    def drop(self, partitions):
        for tp in partitions:
            self.assignment.pop((tp.topic, tp.partition), None)
            self.pending.pop((tp.topic, tp.partition), None)  # the next owner re-reads it

    def new_consumer(self):
        config = {
            "bootstrap.servers": self.run_.cluster.bootstrap_all(),
            "group.id": self.state.group,
            "client.id": f"faults-{self.mname}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 2000,
            "socket.timeout.ms": 10000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "log_level": 0,
        }
        if self.run_.args.client_debug:
            config.update({"debug": self.run_.args.client_debug, "log_level": 7,
                           "logger": client_logger(self.run_.workdir / f"member-{self.mname}.log")})
        c = Consumer(config)
        c.subscribe(self.topics, on_assign=self.on_assign, on_revoke=self.on_revoke,
                    on_lost=self.on_lost)
        return c

    def run(self):
        try:
            self.loop()
        except Exception:  # noqa: BLE001 - reported by the main thread
            self.error = traceback.format_exc()[-2000:]

    def loop(self):
        consumer = self.new_consumer()
        state = self.state
        retry_at = 0.0
        try:
            while not self.stop.is_set():
                batch = {}
                for m in consumer.consume(num_messages=self.run_.args.group_batch, timeout=0.2):
                    if m.error() is not None:
                        self.errors[m.error().name()] += 1
                        continue
                    k = (m.topic(), m.partition())
                    value = (m.value() or b"").decode(errors="replace")
                    with state.lock:
                        state.log.append((self.mname, self.assignment.get(k), k[0], k[1], m.offset(), value,
                                          state.committed.get(k, 0), self.run_.now()))
                    self.consumed += 1
                    batch[k] = max(batch.get(k, 0), m.offset() + 1)
                    if k in self.assignment:
                        self.pending[k] = max(self.pending.get(k, 0), m.offset() + 1)
                # What failed to commit is committed again with the next batch, or on its
                # own every half second: the last records before an idle spell too.
                if not batch and (not self.pending or time.monotonic() < retry_at):
                    continue
                retry_at = time.monotonic() + 0.5
                todo = {**self.pending, **batch}
                try:
                    done = consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in todo.items()],
                                           asynchronous=False)
                except KafkaException as e:
                    self.commits[e.args[0].name()] += 1
                    self.event("commit-failed", f"{e.args[0].name()} {sorted(todo.items())}")
                    continue
                for tp in done or []:
                    if tp.error is not None:
                        self.commits[tp.error.name()] += 1
                        self.event("commit-failed", f"{tp.error.name()} {tp.topic}/{tp.partition} {tp.offset}")
                        continue
                    self.commits["ok"] += 1
                    k = (tp.topic, tp.partition)
                    if self.pending.get(k, 0) <= tp.offset:
                        self.pending.pop(k, None)
                    with state.lock:
                        state.committed[k] = max(state.committed.get(k, 0), tp.offset)
        finally:
            consumer.close()


def coordinator_monitor(run, state, stop):
    """Asks DescribeConsumerGroups which node coordinates the group, every second, and
    logs each change (a client that got no answer is replaced: it looks the coordinator
    up afresh)."""
    from confluent_kafka.admin import AdminClient

    def client():
        return AdminClient({"bootstrap.servers": run.cluster.bootstrap_all(), "log_level": 0,
                            "socket.timeout.ms": 3000})
    admin = client()
    while not stop.wait(1.0):
        try:
            got = admin.describe_consumer_groups([state.group], request_timeout=2)[state.group].result(timeout=3)
        except Exception as e:  # noqa: BLE001 - no answer during a fault: ask again
            with state.lock:
                state.describe_failures[f"{run.now():.0f}s {str(e)[:100]}"] += 1
            admin = client()
            continue
        if got.coordinator is None:
            continue
        node = node_of(got.coordinator.id)
        with state.lock:
            if not state.coordinators or state.coordinators[-1][1] != node:
                state.coordinators.append((run.now(), node))


def group_anomalies(log, acked):
    """The group's anomalies, Jepsen's Kafka test vocabulary: {kind: [detail]}.

    `log`: (member, assignment, topic, partition, offset, value, committed, t) in the order
    consumed, `committed` the group's highest successful commit of the partition when the
    record was taken; `acked`: {(topic, partition, offset): value}."""
    found = defaultdict(list)
    acked_offsets = defaultdict(list)
    for (t, p, o) in sorted(acked):
        acked_offsets[(t, p)].append(o)
    values = {}  # (topic, partition, offset) -> (value, member, t) first read
    last = {}  # (member, assignment, topic, partition) -> (offset, t)
    for member, assignment, t, p, o, value, committed, at in log:
        key = (t, p, o)
        if key in acked and acked[key] != value:
            found["inconsistent-offset"].append(f"{t}/{p}@{o}: {member} read {value!r} at {at}s, "
                                                f"acknowledged {acked[key]!r}")
        if key in values and values[key][0] != value:
            found["inconsistent-offset"].append(f"{t}/{p}@{o}: {member} read {value!r} at {at}s, "
                                                f"{values[key][1]} read {values[key][0]!r} at {values[key][2]}s")
        if o < committed:
            first = values.get(key)
            found["consumed-twice-past-commit"].append(
                f"{t}/{p}@{o} ({value}) taken by {member} (assignment {assignment}) at {at}s though the group had committed {committed}"
                + (f" (first taken by {first[1]} at {first[2]}s)" if first else " (never taken before)"))
        values.setdefault(key, (value, member, at))
        run_key = (member, assignment, t, p)
        if run_key in last:
            prev, prev_at = last[run_key]
            if o <= prev:
                found["nonmonotonic-poll"].append(f"{member} (assignment {assignment}) {t}/{p}: offset {o} at "
                                                  f"{at}s after {prev} at {prev_at}s")
            else:
                offsets = acked_offsets.get((t, p), [])
                i = bisect.bisect_right(offsets, prev)
                if i < len(offsets) and offsets[i] < o:
                    found["poll-skip"].append(f"{member} (assignment {assignment}) {t}/{p}: offset {o} at {at}s "
                                              f"right after {prev} at {prev_at}s, over acknowledged {offsets[i]}")
        last[run_key] = (o, at)
    never = [k for k in sorted(acked) if k not in values]
    for t, p, o in never:
        found["never-consumed"].append(f"{t}/{p}@{o} ({acked[(t, p, o)]}) acknowledged, never consumed by the group")
    return found


def committed_offsets(run, group, keys):
    """{(topic, partition): committed offset} of `group`, or None if not answered."""
    c = Consumer({"bootstrap.servers": run.cluster.bootstrap_all(), "group.id": group, "log_level": 0})
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                got = c.committed([TopicPartition(t, p) for t, p in keys], timeout=10)
                return {(tp.topic, tp.partition): tp.offset for tp in got if tp.error is None}
            except KafkaException:
                time.sleep(1)
        return None
    finally:
        c.close()


def drain_and_check_group(run, state, members, producers, report, monitor_stop):
    """After healing: lets the members run until a commit past every acknowledged record
    succeeded (or --group-drain-s), stops them, and checks what they consumed."""
    acked = {}
    for pr in producers:
        for t, p, o, v in pr.acked:
            acked[(t, p, o)] = v
    ends = {}
    for t, p, o in acked:
        ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
    started = time.monotonic()
    deadline = started + run.args.group_drain_s
    while not state.committed_past(ends) and time.monotonic() < deadline:
        if not any(m.is_alive() for m in members):
            break
        time.sleep(0.2)
    drained = state.committed_past(ends)
    drain_s = round(time.monotonic() - started, 2)
    run.say(f"group {state.group}: {'drained' if drained else 'NOT drained'} after {drain_s}s")
    for m in members:
        m.stop.set()
    for m in members:
        m.join(40)
        if m.is_alive() or m.error:
            run.anomaly("group-member", f"{m.name}: {'still running' if m.is_alive() else m.error}")
    monitor_stop.set()
    with state.lock:
        log = list(state.log)
        committed = dict(state.committed)
    if not drained:
        behind = {f"{t}/{p}": (committed.get((t, p), 0), end) for (t, p), end in sorted(ends.items())
                  if committed.get((t, p), 0) < end}
        run.anomaly("group-drain-timeout", f"no commit past every acknowledged record within "
                    f"{run.args.group_drain_s:g}s; (committed, needed): {behind}")
    found = group_anomalies(log, acked)
    # What the group has committed, asked afresh (OffsetFetch; no member joins): never
    # below what a commit that succeeded set.
    stored = committed_offsets(run, state.group, sorted(committed))
    if stored is None:
        run.anomaly("group-commits-unreadable", "OffsetFetch of the group's commits failed for 30 s")
    else:
        for k, want in sorted(committed.items()):
            if stored.get(k, -1) < want:
                found["commit-lost"].append(f"{k[0]}/{k[1]}: the group's commit of {want} succeeded, "
                                            f"OffsetFetch answers {stored.get(k)}")
    for kind, details in sorted(found.items()):
        for d in details[:20]:  # all are counted; the first few are kept
            run.anomaly(f"group-{kind}", d)
        if len(details) > 20:
            run.say(f"... and {len(details) - 20} more group-{kind}")
    consumed_keys = {(t, p, o) for _, _, t, p, o, _, _, _ in log}
    takeovers = []  # (time, node, term) from the nodes' logs
    needle = "now coordinating the groups of an offsets partition"
    for n in run.cluster.nodes:
        for line in n.log().splitlines():
            if needle in line and re.search(rf"\bpartition={state.partition}\b", line):
                term = re.search(r"\bterm=(\d+)", line)
                takeovers.append((line.split()[0], n.node_id, int(term.group(1)) if term else None))
    takeovers.sort()
    commits = Counter()
    for m in members:
        commits.update(m.commits)
    report["group"] = {
        "group": state.group, "members": len(members), "offsets_partition": state.partition,
        "consumed": len(log), "distinct": len(consumed_keys), "redelivered": len(log) - len(consumed_keys),
        "acked": len(acked), "drained": drained, "drain_s": drain_s,
        "commits": dict(commits), "consume_errors": dict(sum((Counter(m.errors) for m in members), Counter())),
        "rebalances": sum(m.rebalances for m in members),
        "coordinators": state.coordinators, "coordinator_moves": max(0, len(state.coordinators) - 1),
        "takeovers_logged": max(0, len(takeovers) - 1), "takeovers": takeovers, "describe_failures": dict(state.describe_failures),
        "anomalies": {k: len(v) for k, v in sorted(found.items())},
        "member_events": state.events,
    }
    if found:
        report["group"]["consumed_log"] = log  # in --out: what each member took, when


# ------------------------------------------------------------------ topic creations

class Creations:
    """Every CreateTopics sent (workload and failover probes) and what came of it."""

    def __init__(self, run):
        self.run = run
        self.lock = threading.Lock()
        self.items = []  # dicts: name, partitions, node, source, t, outcome, code, took
        self.threads = []

    def create(self, node, name, partitions, source):
        """Sends one CreateTopics to `node` and records it; returns the record."""
        item = {"name": name, "partitions": partitions, "node": node.node_id, "source": source,
                "t": self.run.now(), "outcome": None, "code": None, "message": None, "took": None}
        with self.lock:
            self.items.append(item)
        started = time.monotonic()
        try:
            code, message = create_topic_raw(node.port, name, partitions, timeout_ms=10_000,
                                             socket_timeout=self.run.args.create_socket_timeout_s)
            item["code"] = code
            item["message"] = message
            item["outcome"] = "ok" if code == 0 else "refused"
        except ConnectionRefusedError:
            item["outcome"] = "unreachable"  # never reached a broker: it cannot exist
        except (OSError, AssertionError, Exception) as e:  # noqa: BLE001
            item["outcome"] = "unknown"
            item["message"] = repr(e)
        item["took"] = round(time.monotonic() - started, 3)
        item["done"] = self.run.now()
        return item

    def spawn(self, node, name, partitions, source, done=None):
        def go():
            item = self.create(node, name, partitions, source)
            if done is not None:
                done(item)
        t = threading.Thread(target=go, name=f"create-{name}", daemon=True)
        with self.lock:
            self.threads = [x for x in self.threads if x.is_alive()]
            self.threads.append(t)
        t.start()
        return t

    def in_flight(self):
        with self.lock:
            return sum(1 for t in self.threads if t.is_alive())

    def join(self, timeout):
        deadline = time.time() + timeout
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            t.join(max(0.1, deadline - time.time()))
        return sum(1 for t in threads if t.is_alive())


def creation_workload(run, creations, rng):
    k = 0
    while not run.stop.is_set():
        time.sleep(rng.uniform(0.4, 0.6))
        nodes = run.reachable()
        if not nodes or creations.in_flight() >= 24:
            continue
        node = rng.choice(nodes)
        creations.spawn(node, f"w-{run.args.seed}-{k}", rng.randint(2, 4), "workload")
        k += 1


# ------------------------------------------------------------------ failover probe

class FailoverProbe(threading.Thread):
    """After a fault that hit the metadata leader: CreateTopics to the survivors (a fresh
    name every 0.5 s, alternating survivors) until one succeeds, and their metadata until
    they all name the same controller, other than the old one."""

    def __init__(self, run, creations, fault, survivors, old_controller, started):
        super().__init__(name=f"probe-{fault['id']}", daemon=True)
        self.run_ = run
        self.creations = creations
        self.fault = fault
        self.survivors = survivors
        self.old_controller = old_controller
        self.started = started  # monotonic time of the fault
        self.first_ok = None
        self.agreed = None
        self.attempts = []

    def settled_on_old(self):
        """Healed, and every node names the old controller again (it came back and won):
        there will be no new one to wait for."""
        if "healed_after_s" not in self.fault:
            return False
        try:
            ids = {metadata(n.port, timeout=2).controller_id for n in self.run_.healthy()}
        except (OSError, AssertionError):
            return False
        if ids == {self.old_controller} and len(self.run_.healthy()) == len(self.run_.cluster.nodes):
            self.fault["new_controller"] = self.old_controller
            return True
        return False

    def on_done(self, item):
        if item["outcome"] == "ok":
            at = time.monotonic() - self.started
            if self.first_ok is None or at < self.first_ok:
                self.first_ok = at
        self.attempts.append({k: item[k] for k in ("name", "node", "outcome", "code", "took", "t")})

    def run(self):
        k = 0
        next_attempt = 0.0
        while True:
            elapsed = time.monotonic() - self.started
            if self.first_ok is not None and (self.agreed is not None or self.settled_on_old()):
                break
            if elapsed > PROBE_CAP_S:
                break
            if self.first_ok is None and elapsed >= next_attempt:
                node = self.survivors[k % len(self.survivors)]
                self.creations.spawn(node, f"fo-{self.run_.args.seed}-{self.fault['id']}-{k}", 1,
                                     "probe", self.on_done)
                k += 1
                next_attempt = elapsed + 0.5
            if self.agreed is None:
                try:
                    ids = {metadata(n.port, timeout=2).controller_id for n in self.survivors}
                except (OSError, AssertionError):
                    ids = {None}
                if len(ids) == 1:
                    c = ids.pop()
                    if c is not None and c >= 0 and c != self.old_controller:
                        self.agreed = time.monotonic() - self.started
                        self.fault["new_controller"] = c
            time.sleep(0.1)
        self.fault["failover_create_s"] = None if self.first_ok is None else round(self.first_ok, 3)
        self.fault["failover_controller_s"] = None if self.agreed is None else round(self.agreed, 3)
        self.fault["probe_attempts"] = self.attempts
        self.run_.say(f"fault {self.fault['id']} failover: create ok after {fmt(self.first_ok)}s, "
                      f"survivors agree on a new controller after {fmt(self.agreed)}s")
        if self.first_ok is None and self.fault["kind"] != "kill2":
            self.run_.anomaly("no-failover", f"fault {self.fault['id']} ({self.fault['kind']} of node "
                              f"{self.fault['nodes']}): no CreateTopics to {[n.node_id for n in self.survivors]} "
                              f"succeeded within {PROBE_CAP_S}s")


# ------------------------------------------------------------------ nemesis

def nemesis(run, creations, rng, faults):
    cluster = run.cluster
    ids = [n.node_id for n in cluster.nodes]
    fid = 0
    while not run.stop.is_set():
        time.sleep(rng.uniform(1, 3))
        if run.stop.is_set():
            break
        run.check_exits()
        if run.args.network_faults:
            kind = rng.choices(["kill", "pause", "kill2", "isolate", "cut"],
                               weights=[0.25, 0.15, 0.1, 0.3, 0.2])[0]
        else:
            kind = rng.choices(["kill", "pause", "kill2"], weights=[0.45, 0.35, 0.2])[0]
        aim_leader = rng.random() < 0.6
        pick = rng.choice(ids)
        pick2 = rng.sample(ids, 2)
        hold = {"kill": rng.uniform(1, 5), "pause": rng.uniform(3, 6), "kill2": rng.uniform(2, 4)}.get(kind)
        mode, one_way = None, False
        if run.args.network_faults:  # more draws only then: a default run replays as before
            mode = rng.choice(["reset", "stall"])
            one_way = rng.random() < 0.3
            if fid == 0:
                kind = "isolate"  # at least one network fault, however short the run
            hold = {"isolate": rng.uniform(2, 6), "cut": rng.uniform(2, 5)}.get(kind, hold)
        controller = run.controller_seen()
        leader = node_of(controller)
        if kind in ("kill2", "cut"):
            targets = sorted(pick2)
            if aim_leader and leader > 0 and leader not in targets:
                targets = sorted([leader, pick2[0]])
            if kind == "cut" and pick2[0] > pick2[1]:
                targets.reverse()  # a one-way cut drops what targets[0] sends to targets[1]
        else:
            targets = [leader if aim_leader and leader > 0 else pick]
        fid += 1
        hits_leader = leader in targets
        if kind == "cut":
            hits_leader = False  # each of the two still reaches the third: no failover
        fault = {"id": fid, "kind": kind, "nodes": targets, "hold_s": round(hold, 3),
                 "controller_before": controller, "hits_leader": hits_leader, "t": run.now(),
                 "wall": time.strftime("%H:%M:%S")}
        if kind in ("isolate", "cut"):
            fault["mode"] = mode
        if kind == "cut":
            fault["one_way"] = one_way
        faults.append(fault)
        nodes = [cluster.node(i) for i in targets]
        survivors = [n for n in cluster.nodes if n.node_id not in targets]
        started = time.monotonic()
        with run.lock:
            if kind == "isolate":
                cluster.isolate(nodes[0], mode=mode)
                run.isolated.add(nodes[0].node_id)
            elif kind == "cut":
                cluster.cut(nodes[0], nodes[1], mode=mode, both_ways=not one_way)
            for n in nodes:
                if kind == "pause":
                    os.kill(n.pid, signal.SIGSTOP)
                    run.paused.add(n.node_id)
                elif kind in ("kill", "kill2"):
                    n.kill9()
                    run.killed.add(n.node_id)
        how = ""
        if kind == "isolate":
            how = f" ({mode})"
        elif kind == "cut":
            how = f" ({mode}, {f'only {targets[0]} -> {targets[1]}' if one_way else 'both ways'})"
        run.say(f"fault {fid}: {kind} node(s) {targets}{how} for {hold:.1f}s"
                f"{' (the metadata leader)' if hits_leader else ''}, controller was {controller}")
        probe = None
        if hits_leader:
            probe = FailoverProbe(run, creations, fault, survivors, controller, started)
            probe.start()
        time.sleep(hold)
        if kind == "pause":
            with run.lock:
                for n in nodes:
                    os.kill(n.pid, signal.SIGCONT)
                    run.paused.discard(n.node_id)
        elif kind in ("isolate", "cut"):
            with run.lock:
                cluster.heal()
                run.isolated.clear()
        else:
            run.start_nodes(nodes)
        fault["healed_after_s"] = round(time.monotonic() - started, 3)
        run.say(f"fault {fid}: healed node(s) {targets} after {fault['healed_after_s']:.1f}s")
        if probe is not None:
            probe.join(PROBE_CAP_S + 5)
        run.check_exits()


# ------------------------------------------------------------------ checker

def snapshot(run):
    """{node id: Metadata} from every node (None where it does not answer)."""
    out = {}
    for n in run.cluster.nodes:
        try:
            out[n.node_id] = metadata(n.port, timeout=5)
        except (OSError, AssertionError):
            out[n.node_id] = None
    return out


def metadata_problems(run, views):
    """What is wrong with the nodes' metadata views: [(kind, detail)]."""
    problems = []
    brokers = set(run.cluster.broker_ids())
    if any(v is None for v in views.values()):
        return [("node-unanswered", f"nodes {[i for i, v in views.items() if v is None]} do not answer Metadata")]
    first_id, first = next(iter(views.items()))
    for i, v in views.items():
        if set(v.brokers) != brokers:
            problems.append(("brokers", f"node {i} lists brokers {sorted(v.brokers)}"))
        if v.controller_id != first.controller_id or v.controller_id not in brokers:
            problems.append(("controller", f"node {i} names controller {v.controller_id}, node {first_id} {first.controller_id}"))
        if set(v.topics) != set(first.topics):
            a, b = set(v.topics), set(first.topics)
            problems.append(("topic-sets-differ", f"node {i} vs node {first_id}: only on {i}: {sorted(a - b)[:10]}, only on {first_id}: {sorted(b - a)[:10]}"))
        for name, (code, leaders) in v.topics.items():
            if code != 0:
                problems.append(("topic-error", f"node {i}: {name} has error {code}"))
            elif not leaders or min(leaders.values()) < 0 or not set(leaders.values()) <= brokers:
                problems.append(("leaders", f"node {i}: {name} leaders {leaders}"))
            elif name in first.topics and first.topics[name][1] != leaders:
                problems.append(("leaders-differ", f"{name}: node {i} {leaders}, node {first_id} {first.topics[name][1]}"))
    return problems


def check_metadata(run, creations, report):
    deadline = time.time() + AGREE_TIMEOUT_S
    while True:
        views = snapshot(run)
        problems = metadata_problems(run, views)
        if not problems or time.time() > deadline:
            break
        time.sleep(0.5)
    for kind, detail in problems[:50]:
        run.anomaly(kind, detail)
    views = {i: v for i, v in views.items() if v is not None}
    topics_everywhere = {}
    for i, v in views.items():
        for name, (_, leaders) in v.topics.items():
            topics_everywhere.setdefault(name, {})[i] = len(leaders)
    asked = {}
    counts = Counter()
    exist_uncertain = Counter()
    for item in creations.items:
        asked[item["name"]] = item
        # A request still unanswered when the checker runs (its thread is joined with a
        # bound) is as uncertain as one that timed out.
        outcome = item["outcome"] or "pending"
        present = {i: topics_everywhere.get(item["name"], {}).get(i) for i in views}
        exists = any(p is not None for p in present.values())
        key = outcome if outcome != "refused" else f"refused:{item['code']}"
        counts[key] += 1
        if outcome == "ok":
            for i, got in present.items():
                if got != item["partitions"]:
                    run.anomaly("acked-topic-missing",
                                f"{item['name']} (created through node {item['node']} at {item['t']}s, "
                                f"{item['partitions']} partitions) on node {i}: {got} partitions")
        elif outcome == "refused" and item["code"] not in UNCERTAIN_CODES:
            run.anomaly("create-error", f"{item['name']} through node {item['node']} at {item['t']}s: "
                        f"error {item['code']} {item['message']}")
        elif outcome == "unreachable" and exists:
            run.anomaly("phantom-topic", f"{item['name']} exists though its request never reached a broker")
        elif exists:
            exist_uncertain[key] += 1
            if any(p is not None and p != item["partitions"] for p in present.values()):
                run.anomaly("topic-partitions", f"{item['name']}: asked {item['partitions']}, got {present}")
    fixed = set(report["fixed_topics"])
    for name in topics_everywhere:
        if name not in asked and name not in fixed and name != OFFSETS_TOPIC:
            run.anomaly("phantom-topic", f"{name} exists but was never asked for")
    report["creations"] = {"by_outcome": dict(counts), "uncertain_that_exist": dict(exist_uncertain),
                           "topics_at_end": len(topics_everywhere)}
    return views


def batch_producer(run, topic, partition, offset):
    """(producer id, producer epoch) of the batch holding `offset`, read from the first
    node whose replica has it; None if none does."""
    import struct
    for node in run.cluster.nodes:
        try:
            batches = replica_batches(node, topic, partition)
        except (OSError, AssertionError):
            continue
        for base, last, data in batches:
            if base <= offset <= last:
                pid, epoch = struct.unpack_from(">qh", data, 43)
                return pid, epoch
    return None


def epoch_bump_copy(run, name, first, second):
    """Whether the copy of a record at `second` is the idempotent producer's own resend
    after it bumped its epoch: producer `name` had a produce request time out, and both
    batches are of one producer id, the second with a higher epoch. librdkafka bumps the
    epoch when a produce request times out with its fate unknown and sends the records
    again as new ones (librdkafka #4953); no broker can tell them from new records, Kafka
    included. A duplicate within one epoch, or after a bump no timeout explains, is
    Strand's."""
    (t1, p1, o1), (t2, p2, o2) = first, second
    if name not in TIMED_OUT_PRODUCERS:
        # No request of its timed out: the bump followed an error the broker answered,
        # which must not have made it resend a persisted record.
        return False
    a, b = batch_producer(run, t1, p1, o1), batch_producer(run, t2, p2, o2)
    return a is not None and b is not None and a[0] == b[0] and a[0] >= 0 and b[1] > a[1]


def check_records(run, producers, topics, report):
    acked = [r for p in producers for r in p.acked]
    by_offset = {}
    for topic, partition, offset, value in acked:
        key = (topic, partition, offset)
        if key in by_offset and by_offset[key] != value:
            run.anomaly("offset-acked-twice", f"{key} acknowledged for {by_offset[key]} and {value}")
        by_offset[key] = value
    consumer = Consumer({
        "bootstrap.servers": run.cluster.bootstrap_all(),
        "group.id": "faults-checker",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A partition whose last batch is a control batch (a leader elected after the
        # workload stopped writes one) ends without a record at high - 1: its end is
        # known by the EOF event, whose offset is where the fetch position got to.
        "enable.partition.eof": True,
        "log_level": 0,
    })
    log = {}  # (topic, partition) -> [(offset, value)]
    try:
        ends = {}
        for t, n in topics.items():
            for p in range(n):
                _, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                ends[(t, p)] = high
                log[(t, p)] = []
        consumer.assign([TopicPartition(t, p, 0) for (t, p), high in ends.items() if high > 0])
        remaining = {k for k, high in ends.items() if high > 0}
        deadline = time.time() + 120
        while remaining and time.time() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                k = (m.topic(), m.partition())
                if m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF:
                    if k in ends and m.offset() >= ends[k]:
                        remaining.discard(k)
                    continue
                if m.error() is not None:
                    run.anomaly("read-error", str(m.error()))
                    continue
                if k not in remaining or m.offset() >= ends[k]:
                    continue
                log[k].append((m.offset(), (m.value() or b"").decode(errors="replace")))
                if m.offset() >= ends[k] - 1:
                    remaining.discard(k)
        if remaining:
            run.anomaly("read-timeout", f"could not read {sorted(remaining)} to their ends {ends}")
    finally:
        consumer.close()

    read = 0
    seen = {}  # value -> (topic, partition, offset)
    client_resends = []
    for (t, p), records in sorted(log.items()):
        read += len(records)
        last = {}  # producer -> (seq, offset)
        expect = 0
        for offset, value in records:
            # A replicated partition's new leader writes a control batch (it takes an
            # offset, as a transaction marker does, and consumers skip it): gaps there
            # are expected. Unreplicated partitions have none.
            if offset != expect and not run.replicated:
                run.anomaly("offset-gap", f"{t}/{p}: offset {offset} follows {expect - 1}")
            expect = offset + 1
            name, _, seq = value.partition(":")
            if not seq.isdigit():
                run.anomaly("foreign-record", f"{t}/{p}@{offset}: {value[:60]!r}")
                continue
            resent = False
            if value in seen:
                if epoch_bump_copy(run, name, seen[value], (t, p, offset)):
                    resent = True
                    client_resends.append(f"{value} at {t}/{p}@{offset} and at {seen[value]}")
                else:
                    run.anomaly("duplicate", f"{value} at {t}/{p}@{offset} and at {seen[value]}")
            seen[value] = (t, p, offset)
            seq = int(seq)
            if resent:
                continue
            if name in last and seq <= last[name][0]:
                run.anomaly("reordered", f"{t}/{p}: {name}:{seq} at offset {offset} after {name}:{last[name][0]} at {last[name][1]}")
            last[name] = (seq, offset)
    at = {(t, p, o): v for (t, p), records in log.items() for o, v in records}
    lost = 0
    for (t, p, o), value in by_offset.items():
        got = at.get((t, p, o))
        if got != value:
            lost += 1
            if lost <= 50:
                run.anomaly("acked-record-missing", f"{value} acknowledged at {t}/{p}@{o}; there: {got!r} (end {len(log[(t, p)])})")
    no_offset = [r for pr in producers for r in pr.acked_no_offset]
    for t, p, value in no_offset:
        if seen.get(value, (None, None))[:2] != (t, p):
            lost += 1
            if lost <= 50:
                run.anomaly("acked-record-missing", f"{value} acknowledged (no offset reported) in {t}/{p}; found at {seen.get(value)!r}")
    acked_values = set(by_offset.values()) | {v for _, _, v in no_offset}
    report["records"] = {"acked": len(by_offset) + len(no_offset), "acked_without_offset": len(no_offset),
                         "read": read, "unacked_present": len(set(seen) - acked_values),
                         "lost_or_moved": lost, "client_epoch_bump_resends": len(client_resends)}
    if client_resends:
        run.say(f"{len(client_resends)} record(s) written twice by a producer's own resend after an "
                f"epoch bump (client side, not counted as anomalies): {client_resends[:5]}")


def lose_half(run, producers, topics):
    """Checks the checker: kill -9 the node holding the partition with the most
    acknowledged records, cut that partition's newest segment in half, start the node
    again; the acknowledged records past the cut are then lost."""
    acked = Counter((t, p) for w in producers for t, p, _, _ in w.acked)
    (topic, partition), count = acked.most_common(1)[0]
    views = snapshot(run)
    leader = next(v for v in views.values() if v is not None).topics[topic][1][partition]
    node = run.cluster.node(node_of(leader))
    with run.lock:
        node.kill9()
        segment = sorted((node.data_dir / f"{topic}-{partition}").glob("*.log"))[-1]
        size = segment.stat().st_size
        os.truncate(segment, size // 2)
    run.say(f"injected a loss: cut {segment} ({count} records acknowledged in {topic}/{partition}) "
            f"from {size} to {size // 2} bytes")
    run.start_nodes([node])
    run.cluster.wait_formed(60)


# ------------------------------------------------------------------ the run

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="nemesis seed (default: random, printed)")
    ap.add_argument("--seconds", type=float, default=60, help="how long faults are injected")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--replication-factor", type=int, default=1,
                    help="replicas of each partition of the produced-to topics")
    ap.add_argument("--out", default=None, help="write the details here as JSON")
    ap.add_argument("--rate", type=float, default=50, help="records per second per producer")
    ap.add_argument("--message-timeout-ms", type=int, default=20_000)
    ap.add_argument("--final-flush-s", type=float, default=40)
    ap.add_argument("--create-socket-timeout-s", type=float, default=30)
    ap.add_argument("--workdir", default=None, help="node directories go here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory even without anomalies")
    ap.add_argument("--extra", action="append", default=[], help="one more argument for every node")
    ap.add_argument("--max-partitions-per-shard", type=int, default=20_000,
                    help="passed to every node: the creations add about 6 partitions a second, and "
                         "the controller counts every partition of the cluster against its own "
                         "node's cap (default 1000 per shard), which a few minutes would reach")
    ap.add_argument("--inject-loss", action="store_true",
                    help="test the checker: before checking, kill a node, cut a partition's log in "
                         "half behind its back and restart it (the run must then FAIL)")
    ap.add_argument("--network-faults", action="store_true",
                    help="run every inter-node link through a TCP proxy and add network faults: a "
                         "node isolated from the others, the links between two nodes cut")
    ap.add_argument("--client-debug", default=None,
                    help="librdkafka debug contexts for the producers (e.g. eos,msg,broker); "
                         "each producer logs to producer-NAME.log in the work directory, each "
                         "group member (e.g. cgrp) to member-NAME.log")
    ap.add_argument("--log-level", default=None,
                    help="the nodes' --log-level instead of info (e.g. info,raft=debug)")
    ap.add_argument("--group-members", type=int, default=2,
                    help="consumer-group members consuming the produced-to topics and committing "
                         "(0: none, and no group checks)")
    ap.add_argument("--group-batch", type=int, default=20,
                    help="records a member takes at most before each synchronous commit")
    ap.add_argument("--group-drain-s", type=float, default=90,
                    help="after healing, how long the members have to consume and commit past "
                         "every acknowledged record")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.nodes < 3:
        ap.error("needs at least 3 nodes (a fault must leave a majority)")
    return args


def summary_line(report):
    f = report["faults"]
    kinds = Counter(x["kind"] for x in f)
    leader_hits = sum(1 for x in f if x["hits_leader"])
    fo = [x["failover_create_s"] for x in f if x.get("failover_create_s") is not None and x["kind"] != "kill2"]
    fc = [x["failover_controller_s"] for x in f if x.get("failover_controller_s") is not None and x["kind"] != "kill2"]
    c = report.get("creations", {}).get("by_outcome", {})
    ok = c.get("ok", 0)
    refused = {k: v for k, v in c.items() if k.startswith("refused")}
    k2 = [x["failover_create_s"] for x in f if x.get("failover_create_s") is not None and x["kind"] == "kill2"]
    slow = sum(1 for x in report.get("creation_log", []) if x["took"] is not None and x["took"] >= SLOW_CREATE_S)
    r = report.get("records", {})
    errs = report["produce_errors"]
    network = f" isolate={kinds['isolate']} cut={kinds['cut']}" if report.get("network_faults") else ""
    g = report.get("group")
    group = ""
    if g:
        a = g["anomalies"]
        group = (f"group {g['members']} members consumed {g['consumed']} (redelivered {g['redelivered']}, "
                 f"{'drained' if g['drained'] else 'NOT drained'} in {g['drain_s']}s), commits ok "
                 f"{g['commits'].get('ok', 0)} failed {sum(v for k, v in g['commits'].items() if k != 'ok')}, "
                 f"rebalances {g['rebalances']}, coordinator moves {g['coordinator_moves']} "
                 f"(takeovers logged {g['takeovers_logged']}), "
                 f"poll-skip {a.get('poll-skip', 0)} never-consumed {a.get('never-consumed', 0)} "
                 f"consumed-twice-past-commit {a.get('consumed-twice-past-commit', 0)} "
                 f"nonmonotonic-poll {a.get('nonmonotonic-poll', 0)} "
                 f"inconsistent-offset {a.get('inconsistent-offset', 0)} commit-lost {a.get('commit-lost', 0)}; ")
    return (
        f"cluster_faults seed={report['seed']} seconds={report['seconds']:.0f}: "
        f"faults kill={kinds['kill']} pause={kinds['pause']} kill2={kinds['kill2']}{network} (leader hit {leader_hits}); "
        f"acked records {r.get('acked', 0)} (without offset {r.get('acked_without_offset', 0)}, read {r.get('read', 0)}, unacked present {r.get('unacked_present', 0)}, "
        f"produce errors {dict(errs) or 0}); "
        f"creations ok {ok} refused {sum(refused.values())} {refused or ''} unknown {c.get('unknown', 0)} "
        f"(uncertain that exist {sum(report.get('creations', {}).get('uncertain_that_exist', {}).values())}); "
        f"failover create s median/p90/max {fmt(statistics.median(fo) if fo else None)}/{fmt(percentile(fo, 0.9))}/{fmt(max(fo) if fo else None)} (n={len(fo)}), "
        f"controller s {fmt(statistics.median(fc) if fc else None)}/{fmt(percentile(fc, 0.9))}/{fmt(max(fc) if fc else None)} (n={len(fc)}), "
        f"after kill2 {fmt(statistics.median(k2) if k2 else None)}/{fmt(max(k2) if k2 else None)} (n={len(k2)}); "
        f"creations taking >={SLOW_CREATE_S:g}s {slow}; "
        f"{group}"
        f"anomalies {len(report['anomalies'])}"
    )


def run(args):
    """One run; returns the report (a dict; report["anomalies"] empty when all is well)."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="strand-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    r = Run(args, workdir)
    rng = random.Random(args.seed)
    faults = []
    producers = []
    creations = Creations(r)
    members = []
    group = GroupState(f"faults-{args.seed}")
    monitor_stop = threading.Event()
    fixed = {f"fixed-{args.seed}-a": 6, f"fixed-{args.seed}-b": 6}
    report = {"seed": args.seed, "seconds": args.seconds, "nodes": args.nodes, "shards": args.shards,
              "network_faults": args.network_faults,
              "workdir": str(workdir), "fixed_topics": sorted(fixed), "faults": faults,
              "produce_errors": {}, "anomalies": r.anomalies, "events": r.events}
    r.say(f"cluster_faults: seed={args.seed} seconds={args.seconds} nodes={args.nodes} "
          f"shards={args.shards} rate={args.rate}/s per producer workdir={workdir}")
    cluster = r.cluster
    try:
        cluster.start()
        cluster.wait_formed()
        leader = cluster.controller_node()
        for name, n in fixed.items():
            code, message = create_topic_raw(leader.port, name, n,
                                             replication_factor=args.replication_factor)
            if code != 0:
                raise RuntimeError(f"could not create {name}: {code} {message}")
        for n in cluster.nodes:
            def ready(n=n):
                md = metadata(n.port)
                return all(t in md.topics and len(md.topics[t][1]) == c and min(md.topics[t][1].values()) >= 0
                           for t, c in fixed.items())
            deadline = time.time() + 15
            while not ready():
                if time.time() > deadline:
                    raise RuntimeError(f"fixed topics not on node {n.node_id}")
                time.sleep(0.2)
        r.say(f"formed; controller {leader.node_id}; topics {fixed}")
        r.t0 = time.monotonic()

        producers = [ProducerThread(r, n, fixed, random.Random(args.seed * 31 + n.node_id)) for n in cluster.nodes]
        workers = [threading.Thread(target=creation_workload, args=(r, creations, random.Random(args.seed * 17 + 1)),
                                    name="creations", daemon=True),
                   threading.Thread(target=nemesis, args=(r, creations, rng, faults), name="nemesis", daemon=True)]
        if args.group_members > 0:
            members = [GroupMember(r, group, i, fixed) for i in range(args.group_members)]
            workers.append(threading.Thread(target=coordinator_monitor, args=(r, group, monitor_stop),
                                            name="coordinator-monitor", daemon=True))
            r.say(f"group {group.group} ({args.group_members} members) in offsets partition {group.partition}")
        for t in [*producers, *workers, *members]:
            t.start()
        time.sleep(args.seconds)
        r.say("fault period over: stopping the workload, healing")
        r.stop.set()
        workers[1].join(120)  # ends healed: the fault under way is undone first
        r.check_exits()
        with r.lock:
            for n in cluster.nodes:
                if n.running():
                    os.kill(n.pid, signal.SIGCONT)
            r.paused.clear()
            if cluster.proxy is not None:
                cluster.heal()
                r.isolated.clear()
        r.start_nodes(cluster.nodes)
        try:
            views = cluster.wait_formed(60)
            r.say(f"formed again: controllers {views}")
        except AssertionError as e:
            r.anomaly("not-formed", str(e))
        for p in producers:
            p.join(args.final_flush_s + 20)
            if p.is_alive() or p.error:
                r.anomaly("producer-thread", f"{p.name}: {'still running' if p.is_alive() else p.error}")
        left = creations.join(args.create_socket_timeout_s + 5)
        if left:
            r.anomaly("creations-unfinished", f"{left} CreateTopics requests still waiting")
        workers[0].join(5)
        if members:
            drain_and_check_group(r, group, members, producers, report, monitor_stop)
        if args.inject_loss:
            lose_half(r, producers, fixed)
        r.say("checking")
        check_metadata(r, creations, report)
        check_records(r, producers, fixed, report)
        r.check_exits()
        for n in cluster.nodes:
            if not n.running():
                r.anomaly("not-running", f"node {n.node_id} is not running at the end")
    except Exception:  # noqa: BLE001 - an error of the run itself is an anomaly too
        r.anomaly("harness-error", traceback.format_exc()[-3000:])
    finally:
        r.stop.set()
        monitor_stop.set()
        for m in members:
            m.stop.set()
        with r.lock:
            for n in cluster.nodes:
                if n.running():
                    try:
                        os.kill(n.pid, signal.SIGCONT)
                    except OSError:
                        pass
            codes = cluster.terminate_all()
            if cluster.proxy is not None:
                cluster.proxy.close()
        for n in cluster.nodes:
            if "panicked" in n.log():
                lines = [line for line in n.log().splitlines() if "panicked" in line]
                r.anomaly("panic", f"node {n.node_id}: {lines[:5]}")
        bad_exit = {i: c for i, c in codes.items() if c not in (0,)}
        if bad_exit:
            r.anomaly("shutdown", f"exit codes on SIGTERM: {bad_exit}")

    errors = Counter()
    client_errors = Counter()
    for p in producers:
        errors.update(p.errors)
        client_errors.update(p.client_errors)
    report["produce_errors"] = dict(errors)
    report["client_errors"] = dict(client_errors)
    report["produced"] = sum(p.sent for p in producers)
    report["producer_instances"] = sum(p.instance + 1 for p in producers)
    report["creation_log"] = creations.items
    report["summary"] = summary_line(report)
    if r.anomalies:
        print("anomalies by kind:", dict(Counter(a["kind"] for a in r.anomalies)), flush=True)
    print(report["summary"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    if r.anomalies or args.keep or args.workdir is not None:
        if r.anomalies:
            print(f"kept {workdir} (node data and logs); replay: tools/cluster_faults.py --seed {args.seed} "
                  f"--seconds {args.seconds:g}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv=None):
    # SIGTERM ends the run like ^C: the nodes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(parse_args(argv))
    return 1 if report["anomalies"] else 0


if __name__ == "__main__":
    sys.exit(main())
