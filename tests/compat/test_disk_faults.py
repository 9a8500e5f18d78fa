"""Disk faults, end to end against the real binary: a torn, garbage or zero-padded tail of the
active segment after `kill -9`, a flipped byte inside a sealed segment while the broker runs
(and after restarts), and missing, truncated, garbled or stale index files.

Each test injects the fault into the segment files itself, at positions it finds by walking
the record batches exactly as the broker lays them out (docs/storage-format.md), and checks
what real clients (confluent-kafka) see: every acknowledged record byte for byte at its
acknowledged offset, never a corrupt byte, and the broker's log naming the fault.
The full disk is tests/compat/test_disk_full.py."""

import os
import random
import re
import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import consumer_config

HEADER = 61  # record batch header bytes (magic 2)
SMALL_SEGMENT = 16384  # segment.bytes of the multi-segment topics
CACHE_BYTES = 16384  # --partition-cache-bytes: old batches must come from disk


# --- segment files -----------------------------------------------------------------------

def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class Batch:
    def __init__(self, position, base_offset, length, last_offset_delta):
        self.position = position
        self.base_offset = base_offset
        self.length = length
        self.last_offset = base_offset + last_offset_delta

    @property
    def end(self):
        return self.position + self.length


def walk(data):
    """The valid record batches at the start of a segment's bytes, up to the first invalid
    one (length, magic, CRC32C), as the broker's recovery scan checks them."""
    out = []
    position = 0
    while position + HEADER <= len(data):
        base_offset, batch_length = struct.unpack_from(">qi", data, position)
        length = 12 + batch_length
        if length < HEADER or position + length > len(data):
            break
        (crc,) = struct.unpack_from(">I", data, position + 17)
        if data[position + 16] != 2 or crc32c(data[position + 21 : position + length]) != crc:
            break
        (last_offset_delta,) = struct.unpack_from(">i", data, position + 23)
        out.append(Batch(position, base_offset, length, last_offset_delta))
        position += length
    return out


def partition_dir(broker, topic, partition):
    return broker.data_dir / f"{topic}-{partition}"


def segments(directory):
    """Segment files of a partition directory, by base offset."""
    return sorted(directory.glob("*.log"))


def base_of(path):
    return int(Path(path).name.split(".")[0])


def write_at(path, position, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, position) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(path):
    """(relative offset, position) entries of a `.index` file (38-byte trailer)."""
    data = path.read_bytes()[:-38]
    return [struct.unpack_from(">II", data, i) for i in range(0, len(data), 8)]


# --- clients -------------------------------------------------------------------------------

def create(broker, topic, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
    admin.create_topics([new])[topic].result(timeout=15)
    deadline = time.time() + 15
    while True:
        t = admin.list_topics(topic, timeout=10).topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return
        assert time.time() < deadline, f"no metadata for {topic}"
        time.sleep(0.1)


def record(topic_tag, partition, i, size=150):
    """The record number `i` of a partition: key, value, headers, all distinct."""
    key = b"%s-k-%d-%06d" % (topic_tag, partition, i)
    value = b"v-%d-%06d-" % (partition, i) + bytes(random.Random(i * 7 + partition).randbytes(size))
    headers = [("i", b"%d" % i)]
    return key, value, headers


def produce(broker, topic, partition_records, timestamps=None, batch=10):
    """Produces {partition: [(key, value, headers)]} with an idempotent acks=all producer,
    a few records per batch so that segments hold many batches. Returns {partition:
    [(offset, key, value, headers)]} as acknowledged; fails on any delivery error."""
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.num.messages": batch,
            "compression.type": "none",
        }
    )
    acked = {}
    errors = []
    # Delivery reports carry no headers: take them from what was sent.
    headers_of = {v: h for records in partition_records.values() for _, v, h in records}

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.setdefault(msg.partition(), []).append(
                (msg.offset(), msg.key(), msg.value(), headers_of[msg.value()])
            )

    for partition, records in partition_records.items():
        for i, (key, value, headers) in enumerate(records):
            kwargs = {}
            if timestamps is not None:
                kwargs["timestamp"] = timestamps[partition][i]
            p.produce(topic, key=key, value=value, headers=headers, partition=partition,
                      on_delivery=done, **kwargs)
            p.poll(0)
    assert p.flush(30) == 0
    assert errors == []
    for partition in acked:
        acked[partition].sort()
    return acked


