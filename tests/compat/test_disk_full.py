"""A full disk: the broker answers produce with KAFKA_STORAGE_ERROR while there is no space,
keeps serving reads of what is durable, takes writes again once space returns, and loses
or duplicates no acknowledged record. The data dir is a small loop-mounted ext4 image (root
only; skipped otherwise)."""

import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Producer
from conftest import Broker
from helpers import consume, create_topic

IMAGE_MB = 64


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 to loop-mount a small file system")
    image = tmp_path / "disk.img"
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["truncate", "-s", f"{IMAGE_MB}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def fill(path, size):
    """Allocates up to `size` bytes in a file (less if the file system's own metadata needs
    some of them)."""
    with open(path, "wb") as f:
        while size > 0:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                return
            except OSError:
                size -= 128 * 1024


def produce(broker, topic, values):
    """acks=all, no retries past a short timeout; returns [(value, error or None, offset)]."""
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 4000,
            "enable.idempotence": True,
        }
    )
    results = []

    def done(err, msg):
        results.append((msg.value(), err, msg.offset() if err is None else None))

    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=done)
        p.poll(0)
    p.flush(30)
    return results


def test_full_disk_refuses_writes_serves_reads_and_recovers(tmp_path, small_disk, topic):
    root = tmp_path
    broker = Broker(root, extra=[])
    broker.data_dir = small_disk / "data"
    broker.start()
    try:
        create_topic(broker, topic, 1)
        first = produce(broker, topic, [b"before-%d" % i + b"x" * 1000 for i in range(200)])
        assert all(err is None for _, err, _ in first)

        # Eat the space left, but for a little.
        filler = small_disk / "filler"
        fill(filler, free_bytes(small_disk) - 256 * 1024)
        during = produce(broker, topic, [b"full-%d" % i + b"y" * 4000 for i in range(400)])
        failed = [err for _, err, _ in during if err is not None]
        assert failed, "every produce succeeded on a full disk"
        assert any(
            e.code() in (KafkaError.KAFKA_STORAGE_ERROR, KafkaError._MSG_TIMED_OUT) for e in failed
        ), failed[:3]
        assert "flush failed" in broker.log()

        # Reads go on while the disk is full.
        acked_so_far = [v for v, err, _ in first + during if err is None]
        got = consume(broker, topic, 1, OFFSET_BEGINNING, len(acked_so_far), timeout=20)
        assert [v for _, _, v, _ in got.get(0, [])][: len(acked_so_far)] == acked_so_far

        # Space returns: writes are taken again (the partition is reopened within seconds).
        filler.unlink()
        deadline = time.time() + 30
        after = []
        while time.time() < deadline:
            after = produce(broker, topic, [b"after-%d" % i for i in range(50)])
            if all(err is None for _, err, _ in after):
                break
            time.sleep(1)
        assert all(err is None for _, err, _ in after), [e for _, e, _ in after if e][:3]
        assert "partition reopened" in broker.log()

        # Every acknowledged record is there exactly once, in order; nothing else but
        # unacknowledged ones.
        acked = [v for v, err, _ in first + during + after if err is None]
        broker.kill9()
        broker.start()
        got = consume(broker, topic, 1, OFFSET_BEGINNING, len(acked), timeout=30, settle=1.0)
        values = [v for _, _, v, _ in got[0]]
        assert len(values) == len(set(values)), "a record is duplicated"
        positions = [values.index(v) for v in acked]
        assert positions == sorted(positions), "acknowledged records out of order"
        unacked = {v for v, err, _ in during if err is not None}
        assert set(values) - set(acked) <= unacked
    finally:
        broker.kill9()
