"""`strand topic …`, `strand cluster …`, `strand group …`, `strand produce` and `strand
consume` against a running broker: what they print (as JSON, checked against confluent-kafka's
view of the same broker), what they write and read (checked against what confluent-kafka
reads and writes), their exit codes and their one-line errors. The cluster cases (`cluster
health` with nodes down, produce and consume across a leader change) are in
test_cluster.py."""

import datetime
import json
import os
import pty
import subprocess
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import STRAND_BIN


def strand(*args, check=True, timeout=30):
    """Runs `strand ARGS…`; returns (exit code, stdout, stderr)."""
    result = subprocess.run([STRAND_BIN, *args], capture_output=True, timeout=timeout, text=True)
    if check:
        assert result.returncode == 0, f"strand {args}: {result.returncode}\n{result.stderr}"
    return result.returncode, result.stdout, result.stderr


def as_json(*args):
    return json.loads(strand(*args, "--format", "json")[1])


def test_topic_commands(broker, topic):
    b = ["-b", broker.bootstrap]
    out = strand("topic", "create", topic, *b, "-p", "3", "-c", "retention.ms=3600000",
                 "--config", "cleanup.policy=delete")[1]
    assert f"created {topic}: 3 partitions, replication factor 1" in out

    listed = {t["name"]: t for t in as_json("topic", "list", *b)}
    assert listed[topic]["partitions"] == 3 and listed[topic]["replication_factor"] == 1

    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        producer.produce(topic, value=f"v{i}".encode(), partition=1)
    assert producer.flush(30) == 0

    described = as_json("topic", "describe", topic, *b)
    assert described["name"] == topic
    assert described["configs"] == {"retention.ms": "3600000", "cleanup.policy": "delete"}
    parts = {p["partition"]: p for p in described["partitions"]}
    assert sorted(parts) == [0, 1, 2]
    assert (parts[1]["log_start_offset"], parts[1]["log_end_offset"]) == (0, 5)
    assert parts[0]["log_end_offset"] == 0
    assert parts[1]["size_bytes"] > 0 and parts[0]["size_bytes"] == 0
    # The same leaders, replicas and ISR as confluent-kafka sees.
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    for p in md.topics[topic].partitions.values():
        assert parts[p.id]["leader"] == p.leader
        assert parts[p.id]["replicas"] == list(p.replicas)
        assert parts[p.id]["isr"] == list(p.isrs)
    table = strand("topic", "describe", topic, *b)[1]
    assert "Configs: cleanup.policy=delete, retention.ms=3600000" in table
    assert table.splitlines()[2].split()[:3] == ["PARTITION", "LEADER", "EPOCH"]

    # Errors: Kafka's name, the broker's message, a hint, exit 1.
    code, _, err = strand("topic", "create", topic, *b, "-p", "1", check=False)
    assert code == 1 and "TOPIC_ALREADY_EXISTS (36)" in err and "delete it first" in err, err
    code, _, err = strand("topic", "create", "bad", *b, "-c", "retention.ms", check=False)
    assert code == 1 and "expected NAME=VALUE" in err, err
    code, _, err = strand("topic", "create", topic + "-x", *b, "-c", "retention.ms=x", check=False)
    assert code == 1 and "INVALID_CONFIG (40)" in err, err
    code, _, err = strand("topic", "describe", topic + "-missing", *b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION (3)" in err, err
    assert "strand topic list shows the topics" in err, err
    assert len(err.strip().splitlines()) == 1

    assert strand("topic", "delete", topic, *b)[1].strip() == f"deleted {topic}"
    assert topic not in {t["name"] for t in as_json("topic", "list", *b)}
    code, _, err = strand("topic", "delete", topic, *b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err, err
    assert "strand topic list shows the topics" in err and len(err.splitlines()) == 1, err


def test_cluster_info_and_health_of_a_single_node(broker, topic):
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "4")
    info = as_json("cluster", "info", *b)
    assert [x["id"] for x in info["brokers"]] == list(range(broker.shards))
    assert info["controller"] >= 0 and info["cluster_id"]
    assert info["topics"] >= 1 and info["partitions"] >= 4
    health = as_json("cluster", "health", *b)
    assert health["healthy"] is True and health["problems"] == []
    code, out, _ = strand("cluster", "health", *b)
    assert code == 0 and out.startswith("healthy:")


def test_no_broker_is_one_line_and_exit_1(tmp_path):
    from conftest import free_base_port
    port = free_base_port(1)
    code, out, err = strand("topic", "list", "-b", f"127.0.0.1:{port}", "--timeout-ms", "2000",
                            check=False)
    assert code == 1 and out == ""
    assert f"cannot connect to 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    # STRAND_BROKERS stands for -b.
    result = subprocess.run([STRAND_BIN, "cluster", "info"], capture_output=True, text=True,
                            timeout=30, env={"STRAND_BROKERS": f"127.0.0.1:{port}"})
    assert result.returncode == 1 and f"127.0.0.1:{port}" in result.stderr
    # A probe tells no answer (2) from an unhealthy cluster (1).
    code, _, err = strand("cluster", "health", "-b", f"127.0.0.1:{port}", "--timeout-ms", "2000",
                          check=False)
    assert code == 2 and f"127.0.0.1:{port}" in err


def test_alter_config_and_add_partitions(broker, topic):
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "2", "-c", "retention.ms=3600000")
    out = strand("topic", "alter-config", topic, *b, "--set", "segment.bytes=1048576",
                 "-s", "cleanup.policy=compact", "--delete", "retention.ms")[1]
    assert out.strip() == f"altered {topic}: 2 set, 1 removed"
    described = as_json("topic", "describe", topic, *b)
    assert described["configs"] == {"segment.bytes": "1048576", "cleanup.policy": "compact"}
    code, _, err = strand("topic", "alter-config", topic, *b, "-s", "segment.bytes=x", check=False)
    assert code == 1 and "INVALID_CONFIG (40)" in err, err
    code, _, err = strand("topic", "alter-config", topic, *b, check=False)
    assert code == 1 and "nothing to change" in err, err

    assert strand("topic", "add-partitions", topic, *b, "--total", "5")[1].strip() == \
        f"{topic} now has 5 partitions"
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 5
    code, _, err = strand("topic", "add-partitions", topic, *b, "--total", "3", check=False)
    assert code == 1 and "INVALID_PARTITIONS (37)" in err and "--total" in err, err


