#!/usr/bin/env python3
"""Measures how long the broker takes to come back after kill -9 with a given amount of
data (default 1 GiB), and after a clean SIGTERM for comparison.

Produces --gib of data with acks=all to a topic whose partitions span both shards, kills
the broker with SIGKILL while a producer is still writing, then times the restart: from
spawning the process until every shard's port accepts and a Metadata request answered by
shard 0 names the topic with a leader for every partition. After that it checks that the
high watermarks cover every acknowledged record. Not run in CI (it writes a lot).

    .venv/bin/python tests/recovery_time.py --gib 1
"""

import argparse
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "compat"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from conftest import Broker, accepts  # noqa: E402
from helpers import create_topic  # noqa: E402


def metadata_v1(topic, correlation_id=1):
    t = topic.encode()
    body = struct.pack(">ih", 1, len(t)) + t
    msg = struct.pack(">hhih", 3, 1, correlation_id, 8) + b"recovery" + body
    return struct.pack(">i", len(msg)) + msg


def metadata_ok(port, topic, partitions):
    """True if shard 0 answers Metadata v1 for `topic` with a leader for every partition."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(metadata_v1(topic))
            size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
            data = s.recv(size, socket.MSG_WAITALL)
    except OSError:
        return False
    # The response is small; parse just enough: find the topic and count leaders >= 0.
    at = 4  # correlation id
    brokers = struct.unpack_from(">i", data, at)[0]
    at += 4
    for _ in range(brokers):
        at += 4
        host_len = struct.unpack_from(">h", data, at)[0]
        at += 2 + host_len + 4
        rack_len = struct.unpack_from(">h", data, at)[0]
        at += 2 + max(rack_len, 0)
    at += 4  # controller id
    topics = struct.unpack_from(">i", data, at)[0]
    at += 4
    for _ in range(topics):
        error = struct.unpack_from(">h", data, at)[0]
        at += 2
        name_len = struct.unpack_from(">h", data, at)[0]
        name = data[at + 2:at + 2 + name_len].decode()
        at += 2 + name_len + 1  # is_internal
        count = struct.unpack_from(">i", data, at)[0]
        at += 4
        leaders = 0
        for _ in range(count):
            _, _, leader = struct.unpack_from(">hii", data, at)
            at += 10
            for _ in range(2):  # replicas, isr
                n = struct.unpack_from(">i", data, at)[0]
                at += 4 + 4 * n
            leaders += leader >= 0
        if name == topic:
            return error == 0 and count == partitions and leaders == partitions
    return False


def timed_start(broker, topic, partitions, timeout_s=600):
    started = time.monotonic()
    broker.spawn()
    port_at = None
    while time.monotonic() - started < timeout_s:
        if broker.proc.poll() is not None:
            raise RuntimeError(f"broker exited:\n{broker.log()[-3000:]}")
        if port_at is None and all(accepts(p) for p in broker.ports):
            port_at = time.monotonic() - started
        if port_at is not None and metadata_ok(broker.port, topic, partitions):
            return port_at, time.monotonic() - started
        time.sleep(0.01)
    raise RuntimeError("broker did not come back")


def produce(broker, topic, partitions, total_bytes, value_bytes, acked, stop=None):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 20,
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 256 * 1024,
                         "enable.idempotence": True, "log_level": 0})
    value = bytes(range(256)) * (value_bytes // 256)

    def on_delivery(err, msg):
        if err is None:
            acked[msg.partition()] = max(acked.get(msg.partition(), -1), msg.offset())

    count = total_bytes // len(value)
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        while stop is None or not stop.is_set():
            try:
                producer.produce(topic, value=value, partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if stop is None:
        assert producer.flush(300) == 0
    else:
        producer.flush(1)
    return count


def high_watermarks(broker, topic, partitions):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "recovery-time", "log_level": 0})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--value-bytes", type=int, default=8192)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="strand-recovery-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = Broker(work)
    topic = "recovery"
    try:
        broker.start()
        create_topic(broker, topic, args.partitions)
        acked = {}
        t = time.monotonic()
        produce(broker, topic, args.partitions, int(args.gib * (1 << 30)), args.value_bytes, acked)
        took = time.monotonic() - t
        data = sum(f.stat().st_size for f in broker.data_dir.glob(f"{topic}-*/*.log"))
        print(f"produced {data / (1 << 30):.2f} GiB in {took:.1f} s ({data / took / 1e6:.0f} MB/s)", flush=True)

        # kill -9 while a producer is still writing, so tails are mid-flush.
        stop = threading.Event()
        tail = threading.Thread(target=produce, args=(broker, topic, args.partitions, 1 << 30,
                                                      args.value_bytes, acked, stop))
        tail.start()
        time.sleep(0.5)
        broker.kill9()
        stop.set()
        tail.join()
        port_s, ready_s = timed_start(broker, topic, args.partitions)
        data = sum(f.stat().st_size for f in broker.data_dir.glob(f"{topic}-*/*.log"))
        hw = high_watermarks(broker, topic, args.partitions)
        lost = {p: (o, hw[p]) for p, o in acked.items() if hw[p] <= o}
        print(f"after kill -9 with {data / (1 << 30):.2f} GiB: ports accept after {port_s:.2f} s, "
              f"metadata answered after {ready_s:.2f} s; "
              f"acknowledged records all below the high watermark: {not lost}", flush=True)

        assert broker.terminate() == 0
        port_s2, ready_s2 = timed_start(broker, topic, args.partitions)
        print(f"after SIGTERM: ports accept after {port_s2:.2f} s, metadata answered after {ready_s2:.2f} s", flush=True)
        print(f"recovery_time: data_gib={data / (1 << 30):.2f} kill9_ready_s={ready_s:.2f} "
              f"sigterm_ready_s={ready_s2:.2f} lost={len(lost)}")
        return 1 if lost else 0
    finally:
        broker.kill9()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
