"""The shard-wide request memory budget and the connection time limits, driven with raw
sockets:

- many connections that send only a length prefix announcing a big frame: the broker's RSS
  stays flat (each reserves a 16 KiB first chunk, not 1 MiB) and real clients are served;
- frames that do not fit the budget wait (their connections stop reading) instead of
  allocating, and clients are served again once the stalled frames hit their deadline;
- a frame dribbled a byte a second is closed at `--frame-read-timeout-ms`, not kept for
  ever by the per-byte stall timer;
- an idle connection is closed after `--connections-max-idle-ms`, an active one stays, and
  idle sockets stop holding `--max-connections-per-shard` slots;
- a frame larger than `--queued-max-request-bytes` is refused with one log line.

Figures (RSS, timings) are printed; run with `-s` to see them.
"""

import socket
import struct
import time

import pytest
from confluent_kafka import Producer

from helpers import create_topic
from test_hostile import (
    MiB,
    api_versions_v0,
    call_api_versions,
    closed_by_broker,
    make_broker,  # noqa: F401 (fixture)
    real_clients_work,
)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def rss_settled(broker):
    """The broker's RSS once it has stopped moving (KiB)."""
    last = None
    for _ in range(20):
        rss, _ = broker.memory_kib()
        if last is not None and abs(rss - last) < 256:
            return rss
        last = rss
        time.sleep(0.25)
    return last


def test_bare_length_prefixes_keep_memory_flat_and_clients_are_served(broker, topic):
    create_topic(broker, topic, 2)
    real_clients_work(broker, topic, tag=b"warm-up")
    rss_before = rss_settled(broker)
    hogs = []
    for port in broker.ports:
        for _ in range(200):
            s = connect(port)
            # A request header follows the prefix, so the old reader had begun the body.
            s.sendall(struct.pack(">i", 90 * MiB) + b"\x00\x00\x00\x09")
            hogs.append(s)
    rss_hogged = rss_settled(broker)
    started = time.monotonic()
    real_clients_work(broker, topic, tag=b"beside-prefixes")
    served_s = time.monotonic() - started
    grown_mib = (rss_hogged - rss_before) / 1024
    print(f"\nRSS {rss_before} KiB -> {rss_hogged} KiB with 400 bare 90 MiB prefixes "
          f"(+{grown_mib:.1f} MiB); clients served in {served_s:.1f} s")
    # Before the budget each prefix reserved 1 MiB at once: +400 MiB.
    assert grown_mib < 64, f"400 bare length prefixes grew RSS by {grown_mib:.0f} MiB"
    for s in hogs:
        s.close()


def test_frames_over_the_budget_wait_instead_of_allocating(make_broker, topic):
    budget = 4 * MiB
    broker = make_broker("--queued-max-request-bytes", str(budget),
                         "--frame-read-timeout-ms", "8000")
    create_topic(broker, topic, 2)
    real_clients_work(broker, topic, tag=b"warm-up")
    rss_before = rss_settled(broker)
    # 100 connections per shard each announce a 3 MiB frame and push 1 MiB of it: 200 MiB
    # on offer, a 4 MiB budget per shard to hold it.
    hogs = []
    chunk = b"\x00" * MiB
    for port in broker.ports:
        for _ in range(100):
            s = connect(port)
            s.setblocking(False)
            data = struct.pack(">i", 3 * MiB) + b"\x00\x00\x00\x09" + chunk
            try:
                while data:
                    data = data[s.send(data):]
            except BlockingIOError:
                pass  # the broker stopped reading: TCP back-pressure
            hogs.append(s)
    rss_hogged = rss_settled(broker)
    grown_mib = (rss_hogged - rss_before) / 1024
    print(f"\nRSS {rss_before} KiB -> {rss_hogged} KiB with 200 MiB of frames offered "
          f"against a {budget // MiB} MiB budget per shard (+{grown_mib:.1f} MiB)")
    # Budget and one overdrawn frame per shard, plus per-connection read buffers.
    assert grown_mib < 64, f"frames over the budget grew RSS by {grown_mib:.0f} MiB"
    # The stalled frames are closed at their deadline, which frees the budget.
    deadline = time.monotonic() + 8 + 30
    open_ones = [s for s in hogs
                 if not closed_by_broker(s, max(0.1, deadline - time.monotonic()))]
    assert open_ones == [], f"{len(open_ones)} stalled frames still open"
    real_clients_work(broker, topic, tag=b"after-hogs")
    for s in hogs:
        s.close()