def committed(broker, group, topic, partitions):
    """The group's committed offsets as confluent-kafka reads them (None: no offset)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        c.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in got}


def reset(broker, group, *args, check=True):
    return strand("group", "reset-offsets", group, "-b", broker.bootstrap, *args, check=check)


def test_group_describe_reset_offsets_and_delete(broker, topic):
    b = ["-b", broker.bootstrap]
    group = "g-" + uuid.uuid4().hex[:8]
    strand("topic", "create", topic, *b, "-p", "3")
    # p0: 10 records, p1: 5, p2: none; record i at base + i seconds.
    base = (int(time.time()) - 600) * 1000
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for p, n in [(0, 10), (1, 5)]:
        for i in range(n):
            producer.produce(topic, value=f"{p}:{i}".encode(), partition=p,
                             timestamp=base + i * 1000)
    assert producer.flush(30) == 0

    # A live member owning all three partitions, having committed 4 on p0 and 5 on p1.
    member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                       "client.id": "lag-checker", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest"})
    member.subscribe([topic])
    deadline = time.time() + 30
    while len(member.assignment()) < 3:
        assert time.time() < deadline, "no assignment"
        member.poll(0.2)
    member.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 5)],
                  asynchronous=False)
    try:
        [described] = as_json("group", "describe", group, *b)
        assert described["state"] == "Stable" and described["protocol_type"] == "consumer"
        [m] = described["members"]
        assert m["client_id"] == "lag-checker"
        assert sorted(a["partition"] for a in m["assignment"]) == [0, 1, 2]
        parts = {p["partition"]: p for p in described["partitions"]}
        assert {p: (x["committed_offset"], x["log_end_offset"], x["lag"])
                for p, x in parts.items()} == {0: (4, 10, 6), 1: (5, 5, 0), 2: (None, 0, None)}
        assert all(x["member_id"] == m["member_id"] for x in parts.values())
        assert described["total_lag"] == 6
        table = strand("group", "describe", group, *b)[1].splitlines()
        assert table[0] == f"Group: {group}  State: Stable  Members: 1  Total lag: 6"
        assert table[1].split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET",
                                    "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]
        assert table[2].split()[1:6] == [topic, "0", "4", "10", "6"]

        listed = {g["group"]: g for g in as_json("group", "list", *b)}
        assert listed[group]["state"] == "Stable"
        assert listed[group]["protocol_type"] == "consumer"

        # While the member is there: no reset (not even a plan) and no delete, as Kafka.
        code, out, err = reset(broker, group, "--topic", topic, "--to-earliest", "--execute",
                               check=False)
        assert code == 1 and out == "" and "is Stable" in err and "inactive" in err, err
        code, _, err = strand("group", "delete", group, *b, check=False)
        assert code == 1 and "NON_EMPTY_GROUP (68)" in err and "stop its consumers" in err, err
        assert len(err.strip().splitlines()) == 1
        assert committed(broker, group, topic, [0, 1]) == {0: 4, 1: 5}
    finally:
        member.close()

    [described] = as_json("group", "describe", group, *b)
    assert described["state"] == "Empty" and described["members"] == []
    assert described["total_lag"] == 6

    # A dry run (the default) prints the plan and commits nothing.
    out = reset(broker, group, "--topic", topic, "--to-earliest")[1]
    assert "dry run" in out
    plan = json.loads(reset(broker, group, "--topic", topic, "--to-earliest",
                            "--format", "json", "--dry-run")[1])
    assert plan["executed"] is False
    assert [(p["partition"], p["current_offset"], p["new_offset"]) for p in plan["partitions"]] \
        == [(0, 4, 0), (1, 5, 0), (2, None, 0)]
    assert committed(broker, group, topic, [0, 1, 2]) == {0: 4, 1: 5, 2: None}

    # --execute commits; offsets stay within [log start, log end] as Kafka keeps them.
    reset(broker, group, "--topic", f"{topic}:0,1", "--to-offset", "3", "--execute")
    assert committed(broker, group, topic, [0, 1, 2]) == {0: 3, 1: 3, 2: None}
    reset(broker, group, "--topic", f"{topic}:0", "--shift-by", "100", "--execute")
    reset(broker, group, "--topic", f"{topic}:1", "--shift-by", "-100", "--execute")
    assert committed(broker, group, topic, [0, 1]) == {0: 10, 1: 0}
    # The first record at or after base + 4.5 s: offset 5 on p0; none on p1 and p2, so
    # their log end.
    at = datetime.datetime.fromtimestamp((base + 4500) / 1000, datetime.timezone.utc)
    out = reset(broker, group, "--topic", topic, "--execute",
                "--to-datetime", at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")[1]
    assert "committed 3 offset(s)" in out
    assert committed(broker, group, topic, [0, 1, 2]) == {0: 5, 1: 5, 2: 0}
    # The same instant written with a +02:00 offset.
    reset(broker, group, "--topic", f"{topic}:0", "--shift-by", "-5", "--execute")
    local = at.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    reset(broker, group, "--topic", f"{topic}:0", "--execute",
          "--to-datetime", local.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+02:00")
    assert committed(broker, group, topic, [0]) == {0: 5}
    # --all-topics: every partition with a committed offset.
    reset(broker, group, "--all-topics", "--to-earliest", "--execute")
    assert committed(broker, group, topic, [0, 1, 2]) == {0: 0, 1: 0, 2: 0}
    [described] = as_json("group", "describe", group, *b)
    assert described["total_lag"] == 15

    code, _, err = reset(broker, group, "--topic", f"{topic}:7", "--to-latest", check=False)
    assert code == 1 and f"topic {topic} has no partition 7" in err, err
    code, _, err = reset(broker, group, "--topic", topic, "--to-datetime", "yesterday",
                         check=False)
    assert code == 1 and "expected YYYY-MM-DDTHH:MM:SS" in err, err
    code, _, err = reset(broker, group, "--topic", topic, "--to-latest", "--to-earliest",
                         check=False)
    assert code == 2, err
    code, _, err = reset(broker, group, "--to-latest", check=False)
    assert code == 2, err

    # Delete: one line per group that cannot go, exit 1 if any; the others are deleted.
    missing = group + "-missing"
    code, out, err = strand("group", "delete", group, missing, *b, check=False)
    assert code == 1 and out.strip() == f"deleted group {group}", out
    assert err.strip() == (f"strand: cannot delete group {missing}: GROUP_ID_NOT_FOUND (69) "
                           "(strand group list shows the groups)")
    assert group not in {g["group"] for g in as_json("group", "list", *b)}
    assert committed(broker, group, topic, [0, 1, 2]) == {0: None, 1: None, 2: None}
    code, out, err = strand("group", "describe", group, *b, check=False)
    assert code == 1 and out == "" and f"group {group} does not exist" in err, err


def test_group_describe_shows_members_without_partitions(broker, topic):
    b = ["-b", broker.bootstrap]
    group = "g-" + uuid.uuid4().hex[:8]
    strand("topic", "create", topic, *b, "-p", "1")
    members = [Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "client.id": f"member-{i}"}) for i in range(2)]
    try:
        for m in members:
            m.subscribe([topic])
        deadline = time.time() + 30
        while sorted(len(m.assignment()) for m in members) != [0, 1] or \
                as_json("group", "describe", group, *b)[0]["state"] != "Stable":
            assert time.time() < deadline, "no assignment"
            for m in members:
                m.poll(0.2)
        [described] = as_json("group", "describe", group, *b)
        by_client = {m["client_id"]: m for m in described["members"]}
        owner = "member-0" if members[0].assignment() else "member-1"
        idle = "member-1" if owner == "member-0" else "member-0"
        assert by_client[owner]["assignment"] == [{"topic": topic, "partition": 0}]
        assert by_client[idle]["assignment"] == []
        [p] = described["partitions"]
        assert p["member_id"] == by_client[owner]["member_id"] and p["committed_offset"] is None
        rows = [line.split() for line in strand("group", "describe", group, *b)[1].splitlines()]
        assert [group, "-", "-", "-", "-", "-", by_client[idle]["member_id"]] == rows[-1][:7]
    finally:
        for m in members:
            m.close()


# ---------------------------------------------------------------------------------------
# strand produce / strand consume

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def produce(broker, topic, lines, *args, check=True):
    """Runs `strand produce TOPIC ARGS…` with `lines` on stdin."""
    result = subprocess.run([STRAND_BIN, "produce", topic, "-b", broker.bootstrap, *args],
                            input="".join(line + "\n" for line in lines), capture_output=True,
                            text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"produce {args}: {result.returncode}\n{result.stderr}"
    return result.returncode, result.stdout, result.stderr


def read_all(broker, topic, partitions, expected):
    """The first `expected` records of `topic` as confluent-kafka reads them."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "reader-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.time() + 30
    try:
        while len(got) < expected and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append(m)
        time.sleep(0.5)
        assert c.poll(0.5) is None, "more records than expected"
    finally:
        c.close()
    assert len(got) == expected, f"{len(got)} of {expected} records"
    return got


