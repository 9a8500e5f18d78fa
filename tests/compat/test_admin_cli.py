"""`strand topic …`, `strand cluster …` and `strand group …` against a running broker: what
they print (as JSON, checked against confluent-kafka's view of the same broker), their exit
codes and their one-line errors. The cluster case (`cluster health` with nodes down) is in
test_cluster.py."""

import datetime
import json
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
    assert len(err.strip().splitlines()) == 1

    assert strand("topic", "delete", topic, *b)[1].strip() == f"deleted {topic}"
    assert topic not in {t["name"] for t in as_json("topic", "list", *b)}
    code, _, err = strand("topic", "delete", topic, *b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err, err


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
