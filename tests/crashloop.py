#!/usr/bin/env python3
"""Crash loop: kill -9 the broker at random moments under idempotent acks=all producers, and
check after every restart that no acknowledged record was lost, duplicated, reordered or
changed.

What it does, seeded (`--seed`) so a failing schedule can be replayed:

* starts `strand serve --shards 2` on free loopback ports and a fresh data directory, and
  creates a topic whose partitions land on every shard;
* runs `--producers` confluent-kafka producers (enable.idempotence, acks=all, each with its
  own compression codec) in threads; each writes records to every partition at a bounded
  rate, with a key and value derived from (seed, producer, partition, sequence) so every
  byte can be recomputed;
* repeatedly: lets them run for a random time, kill -9s the broker (sometimes twice, the
  second time in the middle of start-up and recovery), restarts it, and verifies;
* verification reads every partition from the beginning to its high watermark and checks:
  every record is one we produced, byte-exact (key, value, headers); no (producer,
  partition, sequence) appears twice; sequences of one producer rise within a partition;
  and every record whose delivery report succeeded is present at the offset the report
  gave. Records never acknowledged may or may not be there.

Only successful delivery reports count as acknowledged. The producers keep running across
the crashes, so their in-flight requests are retried against the restarted broker, which
must deduplicate them from the producer state it recovered.

Prints one summary line and exits 0 if nothing was lost, duplicated, reordered or corrupt,
1 otherwise (keeping the data directory and the broker log for inspection).

    tests/crashloop.py --restarts 10                 # about a minute
    tests/crashloop.py --duration 3600 --restarts 0  # an hour, as many restarts as fit
    tests/crashloop.py --seed 1234 --restarts 10     # replay a schedule
"""

import argparse
from array import array
import hashlib
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "compat"))

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from conftest import Broker  # noqa: E402

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Record header: magic, producer, partition, sequence, payload length.
RECORD_HEADER = struct.Struct(">4sHHIH")
RECORD_MAGIC = b"SCL1"


