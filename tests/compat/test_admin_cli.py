"""`strand topic …` and `strand cluster …` against a running broker: what they print (as
JSON, checked against confluent-kafka's view of the same broker), their exit codes and
their one-line errors. The cluster case (`cluster health` with nodes down) is in
test_cluster.py."""

import json
import subprocess

from confluent_kafka import Producer
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