def fetch(broker, topic, partition, start, expected, timeout=10, settle=1.0):
    """Reads one partition from `start` with a plain consumer until `expected` records came
    (or `timeout`), then `settle` seconds more. Returns ([(offset, key, value, headers)],
    [error codes the client reported])."""
    consumer = Consumer(consumer_config(broker, **{"fetch.error.backoff.ms": 100}))
    consumer.assign([TopicPartition(topic, partition, start)])
    got, errors = [], []
    try:
        deadline = time.time() + timeout
        settle_until = None
        while True:
            now = time.time()
            if settle_until is None and (len(got) >= expected or now > deadline):
                settle_until = now + settle
            if settle_until is not None and now > settle_until:
                break
            m = consumer.poll(0.1)
            if m is None:
                continue
            if m.error() is not None:
                errors.append(m.error().code())
                continue
            got.append((m.offset(), m.key(), m.value(), m.headers() or []))
    finally:
        consumer.close()
    return got, errors


def restart(broker):
    """kill -9 if running, start again; returns (this run's log, seconds until ready)."""
    broker.kill9()
    log_from = len(broker.log())
    started = time.monotonic()
    broker.start()
    return broker.log()[log_from:], time.monotonic() - started


def log_lines(log, *needles):
    """Lines holding every needle; a line ends in a space here, so that a needle such as
    "segment=80 " matches a field that ends the line too."""
    return [line for line in log.splitlines() if all(n in line + " " for n in needles)]


def field(line, name):
    m = re.search(rf"\b{name}=(\S+)", line)
    assert m, f"no {name}= in {line!r}"
    return m.group(1)


# --- a torn, garbage or zero-padded tail ----------------------------------------------------

TAIL_FAULTS = [
    # The next batch half written when the power went: a copy of the last batch, given the
    # next offset, cut in the middle, where the next write would have put it.
    "torn-batch",
    # Half a batch's worth of random bytes where the next batch would start.
    "garbage",
    # 4096 zero bytes appended to the file (past the block padding already there).
    "zeros",
]


