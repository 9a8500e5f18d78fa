"""A low open-file limit (`ulimit -n`) neither loses data nor wedges the broker.

Only each partition's active segment stays open; sealed segments are opened on demand
through a bounded per-shard cache (`--max-open-segment-files-per-shard`, by default sized
from the limit), and the partition cap is lowered to what the limit covers, so creations
past it are refused with a clear error instead of produces failing with
KAFKA_STORAGE_ERROR once descriptors run out. The broker is started with a soft and hard
limit of NOFILE, far below the number of segments written.
"""

import os
import resource
import subprocess
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker

NOFILE = 256


class LimitedBroker(Broker):
    """A broker whose process starts with RLIMIT_NOFILE = (nofile, nofile)."""

    def __init__(self, tmp_path, nofile, **kwargs):
        super().__init__(tmp_path, **kwargs)
        self.nofile = nofile

    def spawn(self):
        real = subprocess.Popen
        limit = (self.nofile, self.nofile)

        def popen(*args, **kwargs):
            kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return real(*args, **kwargs)

        subprocess.Popen = popen
        try:
            return super().spawn()
        finally:
            subprocess.Popen = real

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def read_all(bootstrap, topic, count, timeout_s=60):
    """The values of the first `count` records of partition 0, read from offset 0."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "g-" + topic,
        "enable.auto.commit": False,
        "fetch.max.bytes": 1 << 20,
    })
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = []
        deadline = time.time() + timeout_s
        while len(values) < count and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), msg.error()
            assert msg.offset() == len(values), (msg.offset(), len(values))
            values.append(msg.value())
        return values
    finally:
        consumer.close()


def produce(bootstrap, topic, values):
    """Produces `values` one batch each; returns the delivery errors."""
    errors = []
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "batch.num.messages": 1,
        "linger.ms": 0,
        "message.timeout.ms": 30000,
    })

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    for value in values:
        producer.produce(topic, value, partition=0, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    return errors


def test_many_segments_past_the_limit_are_written_read_and_reread_after_restart(tmp_path):
    b = LimitedBroker(tmp_path, NOFILE, shards=1)
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        topic = "many-segments"
        admin.create_topics(
            [NewTopic(topic, num_partitions=1, config={"segment.bytes": "1024"})],
            request_timeout=15)[topic].result()
        count = 3 * NOFILE
        values = [f"{i:06d}:".encode() + b"v" * 700 for i in range(count)]
        # One batch of ~760 bytes per 1 KiB segment: a segment per record.
        assert produce(b.bootstrap, topic, values) == []
        segments = len(list((b.data_dir / f"{topic}-0").glob("*.log")))
        assert segments > 2 * NOFILE, segments
        assert read_all(b.bootstrap, topic, count) == values
        assert b.open_fds() < NOFILE

        # Restarted on that data with the same limit, it serves every segment again.
        b.restart()
        assert read_all(b.bootstrap, topic, count) == values
        assert b.open_fds() < NOFILE
        assert "soft limit raised" in b.log() or "open-file limit" in b.log()
    finally:
        b.kill9()


def test_partitions_past_the_descriptor_budget_are_refused_clearly(tmp_path):
    b = LimitedBroker(tmp_path, NOFILE, shards=1)
    b.start()
    try:
        # Auto-creation: a producer naming more topics than the limit can hold.
        wanted = NOFILE
        producer = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 8000})
        for k in range(wanted):
            producer.produce(f"auto-{k}", f"first {k}".encode())
        producer.flush(60)
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        metadata = admin.list_topics(timeout=10)
        created = sorted(name for name, t in metadata.topics.items()
                         if name.startswith("auto-") and not t.error)
        assert 0 < len(created) < wanted, len(created)

        # CreateTopics past the cap: refused with an error that says why.
        futures = admin.create_topics([NewTopic("one-more", num_partitions=1)],
                                      request_timeout=15)
        try:
            futures["one-more"].result()
            raise AssertionError("a partition past the descriptor budget was created")
        except Exception as err:  # a KafkaException carrying the broker's error
            error = err.args[0]
            assert error.code() == KafkaError.INVALID_PARTITIONS, error
            assert "open-file limit" in error.str(), error.str()
        assert "partition cap is lowered" in b.log()

        # Existing partitions keep producing and consuming.
        some = [created[0], created[len(created) // 2], created[-1]]
        for name in some:
            assert produce(b.bootstrap, name, [b"second"]) == []
            assert read_all(b.bootstrap, name, 2)[1] == b"second"
        assert b.open_fds() < NOFILE

        # And the broker restarts fine on that data, under the same limit.
        b.restart()
        for name in some:
            assert read_all(b.bootstrap, name, 2)[1] == b"second"
            assert produce(b.bootstrap, name, [b"third"]) == []
        assert b.open_fds() < NOFILE
    finally:
        b.kill9()