def java_partitions(broker, keys, partitions):
    """The partition of each key as the Java client's partitioner picks it (librdkafka's
    murmur2_random is the same murmur2 on keyed records)."""
    topic = "ref-" + uuid.uuid4().hex[:8]
    strand("topic", "create", topic, "-b", broker.bootstrap, "-p", str(partitions))
    placed = {}
    p = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    for key in keys:
        p.produce(topic, key=key, value=b"",
                  on_delivery=lambda err, m: placed.__setitem__(m.key(), m.partition()))
    assert p.flush(30) == 0
    return placed


def test_produce_keys_headers_and_every_codec(broker, topic):
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "6")
    sent = {}
    for codec in CODECS:
        lines = [f"k{i}-{codec}:{codec} value {i}:with a colon" for i in range(40)]
        lines.append(f":empty key {codec}")
        code, out, err = produce(broker, topic, lines, "--key-separator", ":", "-z", codec,
                                 "--header", f"codec={codec}", "-H", "h2=a=b", "--format", "json")
        summary = json.loads(out)
        assert summary["topic"] == topic and summary["records"] == 41, out
        assert sum(summary["partitions"].values()) == 41
        for line in lines:
            key, value = line.split(":", 1)
            sent[value.encode()] = (key.encode(), [("codec", codec.encode()), ("h2", b"a=b")])
    got = read_all(broker, topic, 6, len(sent))
    placed = java_partitions(broker, [k for k, _ in sent.values()], 6)
    assert len(set(placed.values())) > 1, "keys spread over partitions"
    for m in got:
        key, headers = sent[m.value()]
        assert m.key() == key and m.headers() == headers, (m.key(), m.value(), m.headers())
        assert m.partition() == placed[key], (key, m.partition(), placed[key])
    assert sorted(m.value() for m in got) == sorted(sent)

    # The table format: a count on stderr, nothing on stdout.
    code, out, err = produce(broker, topic, ["x"], "-p", "4")
    assert out == "" and err.strip() == f"1 record(s) written to {topic}", err
    _, _, err = produce(broker, topic, ["y"], "-p", "4", "-q")
    assert err == ""


