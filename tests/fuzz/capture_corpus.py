#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus from real client traffic.

Starts the broker with `--advertise` pointing at a recording proxy, so every connection of
real clients (confluent-kafka producers with each codec, idempotent and not, a group
consumer committing offsets, the admin client, kafka-python) passes through it; each
request frame (without its size prefix) becomes a seed of the `request` target. The record
batches the broker stored (read back from its segment files) become seeds of the `batch`
target, alone and a few back to back.

    .venv/bin/python tests/fuzz/capture_corpus.py      # rewrites tests/fuzz/corpus/
"""

import hashlib
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "compat"))

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from conftest import Broker, free_base_port  # noqa: E402

SEED_BYTES_MAX = 64 * 1024
REQUEST_SEEDS_MAX_PER_API = 12


class RecordingProxy:
    """Forwards 127.0.0.1:listen_port+k to 127.0.0.1:target_port+k, recording request frames."""

    def __init__(self, listen_port, target_port, shards):
        self.frames = []
        self.lock = threading.Lock()
        self.listeners = []
        for k in range(shards):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", listen_port + k))
            s.listen(64)
            self.listeners.append(s)
            threading.Thread(target=self.accept, args=(s, target_port + k), daemon=True).start()

    def accept(self, listener, target_port):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=self.requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client), daemon=True).start()

    def requests(self, src, dst):
        buf = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                buf += data
                while len(buf) >= 4:
                    size = struct.unpack(">i", buf[:4])[0]
                    if len(buf) < 4 + size:
                        break
                    with self.lock:
                        self.frames.append(buf[4:4 + size])
                    buf = buf[4 + size:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def pipe(self, src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        for s in self.listeners:
            s.close()


def drive_clients(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)
                                   for t in ("seed", "seed-gone")])
    for future in created.values():
        future.result(30)
    time.sleep(0.5)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        for idempotent in (False, True):
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": codec,
                          "enable.idempotence": idempotent, "linger.ms": 5})
            for i in range(20):
                p.produce("seed", key=b"k%d" % i, value=(b"%s-%d " % (codec.encode(), i)) * (i + 1),
                          headers=[("h", b"v%d" % i)], partition=i % 2)
            p.flush(30)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "seed-group",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["seed"])
    got = 0
    deadline = time.time() + 30
    while got < 100 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
    c.commit(asynchronous=False)
    c.close()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "seed-assign"})
    c.assign([TopicPartition("seed", 0, OFFSET_BEGINNING)])
    c.consume(10, timeout=5)
    c.offsets_for_times([TopicPartition("seed", 0, 1)], timeout=10)
    c.close()
    try:
        from kafka import KafkaConsumer, KafkaProducer
        kp = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        kp.send("seed", key=b"kp", value=b"from kafka-python", partition=1).get(timeout=30)
        kp.close()
        kc = KafkaConsumer("seed", bootstrap_servers=bootstrap, group_id="seed-kp",
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
        for _ in kc:
            pass
        kc.close()
    except ImportError:
        pass
    admin.delete_topics(["seed-gone"])["seed-gone"].result(30)


def segment_batches(data_dir):
    batches = []
    for log in sorted(data_dir.glob("*/*.log")):
        data = log.read_bytes()
        at = 0
        while at + 61 <= len(data):
            length = struct.unpack_from(">i", data, at + 8)[0]
            if length < 49 or at + 12 + length > len(data):
                break
            batches.append(data[at:at + 12 + length])
            at += 12 + length
    return batches


def write_seeds(directory, seeds):
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def main():
    work = Path(tempfile.mkdtemp(prefix="strand-corpus-"))
    broker = Broker(work)
    proxy_port = free_base_port(broker.shards)
    broker.extra = ["--advertise", f"127.0.0.1:{proxy_port}"]
    broker.start()
    proxy = RecordingProxy(proxy_port, broker.port, broker.shards)
    try:
        drive_clients(f"127.0.0.1:{proxy_port}")
        time.sleep(0.5)
    finally:
        proxy.close()
        broker.kill9()
    with proxy.lock:
        frames = list(proxy.frames)

    # A few of each (api, version), smallest first, so the corpus stays small.
    by_api = {}
    for f in sorted(set(frames), key=len):
        if len(f) < 4 or len(f) > SEED_BYTES_MAX:
            continue
        key = f[:4]
        if len(by_api.setdefault(key, [])) < REQUEST_SEEDS_MAX_PER_API:
            by_api[key].append(f)
    requests = [f for fs in by_api.values() for f in fs]
    write_seeds(HERE / "corpus" / "request", requests)

    batches = segment_batches(broker.data_dir)
    batch_seeds = sorted({b for b in batches if len(b) <= SEED_BYTES_MAX}, key=len)[:60]
    batch_seeds += [b"".join(batch_seeds[i:i + 3]) for i in range(0, min(len(batch_seeds), 30), 3)]
    write_seeds(HERE / "corpus" / "batch", batch_seeds)
    print(f"{len(requests)} request seeds ({len(by_api)} api/version pairs), "
          f"{len(batch_seeds)} batch seeds")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
