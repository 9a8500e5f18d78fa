"""kcat 1.7.1 (Debian's, on librdkafka 2.0.2: the oldest client still in wide use)."""

import json
import subprocess


def kcat(*args, stdin=None, timeout=60):
    result = subprocess.run(
        ["kcat", *args], input=stdin, capture_output=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def test_metadata_lists_one_broker_per_shard_and_leaders(broker, topic):
    # Auto-created by a produce, with two partitions.
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-p", "0", stdin=b"warm-up\n")
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J"))
    assert sorted((b["id"], b["name"]) for b in md["brokers"]) == [
        (0, f"127.0.0.1:{broker.port}"),
        (1, f"127.0.0.1:{broker.port + 1}"),
    ]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics
    for p in topics[topic]["partitions"]:
        assert p["leader"] in (0, 1)


def test_keyed_messages_with_headers_round_trip(broker, topic):
    lines = [f"key-{i}:value {i} with spaces and \u00e9" for i in range(50)]
    payload = ("\n".join(lines) + "\n").encode()
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-H", "source=kcat", "-H", "n=1",
         "-z", "snappy", stdin=payload)
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
               "-f", "%p|%o|%k|%s|%h\n")
    got = out.decode().splitlines()
    assert len(got) == 50
    seen = []
    for line in got:
        partition, offset, key, value, headers = line.split("|")
        assert headers == "source=kcat,n=1"
        seen.append((key, value))
    assert sorted(seen) == sorted(tuple(l.split(":", 1)) for l in lines)


def test_consume_from_offset_and_end_of_partition(broker, topic):
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-p", "0",
         stdin=b"".join(f"m{i}\n".encode() for i in range(20)))
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "15", "-e", "-f", "%o:%s\n")
    assert out.decode().splitlines() == [f"{i}:m{i}" for i in range(15, 20)]
    # -o -3: the last three.
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "-3", "-e", "-f", "%s\n")
    assert out.decode().splitlines() == ["m17", "m18", "m19"]