def test_produce_without_keys_partitions_and_acks(broker, topic):
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "3")
    # Without a key: a batch (here all of them) goes to one partition.
    produce(broker, topic, [f"a{i}" for i in range(20)])
    produce(broker, topic, [f"b{i}" for i in range(20)], "--partition", "2", "--acks", "1")
    produce(broker, topic, [f"c{i}" for i in range(20)], "-p", "1", "--acks", "0")
    produce(broker, topic, ["", "empty line before"], "-p", "0")
    got = read_all(broker, topic, 3, 62)
    where = {}
    for m in got:
        assert m.key() is None and m.headers() is None
        where.setdefault(m.value()[:1], set()).add(m.partition())
    assert len(where[b"a"]) == 1
    assert where[b"b"] == {2} and where[b"c"] == {1}
    assert [m.value() for m in got if m.partition() == 0][-2:] == [b"", b"empty line before"]
    # Order within a partition is the order of the lines.
    assert [m.value() for m in got if m.value().startswith(b"b")] == \
        [f"b{i}".encode() for i in range(20)]
    # More lines than one Produce takes: several batches, every line there once.
    n = 2500
    _, out, _ = produce(broker, topic, [f"{i}:{'x' * 500}" for i in range(n)], "-K", ":",
                        "--format", "json")
    assert json.loads(out)["records"] == n
    got = read_all(broker, topic, 3, 62 + n)
    assert sorted(int(m.key()) for m in got if m.key() is not None) == list(range(n))


