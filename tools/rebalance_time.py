"""Rebalance time of a 3-member group after one member is killed (SIGKILL), classic
protocol vs the consumer protocol (KIP-848), measured the same way: two members in this
process, the third in a subprocess; from the kill until the two survivors together hold
all 6 partitions of the topic.

Usage: python tools/rebalance_time.py BOOTSTRAP [SESSION_MS] [HEARTBEAT_MS] [ROUNDS]

Start the broker with `--group-consumer-session-timeout-ms SESSION_MS
--group-consumer-heartbeat-interval-ms HEARTBEAT_MS`; classic members ask for the same
session timeout and heartbeat interval themselves.
"""

import statistics
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

VICTIM = r"""
import sys, json
from confluent_kafka import Consumer
c = Consumer(json.loads(sys.argv[1]))
c.subscribe([sys.argv[2]])
while len(c.assignment()) == 0:
    c.poll(0.1)
print("assigned", flush=True)
while True:
    c.poll(0.1)
"""


def config(bootstrap, group, protocol, session_ms, heartbeat_ms):
    out = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
           "enable.auto.commit": False}
    if protocol == "classic":
        out["session.timeout.ms"] = session_ms
        out["heartbeat.interval.ms"] = heartbeat_ms
    return out


def owned(c):
    return len(c.assignment())


def round_trip(bootstrap, topic, protocol, session_ms, heartbeat_ms):
    import json
    group = f"rb-{protocol}-{uuid.uuid4().hex[:6]}"
    conf = config(bootstrap, group, protocol, session_ms, heartbeat_ms)
    survivors = [Consumer(conf) for _ in range(2)]
    for c in survivors:
        c.subscribe([topic])
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, json.dumps(conf), topic],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "assigned"
        deadline = time.time() + 60
        while sorted(owned(c) for c in survivors) != [2, 2]:
            assert time.time() < deadline, "no balanced assignment"
            for c in survivors:
                c.poll(0.02)
        victim.kill()
        victim.wait()
        killed = time.time()
        while sum(owned(c) for c in survivors) != 6 or \
                sorted(owned(c) for c in survivors) != [3, 3]:
            assert time.time() < killed + 120, "partitions did not move"
            for c in survivors:
                c.poll(0.01)
        return time.time() - killed
    finally:
        victim.kill()
        for c in survivors:
            c.close()


def main():
    bootstrap = sys.argv[1]
    session_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 6000
    heartbeat_ms = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    topic = "rebalance-" + uuid.uuid4().hex[:6]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6)])[topic].result(timeout=15)
    time.sleep(1)
    for protocol in ("classic", "consumer"):
        times = [round_trip(bootstrap, topic, protocol, session_ms, heartbeat_ms)
                 for _ in range(rounds)]
        print(f"{protocol:8} session {session_ms} ms, heartbeat {heartbeat_ms} ms: "
              f"median {statistics.median(times):.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
