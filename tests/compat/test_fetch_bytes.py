"""Fetch responses are built from pieces: batches shared from the recent-batch cache, slices
of direct-I/O disk reads, and small pieces copied into the response's header buffer. These
tests fetch many partitions at once with raw requests (kafka-python's protocol classes,
flexible and non-flexible versions) while part of each partition is in the cache and part
only on disk, and check that the bytes served are exactly the batches produced: the same
bytes again after a kill -9 (when everything comes from disk), every CRC valid, every value
in order."""

import struct
import uuid

from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.record.memory_records import MemoryRecords

from conftest import Broker
from helpers import create_topic

PARTITIONS = 6
# Values from empty to larger than a page: batches under and over the size at which a
# piece is copied into the header buffer rather than shared.
SIZES = [0, 3, 40, 300, 2000, 9000]
CACHE_BYTES = 64 * 1024


def value(partition, i):
    size = SIZES[(i * 7 + partition) % len(SIZES)]
    return f"{partition}:{i}:".encode() + bytes([97 + i % 26]) * size


def produce(broker, topic, count):
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "linger.ms": 2,
        "compression.type": "none",
        "enable.idempotence": True,
    })
    for i in range(count):
        for partition in range(PARTITIONS):
            p.produce(topic, value(partition, i), partition=partition)
        # Batches of different record counts: flush at irregular steps.
        if i % 11 == 0 or i % 17 == 0:
            p.flush(30)
    assert p.flush(30) == 0


def whole_batches(records):
    """(bytes of the complete batches at the front of `records`, next offset or None)."""
    at, next_offset = 0, None
    while at + 12 <= len(records):
        base_offset, length = struct.unpack_from(">qi", records, at)
        if at + 12 + length > len(records):
            break
        (last_delta,) = struct.unpack_from(">i", records, at + 23)
        next_offset = base_offset + last_delta + 1
        at += 12 + length
    return records[:at], next_offset


def fetch_everything(bootstrap, topic, version, max_bytes, partition_max_bytes):
    """Fetches every partition from offset 0 with requests naming all of them, until each
    is at its high watermark; returns {partition: the record bytes served, concatenated}."""
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)

    def send(request):
        async def go():
            return await a._manager.send(request, node_id=None)

        return a._manager.run(go)

    offsets = {p: 0 for p in range(PARTITIONS)}
    served = {p: b"" for p in range(PARTITIONS)}
    done = set()
    try:
        for _ in range(10_000):
            wanted = [p for p in range(PARTITIONS) if p not in done]
            if not wanted:
                return served
            fetch_topic = FetchRequest.FetchTopic(topic=topic, partitions=[
                FetchRequest.FetchTopic.FetchPartition(
                    partition=p, fetch_offset=offsets[p], partition_max_bytes=partition_max_bytes)
                for p in wanted])
            r = send(FetchRequest(version=version, replica_id=-1, max_wait_ms=10, min_bytes=1,
                                  max_bytes=max_bytes, isolation_level=0, topics=[fetch_topic]))
            (t,) = r.responses
            for part in t.partitions:
                assert part.error_code == 0, (part.partition_index, part.error_code)
                records = part.records or b""
                whole, next_offset = whole_batches(records)
                served[part.partition_index] += whole
                if next_offset is not None:
                    offsets[part.partition_index] = next_offset
                if offsets[part.partition_index] >= part.high_watermark:
                    done.add(part.partition_index)
        raise AssertionError(f"fetching never reached the high watermarks: {offsets}")
    finally:
        a.close()


def values_in(records):
    batches = MemoryRecords(records)
    out = []
    while batches.has_next():
        batch = batches.next_batch()
        assert batch.validate_crc(), "a served batch has a bad CRC"
        out.extend(record.value for record in batch)
    return out


def test_fetch_across_cache_and_disk_is_byte_identical(tmp_path):
    broker = Broker(tmp_path, shards=1, extra=["--partition-cache-bytes", str(CACHE_BYTES)])
    broker.start()
    try:
        topic = "fetch-bytes-" + uuid.uuid4().hex[:8]
        create_topic(broker, topic, PARTITIONS)
        count = 300
        produce(broker, topic, count)
        expected = {p: [value(p, i) for i in range(count)] for p in range(PARTITIONS)}

        # Each partition holds several times the cache: its head is read from disk, its
        # tail from memory, in the same responses.
        served = {}
        for version, max_bytes, partition_max_bytes in [
            (4, 1 << 20, 1 << 20),
            (12, 1 << 20, 1 << 20),
            (12, 256 * 1024, 40 * 1024),
            (12, 10, 10),
        ]:
            got = fetch_everything(broker.bootstrap, topic, version, max_bytes, partition_max_bytes)
            for p in range(PARTITIONS):
                assert values_in(got[p]) == expected[p], (version, max_bytes, p)
            first = served.setdefault("before", got)
            assert got == first, (version, max_bytes, partition_max_bytes)
        assert sum(len(b) for b in served["before"].values()) > 4 * PARTITIONS * CACHE_BYTES

        # After kill -9 the cache is empty: every byte now comes from disk, and must match.
        broker.restart()
        after = fetch_everything(broker.bootstrap, topic, 12, 1 << 20, 128 * 1024)
        assert after == served["before"]
    finally:
        broker.kill9()
    assert "panicked" not in broker.log()