def test_consume_prints_what_confluent_kafka_wrote(broker, topic):
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "3")
    expected = []
    base = (int(time.time()) - 60) * 1000
    for n, codec in enumerate(["none", "gzip", "snappy", "lz4", "zstd"]):
        p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec,
                      "linger.ms": 50})
        for i in range(10):
            key = None if i == 3 else f"k{n}-{i}".encode()
            headers = [("n", str(n).encode()), ("i", str(i).encode())] if i % 2 else None
            p.produce(topic, key=key, value=f"{codec} {i}".encode(), partition=i % 3,
                      headers=headers, timestamp=base + n * 100 + i)
        assert p.flush(30) == 0
    for m in read_all(broker, topic, 3, 50):
        hs = ",".join(f"{k}={v.decode()}" for k, v in (m.headers() or []))
        expected.append(f"{m.partition()}|{m.offset()}|{(m.key() or b'').decode()}|"
                        f"{m.value().decode()}|{m.timestamp()[1]}|{hs}|{topic}")

    code, out, err = strand("consume", topic, *b, "--from-beginning", "--count", "50",
                            "--format", "%p|%o|%k|%v|%T|%h|%t\\n")
    assert sorted(out.splitlines()) == sorted(expected)
    assert err.strip() == "consumed 50 record(s)"
    # One partition from an offset, tab-separated; %% and the default format.
    out = strand("consume", topic, *b, "-p", "1", "-o", "5", "-c", "3", "-q",
                 "-f", "%o\\t%v%%\\n")[1]
    assert out.splitlines() == [f"{x.split('|')[1]}\t{x.split('|')[3]}%" for x in
                                sorted(expected, key=lambda x: int(x.split("|")[1]))
                                if x.startswith("1|")][5:8]
    out = strand("consume", topic, *b, "-p", "2", "--offset", "earliest", "-c", "1")[1]
    assert out == [x.split("|")[3] for x in expected if x.startswith("2|0|")][0] + "\n"
    # --timeout-ms: exits once nothing came for that long, with what there was.
    start = time.time()
    out = strand("consume", topic, *b, "--from-beginning", "--timeout-ms", "1500", "-q")[1]
    assert len(out.splitlines()) == 50 and time.time() - start < 15
    # Without --from-beginning: only what comes after the start.
    proc = subprocess.Popen([STRAND_BIN, "consume", topic, *b, "-c", "2", "-f", "%k=%v\\n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    produce(broker, topic, ["late:1", "later:2"], "-K", ":", "-p", "0")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.splitlines() == ["late=1", "later=2"]


def test_consume_read_committed(broker, topic):
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "1")
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-" + topic})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"committed")
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, value=b"aborted")
    assert p.flush(30) == 0  # written, then aborted (not dropped before sending)
    p.abort_transaction(30)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(topic, value=b"plain")
    assert plain.flush(30) == 0
    args = ["consume", topic, *b, "--from-beginning", "--timeout-ms", "1500", "-q"]
    assert strand(*args, "--isolation-level", "read_committed")[1].split() == \
        ["committed", "plain"]
    # read_uncommitted (the default, as kafka-console-consumer): all but the markers.
    assert strand(*args)[1].split() == ["committed", "aborted", "plain"]


