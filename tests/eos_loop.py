#!/usr/bin/env python3
"""Exactly-once crash loop: a transactional consume-transform-produce copier, kill -9ed at
random moments, on a broker that is itself kill -9ed at random moments; at the end every
input record must be in the output exactly once, transformed, in order.

What it does, seeded (`--seed`) so a failing schedule can be replayed:

* starts `strand serve --shards 2` on free loopback ports and a fresh data directory
  (tests/compat/conftest.py's Broker, as tests/crashloop.py does) and creates an input and an
  output topic whose partitions land on every shard;
* fills the input topic with `--records` keyed records (partition and bytes derived from the
  seed and the record's index);
* runs the copier (this file's `copier` subcommand) as a subprocess: a read_committed
  confluent-kafka consumer in a group (static membership, so a restarted copier takes its
  partitions back at once) and a transactional producer; it copies every record to the same
  partition of the output topic with a deterministic transformation, and every few records
  (random, up to 2 x `--commit-every`) calls send_offsets_to_transaction and
  commit_transaction. Abortable errors abort the transaction and rewind the consumer to the
  group's committed offsets; fatal errors end the process (exit code 3);
* over `--duration` seconds, at seeded random moments, kill -9s the copier and starts a new
  one with the same transactional.id (`--client-kills` times) and kill -9s the broker and
  restarts it on the same data (`--broker-kills` times), sometimes killing the restart
  again while it recovers;
* then lets the copier finish (the group's committed offsets reach the end of the input),
  stops it, fences its transactional.id with a fresh init_transactions (which aborts
  anything it left open), and reads the output with a read_committed consumer.

Verification: every output record names its source (partition, offset) and must carry that
input record's key and transformed value; each source appears exactly once; within an
output partition the sources rise; the read_committed end of every output partition (the
last stable offset) reaches its high watermark. A copier that dies of a fatal error (for
instance a fencing error while no other instance is alive) is a failure too: with its
transactional state surviving restarts, the broker has no reason to fence it. So is one
stuck in a client call far past its timeout (the copier's watchdog ends it after 90 s and
notes where it was in copier.log: WAITING and HUNG lines); STRAND_EOS_DEBUG=eos,cgrp,...
puts librdkafka's debug log of every copier in copier-output.log.

Prints what it tried and what it found, and exits 0 if the output is exactly-once, 1
otherwise (keeping the data directory, the broker log and the copier logs).

    tests/eos_loop.py                                 # about 1.5 minutes
    tests/eos_loop.py --records 20000 --duration 600 --client-kills 40 --broker-kills 20
    tests/eos_loop.py --seed 1234                     # replay a schedule
"""

import argparse
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "compat"))
sys.path.insert(0, str(HERE))

