"""Graceful shutdown: SIGTERM in the middle of an acks=all produce drains the requests in
flight, closes the logs cleanly (the restart has nothing to recover), and loses nothing
that was acknowledged."""

import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Producer

from helpers import consume, create_topic

UNCLEAN_MARKERS = ("unclean stop", "truncating the segment")


def test_sigterm_during_produce_drains_and_restarts_clean(broker, topic):
    partitions = 4
    create_topic(broker, topic, partitions)
    acked = {}
    failed = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is None:
                acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                failed.append(err)

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 2,
                         "message.timeout.ms": 60_000, "reconnect.backoff.max.ms": 200})
    stop = threading.Event()
    produced = []

    def produce():
        i = 0
        while not stop.is_set():
            value = b"m-%07d" % i
            try:
                producer.produce(topic, value=value, partition=i % partitions, on_delivery=on_delivery)
                produced.append(value)
                i += 1
            except BufferError:
                pass
            producer.poll(0.0005)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        deadline = time.time() + 30
        while len(acked) < 5_000:
            assert time.time() < deadline, f"only {len(acked)} acknowledged"
            time.sleep(0.05)
        # Requests are in flight now: stop the broker under them.
        log_from = len(broker.log())
        started = time.monotonic()
        assert broker.terminate() == 0
        stop_s = time.monotonic() - started
        with lock:
            acked_at_stop = dict(acked)
        stop_log = broker.log()[log_from:]
        assert "shutdown requested; draining" in stop_log
        assert stop_log.count("shard stopped") == broker.shards
        assert "connections still open after the grace period" not in stop_log
        assert "close failed" not in stop_log

        time.sleep(0.5)  # the producer retries against a stopped broker meanwhile
        log_from = len(broker.log())
        broker.start()
        start_log = broker.log()[log_from:]
        # A clean close trimmed the segments and wrote their indexes: nothing to recover.
        assert not any(m in start_log for m in UNCLEAN_MARKERS), start_log
    finally:
        stop.set()
        thread.join()
    assert producer.flush(60) == 0
    assert failed == []
    print(f"\nSIGTERM with produce in flight: stopped in {stop_s:.2f} s; "
          f"{len(acked_at_stop)} acknowledged before it, {len(acked)} in all")

    got = consume(broker, topic, partitions, OFFSET_BEGINNING, len(acked), timeout=60)
    seen = {}
    for p, msgs in got.items():
        assert [o for o, _, _, _ in msgs] == list(range(len(msgs))), f"partition {p} has gaps"
        values = [v for _, _, v, _ in msgs]
        assert values == sorted(values), f"partition {p} out of order"
        for offset, _, value, _ in msgs:
            assert value not in seen, f"{value} twice"
            seen[value] = (p, offset)
    missing = [v for v, at in acked.items() if seen.get(v) != at]
    assert missing == [], f"{len(missing)} acknowledged records missing or moved: {missing[:5]}"
    assert len(seen) == len(produced)


def test_restart_after_kill9_logs_the_recovery(broker, topic):
    """The contrast the test above relies on: after kill -9 the restart does recover (the
    active segment's zero padding and any torn tail are cut), and says so."""
    create_topic(broker, topic, 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(200):
        producer.produce(topic, value=b"v%d" % i, partition=i % 2)
    assert producer.flush(30) == 0
    log_from = len(broker.log())
    broker.restart()
    assert any(m in broker.log()[log_from:] for m in UNCLEAN_MARKERS)