def test_consume_group_commits(broker, topic):
    b = ["-b", broker.bootstrap]
    group = "g-" + uuid.uuid4().hex[:8]
    strand("topic", "create", topic, *b, "-p", "2")
    produce(broker, topic, [f"a{i}" for i in range(6)], "-p", "0")
    produce(broker, topic, [f"b{i}" for i in range(4)], "-p", "1")
    args = ["consume", topic, *b, "--group", group, "-q"]
    out = strand(*args, "--from-beginning", "--timeout-ms", "1500")[1]
    assert sorted(out.split()) == sorted([f"a{i}" for i in range(6)] + [f"b{i}" for i in range(4)])
    assert committed(broker, group, topic, [0, 1]) == {0: 6, 1: 4}
    # The next run starts at the committed offsets: only the new records.
    produce(broker, topic, ["a6", "a7", "a8"], "-p", "0")
    produce(broker, topic, ["b4"], "-p", "1")
    assert sorted(strand(*args, "--timeout-ms", "1500")[1].split()) == ["a6", "a7", "a8", "b4"]
    assert committed(broker, group, topic, [0, 1]) == {0: 9, 1: 5}
    # --count stops within a partition; the commit says exactly how far.
    produce(broker, topic, [f"c{i}" for i in range(5)], "-p", "0")
    assert strand(*args, "-p", "0", "-c", "2")[1].split() == ["c0", "c1"]
    assert committed(broker, group, topic, [0, 1]) == {0: 11, 1: 5}
    assert strand(*args, "-p", "0", "-c", "3")[1].split() == ["c2", "c3", "c4"]
    assert committed(broker, group, topic, [0]) == {0: 14}
    [described] = as_json("group", "describe", group, *b)
    assert described["state"] == "Empty" and described["total_lag"] == 0