from confluent_kafka import (  # noqa: E402
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # noqa: E402

from conftest import Broker  # noqa: E402
from crashloop import create_topic  # noqa: E402

COPIER_INSTANCE = "eos-copier"
EXIT_FATAL = 3
EXIT_STUCK = 4
EXIT_HUNG = 5
HUNG_S = 90
# librdkafka (2.10+) re-bootstraps when every broker it knows is down, which a kill -9 of
# strand (all shards at once) always causes, and decommissions the brokers it knew; a
# send_offsets_to_transaction() whose group coordinator was decommissioned then waits for
# ever (librdkafka issue #5511, open). The copier's clients keep their brokers instead.
CLIENT_RECOVERY = {"metadata.recovery.strategy": "none"}


# --- records and their transformation ---------------------------------------------------

def input_record(seed, index, partitions):
    """(partition, key, value) of input record `index`: the partition from the key's hash,
    the value 8 to 300 bytes derived from (seed, index)."""
    key = b"k%d" % index
    h = hashlib.blake2b(struct.pack(">QI", seed, index), digest_size=32).digest()
    partition = int.from_bytes(hashlib.blake2b(key + struct.pack(">Q", seed), digest_size=4).digest(), "big") % partitions
    length = 8 + h[0] % 293
    value = (h * (length // len(h) + 1))[:length]
    return partition, key, value


def transform(partition, offset, value):
    """The copier's output value for the input record at (partition, offset): its source,
    a digest and the bytes reversed."""
    digest = hashlib.blake2b(value, digest_size=8).hexdigest().encode()
    return b"%d:%d:%s:" % (partition, offset, digest) + value[::-1]


def source_of(value):
    """(partition, offset) named by an output value, or None if it is not one."""
    try:
        partition, offset, _ = value.split(b":", 2)
        return int(partition), int(offset)
    except (ValueError, AttributeError):
        return None


# --- the copier (a subprocess) ----------------------------------------------------------

def copier_main(argv):
    ap = argparse.ArgumentParser(prog="eos_loop.py copier")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--txn-id", required=True)
    ap.add_argument("--commit-every", type=int, default=10)
    ap.add_argument("--rate", type=float, default=0, help="records per second (0: no limit)")
    ap.add_argument("--unthrottle", default="/nonexistent", help="once this file exists, no rate limit")
    ap.add_argument("--txn-timeout-ms", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    return Copier(a).run()


class Copier:
    def __init__(self, a):
        self.a = a
        self.stop = False
        self.rate = a.rate
        self.rebalanced = False
        self.log = open(a.log, "a", buffering=1)
        self.rng = random.Random(a.seed * 7919 + os.getpid())
        self.checked_unthrottle = 0.0
        self.phase = ("start", time.monotonic())
        signal.signal(signal.SIGTERM, self.on_term)
        threading.Thread(target=self.watchdog, daemon=True).start()

    def enter(self, phase):
        """Names what the copier is doing, for the watchdog."""
        if self.phase[0] != phase:
            self.phase = (phase, time.monotonic())

    def watchdog(self):
        """Notes a copier stuck in one call (or idle) for 10 s or more, every 10 s; ends a
        copier stuck in one client call for HUNG_S (every call has a 30 s timeout)."""
        while True:
            time.sleep(10)
            phase, since = self.phase
            waited = time.monotonic() - since
            if waited >= 10:
                self.note("WAITING", phase, f"{waited:.0f}s")
            if phase != "poll" and waited >= HUNG_S:
                self.note("HUNG", phase, f"{waited:.0f}s")
                os._exit(EXIT_HUNG)

    def on_term(self, *_):
        self.stop = True

    def throttle(self):
        """Sleeps to keep to --rate until the supervisor creates the --unthrottle file."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        if now - self.checked_unthrottle > 0.5:
            self.checked_unthrottle = now
            if os.path.exists(self.a.unthrottle):
                self.rate = 0
                return
        time.sleep(1.0 / self.rate)

    def note(self, *words):
        self.log.write(f"{os.getpid()} {time.monotonic():.3f} " + " ".join(str(w) for w in words) + "\n")

    def fatal(self, what, err):
        self.note("FATAL", what, err.name() if isinstance(err, KafkaError) else repr(err), str(err).replace("\n", " "))
        os._exit(EXIT_FATAL)  # no destructor: a fatal producer must not do anything more

    def run(self):
        a = self.a
        quiet = 0 if not a.verbose else 6
        # STRAND_EOS_DEBUG=eos,cgrp,... turns on librdkafka's debug contexts in the copier.
        debug = os.environ.get("STRAND_EOS_DEBUG")
        self.debug = {"debug": debug, "log_level": 7} if debug else {}
        self.producer = Producer({
            "bootstrap.servers": a.bootstrap,
            "transactional.id": a.txn_id,
            "transaction.timeout.ms": a.txn_timeout_ms,
            "linger.ms": 5,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "log_level": quiet,
            **CLIENT_RECOVERY,
            **self.debug,
        })
        # Fence earlier instances (and let their open transaction be aborted) before the
        # consumer reads the group's committed offsets.
        self.retrying("init_transactions", lambda: self.producer.init_transactions(30))
        self.note("INIT")
        self.consumer = Consumer({
            "bootstrap.servers": a.bootstrap,
            "group.id": a.group,
            "group.instance.id": COPIER_INSTANCE,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "log_level": quiet,
            **CLIENT_RECOVERY,
            **self.debug,
        })
        self.consumer.subscribe([a.input], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_revoke)
        self.loop()
        return 0

    def on_assign(self, consumer, partitions):
        self.note("ASSIGN", sorted(p.partition for p in partitions))

    def on_revoke(self, consumer, partitions):
        # Records of revoked partitions may be in the open transaction: it must not commit.
        self.rebalanced = True
        self.note("REVOKE", sorted(p.partition for p in partitions))

    def retrying(self, what, call, deadline_s=120):
        """Calls `call` until it succeeds, retrying retriable errors; fatal errors end the
        process. Returns the abortable error instead of raising it."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                self.enter(what)
                call()
                return None
            except KafkaException as e:
                err = e.args[0]
                if err.fatal():
                    self.fatal(what, err)
                if err.txn_requires_abort():
                    return err
                if err.retriable() and time.monotonic() < deadline:
                    self.note("RETRY", what, err.name())
                    time.sleep(0.1)
                    continue
                self.fatal(what, err)

    def abort_and_rewind(self, why):
        err = self.retrying("abort_transaction", lambda: self.producer.abort_transaction(30))
        if err is not None:
            self.fatal("abort_transaction", err)
        self.note("ABORT", why)
        self.rebalanced = False
        self.rewind()

    def rewind(self):
        """Puts the consumer back at the group's committed offsets (what the aborted
        transaction read must be read again)."""
        deadline = time.monotonic() + 60
        while True:
            assignment = self.consumer.assignment()
            try:
                self.enter("committed")
                committed = self.consumer.committed(assignment, timeout=10) if assignment else []
                for tp in committed:
                    offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                self.note("REWIND", {tp.partition: tp.offset for tp in committed})
                return
            except KafkaException as e:
                if time.monotonic() > deadline:
                    self.note("STUCK", "rewind", e.args[0].name())
                    os._exit(EXIT_STUCK)
                self.note("RETRY", "rewind", e.args[0].name())
                self.consumer.poll(0.2)

    def commit(self):
        """send_offsets_to_transaction + commit_transaction; on an abortable error, aborts
        and rewinds. Returns True if committed."""
        offsets = self.consumer.position(self.consumer.assignment())
        err = self.retrying(
            "send_offsets_to_transaction",
            lambda: self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30),
        )
        if err is None and self.rebalanced:
            err = "rebalanced"
        if err is None:
            err = self.retrying("commit_transaction", lambda: self.producer.commit_transaction(30))
        if err is not None:
            self.abort_and_rewind(err.name() if isinstance(err, KafkaError) else err)
            return False
        self.note("COMMIT", self.count, {tp.partition: tp.offset for tp in offsets if tp.offset >= 0})
        return True

    def loop(self):
        a = self.a
        in_txn = False
        self.count = 0
        target = 0
        last_record = time.monotonic()
        while True:
            if self.stop:
                if in_txn and self.count:
                    self.commit()
                self.consumer.close()
                self.note("STOP")
                return
            if not in_txn:
                self.retrying("begin_transaction", self.producer.begin_transaction)
                in_txn = True
                self.count = 0
                target = self.rng.randint(1, 2 * a.commit_every - 1)
            self.enter("poll")
            m = self.consumer.poll(0.05)
            if self.rebalanced:
                self.abort_and_rewind("rebalance")
                in_txn = False
                continue
            if m is None:
                if self.count and time.monotonic() - last_record > 0.3:
                    self.commit()
                    in_txn = False
                continue
            if m.error() is not None:
                if m.error().fatal():
                    self.fatal("consume", m.error())
                self.note("CONSUME-ERROR", m.error().name())
                continue
            last_record = time.monotonic()
            value = transform(m.partition(), m.offset(), m.value())
            self.enter("produce")
            while True:
                try:
                    self.producer.produce(a.output, key=m.key(), value=value, partition=m.partition())
                    break
                except BufferError:
                    self.producer.poll(0.05)
                except KafkaException as e:
                    err = e.args[0]
                    if err.fatal():
                        self.fatal("produce", err)
                    # The transaction is failing (abortable): commit will say so.
                    break
            self.count += 1
            self.producer.poll(0)
            self.throttle()
            if self.count >= target:
                self.commit()
                in_txn = False


# --- the supervisor -----------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.client_kills = 0
        self.broker_kills = 0
        self.early_broker_kills = 0
        self.copier_starts = 0
        self.copier_exits = {}  # exit code -> count (exits the loop did not cause)
        self.commits = 0
        self.aborts = 0
        self.fatal = []
        self.records = 0
        self.records_verified = 0
        self.output_records = 0
        self.problems = []  # (kind, detail)

    def problem(self, kind, detail):
        self.problems.append((kind, detail))

    def count(self, kind):
        return sum(1 for k, _ in self.problems if k == kind)


class Supervisor:
    def __init__(self, args, workdir, stats):
        self.args = args
        self.workdir = workdir
        self.stats = stats
        self.broker = Broker(workdir, shards=args.shards)
        self.input = f"eos-in-{args.seed}"
        self.output = f"eos-out-{args.seed}"
        self.group = f"eos-group-{args.seed}"
        self.txn_id = f"eos-copier-{args.seed}"
        self.copier = None
        self.copier_log = workdir / "copier.log"
        self.copier_out = workdir / "copier-output.log"
        self.unthrottle = workdir / "unthrottle"
        for leftover in (self.copier_log, self.unthrottle):  # of an earlier run in this workdir
            leftover.unlink(missing_ok=True)
        self.rate = args.rate
        self.quiet = 0 if not args.verbose else 6
        self.admin = None

    @property
    def bootstrap(self):
        if self.args.bootstrap:
            return self.args.bootstrap
        return ",".join(f"127.0.0.1:{p}" for p in self.broker.ports)

    def spawn_copier(self):
        a = self.args
        with open(self.copier_out, "a") as out:
            self.copier = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "copier",
                 "--bootstrap", self.bootstrap, "--input", self.input, "--output", self.output,
                 "--group", self.group, "--txn-id", self.txn_id,
                 "--commit-every", str(a.commit_every), "--rate", str(self.rate),
                 "--txn-timeout-ms", str(a.txn_timeout_ms), "--seed", str(a.seed),
                 "--unthrottle", str(self.unthrottle), "--log", str(self.copier_log)] + (["--verbose"] if a.verbose else []),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        self.stats.copier_starts += 1

    def kill_copier(self):
        if self.copier is not None and self.copier.poll() is None:
            self.copier.send_signal(signal.SIGKILL)
            self.copier.wait()

    def supervise(self, seconds):
        """Waits `seconds`, restarting the copier if it exits by itself."""
        until = time.monotonic() + seconds
        while True:
            code = self.copier.poll() if self.copier is not None else None
            if code is not None:
                self.stats.copier_exits[code] = self.stats.copier_exits.get(code, 0) + 1
                time.sleep(0.2)
                self.spawn_copier()
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    def fill_input(self, partitions):
        """Writes the input records; returns {partition: [(key, value)]} in offset order."""
        a = self.args
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "linger.ms": 5, "log_level": self.quiet})
        acked = {}
        failures = []

        def on_delivery(err, msg):
            if err is not None:
                failures.append(err)
            else:
                acked[(msg.partition(), msg.offset())] = (msg.key(), msg.value())

        for i in range(a.records):
            p, key, value = input_record(a.seed, i, len(partitions))
            while True:
                try:
                    producer.produce(self.input, key=key, value=value, partition=p, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
        left = producer.flush(60)
        if left or failures:
            raise RuntimeError(f"filling the input: {left} undelivered, failures {failures[:3]}")
        expected = {p: [] for p in partitions}
        for (p, offset), kv in sorted(acked.items()):
            if offset != len(expected[p]):
                raise RuntimeError(f"input partition {p}: offset {offset} after {len(expected[p])} records")
            expected[p].append(kv)
        return expected

    def committed_offsets(self, partitions):
        """The group's committed offsets {partition: offset}, or None if the broker does not
        answer now."""
        if self.admin is None:
            self.admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": self.quiet})
        admin = self.admin
        request = ConsumerGroupTopicPartitions(self.group, [TopicPartition(self.input, p) for p in partitions])
        try:
            result = admin.list_consumer_group_offsets([request], request_timeout=5)[self.group].result(timeout=10)
        except Exception:  # broker restarting, coordinator loading: ask again
            return None
        return {tp.partition: tp.offset for tp in result.topic_partitions}

    def wait_finished(self, ends, partitions):
        deadline = time.monotonic() + self.args.finish_timeout_s
        last = None
        while time.monotonic() < deadline:
            committed = self.committed_offsets(partitions)
            if committed is not None:
                last = committed
                if all(committed.get(p, -1) == ends[p] for p in partitions):
                    return True
            self.supervise(0.5)
        self.stats.problem("stalled", f"the group's committed offsets {last} did not reach the input's end {ends} "
                                      f"within {self.args.finish_timeout_s:.0f} s")
        return False

    def stop_copier(self):
        if self.copier is None:
            return
        if self.copier.poll() is None:
            self.copier.send_signal(signal.SIGTERM)
            try:
                self.copier.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_copier()
        self.copier = None

    def fence(self):
        """A new instance with the copier's transactional.id: whatever the copier left open
        is aborted before init_transactions returns."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": self.txn_id,
                             "log_level": self.quiet})
        producer.init_transactions(60)

    def verify(self, expected, partitions):
        stats = self.stats
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"eos-verify-{self.args.seed}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "log_level": self.quiet,
        })
        uncommitted = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"eos-verify-{self.args.seed}",
            "isolation.level": "read_uncommitted",
            "log_level": self.quiet,
        })
        seen = {}  # (partition, offset) -> output partition, offset
        last_source = {p: -1 for p in partitions}
        try:
            for p in partitions:
                _, lso = consumer.get_watermark_offsets(TopicPartition(self.output, p), timeout=30)
                _, hwm = uncommitted.get_watermark_offsets(TopicPartition(self.output, p), timeout=30)
                if lso != hwm:
                    stats.problem("lso", f"output partition {p}: last stable offset {lso} is below the high watermark {hwm} "
                                         f"with no transaction open")
            consumer.assign([TopicPartition(self.output, p, OFFSET_BEGINNING) for p in partitions])
            total = sum(len(v) for v in expected.values())
            deadline = time.monotonic() + self.args.verify_timeout_s
            settle_until = None
            while time.monotonic() < deadline:
                if stats.output_records >= total and settle_until is None:
                    settle_until = time.monotonic() + 2.0  # whatever is beyond shows up too
                if settle_until is not None and time.monotonic() > settle_until:
                    break
                for m in consumer.consume(num_messages=1000, timeout=0.2):
                    if m.error() is not None:
                        stats.problem("read-error", str(m.error()))
                        continue
                    stats.output_records += 1
                    self.check(m, expected, seen, last_source)
        finally:
            consumer.close()
            uncommitted.close()
        for p in partitions:
            for offset in range(len(expected[p])):
                if (p, offset) not in seen:
                    stats.problem("missing", f"input partition {p} offset {offset} is not in the output")
        stats.records_verified = len(seen)

    def check(self, m, expected, seen, last_source):
        stats = self.stats
        q, at = m.partition(), m.offset()
        source = source_of(m.value())
        if source is None or source[0] not in expected or not 0 <= source[1] < len(expected[source[0]]):
            stats.problem("corrupt", f"output partition {q} offset {at}: not a copy of an input record: {m.value()[:40]!r}")
            return
        p, offset = source
        key, value = expected[p][offset]
        if p != q or m.key() != key or m.value() != transform(p, offset, value):
            stats.problem("corrupt", f"output partition {q} offset {at}: the copy of input {p}:{offset} differs from the transformation")
            return
        if source in seen:
            stats.problem("duplicate", f"input {p}:{offset} copied twice: output offsets {seen[source][1]} and {at}")
            return
        seen[source] = (q, at)
        if offset <= last_source[q]:
            stats.problem("reordered", f"output partition {q}: input offset {offset} at {at} after input offset {last_source[q]}")
        last_source[q] = offset

    def inject_duplicate(self, partitions):
        """Tests the checker: copies one committed output record once more, as a copier that
        is not exactly-once would."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "eos-inject",
                             "isolation.level": "read_committed", "log_level": self.quiet})
        consumer.assign([TopicPartition(self.output, partitions[0], OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        m = None
        while time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None and m.error() is None:
                break
        consumer.close()
        if m is None:
            raise RuntimeError("no output record to duplicate")
        producer = Producer({"bootstrap.servers": self.bootstrap, "log_level": self.quiet})
        producer.produce(self.output, key=m.key(), value=m.value(), partition=m.partition())
        producer.flush(30)
        print(f"  injected a duplicate of output {m.partition()}:{m.offset()}", flush=True)

    def tally_copier_log(self):
        try:
            lines = self.copier_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            words = line.split(" ", 3)
            kind = words[2] if len(words) > 2 else ""
            if kind == "COMMIT":
                self.stats.commits += 1
            elif kind == "ABORT":
                self.stats.aborts += 1
            elif kind in ("FATAL", "STUCK", "HUNG"):
                self.stats.fatal.append(line)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    ap.add_argument("--records", type=int, default=3000, help="input records")
    ap.add_argument("--client-kills", type=int, default=6, help="kill -9s of the copier (each followed by a new one)")
    ap.add_argument("--broker-kills", type=int, default=3, help="kill -9s of the broker (each followed by a restart)")
    ap.add_argument("--duration", type=float, default=60, help="seconds over which the kills are spread")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of each topic (spread over both shards)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--commit-every", type=int, default=10, help="mean records per transaction")
    ap.add_argument("--rate", type=float, default=None,
                    help="copier records per second while kills are pending (default: spread the input over the duration)")
    ap.add_argument("--txn-timeout-ms", type=int, default=10000, help="the copier's transaction.timeout.ms")
    ap.add_argument("--early-kill-chance", type=float, default=0.25,
                    help="chance that a broker restart is itself killed during start-up and recovery")
    ap.add_argument("--finish-timeout-s", type=float, default=120,
                    help="after the kills, how long the copier may take to reach the end of the input")
    ap.add_argument("--verify-timeout-s", type=float, default=60)
    ap.add_argument("--workdir", default=None, help="data dir and logs go here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory even on success")
    ap.add_argument("--bootstrap", default=None,
                    help="use this already running cluster instead of starting strand (needs --broker-kills 0)")
    ap.add_argument("--inject-duplicate", action="store_true",
                    help="test the checker: write one output record twice before verifying (must FAIL)")
    ap.add_argument("--verbose", action="store_true", help="show the clients' own log lines")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.records < 1 or args.partitions < args.shards:
        ap.error("need records, and at least one partition per shard")
    if args.bootstrap and args.broker_kills:
        ap.error("--bootstrap: the loop cannot kill a cluster it did not start (use --broker-kills 0)")
    if args.rate is None:
        args.rate = max(20.0, args.records / max(1.0, 0.8 * args.duration))
    return args


def run(args):
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="strand-eos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    stats.records = args.records
    sup = Supervisor(args, workdir, stats)
    events = ["client"] * args.client_kills + ["broker"] * args.broker_kills
    rng.shuffle(events)
    times = sorted(rng.uniform(1.0, max(1.0, args.duration)) for _ in events)
    print(f"eos_loop: seed={args.seed} records={args.records} client_kills={args.client_kills} "
          f"broker_kills={args.broker_kills} duration={args.duration} partitions={args.partitions} "
          f"commit_every={args.commit_every} rate={args.rate:.0f}/s txn_timeout_ms={args.txn_timeout_ms} "
          f"workdir={workdir}", flush=True)
    started = time.monotonic()
    try:
        if not args.bootstrap:
            sup.broker.start()
        partitions = None
        for topic in (sup.input, sup.output):
            leaders = create_topic(sup.bootstrap, topic, args.partitions)
            if not args.bootstrap and len(set(leaders.values())) != args.shards:
                stats.problem("layout", f"{topic}: partitions are led by {sorted(set(leaders.values()))}, not by every shard")
            partitions = sorted(leaders)
        expected = sup.fill_input(partitions)
        ends = {p: len(expected[p]) for p in partitions}
        sup.spawn_copier()
        loop_started = time.monotonic()
        for at, kind in zip(times, events):
            sup.supervise(max(0.0, loop_started + at - time.monotonic()))
            if kind == "client":
                sup.kill_copier()
                stats.client_kills += 1
                sup.spawn_copier()
            else:
                sup.broker.kill9()
                if rng.random() < args.early_kill_chance:
                    sup.broker.spawn()
                    time.sleep(rng.uniform(0.0, 0.5))
                    sup.broker.kill9()
                    stats.early_broker_kills += 1
                time.sleep(rng.uniform(0.0, 1.0))
                sup.broker.start()
                stats.broker_kills += 1
            print(f"  {kind} kill -9 at {time.monotonic() - started:.1f} s "
                  f"(client kills {stats.client_kills}, broker kills {stats.broker_kills})", flush=True)
        # No more kills: let the copier (and any successor) run at full speed.
        sup.unthrottle.touch()
        sup.wait_finished(ends, partitions)  # a stall is a problem, reported
        sup.stop_copier()
        sup.fence()
        if args.inject_duplicate:
            sup.inject_duplicate(partitions)
        # Verify even after a stall: what is there must still be exactly-once.
        sup.verify(expected, partitions)
    except Exception as err:  # reported like any other problem, with the seed
        traceback.print_exc()
        stats.problem("error", repr(err))
    finally:
        sup.kill_copier()
        sup.broker.kill9()

    sup.tally_copier_log()
    for line in stats.fatal:
        stats.problem("copier-fatal", line)
    log = sup.broker.log()
    if "panicked" in log:
        stats.problem("panic", "the broker panicked (see its log)")
    elapsed = time.monotonic() - started
    ok = not stats.problems
    shown = {}
    for kind, detail in stats.problems:
        shown[kind] = shown.get(kind, 0) + 1
        if shown[kind] <= 5:
            print(f"  {kind}: {detail}")
    if shown:
        print(f"  problems by kind: {shown}")
    print(
        f"eos_loop {'PASS' if ok else 'FAIL'}: seed={args.seed} records={stats.records} "
        f"client_kills={stats.client_kills} broker_kills={stats.broker_kills} "
        f"early_broker_kills={stats.early_broker_kills} copier_starts={stats.copier_starts} "
        f"copier_exits={stats.copier_exits} commits={stats.commits} aborts={stats.aborts} "
        f"output_records={stats.output_records} records_verified={stats.records_verified} "
        f"duplicates={stats.count('duplicate')} missing={stats.count('missing')} "
        f"reordered={stats.count('reordered')} corrupt={stats.count('corrupt')} "
        f"fatal={len(stats.fatal)} elapsed={elapsed:.0f}s",
        flush=True,
    )
    if ok and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        print(f"  kept {workdir} (data, broker.log, copier.log, copier-output.log); replay: "
              f"{Path(__file__).name} --seed {args.seed} --records {args.records} "
              f"--client-kills {args.client_kills} --broker-kills {args.broker_kills} "
              f"--duration {args.duration:g}", flush=True)
    return ok, stats


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "copier":
        return copier_main(argv[1:])
    ok, _ = run(parse_args(argv))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