def test_frame_dribbled_one_byte_a_second_is_closed_at_its_deadline(make_broker, topic):
    read_timeout_s = 4
    broker = make_broker("--frame-read-timeout-ms", str(read_timeout_s * 1000))
    s = connect(broker.port)
    request = api_versions_v0(5)
    started = time.monotonic()
    closed = False
    # The old broker restarted its 30 s stall timer on every byte: a byte a second is
    # never closed. Send up to 20 s worth (the frame has 21 bytes; stop one short).
    for b in request[:20]:
        try:
            s.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if closed_by_broker(s, 1.0):
            closed = True
            break
    took = time.monotonic() - started
    s.close()
    print(f"\na request dribbled a byte a second was closed after {took:.1f} s")
    assert closed, f"a dribbled frame was still open after {took:.0f} s"
    assert took >= read_timeout_s - 0.5, "closed before its deadline"
    assert "--frame-read-timeout-ms" in broker.log()
    assert call_api_versions(broker.port) == 0


def test_idle_connections_are_closed_and_free_their_slots(make_broker, topic):
    idle_s = 3
    broker = make_broker("--connections-max-idle-ms", str(idle_s * 1000),
                         "--max-connections-per-shard", "10")
    # Fill the shard's 10 slots one by one (the start-up probes may take a moment to go);
    # each connection is served once, then nine of them go quiet.
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 10:
        s = connect(broker.port)
        try:
            assert call_api_versions(broker.port, s) == 0
            held.append(s)
        except (ConnectionError, OSError):
            s.close()
            assert time.monotonic() < deadline, f"only {len(held)} of 10 connections accepted"
            time.sleep(0.1)
    started = time.monotonic()
    active, idle = held[0], held[1:]
    # The shard is full: a further connection is closed on accept.
    extra = connect(broker.port)
    assert closed_by_broker(extra, 5), "the connection cap was not reached"
    extra.close()
    # The active connection sends a request every second; the idle ones send nothing.
    while time.monotonic() - started < idle_s + 10:
        assert call_api_versions(broker.port, active) == 0, "the active connection was closed"
        if all(closed_by_broker(s, 0.05) for s in idle):
            break
        time.sleep(1)
    took = time.monotonic() - started
    print(f"\nafter {took:.1f} s the active connection works and {len([s for s in idle if not closed_by_broker(s, 0.01)])} idle ones are open")
    open_ones = [s for s in idle if not closed_by_broker(s, 0.1)]
    assert open_ones == [], f"{len(open_ones)} idle connections still open after {took:.0f} s"
    assert took >= idle_s - 1, "closed before --connections-max-idle-ms"
    # Their slots are free again, and the active connection outlived the idle limit.
    time.sleep(1)
    assert call_api_versions(broker.port) == 0
    assert call_api_versions(broker.port, active) == 0
    for s in idle + [active]:
        s.close()


def test_frame_larger_than_the_budget_is_refused(make_broker, topic):
    broker = make_broker("--queued-max-request-bytes", str(MiB))
    s = connect(broker.port)
    s.sendall(struct.pack(">i", 2 * MiB) + b"\x00\x00\x00\x09" + b"\x00" * 1024)
    assert closed_by_broker(s, 10), "a frame larger than the budget was read"
    s.close()
    refusals = [line for line in broker.log().splitlines() if "--queued-max-request-bytes" in line]
    assert len(refusals) == 1, refusals
    # Requests within the budget are served: ~600 KB produce requests.
    create_topic(broker, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "compression.type": "none", "linger.ms": 20})
    for i in range(6):
        producer.produce(topic, value=bytes([i]) * 300_000, partition=i % 2)
    assert producer.flush(30) == 0
    real_clients_work(broker, topic)


if __name__ == "__main__":
    pytest.main([__file__, "-s"])