def payload(seed, producer, partition, sequence, length):
    """Deterministic bytes for one record, so verification can recompute them."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.blake2b(
            struct.pack(">QHHII", seed, producer, partition, sequence, counter), digest_size=64
        ).digest()
        counter += 1
    return bytes(out[:length])


def record_length(seed, producer, partition, sequence):
    """Mostly small values, sometimes a few KiB."""
    h = hashlib.blake2b(struct.pack(">QHHI", seed, producer, partition, sequence), digest_size=4)
    x = int.from_bytes(h.digest(), "big")
    return x % 200 if x % 16 else x % 8000


def make_record(seed, producer, partition, sequence):
    length = record_length(seed, producer, partition, sequence)
    key = b"k%d-%d-%d" % (producer, partition, sequence)
    value = RECORD_HEADER.pack(RECORD_MAGIC, producer, partition, sequence, length) + payload(
        seed, producer, partition, sequence, length
    )
    headers = [("seq", b"%d" % sequence)]
    return key, value, headers


class Stats:
    def __init__(self):
        self.restarts = 0
        self.early_kills = 0
        self.verifications = 0
        self.records_read = 0
        self.unacked_present = 0
        self.problems = []  # (kind, detail)

    def problem(self, kind, detail):
        self.problems.append((kind, detail))

    def count(self, kind):
        return sum(1 for k, _ in self.problems if k == kind)


class ProducerThread(threading.Thread):
    """One idempotent producer writing round-robin to every partition at a bounded rate."""

    def __init__(self, index, args, bootstrap, topic, partitions, stop):
        super().__init__(name=f"producer-{index}", daemon=True)
        self.index = index
        self.args = args
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.stop = stop
        self.rng = random.Random(args.seed * 1000 + index)
        self.codec = CODECS[(args.seed + index) % len(CODECS)]
        self.lock = threading.Lock()
        # partition -> {sequence: offset} for successful delivery reports.
        self.acked = {p: {} for p in partitions}
        self.next_sequence = {p: 0 for p in partitions}
        self.failed = 0
        self.fatal = []
        self.fatal_errors = 0
        self.instances = 0
        self.error = None

    def new_producer(self):
        self.instances += 1
        return Producer({
            "bootstrap.servers": self.bootstrap,
            "client.id": f"crashloop-{self.index}",
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.codec,
            "linger.ms": self.rng.choice([0, 2, 10]),
            "message.timeout.ms": 60_000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "error_cb": self.on_error,
            # Connection refused while the broker is down is expected: keep the output to
            # what the loop finds.
            "log_level": 0 if not self.args.verbose else 6,
        })

    def on_error(self, err):
        if err.fatal():
            self.fatal.append(str(err))

    def on_delivery(self, err, msg):
        partition = msg.partition()
        sequence = struct.unpack_from(">I", msg.value(), 8)[0]
        if err is None:
            with self.lock:
                self.acked[partition][sequence] = msg.offset()
        else:
            self.failed += 1

    def acked_snapshot(self):
        with self.lock:
            return {p: dict(seqs) for p, seqs in self.acked.items()}

    def run(self):
        try:
            self.produce_loop()
        except Exception as err:  # reported by the main thread
            self.error = err

    def produce_loop(self):
        producer = self.new_producer()
        interval_s = 1.0 / self.args.rate
        next_at = time.monotonic()
        i = 0
        while not self.stop.is_set():
            if self.fatal:
                # A fatal idempotence error ends this producer instance; its undelivered
                # records fail, and a new instance carries on with the next sequences.
                self.fatal_errors += len(self.fatal)
                self.fatal.clear()
                producer = self.new_producer()
            partition = self.partitions[i % len(self.partitions)]
            i += 1
            sequence = self.next_sequence[partition]
            key, value, headers = make_record(self.args.seed, self.index, partition, sequence)
            while not self.stop.is_set():
                try:
                    producer.produce(self.topic, key=key, value=value, headers=headers,
                                     partition=partition, on_delivery=self.on_delivery)
                    self.next_sequence[partition] = sequence + 1
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as err:
                    error = err.args[0]
                    if not (error.fatal() or error.code() == KafkaError._FATAL):
                        raise
                    self.fatal.append(str(err))
                    break
            if self.fatal:
                continue
            producer.poll(0)
            next_at += interval_s
            delay = next_at - time.monotonic()
            if delay > 0:
                producer.poll(delay)
            elif delay < -1:
                next_at = time.monotonic()  # fell behind (broker down): do not burst
        # Let what is in flight finish so its delivery reports count.
        try:
            producer.flush(self.args.final_flush_s)
        except KafkaException as err:
            self.fatal.append(str(err))
        self.fatal_errors += len(self.fatal)


def create_topic(bootstrap, topic, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([
        NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
    ])[topic].result(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline:
        t = admin.list_topics(topic, timeout=10).topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return {p.id: p.leader for p in t.partitions.values()}
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no leaders after 30 s")


class LogView:
    """What verification has read so far: for each partition, the (producer, sequence) at
    every offset below the verified end, and the last sequence of each producer there."""

    def __init__(self, partitions):
        self.at = {p: array("Q") for p in partitions}  # offset -> producer << 32 | sequence
        self.last_sequence = {}  # (producer, partition) -> (sequence, offset)

    def end(self, p):
        return len(self.at[p])


def verify(args, broker, topic, partitions, producers, stats, view):
    """Reads every partition from `view`'s verified end (a fresh view: from the beginning)
    up to its high watermark, checking each record, then checks every record acknowledged
    before the read started. Returns the view, extended."""
    acked = {w.index: w.acked_snapshot() for w in producers}
    consumer = Consumer({
        "bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in broker.ports),
        "group.id": "crashloop-verify",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 8 * 1024 * 1024,
        "log_level": 0 if not args.verbose else 6,
    })
    try:
        ends = {}
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            ends[p] = high
            if high < view.end(p):
                stats.problem("lost", f"partition {p}: high watermark {high} is below the {view.end(p)} records verified before")
        remaining = {p for p in partitions if ends[p] > view.end(p)}
        consumer.assign([TopicPartition(topic, p, view.end(p)) for p in remaining])
        deadline = time.time() + args.verify_timeout_s
        while remaining:
            if time.time() > deadline:
                stats.problem("timeout", f"verification read stopped at { {p: view.end(p) for p in partitions} } of {ends}")
                break
            for m in consumer.consume(num_messages=2000, timeout=0.5):
                if m.error() is not None:
                    stats.problem("read-error", str(m.error()))
                    continue
                p, offset = m.partition(), m.offset()
                if p not in remaining or offset >= ends[p]:
                    continue
                if offset != view.end(p):
                    stats.problem("offset-gap", f"partition {p}: offset {offset} follows {view.end(p) - 1}")
                    remaining.discard(p)
                    continue
                check_record(args, p, offset, m, view, stats)
                if view.end(p) >= ends[p]:
                    remaining.discard(p)
    finally:
        consumer.close()

    acked_total = 0
    for w in producers:
        for p, seqs in acked[w.index].items():
            at = view.at[p]
            for sequence, offset in seqs.items():
                acked_total += 1
                if offset < len(at) and at[offset] == (w.index << 32 | sequence):
                    continue
                kind = "lost" if offset >= len(at) or at[offset] == NOT_A_RECORD else "moved"
                stats.problem(kind, f"producer {w.index} partition {p} sequence {sequence}, acknowledged at offset {offset}, is not there")
                if len(stats.problems) > 50:
                    return
    stats.records_read = sum(view.end(p) for p in partitions)
    stats.records_acked_verified = acked_total
    stats.unacked_present = stats.records_read - acked_total
    stats.verifications += 1


NOT_A_RECORD = (1 << 64) - 1


def check_record(args, p, offset, m, view, stats):
    """Checks the record at the verified end of partition `p` and appends it to the view."""
    value = m.value() or b""
    at = view.at[p]
    if len(value) < RECORD_HEADER.size or not value.startswith(RECORD_MAGIC):
        stats.problem("corrupt", f"partition {p} offset {offset}: not a crash-loop record: {value[:32]!r}")
        at.append(NOT_A_RECORD)
        return
    _, producer, partition, sequence, length = RECORD_HEADER.unpack_from(value)
    key, expected, headers = make_record(args.seed, producer, partition, sequence)
    if partition != p or m.key() != key or value != expected or (m.headers() or []) != headers:
        stats.problem("corrupt", f"partition {p} offset {offset}: record (producer {producer}, partition {partition}, sequence {sequence}) differs from what was sent")
        at.append(NOT_A_RECORD)
        return
    at.append(producer << 32 | sequence)
    # Sequences of one producer rise strictly within a partition: a duplicate or a
    # reordering breaks that.
    previous = view.last_sequence.get((producer, p))
    if previous is not None and sequence <= previous[0]:
        kind = "duplicate" if sequence == previous[0] or any(
            at[o] == (producer << 32 | sequence) for o in range(offset)
        ) else "reordered"
        stats.problem(kind, f"partition {p}: producer {producer} sequence {sequence} at offset {offset} after sequence {previous[0]} at offset {previous[1]}")
    view.last_sequence[(producer, p)] = (sequence, offset)


def lose_tail(broker, topic, partition):
    """Checks the checker: cuts the newest segment of a partition in half while the broker
    is down, as a storage bug would, so the next verification must report losses."""
    segments = sorted((broker.data_dir / f"{topic}-{partition}").glob("*.log"))
    if segments:
        size = segments[-1].stat().st_size
        os.truncate(segments[-1], size // 2)
        print(f"  injected a loss: cut {segments[-1]} from {size} to {size // 2} bytes", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    ap.add_argument("--restarts", type=int, default=10, help="kill -9 + restart cycles (0: until --duration)")
    ap.add_argument("--duration", type=float, default=None, help="stop starting cycles after this many seconds")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the topic (spread over both shards)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--topic-config", action="append", default=[], metavar="NAME=VALUE",
                    type=lambda kv: tuple(kv.split("=", 1)),
                    help="a config of the test topic, e.g. flush.messages=100000 (acks after "
                         "the write, syncs deferred: what was written must survive kill -9 too)")
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=500, help="records per second per producer")
    ap.add_argument("--run-min-s", type=float, default=0.3, help="shortest time between start and kill")
    ap.add_argument("--run-max-s", type=float, default=3.0, help="longest time between start and kill")
    ap.add_argument("--early-kill-chance", type=float, default=0.25,
                    help="chance that a restart is itself killed during start-up and recovery")
    ap.add_argument("--full-verify-every", type=int, default=5,
                    help="re-read every partition from the start every N restarts (0: never; "
                         "between them only new records are read); the last check is always full")
    ap.add_argument("--verify-timeout-s", type=float, default=120)
    ap.add_argument("--final-flush-s", type=float, default=60)
    ap.add_argument("--workdir", default=None, help="data dir and broker log go here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory even on success")
    ap.add_argument("--inject-loss", type=int, default=0, metavar="N",
                    help="test the checker: before restart N, cut a segment in half (must FAIL)")
    ap.add_argument("--verbose", action="store_true", help="show the clients' own log lines")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.restarts <= 0 and args.duration is None:
        ap.error("--restarts 0 needs --duration")
    if args.shards < 1 or args.partitions < args.shards:
        ap.error("need at least one partition per shard")
    return args


def run(args):
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="strand-crashloop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(workdir, shards=args.shards)
    stats = Stats()
    stats.records_acked_verified = 0
    topic = f"crashloop-{args.seed}"
    print(f"crashloop: seed={args.seed} restarts={args.restarts} duration={args.duration} "
          f"partitions={args.partitions} shards={args.shards} producers={args.producers} "
          f"rate={args.rate}/s each workdir={workdir}", flush=True)
    started = time.monotonic()
    stop = threading.Event()
    producers = []
    try:
        broker.start()
        leaders = create_topic(broker.bootstrap, topic, args.partitions, dict(args.topic_config))
        shards_used = sorted(set(leaders.values()))
        if len(shards_used) != args.shards:
            stats.problem("layout", f"partitions are led by {shards_used}, not by every shard")
        partitions = sorted(leaders)
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in broker.ports)
        producers = [ProducerThread(i, args, bootstrap, topic, partitions, stop) for i in range(args.producers)]
        for w in producers:
            w.start()
        view = LogView(partitions)

        while True:
            elapsed = time.monotonic() - started
            if args.restarts > 0 and stats.restarts >= args.restarts:
                break
            if args.duration is not None and elapsed >= args.duration and stats.restarts > 0:
                break
            time.sleep(rng.uniform(args.run_min_s, args.run_max_s))
            broker.kill9()
            if rng.random() < args.early_kill_chance:
                # Kill it again while it starts: binding, replaying metadata, recovering logs.
                broker.spawn()
                time.sleep(rng.uniform(0.0, 0.5))
                broker.kill9()
                stats.early_kills += 1
            if args.inject_loss and stats.restarts + 1 == args.inject_loss:
                lose_tail(broker, topic, partitions[0])
            broker.start()
            stats.restarts += 1
            if args.full_verify_every > 0 and stats.restarts % args.full_verify_every == 0:
                view = LogView(partitions)  # re-read everything: nothing verified may go missing
            verify(args, broker, topic, partitions, producers, stats, view)
            dead = [w for w in producers if not w.is_alive()]
            if dead:
                stats.problem("producer", f"producer thread died: {dead[0].error!r}")
            fatal = sum(w.fatal_errors + len(w.fatal) for w in producers)
            if fatal and not args.inject_loss:
                # With durable acks and recovered producer state, an idempotent producer
                # never meets a sequence it cannot explain.
                stats.problem("producer-fatal", f"{fatal} fatal idempotent-producer errors (sequence desynchronisation)")
            print(f"  restart {stats.restarts}: {stats.records_read} records read, "
                  f"{stats.records_acked_verified} acknowledged verified, "
                  f"{len(stats.problems)} problems ({time.monotonic() - started:.0f} s)", flush=True)
            if stats.problems:
                break

        # Stop producing, let in-flight records be acknowledged, and verify once more.
        stop.set()
        for w in producers:
            w.join(args.final_flush_s + 10)
        verify(args, broker, topic, partitions, producers, stats, LogView(partitions))
    finally:
        stop.set()
        broker.kill9()

    elapsed = time.monotonic() - started
    log = broker.log()
    if "panicked" in log:
        stats.problem("panic", "the broker panicked (see its log)")
    failed_deliveries = sum(w.failed for w in producers)
    instances = sum(w.instances for w in producers)
    produced = sum(sum(w.next_sequence.values()) for w in producers)
    ok = not stats.problems
    shown = {}
    for kind, detail in stats.problems:
        shown[kind] = shown.get(kind, 0) + 1
        if shown[kind] <= 5:
            print(f"  {kind}: {detail}")
    kinds = ("lost", "moved", "duplicate", "reordered", "corrupt")
    if shown:
        print(f"  problems by kind: {shown}")
    print(
        f"crashloop {'PASS' if ok else 'FAIL'}: seed={args.seed} restarts={stats.restarts} "
        f"early_kills={stats.early_kills} produced={produced} "
        f"records_acked={stats.records_acked_verified} records_verified={stats.records_read} "
        f"unacked_present={stats.unacked_present} delivery_failures={failed_deliveries} "
        f"producer_instances={instances} fatal_producer_errors={sum(w.fatal_errors for w in producers)} losses={stats.count('lost') + stats.count('moved')} "
        f"duplicates={stats.count('duplicate')} reordered={stats.count('reordered')} "
        f"corrupt={stats.count('corrupt')} other={len(stats.problems) - sum(stats.count(k) for k in kinds)} "
        f"elapsed={elapsed:.0f}s",
        flush=True,
    )
    if ok and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        print(f"  kept {workdir} (data and broker.log); replay: {sys.argv[0]} --seed {args.seed} "
              f"--restarts {args.restarts}", flush=True)
    return ok, stats


def main(argv=None):
    args = parse_args(argv)
    ok, _ = run(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