def test_produce_and_consume_errors(broker, topic):
    from conftest import free_base_port
    b = ["-b", broker.bootstrap]
    strand("topic", "create", topic, *b, "-p", "2")
    missing = topic + "-missing"
    code, out, err = produce(broker, missing, ["x"], check=False)
    assert code == 1 and out == "" and \
        err.strip() == f"strand: topic {missing}: UNKNOWN_TOPIC_OR_PARTITION (3) " \
        "(strand topic list shows the topics; strand topic create makes one)", err
    code, out, err = strand("consume", missing, *b, "-c", "1", check=False)
    assert code == 1 and out == "" and "UNKNOWN_TOPIC_OR_PARTITION (3)" in err, err
    assert len(err.strip().splitlines()) == 1

    # Nothing listening.
    down = f"127.0.0.1:{free_base_port(1)}"
    for args in (["produce", topic], ["consume", topic, "-c", "1"]):
        result = subprocess.run([STRAND_BIN, *args, "-b", down], input="x\n", text=True,
                                capture_output=True, timeout=30)
        assert result.returncode == 1 and result.stdout == "", result
        assert f"cannot connect to {down}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    # A line without the separator: the lines before it are written, then exit 1.
    code, _, err = produce(broker, topic, ["k:1", "k:2", "no separator", "k:3"], "-K", ":",
                           check=False)
    assert code == 1 and "line 3: no key separator" in err and "2 record(s) written" in err, err
    out = strand("consume", topic, *b, "--from-beginning", "--timeout-ms", "1500", "-q",
                 "-f", "%k=%v\\n")[1]
    assert out.split() == ["k=1", "k=2"]

    # Batches stay within max.message.bytes (1 MiB by default) however long the lines; a
    # record alone larger than that is refused, with the topic config to look at.
    produce(broker, topic, [str(i) * 600_000 for i in range(3)], "-p", "1")
    code, _, err = produce(broker, topic, ["x" * 2_000_000], "-p", "1", check=False)
    assert code == 1 and "MESSAGE_TOO_LARGE (10)" in err and "max.message.bytes" in err, err
    assert len(err.strip().splitlines()) == 1

    # Bad arguments: one line, exit 1 (ours) or 2 (the argument parser's).
    for args, code_wanted, words in [
        (["produce", topic, "-p", "7"], 1, "has no partition 7 (it has 2)"),
        (["produce", topic, "-H", "novalue"], 1, "expected KEY=VALUE"),
        (["produce", topic, "--acks", "2"], 2, "invalid value '2'"),
        (["produce", topic, "-z", "brotli"], 2, "invalid value 'brotli'"),
        (["consume", topic, "-p", "5"], 1, "has no partition 5"),
        (["consume", topic, "-o", "3"], 1, "--offset needs exactly one --partition"),
        (["consume", topic, "-p", "0", "-o", "x"], 1, "expected earliest, latest or an offset"),
        (["consume", topic, "-f", "%v %z"], 1, "unknown token %z"),
        (["consume", topic, "--from-beginning", "-p", "0", "-o", "1"], 2, "cannot be used"),
    ]:
        result = subprocess.run([STRAND_BIN, *args, *b], input="x\n", text=True,
                                capture_output=True, timeout=30)
        assert result.returncode == code_wanted and words in result.stderr, (args, result)
        if code_wanted == 1:
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def on_terminal(*args, stdin=""):
    """Runs `strand ARGS…` with stderr on a pseudo-terminal and stdout on a pipe; returns
    (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([STRAND_BIN, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    out = proc.stdout.read().decode()
    return proc.wait(timeout=60), out, screen.decode()


def test_progress_on_a_terminal_only(broker, topic):
    """`produce`, `consume -c N` and `group reset-offsets` draw a progress line on a
    terminal (a carriage return, the line, erase to its end; erased at the end) and print
    nothing of it when stderr is piped."""
    b = ["-b", broker.bootstrap]
    group = "g-" + uuid.uuid4().hex[:8]
    strand("topic", "create", topic, *b, "-p", "2")
    lines = [f"r{i}" for i in range(300)]
    code, _, screen = on_terminal("produce", topic, *b, stdin="".join(x + "\n" for x in lines))
    assert code == 0, screen
    assert "records written\x1b[K" in screen, repr(screen)
    assert screen.endswith("\r\x1b[K300 record(s) written to " + topic + "\r\n"), repr(screen)

    args = ["consume", topic, *b, "--from-beginning", "-c", "200", "-g", group]
    code, out, screen = on_terminal(*args)
    assert code == 0, screen
    assert len(out.splitlines()) == 200
    assert "/200 records consumed (" in screen, repr(screen)
    assert screen.endswith("\x1b[K\r\x1b[Kconsumed 200 record(s)\r\n"), repr(screen)
    # Piped: the same output as ever, no progress.
    code, out, err = strand(*args[:-2], "-g", group + "-piped")
    assert len(out.splitlines()) == 200 and err == "consumed 200 record(s)\n", repr(err)

    reset_args = ["group", "reset-offsets", group, *b, "--all-topics", "--to-earliest",
                  "--execute"]
    code, out, screen = on_terminal(*reset_args)
    assert code == 0, screen
    assert "reading the offsets of 2 partition(s)" in screen, repr(screen)
    assert f"\rgroup {group}: 0/2 offsets committed (0%)\x1b[K" in screen, repr(screen)
    assert screen.endswith("\r\x1b[K"), repr(screen)
    assert out.splitlines()[-1] == f"committed 2 offset(s) of group {group}"
    assert committed(broker, group, topic, [0, 1]) == {0: 0, 1: 0}
    # Piped: nothing on stderr.
    code, piped, err = strand(*reset_args)
    assert err == "" and piped.splitlines()[-1] == out.splitlines()[-1]
