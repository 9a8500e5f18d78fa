"""kcat 1.7.1 (Debian's, on librdkafka 2.0.2: the oldest client still in wide use)."""

import json
import random
import subprocess

import pytest
from confluent_kafka import OFFSET_BEGINNING

from helpers import consume, create_topic

# Record and key delimiters for binary produce: kcat splits stdin on -D, then each record on
# the first -K. Generated keys and values never contain either byte.
REC = 0x1E
KEY = 0x1F
# The consume format: fixed fields, then exactly %K key bytes and %S value bytes.
FORMAT = "%p|%o|%K|%S|%h|%k%s\n"


def kcat(*args, stdin=None, timeout=60):
    result = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"kcat {args}: {result.stderr.decode(errors='replace')}"
    return result.stdout


def parse(out):
    """Parses FORMAT output byte-exactly: [(partition, offset, key, value, headers)]."""
    records = []
    pos = 0
    while pos < len(out):
        fields = []
        for _ in range(5):
            end = out.index(b"|", pos)
            fields.append(out[pos:end])
            pos = end + 1
        partition, offset, klen, vlen = (int(f) for f in fields[:4])
        key = None if klen < 0 else out[pos:pos + klen]
        pos += max(klen, 0)
        value = None if vlen < 0 else out[pos:pos + vlen]
        pos += max(vlen, 0)
        assert out[pos:pos + 1] == b"\n", f"bad kcat output at byte {pos}: {out[pos - 20:pos + 20]!r}"
        pos += 1
        records.append((partition, offset, key, value, fields[4].decode()))
    return records


def test_metadata_lists_one_broker_per_shard_and_leaders_on_both(broker, topic):
    leaders = create_topic(broker, topic, 4)
    for port in broker.ports:  # every shard answers with the same cluster view
        md = json.loads(kcat("-b", f"127.0.0.1:{port}", "-L", "-J"))
        assert sorted((b["id"], b["name"]) for b in md["brokers"]) == [
            (0, f"127.0.0.1:{broker.port}"),
            (1, f"127.0.0.1:{broker.port + 1}"),
        ]
        topics = {t["topic"]: t for t in md["topics"]}
        assert topic in topics, topics
        got = {p["partition"]: p["leader"] for p in topics[topic]["partitions"]}
        assert got == leaders
        assert set(got.values()) == {0, 1}, got
        for p in topics[topic]["partitions"]:
            assert [r["id"] for r in p["replicas"]] == [p["leader"]]

    text = kcat("-b", broker.bootstrap, "-L", "-t", topic).decode()
    assert " 2 brokers:" in text, text
    assert f"broker 0 at 127.0.0.1:{broker.port}" in text, text
    assert f"broker 1 at 127.0.0.1:{broker.port + 1}" in text, text
    assert f'topic "{topic}" with 4 partitions:' in text, text


def test_produce_auto_creates_topic(broker, topic):
    kcat("-b", broker.bootstrap, "-P", "-t", topic, stdin=b"first\nsecond\n")
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-t", topic))
    [t] = md["topics"]
    assert t["topic"] == topic and "error" not in t, t
    assert len(t["partitions"]) >= 1
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", FORMAT)
    assert sorted(v for _, _, _, v, _ in parse(out)) == [b"first", b"second"]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_keyed_binary_messages_with_headers_round_trip(broker, topic, codec):
    create_topic(broker, topic, 4)
    rng = random.Random(codec)
    alphabet = [b for b in range(256) if b not in (REC, KEY)]
    sent = []
    for i in range(200):
        key = b"" if i % 10 == 5 else f"key-{i % 13}".encode()  # kcat sends "" as an empty key
        if i % 50 == 0:
            value = b""
        elif i % 50 == 1:
            value = bytes(rng.choice(alphabet) for _ in range(100_000))
        else:
            value = b"v%d\n\x00\xff" % i + bytes(rng.choice(alphabet) for _ in range(rng.randrange(64)))
        sent.append((key, value))
    stdin = b"".join(k + bytes([KEY]) + v + bytes([REC]) for k, v in sent)
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K", "\\x1f", "-D", "\\x1e",
         "-H", "source=kcat", "-H", "n=1", "-X", f"compression.codec={codec}", stdin=stdin)

    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", FORMAT)
    got = parse(out)
    assert len(got) == len(sent)
    by_partition = {}
    for partition, offset, key, value, headers in got:
        assert headers == "source=kcat,n=1"
        by_partition.setdefault(partition, []).append((offset, key, value))
    # Every sent message exactly once.
    assert sorted((k, v) for msgs in by_partition.values() for _, k, v in msgs) == sorted(sent)
    key_partition = {}
    for partition, msgs in by_partition.items():
        # Dense offsets from 0, in send order within the partition.
        assert [o for o, _, _ in msgs] == list(range(len(msgs)))
        kv = [(k, v) for _, k, v in msgs]
        assert kv == [m for m in sent if m in kv], f"partition {partition} out of order"
        for _, k, _ in msgs:
            if k:
                assert key_partition.setdefault(k, partition) == partition, f"key {k} in two partitions"
    assert len(by_partition) >= 2, by_partition.keys()

    # The same bytes through another client, headers included.
    theirs = consume(broker, topic, 4, OFFSET_BEGINNING, len(sent))
    assert {
        p: [(o, k, v) for o, k, v, _ in msgs] for p, msgs in theirs.items()
    } == {p: [(o, k, v) for o, k, v in msgs] for p, msgs in by_partition.items()}
    for msgs in theirs.values():
        for *_, headers in msgs:
            assert headers == [("source", b"kcat"), ("n", b"1")]


def test_line_mode_keyed_round_trip(broker, topic):
    lines = [f"key-{i % 7}:value {i} with spaces and \u00e9" for i in range(50)]
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-H", "source=kcat",
         stdin=("\n".join(lines) + "\n").encode())
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-K:", "-f", "%k:%s\n")
    assert sorted(out.decode().splitlines()) == sorted(lines)


def test_consume_from_offset_and_from_the_end(broker, topic):
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-p", "0",
         stdin=b"".join(f"m{i}\n".encode() for i in range(20)))
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "15", "-e", "-f", "%o:%s\n")
    assert out.decode().splitlines() == [f"{i}:m{i}" for i in range(15, 20)]
    # -o -3: the last three.
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "-3", "-e", "-f", "%o:%s\n")
    assert out.decode().splitlines() == ["17:m17", "18:m18", "19:m19"]
    # -o end: nothing yet.
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "end", "-e", "-f", "%o:%s\n")
    assert out == b""
