"""tools/cluster_faults.py in a short form: about 45 s of seeded faults (kill -9 of a node,
often the metadata leader, SIGSTOP, two nodes killed at once) on 3 nodes x 1 shard under
idempotent producers and a stream of CreateTopics; then every acknowledged record must be
at its offset exactly once, in order, every acknowledged topic on every node, every node
agreeing, running and without a panic. Two consumer-group members consume and commit
throughout; healed, they drain, and the group must have consumed every acknowledged record,
none again past a successful commit, in order within each assignment, each offset with its
acknowledged value (Jepsen's poll skip, consumed twice past the commit, non-monotonic poll,
inconsistent offsets; the checker itself is tested on made-up logs below).

Run with the produced-to topics unreplicated and with three replicas, and (three
replicas) with network faults too: every inter-node link through a proxy, nodes isolated
and links cut. The seed is random on each run and printed; replay a failure with
`tools/cluster_faults.py --seed SEED --seconds 45 [--replication-factor 3]
[--network-faults]` (or STRAND_FAULTS_SEED=SEED here).
"""

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import cluster_faults  # noqa: E402

SECONDS = float(os.environ.get("STRAND_FAULTS_SECONDS", "45"))


def seed():
    return int(os.environ.get("STRAND_FAULTS_SEED") or random.SystemRandom().randrange(1 << 31))


def anomalies_text(report):
    return "\n".join(f"{a['kind']} at {a['t']}s: {a['detail'][:2000]}" for a in report["anomalies"][:20])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("replication_factor", [1, 3])
def test_cluster_faults_lose_nothing_acknowledged(tmp_path, replication_factor):
    s = seed()
    print(f"cluster_faults seed {s} (replay: tools/cluster_faults.py --seed {s} "
          f"--seconds {SECONDS:g} --replication-factor {replication_factor})")
    report = cluster_faults.run(cluster_faults.parse_args([
        "--seed", str(s), "--seconds", str(SECONDS), "--nodes", "3", "--shards", "1",
        "--replication-factor", str(replication_factor),
        "--workdir", str(tmp_path), "--out", str(tmp_path / "report.json"),
    ]))
    assert report["anomalies"] == [], (
        f"seed {s}: {len(report['anomalies'])} anomalies (details in {tmp_path}/report.json, "
        f"node logs under {tmp_path}):\n{anomalies_text(report)}\nfaults:\n" + "\n".join(report["events"]))
    # The run did what it claims: faults, acknowledged records and creations to check.
    assert len(report["faults"]) >= 3, report["faults"]
    assert report["records"]["acked"] > 1000, report["records"]
    assert report["creations"]["by_outcome"].get("ok", 0) >= 10, report["creations"]
    group = report["group"]
    assert group["drained"] and group["consumed"] >= report["records"]["acked"], group
    assert group["commits"].get("ok", 0) > 100, group


@pytest.mark.timeout(240)
def test_cluster_network_faults_lose_nothing_acknowledged(tmp_path):
    s = seed()
    seconds = min(SECONDS, 40)
    print(f"cluster_faults seed {s} (replay: tools/cluster_faults.py --seed {s} "
          f"--seconds {seconds:g} --replication-factor 3 --network-faults)")
    report = cluster_faults.run(cluster_faults.parse_args([
        "--seed", str(s), "--seconds", str(seconds), "--nodes", "3", "--shards", "1",
        "--replication-factor", "3", "--network-faults",
        "--workdir", str(tmp_path), "--out", str(tmp_path / "report.json"),
    ]))
    assert report["anomalies"] == [], (
        f"seed {s}: {len(report['anomalies'])} anomalies (details in {tmp_path}/report.json, "
        f"node logs under {tmp_path}):\n{anomalies_text(report)}\nfaults:\n" + "\n".join(report["events"]))
    kinds = [f["kind"] for f in report["faults"]]
    assert len(kinds) >= 3 and "isolate" in kinds, kinds
    assert report["records"]["acked"] > 1000, report["records"]
    assert report["creations"]["by_outcome"].get("ok", 0) >= 10, report["creations"]
    group = report["group"]
    assert group["drained"] and group["consumed"] >= report["records"]["acked"], group
    assert group["commits"].get("ok", 0) > 100, group


@pytest.mark.timeout(240)
def test_cluster_faults_notices_a_lost_record(tmp_path):
    """The checker itself: a partition log cut in half behind a node's back must be
    reported as acknowledged records missing."""
    s = seed()
    print(f"cluster_faults seed {s}")
    report = cluster_faults.run(cluster_faults.parse_args([
        "--seed", str(s), "--seconds", "8", "--inject-loss", "--group-members", "0",
        "--workdir", str(tmp_path), "--out", str(tmp_path / "report.json"),
    ]))
    kinds = {a["kind"] for a in report["anomalies"]}
    assert "acked-record-missing" in kinds, anomalies_text(report)


def test_group_checker_finds_each_anomaly():
    """The group checker on made-up logs: a clean one, then one of each kind."""
    acked = {("a", 0, 0): "p:0", ("a", 0, 2): "p:1", ("a", 0, 3): "p:2", ("a", 1, 5): "p:3"}

    def entry(member, assignment, partition, offset, value, committed):
        return (member, assignment, "a", partition, offset, value, committed, 0.0)

    # Offset 1 is a control batch (never acknowledged, never consumed); m1 takes over
    # partition 0 from offset 2, before m0's commit of 3 (allowed), then again past it.
    clean = [entry("m0", 1, 0, 0, "p:0", 0), entry("m0", 1, 0, 2, "p:1", 1),
             entry("m1", 2, 0, 2, "p:1", 1), entry("m1", 2, 0, 3, "p:2", 3),
             entry("m0", 1, 1, 5, "p:3", 0)]
    assert cluster_faults.group_anomalies(clean, acked) == {}

    bad = [entry("m0", 1, 0, 0, "p:0", 0), entry("m0", 1, 0, 3, "p:2", 0),  # skips 2
           entry("m0", 1, 0, 2, "p:1", 0),  # backwards in one assignment
           entry("m1", 2, 0, 0, "p:0", 4),  # again although 4 was committed
           entry("m1", 2, 1, 5, "p:X", 0)]  # another value than acknowledged
    found = cluster_faults.group_anomalies(bad, acked)
    assert {k: len(v) for k, v in found.items()} == {
        "poll-skip": 1, "nonmonotonic-poll": 1, "consumed-twice-past-commit": 1,
        "inconsistent-offset": 1}, found
    lost = cluster_faults.group_anomalies(clean[:3], acked)
    assert sorted(lost) == ["never-consumed"] and len(lost["never-consumed"]) == 2, lost