@pytest.mark.parametrize("fault", TAIL_FAULTS)
def test_bad_tail_is_cut_and_every_acknowledged_record_survives(broker, topic, fault):
    tag = fault.encode()
    create(broker, topic, 2)
    sent = {p: [record(tag, p, i) for i in range(200)] for p in (0, 1)}
    acked = produce(broker, topic, sent)
    assert {p: [r[1:] for r in acked[p]] for p in acked} == {
        p: [(k, v, h) for k, v, h in sent[p]] for p in sent
    }
    high_watermarks = {p: acked[p][-1][0] + 1 for p in (0, 1)}
    assert high_watermarks == {0: 200, 1: 200}
    broker.kill9()

    injected = {}
    for p in (0, 1):
        directory = partition_dir(broker, topic, p)
        (segment,) = segments(directory)  # one segment: default segment.bytes
        data = segment.read_bytes()
        batches = walk(data)
        end = batches[-1].end
        # What kill -9 left: the batches, then zeros up to the 4096-byte block boundary.
        assert batches[-1].last_offset + 1 == high_watermarks[p]
        assert len(data) % 4096 == 0 and data[end:] == bytes(len(data) - end)
        if fault == "torn-batch":
            last = data[batches[-1].position : end]
            torn = struct.pack(">q", high_watermarks[p]) + last[8:]
            write_at(segment, end, torn[: len(torn) // 2])
        elif fault == "garbage":
            write_at(segment, end, random.Random(p).randbytes(batches[-1].length // 2))
        else:
            write_at(segment, len(data), bytes(4096))
        injected[p] = (directory, segment, end, segment.stat().st_size, data[:end])

    log, ready_s = restart(broker)

    for p, (directory, segment, end, file_len, durable) in injected.items():
        # Detected and logged: where the valid data ends, and what was cut.
        (cut,) = log_lines(log, "truncating the segment there", f"dir={directory} ")
        assert int(field(cut, "valid_bytes")) == end
        assert int(field(cut, "file_bytes")) == file_len
        (recovered,) = log_lines(log, "recovered the log after an unclean stop", f"dir={directory} ")
        assert int(field(recovered, "bytes")) == file_len - end
        assert int(field(recovered, "next_offset")) == high_watermarks[p]
        # The file is the durable batches, byte for byte, and nothing else.
        assert segment.read_bytes() == durable

    # Every acknowledged record, at its offset, byte for byte; nothing after them.
    for p in (0, 1):
        got, errors = fetch(broker, topic, p, 0, len(acked[p]), settle=0.5)
        assert errors == []
        assert got == acked[p]

    # Producing goes on at the offsets after the last acknowledged record.
    more = {p: [record(tag + b"-after", p, i) for i in range(20)] for p in (0, 1)}
    after = produce(broker, topic, more)
    for p in (0, 1):
        assert [r[0] for r in after[p]] == list(range(high_watermarks[p], high_watermarks[p] + 20))
        got, errors = fetch(broker, topic, p, 0, 220, settle=0.5)
        assert errors == [] and got == acked[p] + after[p]
    assert "fetch read failed" not in broker.log()
    sizes = {p: injected[p][3] - injected[p][2] for p in injected}
    why = log_lines(log, "truncating the segment there")[0].split(" strand::storage::recovery: ")[1]
    print(f"\n{fault}: cut {sizes} bytes; ready {ready_s:.2f} s after restart; log: {why}")


# --- a flipped byte in a sealed segment -----------------------------------------------------

def small_segments(broker, topic, partitions, records=500):
    """A topic of `partitions` partitions with 16 KiB segments, `records` records in each
    (7 segments), on a broker whose partition cache holds 16 KiB (so all but the
    newest batches are read from disk). Returns what was acknowledged."""
    broker.kill9()
    broker.extra = ["--partition-cache-bytes", str(CACHE_BYTES)]
    broker.start()
    create(broker, topic, partitions, {"segment.bytes": str(SMALL_SEGMENT)})
    sent = {p: [record(b"s", p, i) for i in range(records)] for p in range(partitions)}
    return produce(broker, topic, sent)


def flip_a_record_byte(broker, topic, partition, acked, segment_number):
    """Flips one byte inside the value of a record in the middle of a sealed segment.
    Returns (segment path, the batch hit, the offset of the record hit)."""
    logs = segments(partition_dir(broker, topic, partition))
    assert len(logs) >= 5, logs
    victim = logs[segment_number]
    assert victim.with_suffix(".index").exists(), "not sealed"
    data = victim.read_bytes()
    batches = walk(data)
    assert batches[-1].end == len(data), "a sealed segment is trimmed to its batches"
    batch = batches[len(batches) // 2]
    offset = batch.base_offset + 1
    (hit,) = [r for r in acked[partition] if r[0] == offset]
    at = data.find(hit[2], batch.position, batch.end)
    assert at > batch.position
    write_at(victim, at + 20, bytes([data[at + 20] ^ 0x01]))
    assert walk(victim.read_bytes())[-1].end == batch.position
    return victim, batch, offset


def first_offset_after(victim, batch):
    """The first offset a fetch can reach past a corrupt `batch`: a read starts at the last
    index entry at or before its offset, so it must have an entry past the batch (entries
    are 4096 bytes apart), or be in the next segment."""
    base = base_of(victim)
    for relative, position in read_index(victim.with_suffix(".index")):
        if position > batch.position:
            return base + relative
    later = [base_of(s) for s in segments(victim.parent) if base_of(s) > base]
    return later[0]


def test_flipped_byte_in_a_sealed_segment_is_never_served(broker, topic):
    acked = small_segments(broker, topic, 3)
    victim, batch, hit = flip_a_record_byte(broker, topic, 0, acked, 2)
    corrupt = batch.base_offset
    resume = first_offset_after(victim, batch)
    report = (f"flipped a byte of offset {hit} in {victim.name}, batch {corrupt}-"
              f"{batch.last_offset} at byte {batch.position}; next index entry at {resume}")
    refused = f"corrupt batch in {victim} at byte {batch.position}: record batch CRC mismatch"

    def check_reads(acked0):
        """What a consumer of partition 0 gets: every record before the corrupt batch, byte
        for byte, then nothing; seeking past the batch, everything from the next index
        entry on. Returns the client-side errors seen."""
        got, errors = fetch(broker, topic, 0, 0, corrupt, settle=1.0)
        assert got == [r for r in acked0 if r[0] < corrupt]
        more_errors = []
        if batch.last_offset + 1 < resume:
            # Right after the corrupt batch, before the next index entry: a read from there
            # starts in front of the batch, so it is refused too.
            skipped, more_errors = fetch(broker, topic, 0, batch.last_offset + 1, 1, timeout=1, settle=0)
            assert skipped == []
        after, _ = fetch(broker, topic, 0, resume, len(acked0) - resume, settle=0.3)
        assert after == [r for r in acked0 if r[0] >= resume]
        # librdkafka retries a KAFKA_STORAGE_ERROR quietly (it refreshes metadata and
        # backs off); if it ever reports one, that is the only error it may report.
        assert set(errors + more_errors) <= {KafkaError.KAFKA_STORAGE_ERROR}
        return errors + more_errors

    # While the broker runs: never served, logged with the file and byte, other
    # partitions (on both shards) and producing unaffected.
    log_from = len(broker.log())
    errors = check_reads(acked[0])
    log = broker.log()[log_from:]
    assert log_lines(log, "fetch read failed", refused)
    for p in (1, 2):
        got, errs = fetch(broker, topic, p, 0, len(acked[p]), settle=0.3)
        assert errs == [] and got == acked[p]
    more = produce(broker, topic, {0: [record(b"more", 0, i) for i in range(10)]})
    assert [r[0] for r in more[0]] == list(range(500, 510))
    acked0 = acked[0] + more[0]
    print(f"\n{report}\nrunning: consumer got offsets 0-{corrupt - 1}, client errors "
          f"{sorted(set(errors))}, broker logged {len(log_lines(log, 'fetch read failed'))} "
          f"refused reads")

    # kill -9 and restart: the sealed segment's index still matches its length, so it is
    # trusted as it is (its CRCs are not checked at start) and reads refuse the batch again.
    log, ready_s = restart(broker)
    assert not log_lines(log, f"segment={base_of(victim)} ")
    log_from = len(broker.log())
    check_reads(acked0)
    assert log_lines(broker.log()[log_from:], "fetch read failed", refused)
    print(f"after kill -9: ready in {ready_s:.2f} s, same reads, batch still refused")

    # kill -9, the corrupt segment's index deleted, restart: recovery scans the segment,
    # cuts it at the corrupt batch and removes every later segment: the log ends there.
    broker.kill9()
    victim.with_suffix(".index").unlink()
    later = [s for s in segments(victim.parent) if base_of(s) > base_of(victim)]
    log, ready_s = restart(broker)
    (cut,) = log_lines(log, "truncating the segment there", f"segment={base_of(victim)} ")
    assert "CRC mismatch" in cut and int(field(cut, "valid_bytes")) == batch.position
    assert log_lines(log, "corruption inside a sealed segment; removing every later segment")
    assert victim.stat().st_size == batch.position
    assert not any(s.exists() for s in later)
    got, errors = fetch(broker, topic, 0, 0, corrupt, settle=0.5)
    assert errors == [] and got == [r for r in acked0 if r[0] < corrupt]
    consumer = Consumer(consumer_config(broker))
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, corrupt)
    finally:
        consumer.close()
    # Producing goes on from the cut: the offsets of the lost records are given again.
    again = produce(broker, topic, {0: [record(b"again", 0, i) for i in range(5)]})
    assert [r[0] for r in again[0]] == list(range(corrupt, corrupt + 5))
    for p in (1, 2):
        got, errs = fetch(broker, topic, p, 0, len(acked[p]), settle=0.3)
        assert errs == [] and got == acked[p]
    lost = len(acked0) - corrupt
    print(f"index deleted, kill -9: ready in {ready_s:.2f} s; log cut at offset {corrupt}, "
          f"{len(later)} later segments removed, {lost} acknowledged records lost")


# --- missing, truncated, garbled and stale index files --------------------------------------

def probe_offsets(directory, last):
    """Offsets worth looking up: each segment's base and each index entry's offset, with
    their neighbours, and the first and last offsets."""
    offsets = {0, last}
    for segment in segments(directory):
        base = base_of(segment)
        entries = [base]
        if segment.with_suffix(".index").exists():
            entries += [base + relative for relative, _ in read_index(segment.with_suffix(".index"))]
        offsets |= {o + d for o in entries for d in (-1, 0, 1)}
    return sorted(o for o in offsets if 0 <= o <= last)


def lookups(broker, topic, offsets, timestamps):
    """Offset lookups as clients do them, for each of `offsets`: a consumer assigned at the
    offset gets that record first; offsets_for_times for the record's timestamp, one ms less
    and one ms more answers the first offset whose timestamp is at or after it.
    Returns {probe: answer}."""
    # A short long-poll: a re-assignment or a ListOffsets otherwise waits out the fetch
    # the consumer has parked at the high watermark.
    consumer = Consumer(consumer_config(broker, **{"fetch.wait.max.ms": 10}))
    answers = {}
    try:
        for offset in offsets:
            consumer.assign([TopicPartition(topic, 0, offset)])
            deadline = time.time() + 10
            m = None
            while m is None and time.time() < deadline:
                m = consumer.poll(0.1)
            assert m is not None and m.error() is None, (offset, m and m.error())
            answers[("offset", offset)] = (m.offset(), m.key(), m.value())
        for t in sorted({timestamps[o] + d for o in offsets for d in (-1, 0, 1)}):
            # One partition appears once per ListOffsets request: one probe at a time.
            (tp,) = consumer.offsets_for_times([TopicPartition(topic, 0, t)], timeout=10)
            assert tp.error is None
            answers[("time", t)] = tp.offset
    finally:
        consumer.close()
    return answers


def expected_lookups(records, timestamps, answers):
    """What `lookups` must answer, from what was acknowledged."""
    expected = {}
    by_offset = {r[0]: r for r in records}
    for kind, probe in answers:
        if kind == "offset":
            r = by_offset[probe]
            expected[(kind, probe)] = (r[0], r[1], r[2])
        else:
            later = [r[0] for r, ts in zip(records, timestamps) if ts >= probe]
            expected[(kind, probe)] = later[0] if later else -1
    return expected


def test_missing_truncated_garbled_or_stale_index_is_rebuilt(broker, topic):
    broker.kill9()
    broker.extra = ["--partition-cache-bytes", str(CACHE_BYTES)]
    broker.start()
    create(broker, topic, 1, {"segment.bytes": str(SMALL_SEGMENT)})
    t0 = int(time.time() * 1000) - 3_600_000
    records = [record(b"i", 0, i) for i in range(560)]
    # Distinct, increasing timestamps 10 ms apart.
    timestamps = [t0 + 10 * i for i in range(len(records))]
    acked = produce(broker, topic, {0: records[:150]}, {0: timestamps[:150]})[0]
    directory = partition_dir(broker, topic, 0)

    # A clean stop writes the index of the active segment; that segment then grows and is
    # sealed with a new index. Its first index, kept here, is the stale one.
    assert broker.terminate() == 0
    active = segments(directory)[-1]
    stale = {ext: active.with_suffix(ext).read_bytes() for ext in (".index", ".timeindex")}
    broker.start()
    acked += produce(broker, topic, {0: records[150:]}, {0: timestamps[150:]})[0]
    assert [r[0] for r in acked] == list(range(len(records)))
    offsets = probe_offsets(directory, len(records) - 1)
    before = lookups(broker, topic, offsets, timestamps)
    assert before == expected_lookups(acked, timestamps, before)
    broker.kill9()

    logs = segments(directory)
    sealed = logs[:-1]
    assert len(sealed) >= 6 and active in sealed
    original = {s: {ext: s.with_suffix(ext).read_bytes() for ext in (".index", ".timeindex")} for s in sealed}
    others = [s for s in sealed if s != active]
    faults = {
        others[0]: "missing .index",
        others[1]: "missing .timeindex",
        others[2]: "truncated .index",
        others[3]: "garbled .timeindex",
        active: "stale index files",
    }
    for segment, fault in faults.items():
        index, timeindex = segment.with_suffix(".index"), segment.with_suffix(".timeindex")
        if fault == "missing .index":
            index.unlink()
        elif fault == "missing .timeindex":
            timeindex.unlink()
        elif fault == "truncated .index":
            index.write_bytes(original[segment][".index"][:20])
        elif fault == "garbled .timeindex":
            data = bytearray(original[segment][".timeindex"])
            data[5] ^= 0x40
            timeindex.write_bytes(bytes(data))
        else:
            for ext, data in stale.items():
                segment.with_suffix(ext).write_bytes(data)
            assert stale[".index"] != original[segment][".index"]

    log, ready_s = restart(broker)

    # Each bad index is detected and logged, and rebuilt from a scan identical to the one
    # written when the segment was sealed; nothing is cut, the other segments are trusted.
    for segment in sealed:
        lines = log_lines(log, f"dir={directory} ", f"segment={base_of(segment)} ")
        if segment in faults:
            assert len(lines) == 1 and "missing, corrupt or stale; scanning" in lines[0], (faults[segment], lines)
        else:
            assert lines == []
        for ext in (".index", ".timeindex"):
            assert segment.with_suffix(ext).read_bytes() == original[segment][ext], (faults.get(segment), ext)
    assert not log_lines(log, "corruption inside a sealed segment")
    assert segments(directory) == logs

    # Everything reads back, and lookups by offset and by time answer as before.
    got, errors = fetch(broker, topic, 0, 0, len(acked), settle=0.3)
    assert errors == [] and got == acked
    after = lookups(broker, topic, offsets, timestamps)
    assert after == before
    print(f"\nindex faults {sorted(faults.values())} in {len(logs)} segments: rebuilt "
          f"byte-identical; {len(offsets)} seeks and {len(before) - len(offsets)} "
          f"offsets_for_times answered as before; ready {ready_s:.2f} s")
